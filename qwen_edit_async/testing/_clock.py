"""The fake provider's clock: the system's, moved forward on request.

Everything in the fake that expires (signed result URLs) reads this clock, so a test can
make an hour pass with :meth:`FakeClock.advance` instead of sleeping through it.
"""

from __future__ import annotations

import math
import threading
import time

__all__ = ["FakeClock"]


class FakeClock:
    """The system's ``time.time()`` plus the seconds skipped so far.

    >>> clock = FakeClock()
    >>> before = clock.time()
    >>> clock.advance(3600)
    >>> clock.time() - before >= 3600
    True
    """

    def __init__(self) -> None:
        self._skipped = 0.0
        # advance() may come from a test's thread while the fake runs on its own loop.
        self._lock = threading.Lock()

    @property
    def skipped(self) -> float:
        """Seconds added by :meth:`advance` so far."""
        return self._skipped

    def time(self) -> float:
        """Wall-clock seconds since the epoch, as the fake sees them."""
        return time.time() + self._skipped

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never back: time the fake has shown stays
        shown)."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds: {seconds!r}; must be a finite number >= 0")
        with self._lock:
            self._skipped += float(seconds)
