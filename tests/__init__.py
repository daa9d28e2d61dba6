"""Test suite: unit, integration and end-to-end tests of voicebots over real processes."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
