"""The pipe's own path for bodiless GETs (``_lean``: status requests on kept-alive
connections, without aiohttp's request objects), against real servers on 127.0.0.1 that
answer in every framing HTTP/1.1 has, close kept connections, and misbehave."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from _wait import until
from aiohttp.abc import AbstractResolver

from qwen_edit_async import _lean
from qwen_edit_async._http import GuardedResolver, HttpPipe, Lost, NotSent
from qwen_edit_async.providers._base import HttpRequest

pytestmark = pytest.mark.timeout(20)

Answerer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server: each connection handled by the answerer ``make(server)`` gives;
    it counts connections and keeps every request head it read."""

    def __init__(self, make: Callable[[Server], Answerer]) -> None:
        self.answer = make(self)
        self.connections = 0
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        return head


@pytest.fixture
async def pipe() -> AsyncIterator[HttpPipe]:
    pipe = HttpPipe(connections=8, connect_timeout=2.0)
    await pipe.open()
    try:
        yield pipe
    finally:
        await pipe.aclose()


def _each(server_answer: bytes, *, close: bool = False) -> Callable[[Server], Answerer]:
    """An answerer giving ``server_answer`` to every request (closing after one if
    ``close``)."""

    def make(server: Server) -> Answerer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.head(reader)
                writer.write(server_answer)
                await writer.drain()
                if close:
                    return

        return answer

    return make


async def _get(pipe: HttpPipe, url: str, cap: int = 1 << 20) -> tuple[int, bytes, str]:
    answer = await pipe.send(
        HttpRequest("GET", url, None, {"Authorization": "Bearer k-1"}),
        read_timeout=5,
        cap=cap,
    )
    return answer.status, answer.body, answer.headers.get("x-request-id", "")


async def test_requests_share_one_kept_alive_connection_and_say_who_they_are(
    pipe: HttpPipe,
) -> None:
    server = Server(_each(b"HTTP/1.1 200 OK\r\nX-Request-Id: r-7\r\nContent-Length: 2\r\n\r\n{}"))
    async with server:
        for _ in range(5):
            assert await _get(pipe, server.url + "/v1/tasks/t%2F1?x=1") == (200, b"{}", "r-7")
    assert server.connections == 1
    assert pipe._lean is not None and pipe._lean.opened == 1
    head = server.heads[0].decode()
    assert head.startswith("GET /v1/tasks/t%2F1?x=1 HTTP/1.1\r\n")
    lines = set(head.split("\r\n"))
    host = server.url.removeprefix("http://")
    assert {f"Host: {host}", "Authorization: Bearer k-1", "Accept-Encoding: identity"} <= lines
    assert any(line.startswith("User-Agent: qwen-edit-async/") for line in lines)


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        # Chunked, with a chunk extension and a trailer.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'3;ext=1\r\n{"a\r\n5\r\n": 1}\r\n0\r\nX-Trailer: t\r\n\r\n',
            b'{"a": 1}',
        ),
        # gzip, though the request asked for none.
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: "
            + str(len(gzip.compress(b'{"b": 2}'))).encode()
            + b"\r\n\r\n"
            + gzip.compress(b'{"b": 2}'),
            b'{"b": 2}',
        ),
        # An interim answer first, then the answer.
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"ok",
        ),
        # No body at all.
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
    ids=["chunked", "gzip", "interim", "no-content"],
)
async def test_every_framing_of_a_kept_alive_answer_is_read(
    pipe: HttpPipe, answer: bytes, body: bytes
) -> None:
    server = Server(_each(answer))
    async with server:
        for _ in range(3):
            assert (await _get(pipe, server.url + "/s"))[1] == body
    assert server.connections == 1  # the connection was reused: the framing was exact


async def test_an_answer_ending_with_its_connection_is_read_and_the_next_opens_another(
    pipe: HttpPipe,
) -> None:
    server = Server(_each(b'HTTP/1.0 200 OK\r\n\r\n{"c": 3}', close=True))
    async with server:
        assert (await _get(pipe, server.url + "/s"))[1] == b'{"c": 3}'
        assert (await _get(pipe, server.url + "/s"))[1] == b'{"c": 3}'
    assert server.connections == 2


