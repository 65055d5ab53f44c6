"""The only module that speaks HTTP: one aiohttp session, retries, Retry-After, one cooldown.

Retry rules (DESIGN.md, "Retries that never double-charge"):

- An answer that says the request was refused (429, 408, 5xx) is retried after a full-jitter
  exponential wait, or the ``Retry-After`` the provider asked for. A 429 on a create goes to
  the client's limits (``_limits``): they learn from it, and a ``Retry-After`` becomes one
  client-wide cooldown that every submission waits out (no stampede of N loops).
- A connection that was refused, or reset by the peer (RST), was not received: retried.
- A create whose connection closed cleanly, timed out, or answered with an unreadable body
  after the request was written may have created (and billed) a job: it raises
  :class:`SubmitUncertainError` and is not resent unless ``retry_uncertain`` is set.
- Anything that fails before a byte of the request was written (an unusable URL, DNS, TLS,
  a refused or timed-out connect) is a :class:`TransportError`: not sent, never uncertain.
  An unusable URL is not retried.
- GETs (status requests, downloads) are retried on any transport failure.
- Answers are read up to ``max_response_bytes``; a status request ends after
  ``status_timeout`` whatever the pace of its answer. Every answer body is masked (the key,
  any ``Bearer`` token) before anything reads it.
- Errors that cannot succeed (bad request, content filter, authentication, quota) are raised
  at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, nullcontext
from typing import TypeVar

import aiohttp
import anyio

from ._addresses import ForbiddenAddress, GuardedResolver, forbidden_address
from ._body import SourceChanged, StreamedBody
from ._config import ClientConfig, Secret
from ._errors import (
    APIError,
    QwenEditError,
    RateLimitError,
    SubmitUncertainError,
    TransportError,
)
from ._limits import Limits, LocalLimits
from ._models import EditResult
from ._redact import Redactor
from ._retry import RetryPolicy
from ._version import __version__
from .providers._base import HttpRequest, ProtocolError, Provider, TaskAccepted, TaskStatus

__all__ = ["Transport"]

logger = logging.getLogger("qwen_edit_async")

T = TypeVar("T")

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_USER_AGENT = f"qwen-edit-async/{__version__}"


# Failures raised before anything was written: the request cannot have been received.
_UNUSABLE_URL: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (aiohttp.InvalidURL, getattr(aiohttp, "NonHttpUrlClientError", None))
    if cls is not None
)
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(aiohttp, "ConnectionTimeoutError", None),) if cls is not None
)


class _NotReceived(Exception):
    """The request certainly did not reach the provider's application."""


class _Unusable(_NotReceived):
    """The URL cannot be requested at all: sending it again cannot help."""


class _Lost(Exception):
    """The request was written but no answer came back (the job may exist)."""


class _TooLarge(_Lost):
    """The answer is larger than the cap: it was not read."""


