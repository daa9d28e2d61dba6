"""The answer-path rehearsal: it answers like a call and leaves nothing open behind it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

import pytest

from bots import rehearsal


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        # The listing's own descriptor is gone by the time it is read.
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.fixture
def zygote_offer() -> Iterator[str]:
    saved = rehearsal._offer_sdp
    rehearsal.rehearse_offer()
    assert rehearsal._offer_sdp is not None
    yield rehearsal._offer_sdp
    rehearsal._offer_sdp = saved


def test_the_zygote_rehearses_a_whole_exchange(zygote_offer: str) -> None:
    assert zygote_offer.startswith("v=0")
    assert "m=audio" in zygote_offer and "a=fingerprint:" in zygote_offer


async def test_a_bot_answers_the_zygote_offer_and_closes_its_peer(zygote_offer: str) -> None:
    before = _open_sockets()
    await rehearsal.rehearse_answer()
    assert _open_sockets() == before
    await asyncio.sleep(0.05)  # a connection task left behind would be running ICE by now
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_without_a_zygote_offer_the_bot_rehearses_the_whole_exchange() -> None:
    saved, rehearsal._offer_sdp = rehearsal._offer_sdp, None
    try:
        before = _open_sockets()
        await rehearsal.rehearse_answer()
        assert _open_sockets() == before
    finally:
        rehearsal._offer_sdp = saved
