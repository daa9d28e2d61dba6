from __future__ import annotations

import faulthandler
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness import SYSTEMS_DIR_ENV, Redis, run_redis

#: Every test module's tier, the marker its tests get (declared in pyproject.toml), in this one
#: place; `make test` runs the tiers in this order and stops at the first that fails.
#:
#: - unit: in one process, no subprocesses, sockets only on loopback within it; seconds in all.
#: - integration: real sockets, in-process servers, or one real process (a server, a tool).
#: - e2e: the whole system as real processes, in browsers, or under podman compose.
TIERS: dict[str, str] = {
    # unit
    "test_docs": "unit",
    "test_media_config": "unit",
    "test_media_jitter": "unit",
    "test_media_ports": "unit",
    "test_media_voice_track": "unit",
    "test_observer_drain": "unit",
    "test_pool": "unit",
    "test_readme": "unit",
    "test_security_sdp": "unit",
    "test_spool": "unit",
    "test_turn_metrics": "unit",
    "test_unit_calls": "unit",
    "test_unit_pool": "unit",
    "test_upstream_adapters": "unit",
    "test_vad": "unit",
    # integration
    "test_caller": "integration",  # signaling's HTTP contract on an in-process uvicorn
    "test_deploy": "integration",  # docker-compose config, shellcheck, the Fly scripts
    "test_fake_elevenlabs": "integration",
    "test_fake_openai": "integration",
    "test_limits": "integration",  # cgroups of a real child process
    "test_media_nat": "integration",  # two aiortc peers in network namespaces
    "test_offline_providers": "integration",  # espeak-ng processes
    "test_postcall": "integration",  # redis-server, an rq worker, a webhook receiver
    "test_preload": "integration",  # the zygote's preload in a fresh interpreter
    "test_security_edge": "integration",  # signaling alone, as a process
    # e2e
    "test_bench": "e2e",
    "test_call_path": "e2e",
    "test_compose": "e2e",
    "test_examples_runner": "e2e",
    "test_examples_voicebots": "e2e",
    "test_faults": "e2e",
    "test_fuzz_signaling": "e2e",
    "test_media_ice": "e2e",
    "test_observability": "e2e",
    "test_security_api": "e2e",
    "test_security_secrets": "e2e",
    "test_security_turn": "e2e",
    "test_user_bots": "e2e",
    "test_web_official_client": "e2e",
    "test_web_page": "e2e",
}
TIER_ORDER = ("unit", "integration", "e2e")

# pytest-timeout (300 s, in pyproject) fails a test that runs too long, but the teardown that
# follows can hang too. This watchdog covers a whole test, setup to teardown: past it, every
# thread's stack is printed and the run ends, so a hang costs minutes and says where it is.
WATCHDOG_SECONDS = 480


# (A timer of its own: pytest cancels faulthandler's when a test fails, before the teardown.)


def _expire(item: pytest.Item) -> None:
    # Give fd 2 back to the terminal (pytest captures it during a test), then tell and end.
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=False)
    message = f"\n{item.nodeid}: still running after {WATCHDOG_SECONDS} s; ending the run\n"
    os.write(2, message.encode())
    faulthandler.dump_traceback(file=2, all_threads=True)
    os._exit(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    watchdog = threading.Timer(WATCHDOG_SECONDS, _expire, args=(item,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the markers given here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its module's tier; a module without one stops the run."""
    here = Path(__file__).parent
    stale = sorted(name for name in TIERS if not (here / f"{name}.py").is_file())
    if stale:
        raise pytest.UsageError(f"tests/conftest.py TIERS names missing test modules: {stale}")
    unclassified: set[str] = set()
    for item in items:
        tier = TIERS.get(item.path.stem)
        if tier is None:
            unclassified.add(item.path.name)
            continue
        if any(m.name in TIER_ORDER for m in item.iter_markers()):
            raise pytest.UsageError(
                f"{item.nodeid} marks its own tier; tiers are set in tests/conftest.py TIERS"
            )
        item.add_marker(tier)
    if unclassified:
        raise pytest.UsageError(
            f"{', '.join(sorted(unclassified))}: in no test tier; add each to TIERS in "
            f"tests/conftest.py as one of {', '.join(TIER_ORDER)} (see the definitions there)"
        )


@pytest.fixture(scope="session", autouse=True)
def _systems_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Test systems' logs and spools go under pytest's temporary directory, not /tmp."""
    os.environ[SYSTEMS_DIR_ENV] = str(tmp_path_factory.mktemp("systems"))
    yield
    os.environ.pop(SYSTEMS_DIR_ENV, None)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    """A private redis-server per test module, so tests never share call records."""
    with run_redis() as server:
        yield server
