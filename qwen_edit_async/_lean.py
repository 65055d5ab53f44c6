"""Status requests and creates over kept-alive HTTP/1.1 connections of the pipe's own,
without aiohttp's request machinery.

Status requests and creates are the client's requests: one create and one or two status
requests per task, each a few hundred bytes each way. aiohttp spends most of its client CPU
on each (a ``ClientRequest``, a ``ClientResponse``, their headers as multidicts, URL objects,
timers, traces): on loopback about 230 µs of CPU per GET against about 100 µs for the same
exchange written as an :class:`asyncio.Protocol`. With thousands of tasks in flight, that
CPU is the event loop's time, and the answers that wait for it are the client's lag.

:class:`LeanHttp` writes the request line and the header block (made once per set of
headers), then the body if there is one (with its ``Content-Length``), and reads the answer
with a small HTTP/1.1 reader: a ``Content-Length`` body, a chunked one, or one that ends
with the connection. It asks for no content coding; a ``gzip`` or ``deflate`` body that
comes anyway is decoded (up to the cap). Connections are kept per origin and reused, each
after at most :data:`KEEP_IDLE` seconds in the pool. Read timeouts are the pipe's
:class:`~._watchdog.Watchdog`'s.

Never paying twice holds as on aiohttp's path: a request that finds its connection closed
before it was written goes on a new one; a GET (it changes nothing) whose kept connection
the server had closed is sent once more; a create that was written and got no answer is
:class:`~._outcomes.Lost` (it may exist), never sent again here; a reset is
:class:`~._outcomes.NotSent`, as aiohttp's path classifies it.

What it does not do is left to aiohttp: :meth:`~._http.HttpPipe.send` uses it only on the
pipe's own session, for a GET or a POST whose body is in memory (a streamed body stays with
aiohttp), to a URL with no proxy and no user info, and falls back to aiohttp when every
connection allowed is busy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from multidict import CIMultiDict, CIMultiDictProxy

from ._outcomes import RESET_ERRNOS, Answer, Lost, NotSent, too_large
from ._urls import is_http_url
from ._watchdog import Watchdog

if TYPE_CHECKING:
    from aiohttp.abc import AbstractResolver

__all__ = ["LeanHttp"]

#: The longest answer head read (status line and headers); a longer one is refused.
MAX_HEAD = 64 * 1024
_DNS_TTL = 300.0
#: Seconds a connection may wait in the pool and still be used (aiohttp's keep-alive
#: default): servers and middleboxes drop idle connections, some without a word, and a
#: create written on such a connection would be lost instead of sent on a new one.
KEEP_IDLE = 15.0
#: Origins (scheme, host, port) remembered; the oldest beyond it is forgotten.
ORIGINS_KEPT = 64
#: A body up to this size goes out with its head in one write.
_JOIN_BELOW = 64 * 1024


class _Origin:
    """Where an origin's requests go: its address, TLS, the Host header, idle connections."""

    __slots__ = ("host", "host_header", "idle", "port", "tls")

    def __init__(self, host: str, port: int, tls: bool, host_header: str) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.host_header = host_header
        self.idle: list[_Connection] = []


