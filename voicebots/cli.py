"""The ``voicebots`` command.

voicebots up [options]         signaling + spawner + rq worker, supervised together
voicebots signaling [options]  the public HTTP service
voicebots spawner [options]    the warm pool of bot processes and its control API
voicebots worker      the rq worker for post-call jobs (``--burst`` to drain and exit)
voicebots settings    every setting, its default and meaning, as README's Markdown table
voicebots call URL    the headless caller (see ``voicebots call --help``)
voicebots bench       the benchmark against a bare aiortc server (see ``voicebots bench --help``)

An option (``--port``, ``--max-bots`` …) overrides its setting's environment variable, for
this process and the ones it starts; ``voicebots up --help`` lists them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from loguru import logger

from bots.bot_file import BUILTIN_BOT
from common.env import redact_url
from common.logs import configure_logging
from common.settings import (
    BOT,
    HOST,
    LOG_LEVEL,
    MAX_BOTS,
    MIN_IDLE,
    PORT,
    PUBLIC_IP,
    REDIS_URL,
    SPAWNER_URL,
    UDP_PORTS,
    Setting,
    markdown_table,
)
from common.tracing import Tracing

__all__ = ["main"]


def _fail(message: str) -> int:
    print(f"voicebots: {message}", file=sys.stderr)
    return 2


def _check_redis(url: str) -> str | None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return (
            f"Redis is not reachable at {redact_url(url)} ({exc}). Start one (e.g. "
            f"`redis-server --port 6379`) or set {REDIS_URL.name} ({REDIS_URL.option})."
        )
    return None


def _signaling() -> int:
    from signaling.config import SignalingConfig
    from signaling.service import run_signaling

    config = SignalingConfig.from_env(os.environ)
    configure_logging("signaling", os.environ)
    tracing = Tracing.setup("voicebots-signaling", os.environ)
    try:
        run_signaling(config)
    finally:
        tracing.shutdown()
    return 0


def _spawner() -> int:
    from spawner.config import SpawnerConfig
    from spawner.service import run_spawner

    config = SpawnerConfig.from_env(os.environ)
    configure_logging("spawner", os.environ)
    if config.bot.bot == BUILTIN_BOT:
        from bots.config import AgentConfig

        logger.info(AgentConfig.from_env(os.environ).providers.describe())
    problem = _check_redis(config.redis_url)
    if problem:
        return _fail(problem)
    tracing = Tracing.setup("voicebots-spawner", os.environ)
    try:
        run_spawner(config)
    finally:
        tracing.shutdown()
    return 0


def _worker(burst: bool) -> int:
    from bots.config import PostCallConfig
    from common.record import QUEUE_NAME
    from spawner.postcall import PostCallWorker

    config = PostCallConfig.from_env(os.environ)  # fails early on a bad setting
    configure_logging("worker", os.environ)
    problem = _check_redis(config.redis_url)
    if problem:
        return _fail(problem)
    connection = redis.Redis.from_url(config.redis_url)
    worker = PostCallWorker([QUEUE_NAME], connection=connection)
    worker.work(burst=burst, logging_level="INFO")
    return 0


def _up() -> int:
    """Run the three processes; a signal stops them all, a dying one stops the rest."""
    from bots.compat import upstream_problem
    from bots.config import AgentConfig, PostCallConfig
    from signaling.config import SignalingConfig
    from spawner.config import SpawnerConfig

    try:
        # Every process's settings, checked before any starts.
        bot = SpawnerConfig.from_env(os.environ).bot.bot
        SignalingConfig.from_env(os.environ)
        PostCallConfig.from_env(os.environ)
        if bot == BUILTIN_BOT:
            AgentConfig.from_env(os.environ)
    except ValueError as exc:
        return _fail(str(exc))
    # An unsupported upstream library or a broken bot file stops here, before anything starts
    # (the spawner checks them too).
    problem = upstream_problem()
    if problem:
        return _fail(problem)
    checked = subprocess.run(
        [sys.executable, "-m", "bots.bot_file", bot], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        return _fail(checked.stderr.strip() or f"bot file {bot} cannot run")
    problem = _check_redis(REDIS_URL.read(os.environ))
    if problem:
        return _fail(problem)
    command = [sys.executable, "-m", "voicebots"]
    # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which forwards one
    # SIGTERM per Ctrl-C (the first drains, a second ends calls at once). The children
    # inherit the environment, options included.
    children = {
        name: subprocess.Popen([*command, name], start_new_session=True)
        for name in ("spawner", "signaling", "worker")
    }
    port = PORT.read(os.environ)
    print(f"voicebots: open http://localhost:{port} (Ctrl-C to stop)", flush=True)
    requested = 0  # stop requests received (signals); the loop below acts on them
    forwarded = 0

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal requested
        requested += 1

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while any(child.poll() is None for child in children.values()):
        if not requested:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"voicebots: {name} exited with {child.returncode}; stopping")
                    code = child.returncode or 1
                    requested = 1
                    break
        while forwarded < requested:
            forwarded += 1
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    return code


#: The settings each command takes as options, besides their environment variables.
OPTIONS: dict[str, tuple[Setting[Any], ...]] = {
    "up": (BOT, HOST, PORT, MAX_BOTS, MIN_IDLE, REDIS_URL, PUBLIC_IP, UDP_PORTS, LOG_LEVEL),
    "spawner": (BOT, MAX_BOTS, MIN_IDLE, REDIS_URL, SPAWNER_URL, PUBLIC_IP, UDP_PORTS, LOG_LEVEL),
    "signaling": (HOST, PORT, REDIS_URL, SPAWNER_URL, LOG_LEVEL),
    "worker": (REDIS_URL, LOG_LEVEL),
}


def _add_options(parser: argparse.ArgumentParser, command: str) -> None:
    for setting in OPTIONS[command]:
        default = setting.default_text.replace("`", "")
        parser.add_argument(
            setting.option,
            dest=setting.name,
            metavar=setting.option.removeprefix("--").replace("-", "_").upper(),
            type=_option_type(setting),
            help=f"{setting.meaning.replace('`', '')} (default: ${setting.name}, else "
            f"{default})".replace("%", "%%"),
        )


def _option_type(setting: Setting[Any]) -> Any:
    def check(raw: str) -> str:
        try:
            return setting.check_option(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "call":
        from benchmarks.caller import main as call_main

        return call_main(args[1:])
    if args and args[0] == "bench":
        from benchmarks.runner import main as bench_main

        return bench_main(args[1:])
    parser = argparse.ArgumentParser(prog="voicebots", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_options(sub.add_parser("up", help="run signaling, spawner and worker together"), "up")
    _add_options(sub.add_parser("signaling", help="run the public signaling service"), "signaling")
    _add_options(sub.add_parser("spawner", help="run the bot spawner"), "spawner")
    worker = sub.add_parser("worker", help="run the post-call rq worker")
    worker.add_argument("--burst", action="store_true", help="drain the queue, then exit")
    _add_options(worker, "worker")
    sub.add_parser("settings", help="print every setting as a Markdown table")
    sub.add_parser("call", help="call a voicebots server from the command line")
    sub.add_parser("bench", help="benchmark voicebots against a bare aiortc server")
    parsed = parser.parse_args(args)
    if parsed.command == "settings":
        sys.stdout.write(markdown_table())
        return 0
    for setting in OPTIONS[parsed.command]:
        value = getattr(parsed, setting.name)
        if value is not None:
            # Read by this process's configs, and inherited by the processes it starts (the
            # zygote reads the bot file's name, and the built-in agent its settings, there).
            os.environ[setting.name] = value
    try:
        if parsed.command == "up":
            return _up()
        if parsed.command == "signaling":
            return _signaling()
        if parsed.command == "spawner":
            return _spawner()
        return _worker(parsed.burst)
    except ValueError as exc:  # a malformed setting
        return _fail(str(exc))
