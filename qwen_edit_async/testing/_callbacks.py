"""Completion callbacks as Evolink documents them, with faults.

When a task with a ``callback_url`` ends (succeeds or fails; a stuck task never does), the fake
POSTs the task's status answer (the body ``GET /v1/tasks/{id}`` would give) to that URL: a
10 s timeout per attempt, any 2xx accepted, otherwise up to 3 retries after 1, 2 and 4 s.

Unlike Evolink, which refuses private addresses, the fake calls loopback URLs only
(``http://127.0.0.1:PORT/...`` is allowed in the fake alone): a callback URL on any other host
is accepted at create, as Evolink would, and never called, so no test reaches the internet.

Faults (fields of :class:`~qwen_edit_async.testing.Faults`, drawn from their own random
stream so that the latencies stay the same sequence): ``callback_drop`` (never sent),
``callback_delay`` (seconds before the first attempt), ``callback_duplicate`` (delivered twice),
``callback_out_of_order`` (held back until the next delivery has gone), and the delivery's
``callback_timeout``, ``callback_retries`` and ``callback_retry_base`` (the first retry wait,
doubled each time).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web

from ._jobs import Job
from ._state import FakeState

__all__ = ["CALLBACKS", "CallbackSender", "loopback_url"]

_ENCODE = msgspec.json.Encoder().encode
#: A held-back (out of order) delivery goes at the latest this long after it was due.
_HOLD_MAX = 0.5


def loopback_url(url: str) -> bool:
    """Whether the fake may call ``url``: http(s) on a loopback address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):  # urlsplit gives it in lower case
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CallbackSender:
    """Schedules and sends the callbacks of one fake's tasks."""

    def __init__(self, fake: FakeState, body: Callable[[Job, float], Any]) -> None:
        self.fake = fake
        self.stats = fake.stats
        self._body = body
        self.rng = random.Random(fake.seed + 2)
        self._session: aiohttp.ClientSession | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: list[tuple[Job, str]] = []

    def schedule(self, job: Job, url: str) -> None:
        """Call ``url`` back when ``job`` ends (if it ever does)."""
        job.callback_url = url
        if not loopback_url(url):
            self.stats.callbacks_undeliverable += 1
            return
        if job.outcome == "stuck":
            return
        faults = self.fake.faults
        if faults.callback_drop and self.rng.random() < faults.callback_drop:
            self.stats.callbacks_dropped += 1
            return
        copies = (
            2 if faults.callback_duplicate and self.rng.random() < faults.callback_duplicate else 1
        )
        hold = (
            bool(faults.callback_out_of_order) and self.rng.random() < faults.callback_out_of_order
        )
        loop = asyncio.get_running_loop()
        delay = max(0.0, job.end_mono - time.monotonic()) + faults.callback_delay
        handle: asyncio.TimerHandle | None = None

        def due() -> None:
            if handle is not None:
                self._timers.discard(handle)
            if hold:
                self._held.extend([(job, url)] * copies)
                self._later(_HOLD_MAX, self._release)
                return
            for _ in range(copies):
                self._start(job, url, release=True)

        handle = loop.call_later(delay, due)
        self._timers.add(handle)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            action()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _release(self) -> None:
        held, self._held = self._held, []
        for job, url in held:
            self._start(job, url, release=False)

    def _start(self, job: Job, url: str, *, release: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(job, url, release))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job: Job, url: str, release: bool) -> None:
        stats = self.stats
        faults = self.fake.faults
        now = max(time.monotonic(), job.end_mono)
        data = _ENCODE(self._body(job, now))
        headers = {"Content-Type": "application/json", "X-Request-Id": self.fake.next_request_id()}
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=faults.callback_timeout)
        wait = faults.callback_retry_base
        for attempt in range(1 + max(0, faults.callback_retries)):
            if attempt:
                await asyncio.sleep(wait)
                wait *= 2
            stats.callbacks_sent += 1
            try:
                async with session.post(url, data=data, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                stats.callbacks_failed += 1
                ok = False
            else:
                if not ok:
                    stats.callbacks_refused += 1
            if release and attempt == 0 and self._held:
                self._release()  # the held-back deliveries now arrive after this one
            if ok:
                stats.callbacks_delivered += 1
                if job.callback_delivered_at is None:
                    job.callback_delivered_at = time.time()
                if job.first_seen_completed_at is None:
                    job.first_seen_completed_at = job.callback_delivered_at
                return

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Callbacks never go through a proxy: they are for loopback only.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512), trust_env=False
            )
        return self._session

    async def close(self) -> None:
        """Cancel scheduled and running deliveries; close the session."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._held.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None


#: The app key of the fake's :class:`CallbackSender`.
CALLBACKS = web.AppKey("callbacks", CallbackSender)
