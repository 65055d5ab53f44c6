"""``ClientStatistics``: a frozen snapshot of a client's work."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

__all__ = ["ClientStatistics", "ProgressHook"]


class ClientStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a client's work (``client.statistics()``).

    >>> stats = client.statistics()                     # doctest: +SKIP
    >>> stats.in_flight, stats.completed, stats.failed  # doctest: +SKIP
    (3, 120, 2)
    """

    #: Jobs holding a slot (between taking it and their end).
    in_flight: int
    #: Jobs waiting for a slot.
    waiting: int
    #: Tasks the poller is watching.
    polling: int
    #: Jobs that ended with a result, and with an error.
    completed: int
    failed: int
    #: Status requests sent so far.
    status_requests: int
    #: Tasks whose end a provider callback reported, and a status request (with
    #: ``callbacks=``, polling only catches the callbacks that did not come).
    completed_by_callback: int = 0
    completed_by_poll: int = 0
    #: The limits in force: jobs in flight and creates per second (``None``: unpaced),
    #: learned from the provider unless ``adaptive_limits=False``; and 429s received.
    in_flight_limit: int = 0
    submit_rate_limit: float | None = None
    rate_limited: int = 0


ProgressHook = Callable[[ClientStatistics], None]
