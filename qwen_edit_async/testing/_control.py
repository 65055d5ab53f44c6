"""``/_fake/*``: drive a fake running in another process (benchmarks, CLI crash tests).

=======================  ====================================================================
``GET /_fake/stats``     counters and job records (``?jobs=0`` leaves the records out)
``POST /_fake/reset``    forget jobs, uploads, counters and the script
``GET /_fake/faults``    the current :class:`Faults` as JSON
``POST /_fake/faults``   replace the faults: a JSON object of ``Faults`` fields
``POST /_fake/script``   queue script words: ``{"script": ["rate_limit", "ok"]}`` or a list
``GET /_fake/config``    latency, max_running, max_rate, burst, url_lifetime, estimated_time,
                         b64_json
``POST /_fake/config``   change any of those (``latency`` seconds or ``latency_lognormal``
                         ``[median, sigma]``; ``estimated_time`` an int, ``null`` or ``"auto"``)
``POST /_fake/upload``   raw bytes with their Content-Type -> ``{"url": ".../files/uploads/..."}``
=======================  ====================================================================

These routes need no API key: the fake only ever listens on loopback.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from ._faults import Faults
from ._latency import Latency
from ._state import FakeState
from ._validate import MAX_IMAGE_BYTES

__all__ = ["add_control_routes"]

_ENCODE = msgspec.json.Encoder().encode


class _ConfigChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    latency: float | msgspec.UnsetType = msgspec.UNSET
    latency_lognormal: tuple[float, float] | msgspec.UnsetType = msgspec.UNSET
    max_running: int | msgspec.UnsetType | None = msgspec.UNSET
    max_rate: Annotated[float, msgspec.Meta(gt=0)] | msgspec.UnsetType | None = msgspec.UNSET
    burst: Annotated[int, msgspec.Meta(ge=1)] | msgspec.UnsetType | None = msgspec.UNSET
    url_lifetime: float | msgspec.UnsetType = msgspec.UNSET
    estimated_time: int | Literal["auto"] | msgspec.UnsetType | None = msgspec.UNSET
    b64_json: bool | msgspec.UnsetType = msgspec.UNSET


class _Script(msgspec.Struct, forbid_unknown_fields=True):
    script: list[str]


class _ClockChange(msgspec.Struct, forbid_unknown_fields=True):
    advance: Annotated[float, msgspec.Meta(ge=0)]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_ENCODE(body), status=status, content_type="application/json")


def _bad(message: str) -> web.Response:
    return _json({"error": message}, status=400)


def _config(fake: FakeState) -> dict[str, Any]:
    return {
        "latency": repr(fake.latency),
        "latency_typical": fake.latency.typical,
        "max_running": fake.max_running,
        "max_rate": fake.max_rate,
        "burst": fake.burst,
        "url_lifetime": fake.url_lifetime,
        "estimated_time": fake.estimated_time,
        "b64_json": fake.b64_json,
    }


def _apply(fake: FakeState, change: _ConfigChange) -> None:
    """Set every field ``change`` carries."""
    if change.latency is not msgspec.UNSET:
        fake.latency = change.latency
    if change.latency_lognormal is not msgspec.UNSET:
        fake.latency = Latency.lognormal(*change.latency_lognormal)
    if change.max_running is not msgspec.UNSET:
        fake.max_running = change.max_running
    if change.max_rate is not msgspec.UNSET:
        fake.max_rate = change.max_rate
    if change.burst is not msgspec.UNSET:
        fake.burst = change.burst
    if change.url_lifetime is not msgspec.UNSET:
        fake.url_lifetime = change.url_lifetime
    if change.estimated_time is not msgspec.UNSET:
        fake.estimated_time = change.estimated_time
    if change.b64_json is not msgspec.UNSET:
        fake.b64_json = change.b64_json


class _Controls:
    """The ``/_fake/*`` handlers of one fake."""

    def __init__(self, fake: FakeState) -> None:
        self.fake = fake

    async def stats(self, request: web.Request) -> web.Response:
        with_jobs = request.query.get("jobs", "1") not in ("0", "false", "no")
        return _json(self.fake.stats.snapshot(jobs=with_jobs))

    async def reset(self, request: web.Request) -> web.Response:
        self.fake.reset()
        return _json({"ok": True})

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(msgspec.to_builtins(self.fake.faults))

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            self.fake.faults = msgspec.json.decode(await request.read() or b"{}", type=Faults)
        except (msgspec.DecodeError, ValueError) as exc:
            return _bad(str(exc))
        return _json(msgspec.to_builtins(self.fake.faults))

    async def script(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            words: list[str] = (
                msgspec.json.decode(raw, type=list[str])
                if raw.lstrip().startswith(b"[")
                else msgspec.json.decode(raw, type=_Script).script
            )
            self.fake.script(*words)
        except (msgspec.DecodeError, ValueError) as exc:
            return _bad(str(exc))
        return _json({"pending": self.fake.pending_script})

    async def get_config(self, request: web.Request) -> web.Response:
        return _json(_config(self.fake))

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            change = msgspec.json.decode(await request.read() or b"{}", type=_ConfigChange)
            _apply(self.fake, change)
        except (msgspec.DecodeError, ValueError) as exc:
            return _bad(str(exc))
        return _json(_config(self.fake))

    async def clock(self, request: web.Request) -> web.Response:
        """Move the fake's clock forward (``{"advance": seconds}``): expiries come sooner."""
        clock = self.fake.files.clock
        try:
            change = msgspec.json.decode(await request.read() or b"{}", type=_ClockChange)
            clock.advance(change.advance)
        except (msgspec.DecodeError, ValueError) as exc:
            return _bad(str(exc))
        return _json({"skipped": clock.skipped})

    async def upload(self, request: web.Request) -> web.Response:
        try:
            data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json({"error": "upload larger than 10 MB"}, status=413)
        if len(data) > MAX_IMAGE_BYTES:
            return _json({"error": "upload larger than 10 MB"}, status=413)
        if not data:
            return _bad("empty upload")
        mime = request.headers.get("Content-Type", "application/octet-stream")
        self.fake.stats.uploads += 1
        return _json({"url": self.fake.files.add_upload(data, mime)})


def add_control_routes(app: web.Application, fake: FakeState) -> None:
    """Register the ``/_fake/*`` routes for ``fake`` on ``app``."""
    controls = _Controls(fake)
    router = app.router
    router.add_get("/_fake/stats", controls.stats)
    router.add_post("/_fake/reset", controls.reset)
    router.add_get("/_fake/faults", controls.get_faults)
    router.add_post("/_fake/faults", controls.set_faults)
    router.add_post("/_fake/script", controls.script)
    router.add_get("/_fake/config", controls.get_config)
    router.add_post("/_fake/config", controls.set_config)
    router.add_post("/_fake/clock", controls.clock)
    router.add_post("/_fake/upload", controls.upload)
