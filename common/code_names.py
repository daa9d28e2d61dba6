"""The names a function's code refers to: how the upstream adapters' start-up probes see that
an upstream function still uses the internal an adapter relies on."""

from __future__ import annotations

import inspect
from types import CodeType
from typing import Any

__all__ = ["names_used"]


def names_used(function: Any) -> set[str]:
    """The attribute and global names ``function``'s code refers to (its comprehensions'
    and nested functions' included)."""
    names: set[str] = set()
    codes = [getattr(inspect.unwrap(function), "__code__", None)] if function else []
    while codes:
        code = codes.pop()
        if isinstance(code, CodeType):
            names.update(code.co_names)
            codes.extend(code.co_consts)
    return names
