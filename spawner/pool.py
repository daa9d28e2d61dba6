"""The warm pool: keeps bots ready, hands one to each call, refills and heals itself."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from loguru import logger

from bots.protocol import Hangup, Message
from spawner.bot_handle import BotHandle, BotState
from spawner.config import SpawnerConfig
from spawner.limits import Limiter
from spawner.zygote import Zygote

__all__ = ["NoCapacity", "Pool"]

#: Seconds of assignments that make up the recent arrival rate.
ARRIVAL_WINDOW = 30.0
#: A bot's warm-up takes a core for ~60-70 ms; while a burst of offers is being answered the
#: refill waits for it — unless a call is waiting for a bot — but never longer than this after
#: the burst began. A burst that takes the last idle bot is answered first, refilled after.
REFILL_DEFER = 0.5
#: Offers of one burst reach the spawner over tens of milliseconds: the refill also waits
#: this long after the last answer, in case another offer follows.
REFILL_QUIET = 0.1
#: One offer per CPU is answered at a time, the others wait in arrival order: a bot's answer is
#: ~4 ms of CPU, and bots answering side by side share the CPU and all finish late (measured in
#: ``voicebots bench``: burst-16 offer→answer p50 60 and 61 ms against 75 and 77 ms with every
#: offer at once). An answer that waits on the network (a TURN allocation, say) holds its slot
#: no longer than this: then the next offer goes on beside it.
SLOT_LEASE = 0.05

EventCallback = Callable[[BotHandle, Message], Awaitable[None]]
ExitCallback = Callable[[BotHandle], Awaitable[None]]


class NoCapacity(Exception):
    """Every bot is in a call and the pool is at ``max_bots``."""

    def __init__(self, retry_after: float, draining: bool = False) -> None:
        super().__init__("the server is draining" if draining else "all bots are busy")
        self.retry_after = retry_after
        self.draining = draining


class Pool:
    def __init__(
        self,
        config: SpawnerConfig,
        zygote: Zygote,
        limiter: Limiter,
        on_event: EventCallback,
        on_exit: ExitCallback,
        on_spawned: Callable[[float], None] | None = None,
        handle: type[BotHandle] = BotHandle,
    ) -> None:
        self._config = config
        self._zygote = zygote
        self._limiter = limiter
        self._on_event = on_event
        self._on_exit = on_exit
        self._on_spawned = on_spawned
        # The spawner's side of each bot; unit tests give one whose kill() ends a stand-in.
        self._handle = handle
        self.bots: dict[int, BotHandle] = {}
        self._starting = 0
        self._changed = asyncio.Condition()
        #: Counts wake-ups, so the maintainer misses none that came while it was not waiting.
        self._wakeups = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintainer: asyncio.Task[None] | None = None
        self.accepting = True
        self.spawn_failures = 0
        self._arrivals: deque[float] = deque()
        self._answering: set[int] = set()  # bots answering an offer, by pid
        # Slots for answering offers (see SLOT_LEASE); None: no limit.
        self._slots = (
            asyncio.Semaphore(config.answer_concurrency) if config.answer_concurrency else None
        )
        self._answered_at = -math.inf  # when the last answer (of any bot) came back
        self._burst_began = -math.inf  # when the first offer after a quiet spell came
        self._waiting = 0  # calls in acquire() waiting for a bot to become ready

    # -- counts ---------------------------------------------------------------------------

    def count(self, state: BotState) -> int:
        return sum(1 for bot in self.bots.values() if bot.state is state)

    @property
    def starting(self) -> int:
        return self._starting + self.count(BotState.STARTING)

    def arrival_rate(self) -> float:
        """Calls per second over the recent window."""
        cutoff = time.monotonic() - ARRIVAL_WINDOW
        while self._arrivals and self._arrivals[0] < cutoff:
            self._arrivals.popleft()
        return len(self._arrivals) / ARRIVAL_WINDOW

    def target_idle(self) -> int:
        """Warm bots wanted: the floor, a share of active calls, and the calls expected
        to arrive within the refill horizon at the recent arrival rate — whichever is most."""
        if not self.accepting:
            return 0
        busy = self.count(BotState.BUSY)
        wanted = max(
            self._config.min_idle,
            math.ceil(busy * self._config.idle_share),
            math.ceil(self.arrival_rate() * self._config.refill_horizon),
        )
        return min(wanted, self._config.max_bots - busy)

    def status(self) -> dict[str, object]:
        return {
            "idle": self.count(BotState.IDLE),
            "busy": self.count(BotState.BUSY),
            "starting": self.starting,
            "max_bots": self._config.max_bots,
            "target_idle": self.target_idle(),
            "accepting": self.accepting,
            "spawn_failures": self.spawn_failures,
            "arrival_rate": round(self.arrival_rate(), 3),
            "limits": self._limiter.status(),
            "bots": [
                {"pid": bot.pid, "state": bot.state.value, "spawn_ms": bot.spawn_ms}
                for bot in self.bots.values()
            ],
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._maintainer = asyncio.create_task(self._maintain(), name="pool-maintainer")

    async def acquire(self) -> BotHandle:
        """Take an idle bot for a call, waiting briefly for one that is starting.

        Raises :class:`NoCapacity` at once when the pool is full, so callers get a fast 503
        instead of a queue.
        """
        deadline = time.monotonic() + self._config.assign_wait
        async with self._changed:
            while True:
                # Draining: the idle bots are told to exit but stay idle until they have.
                if not self.accepting:
                    raise NoCapacity(retry_after=5.0, draining=True)
                for bot in self.bots.values():
                    if bot.state is BotState.IDLE:
                        bot.state = BotState.BUSY
                        self._engage(bot)
                        self._arrivals.append(time.monotonic())
                        self._wake()
                        return bot
                remaining = deadline - time.monotonic()
                can_grow = self.starting > 0 or len(self.bots) + self._starting < (
                    self._config.max_bots
                )
                if not can_grow or remaining <= 0:
                    raise NoCapacity(retry_after=2.0)
                self._waiting += 1
                self._wake()  # let the maintainer start one if it can
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    raise NoCapacity(retry_after=2.0) from None
                finally:
                    self._waiting -= 1

    def _engage(self, bot: BotHandle) -> None:
        try:
            self._limiter.engage(bot.pid)
        except OSError as exc:
            # Its group is gone only if the bot is; the call then fails on its own.
            logger.warning(f"could not give bot {bot.pid} a call's CPU weight: {exc}")

    async def notify(self) -> None:
        async with self._changed:
            self._wake()

    def _woken_since(self, seen: int) -> Callable[[], bool]:
        return lambda: self._wakeups != seen

    def _wake(self) -> None:
        """Wake whoever waits on the pool (call holding its condition's lock)."""
        self._wakeups += 1
        self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def answering(self, bot: BotHandle) -> AsyncIterator[None]:
        """While ``bot`` answers its offer; the refill behind it starts once it is done."""
        now = time.monotonic()
        if not self._answering and now - self._answered_at > REFILL_QUIET:
            self._burst_began = now
        self._answering.add(bot.pid)
        try:
            async with self._answer_slot():
                yield
        finally:
            self._answering.discard(bot.pid)
            self._answered_at = time.monotonic()
            await self.notify()

    @contextlib.asynccontextmanager
    async def _answer_slot(self) -> AsyncIterator[None]:
        """Wait for a slot to answer an offer in; it is freed by the answer or by
        :data:`SLOT_LEASE`, whichever comes first."""
        slots = self._slots
        if slots is None:
            yield
            return
        await slots.acquire()
        held = True

        def free() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        lease = asyncio.get_running_loop().call_later(SLOT_LEASE, free)
        try:
            yield
        finally:
            lease.cancel()
            free()

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refill_deferred(self) -> bool:
        """While a burst of offers is being answered (see :data:`REFILL_DEFER`)."""
        if self._waiting:
            return False
        now = time.monotonic()
        in_burst = bool(self._answering) or now - self._answered_at < REFILL_QUIET
        return in_burst and now - self._burst_began < REFILL_DEFER

    async def _maintain(self) -> None:
        """Refill to target and kill bots whose heartbeats stopped."""
        while True:
            seen = self._wakeups
            self._reap_hung()
            wanted = self.target_idle() - self.count(BotState.IDLE) - self.starting
            room = self._config.max_bots - len(self.bots) - self._starting
            deferred = self._refill_deferred()
            if deferred:
                wanted = 0
            for _ in range(max(0, min(wanted, room))):
                self._starting += 1
                self._later(self._spawn_one())
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(self._woken_since(seen)),
                        0.05 if deferred else 0.5,
                    )
                except TimeoutError:
                    pass

    def _reap_hung(self) -> None:
        now = time.monotonic()
        for bot in self.bots.values():
            if bot.state is BotState.EXITED:
                continue
            silent = now - bot.last_seen
            if silent > self._config.heartbeat_timeout:
                logger.warning(f"bot {bot.pid} silent for {silent:.1f} s; killing it")
                bot.hung = True
                bot.kill()

    async def _spawn_one(self) -> None:
        try:
            process, sock = await self._zygote.spawn()
            bot = self._handle(process, sock, self._on_event, self._bot_exited)
            self.bots[bot.pid] = bot
            await bot.start()
            try:
                self._limiter.apply(bot.pid)
            except OSError as exc:
                # A bot without its limits must not take calls.
                bot.kill()
                raise RuntimeError(f"could not limit bot {bot.pid}: {exc}") from exc
        except Exception as exc:
            self.spawn_failures += 1
            logger.error(f"could not start a bot: {exc!r}")
            await asyncio.sleep(1.0)  # do not spin on a broken zygote
            return
        finally:
            self._starting -= 1
        try:
            await asyncio.wait_for(asyncio.shield(bot.ready), self._config.heartbeat_timeout)
        except Exception:
            logger.error(f"bot {bot.pid} did not become ready; killing it")
            bot.kill()
            return
        spawn_ms = bot.spawn_ms or 0.0
        logger.info(f"bot {bot.pid} ready in {spawn_ms:.0f} ms")
        if self._on_spawned is not None:
            self._on_spawned(spawn_ms / 1000)
        await self.notify()

    async def _bot_exited(self, bot: BotHandle) -> None:
        self.bots.pop(bot.pid, None)
        try:
            bot.oom_killed = self._limiter.out_of_memory(bot.pid)
            # The call's record comes first; cleaning up after the bot can wait.
            await self._on_exit(bot)
        finally:
            await self._limiter.release(bot.pid)
            await self.notify()

    async def retire_idle(self) -> None:
        """Stop accepting and let idle bots exit (drain)."""
        self.accepting = False
        for bot in list(self.bots.values()):
            if bot.state in (BotState.IDLE, BotState.STARTING):
                try:
                    await bot.send(Hangup(reason="retired"))
                except Exception:
                    bot.kill()
        await self.notify()

    async def close(self) -> None:
        """Kill every bot and stop maintaining. Safe to call twice."""
        self.accepting = False
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(bot.close() for bot in list(self.bots.values())))
