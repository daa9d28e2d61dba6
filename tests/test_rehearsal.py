"""The answer-path rehearsal: it answers like a call and leaves nothing open behind it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator

import pytest
from loguru import logger

from bots import rehearsal
from bots.config import BotConfig
from bots.process import Bot
from media.ice import IcePolicy, installed
from tests.test_media_ice import free_ports


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


@pytest.mark.parametrize("gathered_ahead", [True, False])
async def test_a_bot_answers_the_zygote_offer_and_closes_its_peer(
    zygote_offer: str, gathered_ahead: bool
) -> None:
    before = _open_sockets()
    await rehearsal.rehearse_answer(gathered_ahead)
    assert _open_sockets() == before
    await asyncio.sleep(0.05)  # a connection task left behind would be running ICE by now
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("gathered_ahead", [True, False])
async def test_without_a_zygote_offer_the_bot_rehearses_the_whole_exchange(
    gathered_ahead: bool,
) -> None:
    saved, rehearsal._offer_sdp = rehearsal._offer_sdp, None
    try:
        before = _open_sockets()
        await rehearsal.rehearse_answer(gathered_ahead)
        assert _open_sockets() == before
    finally:
        rehearsal._offer_sdp = saved


@pytest.mark.parametrize("gathered_ahead", [True, False])
async def test_a_failed_rehearsal_leaves_the_bot_waiting_for_its_call(
    zygote_offer: str, gathered_ahead: bool
) -> None:
    # A full UDP port range fails the rehearsal as it would fail an offer: the bot stays up,
    # and the offer, when it comes, reports no_ports itself.
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    ours, theirs = socket.socketpair()
    bot = Bot(BotConfig(), ours)
    bot._gathered_ahead = gathered_ahead
    try:
        with (
            free_ports(2, hold=True) as ports,
            installed(IcePolicy(ports=ports, bind_address="127.0.0.1")),
        ):
            before = _open_sockets()
            await bot._rehearse()
            assert _open_sockets() == before, "the rehearsal left a socket open"
    finally:
        logger.remove(sink)
        ours.close()
        theirs.close()
    assert any("answer rehearsal failed" in line and "NoFreePort" in line for line in lines)
