"""A/B of voicebots source trees on this machine: the figures a user feels, in one run.

Whether a change to voicebots is worth keeping is decided by what a user would feel, and on a
shared machine two runs minutes apart are not comparable. This tool runs two or more source
trees of voicebots (checkouts, or ``git worktree``s of the commits to compare) side by side:
each tree serves from its own code — its own private Redis, spawner (with its zygote and warm
bots) and signaling, started by that tree's ``benchmarks.harness.run_system`` with that tree's
bench settings (``benchmarks.systems.voicebots_env``) — and every tree talks to one fake
OpenAI-compatible server. The measurements themselves are this tree's, and
rounds alternate between the trees (in reversed order every other round), so whatever else
the machine does falls on each alike.

Two phases, each with every tree up at once:

1. the greeting on: **time to first word** (a burst of ``--ttfw-size`` calls, as
   :mod:`benchmarks.first_word`; the fake's first-byte delay subtracted);
2. no greeting: **CPU per active call** — ``--cpu-calls`` calls to every tree at once, all
   speaking a long passage, and the CPU time of each tree's bots read over the same
   ``--cpu-window`` seconds (as :mod:`benchmarks.cpu`; in CPU seconds per call-minute), so
   the trees share whatever load the machine has in that window — then the
   **voice-to-voice overhead** of a call's first turn (``--overhead-calls`` calls per tree,
   trees alternating, as :mod:`benchmarks.overhead`; 0 skips it).

After every round, the bots that refilled the pool give the **refill**: spawn → ready (ms)
and the CPU each used until it was idle and settled (ms).

    python -m benchmarks.ab /tmp/before /work/main --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.caller import Call, CallOptions
from benchmarks.config import BenchConfig
from benchmarks.first_word import run_first_words, silence_wav
from benchmarks.harness import run_fake_openai_process, stop_process
from benchmarks.heap import settle_heap
from benchmarks.overhead import run_level
from benchmarks.procfs import live_cpu_seconds, total_cpu_seconds
from benchmarks.signaling_client import SignalingClient
from benchmarks.speech import continuous_wav, utterance_wav
from benchmarks.stats import ratio, summarize
from benchmarks.sweep import subtracted_of
from benchmarks.systems import GREETING, fake_openai_args

__all__ = ["main"]

#: Once every call's audio flows, the CPU window opens after this long.
_CPU_SETTLE_S = 2.0
_START_TIMEOUT_S = 20.0

#: Run in each tree (its working directory) with that tree's code and bench settings: a
#: private Redis, the spawner and signaling, until its standard input closes.
_SERVE = """
import json, sys
from benchmarks.config import BenchConfig
from benchmarks.harness import run_redis, run_system
from benchmarks.systems import voicebots_env
args = json.loads(sys.argv[1])
env = voicebots_env(BenchConfig(), args["fake"], args["greeting"])
with run_redis() as redis_server:
    with run_system(redis_server, env, args["warm"], 2 * args["warm"]) as system:
        print(json.dumps({"url": system.url, "spawner_url": system.spawner_url}), flush=True)
        sys.stdin.read()
