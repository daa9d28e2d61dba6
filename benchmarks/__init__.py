"""``voicebots bench``: voicebots against pipecat's development runner running the same bot
file, and against a bare aiortc echo server, measured in one run.

Run it from a checkout (it reuses the test harness in ``tests/``)::

    voicebots bench                 # the full run, ~10-15 minutes on 2 cores
    voicebots bench --small         # what CI runs: tiny bursts, short windows

See :mod:`benchmarks.runner` for what is measured, :mod:`benchmarks.overhead` for what the
voice-to-voice overhead subtracts and docs/performance.md for the method and the latest table.
"""

import sys
from pathlib import Path

# The benchmark drives the real processes through the test harness (benchmarks/harness.py and the
# fake OpenAI server), which is not an installed package: make the checkout importable even
# when `voicebots` runs from its console script, whose sys.path lacks the working directory.
_CHECKOUT = str(Path(__file__).resolve().parent.parent)
if _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
