"""``HostileProvider``: a provider that misbehaves on purpose, to test a client against it.

It speaks Evolink's task dialect on 127.0.0.1 (``POST /v1/images/generations``, ``GET
/v1/tasks/{id}``) and serves result images at ``/files/{name}.png``; each answer can be made
hostile the way real servers and relays have been seen to be:

- ``create="echo_key"``: every create answers 401 quoting the key it was sent
  (``"Invalid API-key provided: Bearer sk-..."``), as many gateways do;
- ``create=`` / ``status="huge"``: a 200 answer of ``huge_bytes`` bytes (streamed, no
  ``Content-Length``);
- ``create=`` / ``status="deep"``: JSON nested ``depth`` levels deep;
- ``status="drip"`` (or ``[drip]`` in a job's prompt): the status answer drips one byte every
  ``drip_interval`` seconds and never ends;
- ``download="drip"``: result images drip the same way;
- ``result_urls``: the URLs a completed task lists (``file:``, ``ftp:``, ``data:`` or
  metadata addresses), ``task_id`` the id a create answers (``".."``), ``estimated_time``
  the hint it gives; ``/redirect?to=URL`` answers 302 to ``URL``.

Example::

    async with HostileProvider(create="echo_key") as server:
        async with QwenEditClient("evolink", api_key="sk-1", base_url=server.url) as client:
            ...  # the AuthenticationError's text must not show "sk-1"

Attributes may be changed between requests; ``server.created`` counts creates,
``server.polled`` status requests by task id, ``server.dripping`` answers dripping now.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from types import TracebackType
from typing import Any, Literal

import msgspec
from aiohttp import web

from ._png import png_bytes

__all__ = ["HostileProvider"]

CreateMode = Literal["ok", "echo_key", "huge", "deep"]
StatusMode = Literal["ok", "huge", "deep", "drip"]
DownloadMode = Literal["ok", "drip"]


class HostileProvider:
    """An Evolink-shaped server on 127.0.0.1 whose answers can be made hostile (see the
    module docstring). Use it as an async context manager; ``url`` is its root URL."""

    def __init__(
        self,
        *,
        create: CreateMode = "ok",
        status: StatusMode = "ok",
        download: DownloadMode = "ok",
        result_urls: list[str] | None = None,
        task_id: str | None = None,
        estimated_time: float | None = None,
        huge_bytes: int = 64 * 1024 * 1024,
        depth: int = 100_000,
        drip_interval: float = 0.5,
    ) -> None:
        self.create = create
        self.status = status
        self.download = download
        self.result_urls = result_urls
        self.task_id = task_id
        self.estimated_time = estimated_time
        self.huge_bytes = huge_bytes
        self.depth = depth
        self.drip_interval = drip_interval
        self.created = 0
        #: Answers dripping right now (a client that gives up closes them).
        self.dripping = 0
        #: Status requests received, by task id.
        self.polled: dict[str, int] = {}
        self._prompts: dict[str, str] = {}
        self._serial = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port = 0
        app = web.Application()
        app.router.add_post("/v1/images/generations", self._on_create)
        app.router.add_get("/v1/tasks/{id}", self._on_status)
        app.router.add_get("/files/{name}", self._on_file)
        app.router.add_get("/redirect", self._on_redirect)
        self.app = app

    @property
    def url(self) -> str:
        """The root URL (``base_url`` for a client)."""
        if self._runner is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> HostileProvider:
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- answers ----------------------------------------------------------------------------

    async def _hostile(self, request: web.Request, mode: str) -> web.StreamResponse | None:
        if mode == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            chunk = b" " * (256 * 1024)
            with contextlib.suppress(ConnectionError):
                await response.write(b'{"pad": "')
                for _ in range(self.huge_bytes // len(chunk) + 1):
                    await response.write(chunk)
                await response.write(b'"}')
            return response
        if mode == "deep":
            body = b'{"a":' * self.depth + b"1" + b"}" * self.depth
            return web.Response(body=body, content_type="application/json")
        if mode == "drip":
            return await self._drip(request, "application/json", None)
        return None

    async def _drip(
        self, request: web.Request, content_type: str, body: bytes | None
    ) -> web.StreamResponse:
        """One byte every ``drip_interval`` s: of ``body``, or of JSON whitespace forever."""
        headers = {"Content-Type": content_type}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        data = iter(body) if body is not None else itertools.repeat(0x20)
        self.dripping += 1
        try:
            with contextlib.suppress(ConnectionError):
                for byte in data:
                    await response.write(bytes((byte,)))
                    await asyncio.sleep(self.drip_interval)
        finally:
            self.dripping -= 1
        return response

    async def _on_create(self, request: web.Request) -> web.StreamResponse:
        self.created += 1
        if self.create == "echo_key":
            auth = request.headers.get("Authorization", "")
            key = auth.split(" ", 1)[-1]
            message = f"Invalid API-key provided: {auth}. Check the key {key} and try again."
            return web.json_response(
                {"error": {"code": "invalid_api_key", "message": message, "type": "auth"}},
                status=401,
            )
        hostile = await self._hostile(request, self.create)
        if hostile is not None:
            return hostile
        try:
            body: Any = msgspec.json.decode(await request.read())
        except msgspec.DecodeError:
            body = {}
        task_id = self.task_id or f"task-hostile-{next(self._serial)}"
        prompt = body.get("prompt") if isinstance(body, dict) else None
        self._prompts[task_id] = prompt if isinstance(prompt, str) else ""
        answer: dict[str, Any] = {"id": task_id, "status": "pending", "progress": 0}
        if self.estimated_time is not None:
            answer["task_info"] = {"estimated_time": self.estimated_time}
        return web.json_response(answer)

    async def _on_status(self, request: web.Request) -> web.StreamResponse:
        task_id = request.match_info["id"]
        self.polled[task_id] = self.polled.get(task_id, 0) + 1
        mode = "drip" if "[drip]" in self._prompts.get(task_id, "") else self.status
        hostile = await self._hostile(request, mode)
        if hostile is not None:
            return hostile
        urls = self.result_urls
        if urls is None:
            urls = [f"{self.url}/files/{task_id}.png"]
        return web.json_response(
            {"id": task_id, "status": "completed", "progress": 100, "results": urls}
        )

    async def _on_file(self, request: web.Request) -> web.StreamResponse:
        image = png_bytes(64, 64)
        if self.download == "drip":
            return await self._drip(request, "image/png", image)
        return web.Response(body=image, content_type="image/png")

    async def _on_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query.get("to", "/"))
