"""A request rate paced by what the other side accepts: start generously, halve on 429, recover.

Self-contained (no I/O, no event loop): the caller asks :meth:`AdaptiveRate.delay` before each
request and reports each answer with :meth:`AdaptiveRate.accepted` or
:meth:`AdaptiveRate.limited`. It is a token bucket whose rate follows the answers
(additive increase, multiplicative decrease):

- It starts at ``start`` requests per second (or ``ceiling``, if lower).
- A 429 halves the rate, at most once per ``cooldown`` seconds (the 429s of one burst are one
  signal, not many), never below ``floor``; a ``Retry-After`` also pauses every request until
  it has passed.
- While the bucket is the bottleneck, accepted requests raise the rate by ``growth`` (a
  fraction) per second, at least 1 request/s per second: a provider that stopped refusing
  gets its rate back within seconds, up to ``ceiling``.

>>> pace = AdaptiveRate(start=100.0)
>>> pace.delay()
0.0
>>> pace.limited(retry_after=None, now=10.0)
>>> pace.rate
50.0
"""

from __future__ import annotations

import math
import time

__all__ = ["AdaptiveRate"]


class AdaptiveRate:
    """Requests per second that follow the answers (see the module docstring)."""

    __slots__ = (
        "_last_cut",
        "ceiling",
        "cooldown",
        "floor",
        "growth",
        "paused_until",
        "rate",
        "stamp",
        "tokens",
    )

    def __init__(
        self,
        *,
        start: float = 1000.0,
        ceiling: float | None = None,
        floor: float = 1.0,
        growth: float = 0.1,
        cooldown: float = 0.5,
    ) -> None:
        self.ceiling = math.inf if ceiling is None else ceiling
        self.floor = min(floor, self.ceiling)
        self.rate = min(start, self.ceiling)
        self.growth = growth
        self.cooldown = cooldown
        self.tokens = max(1.0, self.rate)
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self._last_cut = -math.inf

    def delay(self, now: float | None = None) -> float:
        """Take a token; the seconds to wait before using it."""
        now = time.monotonic() if now is None else now
        capacity = max(1.0, self.rate)  # bursts of up to one second's worth
        self.tokens = min(capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        wait = 0.0 if self.tokens >= 0 else -self.tokens / self.rate
        return max(wait, self.paused_until - now)

    def accepted(self) -> None:
        """A request was answered (not refused for its rate)."""
        if self.tokens < 1.0 and self.rate < self.ceiling:
            # The bucket is what holds requests back: ask for a little more.
            # One second's worth of answers adds ``growth`` of the rate (at least 1/s).
            step = max(1.0, self.growth * self.rate) / self.rate
            self.rate = min(self.ceiling, self.rate + step)

    def limited(self, retry_after: float | None, now: float | None = None) -> None:
        """A request was refused with 429 (``retry_after``: the seconds it asked for)."""
        now = time.monotonic() if now is None else now
        if now - self._last_cut >= self.cooldown:
            self._last_cut = now
            self.rate = max(self.floor, self.rate / 2)
            self.tokens = min(self.tokens, 0.0)
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + retry_after)
