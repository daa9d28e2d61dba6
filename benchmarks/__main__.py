"""``python -m benchmarks``: the same as ``voicebots bench``."""

import sys

from benchmarks.runner import main

sys.exit(main())
