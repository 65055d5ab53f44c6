"""The safety net of jobs that wait for a completion callback: when to poll them anyway.

A job whose provider calls back (:mod:`._callbacks`) is still polled, late, in case its
callback never comes: :class:`SafetyNet` learns how long callbacks take (their 95th
percentile x 1.3) and gives each such task a :class:`SafetyPlan`, the poller's plan for it.
A run where polling finds every end and no callback arrives says so once in the log.
"""

from __future__ import annotations

import collections
import logging
import math

__all__ = ["SafetyNet", "SafetyPlan"]

logger = logging.getLogger("qwen_edit_async")

#: Callback latencies kept; the safety poll comes at _SAFETY_MARGIN x their 95th percentile.
#: The first callbacks are the fastest tasks of the first wave: learn from 32, not fewer.
_SAMPLES, _REFRESH, _LEARNED = 256, 32, 32
_QUANTILE, _SAFETY_MARGIN = 0.95, 1.3
#: Before anything is learned: this many times the hint (or ``poll_initial``).
_UNLEARNED_FACTOR = 2.0
_MIN_SAFETY = 0.05
#: Jobs completed by polling, none by callback, before saying the callbacks do not arrive.
_SILENCE_WARNING = 20


class SafetyPlan:
    """Status requests of a task that also waits for its callback: the first at ``first``
    seconds after acceptance, then at intervals growing by half, capped at ``cap``."""

    __slots__ = ("cap", "first")

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap

    def at(self, attempt: int) -> float:
        t, gap = self.first, self.first / 2
        for _ in range(attempt):
            t += min(self.cap, max(_MIN_SAFETY, gap))
            gap *= 1.5
        return t

    def recheck(self, attempt: int, elapsed: float) -> float:
        return elapsed


class SafetyNet:
    """When to poll a task whose callback has not come: late, from the latencies callbacks
    revealed (their 95th percentile x 1.3), capped at ``max_interval``.

    >>> net = SafetyNet(initial=1.0, max_interval=10.0)
    >>> net.plan(None).first
    2.0
    >>> for _ in range(32): net.observe_callback(0.5)
    >>> net.plan(None).first
    0.65
    """

    def __init__(self, *, initial: float, max_interval: float, public_url: str = "") -> None:
        self._initial = initial
        self._cap = max(_MIN_SAFETY, max_interval)
        self._samples: collections.deque[float] = collections.deque(maxlen=_SAMPLES)
        self._fresh = 0
        self._learned: float | None = None
        self._by_callback = 0
        self._by_poll = 0
        self._warned = False
        self._url = public_url

    def plan(self, hint: float | None) -> SafetyPlan:
        """The plan of a task accepted now (``hint``: the provider's estimate, seconds)."""
        if self._learned is not None:
            first = self._learned
        else:
            base = hint if hint is not None and hint > 0 and math.isfinite(hint) else None
            first = _UNLEARNED_FACTOR * (base or self._initial)
        return SafetyPlan(min(self._cap, max(_MIN_SAFETY, first)), self._cap)

    def observe_callback(self, elapsed: float) -> None:
        """A callback completed a task ``elapsed`` s after it was accepted."""
        self._by_callback += 1
        self._samples.append(elapsed)
        self._fresh += 1
        if self._fresh >= _REFRESH or (self._learned is None and len(self._samples) >= _LEARNED):
            self._fresh = 0
            ordered = sorted(self._samples)
            q = ordered[min(len(ordered) - 1, int(_QUANTILE * len(ordered)))]
            self._learned = _SAFETY_MARGIN * q

    def observe_poll(self) -> None:
        """Polling, not a callback, found a task's end (a callback lost or late)."""
        self._by_poll += 1
        if not self._by_callback and self._by_poll >= _SILENCE_WARNING and not self._warned:
            self._warned = True
            logger.warning(
                "%d jobs ended and no callback has arrived: is %s reachable by the provider? "
                "Jobs go on by polling, more slowly",
                self._by_poll,
                self._url or "the callback receiver",
            )
