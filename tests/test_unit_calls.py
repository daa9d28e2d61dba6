"""Sessions and calls on in-process stand-ins for bot processes (tests/pool_fakes.py): a
session gets a bot at its first offer, its call ends by hang-up, bye or the bot's death, and
whatever happens leaves one record with what was said; the per-key cap, a full pool and a
drain refuse with the right status and retry-after."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from bots.protocol import (
    Assign,
    Bye,
    Candidates,
    Hangup,
    Logs,
    Offer,
    State,
    Transcript,
    Turn,
)
from common.contract import Candidate, CandidatesRequest, OfferRequest
from common.record import CallStatus, TranscriptLine
from spawner.config import SpawnerConfig
from spawner.exceptions import CallError
from tests.pool_fakes import (
    Behavior,
    FakeZygote,
    MemoryRecorder,
    RecordingLimiter,
    Spawner,
    running,
    until,
)

CONFIG = SpawnerConfig(min_idle=1, max_bots=3)
CANDIDATE = "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"


def _offer(sdp: str = "v=0 offer", **fields: Any) -> OfferRequest:
    return OfferRequest(sdp=sdp, **fields)


async def _call(spawner: Spawner, owner: str | None = "key-1") -> str:
    answer = await spawner.calls.offer(None, _offer(), owner=owner)
    return str(answer["session_id"])


def _rejected(spawner: Spawner, reason: str) -> float | None:
    return spawner.metrics.registry.get_sample_value(
        "voicebots_offers_rejected_total", {"reason": reason}
    )


async def test_a_started_session_gets_a_warm_bot_at_its_first_offer() -> None:
    async with running(CONFIG, wait_idle=1) as spawner:
        session = spawner.calls.create({"name": "Ada"}, owner="key-1")
        sid = session.session_id
        assert spawner.calls.get(sid)["status"] == "pending"  # type: ignore[index]
        answer = await spawner.calls.offer(sid, _offer(), owner="key-1")
        bot = spawner.fake(session.bot)
        assert answer == {
            "sdp": "v=0 answer to v=0 offer",
            "type": "answer",
            "pc_id": f"pc-{bot.pid}",
            "session_id": sid,
        }
        (assign,) = bot.received
        assert isinstance(assign, Assign)
        assert (assign.session_id, assign.sdp, assign.body) == (sid, "v=0 offer", {"name": "Ada"})
        shown = spawner.calls.get(sid)
        assert shown is not None and shown["status"] == "active" and shown["bot_pid"] == bot.pid
        assert spawner.recorder.events == [("open", sid)]  # marked active in Redis
        assert spawner.recorder.owners == {sid: "key-1"}
        assert [s.session_id for s in spawner.calls.live_calls()] == [sid]
        count = spawner.metrics.registry.get_sample_value("voicebots_assignment_seconds_count")
        assert count == 1.0


async def test_an_offer_without_a_session_starts_one_with_its_request_data() -> None:
    async with running(SpawnerConfig(min_idle=2, max_bots=4), wait_idle=2) as spawner:
        answer = await spawner.calls.offer(None, _offer(request_data={"lang": "fr"}), owner="k")
        session = spawner.calls.sessions[answer["session_id"]]
        assert session.owner == "k"
        (assign,) = spawner.fake(session.bot).received
        assert isinstance(assign, Assign) and assign.body == {"lang": "fr"}
        # An offer's request_data is the bot's body, over what /start was given.
        started = spawner.calls.create({"lang": "en"}, owner="k")
        await spawner.calls.offer(started.session_id, _offer(request_data={"lang": "de"}))
        (assign,) = spawner.fake(started.bot).received
        assert isinstance(assign, Assign) and assign.body == {"lang": "de"}


async def test_what_the_bot_says_and_its_bye_become_the_record_written_once() -> None:
    async with running(CONFIG, wait_idle=1) as spawner:
        sid = await _call(spawner)
        session = spawner.calls.sessions[sid]
        bot = spawner.fake(session.bot)
        await bot.say(State(state="connected"))
        await bot.say(Transcript(role="user", text="hello", ts=10.0))
        await bot.say(Transcript(role="robot", text="not a line", ts=10.5))  # dropped
        await bot.say(Transcript(role="assistant", text="hi there", ts=11.0))
        await bot.say(Turn(report={"turn": 1, "audio_out_ms": 420}))
        await bot.say(Logs(lines=[{"message": "greeted", "level": "INFO"}, "not a dict"]))  # type: ignore[list-item]
        await bot.say(Bye(end_reason="bot_done", failed=False))
        await until(lambda: session.record is not None, "the record")
        bot.exit(0)  # a bot exits after its bye
        await until(lambda: spawner.calls.live_calls() == [], "the call over")
        await until(lambda: spawner.idle() == 1, "the pool healed")

        lines = (
            TranscriptLine(role="user", text="hello", ts=10.0),
            TranscriptLine(role="assistant", text="hi there", ts=11.0),
        )
        record = spawner.recorder.record(sid)
        assert record.status is CallStatus.COMPLETED and record.end_reason == "bot_done"
        assert record.transcript == lines and spawner.recorder.journal[sid] == list(lines)
        assert record.metrics == {"turns": [{"turn": 1, "audio_out_ms": 420}]}
        assert record.logs == ({"message": "greeted", "level": "INFO"},)
        assert (record.bot_pid, record.owner) == (bot.pid, "key-1")
        assert session.connected_at is not None
        # Opened before it was finished, finished once although the bot then exited.
        assert spawner.recorder.events == [("open", sid), ("finish", sid)]
        assert spawner.calls.get(sid) == record.to_json()
        assert spawner.calls.ended_by_reason == {"bot_done": 1}
        with pytest.raises(CallError) as caught:
            await spawner.calls.offer(sid, _offer(pc_id=session.pc_id), owner="key-1")
        assert (caught.value.status, caught.value.code) == (409, "session_ended")


async def test_the_record_waits_for_the_call_to_be_marked_active() -> None:
    # Marking the call active runs beside the answer; a call ending at once must not have
    # its record overwritten by a late "active".
    async with running(CONFIG, recorder=MemoryRecorder(open_delay=0.1), wait_idle=1) as spawner:
        sid = await _call(spawner)
        bot = spawner.fake(spawner.calls.sessions[sid].bot)
        await bot.say(Bye(end_reason="bot_done", failed=False))
        await until(lambda: len(spawner.recorder.events) == 2, "the record")
        assert spawner.recorder.events == [("open", sid), ("finish", sid)]


async def test_hangup_ends_the_call_with_its_reason() -> None:
    async with running(CONFIG, wait_idle=1) as spawner:
        sid = await _call(spawner)
        bot = spawner.fake(spawner.calls.sessions[sid].bot)
        ended = await spawner.calls.hangup(sid, reason="client_hangup", acting="key-1")
        assert ended is not None
        assert (ended["status"], ended["end_reason"]) == ("completed", "client_hangup")
        assert bot.received[-1] == Hangup(reason="client_hangup")
        await until(lambda: not bot.alive, "the bot exited")
        # Hanging up again answers the same record; it was written once.
        assert await spawner.calls.hangup(sid, acting="key-1") == ended
        assert spawner.recorder.events == [("open", sid), ("finish", sid)]
        assert await spawner.calls.hangup("no-such-session") is None


async def test_hanging_up_a_session_before_its_offer_forgets_it() -> None:
    async with running(CONFIG) as spawner:
        sid = spawner.calls.create().session_id
        assert await spawner.calls.hangup(sid) == {"session_id": sid, "status": "cancelled"}
        assert spawner.calls.get(sid) is None
        assert spawner.recorder.events == []


async def test_a_session_that_gets_no_offer_is_forgotten_after_start_ttl() -> None:
    async with running(SpawnerConfig(min_idle=1, max_bots=2, start_ttl=0.2)) as spawner:
        sid = spawner.calls.create().session_id
        await until(lambda: spawner.calls.get(sid) is None, "the session forgotten")


async def test_renegotiation_and_candidates_reach_the_calls_bot() -> None:
    async with running(CONFIG, wait_idle=1) as spawner:
        sid = await _call(spawner)
        session = spawner.calls.sessions[sid]
        bot = spawner.fake(session.bot)
        pc_id = session.pc_id
        again = await spawner.calls.offer(
            sid, _offer("v=0 restart", pc_id=pc_id, restart_pc=True), owner="key-1"
        )
        assert again["pc_id"] == pc_id and again["sdp"] == "v=0 answer to v=0 restart"
        offer = bot.received[-1]
        assert isinstance(offer, Offer) and offer.restart_pc
        request = CandidatesRequest(pc_id=str(pc_id), candidates=(Candidate(CANDIDATE, "0", 0),))
        await spawner.calls.candidates(sid, request, acting="key-1")
        candidates = bot.received[-1]
        assert isinstance(candidates, Candidates) and candidates.pc_id == pc_id
        assert candidates.candidates == [
            {"candidate": CANDIDATE, "sdp_mid": "0", "sdp_mline_index": 0}
        ]
        refusals = [
            (spawner.calls.offer(sid, _offer(), owner="key-1"), 409, "already_connected"),
            (spawner.calls.offer(sid, _offer(pc_id="pc-other"), owner="key-1"), 404, "unknown_pc"),
            (
                spawner.calls.candidates(sid, CandidatesRequest(pc_id="pc-other", candidates=())),
                404,
                "unknown_pc",
            ),
        ]
        for request_made, status, code in refusals:
            with pytest.raises(CallError) as caught:
                await request_made
            assert (caught.value.status, caught.value.code) == (status, code)


async def test_another_key_neither_sees_nor_ends_the_session() -> None:
    async with running(CONFIG, wait_idle=1) as spawner:
        sid = await _call(spawner, owner="key-1")
        pc_id = str(spawner.calls.sessions[sid].pc_id)
        assert spawner.calls.get(sid, acting="key-2") is None
        assert await spawner.calls.hangup(sid, acting="key-2") is None
        with pytest.raises(CallError) as caught:
            await spawner.calls.offer(sid, _offer(pc_id=pc_id), owner="key-2")
        assert (caught.value.status, caught.value.code) == (404, "unknown_session")
        with pytest.raises(CallError) as caught:
            await spawner.calls.candidates(sid, CandidatesRequest(pc_id, ()), acting="key-2")
        assert (caught.value.status, caught.value.code) == (404, "unknown_pc")
        assert [s.session_id for s in spawner.calls.live_calls()] == [sid]
        # A session token (acting None) or the owner's key sees it.
        assert spawner.calls.get(sid) is not None
        assert spawner.calls.get(sid, acting="key-1") is not None


async def test_the_per_key_cap_counts_live_calls_of_that_key_only() -> None:
    config = SpawnerConfig(min_idle=2, max_bots=6, max_calls_per_key=1)
    async with running(config, wait_idle=2) as spawner:
        first = await _call(spawner, owner="key-1")
        with pytest.raises(CallError) as at_start:
            spawner.calls.create(owner="key-1")
        with pytest.raises(CallError) as at_offer:
            await spawner.calls.offer(None, _offer(), owner="key-1")
        for caught in (at_start, at_offer):
            assert (caught.value.status, caught.value.code) == (429, "too_many_calls")
            assert caught.value.retry_after == 5.0
        assert _rejected(spawner, "too_many_calls") == 1.0
        await _call(spawner, owner="key-2")  # another key has its own allowance
        await _call(spawner, owner=None)  # no key (auth off): no cap
        await _call(spawner, owner=None)
        await spawner.calls.hangup(first)
        await _call(spawner, owner="key-1")  # its call ended: key-1 may call again


async def test_the_cap_counts_a_call_still_waiting_for_its_bot() -> None:
    zygote = FakeZygote(Behavior(ready_after=0.2))
    config = SpawnerConfig(min_idle=1, max_bots=2, max_calls_per_key=1)
    async with running(config, zygote) as spawner:
        first = asyncio.create_task(spawner.calls.offer(None, _offer(), owner="key-1"))
        await until(lambda: any(s.assigning for s in spawner.calls.sessions.values()), "a wait")
        with pytest.raises(CallError) as caught:
            await spawner.calls.offer(None, _offer(), owner="key-1")
        assert (caught.value.status, caught.value.code) == (429, "too_many_calls")
        answer = await first
        assert spawner.calls.sessions[answer["session_id"]].bot is not None


async def test_a_full_pool_is_a_503_with_retry_after() -> None:
    async with running(SpawnerConfig(min_idle=1, max_bots=1), wait_idle=1) as spawner:
        await _call(spawner)
        with pytest.raises(CallError) as caught:
            await spawner.calls.offer(None, _offer(), owner="key-2")
        assert (caught.value.status, caught.value.code) == (503, "no_capacity")
        assert caught.value.retry_after == 2.0
        assert _rejected(spawner, "no_capacity") == 1.0


async def test_a_drain_refuses_new_calls_and_lets_live_ones_finish() -> None:
    async with running(SpawnerConfig(min_idle=2, max_bots=4), wait_idle=2) as spawner:
        sid = await _call(spawner)
        pending = spawner.calls.create(owner="key-1").session_id
        await until(lambda: spawner.idle() == 2, "the refill")
        await spawner.pool.retire_idle()
        with pytest.raises(CallError) as at_start:
            spawner.calls.create(owner="key-1")
        with pytest.raises(CallError) as at_offer:
            await spawner.calls.offer(pending, _offer(), owner="key-1")
        for caught in (at_start, at_offer):
            assert (caught.value.status, caught.value.code) == (503, "draining")
            assert caught.value.retry_after == 5.0
        bot = spawner.fake(spawner.calls.sessions[sid].bot)
        await bot.say(Transcript(role="user", text="still here", ts=1.0))
        ended = await spawner.calls.hangup(sid, reason="shutdown")
        assert ended is not None and ended["end_reason"] == "shutdown"
        assert [line["text"] for line in ended["transcript"]] == ["still here"]


@pytest.mark.parametrize(
    ("code", "reason"),
    [(1, "bot_crashed: exit code 1"), (-signal.SIGSEGV, "bot_crashed: killed by SIGSEGV")],
)
async def test_a_bot_that_dies_mid_call_leaves_a_failed_record_of_what_was_said(
    code: int, reason: str
) -> None:
    async with running(CONFIG, wait_idle=1) as spawner:
        sid = await _call(spawner)
        session = spawner.calls.sessions[sid]
        bot = spawner.fake(session.bot)
        await bot.say(Transcript(role="user", text="are you there", ts=5.0))
        await until(lambda: len(session.lines) == 1, "the line received")
        bot.exit(code)
        await until(lambda: session.record is not None, "the record")
        record = spawner.recorder.record(sid)
        assert record.status is CallStatus.FAILED and record.end_reason == reason
        assert [line.text for line in record.transcript] == ["are you there"]
        assert record.bot_pid == bot.pid
        assert spawner.calls.live_calls() == []
        await until(lambda: spawner.idle() == 1, "the pool healed")


async def test_an_out_of_memory_kill_is_named_in_the_record() -> None:
    limiter = RecordingLimiter()
    async with running(CONFIG, limiter=limiter, wait_idle=1) as spawner:
        sid = await _call(spawner)
        bot = spawner.fake(spawner.calls.sessions[sid].bot)
        limiter.out_of_memory_pids.add(bot.pid)
        bot.exit(-signal.SIGKILL)
        await until(lambda: spawner.recorder.records != [], "the record")
        assert spawner.recorder.record(sid).end_reason == "bot_crashed: out of memory"


async def test_a_bot_silent_mid_call_is_killed_and_its_call_recorded_as_hung() -> None:
    zygote = FakeZygote(Behavior(heartbeat=0.02))
    config = SpawnerConfig(min_idle=1, max_bots=2, heartbeat_timeout=0.5)
    async with running(config, zygote, wait_idle=1) as spawner:
        sid = await _call(spawner)
        bot = spawner.fake(spawner.calls.sessions[sid].bot)
        bot.stop_heartbeats()
        await until(lambda: spawner.recorder.records != [], "the record")
        record = spawner.recorder.record(sid)
        assert record.status is CallStatus.FAILED and record.end_reason == "bot_hung"
        assert bot.process.exitcode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("assign", "status", "code"),
    [("bad_offer", 400, "bad_offer"), ("no_ports", 503, "no_ports")],
)
async def test_an_offer_the_bot_cannot_answer_is_the_callers_error_and_ends_the_call(
    assign: str, status: int, code: str
) -> None:
    async with running(CONFIG, FakeZygote(Behavior(assign=assign)), wait_idle=1) as spawner:
        with pytest.raises(CallError) as caught:
            await spawner.calls.offer(None, _offer(), owner="key-1")
        assert (caught.value.status, caught.value.code) == (status, code)
        assert caught.value.retry_after == (2.0 if status == 503 else None)
        (bot,) = spawner.zygote.bots
        await until(lambda: not bot.alive, "the bot exited")
        assert bot.process.exitcode == 0  # it said bye and exited; not killed
        await until(lambda: spawner.recorder.records != [], "the record")
        (record,) = spawner.recorder.records
        assert record.status is CallStatus.FAILED and record.end_reason == code


async def test_a_bot_that_does_not_answer_is_a_502_and_is_killed() -> None:
    zygote = FakeZygote(Behavior(assign="silent"))
    config = SpawnerConfig(min_idle=1, max_bots=2, answer_timeout=0.2)
    async with running(config, zygote, wait_idle=1) as spawner:
        with pytest.raises(CallError) as caught:
            await spawner.calls.offer(None, _offer(), owner="key-1")
        assert (caught.value.status, caught.value.code) == (502, "bot_timeout")
        bot = zygote.bots[0]
        await until(lambda: not bot.alive, "the bot killed")
        assert bot.process.exitcode == -signal.SIGKILL  # it serves no one else
        await until(lambda: spawner.recorder.records != [], "the record")
        assert spawner.recorder.records[0].status is CallStatus.FAILED
