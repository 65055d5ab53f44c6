"""The pipe (``_http``) against real servers on 127.0.0.1: what it puts on the wire, what it
gives back, and how it classifies a failure (not sent, lost) for the layers above."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from qwen_edit_async._addresses import ForbiddenAddress
from qwen_edit_async._http import USER_AGENT, EnvProxies, HttpPipe, Lost, NotSent
from qwen_edit_async.providers._base import HttpRequest

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def pipe() -> AsyncIterator[HttpPipe]:
    pipe = HttpPipe(connections=4, connect_timeout=2.0)
    await pipe.open()
    try:
        yield pipe
    finally:
        await pipe.aclose()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_send_puts_the_request_on_the_wire_and_returns_the_answer(pipe: HttpPipe) -> None:
    """Method, path, body, the request's headers plus the extra ones, the library's
    User-Agent and a JSON Content-Type: all reach the server; the answer comes back whole."""
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "headers": dict(request.headers)})
        seen[-1]["body"] = await request.read()
        return web.json_response({"ok": True}, status=201, headers={"X-Request-Id": "r-1"})

    app = web.Application()
    app.router.add_post("/v1/x", handler)
    runner, url = await _serve(app)
    try:
        answer = await pipe.send(
            HttpRequest("POST", url + "/v1/x", b'{"a":1}', {"X-Own": "1"}),
            headers={"Authorization": "Bearer k"},
            read_timeout=5,
            cap=1024,
        )
    finally:
        await runner.cleanup()
    assert answer.status == 201 and answer.body == b'{"ok": true}'
    assert answer.headers["X-Request-Id"] == "r-1"
    (got,) = seen
    assert got["path"] == "/v1/x" and got["body"] == b'{"a":1}'
    assert got["headers"]["X-Own"] == "1"
    assert got["headers"]["Authorization"] == "Bearer k"
    assert got["headers"]["User-Agent"] == USER_AGENT
    assert got["headers"]["Content-Type"] == "application/json"


async def test_a_refused_connection_is_not_sent(pipe: HttpPipe) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(NotSent) as info:
        await pipe.send(HttpRequest("GET", f"http://127.0.0.1:{port}/"), read_timeout=2, cap=64)
    assert not info.value.final


async def test_an_unusable_url_is_not_sent_and_final(pipe: HttpPipe) -> None:
    with pytest.raises(NotSent) as info:
        await pipe.send(HttpRequest("GET", "127.0.0.1:9/x"), read_timeout=2, cap=64)
    assert info.value.final


async def test_a_connection_closed_after_the_request_is_lost(pipe: HttpPipe) -> None:
    """The server reads the whole request, then closes without a byte: the request was
    received, the answer lost."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Lost) as info:
            await pipe.send(HttpRequest("GET", f"http://127.0.0.1:{port}/"), read_timeout=2, cap=64)
    finally:
        server.close()
        await server.wait_closed()
    assert not info.value.final


async def test_a_slow_answer_is_lost_at_the_total_deadline(pipe: HttpPipe) -> None:
    answered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await answered.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", slow)
    runner, url = await _serve(app)
    try:
        with pytest.raises(Lost, match=r"within 0\.2 s"):
            await pipe.send(HttpRequest("GET", url + "/"), read_timeout=5, cap=64, total=0.2)
    finally:
        answered.set()
        await runner.cleanup()


async def test_answers_over_the_cap_are_lost_and_error_answers_truncated(pipe: HttpPipe) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000, status=int(request.query["status"]))

    app = web.Application()
    app.router.add_get("/", big)
    runner, url = await _serve(app)
    try:
        with pytest.raises(Lost, match="max_response_bytes=100") as info:
            await pipe.send(HttpRequest("GET", url + "/?status=200"), read_timeout=5, cap=100)
        error = await pipe.send(HttpRequest("GET", url + "/?status=500"), read_timeout=5, cap=100)
    finally:
        await runner.cleanup()
    assert info.value.final
    assert error.status == 500 and error.body == b"x" * 100


async def test_stream_reads_in_chunks_and_refuses_metadata_addresses(pipe: HttpPipe) -> None:
    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"y" * 5000, content_type="image/png")

    app = web.Application()
    app.router.add_get("/i.png", image)
    runner, url = await _serve(app)
    try:
        async with pipe.stream(url + "/i.png", read_timeout=5) as opened:
            assert opened.status == 200 and opened.content_length == 5000
            chunks = [chunk async for chunk in opened.chunks(1024)]
    finally:
        await runner.cleanup()
    assert b"".join(chunks) == b"y" * 5000 and max(map(len, chunks)) <= 1024
    with pytest.raises(ForbiddenAddress):
        async with pipe.stream("http://169.254.169.254/latest/", read_timeout=5):
            pass


async def test_requests_take_no_thread_hand_off(
    pipe: HttpPipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy variables and netrc are read once when the pipe opens, not by aiohttp in a
    worker thread for every request (two hand-offs per request with ``trust_env=True``)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=b"{}")

    app = web.Application()
    app.router.add_route("*", "/x", ok)
    runner, base = await _serve(app)
    loop = asyncio.get_running_loop()
    handed_off: list[object] = []
    original = loop.run_in_executor

    def counting(executor: Any, func: Any, *args: Any) -> Any:
        handed_off.append(func)
        return original(executor, func, *args)

    monkeypatch.setattr(loop, "run_in_executor", counting)
    try:
        for _ in range(20):
            await pipe.send(HttpRequest("POST", f"{base}/x", b"{}"), read_timeout=5, cap=1024)
            async with pipe.stream(f"{base}/x", read_timeout=5) as opened:
                assert opened.status == 200
    finally:
        await runner.cleanup()
    assert handed_off == []


def test_env_proxies_follow_no_proxy_per_host() -> None:
    """HTTP_PROXY applies to http URLs, not to a host NO_PROXY names (nor its subdomains);
    the answer is kept per scheme and host."""
    proxies = EnvProxies(
        {"http": aiohttp.helpers.ProxyInfo(URL("http://proxy.test:3128"), None)},
        {"http": "http://proxy.test:3128", "no": "direct.test"},
    )
    assert proxies.for_url("http://api.test/v1")["proxy"] == URL("http://proxy.test:3128")
    assert proxies.for_url("http://direct.test/v1") == {}
    assert proxies.for_url("http://a.direct.test/v1") == {}
    assert proxies.for_url("https://api.test/v1") == {}
    assert not EnvProxies({}, {})
