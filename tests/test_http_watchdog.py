"""Read timeouts of the pipe's requests without a timer per request (``_watchdog``): against
real servers on 127.0.0.1 that stay silent, stop halfway, drip, or never read the request."""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from qwen_edit_async._body import StreamedBody
from qwen_edit_async._http import Answer, HttpPipe, Lost
from qwen_edit_async.providers._base import HttpRequest

pytestmark = pytest.mark.timeout(20)

OnClient = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def pipe() -> AsyncIterator[HttpPipe]:
    pipe = HttpPipe(connections=64, connect_timeout=2.0)
    await pipe.open()
    try:
        yield pipe
    finally:
        await pipe.aclose()


async def _raw_server(on_client: OnClient) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def _lost_after(pipe: HttpPipe, request: HttpRequest, read_timeout: float) -> float:
    """Seconds until the send failed as lost at its read timeout."""
    start = time.monotonic()
    with pytest.raises(Lost, match=f"no answer within {read_timeout:g} s") as info:
        await pipe.send(request, read_timeout=read_timeout, cap=1 << 20)
    assert not info.value.final
    return time.monotonic() - start


@pytest.mark.parametrize(
    "sent",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50],
    ids=["silent", "halfway"],
)
async def test_a_server_gone_quiet_is_lost_at_the_read_timeout(pipe: HttpPipe, sent: bytes) -> None:
    """The server reads the request, sends nothing (or the head and half the body), then
    stays silent: lost at the read timeout after the last byte (plus at most a tick of the
    watchdog), not later."""
    hold = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(sent)
        await writer.drain()
        await hold.wait()
        writer.close()

    server, url = await _raw_server(on_client)
    try:
        elapsed = await _lost_after(pipe, HttpRequest("GET", url), 0.4)
    finally:
        hold.set()
        server.close()
    assert 0.4 <= elapsed < 2.0


async def test_a_slow_answer_that_keeps_coming_is_read_whole(pipe: HttpPipe) -> None:
    """A body dripped 10 bytes every 0.1 s for a second, with a read timeout of 0.3 s:
    every gap is shorter than the timeout, so it is read whole (progress resets it)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0.1)
            writer.write(b"y" * 10)
            await writer.drain()
        writer.close()

    server, url = await _raw_server(on_client)
    try:
        answer = await pipe.send(HttpRequest("GET", url), read_timeout=0.3, cap=1 << 20)
    finally:
        server.close()
    assert (answer.status, answer.body) == (200, b"y" * 100)


async def test_a_server_that_never_reads_the_request_is_lost_at_the_read_timeout(
    pipe: HttpPipe,
) -> None:
    """The server accepts the connection and never reads: the upload of a large body stops
    with the socket buffers full. Without progress for the read timeout it is lost (it used
    to wait for ever: no read timeout ran while the body was being written)."""
    connected = asyncio.Event()
    hold = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await hold.wait()
        writer.close()

    server, url = await _raw_server(on_client)
    body = b"z" * (32 << 20)  # far more than the socket buffers take
    try:
        elapsed = await _lost_after(pipe, HttpRequest("POST", url, body), 0.5)
    finally:
        hold.set()
        server.close()
    assert connected.is_set()
    assert elapsed < 5.0


async def test_requests_arm_no_timer_each(pipe: HttpPipe, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 requests answered at once arm a couple of event-loop timers in all (the
    watchdog's), not two per request as aiohttp's per-read timeout did. (The server here is
    a plain keep-alive loop that arms none.)"""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _raw_server(on_client)
    loop = asyncio.get_running_loop()
    armed: list[Any] = []
    original = loop.call_at

    def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(callback)
        return original(when, callback, *args, **kwargs)

    def sixty() -> Awaitable[list[Answer]]:
        return asyncio.gather(
            *(pipe.send(HttpRequest("GET", url), read_timeout=30, cap=1024) for _ in range(60))
        )

    try:
        await sixty()  # the connections are made (each connect has its own timeout)
        monkeypatch.setattr(loop, "call_at", counted)
        answers = await sixty()
    finally:
        monkeypatch.undo()
        server.close()
    assert [a.body for a in answers] == [b"{}"] * 60
    assert len(armed) <= 4, armed


async def test_a_pooled_connection_keeps_no_answer_of_the_request_that_opened_it(
    pipe: HttpPipe,
) -> None:
    """A connection opened for a request stays in the pool after it; the request's watch
    lives on in what the connection's transport captured then (its context), so the watch
    must let go of the response: it kept every pooled connection's first answer, body
    included (a 1 MiB answer here; thousands of answers in a bulk run). A streamed body:
    aiohttp carries it (requests with a body in memory, and bodiless ones, have the pipe's
    own connections, below)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)  # the body, b"{}"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                writer.write(b"x" * (1 << 20))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _raw_server(on_client)
    try:
        answer = await pipe.send(
            HttpRequest("POST", url, None),
            read_timeout=30,
            cap=2 << 20,
            stream=StreamedBody((b"{}",), 2),
        )
        assert len(answer.body) == 1 << 20
        del answer
        gc.collect()
        pooled = sum(len(idle) for idle in pipe._session.connector._conns.values())  # type: ignore[union-attr]
        responses = [  # this server's (another test's may linger until collected)
            o
            for o in gc.get_objects()
            if isinstance(o, aiohttp.ClientResponse) and str(o.url).startswith(url)
        ]
    finally:
        server.close()
    assert pooled == 1  # the connection is kept for the next request
    assert responses == []  # and nothing of the answer with it


async def test_a_kept_connection_of_the_lean_path_keeps_nothing_of_its_answer(
    pipe: HttpPipe,
) -> None:
    """The same for a bodiless GET, on the pipe's own kept-alive connections: after the
    answer is dropped, the memory its 1 MiB body took is free, and the connection is kept
    (bytes are not tracked by the garbage collector: the allocator's figures tell)."""
    body = b"y" * (1 << 20)
    written = asyncio.Event()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                writer.write(body)
                await writer.drain()
                written.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _raw_server(on_client)
    tracemalloc.start()
    try:
        for _ in range(2):
            before = tracemalloc.get_traced_memory()[0]
            answer = await pipe.send(HttpRequest("GET", url), read_timeout=30, cap=2 << 20)
            assert answer.body == body
            del answer
            await written.wait()  # the server's side let go of what it wrote
            written.clear()
            for _ in range(3):  # and the event loop of the last callbacks it ran
                await asyncio.sleep(0)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
            assert held < 256 << 10, held
        assert pipe._lean is not None
        opened = pipe._lean.opened
    finally:
        tracemalloc.stop()
        server.close()
    assert opened == 1  # one connection, kept for the second request


async def test_the_wait_for_a_free_connection_is_not_counted_as_silence() -> None:
    """One connection, two requests: the second waits 0.8 s for the first's answer, longer
    than its read timeout of 0.4 s, then is answered at once. The read timeout counts from
    when it has a connection, so it is answered, not lost."""
    pipe = HttpPipe(connections=1, connect_timeout=2.0)
    await pipe.open()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"GET /slow" in head:
                    await asyncio.sleep(0.8)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await _raw_server(on_client)
    try:
        slow = asyncio.ensure_future(
            pipe.send(HttpRequest("GET", url + "slow"), read_timeout=5, cap=1024)
        )
        await asyncio.sleep(0.05)  # the slow one has the only connection
        quick = await pipe.send(HttpRequest("GET", url + "quick"), read_timeout=0.4, cap=1024)
        assert (await slow).body == b"{}"
    finally:
        server.close()
        await pipe.aclose()
    assert quick.body == b"{}"
