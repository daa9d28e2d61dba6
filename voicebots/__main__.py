"""``python -m voicebots …`` is the ``voicebots`` command.

Processes start through this module rather than ``-m voicebots.cli`` because multiprocessing
re-imports a parent's main module in each child it starts — unless that module is a package's
``__main__``. Bots forked from the zygote then import nothing of the command line.
"""

import sys

from voicebots.cli import main

sys.exit(main())
