"""A rehearsal of the answer path, so that a call's offer finds it warm.

A bot's first SDP answer is its slowest: measured in a freshly forked bot, ~9 ms of CPU, of
which ~775 page faults copying the zygote's pages (a forked process writes to every object it
touches, if only its reference count) and the first use of aiortc's regular expressions,
codec tables and the interface list. Rehearsed twice, that cost leaves the offer's critical
path:

- the zygote (:func:`rehearse_offer`, from :mod:`bots.preload`) runs a whole offer/answer
  between two throwaway peer connections, so that what is built on first use (compiled
  regular expressions, lazily imported modules) is built once and shared by every bot;
- each bot, while it warms up (:func:`rehearse_answer`), answers the zygote's offer with a
  throwaway peer connection, which copies the pages the real answer will touch.

Both rehearse the answer of a peer that gathered its candidates ahead of the offer
(:func:`bots.connection.gather_ahead`) when the call's does: an answer whose path the rehearsal
did not take touched ~100 pages afresh instead of ~30, and cost more than it saved.

No peer connection ever connects: the offer is never answered back, and each rehearsal
closes what it opened (its UDP sockets included) before ICE could start.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from bots.connection import gather_ahead

__all__ = ["rehearse_answer", "rehearse_offer"]

#: The zygote's rehearsed offer, inherited by every bot it forks.
_offer_sdp: str | None = None


async def _answer(pc: RTCPeerConnection, offer_sdp: str) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    for transceiver in pc.getTransceivers():
        # As the call's pipeline does: the bot speaks on the caller's audio transceiver.
        transceiver.direction = "sendrecv"
        if transceiver.kind == "audio" and transceiver.sender.track is None:
            transceiver.sender.replaceTrack(AudioStreamTrack())
    # The caller must close ``pc`` before it next yields to the loop: the connection task
    # that setLocalDescription schedules then ends at once instead of starting ICE.
    await pc.setLocalDescription(await pc.createAnswer())


async def _prepared(gathered_ahead: bool) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    if gathered_ahead:
        try:
            await gather_ahead(pc)
        except BaseException:
            await pc.close()
            raise
    return pc


async def _offer_and_answer(gathered_ahead: bool) -> str:
    caller = RTCPeerConnection()
    try:
        bot = await _prepared(gathered_ahead)
    except BaseException:
        await caller.close()
        raise
    try:
        # A caller's offer as browsers and the pipecat clients make it.
        caller.addTransceiver("audio", direction="sendrecv")
        caller.createDataChannel("chat", ordered=True)
        await caller.setLocalDescription(await caller.createOffer())
        offer_sdp = str(caller.localDescription.sdp)
        await _answer(bot, offer_sdp)
        return offer_sdp
    finally:
        await bot.close()
        await caller.close()


def rehearse_offer() -> None:
    """Offer/answer between two local peers, on a loop of its own (the zygote's): once with
    the answerer's candidates gathered ahead, once gathered by the answer."""
    global _offer_sdp
    loop = asyncio.new_event_loop()
    try:
        for gathered_ahead in (True, False):
            _offer_sdp = loop.run_until_complete(_offer_and_answer(gathered_ahead))
        # aiortc's connection tasks end a few steps after their peer is closed.
        loop.run_until_complete(_others_done())
    finally:
        loop.close()


async def _others_done() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=1.0)


async def rehearse_answer(gathered_ahead: bool) -> None:
    """Answer the zygote's offer with a throwaway peer connection shaped as the call's, then
    close it.

    Without a zygote's offer (a bot started another way), the whole exchange is rehearsed.
    """
    if _offer_sdp is None:
        await _offer_and_answer(gathered_ahead)
        return
    pc = await _prepared(gathered_ahead)
    try:
        await _answer(pc, _offer_sdp)
    finally:
        await pc.close()