class _Connection(asyncio.Protocol):
    """One kept-alive connection, reading one answer at a time.

    The watchdog reads its progress as it reads an aiohttp connection's and response's:
    ``transport`` (bytes still to write) and ``content.total_bytes`` (bytes read).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.total_bytes = 0
        self.closed = False
        self.reused = False
        #: When it was last put back in the pool (the monotonic clock).
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None
        self._cap = 0
        self._got_any = False
        # The answer being read: its head, then how its body is framed.
        self._status = 0
        self._headers: CIMultiDictProxy[str] | None = None
        self._length: int | None = None  # Content-Length; -1: chunked; None: to the close
        self._chunks: list[bytes] = []
        self._chunk_left = -1
        self._chunked = 0
        self._keep = True

    @property
    def content(self) -> _Connection:
        return self

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses; they have its methods.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.total_bytes += len(data)
        if self._waiter is None:
            # Bytes nobody asked for: the connection's framing is lost.
            self._close()
            return
        self._got_any = True
        self._buffer += data
        self._read()

    def eof_received(self) -> bool:
        if self._waiter is not None and self._headers is not None and self._length is None:
            # The body ends with the connection.
            self._keep = False
            self._finish(self._body_so_far())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers is not None and self._length is None:
            self._finish(self._body_so_far())  # the body ends with the connection
            return
        self._waiter = None
        waiter.set_exception(_Cut(self._got_any, exc))

    # -- one exchange

    def send(self, request: bytes, body: bytes | None, cap: int) -> asyncio.Future[Answer]:
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            waiter.set_exception(_Cut(False, None, written=False))
            return waiter
        self._waiter = waiter
        self._cap = cap
        self._got_any = False
        self._status, self._headers, self._length = 0, None, None
        self._chunks.clear()
        self._chunk_left = -1
        self._chunked = 0
        self._keep = True
        self.transport.write(request)
        if body:
            self.transport.write(body)
        return waiter

    def abort(self) -> None:
        """End the connection (an exchange that did not end cleanly cannot be reused)."""
        self._close()

    @property
    def reusable(self) -> bool:
        return self._keep and not self.closed and self._waiter is None and not self._buffer

    def _close(self) -> None:
        self._keep = False
        transport = self.transport
        if transport is not None:
            transport.abort()

    def _done(self, body: bytes) -> None:
        waiter, headers = self._waiter, self._headers
        # A kept connection holds nothing of the answer it carried.
        self._waiter = self._headers = None
        self._chunks.clear()
        if waiter is not None and not waiter.done():
            assert headers is not None
            waiter.set_result(Answer(self._status, headers, body))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter = None
        self._close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _read(self) -> None:
        buffer = self._buffer
        while self._headers is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._fail(Lost(f"the answer's head is longer than {MAX_HEAD} bytes"))
                return
            try:
                self._head(bytes(buffer[:end]))
            except ValueError as exc:
                self._fail(Lost(f"the answer cannot be read: {exc}"))
                return
            del buffer[: end + 4]
            length = self._length
            if length is not None and length > self._cap and self._status < 300:
                # Refused before its body is read: asking again gives the same answer.
                self._fail(Lost(too_large(self._cap, f"{length} bytes"), final=True))
                return
        length = self._length
        if length == -1:
            self._read_chunks()
        elif length is None or length > self._cap:
            # Until the connection closes (eof_received, connection_lost), or an error
            # answer longer than the cap: only its first ``cap`` bytes are kept.
            if len(buffer) > self._cap:
                self._over_cap(bytes(buffer))
        elif len(buffer) >= length:
            body = bytes(buffer[:length])
            del buffer[:length]
            self._finish(body)

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1 status line: {lines[0][:80]!r}")
        code = rest[:3]
        if not code.isdigit() or len(code) != 3:
            raise ValueError(f"no status code in {lines[0][:80]!r}")
        status = int(code)
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise ValueError(f"malformed header line {line[:80]!r}")
            headers.add(name, value.strip(" \t"))
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        connection = headers.get("Connection", "").lower()
        if version == "HTTP/1.0":
            self._keep = "keep-alive" in connection
        else:
            self._keep = "close" not in connection
        encoding = headers.get("Transfer-Encoding")
        length: int | None
        if status in (204, 304):
            length = 0
        elif encoding is not None:
            if encoding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise ValueError(f"unsupported Transfer-Encoding {encoding!r}")
            length = -1
        elif "Content-Length" in headers:
            values = {value.strip() for value in headers.getall("Content-Length")}
            text = values.pop()
            if values or not text.isdigit():
                raise ValueError(f"bad Content-Length {headers.getall('Content-Length')!r}")
            length = int(text)
        else:
            length = None
            self._keep = False
        self._status, self._headers, self._length = status, CIMultiDictProxy(headers), length

    def _read_chunks(self) -> None:
        buffer = self._buffer
        while True:
            if self._chunk_left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        self._fail(Lost("the answer's chunk size line is too long"))
                    return
                size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    self._fail(Lost(f"the answer cannot be read: bad chunk size {size_text!r}"))
                    return
                if size == 0:
                    # The last chunk; then trailers (ignored) and an empty line.
                    if buffer[end + 2 : end + 4] == b"\r\n":
                        del buffer[: end + 4]
                    else:
                        trailers = buffer.find(b"\r\n\r\n", end)
                        if trailers < 0:
                            return
                        del buffer[: trailers + 4]
                    self._finish(b"".join(self._chunks))
                    return
                del buffer[: end + 2]
                self._chunk_left = size
            if len(buffer) < self._chunk_left + 2:
                return
            self._chunks.append(bytes(buffer[: self._chunk_left]))
            self._chunked += self._chunk_left
            del buffer[: self._chunk_left + 2]
            self._chunk_left = -1
            if self._chunked > self._cap:
                self._over_cap(b"".join(self._chunks))
                return

    def _body_so_far(self) -> bytes:
        body = bytes(self._buffer)
        self._buffer.clear()
        return body

    def _finish(self, body: bytes) -> None:
        """The whole body came: decoded, it is the answer (unless larger than the cap)."""
        decoded = self._decoded(body)
        if len(decoded) > self._cap:
            self._over_cap(decoded, decoded=True)
        else:
            self._done(decoded)

    def _over_cap(self, body: bytes, *, decoded: bool = False) -> None:
        """More than ``cap`` bytes: an error answer keeps its first ``cap`` (its status says
        what it is; its body is only context), any other fails as too large."""
        if self._status < 300:
            self._fail(Lost(too_large(self._cap, "more"), final=True))
            return
        self._keep = False  # the rest is not read
        self._buffer.clear()
        self._done((body if decoded else self._decoded(body))[: self._cap])
        self._close()

    def _decoded(self, body: bytes) -> bytes:
        """``body`` without its gzip or deflate coding (at most ``cap`` + 1 bytes of it:
        a small body that inflates beyond the cap is too large all the same)."""
        assert self._headers is not None
        coding = self._headers.get("Content-Encoding", "").strip().lower()
        if not coding or coding == "identity" or not body:
            return body
        if coding not in ("gzip", "x-gzip", "deflate"):
            return body  # as it came: the dialect reports what it cannot read
        for wbits in (47, -15):  # a gzip or zlib header; raw deflate as a last resort
            try:
                return zlib.decompressobj(wbits).decompress(body, self._cap + 1)
            except zlib.error:
                continue
        return body


class _Cut(Exception):
    """The connection ended before a complete answer: ``got_any`` says whether a byte of it
    came (if not, a reused connection may simply have been closed by the server)."""

    def __init__(self, got_any: bool, cause: BaseException | None, *, written: bool = True) -> None:
        super().__init__(str(cause) if cause else "connection closed")
        self.got_any = got_any
        self.cause = cause
        self.written = written


class LeanHttp:
    """Status requests and in-memory creates over the pipe's own kept-alive connections
    (see the module).

    ``resolver``: the pipe's (link-local and metadata addresses refused); ``watchdog``: the
    pipe's read timeouts; ``limit``: connections open at once, beyond which :meth:`send`
    returns ``None`` (the caller sends the request its usual way).
    """

    def __init__(
        self,
        resolver: AbstractResolver,
        watchdog: Watchdog,
        *,
        connect_timeout: float,
        limit: int,
        user_agent: str,
    ) -> None:
        self._resolver = resolver
        self._watchdog = watchdog
        self._connect_timeout = connect_timeout
        self._limit = limit
        self._user_agent = user_agent
        self._origins: dict[str, _Origin | None] = {}
        self._resolved: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._heads: dict[tuple[int, int], tuple[_Origin, Mapping[str, str], bytes]] = {}
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._tls: ssl.SSLContext | None = None
        self._closed = False
        #: Connections opened so far (tests count them).
        self.opened = 0
        #: The quickest connection set-up so far, in seconds (``None`` before one).
        self.quickest: float | None = None

    def origin(self, url: str) -> tuple[_Origin, str] | None:
        """The origin of ``url`` and its path (``None``: not one for this path)."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            return None
        netloc, slash, path = rest.partition("/")
        key = f"{scheme}://{netloc}"
        try:
            origin = self._origins[key]
        except KeyError:
            origin = self._origins[key] = _make_origin(scheme, netloc)
            if len(self._origins) > ORIGINS_KEPT:
                # The oldest origin goes, with the connections it kept.
                evicted = self._origins.pop(next(iter(self._origins)))
                for connection in evicted.idle if evicted is not None else ():
                    self._open.discard(connection)
                    connection.abort()
        if origin is None:
            return None
        target = slash + path
        if not target or not target.isascii() or any(c in target for c in " \r\n#"):
            return None  # (aiohttp quotes what needs it)
        return origin, target

    async def send(
        self,
        origin: _Origin,
        target: str,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        read_timeout: float,
        cap: int,
    ) -> Answer | None:
        """Send ``method`` ``target`` of ``origin`` with ``headers`` and ``body``: (status,
        headers, body), or ``None`` when every connection allowed is busy (send it another
        way).

        Raises :class:`NotSent` (no connection; a connection reset, or closed before the
        request was written) or :class:`Lost` (written, no complete answer: closed, read
        timeout, cut off, or larger than ``cap``, ``final``). Error answers (>= 300) are
        truncated at ``cap``. A GET that finds its kept connection closed by the server is
        sent once more on a new one; any other method is not (it may have been taken).
        """
        if body is None and method != "GET":
            body = b""  # a length, so the server reads no body it cannot delimit
        request = self._request(origin, method, target, headers, body)
        if body is not None and len(body) <= _JOIN_BELOW:
            request, body = request + body, None  # one write, one segment
        for attempt in range(2):
            connection = self._idle(origin) if attempt == 0 else None
            if connection is None:
                if len(self._open) + self._connecting >= self._limit:
                    return None
                self._connecting += 1
                try:
                    connection = await self._connect(origin)
                finally:
                    self._connecting -= 1
            try:
                return await self._exchange(connection, origin, request, body, read_timeout, cap)
            except _Cut as cut:
                if cut.got_any:
                    raise Lost(f"the answer was cut off: {cut}") from cut.cause
                if not cut.written or (connection.reused and method == "GET"):
                    # Never written; or a GET (it changes nothing) on a kept connection the
                    # server had closed: once more, on a new connection.
                    continue
                if isinstance(cut.cause, OSError) and cut.cause.errno in RESET_ERRNOS:
                    # Refused with a reset: the request was not taken.
                    raise NotSent(f"the connection was reset: {cut}") from cut.cause
                raise Lost("the server closed the connection without answering") from None
        raise NotSent("the server closed the connection without taking the request")

    def close(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.abort()
        self._open.clear()
        for origin in self._origins.values():
            if origin is not None:
                origin.idle.clear()

    def _request(
        self,
        origin: _Origin,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> bytes:
        """The request's head (``body`` only counted): its header lines are made once per
        origin and set of headers (the dialects and the client pass the same read-only
        mappings on every request)."""
        key = (id(origin), id(headers))
        known = self._heads.get(key)
        if known is None or known[0] is not origin or known[1] is not headers:
            known = (origin, headers, _header_block(origin, headers, self._user_agent))
            if len(self._heads) >= 64:
                self._heads.clear()
            self._heads[key] = known
        head = method.encode("ascii") + b" " + target.encode("ascii") + known[2]
        if body is None:
            return head + b"\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(body)

    def _idle(self, origin: _Origin) -> _Connection | None:
        idle = origin.idle
        stale = time.monotonic() - KEEP_IDLE
        while idle:
            connection = idle.pop()
            if connection.reusable and connection.idle_since > stale:
                connection.reused = True
                return connection
            self._open.discard(connection)
            connection.abort()
        return None

    async def _exchange(
        self,
        connection: _Connection,
        origin: _Origin,
        request: bytes,
        body: bytes | None,
        read_timeout: float,
        cap: int,
    ) -> Answer:
        watchdog = self._watchdog
        watched = watchdog.start(read_timeout)
        watched.connection = watched.response = connection
        watched.queued = False
        try:
            answer = await connection.send(request, body, cap)
        except _Cut:
            self._open.discard(connection)
            if watched.expired:
                raise Lost(f"no answer within {read_timeout:g} s") from None
            raise
        except BaseException:
            # Cancelled or failed mid-answer: the connection's framing is unknown.
            self._open.discard(connection)
            connection.abort()
            raise
        finally:
            watchdog.end(watched)
            watched.connection = watched.response = None
        if connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            origin.idle.append(connection)
        else:
            self._open.discard(connection)
            connection.abort()
        return answer

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        hosts = await self._resolve(origin)
        tls = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        last: BaseException | None = None
        for entry in hosts:
            start = time.monotonic()
            try:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(
                        _Connection,
                        entry["host"],
                        entry["port"],
                        ssl=tls,
                        server_hostname=origin.host if tls is not None else None,
                        family=entry.get("family", 0),
                        proto=entry.get("proto", 0),
                        flags=entry.get("flags", 0),
                    ),
                    self._connect_timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:  # (SSLError is an OSError)
                last = exc
                continue
            took = time.monotonic() - start  # a round trip or three, with TLS
            if self.quickest is None or took < self.quickest:
                self.quickest = took
            self.opened += 1
            if self._closed:
                connection.abort()
                raise NotSent("the HTTP pipe is closed")
            self._open.add(connection)
            return connection
        raise NotSent(f"could not connect to {origin.host}:{origin.port}: {last}") from last

    async def _resolve(self, origin: _Origin) -> list[Any]:
        key = (origin.host, origin.port)
        now = time.monotonic()
        known = self._resolved.get(key)
        if known is not None and known[0] > now:
            return known[1]
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(origin.host).version == 6 else 0
        except ValueError:
            pass  # a name
        else:
            # An address: nothing to resolve (as aiohttp's connector does it, no thread).
            literal = [{"host": origin.host, "port": origin.port, "family": family}]
            self._resolved[key] = (math.inf, literal)
            return literal
        try:
            # Bounded like the connect (aiohttp counts the lookup in its read timeout).
            hosts = await asyncio.wait_for(
                self._resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC),
                self._connect_timeout,
            )
        except asyncio.TimeoutError as exc:
            raise NotSent(
                f"could not connect: no address for {origin.host} within "
                f"{self._connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            # A refused address (ForbiddenAddress is an OSError) or a failed lookup.
            raise NotSent(f"could not connect: {exc}") from exc
        self._resolved[key] = (now + _DNS_TTL, hosts)
        return hosts


def _make_origin(scheme: str, netloc: str) -> _Origin | None:
    scheme = scheme.lower()
    if not is_http_url(f"{scheme}://") or not netloc or "@" in netloc:
        return None
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    default = 443 if scheme == "https" else 80
    return _Origin(host, port or default, scheme == "https", netloc)


def _header_block(origin: _Origin, headers: Mapping[str, str], user_agent: str) -> bytes:
    """`` HTTP/1.1`` and the header lines after the request target (each ended by CRLF,
    without the blank line that ends the head)."""
    lines = [f" HTTP/1.1\r\nHost: {origin.host_header}"]
    sent = {"host"}
    for name, value in headers.items():
        if name.lower() == "content-length":
            continue  # the body's own length is sent
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise NotSent(
                f"header {name!r} cannot be sent: a line break or NUL in it, or a colon in "
                "its name",
                final=True,
            )
        lines.append(f"{name}: {value}")
        sent.add(name.lower())
    for name, value in (
        ("User-Agent", user_agent),
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),
    ):
        if name.lower() not in sent:
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