class Transport:
    """HTTP for one client: a session sized for its concurrency, and the retry policy.

    ``session``: a ``ClientSession`` the caller owns (it is used, never closed), or ``None``
    to create one sized for ``connections``.
    """

    def __init__(
        self,
        provider: Provider,
        api_key: Secret,
        config: ClientConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        connections: int = 100,
        limits: Limits | None = None,
    ) -> None:
        self.provider = provider
        self._key = api_key
        self._redact = Redactor(api_key.get())
        self._config = config
        #: When to send a failed request again; the poller and downloads follow it too.
        self.policy = RetryPolicy.from_config(config)
        self._session = session
        self._owns_session = session is None
        self._connections = connections
        #: Slots, pacing and the 429 cooldown of creates (fixed ones when not given).
        self.limits = limits or LocalLimits(
            max_in_flight=connections, submit_rate=None, adaptive=False
        )
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self.status_requests = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                # Names that resolve to link-local or metadata addresses are refused.
                resolver=GuardedResolver(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": _USER_AGENT},
                # Keys travel only in the headers we add per request; no cookie jar needed.
                cookie_jar=aiohttp.DummyCookieJar(),
                # HTTP(S)_PROXY and NO_PROXY, as users of other HTTP clients expect.
                trust_env=True,
            )

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the transport is not open")
        return self._session

    # -- sending --------------------------------------------------------------------------

    def _headers(self, request: HttpRequest) -> dict[str, str]:
        headers = dict(request.headers)
        headers["Authorization"] = f"Bearer {self._key.get()}"
        headers.setdefault("User-Agent", _USER_AGENT)  # also on a session the user shares
        if request.body is not None:
            headers.setdefault("Content-Type", "application/json")
        return headers

    def _timeout(self, read: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(read)
        if timeout is None:
            timeout = self._timeouts[read] = aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self._config.connect_timeout, sock_read=read
            )
        return timeout

    def _answer_cap(self, *, creates: bool) -> int:
        cfg = self._config
        if creates and self.provider.mode == "sync":
            # A synchronous answer may carry up to 6 images inline, base64 (4/3 of the bytes).
            return cfg.max_response_bytes + 8 * cfg.download_max_bytes
        return cfg.max_response_bytes

    async def _exchange(
        self,
        request: HttpRequest,
        read_timeout: float,
        *,
        cap: int,
        total: float | None = None,
        stream: StreamedBody | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send once; classify a failure as not received or lost. ``total`` bounds it all."""
        try:
            with anyio.fail_after(total) if total is not None else nullcontext():
                return await self._exchange_once(request, read_timeout, cap, stream)
        except TimeoutError as exc:
            # Only the deadline lands here: a read timeout inside is already classified.
            raise _Lost(f"no complete answer within {total:g} s") from exc

    async def _exchange_once(
        self, request: HttpRequest, read_timeout: float, cap: int, stream: StreamedBody | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """``stream``: the body as parts, produced anew for this attempt while it is sent."""
        start = time.perf_counter()
        request_headers = self._headers(request)
        data: bytes | AsyncIterator[bytes] | None = request.body
        if stream is not None:
            data = stream.chunks()
            request_headers["Content-Length"] = str(stream.length)
        try:
            async with self.session.request(
                request.method,
                request.url,
                data=data,
                headers=request_headers,
                timeout=self._timeout(read_timeout),
                allow_redirects=False,
            ) as response:
                status, headers = response.status, response.headers
                try:
                    # An error answer is classified by its status; its body is only context.
                    body = await _read_capped(response, cap, truncate=status >= 300)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    raise _Lost(f"the answer was cut off: {self._describe(exc)}") from exc
        except _UNUSABLE_URL as exc:
            raise _Unusable(f"the URL cannot be requested: {self._describe(exc)}") from exc
        except aiohttp.ClientConnectorError as exc:
            # DNS, TLS and refused connections all fail here, before anything is written.
            raise _NotReceived(f"could not connect: {self._describe(exc)}") from exc
        except _CONNECT_TIMEOUT as exc:
            raise _NotReceived(f"could not connect: {self._describe(exc)}") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise _Lost("the server closed the connection without answering") from exc
        except aiohttp.ClientOSError as exc:
            if exc.errno in _RESET_ERRNOS:
                raise _NotReceived(f"the connection was reset: {self._describe(exc)}") from exc
            raise _Lost(f"the connection failed: {self._describe(exc)}") from exc
        except asyncio.TimeoutError as exc:
            raise _Lost(f"no answer within {read_timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise _Lost(f"the request failed: {self._describe(exc)}") from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s -> %d in %.3f s request_id=%s",
                request.method,
                _path(request.url),
                status,
                time.perf_counter() - start,
                headers.get("X-Request-Id") or headers.get("x-dashscope-request-id"),
            )
        # Provider text enters here: the key it may quote never goes further.
        return status, headers, self._redact.bytes(body)

    def mask(self, body: bytes) -> bytes:
        """``body`` with this client's key and any bearer token masked (provider text that
        arrives another way, such as a completion callback)."""
        return self._redact.bytes(body)

    def _describe(self, exc: BaseException) -> str:
        return self._redact.text(str(exc) or type(exc).__name__)

    async def create(
        self,
        request: HttpRequest,
        holder: object = None,
        *,
        body: StreamedBody | None = None,
        on_send: Callable[[], Awaitable[None]] | None = None,
        attempts: int | None = None,
    ) -> EditResult | TaskAccepted:
        """Send a job-creating request; retry only what the provider certainly refused.

        ``holder`` is the job whose slot the create uses: the limits may send it back to
        the queue for a slot after a concurrency refusal. ``body``: the request body as
        parts streamed while sent (in place of ``request.body``); each attempt streams it
        anew. A local image that changed while it was streamed ends the job with
        :class:`~._body.SourceChanged` (the provider got an incomplete request, so nothing
        was created). ``on_send`` is awaited once, after any rate or cooldown wait and just
        before the first attempt is written: from then on the job may exist at the provider.
        ``attempts`` caps the tries (default: the config's ``max_attempts``).
        """
        limits = self.limits
        provider = self.provider
        max_attempts = attempts or self._config.max_attempts
        read_timeout = (
            self._config.sync_read_timeout if provider.mode == "sync" else self._config.read_timeout
        )
        policy = self.policy
        attempt = 0
        while True:
            attempt += 1
            await limits.pace()
            if on_send is not None:
                await on_send()
                on_send = None
            try:
                status, headers, answer = await self._exchange(
                    request, read_timeout, cap=self._answer_cap(creates=True), stream=body
                )
                if 200 <= status < 300:
                    try:
                        parsed = _parse(provider.parse_create, status, headers, answer)
                    except ProtocolError as exc:
                        raise _Lost(f"the answer could not be read: {exc.message}") from exc
                    limits.accepted(holder)
                    return parsed
                raise _parse(provider.parse_error, status, headers, answer)
            except _NotReceived as exc:
                _raise_if_source_changed(exc)
                error: QwenEditError = TransportError(str(exc), provider=provider.name)
                error.__cause__ = exc.__cause__
                if isinstance(exc, _Unusable):
                    error.retryable = False  # the same URL again cannot help
                    raise error from exc.__cause__
            except _Lost as exc:
                _raise_if_source_changed(exc)
                error = SubmitUncertainError(
                    f"{exc}; the job may have been created (and billed) anyway",
                    provider=provider.name,
                )
                error.__cause__ = exc.__cause__
                if not self._config.retry_uncertain:
                    raise error from exc.__cause__
            except QwenEditError as exc:
                error = exc
                if isinstance(exc, RateLimitError):
                    cap = self._config.retry_after_max
                    after = exc.retry_after
                    await limits.refused(
                        holder,
                        exc.limit if exc.limit in ("concurrency", "rate") else None,  # type: ignore[arg-type]
                        None if after is None else min(after, cap),
                        policy.delay(attempt) or 0.0,
                        retrying=attempt < max_attempts
                        and (after is None or after <= cap),
                    )
            if not policy.should_retry(error, idempotent=False):
                raise error
            wait = None if attempt >= max_attempts else policy.delay(attempt, _retry_after(error))
            if wait is None:
                raise error
            logger.debug("retrying create after %s: waiting %.2f s", type(error).__name__, wait)
            if wait > 0 and not isinstance(error, RateLimitError):
                await anyio.sleep(wait)

    async def status(self, task_id: str, *, attempts: int | None = None) -> TaskStatus:
        """A status request for ``task_id``; ``attempts`` caps the tries (default: config).

        The poller asks for one attempt and reschedules transient failures itself, so no
        worker sleeps through a backoff.
        """
        request = self.provider.build_status(task_id)

        def parse(status: int, headers: Mapping[str, str], body: bytes) -> TaskStatus:
            self.status_requests += 1
            if 200 <= status < 300:
                return _parse(self.provider.parse_status, task_id, status, headers, body)
            raise _parse(self.provider.parse_error, status, headers, body, task_id=task_id)

        return await self.get(request, parse, attempts=attempts, total=self._config.status_timeout)

    async def get(
        self,
        request: HttpRequest,
        parse: Callable[[int, Mapping[str, str], bytes], T],
        *,
        attempts: int | None = None,
        total: float | None = None,
    ) -> T:
        """A GET retried on any transport failure and on retryable error answers.

        ``total``: seconds for each attempt, its answer included.
        """
        max_attempts = attempts or self._config.max_attempts
        policy = self.policy
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, body = await self._exchange(
                    request,
                    self._config.read_timeout,
                    cap=self._answer_cap(creates=False),
                    total=total,
                )
                return parse(status, headers, body)
            except (_NotReceived, _Lost) as exc:
                error: QwenEditError = TransportError(str(exc), provider=self.provider.name)
                error.__cause__ = exc.__cause__
                if isinstance(exc, (_Unusable, _TooLarge)):
                    error.retryable = False  # the same answer again cannot help
                    raise error from exc.__cause__
            except QwenEditError as exc:
                if not policy.should_retry(exc, idempotent=True):
                    raise
                error = exc
            wait = None if attempt >= max_attempts else policy.delay(attempt, _retry_after(error))
            if wait is None:
                raise error
            if wait > 0:
                await anyio.sleep(wait)

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a download without following redirects (the caller checks each hop); the
        caller reads and checks the response (no key is sent).

        Raises :class:`ForbiddenAddress` for a link-local or metadata host, literal or
        resolved (a session the caller shared has no guarded resolver: resolved here).
        """
        host = urllib.parse.urlsplit(url).hostname or ""
        if forbidden_address(host):
            raise ForbiddenAddress(f"{host} is a link-local or cloud-metadata address; refused")
        if not self._owns_session:
            await _check_resolved(host)
        async with self.session.get(
            url,
            timeout=self._timeout(self._config.read_timeout),
            allow_redirects=False,
        ) as response:
            yield response


async def _check_resolved(host: str) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return  # the request itself will report the failure
    if infos and all(forbidden_address(str(info[4][0])) for info in infos):
        raise ForbiddenAddress(
            f"{host} resolves to a link-local or cloud-metadata address only; refused"
        )


async def _read_capped(response: aiohttp.ClientResponse, cap: int, *, truncate: bool) -> bytes:
    """The body, at most ``cap`` bytes: more raises :class:`_TooLarge`, or with ``truncate``
    gives the first ``cap`` bytes (and leaves the rest unread)."""
    length = response.content_length
    if length is not None and length <= cap:
        return await response.read()  # the parser stops at Content-Length
    if length is not None and not truncate:
        raise _TooLarge(_too_large(cap, f"{length} bytes"))
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        parts.append(chunk)
        size += len(chunk)
        if size > cap:
            if truncate:
                return b"".join(parts)[:cap]
            raise _TooLarge(_too_large(cap, "more"))
    return b"".join(parts)


def _too_large(cap: int, size: str) -> str:
    return (
        f"the answer ({size}) is larger than max_response_bytes={cap}; it was not read "
        "(raise max_response_bytes in ClientConfig if such answers are expected)"
    )


def _parse(parse: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a dialect's reader; an answer too deeply nested to read is a ProtocolError."""
    try:
        return parse(*args, **kwargs)
    except RecursionError as exc:
        raise ProtocolError("unreadable answer: JSON nested too deeply") from exc


def _raise_if_source_changed(exc: BaseException) -> None:
    """Raise the :class:`SourceChanged` behind a failed send, if that is what ended it: the
    body was aborted on purpose (the provider got an incomplete request), it was not lost."""
    seen: BaseException | None = exc
    for _ in range(10):  # aiohttp wraps it once or twice
        if seen is None:
            return
        if isinstance(seen, SourceChanged):
            raise seen
        seen = seen.__cause__ or seen.__context__


def _retry_after(error: QwenEditError) -> float | None:
    return error.retry_after if isinstance(error, APIError) else None


def _path(url: str) -> str:
    rest = url.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
