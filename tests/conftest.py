from __future__ import annotations

import faulthandler
import os
import threading
from collections.abc import Iterator

import pytest

from benchmarks.harness import SYSTEMS_DIR_ENV, Redis, run_redis

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
