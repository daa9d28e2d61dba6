"""``voicebots bench``: voicebots against pipecat's development runner running the same bot
file, and against a bare aiortc echo server, measured in one run.

Run it from a checkout::

    voicebots bench                 # the full run; --budget caps each system's overhead sweep
    voicebots bench --small         # what CI runs: tiny bursts, short windows

See :mod:`benchmarks.runner` for what is measured, :mod:`benchmarks.overhead` for what the
voice-to-voice overhead subtracts and docs/performance.md for the method and the latest table.
"""

import sys
from pathlib import Path

# The benchmark drives the real processes of the checkout it lives in: make that checkout
# importable even when `voicebots` runs from its console script, whose sys.path lacks the
# working directory.
_CHECKOUT = str(Path(__file__).resolve().parent.parent)
if _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
