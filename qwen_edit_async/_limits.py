"""Adaptive concurrency and submission rate: the limits a provider grants this account.

Providers limit an account, not a client, and do not publish the numbers: a concurrent-task
quota, requests per second (with a guard against bursts), or both. A client learns them
from the answers to its creates, the way TCP learns a path (slow start, then additive
increase and multiplicative decrease) and Netflix's concurrency-limits learn a server:

- **Concurrency** (jobs holding a slot). It starts at :data:`INITIAL_IN_FLIGHT` and grows
  by :data:`SLOW_START_STEP` for each create accepted while the limit is in use (slow
  start: the creates in the air double every round trip), never above ``max_in_flight``,
  which is the ceiling. A 429 that the provider
  calls a concurrency refusal proves the quota is no larger than the jobs already running:
  the limit drops to that number and the refused job waits for the next free slot. The
  limit then holds for a while and probes upward, slowly at first and faster the longer no
  refusal comes (the shape of TCP CUBIC): a steady quota costs one refused create every few
  seconds, a raised quota is found within seconds.
- **Rate** (creates per second). It starts at :data:`INITIAL_RATE` so that a big batch does
  not burst ``max_in_flight`` creates in its first second, and grows while the pacing is
  what holds submissions back, gently while it is small and by a share of itself above
  :data:`RATE_KNEE` (hundreds per second within about two seconds, when nothing refuses);
  ready creates within :data:`BURST_WINDOW` of the rate go together; a 429 the provider
  calls a rate refusal cuts it by :data:`RATE_CUT`, then it probes like the concurrency.
  ``submit_rate``, when set, caps it.
- A ``Retry-After`` starts a cooldown every submission waits out. A 429 whose kind the
  provider does not say is charged to whichever limit was holding submissions back.

:class:`LocalLimits` keeps all this in the process; ``_shared.RedisLimits`` keeps the same
state in Redis for every process and machine using one key, behind the same interface.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import time
from typing import Literal

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._retry import testing_enabled

__all__ = [
    "INITIAL_IN_FLIGHT",
    "INITIAL_RATE",
    "RATE_CUT",
    "Learned",
    "Limits",
    "LimitsSnapshot",
    "LocalLimits",
    "accepted",
    "refused",
]

logger = logging.getLogger("qwen_edit_async")

Kind = Literal["concurrency", "rate"]

#: Concurrency a client starts with (slow start), when ``max_in_flight`` allows it.
INITIAL_IN_FLIGHT = 4
#: Slots added for each create accepted while the concurrency limit is full, before the
#: first refusal. Two: the accepted job keeps its slot, so one would only replace the
#: create that was answered (a constant number in the air, linear growth); two doubles
#: the creates in the air each round trip, as TCP's slow start doubles its window.
SLOW_START_STEP = 2.0
#: Creates per second a client starts with; the first second sends about seven.
INITIAL_RATE = 4.0
#: Creates per second added for each create accepted while the rate held submissions back,
#: below :data:`RATE_KNEE`: the rate grows about 4.5 times each second until the provider
#: first refuses one. Above the knee each step is that share of the rate: a provider that has
#: accepted tens of creates a second without a refusal is not a small one, and reaching
#: hundreds per second takes a fraction of a second instead of seconds.
RATE_STEP = 1.5
RATE_KNEE = 15.0
#: Seconds of the rate that may go at once (a token bucket): bursts of ready jobs at a high
#: rate go out together instead of one wakeup each, a small rate is still spaced evenly.
BURST_WINDOW = 0.05
#: The fraction of its rate a client keeps after a rate refusal.
RATE_CUT = 0.9
#: The share of the measured rate of accepted creates a rate refusal keeps.
MEASURED_SHARE = 0.95
#: Without ``submit_rate``, the rate is left unpaced above this.
RATE_MAX = 100_000.0
#: Seconds after a refusal before probing upward again (at least), and the doubling time of
#: the probe. Concurrency scales both with the time a job holds its slot.
HOLD = 2.0
DOUBLING = 1.0
RATE_HOLD = 5.0
#: A rate probe adds this fraction of the rate per doubling.
RATE_PROBE = 0.02


class Learned(msgspec.Struct, kw_only=True):
    """What a client has learned about the provider's limits (shared through Redis).

    ``in_flight`` and ``rate`` are the limits in force. ``*_base`` and ``*_cut_at`` remember
    the last refusal (``0`` before any: slow start). Times are wall-clock seconds, so that
    processes on one machine or several can compare them.
    """

    in_flight: float
    rate: float
    in_flight_base: float = 0.0
    in_flight_cut_at: float = 0.0
    rate_base: float = 0.0
    rate_cut_at: float = 0.0
    #: Mean seconds a job holds its slot (an exponential average; 0: none seen yet).
    slot_time: float = 0.0
    cooldown_until: float = 0.0


def _probe(base: float, since: float, hold: float, doubling: float) -> float:
    """The growth allowed ``since`` seconds after a refusal: 0 during ``hold``, then
    doubling every ``doubling`` seconds (1 after the first)."""
    over = since - hold
    if over <= 0:
        return 0.0
    return base * (float(2.0 ** min(over / doubling, 30.0)) - 1.0)


def accepted(
    state: Learned,
    now: float,
    *,
    ceiling: int,
    rate_cap: float,
    in_flight_bound: bool,
    rate_bound: bool,
) -> bool:
    """Update ``state`` for a create the provider accepted; whether anything changed.

    A limit grows only while it is what holds submissions back (``*_bound``): an idle
    client learns nothing about the provider.
    """
    changed = False
    if in_flight_bound and state.in_flight < ceiling:
        if state.in_flight_cut_at == 0.0:
            grown = state.in_flight + SLOW_START_STEP
        else:
            hold = max(HOLD, 2.0 * state.slot_time)
            doubling = max(DOUBLING, state.slot_time)
            target = state.in_flight_base + _probe(
                1.0, now - state.in_flight_cut_at, hold, doubling
            )
            grown = max(state.in_flight, min(target, state.in_flight + 1.0))
        grown = min(float(ceiling), grown)
        if grown != state.in_flight:
            state.in_flight = grown
            changed = True
    if rate_bound and state.rate < rate_cap:
        if state.rate_cut_at == 0.0:
            grown = state.rate + RATE_STEP * max(1.0, state.rate / RATE_KNEE)
        else:
            target = state.rate_base * (
                1.0 + RATE_PROBE * _probe(1.0, now - state.rate_cut_at, RATE_HOLD, 2.0)
            )
            grown = max(state.rate, min(target, state.rate * 1.05))
        grown = min(rate_cap, grown)
        if grown != state.rate:
            state.rate = grown
            changed = True
    return changed


def refused(
    state: Learned,
    now: float,
    kind: Kind,
    *,
    others: int,
    retry_after: float | None,
    measured: float | None = None,
) -> None:
    """Update ``state`` for a create refused with 429 of ``kind``.

    ``others``: the jobs holding a slot besides the refused one (for a concurrency
    refusal, the quota is no larger than that). ``measured``: creates accepted in the
    last second (for a rate refusal, the limit is no larger than that); unknown, the
    first refusal halves the rate, as TCP leaves slow start.
    """
    if kind == "concurrency":
        state.in_flight = max(1.0, min(state.in_flight, float(others)))
        state.in_flight_base = state.in_flight
        state.in_flight_cut_at = now
    else:
        # Refusals within a second cut once: they describe the same excess.
        if state.rate_cut_at == 0.0 or now - state.rate_cut_at > 1.0:
            if measured is not None:
                # Just under the measured rate: pacing exactly at a limit counted over a
                # sliding second trips it on every bit of jitter.
                cut = min(state.rate * RATE_CUT, measured * MEASURED_SHARE)
            else:
                cut = state.rate * (0.5 if state.rate_cut_at == 0.0 else RATE_CUT)
            state.rate = max(0.2, cut)
        state.rate_base = state.rate
        state.rate_cut_at = now
    if retry_after is not None and retry_after > 0:
        state.cooldown_until = max(state.cooldown_until, now + retry_after)


def burst_tolerance(rate: float) -> float:
    """How far ahead of real time the pace's virtual clock may run: a burst of
    BURST_WINDOW seconds' worth of creates, none at a rate below 1 / BURST_WINDOW."""
    return max(0.0, BURST_WINDOW - 1.0 / rate)


