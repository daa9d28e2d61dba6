"""What the benchmark runs, read once from the command line into a frozen dataclass."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bots.config import TURN_STOP_SECS, VAD_STOP_SECS

__all__ = ["BenchConfig", "parse_args"]


@dataclass(frozen=True)
class BenchConfig:
    out_dir: Path = Path("artifacts/bench")
    small: bool = False
    #: Simultaneous offers per burst, and how many bursts of each size are measured.
    bursts: tuple[int, ...] = (1, 8, 16)
    burst_rounds: tuple[int, ...] = (10, 5, 5)
    #: Time to first word: calls placed at once, and how many bursts of each size.
    ttfw_bursts: tuple[int, ...] = (1, 8)
    ttfw_rounds: tuple[int, ...] = (6, 3)
    #: Fresh interpreters timed importing ``bots.preload`` (the refill reference).
    import_runs: int = 3
    #: Calls held open while CPU is sampled, and the sampling window.
    cpu_calls: int = 4
    cpu_window_s: float = 20.0
    #: Concurrency levels tried for the overhead; stop at the first whose p95 fails twice.
    overhead_levels: tuple[int, ...] = (1, 2, 4, 6, 8, 10, 12, 14, 16)
    #: Calls measured per level at least (low levels run several rounds).
    overhead_min_samples: int = 6
    overhead_p95_limit_ms: float = 100.0
    #: Each system's sweep stops starting new levels after this many seconds.
    overhead_budget_s: float = 240.0
    #: Delays the fake OpenAI server injects (seconds).
    transcription_delay: float = 0.1
    first_token_delay: float = 0.1
    speech_first_byte_delay: float = 0.1
    #: Seconds of quiet after a burst or a level before the next one starts.
    settle_s: float = 1.0

    @property
    def vad_stop_secs(self) -> float:
        """The built-in agent's VAD silence, a known wait subtracted from voice-to-voice."""
        return VAD_STOP_SECS

    @property
    def turn_stop_secs(self) -> float:
        """Its extra silence before the turn ends, subtracted too."""
        return TURN_STOP_SECS

    @property
    def warm_bots(self) -> int:
        """Idle bots kept: enough for the largest burst, the CPU window's calls and the
        highest level."""
        return max(*self.bursts, self.cpu_calls, *self.overhead_levels)

    @classmethod
    def small_run(cls, out_dir: Path) -> BenchConfig:
        """What CI runs: everything measured once or twice, at sizes 1 and 2."""
        return cls(
            out_dir=out_dir,
            small=True,
            bursts=(1, 2),
            burst_rounds=(2, 1),
            ttfw_bursts=(1, 2),
            ttfw_rounds=(1, 1),
            import_runs=1,
            cpu_calls=1,
            cpu_window_s=3.0,
            overhead_levels=(1, 2),
            overhead_min_samples=1,
            overhead_budget_s=60.0,
            settle_s=0.3,
        )

    def __post_init__(self) -> None:
        if len(self.bursts) != len(self.burst_rounds):
            raise ValueError("bursts and burst_rounds must have the same length")
        if len(self.ttfw_bursts) != len(self.ttfw_rounds):
            raise ValueError("ttfw_bursts and ttfw_rounds must have the same length")
        if min(self.bursts) < 1 or min(self.overhead_levels) < 1 or min(self.ttfw_bursts) < 1:
            raise ValueError("bursts and overhead levels must be at least 1")
        if self.cpu_calls < 1 or self.cpu_window_s <= 0:
            raise ValueError("--cpu-calls and --cpu-window must be positive")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"] = str(self.out_dir)
        data.update(vad_stop_secs=self.vad_stop_secs, turn_stop_secs=self.turn_stop_secs)
        return data


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _sizes_and_rounds(
    sizes_name: str,
    sizes: tuple[int, ...] | None,
    rounds_name: str,
    rounds: tuple[int, ...] | None,
    configured_rounds: tuple[int, ...],
) -> dict[str, tuple[int, ...]]:
    """Burst sizes and rounds per size given on the command line; sizes given without rounds
    each get the rounds configured for the first size."""
    if sizes:
        return {
            sizes_name: sizes,
            rounds_name: rounds or tuple(configured_rounds[0] for _ in sizes),
        }
    return {rounds_name: rounds} if rounds else {}


def parse_args(argv: Sequence[str]) -> BenchConfig:
    """``voicebots bench [--small] [--out DIR] [...]``."""
    parser = argparse.ArgumentParser(
        prog="voicebots bench",
        description=(
            "Benchmark voicebots against pipecat's development runner (same bot file) and a "
            "bare aiortc echo server, on this machine."
        ),
    )
    parser.add_argument("--out", type=Path, default=BenchConfig.out_dir, help="output directory")
    parser.add_argument("--small", action="store_true", help="the quick CI run")
    parser.add_argument("--bursts", type=_sizes, help="burst sizes, e.g. 1,8,16")
    parser.add_argument("--burst-rounds", type=_sizes, help="bursts measured per size")
    parser.add_argument("--ttfw-bursts", type=_sizes, help="time-to-first-word bursts, e.g. 1,8")
    parser.add_argument("--ttfw-rounds", type=_sizes, help="TTFW bursts measured per size")
    parser.add_argument("--cpu-calls", type=int, help="calls held open for the CPU window")
    parser.add_argument("--cpu-window", type=float, help="CPU sampling window, seconds")
    parser.add_argument("--levels", type=_sizes, help="concurrency levels for the overhead")
    parser.add_argument("--budget", type=float, help="seconds for each system's overhead sweep")
    args = parser.parse_args(list(argv))
    config = BenchConfig.small_run(args.out) if args.small else BenchConfig(out_dir=args.out)
    overrides: dict[str, Any] = {
        **_sizes_and_rounds(
            "bursts", args.bursts, "burst_rounds", args.burst_rounds, config.burst_rounds
        ),
        **_sizes_and_rounds(
            "ttfw_bursts", args.ttfw_bursts, "ttfw_rounds", args.ttfw_rounds, config.ttfw_rounds
        ),
    }
    for name, value in (
        ("cpu_calls", args.cpu_calls),
        ("cpu_window_s", args.cpu_window),
        ("overhead_levels", args.levels),
        ("overhead_budget_s", args.budget),
    ):
        if value is not None:
            overrides[name] = value
    return replace(config, **overrides) if overrides else config