async def test_a_kept_connection_the_server_closed_is_replaced_without_an_error(
    pipe: HttpPipe,
) -> None:
    """Servers close idle kept-alive connections when they like: the GET that finds its
    connection closed is sent again on a new one (a status request changes nothing)."""

    # Keep-alive promised, then closed after the answer, silently.
    server = Server(_each(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", close=True))
    async with server:
        for n in range(1, 4):
            assert (await _get(pipe, server.url + "/s"))[1] == b"{}"
            assert pipe._lean is not None
            # The close arrives before the next request (else that request finds it first:
            # the same path, one step later).
            kept = list(pipe._lean._open)
            await until(lambda kept=kept: all(c.closed for c in kept))
            assert server.connections == n
        assert (await _get(pipe, server.url + "/s"))[1] == b"{}"
    assert server.connections == 4


async def test_a_connection_closed_without_an_answer_is_lost_on_a_new_connection(
    pipe: HttpPipe,
) -> None:
    def make(server: Server) -> Answerer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.head(reader)

        return answer

    server = Server(make)
    async with server:
        with pytest.raises(Lost, match="closed the connection without answering"):
            await _get(pipe, server.url + "/s")


async def test_an_answer_cut_off_is_lost(pipe: HttpPipe) -> None:
    server = Server(_each(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half', close=True))
    async with server:
        with pytest.raises(Lost, match="cut off"):
            await _get(pipe, server.url + "/s")


async def test_nothing_listening_is_not_sent(pipe: HttpPipe) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(NotSent, match="could not connect"):
        await _get(pipe, f"http://127.0.0.1:{port}/s")


@pytest.mark.parametrize(
    "answer",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBroken header line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["not-http", "status", "header", "length", "coding", "chunk-size"],
)
async def test_an_unreadable_answer_is_lost_and_its_connection_dropped(
    pipe: HttpPipe, answer: bytes
) -> None:
    server = Server(_each(answer))
    async with server:
        with pytest.raises(Lost, match="cannot be read"):
            await _get(pipe, server.url + "/s")
    assert pipe._lean is not None
    assert not any(origin and origin.idle for origin in pipe._lean._origins.values())


async def test_a_head_without_end_is_refused_beyond_its_limit(pipe: HttpPipe) -> None:
    server = Server(_each(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * (70 << 10)))
    async with server:
        with pytest.raises(Lost, match="head is longer"):
            await _get(pipe, server.url + "/s")


@pytest.mark.parametrize("framing", ["length", "chunked", "close", "gzip"])
async def test_the_cap_holds_in_every_framing(pipe: HttpPipe, framing: str) -> None:
    """A success answer over the cap fails (final: asking again gives the same); an error
    answer keeps its first ``cap`` bytes."""
    data = b"z" * 5000
    if framing == "length":
        head, body = b"Content-Length: 5000\r\n", data
    elif framing == "chunked":
        head = b"Transfer-Encoding: chunked\r\n"
        body = b"".join(b"3e8\r\n" + data[i : i + 1000] + b"\r\n" for i in range(0, 5000, 1000))
        body += b"0\r\n\r\n"
    elif framing == "close":
        head, body = b"Connection: close\r\n", data
    else:
        packed = gzip.compress(data)  # small on the wire, 5000 bytes inflated
        head, body = b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(packed), packed
    for status in (b"200 OK", b"500 Oops"):
        server = Server(_each(b"HTTP/1.1 " + status + b"\r\n" + head + b"\r\n" + body))
        async with server:
            if status.startswith(b"200"):
                with pytest.raises(Lost, match="larger than max_response_bytes=1000") as info:
                    await _get(pipe, server.url + "/s", cap=1000)
                assert info.value.final
            else:
                assert await _get(pipe, server.url + "/s", cap=1000) == (500, data[:1000], "")


async def test_a_silent_server_is_lost_at_the_read_timeout(pipe: HttpPipe) -> None:
    def make(server: Server) -> Answerer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.head(reader)
            await asyncio.sleep(30)

        return answer

    server = Server(make)
    async with server:
        with pytest.raises(Lost, match=r"no answer within 0\.3 s"):
            await pipe.send(HttpRequest("GET", server.url + "/s"), read_timeout=0.3, cap=100)


async def test_a_cancelled_request_does_not_leave_its_connection_to_the_next(
    pipe: HttpPipe,
) -> None:
    """The answer of a request given up halfway must not become the next one's: its
    connection is dropped."""

    def make(server: Server) -> Answerer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = 0
            while True:
                await server.head(reader)
                n += 1
                await asyncio.sleep(0.3 if n == 1 else 0)
                body = b'{"n": %d}' % n
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()

        return answer

    server = Server(make)
    async with server:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_get(pipe, server.url + "/s"), 0.1)
        assert (await _get(pipe, server.url + "/s"))[1] == b'{"n": 1}'  # a new connection
    assert server.connections == 2


async def test_a_line_break_in_a_header_is_never_sent(pipe: HttpPipe) -> None:
    server = Server(_each(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
    async with server:
        request = HttpRequest("GET", server.url + "/s", None, {"X-Key": "a\r\nX-Evil: 1"})
        with pytest.raises(NotSent, match="line break") as info:
            await pipe.send(request, read_timeout=5, cap=100)
        assert info.value.final
    assert server.heads == []


async def test_a_proxied_url_goes_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY applies to status requests as to every other: they go to the proxy."""

    proxy = Server(_each(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", close=True))
    async with proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        pipe = HttpPipe(connections=8, connect_timeout=2.0)
        await pipe.open()
        try:
            assert (await _get(pipe, "http://api.example.test/v1/tasks/t-1"))[1] == b"{}"
        finally:
            await pipe.aclose()
    assert proxy.heads[0].startswith(b"GET http://api.example.test/v1/tasks/t-1 HTTP/1.1")


async def test_a_closed_pipe_drops_its_kept_connections(pipe: HttpPipe) -> None:
    server = Server(_each(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
    async with server:
        await _get(pipe, server.url + "/s")
        lean = pipe._lean
        assert lean is not None and len(lean._open) == 1
        connection = next(iter(lean._open))
        await pipe.aclose()
        await until(lambda: connection.closed)


def test_the_lean_path_runs_on_uvloop() -> None:
    """The command line runs on uvloop when it is installed: its transports are not
    asyncio's classes, and the lean path must work with them (it hung the CLI once)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[bytes]:
        server = Server(
            _each(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        )
        pipe = HttpPipe(connections=8, connect_timeout=2.0)
        await pipe.open()
        try:
            async with server:
                return [
                    (await asyncio.wait_for(_get(pipe, server.url + "/s"), 5))[1] for _ in range(3)
                ]
        finally:
            await pipe.aclose()

    assert uvloop.run(main()) == [b"{}"] * 3


async def _post(pipe: HttpPipe, url: str, body: bytes) -> tuple[int, bytes]:
    answer = await pipe.send(
        HttpRequest("POST", url, body, {"Authorization": "Bearer k-1"}), read_timeout=5, cap=1024
    )
    return answer.status, answer.body


def _reads_posts(
    server: Server, bodies: list[bytes], then: Callable[[int], bytes | None]
) -> Answerer:
    """Read POSTs (head and Content-Length body); answer the n-th with ``then(n)``, or
    close without an answer when it gives ``None``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await server.head(reader)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            bodies.append(await reader.readexactly(length))
            reply = then(len(bodies))
            if reply is None:
                return
            writer.write(reply)
            await writer.drain()

    return answer


async def test_a_create_with_its_body_in_memory_goes_whole_on_a_kept_connection(
    pipe: HttpPipe,
) -> None:
    bodies: list[bytes] = []
    ok = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"id": "t"}'
    server = Server(lambda s: _reads_posts(s, bodies, lambda n: ok))
    big = b'{"p": "' + b"q" * (100 << 10) + b'"}'  # written after its head, not joined
    async with server:
        assert await _post(pipe, server.url + "/v1/create", b'{"a": 1}') == (200, b'{"id": "t"}')
        assert await _post(pipe, server.url + "/v1/create", big) == (200, b'{"id": "t"}')
    assert bodies == [b'{"a": 1}', big]
    assert server.connections == 1
    lines = server.heads[0].decode().split("\r\n")
    assert lines[0] == "POST /v1/create HTTP/1.1"
    assert {"Content-Length: 8", "Content-Type: application/json"} <= set(lines)


async def test_a_create_whose_connection_closes_unanswered_is_lost_and_never_sent_again(
    pipe: HttpPipe,
) -> None:
    """The server read the create and closed without an answer: it may exist, so it is
    lost, and not sent again on a new connection (a GET would be: it changes nothing)."""
    bodies: list[bytes] = []
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    server = Server(lambda s: _reads_posts(s, bodies, lambda n: ok if n == 1 else None))
    async with server:
        assert await _post(pipe, server.url + "/c", b"{}") == (200, b"{}")
        with pytest.raises(Lost, match="closed the connection without answering"):
            await _post(pipe, server.url + "/c", b'{"second": 1}')
    assert bodies == [b"{}", b'{"second": 1}']  # once each
    assert server.connections == 1


async def test_a_create_refused_with_a_reset_is_not_sent(pipe: HttpPipe) -> None:
    """A reset (RST) is the same answer on this path as through aiohttp: not taken."""

    def make(server: Server) -> Answerer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.head(reader)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # closed with linger 0: a reset

        return answer

    server = Server(make)
    async with server:
        with pytest.raises(NotSent, match="reset"):
            await _post(pipe, server.url + "/c", b"{}")


async def test_a_kept_connection_found_closed_before_a_create_opens_another(
    pipe: HttpPipe,
) -> None:
    """The server closed the idle connection and the client saw it: the create goes on a
    new connection, once."""
    bodies: list[bytes] = []
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"

    def one_then_close(server: Server) -> Answerer:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await server.head(reader)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            bodies.append(await reader.readexactly(length))
            writer.write(ok)
            await writer.drain()

        return answer

    server = Server(one_then_close)
    async with server:
        assert await _post(pipe, server.url + "/c", b"{1}") == (200, b"{}")
        assert pipe._lean is not None
        kept = list(pipe._lean._open)
        await until(lambda: all(c.closed for c in kept))
        assert await _post(pipe, server.url + "/c", b"{2}") == (200, b"{}")
    assert bodies == [b"{1}", b"{2}"]
    assert server.connections == 2


async def test_a_name_that_never_resolves_is_not_sent_within_the_connect_timeout() -> None:
    """The lookup of a new connection's name is bounded like its connect: a resolver that
    never answers ends the request as not sent, not a hang."""

    class Silent(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            await asyncio.sleep(3600)
            return []

        async def close(self) -> None:
            return None

    pipe = HttpPipe(connections=8, connect_timeout=0.2)
    await pipe.open()
    try:
        assert pipe._lean is not None
        pipe._lean._resolver = Silent()
        started = asyncio.get_running_loop().time()
        with pytest.raises(NotSent, match=r"no address for api\.example\.test within 0\.2 s"):
            await _get(pipe, "http://api.example.test/v1/tasks/t-1")
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await pipe.aclose()


async def test_a_name_resolving_only_to_a_metadata_address_is_refused(
    pipe: HttpPipe,
) -> None:
    """The pipe's guarded resolver applies on this path too: no connection is made to a
    link-local or cloud-metadata address a name resolves to."""

    class Metadata(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
            return [{"hostname": host, "host": "169.254.169.254", "port": port, "family": 2}]

        async def close(self) -> None:
            return None

    assert pipe._lean is not None
    pipe._lean._resolver = GuardedResolver(Metadata())
    with pytest.raises(NotSent, match="link-local or cloud-metadata"):
        await _get(pipe, "http://api.example.test/v1/tasks/t-1")
    assert pipe._lean.opened == 0


async def test_a_connection_idle_too_long_is_not_used_again(
    pipe: HttpPipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A middlebox may have dropped a connection idle for long without a word: after
    ``KEEP_IDLE`` seconds in the pool it is closed, and the request opens a new one (a create
    written on a dead connection would be lost, not sent)."""
    server = Server(_each(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"))
    async with server:
        await _get(pipe, server.url + "/s")
        await _get(pipe, server.url + "/s")
        assert server.connections == 1  # within the limit: kept
        monkeypatch.setattr(_lean, "KEEP_IDLE", 0.0)  # every idle connection is too old now
        assert pipe._lean is not None
        kept = list(pipe._lean._open)
        await _get(pipe, server.url + "/s")
        assert server.connections == 2
        assert all(c.closed or c.transport is None or c.transport.is_closing() for c in kept)


async def test_a_forgotten_origin_closes_the_connections_it_kept(
    pipe: HttpPipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Origins beyond ``ORIGINS_KEPT`` are forgotten, oldest first; the connections they
    kept are closed with them, not left open and counted until the pipe closes."""
    monkeypatch.setattr(_lean, "ORIGINS_KEPT", 1)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    first, second = Server(_each(ok)), Server(_each(ok))
    async with first, second:
        await _get(pipe, first.url + "/s")
        assert pipe._lean is not None
        kept = list(pipe._lean._open)
        await _get(pipe, second.url + "/s")  # the first origin is forgotten
        assert len(pipe._lean._open) == 1
        await until(lambda: all(c.closed for c in kept))
