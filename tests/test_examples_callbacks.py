"""The FastAPI and aiohttp examples with QWEN_EDIT_CALLBACK_URL set: each serves the
callback receiver itself, and the fake provider's callbacks end the jobs.

Both apps are served for real (uvicorn, aiohttp AppRunner) on loopback; the fake provider
POSTs to the app's own public URL (plain http is allowed for loopback in the fake only).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from _imagegen import make_image
from aiohttp import web
from aiohttp.test_utils import unused_port

from qwen_edit_async.testing import FakeProvider

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import aiohttp_app
import fastapi_app
from _backend import Settings

KEY = "sk-backend-test-0123456789"
PNG = make_image("png", 512, 512)


@asynccontextmanager
async def serve_aiohttp(app: web.Application, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_asgi(app: Any, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn exited during startup")
        await asyncio.sleep(0.005)
    try:
        yield
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("framework", ["aiohttp", "fastapi"])
async def test_the_example_apps_receive_callbacks(framework: str) -> None:
    """POST /edits on Evolink ends by the provider's callback to the app's own receiver
    (no status request), and a forged callback to the mounted path is refused."""
    port = unused_port()
    async with FakeProvider(latency=0.05, estimated_time=None) as fake:
        settings = Settings(
            provider="evolink",
            base_url=fake.url,
            api_key=KEY,
            callback_url=f"http://127.0.0.1:{port}/hooks/qe",
        )
        # poll_initial=5: a safety poll would come only after 10 s (capped), long after.
        options = {"uploader": fake.uploader, "poll_initial": 5.0}
        if framework == "aiohttp":
            server = serve_aiohttp(aiohttp_app.create_app(settings, **options), port)
        else:
            server = serve_asgi(fastapi_app.create_app(settings, **options), port)
        base = f"http://127.0.0.1:{port}"
        async with server, aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("images", PNG, filename="in.png", content_type="image/png")
            form.add_field("prompt", "Give the cat a red hat")
            async with http.post(f"{base}/edits", data=form) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            async with http.get(f"{base}/healthz") as resp:
                health = await resp.json()
            async with http.post(f"{base}/hooks/qe/{'x' * 43}", data=b"{}") as resp:
                forged = resp.status
    assert body["task_id"] and body["urls"]
    assert (health["completed_by_callback"], health["completed_by_poll"]) == (1, 0)
    assert fake.stats.polls == 0 and fake.stats.callbacks_delivered == 1
    assert forged == 404


async def test_the_receiver_alone_is_an_asgi_app() -> None:
    """Served by uvicorn as the whole app (lifespan on): it answers its own POSTs, refuses
    other methods, unknown tokens and oversized bodies."""
    from qwen_edit_async import CallbackReceiver

    port = unused_port()
    receiver = CallbackReceiver(f"http://127.0.0.1:{port}/qe", max_body=2048)
    async with serve_asgi(receiver, port), aiohttp.ClientSession() as http:
        answers = []
        for method, data in (("POST", b"{}"), ("GET", None), ("POST", b"x" * 5000)):
            async with http.request(
                method, f"http://127.0.0.1:{port}/qe/{'a' * 43}", data=data
            ) as r:
                answers.append(r.status)
    assert answers == [404, 405, 413]
    assert receiver.statistics().refused == 2
