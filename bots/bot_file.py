"""The bot file: the agent a call runs, written in pipecat's runner convention.

A bot file is a Python module — a path to a ``.py`` file or a dotted module name — that
defines ``async def bot(runner_args)``, the same file that runs on pipecat's development
runner (``python bot.py -t webrtc``) and on Pipecat Cloud. The spawner checks it at start-up
(:func:`load_bot`), so a broken file stops the server with a message naming the file instead
of failing each call; the zygote imports it once, so every warm bot shares its imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from common.settings import BOT

__all__ = ["BOT_ENV", "BUILTIN_BOT", "BotFileError", "BotFunction", "describe", "load_bot"]

#: The agent that runs when no bot file is given: itself an ordinary bot file.
BUILTIN_BOT = BOT.default
#: The setting naming the bot file; also how the spawner names it to the zygote.
BOT_ENV = BOT.name

BotFunction = Callable[[Any], Awaitable[Any]]


class BotFileError(ValueError):
    """The bot file cannot serve calls; the message names the file and what is wrong."""


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def describe(spec: str) -> str:
    """How a bot spec is named in messages: a file's absolute path, or the module name."""
    return str(Path(spec).expanduser().resolve()) if _is_path(spec) else spec


def _import_path(path: Path) -> ModuleType:
    # A bot file imports its siblings as it would on pipecat's runner, run from its folder.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem.isidentifier() else "voicebots_bot"
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "__file__", None) == str(path):
            return existing
        # The stem names a module already imported (``signaling.py``, say): keep both.
        name = f"voicebots_bot_{abs(hash(str(path))):x}"
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BotFileError(f"bot file {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses and pickling look their module up by name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(spec: str) -> ModuleType:
    if _is_path(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise BotFileError(f"bot file {path} does not exist")
        where = str(path)
        importer: Callable[[], ModuleType] = lambda: _import_path(path)  # noqa: E731
    else:
        where = f"module {spec}"
        importer = lambda: importlib.import_module(spec)  # noqa: E731
    try:
        return importer()
    except BotFileError:
        raise
    except ModuleNotFoundError as exc:
        if not _is_path(spec) and exc.name == spec.split(".")[0]:
            raise BotFileError(
                f"bot module {spec} is not installed (give a file path ending in .py, or a "
                "module importable from this environment)"
            ) from None
        raise BotFileError(_import_failure(where, exc)) from None
    except SyntaxError as exc:
        raise BotFileError(_import_failure(where, exc)) from None
    except Exception as exc:
        raise BotFileError(_import_failure(where, exc)) from None


def _import_failure(where: str, exc: BaseException) -> str:
    detail = "".join(traceback.format_exception(exc)).rstrip()
    return f"bot file {where} failed to import: {type(exc).__name__}: {exc}\n{detail}"


def load_bot(spec: str) -> BotFunction:
    """Import the bot file ``spec`` (once per process) and return its ``bot`` function.

    Raises :class:`BotFileError` when the file is missing, does not import (syntax or import
    error, with its traceback), has no ``bot``, or its ``bot`` is not an ``async def`` taking
    one argument, ``runner_args``.
    """
    module = _import(spec)
    where = describe(spec)
    bot = getattr(module, "bot", None)
    if bot is None:
        raise BotFileError(
            f"bot file {where} defines no `bot`: pipecat's runner convention is "
            "`async def bot(runner_args: RunnerArguments)`"
        )
    if not inspect.iscoroutinefunction(bot):
        raise BotFileError(
            f"`bot` in {where} is not an async function: write `async def bot(runner_args)`"
        )
    try:
        inspect.signature(bot).bind(object())
    except TypeError:
        raise BotFileError(
            f"`bot` in {where} must take one argument, runner_args; it is "
            f"`bot{inspect.signature(bot)}`"
        ) from None
    return bot


def main(argv: list[str] | None = None) -> int:
    """``python -m bots.bot_file SPEC``: check a bot file in a fresh interpreter, as the
    spawner does at start-up (its imports stay out of the spawner's own memory)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bots.bot_file PATH_OR_MODULE", file=sys.stderr)
        return 2
    try:
        load_bot(args[0])
    except BotFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
