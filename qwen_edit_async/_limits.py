"""Adaptive concurrency and submission rate: the limits a provider grants this account.

Providers limit an account, not a client, and do not publish the numbers. A client learns
them from the answers to its creates (slow start, then additive increase and multiplicative
decrease: the arithmetic and its reasons are in ``_learning``). :class:`LocalLimits` keeps the
slots, the submission pace and what was learned in the process; ``_shared.RedisLimits``
keeps the same state in Redis for every process and machine using one key, behind the same
:class:`Limits` interface.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import time
from collections.abc import Callable

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._learning import (
    HOLD,
    INITIAL_IN_FLIGHT,
    INITIAL_RATE,
    PROVISIONAL_MIN,
    RATE_CUT,
    RATE_MAX,
    Kind,
    Learned,
    accepted,
    burst_tolerance,
    initial,
    note_slot_time,
    provisional_after,
    refused,
)
from ._pacing import Pace
from ._retry import pause, testing_enabled

__all__ = [
    "INITIAL_IN_FLIGHT",
    "INITIAL_RATE",
    "RATE_CUT",
    "Learned",
    "Limits",
    "LimitsSnapshot",
    "LocalLimits",
    "Unanswered",
    "accepted",
    "burst_tolerance",
    "refused",
]

logger = logging.getLogger("qwen_edit_async")


class LimitsSnapshot(msgspec.Struct, frozen=True):
    """The limits in force (part of ``client.statistics()``)."""

    in_flight: int
    rate: float | None
    rate_limited: int


class Unanswered:
    """Creates sent during slow start whose answer has not come yet.

    Each counts as accepted once it has been out without a refusal for
    :func:`~._learning.provisional_after` of the round trip ``round_trip()`` reports (the
    quickest connection set-up to the provider, ``None`` before one is measured): ``count
    (holder)`` is called then, and returns whether it counted (the job may have given its
    slot back meanwhile). The wait is decided when it ends, not when the create leaves: the
    first creates of a client leave before any connection to measure. :meth:`answered` tells
    the real answer's handler whether slow start counted the create already, so it does not
    count twice.
    """

    __slots__ = ("_count", "_counted", "_timers", "round_trip")

    def __init__(self, count: Callable[[object], bool]) -> None:
        self._count = count
        self._timers: dict[object, asyncio.TimerHandle] = {}
        self._counted: set[object] = set()
        #: The round trip to the provider measured so far (see :meth:`Limits.watch_round_trip`).
        self.round_trip: Callable[[], float | None] = _unmeasured

    def __bool__(self) -> bool:
        return bool(self._timers or self._counted)

    @property
    def pending(self) -> int:
        """Creates whose timer still runs."""
        return len(self._timers)

    def start(self, holder: object) -> None:
        if holder is None or holder in self._timers or holder in self._counted:
            return  # a retry of the same create: one count per job is enough
        loop = asyncio.get_running_loop()
        self._timers[holder] = loop.call_later(
            PROVISIONAL_MIN, self._fire, holder, time.monotonic()
        )

    def _fire(self, holder: object, sent: float) -> None:
        if self._timers.pop(holder, None) is None:
            return
        left = sent + provisional_after(self.round_trip()) - time.monotonic()
        if left > 0.001:
            # Not out long enough for the round trip known now: look again then.
            loop = asyncio.get_running_loop()
            self._timers[holder] = loop.call_later(left, self._fire, holder, sent)
        elif self._count(holder):
            self._counted.add(holder)

    def answered(self, holder: object) -> bool:
        """Forget ``holder``'s create; whether slow start counted it already."""
        timer = self._timers.pop(holder, None)
        if timer is not None:
            timer.cancel()
        if holder in self._counted:
            self._counted.discard(holder)
            return True
        return False

    def stop(self) -> None:
        """Slow start is over: the creates still out no longer count on their own."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def clear(self) -> None:
        self.stop()
        self._counted.clear()


def _unmeasured() -> float | None:
    return None


class Limits:
    """The interface the client and the transport use; :class:`LocalLimits` implements it.

    A job takes a slot (:meth:`try_acquire` or :meth:`acquire`) and gives it back in
    ``finally`` (:meth:`release`); each create first waits for :meth:`pace`, then reports
    :meth:`accepted` or :meth:`refused`.
    """

    #: Whether this client's limits are shared with other processes right now.
    shared = False

    @property
    def in_flight(self) -> int:
        """Slots held by this client's jobs."""
        raise NotImplementedError

    def try_acquire(self, holder: object) -> bool:
        """Take a slot for ``holder`` if one is free at once."""
        raise NotImplementedError

    async def acquire(self, holder: object) -> None:
        """Wait for a slot for ``holder`` (first come, first served)."""
        raise NotImplementedError

    def release(self, holder: object) -> None:
        """Give ``holder``'s slot back (a no-op if it holds none)."""
        raise NotImplementedError

    async def pace(self) -> None:
        """Wait until a create may be sent: the cooldown, then the rate."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether a create may be sent now without waiting for :meth:`pace` (no cooldown,
        no rate to keep): the caller then skips it. ``False``: await :meth:`pace`."""
        return False

    def sending(self, holder: object) -> None:
        """``holder``'s create is being sent now (after :meth:`pace`); its answer follows
        as :meth:`accepted` or :meth:`refused`."""

    def watch_round_trip(self, measured: Callable[[], float | None]) -> None:
        """Read the round trip to the provider from ``measured`` (seconds, ``None`` while
        unknown): during slow start, how long an unanswered create waits before it counts
        as accepted follows it (:func:`~._learning.provisional_after`)."""

    def accepted(self, holder: object) -> None:
        """The provider accepted ``holder``'s create."""
        raise NotImplementedError

    async def refused(
        self,
        holder: object,
        kind: Kind | None,
        retry_after: float | None,
        backoff: float,
        *,
        retrying: bool = True,
    ) -> None:
        """The provider refused ``holder``'s create with 429; return when it may retry.

        ``backoff`` is the retry policy's next wait, used when neither the provider nor the
        learned limits say how long to wait. ``retrying=False``: learn, do not wait.
        """
        raise NotImplementedError

    def snapshot(self) -> LimitsSnapshot:
        raise NotImplementedError

    async def open(self, task_group: TaskGroup) -> None:
        """Start background work (lease renewal) in the client's ``task_group``."""

    async def aclose(self) -> None:
        """Give every slot back and stop background work."""


