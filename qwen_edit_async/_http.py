"""The pipe: the library's only HTTP client code (aiohttp), and nothing but HTTP.

:meth:`HttpPipe.send` writes one request and gives back ``(status, headers, body)``, or
raises one of two classifications of a failure, which is all the layers above need to know
to decide about a retry without ever paying twice (see :mod:`._retry`):

- :class:`NotSent`: the request certainly did not reach the provider's application. DNS,
  TLS, a refused or timed-out connect and an unusable URL fail before a byte is written; a
  connection reset by the peer (RST) means the request was not taken. ``final``: the URL
  cannot be requested at all, so sending it again cannot help.
- :class:`Lost`: the request was written but no complete answer came back (a clean close,
  a read timeout, an answer cut off, the ``total`` deadline). A create may then exist at
  the provider. ``final``: the answer is larger than the cap; it was not read.

:meth:`HttpPipe.stream` opens a URL (never following redirects: the caller checks each hop)
and reads it in chunks, with the same classifications, and refuses link-local and cloud
metadata addresses (:class:`~._addresses.ForbiddenAddress`), literal or resolved.

Status requests and creates whose body is in memory, on the pipe's own session, to a URL no
proxy applies to, go on connections of the pipe's own (:mod:`._lean`): the same answers and
classifications at about half of aiohttp's CPU per request.

The pipe knows no provider, key, retry or result: the conversation above it
(:mod:`._calls`) adds the key, retries and reads the answers. Answers are read up to the
caller's cap, and error answers (status >= 300) only up to it, truncated: their status
classifies them, their body is only context.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType, NoneType
from typing import Any, Protocol

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict, CIMultiDictProxy

from ._addresses import ForbiddenAddress, forbidden_address
from ._body import SourceChanged, StreamedBody
from ._lean import LeanHttp
from ._outcomes import RESET_ERRNOS, Answer, Lost, NotSent, too_large
from ._version import __version__
from ._watchdog import Watchdog, watching
from .providers._base import HttpRequest

__all__ = [
    "Answer",
    "GuardedResolver",
    "HttpPipe",
    "Lost",
    "NotSent",
    "Opened",
    "Pipe",
    "forbidden_in",
]

USER_AGENT = f"qwen-edit-async/{__version__}"

_NO_PROXY: dict[str, Any] = {}
# NO_PROXY matching against a snapshot of the variables (in the standard library, not in
# its type stubs).
_bypass: Callable[[str, Mapping[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]

#: What goes on the pipe's own connections (:mod:`._lean`) when it can.
_LEAN_METHODS = frozenset({"GET", "POST"})

# Failures raised before anything was written: the request cannot have been received.
_UNUSABLE_URL: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (aiohttp.InvalidURL, getattr(aiohttp, "NonHttpUrlClientError", None))
    if cls is not None
)
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(aiohttp, "ConnectionTimeoutError", None),) if cls is not None
)


class Opened(Protocol):
    """A URL opened by :meth:`Pipe.stream`: status and headers now, the body in
    :meth:`chunks`."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def url(self) -> str: ...

    @property
    def content_length(self) -> int | None: ...

    def chunks(self, size: int = ...) -> AsyncIterator[bytes]: ...