def note_slot_time(state: Learned, seconds: float) -> None:
    """Fold one job's time holding its slot into the average."""
    if state.slot_time == 0.0:
        state.slot_time = seconds
    else:
        state.slot_time += 0.1 * (seconds - state.slot_time)


class LimitsSnapshot(msgspec.Struct, frozen=True):
    """The limits in force (part of ``client.statistics()``)."""

    in_flight: int
    rate: float | None
    rate_limited: int


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
            self.state = Learned(
                in_flight=float(min(INITIAL_IN_FLIGHT, max_in_flight)),
                rate=min(INITIAL_RATE, self.rate_cap),
            )
        else:
            self.state = Learned(in_flight=float(max_in_flight), rate=self.rate_cap)
        self._held: dict[object, float] = {}
        self._waiters: collections.deque[tuple[object, anyio.Event]] = collections.deque()
        self._next_send = 0.0
        self._rate_waited_at = 0.0
        self._accepts: collections.deque[float] = collections.deque()
        self._first_accept = 0.0
        self._pacing = 0
        self._epoch = 0  # bumped by a rate refusal: waits at the old pace start over
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
        taken = self._held.pop(holder, None)
        if taken is not None:
            if self.adaptive:
                note_slot_time(self.state, time.monotonic() - taken)
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self._room():
            holder, event = self._waiters.popleft()
            self._held[holder] = time.monotonic()
            event.set()

    # -- creates --------------------------------------------------------------------------

    def _rate_bound(self) -> bool:
        return time.monotonic() - self._rate_waited_at < 1.0

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
            if remaining > 0 and not testing_enabled():
                # Spread the restart a little so the paused submissions do not land at once.
                await anyio.sleep(remaining + random.uniform(0, min(1.0, remaining * 0.1)))
            rate = state.rate
            if self.adaptive and testing_enabled():
                rate = self.rate_cap  # learning the rate is a wait: off in tests; a cap stays
            if rate >= RATE_MAX:
                return
            # The schedule is a virtual clock (GCRA, a token bucket in one number): each
            # create moves it on by 1/rate, and a create may go while the clock is less
            # than BURST_WINDOW ahead of real time.
            now = time.monotonic()
            slot = max(now, self._next_send)
            self._next_send = slot + 1.0 / rate
            send_at = slot - burst_tolerance(rate)
            if send_at <= now:
                return
            self._rate_waited_at = now
            await anyio.sleep(send_at - now)
            if epoch == self._epoch:
                return
            # A refusal came while this create waited its turn at the old pace: queue
            # again at the new one rather than send what the provider would refuse.

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

    def accepted(self, holder: object) -> None:
        if not self.adaptive:
            return
        now = time.monotonic()
        if not self._first_accept:
            self._first_accept = now
        self._accepts.append(now)
        # Accepted with this many of ours active: the limit is what held us back only if
        # they filled it (not when the pace kept slots waiting).
        bound = self._active >= int(self.state.in_flight)
        if accepted(
            self.state,
            time.time(),
            ceiling=self.ceiling,
            rate_cap=self.rate_cap,
            in_flight_bound=bound,
            rate_bound=self._rate_bound(),
        ):
            self._grant()

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
        if not self.adaptive:
            pause = retry_after if retry_after is not None else backoff
            state.cooldown_until = max(state.cooldown_until, now + pause)
            logger.info("rate limited: pausing submissions for %.2f s", pause)
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
            )
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
            self._next_send = resume + burst_tolerance(state.rate)
            self._epoch += 1
        if "concurrency" in kinds and retrying:
            # Back to the queue: the refused job retries when a running job ends.
            self.release(holder)
            await self.acquire(holder)
            if self._active <= 1 and retry_after is None and not testing_enabled():
                # None of ours is running, so no end of ours will pace the retry: another
                # process or client holds the quota. Do not spin.
                await anyio.sleep(min(backoff, max(HOLD, state.slot_time)))

    def snapshot(self) -> LimitsSnapshot:
        rate = self.state.rate
        return LimitsSnapshot(
            in_flight=max(1, int(self.state.in_flight)),
            rate=None if rate >= RATE_MAX or math.isinf(rate) else round(rate, 3),
            rate_limited=self.rate_limited,
        )

    async def aclose(self) -> None:
        self._held.clear()
        self._waiters.clear()
