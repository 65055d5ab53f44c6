"""Real HTTP servers on 127.0.0.1 for tests that need a provider the fake does not play."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` with AppRunner/TCPSite on a free loopback port; yield its base URL.
    Leaving runs the app's full shutdown (``runner.cleanup()``)."""
    runner = web.AppRunner(app, access_log=None)
    try:
        # Inside the try: when a later cleanup_ctx fails at startup, cleanup() still unwinds
        # the ones that started (aiohttp does not; web.run_app neither).
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def evolink_app(create: Handler, status: Handler) -> web.Application:
    """An app on Evolink's two paths: ``create`` answers creates, ``status`` status requests
    (the task id is ``request.match_info["id"]``)."""
    app = web.Application()
    app.router.add_post("/v1/images/generations", create)
    app.router.add_get("/v1/tasks/{id}", status)
    return app


def completed(task_id: str) -> dict[str, Any]:
    """Evolink's body for a task that ended with one image."""
    return {
        "id": task_id,
        "status": "completed",
        "progress": 100,
        "results": ["https://example.com/out.png"],
    }
