"""The one rate limiter: requests spaced at a rate, and a rate that follows the answers.

:class:`Pace` spaces requests at a given rate (GCRA: a token bucket kept as one number, the
virtual time of the next turn). It is what holds back creates (the adaptive limits, which
learn their rate themselves) and status requests (through :class:`AdaptiveRate`).

:class:`AdaptiveRate` is the pace of status requests. Self-contained (no I/O, no event loop):
the caller asks :meth:`AdaptiveRate.delay` before each request and reports each answer with
:meth:`AdaptiveRate.accepted` or :meth:`AdaptiveRate.limited`. Its rate follows the answers
(additive increase, multiplicative decrease):

- Until the provider first answers 429, requests are not paced at all (``ceiling``, when
  set, paces them from the first one; so does an explicit ``start``). Status checks come
  due in waves (the tasks of a batch start together and end near the median), and any
  fixed starting rate is either a cap on a large client's throughput (5,000 tasks in flight
  need about 2,000 requests per second) or no limit at all for a small one.
- The first 429 starts the pace at half the requests sent in the last second (TCP leaves
  slow start the same way), with bursts of up to one second's worth.
- A later 429 halves the rate, at most once per ``cooldown`` seconds (the 429s of one burst
  are one signal, not many), never below ``floor``; a ``Retry-After`` also pauses every
  request until it has passed.
- While the pace is the bottleneck, accepted requests raise the rate by ``growth`` (a
  fraction) per second, at least 1 request/s per second: a provider that stopped refusing
  gets its rate back within seconds, up to ``ceiling``.

>>> rate = AdaptiveRate()
>>> [rate.delay(now=10.0) for _ in range(300)][-1]  # not paced yet
0.0
>>> rate.limited(retry_after=None, now=10.5)
>>> rate.rate  # half of the 300 sent in the last second
150.0
"""

from __future__ import annotations

import math
import time

__all__ = ["AdaptiveRate", "Pace"]


class Pace:
    """Turns at ``rate`` per second, with a burst allowance (GCRA).

    Each turn moves a virtual clock on by ``1 / rate``; a turn may go while that clock is
    less than ``tolerance`` seconds ahead of real time (``tolerance = (b - 1) / rate`` lets
    bursts of ``b`` requests go at once).

    >>> pace = Pace()
    >>> [pace.take(now=0.0, rate=10.0, tolerance=0.1) for _ in range(3)]
    [0.0, 0.0, 0.1]
    """

    __slots__ = ("next_at",)

    def __init__(self) -> None:
        #: The virtual time of the next turn.
        self.next_at = -math.inf

    def take(self, *, now: float, rate: float, tolerance: float) -> float:
        """Claim the next turn: the seconds from ``now`` until it may go (0: at once)."""
        turn = max(now, self.next_at)
        self.next_at = turn + 1.0 / rate
        wait = turn - tolerance - now
        # Sums of 1/rate carry rounding errors: a nanosecond is no wait.
        return wait if wait > 1e-9 else 0.0

    def binding(self, *, now: float, tolerance: float) -> bool:
        """Whether the next turn would have to wait: the pace is what holds requests back."""
        return self.next_at - tolerance > now

    def resume_at(self, when: float, *, tolerance: float) -> None:
        """Start the turns again at ``when`` (the next one goes then, not before)."""
        self.next_at = when + tolerance


class AdaptiveRate:
    """Requests per second that follow the answers (see the module docstring)."""

    __slots__ = (
        "_last_cut",
        "_sent",
        "_sent_before",
        "_window",
        "ceiling",
        "cooldown",
        "floor",
        "growth",
        "pace",
        "paused_until",
        "rate",
    )

    def __init__(
        self,
        *,
        start: float | None = None,
        ceiling: float | None = None,
        floor: float = 1.0,
        growth: float = 0.1,
        cooldown: float = 0.5,
    ) -> None:
        self.ceiling = math.inf if ceiling is None else ceiling
        self.floor = min(floor, self.ceiling)
        #: Requests per second; ``inf`` while not paced (no 429 yet, no ceiling, no start).
        self.rate = min(math.inf if start is None else start, self.ceiling)
        #: Requests sent in the current second (from ``_window``) and in the one before: the
        #: rate the first 429 starts the pace from.
        self._window = -math.inf
        self._sent = 0
        self._sent_before = 0
        self.growth = growth
        self.cooldown = cooldown
        self.pace = Pace()
        self.paused_until = 0.0
        self._last_cut = -math.inf

    @property
    def paced(self) -> bool:
        """Whether requests are paced (a 429 came, or a ceiling or start rate was given)."""
        return self.rate != math.inf

    def _tolerance(self) -> float:
        # Bursts of up to one second's worth (at least one request).
        return (max(1.0, self.rate) - 1.0) / self.rate

    def _recent(self, now: float) -> float:
        """Requests sent in the last second (the one before the current window, weighted by
        how much of it is still within the last second)."""
        into = now - self._window
        if into >= 2.0:
            return 0.0
        if into >= 1.0:
            return self._sent * (2.0 - into)
        return self._sent + self._sent_before * (1.0 - into)

    def delay(self, now: float | None = None) -> float:
        """Take a turn; the seconds to wait before using it."""
        now = time.monotonic() if now is None else now
        if self.rate == math.inf:
            # Not paced: only counted, for the pace a first 429 starts from.
            if now - self._window >= 1.0:
                self._sent_before = self._sent if now - self._window < 2.0 else 0
                self._sent = 0
                self._window = now
            self._sent += 1
            return max(0.0, self.paused_until - now)
        wait = self.pace.take(now=now, rate=self.rate, tolerance=self._tolerance())
        return max(wait, self.paused_until - now)

    def accepted(self, now: float | None = None) -> None:
        """A request was answered (not refused for its rate)."""
        if self.rate >= self.ceiling:
            return  # at the ceiling, or not paced: nothing to grow
        now = time.monotonic() if now is None else now
        if self.pace.binding(now=now, tolerance=self._tolerance()):
            # The pace is what holds requests back: ask for a little more.
            # One second's worth of answers adds ``growth`` of the rate (at least 1/s).
            step = max(1.0, self.growth * self.rate) / self.rate
            self.rate = min(self.ceiling, self.rate + step)

    def limited(self, retry_after: float | None, now: float | None = None) -> None:
        """A request was refused with 429 (``retry_after``: the seconds it asked for)."""
        now = time.monotonic() if now is None else now
        if self.rate == math.inf:
            # The first 429 of an unpaced start: half of what the provider just took.
            self._last_cut = now
            self.rate = min(self.ceiling, max(self.floor, self._recent(now) / 2))
            self.pace.resume_at(now + 1.0 / self.rate, tolerance=self._tolerance())
        elif now - self._last_cut >= self.cooldown:
            self._last_cut = now
            self.rate = max(self.floor, self.rate / 2)
            # No burst after a refusal: the next request waits one turn at the new rate.
            tolerance = self._tolerance()
            if not self.pace.binding(now=now, tolerance=tolerance):
                self.pace.resume_at(now + 1.0 / self.rate, tolerance=tolerance)
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + retry_after)