class Pipe(Protocol):
    """What carries requests: :class:`HttpPipe`, or an in-memory stand-in in tests."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def send(
        self,
        request: HttpRequest,
        *,
        read_timeout: float,
        cap: int,
        headers: Mapping[str, str] | None = None,
        total: float | None = None,
        stream: StreamedBody | None = None,
    ) -> Answer: ...

    def stream(self, url: str, *, read_timeout: float) -> AbstractAsyncContextManager[Opened]: ...


class _Opened:
    """:class:`Opened` over an aiohttp response."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def url(self) -> str:
        return str(self._response.url)

    @property
    def content_length(self) -> int | None:
        return self._response.content_length

    async def chunks(self, size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The body in chunks of at most ``size`` bytes; a failure midway is :class:`Lost`."""
        try:
            async for chunk in self._response.content.iter_chunked(size):
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Lost(f"the answer was cut off: {_describe(exc)}") from exc


class EnvProxies:
    """The proxies ``HTTP(S)_PROXY`` and ``NO_PROXY`` name, read once when the pipe opens.

    aiohttp's ``trust_env=True`` looks them up, and ``~/.netrc``, in a worker thread on every
    request: two thread hand-offs per request, the largest single cost of a busy client.
    Here they are read once, the decision kept per scheme and host, and the proxy passed
    per request. ``~/.netrc`` is not read for the provider's hosts (the key travels in the
    headers; a netrc entry beside it would only make aiohttp refuse the request); a proxy's
    own credentials come from its URL, or from ``~/.netrc`` as aiohttp reads them.

    >>> EnvProxies({}, {}).for_url("https://example.com/x")
    {}
    """

    _MAX_HOSTS = 1024

    def __init__(self, proxies: Mapping[str, Any], environment: Mapping[str, str]) -> None:
        self._proxies = dict(proxies)
        self._environment = dict(environment)
        self._by_host: dict[tuple[str, str], dict[str, Any]] = {}

    @classmethod
    def from_environment(cls) -> EnvProxies:
        """Read the variables (and a proxy's netrc credentials) now."""
        return cls(aiohttp.helpers.proxies_from_env(), urllib.request.getproxies_environment())

    def __bool__(self) -> bool:
        return bool(self._proxies)

    def for_url(self, url: str) -> dict[str, Any]:
        """The keyword arguments (``proxy``, ``proxy_auth``) for a request to ``url``."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        known = self._by_host.get(key)
        if known is not None:
            return known
        info = self._proxies.get(key[0])
        bypass = _bypass(key[1], self._environment)
        chosen = (
            _NO_PROXY
            if info is None or bypass
            else {
                "proxy": info.proxy,
                "proxy_auth": info.proxy_auth,
            }
        )
        if len(self._by_host) < self._MAX_HOSTS:
            self._by_host[key] = chosen
        return chosen


class HttpPipe:
    """One aiohttp session, sized for the client's concurrency.

    ``session``: a ``ClientSession`` the caller owns (it is used, never closed), or
    ``None`` to create one with ``connections`` connections on :meth:`open`.
    ``connect_timeout`` bounds each connection attempt.

    >>> pipe = HttpPipe(connections=32, connect_timeout=10.0)            # doctest: +SKIP
    >>> await pipe.open()                                               # doctest: +SKIP
    >>> await pipe.send(HttpRequest("GET", url), read_timeout=30, cap=1 << 20)  # +SKIP
    Answer(status=200, headers=..., body=b'...')
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        connections: int = 100,
        connect_timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._connections = connections
        self._connect_timeout = connect_timeout
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._merged: dict[
            tuple[int, int, bool],
            tuple[Mapping[str, str], Mapping[str, str] | None, Mapping[str, str]],
        ] = {}
        # A session the caller shares keeps its own proxy settings.
        self._proxies = EnvProxies({}, {})
        self._proxied = False
        # The read timeouts of send() on the own session: one timer for every request (a
        # session the caller shares keeps aiohttp's sock_read, a timer per read).
        self._watchdog: Watchdog | None = None
        # Status requests and in-memory creates on connections of the pipe's own (_lean).
        self._lean: LeanHttp | None = None
        self._unread_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout, sock_read=None
        )

    async def open(self) -> None:
        if self._session is None:
            self._proxies = await anyio.to_thread.run_sync(EnvProxies.from_environment)
            self._proxied = bool(self._proxies)
            self._watchdog = Watchdog()
            resolver = GuardedResolver()
            self._lean = LeanHttp(
                resolver,
                self._watchdog,
                connect_timeout=self._connect_timeout,
                limit=self._connections,
                user_agent=USER_AGENT,
            )
            connector = WatchedConnector(
                limit=self._connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                # Names that resolve to link-local or metadata addresses are refused.
                resolver=resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT},
                # Keys travel only in the headers added per request; no cookie jar needed.
                cookie_jar=aiohttp.DummyCookieJar(),
                # HTTP(S)_PROXY and NO_PROXY apply, as users of other HTTP clients expect,
                # read once (EnvProxies) instead of by aiohttp in a thread per request.
                trust_env=False,
            )

    async def aclose(self) -> None:
        if self._lean is not None:
            self._lean.close()
            self._lean = None
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def round_trip(self) -> float | None:
        """The quickest connection set-up to a server so far, in seconds (``None`` before
        one, and on a session the caller shares: its connector is not the pipe's)."""
        session = self._session
        if session is None or not self._owns_session:
            return None
        connector = session.connector
        times = [self._lean.quickest if self._lean is not None else None]
        if isinstance(connector, WatchedConnector):
            times.append(connector.quickest)
        known = [t for t in times if t is not None]
        return min(known) if known else None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the HTTP pipe is not open")
        return self._session

    def _timeout(self, read: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(read)
        if timeout is None:
            timeout = self._timeouts[read] = aiohttp.ClientTimeout(
                total=None, connect=None, sock_connect=self._connect_timeout, sock_read=read
            )
        return timeout

    async def send(
        self,
        request: HttpRequest,
        *,
        read_timeout: float,
        cap: int,
        headers: Mapping[str, str] | None = None,
        total: float | None = None,
        stream: StreamedBody | None = None,
    ) -> Answer:
        """Send ``request`` once (``headers`` added to its own) and read its answer.

        ``read_timeout``: the longest silence while reading; ``total``: seconds for it all.
        ``cap``: the largest answer read (more: :class:`Lost` with ``final``; an error
        answer is truncated instead). ``stream``: the body as parts, produced anew for this
        send, in place of ``request.body``. A body source that changed while it was sent
        raises its :class:`~._body.SourceChanged` (the provider got an incomplete request).
        """
        if total is not None:
            try:
                with anyio.fail_after(total):
                    return await self.send(
                        request, read_timeout=read_timeout, cap=cap, headers=headers, stream=stream
                    )
            except TimeoutError as exc:
                # Only the deadline lands here: a read timeout inside is already classified.
                raise Lost(f"no complete answer within {total:g} s") from exc
        lean = self._lean
        if lean is not None and stream is None and request.method in _LEAN_METHODS:
            found = lean.origin(request.url)
            if found is not None and not (self._proxied and self._proxies.for_url(request.url)):
                body = request.body
                merged = self._headers(request.headers, headers, body is not None)
                answer = await lean.send(
                    *found, request.method, merged, body, read_timeout=read_timeout, cap=cap
                )
                if answer is not None:
                    return answer
        # The exchange itself, in this frame: one coroutine per request (the hot path).
        merged = self._headers(request.headers, headers, request.body is not None)
        data: bytes | AsyncIterator[bytes] | None = request.body
        if stream is not None:
            data = stream.chunks()
            merged = {**merged, "Content-Length": str(stream.length)}
            merged.setdefault("Content-Type", "application/json")
        session = self._session
        if session is None:
            raise RuntimeError("the HTTP pipe is not open")
        watchdog = self._watchdog
        if watchdog is None:
            watched = token = None
            timeout = self._timeouts.get(read_timeout) or self._timeout(read_timeout)
        else:
            watched = watchdog.start(read_timeout)
            token = watching.set(watched)
            timeout = self._unread_timeout
        try:
            # Awaited, not entered: `async with` would add aiohttp's __aenter__ frame to the
            # chain every suspension passes through, and four more coroutines per request.
            response = await session.request(
                request.method,
                request.url,
                data=data,
                headers=merged,
                timeout=timeout,
                allow_redirects=False,
                **(self._proxies.for_url(request.url) if self._proxied else _NO_PROXY),
            )
            try:
                if watched is not None:
                    watched.response = response
                try:
                    length = response.content_length
                    if length is not None and length <= cap:
                        # What _read_capped does first, inline: no coroutine for most answers.
                        body = await response.read()  # the parser stops at Content-Length
                    else:
                        body = await _read_capped(response, cap, truncate=response.status >= 300)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    if watched is not None and watched.expired:
                        raise Lost(f"no answer within {read_timeout:g} s") from exc
                    raise Lost(f"the answer was cut off: {_describe(exc)}") from exc
                return Answer(response.status, response.headers, body)
            finally:
                # What leaving `async with` does: the connection back to the pool (closed
                # if the answer was not read to its end); then, only if the body is still
                # being written (an answer that came before the upload ended), the wait
                # for that writer to stop. `_writer` is aiohttp's; without it, always wait.
                response.release()
                if getattr(response, "_writer", True) is not None:
                    await response.wait_for_close()
        except (NotSent, Lost) as exc:
            _raise_if_source_changed(exc)
            raise
        except Exception as exc:
            classified = _classify(exc, read_timeout)
            if classified is exc:
                raise  # not an HTTP failure (a bug, a body source's own error): as it is
            _raise_if_source_changed(exc)  # a body aborted on purpose is not lost
            if watched is not None and watched.expired:
                # Aborted at its read timeout: written, never answered in time.
                raise Lost(f"no answer within {read_timeout:g} s") from exc
            raise classified from exc
        finally:
            if watched is not None and watchdog is not None and token is not None:
                watchdog.end(watched)
                watching.reset(token)
                # A connection opened for this request keeps its context (where `watched`
                # is set) in its transport's callbacks for as long as it is pooled: the
                # watch lets go of the response and its body, or every pooled connection
                # would keep the first answer it carried.
                watched.connection = watched.response = None

    def _headers(
        self, own: Mapping[str, str], extra: Mapping[str, str] | None, body: bool
    ) -> Mapping[str, str]:
        """The request's headers merged with ``extra`` (and a JSON ``Content-Type`` for a
        body without one), made once per pair of shared read-only header sets.

        Dialects and the conversation pass the same read-only mappings on every request
        (the dialect's JSON headers, the client's key), so the merge is kept, keyed by their
        identity (the cache holds them: an id is not reused while they are kept).
        """
        key = (id(own), id(extra), body)
        known = self._merged.get(key)
        if known is not None and known[0] is own and known[1] is extra:
            return known[2]
        merged = {**own, **extra} if extra else dict(own)
        if not self._owns_session:
            merged.setdefault("User-Agent", USER_AGENT)  # the own session sends it already
        if body:
            merged.setdefault("Content-Type", "application/json")
        if not (
            isinstance(own, MappingProxyType) and isinstance(extra, (MappingProxyType, NoneType))
        ):
            return merged  # a mapping that may change: merged anew each time
        if len(self._merged) >= 64:
            self._merged.clear()
        # The form aiohttp keeps headers in: it takes it without converting it per request.
        shared = CIMultiDictProxy(CIMultiDict(merged))
        self._merged[key] = (own, extra, shared)
        return shared

    @asynccontextmanager
    async def stream(self, url: str, *, read_timeout: float) -> AsyncIterator[Opened]:
        """Open ``url`` with a GET (no key, no redirects followed) for the block.

        Raises :class:`~._addresses.ForbiddenAddress` for a link-local or metadata host,
        literal or resolved (a session the caller shared has no guarded resolver: the name
        is resolved here), else :class:`NotSent` or :class:`Lost`.
        """
        host = urllib.parse.urlsplit(url).hostname or ""
        if forbidden_address(host):
            raise ForbiddenAddress(f"{host} is a link-local or cloud-metadata address; refused")
        if not self._owns_session:
            await _check_resolved(host)
        try:
            async with self.session.get(
                url,
                timeout=self._timeout(read_timeout),
                allow_redirects=False,
                **(self._proxies.for_url(url) if self._proxied else _NO_PROXY),
            ) as response:
                yield _Opened(response)
        except (NotSent, Lost, ForbiddenAddress):
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            forbidden = forbidden_in(exc)
            if forbidden is not None:
                raise forbidden from exc
            classified = _classify(exc, read_timeout)
            if classified is exc:
                raise
            raise classified from exc


def _classify(exc: BaseException, read_timeout: float) -> NotSent | Lost | BaseException:
    """What a failed exchange means for the request: not sent, or lost."""
    if isinstance(exc, _UNUSABLE_URL):
        return NotSent(f"the URL cannot be requested: {_describe(exc)}", final=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        # DNS, TLS and refused connections all fail here, before anything is written.
        return NotSent(f"could not connect: {_describe(exc)}")
    if isinstance(exc, _CONNECT_TIMEOUT):
        return NotSent(f"could not connect: {_describe(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Lost("the server closed the connection without answering")
    if isinstance(exc, aiohttp.ClientOSError):
        if exc.errno in RESET_ERRNOS:
            return NotSent(f"the connection was reset: {_describe(exc)}")
        return Lost(f"the connection failed: {_describe(exc)}")
    if isinstance(exc, asyncio.TimeoutError):
        return Lost(f"no answer within {read_timeout:g} s")
    if isinstance(exc, aiohttp.ClientError):
        return Lost(f"the request failed: {_describe(exc)}")
    if isinstance(exc, OSError) and not isinstance(exc, ForbiddenAddress):
        return Lost(f"the connection failed: {_describe(exc)}")
    return exc  # not an HTTP failure (a bug, a body source's own error): as it is


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _read_capped(response: aiohttp.ClientResponse, cap: int, *, truncate: bool) -> bytes:
    """The body, at most ``cap`` bytes: more raises :class:`Lost` (``final``), or with
    ``truncate`` gives the first ``cap`` bytes (and leaves the rest unread)."""
    length = response.content_length
    if length is not None and length <= cap:
        return await response.read()  # the parser stops at Content-Length
    if length is not None and not truncate:
        raise Lost(too_large(cap, f"{length} bytes"), final=True)
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        parts.append(chunk)
        size += len(chunk)
        if size > cap:
            if truncate:
                return b"".join(parts)[:cap]
            raise Lost(too_large(cap, "more"), final=True)
    return b"".join(parts)


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


async def _check_resolved(host: str) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return  # the request itself will report the failure
    if infos and all(forbidden_address(str(info[4][0])) for info in infos):
        raise ForbiddenAddress(
            f"{host} resolves to a link-local or cloud-metadata address only; refused"
        )


def forbidden_in(exc: BaseException) -> ForbiddenAddress | None:
    """The :class:`ForbiddenAddress` behind an aiohttp connection error, if that was it."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ForbiddenAddress):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, ForbiddenAddress):
            return os_error
        seen = seen.__cause__
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver, minus forbidden addresses; none left raises
    :class:`ForbiddenAddress` (aiohttp reports it as a connection error)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        hosts = await self._inner.resolve(host, port, family)
        allowed = [entry for entry in hosts if not forbidden_address(str(entry["host"]))]
        if not allowed:
            raise ForbiddenAddress(
                f"{host} resolves to a link-local or cloud-metadata address only; refused"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class WatchedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, telling the request the pipe watches (:data:`._watchdog.watching`)
    which connection it got: its read timeout aborts that connection.

    It also times the connections it opens: :attr:`quickest` is the shortest set-up of a
    direct connection so far (a round trip or three, with TLS), ``None`` before one.
    """

    quickest: float | None = None

    # aiohttp's private hook, called for a new connection only (not for one from the pool);
    # its arguments passed through as they come, whatever aiohttp's version names them.
    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        watched = watching.get()
        if watched is not None:
            watched.connecting()  # out of the pool's queue: name resolution counts
        start = time.monotonic()
        protocol = await super()._create_connection(*args, **kwargs)
        request = args[0] if args else kwargs.get("req")
        if getattr(request, "proxy", None) is None:  # through a proxy: the proxy's distance
            took = time.monotonic() - start
            if self.quickest is None or took < self.quickest:
                self.quickest = took
        return protocol

    # aiohttp's own signature (its parameter is called timeout).
    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        connection = await super().connect(req, traces, timeout)
        watched = watching.get()
        if watched is not None:
            watched.connection = connection
            watched.connecting()  # a connection of the pool (a new one started the clock)
            if watched.expired:
                # aiohttp sends an idempotent request again on a new connection when its
                # connection was lost: not one whose read timeout ended it.
                watched._abort()
        return connection
