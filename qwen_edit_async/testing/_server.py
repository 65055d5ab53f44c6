"""``FakeProvider``: configuration, lifecycle and the public controls of the fake."""

from __future__ import annotations

import asyncio
import collections
import os
import random
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal

import aiohttp
from aiohttp import web

from ._callbacks import CALLBACKS
from ._clock import FakeClock
from ._faults import Decision, Faults, draw, parse_script
from ._files import FileStore
from ._handlers import build_app
from ._latency import Latency, LatencyLike, as_latency
from ._quota import RateGuard
from ._stats import FakeStats

__all__ = ["FakeProvider"]

_Uploader = Callable[[bytes, str], Awaitable[str]]


class FakeProvider:
    """A local stand-in for every qwen-image-edit-plus provider, on 127.0.0.1.

    One aiohttp app answers each dialect at its documented path (see the package docstring):
    validation in each provider's own error shape, size snapping and aspect ratio, real PNG
    results behind expiring URLs, configurable latency and fault injection.

    Example::

        async with FakeProvider(latency=0.05, faults=Faults(rate_limit=0.1)) as fake:
            client = QwenEditClient("evolink", api_key="k", base_url=fake.url)
            ...
            assert fake.stats.jobs_created == 1

    ``api_key=None`` accepts any non-empty ``Authorization: Bearer <key>``; a string requires
    exactly that key. ``latency`` is seconds, a :class:`Latency`, or ``rng -> seconds``.
    ``estimated_time`` is Evolink's hint in whole seconds: ``"auto"`` rounds the typical
    latency, ``None`` leaves the hint out. The account limits a client cannot see, each
    answered with 429 in the dialect's shape and counted in ``stats``: ``max_running``
    refuses a create while that many jobs run (a concurrent-task quota); ``max_rate``
    refuses requests beyond that many in any second, and ``burst`` (with ``max_rate``)
    refuses a rate that rises too quickly: a token bucket of ``burst`` requests refilled at
    ``max_rate`` per second. All three may be changed while the fake runs (attributes, or
    ``POST /_fake/config``). ``b64_json=True`` makes ModelStream/OneToken return images inline.
    ``clock`` (a :class:`FakeClock`, else a new one) is where the fake reads the time when it
    checks a result URL's expiry: ``fake.clock.advance(3600)`` expires every URL it gave
    with ``url_lifetime`` up to an hour, without waiting.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: LatencyLike = 0.05,
        url_lifetime: float = 3600.0,
        estimated_time: int | Literal["auto"] | None = "auto",
        faults: Faults | None = None,
        max_running: int | None = None,
        max_rate: float | None = None,
        burst: int | None = None,
        seed: int = 0,
        b64_json: bool = False,
        clock: FakeClock | None = None,
    ) -> None:
        if api_key is not None and not api_key:
            raise ValueError("api_key must be None (any key) or a non-empty string")
        if max_rate is not None and not max_rate > 0:
            raise ValueError(f"max_rate must be None or above 0, got {max_rate!r}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be None or at least 1, got {burst!r}")
        self.api_key = api_key
        self.host = host
        self.port = port
        self.latency = latency
        self.url_lifetime = float(url_lifetime)
        self.estimated_time = estimated_time
        self.faults = faults if faults is not None else Faults()
        self.max_running = max_running
        self.max_rate = max_rate
        self.burst = burst
        self.rate_guard = RateGuard()
        self.b64_json = b64_json
        self.seed = seed
        self.rng = random.Random(seed)
        self.poll_rng = random.Random(seed + 1)
        #: The fake's clock: ``fake.clock.advance(3600)`` expires result URLs at once.
        self.clock = clock if clock is not None else FakeClock()
        self.files = FileStore(self.clock)
        self._stats = FakeStats()
        self._script: collections.deque[Decision] = collections.deque()
        self._rid_prefix = os.urandom(8).hex()
        self._rid_serial = 0
        self._job_serial = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.closing = asyncio.Event()
        self._url: str | None = None
        self.app = build_app(self)
        self.callbacks = self.app[CALLBACKS]

    # -- configuration -----------------------------------------------------------------

    @property
    def latency(self) -> Latency:
        """The job duration (settable with seconds, a :class:`Latency` or a callable)."""
        return self._latency

    @latency.setter
    def latency(self, value: LatencyLike) -> None:
        self._latency = as_latency(value)

    @property
    def evolink_estimated_time(self) -> int | None:
        """The ``task_info.estimated_time`` Evolink answers carry, or ``None`` for none."""
        if self.estimated_time == "auto":
            return int(self._latency.typical + 0.5)
        return self.estimated_time

    @property
    def stats(self) -> FakeStats:
        """Live counters and per-job records (see :class:`FakeStats`)."""
        return self._stats

    @property
    def url(self) -> str:
        """The root URL, ``http://127.0.0.1:PORT`` (no trailing slash); set once started."""
        if self._url is None:
            raise RuntimeError("FakeProvider is not started: use 'async with' or await start()")
        return self._url

    def script(self, *words: str) -> None:
        """Queue the fates of the next create requests, one word each, before probabilities.

        Words: ``ok``, ``rate_limit[:SECONDS]``, ``server_error[:STATUS]``,
        ``drop_before_accept``, ``drop_after_accept``, ``malformed``, ``content_filter``,
        ``quota``, ``fail[:CODE]``, ``stuck``, ``refuse:NAME`` (a real refusal, see
        ``REFUSALS``). Each create that passes the API key check takes the next word.

        Example::

            fake.script("rate_limit:2", "server_error:503", "ok")
        """
        self._script.extend(parse_script(words))

    @property
    def pending_script(self) -> list[str]:
        """The script words not yet consumed."""
        return [d.kind if d.arg is None else f"{d.kind}:{d.arg}" for d in self._script]

    def reset(self) -> None:
        """Forget jobs, uploads, counters and the script; configuration and faults stay."""
        self._stats.reset()
        self._script.clear()
        self.files.clear_uploads()

    # -- used by the handlers ----------------------------------------------------------

    def next_decision(self) -> Decision:
        """The fate of one create: the next script word, else a draw from ``faults``."""
        if self._script:
            return self._script.popleft()
        return draw(self.faults, self.rng)

    def next_request_id(self) -> str:
        """A DashScope-looking request id, unique within this fake."""
        self._rid_serial += 1
        p, serial = self._rid_prefix, self._rid_serial
        return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{serial >> 48:04x}-{serial & 0xFFFFFFFFFFFF:012x}"

    def next_job_serial(self) -> int:
        self._job_serial += 1
        return self._job_serial

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> FakeProvider:
        """Bind and serve; ``fake.url`` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("FakeProvider already started")
        self.closing = asyncio.Event()
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True, backlog=4096)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self._url = f"http://{url_host}:{bound_port}"
        self.files.base_url = self._url
        self.files.host = self.host
        self.files.port = bound_port
        return self

    async def close(self) -> None:
        """Stop serving: held (stuck) requests are dropped, connections closed."""
        self.closing.set()
        await self.callbacks.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- uploads -----------------------------------------------------------------------

    @property
    def upload_url(self) -> str:
        """The fake's upload endpoint (``POST`` bytes, answers ``{"url": ...}``).

        What ``qwen-edit run --upload-url`` takes for a URL-only provider on the fake:

        >>> fake.upload_url                                    # doctest: +SKIP
        'http://127.0.0.1:8000/_fake/upload'
        """
        return f"{self.url}/_fake/upload"

    async def upload(self, data: bytes, mime: str) -> str:
        """Upload ``data`` to ``POST /_fake/upload`` and return its URL on the fake.

        This is the uploader the client needs for URL-only providers (Evolink)::

            client = QwenEditClient("evolink", base_url=fake.url, uploader=fake.uploader)
        """
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(
            self.upload_url, data=data, headers={"Content-Type": mime}
        ) as resp:
            resp.raise_for_status()
            payload = await resp.json()
        url: str = payload["url"]
        return url

    @property
    def uploader(self) -> _Uploader:
        """An async callable ``(data: bytes, mime: str) -> url`` (``self.upload``)."""
        return self.upload

    def __repr__(self) -> str:
        where = self._url or "not started"
        return f"<FakeProvider {where} latency={self._latency!r} faults={self.faults!r}>"
