"""The conversation with a provider: ``dialect.build -> retry(pipe.send) -> dialect.parse``.

One :class:`Calls` per client puts the three pieces together for a create and a status
request: the dialect (:mod:`.providers`) builds the request and reads the answer, the pipe
(:mod:`._http`) carries it, the retry policy (:mod:`._retry`) decides what is sent again.
It also fetches result URLs for downloads (:meth:`Calls.fetch`), through the same pipe and
policy. What it adds between them:

- The API key, in the dialect's own header, on every request; every answer body is masked
  (the key, any ``Bearer`` token) before the dialect reads it.
- A create goes through the client's limits (``_limits``): it waits for the pace and any
  cooldown, reports an accepted create, and hands a 429 to them (they learn from it, and a
  ``Retry-After`` becomes one client-wide cooldown every submission waits out).
- A create whose answer was lost (:class:`~._http.Lost`), or unreadable, may have created
  (and billed) a job: :class:`SubmitUncertainError`, sent again only with
  ``retry_uncertain``. One that was certainly not received (:class:`~._http.NotSent`) is a
  :class:`TransportError`, retried unless the URL itself is unusable.
- Status requests (GETs) are retried on any transport failure and on unreadable answers;
  each ends after ``status_timeout`` whatever the pace of its answer.
- Answers are read up to ``max_response_bytes`` (a synchronous create's, with its inline
  images, up to that plus 8 times ``download_max_bytes``).
- A result URL is fetched without the key, following redirects one checked hop at a time
  (http(s) only, never a link-local or metadata address), within ``download_timeout`` and
  ``download_max_bytes`` per attempt; the policy decides the retries, ``Retry-After``
  included.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

import anyio

from ._addresses import ForbiddenAddress, forbidden_address
from ._body import StreamedBody
from ._config import ClientConfig, Secret
from ._errors import (
    APIError,
    DownloadError,
    QwenEditError,
    RateLimitError,
    SubmitUncertainError,
    TransportError,
)
from ._http import Answer, Lost, NotSent, Pipe
from ._limits import Limits, LocalLimits
from ._models import EditResult
from ._redact import Redactor
from ._retry import RetryPolicy
from ._urls import is_http_url
from .providers._base import (
    HttpRequest,
    ProtocolError,
    Provider,
    TaskAccepted,
    TaskStatus,
    parse_retry_after,
)

__all__ = ["Calls"]

logger = logging.getLogger("qwen_edit_async")

T = TypeVar("T")


class Calls:
    """Creates and status requests of one client, over ``pipe``, with its key and limits.

    >>> calls = Calls(provider, Secret("sk-..."), ClientConfig(), HttpPipe())  # doctest: +SKIP
    >>> accepted = await calls.create(provider.build_create(request, images))  # doctest: +SKIP
    >>> status = await calls.status(accepted.task_id)                          # doctest: +SKIP
    """

    def __init__(
        self,
        provider: Provider,
        api_key: Secret,
        config: ClientConfig,
        pipe: Pipe,
        *,
        limits: Limits | None = None,
        policy: RetryPolicy | None = None,
        create_connections: int | None = None,
    ) -> None:
        self.provider = provider
        #: Creates on the wire at once, at most (``None``: no bound but the slots). A task's
        #: create holds a connection only for the acceptance: a bound keeps thousands of
        #: them from opening a connection each, and from taking the connections the status
        #: requests and downloads are sized for.
        self._create_gate = (
            None if create_connections is None else asyncio.Semaphore(create_connections)
        )
        #: What carries the requests (a test may put an in-memory one in its place).
        self.pipe = pipe
        self._key = api_key
        self._redact = Redactor(api_key.get())
        self._config = config
        #: When to send a failed request again; the poller and downloads follow it too.
        self.policy = policy or RetryPolicy.from_config(config)
        #: Slots, pacing and the 429 cooldown of creates (fixed ones when not given).
        self.limits = limits or LocalLimits(max_in_flight=100, submit_rate=None, adaptive=False)
        self.status_requests = 0
        # Fixed for the client's life: made once, not per request.
        # Read-only: the pipe may keep its merge with a dialect's headers.
        self._auth: Mapping[str, str] = MappingProxyType(provider.authorization(api_key.get()))
        self._create_timeout = (
            config.sync_read_timeout if provider.mode == "sync" else config.read_timeout
        )
        self._create_cap_bytes = self._create_cap()

    def mask(self, body: bytes) -> bytes:
        """``body`` with this client's key and any bearer token masked (provider text that
        arrives another way, such as a completion callback)."""
        return self._redact.bytes(body)

    async def _send(
        self,
        request: HttpRequest,
        *,
        read_timeout: float,
        cap: int,
        total: float | None = None,
        stream: StreamedBody | None = None,
    ) -> Answer:
        """One exchange with the key added; its answer masked, its failure's text too."""
        start = time.perf_counter() if logger.isEnabledFor(logging.DEBUG) else 0.0
        try:
            answer = await self.pipe.send(
                request,
                headers=self._auth,
                read_timeout=read_timeout,
                cap=cap,
                total=total,
                stream=stream,
            )
        except NotSent as exc:
            raise NotSent(self._redact.text(str(exc)), final=exc.final) from exc.__cause__
        except Lost as exc:
            raise Lost(self._redact.text(str(exc)), final=exc.final) from exc.__cause__
        return self._received(request, answer, start)

    def _received(self, request: HttpRequest, answer: Answer, start: float) -> Answer:
        """``answer`` with its body masked (logged when debugging: ``start`` is then when the
        request was sent)."""
        if start:
            logger.debug(
                "%s %s -> %d in %.3f s request_id=%s",
                request.method,
                _path(request.url),
                answer.status,
                time.perf_counter() - start,
                self.provider.request_id(answer.headers),
            )
        # Provider text enters here: the key it may quote never goes further.
        body = self._redact.bytes(answer.body)
        return answer if body is answer.body else answer._replace(body=body)

    def _create_cap(self) -> int:
        cfg = self._config
        if self.provider.mode == "sync":
            # A synchronous answer may carry up to 6 images inline, base64 (4/3 of the bytes).
            return cfg.max_response_bytes + 8 * cfg.download_max_bytes
        return cfg.max_response_bytes

    async def create(
        self,
        request: HttpRequest,
        holder: object = None,
        *,
        body: StreamedBody | None = None,
        on_send: Callable[[], Awaitable[None] | None] | None = None,
        attempts: int | None = None,
    ) -> EditResult | TaskAccepted:
        """Send a job-creating request; retry only what the provider certainly refused.

        ``holder`` is the job whose slot the create uses: the limits may send it back to
        the queue for a slot after a concurrency refusal. ``body``: the request body as
        parts streamed while sent (in place of ``request.body``); each attempt streams it
        anew. A local image that changed while it was streamed ends the job with
        :class:`~._body.SourceChanged` (the provider got an incomplete request, so nothing
        was created). ``on_send`` is called once, after any rate or cooldown wait and just
        before the first attempt is written (what it returns is awaited, unless ``None``):
        from then on the job may exist at the provider.
        ``attempts`` caps the tries (default: the config's ``max_attempts``).
        """
        max_attempts = attempts or self._config.max_attempts
        limits, provider, gate = self.limits, self.provider, self._create_gate
        attempt = 0
        while True:
            attempt += 1
            if not limits.ready():  # no coroutine when nothing needs a wait
                await limits.pace()
            if gate is not None:
                # Before on_send: a create waiting here has not left, nor counts as sent.
                await gate.acquire()
            try:
                if on_send is not None:
                    sending = on_send()
                    if sending is not None:
                        await sending
                    on_send = None
                limits.sending(holder)
            except BaseException:
                if gate is not None:
                    gate.release()
                raise
            # The exchange in this frame, not in a coroutine of its own: each suspension of
            # the request passes through every frame awaiting it.
            start = time.perf_counter() if logger.isEnabledFor(logging.DEBUG) else 0.0
            try:
                try:
                    try:
                        sent = await self.pipe.send(
                            request,
                            headers=self._auth,
                            read_timeout=self._create_timeout,
                            cap=self._create_cap_bytes,
                            stream=body,
                        )
                    finally:
                        if gate is not None:
                            gate.release()
                except NotSent as exc:
                    # A final failure: the same URL again cannot help.
                    raise TransportError(
                        self._redact.text(str(exc)), provider=provider.name, retryable=not exc.final
                    ) from exc.__cause__
                except Lost as exc:
                    raise _uncertain(self._redact.text(str(exc)), provider.name) from exc.__cause__
                status, headers, answer = self._received(request, sent, start)
                if not 200 <= status < 300:
                    raise _read(provider.parse_error, status, headers, answer)
                try:
                    parsed = _read(provider.parse_create, status, headers, answer)
                except ProtocolError as exc:
                    raise _uncertain(
                        f"the answer could not be read: {exc.message}", provider.name
                    ) from exc
                limits.accepted(holder)
                return parsed
            except QwenEditError as exc:
                error = exc
            if isinstance(error, RateLimitError):
                await self._refused(error, holder, attempt, max_attempts)
            if not self.policy.should_retry(error, idempotent=False):
                raise error
            wait = self._wait(error, attempt, max_attempts)
            if wait is None:
                raise error
            logger.debug("retrying create after %s: waiting %.2f s", type(error).__name__, wait)
            if wait > 0 and not isinstance(error, RateLimitError):
                await anyio.sleep(wait)  # a 429's wait is the limits' cooldown

    async def _refused(
        self, error: RateLimitError, holder: object, attempt: int, max_attempts: int
    ) -> None:
        """Tell the limits about a 429 on a create (they learn and pause from it)."""
        cap = self._config.retry_after_max
        after = error.retry_after
        await self.limits.refused(
            holder,
            error.limit if error.limit in ("concurrency", "rate") else None,  # type: ignore[arg-type]
            None if after is None else min(after, cap),
            self.policy.delay(attempt) or 0.0,
            retrying=attempt < max_attempts and (after is None or after <= cap),
        )

    def _wait(self, error: QwenEditError, attempt: int, max_attempts: int) -> float | None:
        if attempt >= max_attempts:
            return None
        retry_after = error.retry_after if isinstance(error, APIError) else None
        return self.policy.delay(attempt, retry_after)

    async def status(
        self, task_id: str, *, attempts: int | None = None, timed: bool = True
    ) -> TaskStatus:
        """A status request for ``task_id``; ``attempts`` caps the tries (default: config).

        The poller asks for one attempt and reschedules transient failures itself, so no
        worker sleeps through a backoff; it also ends each request at ``status_timeout``
        itself (``timed=False``: no deadline here), without a timer per request.
        """
        request = self.provider.build_status(task_id)
        total = self._config.status_timeout if timed else None
        # A partial rather than a closure: one object per request instead of a function,
        # its cells and their tuple (each request's objects outlive a young collection).
        parse = functools.partial(self._parse_status, task_id)
        return await self.get(request, parse, attempts=attempts, total=total)

    def _parse_status(
        self, task_id: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> TaskStatus:
        self.status_requests += 1
        provider = self.provider
        if 200 <= status < 300:
            return _read(provider.parse_status, task_id, status, headers, body)
        raise _read(provider.parse_error, status, headers, body, task_id=task_id)

    async def fetch(self, url: str, index: int, *, attempts: int | None = None) -> bytes:
        """The bytes at result URL ``url`` (no key sent), retried by the policy.

        Redirects are followed here, each hop checked (http(s) only, no link-local or
        metadata address); each attempt ends within ``download_timeout`` and reads at most
        ``download_max_bytes``. An expired or missing URL, and anything that is not an
        image, is a :class:`DownloadError` at once. ``index`` names the image in errors.
        """
        return await _fetch(self, url, self._config, index, attempts or self._config.max_attempts)

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
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, body = await self._send(
                    request,
                    read_timeout=self._config.read_timeout,
                    cap=self._config.max_response_bytes,
                    total=total,
                )
                return parse(status, headers, body)
            except (NotSent, Lost) as exc:
                # A final failure: the same answer again cannot help.
                error: QwenEditError = TransportError(
                    str(exc), provider=self.provider.name, retryable=not exc.final
                )
                if exc.final:
                    raise error from exc.__cause__
                error.__cause__ = exc.__cause__
            except QwenEditError as exc:
                if not self.policy.should_retry(exc, idempotent=True):
                    raise
                error = exc
            wait = self._wait(error, attempt, max_attempts)
            if wait is None:
                raise error
            if wait > 0:
                await anyio.sleep(wait)


# -- downloads ------------------------------------------------------------------------------


def _expired(url: str) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    for key in ("Expires", "expires", "X-Amz-Expires"):
        if key in query:
            try:
                return float(query[key][0]) < time.time()
            except ValueError:
                return False
    return False


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOPS = 5


def _check_url(url: str, index: int, provider: str) -> None:
    """Refuse at once what no retry can fetch: other schemes, forbidden addresses."""
    if not is_http_url(url):
        shown = url if len(url) <= 80 else url[:77] + "..."
        raise DownloadError(
            f"images[{index}]: {shown!r} is not an http(s) URL; it cannot be downloaded",
            provider=provider,
        )
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as exc:
        raise DownloadError(f"images[{index}]: the URL cannot be read: {exc}") from exc
    if not host:
        raise DownloadError(f"images[{index}]: the URL has no host", provider=provider)
    if forbidden_address(host):
        raise DownloadError(
            f"images[{index}]: {host} is a link-local or cloud-metadata address; refused",
            provider=provider,
        )


async def _fetch(calls: Calls, url: str, config: ClientConfig, index: int, attempts: int) -> bytes:
    """GET ``url`` into memory, retrying transient failures; checks type and size.

    Each attempt, redirects included, ends within ``download_timeout``; a URL that cannot
    be fetched (scheme, forbidden address, also after a redirect) fails at once.
    """
    provider = calls.provider.name
    _check_url(url, index, provider)
    attempt = 0
    while True:
        attempt += 1
        try:
            with anyio.move_on_after(config.download_timeout):
                return await _fetch_once(calls, url, config, index)
            # A deadline is not retried: a server that drips would drip again.
            raise DownloadError(
                f"images[{index}]: no complete download within download_timeout="
                f"{config.download_timeout:g} s",
                provider=provider,
            )
        except DownloadError:
            raise
        except ForbiddenAddress as exc:
            raise DownloadError(f"images[{index}]: {exc}", provider=provider) from exc
        except (_Transient, NotSent, Lost) as exc:
            if attempt >= attempts:
                raise DownloadError(
                    f"images[{index}]: download failed after {attempt} attempts: {exc}",
                    provider=provider,
                ) from exc
            retry_after = exc.retry_after if isinstance(exc, _Transient) else None
            wait = calls.policy.delay(attempt, retry_after)
            if wait is None:
                raise DownloadError(
                    f"images[{index}]: {exc}; the server asked to wait {retry_after:g} s, "
                    f"more than retry_after_max={calls.policy.retry_after_max:g}",
                    provider=provider,
                ) from exc
            await anyio.sleep(wait)


async def _fetch_once(calls: Calls, url: str, config: ClientConfig, index: int) -> bytes:
    provider = calls.provider.name
    cap = config.download_max_bytes
    for _ in range(_MAX_HOPS + 1):
        async with calls.pipe.stream(url, read_timeout=config.read_timeout) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise _Transient(f"HTTP {response.status} without a Location")
                url = urllib.parse.urljoin(response.url, location)
                _check_url(url, index, provider)  # where a redirect leads is checked too
                continue
            if response.status in (401, 403, 404, 410):
                reason = (
                    "the URL has expired (result URLs are signed and valid about 24 h)"
                    if _expired(url) or response.status == 403
                    else "the URL was not found"
                )
                raise DownloadError(
                    f"images[{index}]: HTTP {response.status}: {reason}",
                    provider=provider,
                    status=response.status,
                )
            if response.status >= 400:
                raise _Transient(
                    f"HTTP {response.status}", retry_after=parse_retry_after(response.headers)
                )
            ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
                raise DownloadError(
                    f"images[{index}]: the server sent {ctype!r}, not an image",
                    provider=provider,
                    status=response.status,
                )
            length = response.content_length
            if length is not None and length > cap:
                raise DownloadError(
                    f"images[{index}]: {length} bytes exceeds download_max_bytes={cap}",
                    provider=provider,
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.chunks(256 * 1024):
                size += len(chunk)
                if size > cap:
                    raise DownloadError(
                        f"images[{index}]: more than download_max_bytes={cap} bytes",
                        provider=provider,
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    raise DownloadError(f"images[{index}]: more than {_MAX_HOPS} redirects", provider=provider)


class _Transient(Exception):
    """A download failure worth another attempt (``retry_after``: the wait the server
    asked for, if it did)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _uncertain(what: str, provider: str) -> SubmitUncertainError:
    return SubmitUncertainError(
        f"{what}; the job may have been created (and billed) anyway", provider=provider
    )


def _read(parse: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run a dialect's reader; an answer too deeply nested to read is a ProtocolError."""
    try:
        return parse(*args, **kwargs)
    except RecursionError as exc:
        raise ProtocolError("unreadable answer: JSON nested too deeply") from exc


def _path(url: str) -> str:
    rest = url.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
