"""The ``voicebots`` command.

voicebots up [--bot BOT]       signaling + spawner + rq worker, supervised together
voicebots signaling            the public HTTP service
voicebots spawner [--bot BOT]  the warm pool of bot processes and its control API
voicebots worker      the rq worker for post-call jobs (``--burst`` to drain and exit)
voicebots call URL    the headless caller (see ``voicebots call --help``)
voicebots bench       the benchmark against a bare aiortc server (see ``voicebots bench --help``)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import redis
from loguru import logger

from bots.bot_file import BOT_ENV, BUILTIN_BOT
from common.env import redact_url
from common.logs import configure_logging
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
            "`redis-server --port 6379`) or set REDIS_URL."
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
    from bots.compat import check_pipecat
    from bots.config import AgentConfig, BotConfig

    try:
        bot = BotConfig.from_env(os.environ).bot
        if bot == BUILTIN_BOT:
            AgentConfig.from_env(os.environ)
        check_pipecat()
    except ValueError as exc:
        return _fail(str(exc))
    # A broken bot file stops here, before anything starts (the spawner checks it too).
    checked = subprocess.run(
        [sys.executable, "-m", "bots.bot_file", bot], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        return _fail(checked.stderr.strip() or f"bot file {bot} cannot run")
    problem = _check_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    if problem:
        return _fail(problem)
    command = [sys.executable, "-m", "voicebots"]
    env = dict(os.environ)
    if sys.stderr.isatty():
        env.setdefault("VOICEBOTS_LOG_FORMAT", "text")  # a person is watching
    # Own sessions: a terminal's Ctrl-C reaches only this supervisor, which forwards one
    # SIGTERM per Ctrl-C (the first drains, a second ends calls at once).
    children = {
        name: subprocess.Popen([*command, name], env=env, start_new_session=True)
        for name in ("spawner", "signaling", "worker")
    }
    port = os.environ.get("VOICEBOTS_PORT", "7860")
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
    bot_help = (
        "the bot file: a path to a .py file or a dotted module name defining "
        "`async def bot(runner_args)` (default: $VOICEBOTS_BOT, else the built-in agent)"
    )
    up = sub.add_parser("up", help="run signaling, spawner and worker together")
    up.add_argument("--bot", help=bot_help)
    sub.add_parser("signaling", help="run the public signaling service")
    spawner = sub.add_parser("spawner", help="run the bot spawner")
    spawner.add_argument("--bot", help=bot_help)
    worker = sub.add_parser("worker", help="run the post-call rq worker")
    worker.add_argument("--burst", action="store_true", help="drain the queue, then exit")
    sub.add_parser("call", help="call a voicebots server from the command line")
    sub.add_parser("bench", help="benchmark voicebots against a bare aiortc server")
    parsed = parser.parse_args(args)
    if getattr(parsed, "bot", None):
        # The entry point's own setting: the spawner (and, through it, the zygote) reads it.
        os.environ[BOT_ENV] = parsed.bot
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
