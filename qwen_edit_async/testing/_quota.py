"""The account limits the fake enforces without telling the client: requests per second
over a sliding second, and a burst guard (a token bucket) that refuses a rate that rises
too quickly even under that limit, as DashScope does."""

from __future__ import annotations

import collections

__all__ = ["BURST_MESSAGE", "RATE_MESSAGE", "RateGuard"]

RATE_MESSAGE = "Requests rate limit exceeded, please try again later."
BURST_MESSAGE = "Request rate increased too quickly, please try again later."


class RateGuard:
    """Admits or refuses each request by the limits passed to :meth:`check`.

    >>> guard = RateGuard()
    >>> [guard.check(now=0.0, max_rate=2, burst=None) for _ in range(3)]
    [None, None, 'Requests rate limit exceeded, please try again later.']
    """

    def __init__(self) -> None:
        self._admitted: collections.deque[float] = collections.deque()
        self._tokens: float | None = None
        self._stamp = 0.0

    def check(self, *, now: float, max_rate: float | None, burst: int | None) -> str | None:
        """``None`` to admit the request (it is counted), else the refusal's message."""
        if max_rate is None:
            self._tokens = None
            return None
        admitted = self._admitted
        while admitted and admitted[0] <= now - 1.0:
            admitted.popleft()
        if len(admitted) >= max_rate:
            return RATE_MESSAGE
        if burst is not None:
            tokens = float(burst) if self._tokens is None else self._tokens
            tokens = min(float(burst), tokens + (now - self._stamp) * max_rate)
            self._stamp = now
            if tokens < 1.0:
                self._tokens = tokens
                return BURST_MESSAGE
            self._tokens = tokens - 1.0
        admitted.append(now)
        return None