"""


@dataclass
class _Tree:
    """One tree's system, and what was measured on it."""

    name: str
    url: str
    spawner_url: str
    warm: int
    seen: set[int] = field(default_factory=set)
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, figure: str, values: Sequence[float]) -> None:
        self.figures.setdefault(figure, []).extend(values)

    async def status(self, http: httpx.AsyncClient) -> dict[str, Any]:
        reply = await http.get(f"{self.spawner_url}/status", timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    async def warm_pool(self, http: httpx.AsyncClient, timeout: float = 180.0) -> None:
        """Until ``warm`` bots are idle, none is starting and no call is left."""
        deadline = time.monotonic() + timeout
        while True:
            pool = (await self.status(http))["pool"]
            if pool["idle"] >= self.warm and pool["starting"] == 0 and pool["busy"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the pool did not refill: {pool}")
            await asyncio.sleep(0.1)

    async def note_refill(self, http: httpx.AsyncClient, record: bool = True) -> None:
        """The spawn → ready time and CPU so far of each idle bot not seen before (only
        remembered when not ``record``: the pool the system started with)."""
        pool = (await self.status(http))["pool"]
        for bot in pool["bots"]:
            if bot["state"] != "idle" or bot["pid"] in self.seen:
                continue
            self.seen.add(bot["pid"])
            if not record:
                continue
            try:
                cpu_ms = live_cpu_seconds(bot["pid"]) * 1000
            except FileNotFoundError:
                continue
            self.add("refill_ms", [float(bot["spawn_ms"])])
            self.add("bot_warmup_cpu_ms", [cpu_ms])

    async def call_pids(self, http: httpx.AsyncClient, sessions: set[str]) -> list[int]:
        """The bots serving ``sessions``."""
        status = await self.status(http)
        return [
            int(c["bot_pid"])
            for c in status["calls"]
            if c["session_id"] in sessions and c.get("bot_pid")
        ]


@contextmanager
def _serve(tree: Path, fake_url: str, greeting: str, warm: int, name: str) -> Iterator[_Tree]:
    args = {"fake": fake_url, "greeting": greeting, "warm": warm}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(args)],
        cwd=tree,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("{"):
            raise RuntimeError(f"{tree} did not start its system (printed {line!r})")
        started = json.loads(line)
        yield _Tree(name, started["url"], started["spawner_url"], warm)
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the system stops; the wait below gives it time
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            stop_process(process)


def _names(trees: Sequence[Path]) -> list[str]:
    names = [tree.resolve().name for tree in trees]
    return names if len(set(names)) == len(names) else [str(tree) for tree in trees]


def _order(trees: list[_Tree], round_no: int) -> list[_Tree]:
    return trees if round_no % 2 else trees[::-1]


@dataclass(frozen=True)
class _Options:
    trees: tuple[Path, ...]
    rounds: int
    ttfw_size: int
    cpu_calls: int
    cpu_window_s: float
    overhead_calls: int
    phases: tuple[str, ...] = ("ttfw", "calls")
    settle_s: float = 1.0

    @property
    def warm(self) -> int:
        return max(self.ttfw_size, self.cpu_calls, self.overhead_calls)


async def _settled(
    tree: _Tree, http: httpx.AsyncClient, settle_s: float, record: bool = True
) -> None:
    await tree.warm_pool(http)
    await asyncio.sleep(settle_s)
    await tree.note_refill(http, record)
    settle_heap()


async def _first_words(
    options: _Options, config: BenchConfig, trees: list[_Tree], work: Path
) -> None:
    wav = silence_wav(work / "silence.wav")
    subtract_ms = config.speech_first_byte_delay * 1000
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        for tree in trees:  # first-use code paths of the measuring side; not recorded
            await _settled(tree, http, options.settle_s, record=False)
            await run_first_words(tree.url, wav, 1, http)
        for round_no in range(1, options.rounds + 1):
            for tree in _order(trees, round_no):
                await _settled(tree, http, options.settle_s)
                result = await run_first_words(tree.url, wav, options.ttfw_size, http)
                tree.add("ttfw_ms", [ms - subtract_ms for ms in result.ttfw_ms])
                tree.add("ttfw_failures", [1.0] * len(result.failures))
            _say(f"first words, round {round_no}/{options.rounds}", trees, "ttfw_ms")


async def _cpu_window(
    options: _Options, trees: list[_Tree], wav: Path, http: httpx.AsyncClient
) -> None:
    """``cpu_calls`` calls to every tree at once; each tree's bots' CPU over one window."""
    calls = {
        tree.name: [
            Call(
                CallOptions(url=tree.url, wav=wav, max_seconds=options.cpu_window_s + 120.0),
                SignalingClient(tree.url, http=http),
            )
            for _ in range(options.cpu_calls)
        ]
        for tree in trees
    }
    every = [call for group in calls.values() for call in group]
    try:
        await asyncio.gather(*(call.connect() for call in every))
        deadline = time.monotonic() + _START_TIMEOUT_S
        while any(call.track.at(0.0) is None for call in every):
            if time.monotonic() > deadline:
                raise TimeoutError("the calls' audio did not start flowing")
            await asyncio.sleep(0.05)
        await asyncio.sleep(_CPU_SETTLE_S)
        pids = {
            tree.name: await tree.call_pids(http, {c.session_id for c in calls[tree.name]})
            for tree in trees
        }
        began = time.monotonic()
        before = {name: total_cpu_seconds(found) for name, found in pids.items()}
        await asyncio.sleep(options.cpu_window_s)
        after = {name: total_cpu_seconds(found) for name, found in pids.items()}
        minutes = (time.monotonic() - began) / 60
    finally:
        await asyncio.gather(*(call.close() for call in every), return_exceptions=True)
    for tree in trees:
        if len(pids[tree.name]) != options.cpu_calls:
            raise RuntimeError(f"{tree.name}: found {len(pids[tree.name])} bots for its calls")
        per_call = (after[tree.name] - before[tree.name]) / options.cpu_calls
        tree.add("cpu_s_per_call_minute", [per_call / minutes])


async def _calls(options: _Options, config: BenchConfig, trees: list[_Tree], work: Path) -> None:
    continuous = work / "continuous.wav"
    continuous_wav(continuous, options.cpu_window_s + 15.0)
    utterance = work / "utterance.wav"
    speech_s = utterance_wav(utterance)
    subtracted = subtracted_of(config)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        for tree in trees:
            await _settled(tree, http, options.settle_s, record=False)
        for round_no in range(1, options.rounds + 1):
            await _cpu_window(options, trees, continuous, http)
            for tree in _order(trees, round_no):
                await _settled(tree, http, options.settle_s)
                if not options.overhead_calls:
                    continue
                level = await run_level(
                    tree.url, utterance, options.overhead_calls, subtracted, speech_s
                )
                tree.add("overhead_ms", [s.overhead_ms for s in level.samples])
                tree.add("overhead_failures", [1.0] * len(level.failures))
            _say(f"calls, round {round_no}/{options.rounds}", trees, "cpu_s_per_call_minute")


def _say(what: str, trees: list[_Tree], figure: str) -> None:
    medians = ", ".join(
        f"{tree.name} {summarize(tree.figures.get(figure, [])).p50:.3g}" for tree in trees
    )
    print(f"{what}: {figure} p50 {medians}", file=sys.stderr, flush=True)


@contextmanager
def _systems(options: _Options, fake_url: str, greeting: str) -> Iterator[list[_Tree]]:
    """Every tree's system, up at once."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(_serve(tree, fake_url, greeting, options.warm, name))
            for tree, name in zip(options.trees, _names(options.trees), strict=True)
        ]


def _report(trees: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Each figure's summary per tree; beside the other trees', the change of its p50 and
    mean from the first tree's, in percent."""
    out: dict[str, Any] = {}
    first = next(iter(trees.values()))
    for name, figures in trees.items():
        out[name] = {}
        for figure, values in figures.items():
            if figure.endswith("_failures"):
                out[name][figure] = len(values)
                continue
            summary = summarize(values)
            out[name][figure] = {**summary.to_json(), "values": [round(v, 2) for v in values]}
            if figures is not first and figure in first:
                base = summarize(first[figure])
                out[name][figure]["change_pct"] = {
                    "p50": round(100 * (ratio(summary.p50, base.p50) - 1), 1),
                    "mean": round(100 * (ratio(summary.mean, base.mean) - 1), 1),
                }
    return out


async def run(options: _Options) -> dict[str, Any]:
    config = BenchConfig()
    names = _names(options.trees)
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="voicebots-ab-") as scratch:
        work = Path(scratch)
        with run_fake_openai_process(*fake_openai_args(config)) as fake_url:
            for name, greeting, phase in (("ttfw", GREETING, _first_words), ("calls", "", _calls)):
                if name not in options.phases:
                    continue
                with _systems(options, fake_url, greeting) as trees:
                    await phase(options, config, trees, work)
                    for tree in trees:
                        for figure, values in tree.figures.items():
                            figures[tree.name].setdefault(figure, []).extend(values)
    return {"options": {**vars(options), "trees": names}, "figures": _report(figures)}


