"""What a client learns about a provider's limits: the arithmetic, without I/O or waiting.

Providers limit an account, not a client, and do not publish the numbers: a concurrent-task
quota, requests per second (with a guard against bursts), or both. A client learns them
from the answers to its creates, the way TCP learns a path (slow start, then additive
increase and multiplicative decrease) and Netflix's concurrency-limits learn a server:

- **Concurrency** (jobs holding a slot). It starts at :data:`INITIAL_IN_FLIGHT` and grows
  by :data:`SLOW_START_STEP` for each create accepted while the limit is in use (slow
  start: the creates in the air double every round trip), never above ``max_in_flight``,
  which is the ceiling. A 429 that the provider calls a concurrency refusal proves the
  quota is no larger than the jobs already running: the limit drops to that number and
  the refused job waits for the next free slot. The limit then holds for a while and
  probes upward, slowly at first and faster the longer no refusal comes (the shape of TCP
  CUBIC): a steady quota costs one refused create every few seconds, a raised quota is
  found within seconds.
- **Rate** (creates per second). Before the provider first refuses one, creates are not
  paced: the concurrency's slow start already keeps a burst from happening (4 creates in the
  air at first, then at most two more per accepted one), and a rate limit answers within a
  round trip. Holding the first second to a few creates cost a fifth of a short batch's
  time at no gain. The first 429 the provider calls a rate refusal ends this: the rate
  starts from the creates accepted in the last second (at least :data:`INITIAL_RATE`) and
  grows while the pacing is what holds submissions back, gently while it is small and by a
  share of itself above :data:`RATE_KNEE`; ready creates within :data:`BURST_WINDOW` of the
  rate go together; a later rate refusal cuts it by :data:`RATE_CUT`, then it probes like
  the concurrency. ``submit_rate``, when set, caps it and paces from the first create.
- A ``Retry-After`` starts a cooldown every submission waits out. A 429 whose kind the
  provider does not say is charged to whichever limit was holding submissions back.

:class:`Learned` is the state; :func:`accepted` and :func:`refused` update it.
``_limits.LocalLimits`` keeps it in the process; ``_shared.RedisLimits`` keeps it in Redis for
every process and machine using one key.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "BURST_WINDOW",
    "INITIAL_IN_FLIGHT",
    "INITIAL_RATE",
    "PROVISIONAL_AFTER",
    "PROVISIONAL_MIN",
    "RATE_CUT",
    "RATE_MAX",
    "Kind",
    "Learned",
    "accepted",
    "burst_tolerance",
    "initial",
    "note_slot_time",
    "provisional_after",
    "refused",
]

Kind = Literal["concurrency", "rate"]

#: Concurrency a client starts with (slow start), when ``max_in_flight`` allows it.
INITIAL_IN_FLIGHT = 4
#: Slots added for each create accepted while the concurrency limit is full, before the
#: first refusal. Two: the accepted job keeps its slot, so one would only replace the
#: create that was answered (a constant number in the air, linear growth); two doubles
#: the creates in the air each round trip, as TCP's slow start doubles its window.
SLOW_START_STEP = 2.0
#: Seconds a create sent during slow start may go unanswered before it counts as accepted,
#: at most: a refusal comes back within a round trip, an accepted synchronous create only
#: with its image. Shorter than most round trips to a provider abroad, so slow start may
#: double a few times per real round trip there; the first refusal still ends it. It is the
#: wait while no round trip to the provider has been measured.
PROVISIONAL_AFTER = 0.1
#: The least of that wait, and the measured round trips (connection set-ups) it spans: a
#: provider a millisecond away would refuse within a few; slow start then reaches 200 in
#: flight in a few tens of milliseconds instead of four tenths of a second.
PROVISIONAL_MIN = 0.02
PROVISIONAL_ROUND_TRIPS = 4.0
#: The least creates per second a client paces at once a rate refusal ended the unpaced start.
INITIAL_RATE = 4.0
#: Creates per second added for each create accepted while the rate held submissions back,
#: below :data:`RATE_KNEE`: the rate grows about 4.5 times each second until the provider
#: first refuses one. Above the knee each step is that share of the rate, so reaching
#: hundreds per second takes a fraction of a second instead of seconds; a limit above the
#: knee is then found by one overshoot and the cut to the measured rate.
RATE_STEP = 1.5
RATE_KNEE = 8.0
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

    ``in_flight`` and ``rate`` are the limits in force (``rate`` at :data:`RATE_MAX`: not
    paced). ``*_base`` and ``*_cut_at`` remember the last refusal (``0`` before any: slow
    start). Times are wall-clock seconds, so that
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
    #: When the first rate refusal ended the unpaced start (0: not yet).
    rate_paced_at: float = 0.0


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
    slow_start_step: float = SLOW_START_STEP,
) -> bool:
    """Update ``state`` for a create the provider accepted; whether anything changed.

    A limit grows only while it is what holds submissions back (``*_bound``): an idle
    client learns nothing about the provider. ``slow_start_step``: slots per accepted create
    before the first refusal.
    """
    changed = False
    if in_flight_bound and state.in_flight < ceiling:
        if state.in_flight_cut_at == 0.0:
            grown = state.in_flight + slow_start_step
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
    recent: float | None = None,
) -> None:
    """Update ``state`` for a create refused with 429 of ``kind``.

    ``others``: the jobs holding a slot besides the refused one (for a concurrency
    refusal, the quota is no larger than that). ``measured``: creates accepted in the
    last second (for a rate refusal, the limit is no larger than that); unknown, the
    first refusal halves the rate, as TCP leaves slow start. ``recent``: creates accepted
    in the last second however short the run so far, the pace a rate refusal starts from
    when creates were not paced yet.
    """
    if kind == "concurrency":
        state.in_flight = max(1.0, min(state.in_flight, float(others)))
        state.in_flight_base = state.in_flight
        state.in_flight_cut_at = now
    elif state.rate >= RATE_MAX:
        # The end of the unpaced start: pace from what the provider took, and grow from there
        # as a slow start (no cut remembered yet).
        state.rate = max(INITIAL_RATE, (recent or 0.0) * MEASURED_SHARE)
        state.rate_paced_at = now
    elif state.rate_paced_at and not state.rate_cut_at and now - state.rate_paced_at <= 1.0:
        pass  # refusals of the burst that ended the unpaced start: it is paced already
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


def initial(max_in_flight: int, rate_cap: float) -> Learned:
    """What a client knows before its first create: :data:`INITIAL_IN_FLIGHT` slots (or
    ``max_in_flight`` if smaller), creates not paced unless ``submit_rate`` caps them."""
    return Learned(in_flight=float(min(INITIAL_IN_FLIGHT, max_in_flight)), rate=rate_cap)


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


def provisional_after(round_trip: float | None) -> float:
    """Seconds a create sent during slow start waits unanswered before it counts as
    accepted: :data:`PROVISIONAL_ROUND_TRIPS` times ``round_trip`` (the quickest connection
    set-up to the provider seen so far), between :data:`PROVISIONAL_MIN` and
    :data:`PROVISIONAL_AFTER`; ``None`` (none measured yet): :data:`PROVISIONAL_AFTER`.

    >>> provisional_after(None), provisional_after(0.0002), provisional_after(0.01)
    (0.1, 0.02, 0.04)
    """
    if round_trip is None:
        return PROVISIONAL_AFTER
    return min(PROVISIONAL_AFTER, max(PROVISIONAL_MIN, PROVISIONAL_ROUND_TRIPS * round_trip))
