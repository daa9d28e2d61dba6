"""Prometheus metrics of the pool and its calls, served by the control API at ``/metrics``.

Gauges are read from the pool at scrape time (a collector, not a copy that can drift);
histograms and counters are updated as things happen. Autoscale on
``voicebots_active_calls`` / ``voicebots_bots{state="idle"}``, not on CPU: an idle bot pool is
cheap, and a call's CPU is capped by its cgroup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["SpawnerMetrics"]

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_VOICE = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


#: Gauges read straight from the pool status: (metric, help, status key).
_GAUGES = (
    ("voicebots_idle_bots", "Warm bots ready for a call.", "idle"),
    ("voicebots_active_calls", "Calls in progress.", "active_calls"),
    ("voicebots_max_bots", "Bots allowed at most.", "max_bots"),
    ("voicebots_spooled_records", "Call records waiting in the local spool for Redis.", "spooled"),
    ("voicebots_accepting", "1 while taking calls, 0 while draining.", "accepting"),
)


class _PoolCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, object]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        status = self._read()
        by_state = GaugeMetricFamily("voicebots_bots", "Bot processes by state.", labels=["state"])
        for state in ("starting", "idle", "busy"):
            by_state.add_metric([state], float(status.get(state, 0)))  # type: ignore[arg-type]
        yield by_state
        for name, help_text, key in _GAUGES:
            yield GaugeMetricFamily(name, help_text, value=float(status.get(key) or 0))  # type: ignore[arg-type]


class SpawnerMetrics:
    def __init__(self, read_status: Callable[[], dict[str, object]]) -> None:
        # No auto-describe: the pool collector reads live state, which exists only once running.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_PoolCollector(read_status))
        self.assignment_seconds = Histogram(
            "voicebots_assignment_seconds",
            "Offer received by the spawner → the bot's answer sent back.",
            buckets=_FAST,
            registry=self.registry,
        )
        self.spawn_seconds = Histogram(
            "voicebots_spawn_seconds",
            "Fork from the zygote → bot ready (pipeline built).",
            buckets=_FAST,
            registry=self.registry,
        )
        self.voice_to_voice_seconds = Histogram(
            "voicebots_voice_to_voice_seconds",
            "Per turn: VAD stop → first bot audio out, as measured in the bot.",
            buckets=_VOICE,
            registry=self.registry,
        )
        self.calls_ended = Counter(
            "voicebots_calls_ended",
            "Calls ended, by end reason.",
            ["end_reason"],
            registry=self.registry,
        )
        self.offers_rejected = Counter(
            "voicebots_offers_rejected",
            "Offers the spawner refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