def parse_args(argv: Sequence[str]) -> _Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ab",
        description="Compare voicebots source trees on the figures a user feels, interleaved.",
    )
    parser.add_argument("trees", nargs="+", type=Path, help="two or more voicebots trees")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per phase")
    parser.add_argument("--ttfw-size", type=int, default=4, help="calls per first-word burst")
    parser.add_argument("--cpu-calls", type=int, default=4, help="calls held for the CPU window")
    parser.add_argument("--cpu-window", type=float, default=20.0, help="CPU window, seconds")
    parser.add_argument(
        "--overhead-calls", type=int, default=2, help="calls per overhead round (0: none)"
    )
    parser.add_argument(
        "--phases", default="ttfw,calls", help="which phases to run: ttfw, calls or both"
    )
    args = parser.parse_args(argv)
    if len(args.trees) < 2:
        parser.error("give two or more trees")
    for tree in args.trees:
        if not (tree / "benchmarks" / "harness.py").is_file():
            parser.error(f"{tree} is not a voicebots tree")
    if min(args.rounds, args.ttfw_size, args.cpu_calls) < 1 or args.overhead_calls < 0:
        parser.error("rounds and call counts must be at least 1")
    phases = tuple(p for p in args.phases.split(",") if p)
    if not phases or not set(phases) <= {"ttfw", "calls"}:
        parser.error("--phases takes ttfw, calls or ttfw,calls")
    return _Options(
        trees=tuple(args.trees),
        rounds=args.rounds,
        ttfw_size=args.ttfw_size,
        cpu_calls=args.cpu_calls,
        cpu_window_s=args.cpu_window,
        overhead_calls=args.overhead_calls,
        phases=phases,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(asyncio.run(run(options)), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
