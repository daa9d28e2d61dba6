"""Test suite. A package so that ``tests.fakes`` imports the same way in pytest, mypy and
``python -m tests.fakes.openai_server``."""