class LocalLimits(Limits):
    """Slots and pacing inside one process; adaptive unless ``adaptive=False``.

    With ``adaptive=False`` the limits are fixed (``max_in_flight`` slots, ``submit_rate``
    creates per second) and a 429 pauses submissions for its ``Retry-After`` or a backoff.

    >>> limits = LocalLimits(max_in_flight=64, submit_rate=None)
    >>> limits.snapshot().in_flight
    4
    """

    def __init__(
        self, *, max_in_flight: int, submit_rate: float | None, adaptive: bool = True
    ) -> None:
        self.ceiling = max_in_flight
        self.rate_cap = submit_rate if submit_rate else RATE_MAX
        self.adaptive = adaptive
        if adaptive:
            self.state = initial(max_in_flight, self.rate_cap)
        else:
            self.state = Learned(in_flight=float(max_in_flight), rate=self.rate_cap)
        self._held: dict[object, float] = {}
        self._waiters: collections.deque[tuple[object, anyio.Event]] = collections.deque()
        self._pace_of_creates = Pace()
        self._rate_waited_at = 0.0
        self._accepts: collections.deque[float] = collections.deque()
        self._first_accept = 0.0
        self._pacing = 0
        self._epoch = 0  # bumped by a rate refusal: waits at the old pace start over
        # Creates sent during slow start whose answer has not come yet (see :meth:`sending`).
        self._unanswered = Unanswered(self._unrefused)
        self.rate_limited = 0

    # -- slots ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._held)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _room(self) -> bool:
        return len(self._held) < max(1, int(self.state.in_flight))

    def try_acquire(self, holder: object) -> bool:
        if self._waiters or not self._room():
            return False
        self._held[holder] = time.monotonic()
        return True

    async def acquire(self, holder: object) -> None:
        if self.try_acquire(holder):
            return
        event = anyio.Event()
        entry = (holder, event)
        self._waiters.append(entry)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release(holder)  # granted just as the wait was cancelled
            else:
                self._waiters.remove(entry)
            raise

    def release(self, holder: object) -> None:
        if self._unanswered:
            self._unanswered.answered(holder)
        taken = self._held.pop(holder, None)
        if taken is not None:
            if self.adaptive:
                note_slot_time(self.state, time.monotonic() - taken)
            if self._waiters:
                self._grant()

    def _grant(self) -> None:
        while self._waiters and self._room():
            holder, event = self._waiters.popleft()
            self._held[holder] = time.monotonic()
            event.set()

    # -- creates --------------------------------------------------------------------------

    def _rate_bound(self) -> bool:
        return time.monotonic() - self._rate_waited_at < 1.0

    def ready(self) -> bool:
        # The hot path of an unpaced client: no coroutine, no await. Whatever needs a wait
        # (a cooldown, a rate) goes through pace(), which decides it again.
        state = self.state
        if state.cooldown_until and state.cooldown_until > time.time():
            return False
        return state.rate >= RATE_MAX

    async def pace(self) -> None:
        self._pacing += 1
        try:
            await self._pace()
        finally:
            self._pacing -= 1

    @property
    def _active(self) -> int:
        """Slots whose job is at the provider or on its way there: not those waiting for
        the pace (they say nothing about the concurrency the provider allows)."""
        return len(self._held) - self._pacing

    async def _pace(self) -> None:
        state = self.state
        while True:
            epoch = self._epoch
            remaining = state.cooldown_until - time.time()
            if remaining > 0:
                # Spread the restart a little so the paused submissions do not land at once.
                cooldown = pause(remaining + random.uniform(0, min(1.0, remaining * 0.1)))
                if cooldown > 0:
                    await anyio.sleep(cooldown)
            rate = state.rate
            if self.adaptive and testing_enabled():
                rate = self.rate_cap  # learning the rate is a wait: off in tests; a cap stays
            if rate >= RATE_MAX:
                return
            # Bursts of BURST_WINDOW seconds' worth of creates go at once.
            now = time.monotonic()
            wait = self._pace_of_creates.take(now=now, rate=rate, tolerance=burst_tolerance(rate))
            if wait <= 0.0:
                return
            self._rate_waited_at = now
            await anyio.sleep(wait)
            if epoch == self._epoch:
                return
            # A refusal came while this create waited its turn at the old pace: queue
            # again at the new one rather than send what the provider would refuse.

    def _recent(self) -> float:
        """Creates accepted in the last second."""
        accepts, cutoff = self._accepts, time.monotonic() - 1.0
        while accepts and accepts[0] < cutoff:
            accepts.popleft()
        return float(len(accepts))

    def _measured(self) -> float | None:
        """Creates accepted in the last second, once creates have been accepted for a
        second (before, or with none, it measures nothing)."""
        now = time.monotonic()
        accepts, cutoff = self._accepts, now - 1.0
        while accepts and accepts[0] < cutoff:
            accepts.popleft()
        if not accepts or now - self._first_accept < 1.0:
            return None
        return float(len(accepts))

    def sending(self, holder: object) -> None:
        """During slow start, count ``holder``'s create as accepted once it has been out for
        :func:`~._learning.provisional_after` without a refusal.

        A 429 comes back within a round trip, but on the synchronous route an accepted
        create is answered only when the image is made, seconds later: slow start that waited
        for those answers doubled once per job, not once per round trip (200 in flight took
        four seconds of a five-second batch). A refusal that comes later still cuts the limit.
        """
        state = self.state
        if not self.adaptive or state.in_flight_cut_at or state.in_flight >= self.ceiling:
            return
        self._unanswered.start(holder)

    def watch_round_trip(self, measured: Callable[[], float | None]) -> None:
        self._unanswered.round_trip = measured

    def _unrefused(self, holder: object) -> bool:
        if holder not in self._held:
            return False
        self._grow()
        return True

    def _grow(self, *, rate_bound: bool = False) -> None:
        # Accepted with this many of ours active: the limit is what held us back only if
        # they filled it (not when the pace kept slots waiting).
        bound = self._active >= int(self.state.in_flight)
        if accepted(
            self.state,
            time.time(),
            ceiling=self.ceiling,
            rate_cap=self.rate_cap,
            in_flight_bound=bound,
            rate_bound=rate_bound,
        ):
            self._grant()

    def accepted(self, holder: object) -> None:
        if not self.adaptive:
            return
        counted = bool(self._unanswered) and self._unanswered.answered(holder)
        now = time.monotonic()
        if not self._first_accept:
            self._first_accept = now
        accepts = self._accepts
        accepts.append(now)
        while accepts[0] < now - 1.0:  # only the last second is read: memory stays flat
            accepts.popleft()
        state = self.state
        if state.in_flight >= self.ceiling and state.rate >= self.rate_cap:
            return  # both limits at their ceiling: nothing left to grow
        if counted:
            if self._rate_bound():
                self._grow(rate_bound=True)  # the concurrency grew when it was counted
            return
        self._grow(rate_bound=self._rate_bound())

    def _kind(self, kind: Kind | None) -> list[Kind]:
        """Which limits a refusal is charged to."""
        if kind is not None:
            return [kind]
        full = self._active >= int(self.state.in_flight)
        paced = self._rate_bound()
        if full and not paced:
            return ["concurrency"]
        if paced and not full:
            return ["rate"]
        return ["concurrency", "rate"]

    async def refused(
        self,
        holder: object,
        kind: Kind | None,
        retry_after: float | None,
        backoff: float,
        *,
        retrying: bool = True,
    ) -> None:
        self.rate_limited += 1
        now = time.time()
        state = self.state
        if self._unanswered:
            self._unanswered.answered(holder)
        if not self.adaptive:
            cooldown = retry_after if retry_after is not None else backoff
            state.cooldown_until = max(state.cooldown_until, now + cooldown)
            logger.info("rate limited: pausing submissions for %.2f s", cooldown)
            return
        kinds = self._kind(kind)
        for each in kinds:
            refused(
                state,
                now,
                each,
                others=self._active - 1,
                retry_after=retry_after,
                measured=self._measured(),
                recent=self._recent(),
            )
        if state.in_flight_cut_at:
            self._unanswered.stop()  # slow start is over
        logger.info(
            "rate limited (%s): %d in flight, %.1f creates/s from now%s",
            "/".join(kinds),
            max(1, int(state.in_flight)),
            state.rate,
            f", pausing {retry_after:.2f} s" if retry_after else "",
        )
        if "rate" in kinds:
            # Space the next create by the new rate from now, and let the last second's
            # creates age out until fewer than the new rate remain (a slow start's burst
            # fills a sliding window that refuses whatever the new pace).
            mono = time.monotonic()
            resume = mono + 1.0 / state.rate
            excess = len(self._accepts) - max(0, math.ceil(state.rate) - 1)
            if excess > 0:
                resume = max(resume, self._accepts[excess - 1] + 1.0)
            self._pace_of_creates.resume_at(resume, tolerance=burst_tolerance(state.rate))
            self._epoch += 1
        if "concurrency" in kinds and retrying:
            # Back to the queue: the refused job retries when a running job ends.
            self.release(holder)
            await self.acquire(holder)
            if self._active <= 1 and retry_after is None:
                # None of ours is running, so no end of ours will pace the retry: another
                # process or client holds the quota. Do not spin.
                hold = pause(min(backoff, max(HOLD, state.slot_time)))
                if hold > 0:
                    await anyio.sleep(hold)

    def snapshot(self) -> LimitsSnapshot:
        rate = self.state.rate
        return LimitsSnapshot(
            in_flight=max(1, int(self.state.in_flight)),
            rate=None if rate >= RATE_MAX or math.isinf(rate) else round(rate, 3),
            rate_limited=self.rate_limited,
        )

    async def aclose(self) -> None:
        self._unanswered.clear()
        self._held.clear()
        self._waiters.clear()
