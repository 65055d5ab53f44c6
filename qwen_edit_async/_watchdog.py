"""Read timeouts for the pipe's requests, with one event-loop timer for all of them.

aiohttp's ``sock_read`` arms a timer when a request has been written and again for every
chunk read: two timers per create, each pushed on the event loop's heap (whose comparisons
are Python calls) and cancelled, about a tenth of the client's instructions per job on the
synchronous route. Here each request in flight is :class:`Watched` instead, and one timer
(:class:`Watchdog`) looks at all of them a few times per read timeout. A request that made no
progress for its whole ``read_timeout`` has its connection aborted (``expired``): the pipe
reports it as lost, "no answer within ..." as before.

Progress is what the connection shows: bytes of the request still queued for the socket
going down (the upload goes on), bytes of the answer's body read going up. The head of the
answer counts as one step: a server that sends nothing within ``read_timeout`` after the
request left (a synchronous create's answer comes whole when the image is made) is cut, and
so is one that drips its headers. A timeout is noticed between ``read_timeout`` and
``read_timeout`` plus a tick (an eighth of it, at most one second) after the last progress.

A request waiting for a free connection of the pool (more requests want one than the pool
holds) is not timed until it has one or starts making one: that wait is the client's own
queue, not the provider's silence. Making a connection then counts (name resolution
included; the TCP connect has its own timeout).

The connection of a request is learnt from the pipe's connector through a context variable
(:data:`watching`) the pipe sets around the request: aiohttp asks the connector for it in the
task that sends. This module knows no aiohttp: it reads a connection's transport and a
response's body stream, whatever gave them.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from typing import Any

import msgspec

__all__ = ["Watchdog", "Watched", "watching"]

#: The request the current task is sending (set by the pipe around ``session.request``).
watching: contextvars.ContextVar[Watched | None] = contextvars.ContextVar(
    "qwen_edit_async_watched", default=None
)

_MAX_TICK = 1.0
_MIN_TICK = 0.01


class Watched(msgspec.Struct, eq=False):
    """One request in flight: its read timeout, when it last made progress, and what shows
    the progress (its connection, then its response).

    A Struct (made in C: one per request); ``eq=False``: it is its own identity, a key of
    the watchdog's table.
    """

    limit: float
    #: When it last made progress (the monotonic clock).
    since: float
    #: The connection, once the connector gave it.
    connection: Any = None
    #: The response, once its head was read.
    response: Any = None
    mark: tuple[int, int] = (-1, -1)
    #: Its connection was aborted at its read timeout.
    expired: bool = False
    #: Waiting for a free connection of the pool: not the provider's silence, so its read
    #: timeout does not run yet (its clock starts when it has a connection or makes one).
    queued: bool = True

    def connecting(self) -> None:
        """It has a connection of the pool, or is making one: its read timeout runs now."""
        if self.queued:
            self.queued = False
            self.since = time.monotonic()

    def _progress(self) -> tuple[int, int]:
        """(bytes of the request still queued, bytes of the answer's body read)."""
        queued = -1
        connection = self.connection
        if connection is not None:
            transport = connection.transport
            if transport is not None:
                queued = transport.get_write_buffer_size()
        read = -1
        response = self.response
        if response is not None:
            read = response.content.total_bytes
        return queued, read

    def _abort(self) -> None:
        self.expired = True
        connection = self.connection
        transport = None if connection is None else connection.transport
        if transport is not None:
            transport.abort()  # the awaiting request fails at once; the pipe says why


class Watchdog:
    """The read timeouts of the requests in flight, checked by one timer.

    >>> watchdog = Watchdog()
    >>> watched = watchdog.start(30.0)          # doctest: +SKIP
    >>> watchdog.end(watched)                   # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._watched: dict[Watched, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tick = math.inf
        #: Timers armed so far (the test of "no timer per request" counts them).
        self.timers = 0

    def start(self, limit: float) -> Watched:
        """Watch a request about to be sent, with ``limit`` seconds of read timeout."""
        # The monotonic clock, not loop.time(): asyncio.get_running_loop() costs a getpid()
        # system call on each call, and this runs for every request.
        watched = Watched(limit, time.monotonic())
        self._watched[watched] = None
        tick = min(_MAX_TICK, max(_MIN_TICK, limit / 8))
        if tick < self._tick:
            self._arm(asyncio.get_running_loop(), tick)
        return watched

    def end(self, watched: Watched) -> None:
        """The request ended (answered, failed or cancelled)."""
        self._watched.pop(watched, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._tick = tick
        self._timer = loop.call_later(tick, self._fire, loop)
        self.timers += 1

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._tick = None, math.inf
        if not self._watched:
            return  # armed again by the next request
        now = time.monotonic()
        tick = math.inf
        for watched in list(self._watched):
            if watched.queued:
                tick = min(tick, watched.limit / 8)
                continue
            mark = watched._progress()
            if mark != watched.mark:
                watched.mark, watched.since = mark, now
            elif now - watched.since >= watched.limit:
                del self._watched[watched]
                watched._abort()
                continue
            tick = min(tick, watched.limit / 8)
        if self._watched:
            self._arm(loop, min(_MAX_TICK, max(_MIN_TICK, tick)))
