"""examples/aiohttp_app.py served for real (AppRunner + TCPSite on 127.0.0.1) against the fake
provider, driven over HTTP with an aiohttp client.

Retry waits are zero (``conftest._no_retry_waits``), so outages fail fast.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _imagegen import make_image
from _loopback import serve
from aiohttp import web

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider, Faults

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import aiohttp_app
from _backend import Settings

KEY = "sk-backend-test-0123456789"
PNG = make_image("png", 512, 512)
FAST = {"poll_initial": 0.02, "poll_max_interval": 0.05, "poll_jitter": 0.0}


def app_for(fake: FakeProvider, provider: str = "vtrix", **options: Any) -> web.Application:
    settings_keys = {"max_in_flight", "job_timeout", "api_key", "model"}
    settings = {k: options.pop(k) for k in list(options) if k in settings_keys}
    settings.setdefault("api_key", KEY)
    return aiohttp_app.create_app(
        Settings(provider=provider, base_url=fake.url, **settings), **{**FAST, **options}
    )


def form(images: int = 1, **fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for i in range(images):
        data.add_field("images", PNG, filename=f"in{i}.png", content_type="image/png")
    for name, value in {"prompt": "Give the cat a red hat", **fields}.items():
        data.add_field(name, str(value))
    return data


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
        yield session


async def test_fifty_concurrent_edits_share_one_capped_client(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 concurrent POST /edits all succeed through one client configured from QWEN_EDIT_*
    variables; the provider never runs more than QWEN_EDIT_MAX_IN_FLIGHT=8 jobs at once and
    does reach 8 (the cap was exercised)."""
    async with FakeProvider(api_key=KEY, latency=0.1) as fake:
        for name, value in {
            "PROVIDER": "vtrix",
            "BASE_URL": fake.url,
            "API_KEY": KEY,
            "MAX_IN_FLIGHT": "8",
        }.items():
            monkeypatch.setenv(f"QWEN_EDIT_{name}", value)
        async with serve(aiohttp_app.create_app(**FAST)) as base:

            async def one(i: int) -> dict[str, Any]:
                async with http.post(f"{base}/edits", data=form(n=2, seed=i)) as resp:
                    assert resp.status == 200, await resp.text()
                    return dict(await resp.json())

            bodies = await asyncio.gather(*(one(i) for i in range(50)))
            async with http.get(f"{base}/healthz") as resp:
                health = await resp.json()
        assert all(len(body["urls"]) == 2 for body in bodies)
        assert fake.stats.jobs_created == 50
        assert fake.stats.peak_running == 8
        assert health["completed"] == 50 and health["in_flight"] == 0


INVALID = [
    (1, {"n": 9}, "n"),
    (1, {"n": "abc"}, "n"),
    (4, {}, "images"),
    (0, {}, "images"),
    (1, {"prompt": ""}, "prompt"),
    (1, {"size": "100*100"}, "size"),
    (1, {"seed": "x"}, "seed"),
    (1, {"job_timeout": -3}, "job_timeout"),
    (1, {"job_timeout": 10_000}, "job_timeout"),
]


async def test_invalid_input_is_422_naming_the_field(http: aiohttp.ClientSession) -> None:
    """Each bad form (n=9, n=abc, 4 files, no file, empty prompt, bad size or seed, a job
    timeout out of range) answers 422 with ``error.field`` naming the field on POST /edits
    and POST /jobs, as does a body that is not multipart and ``wait`` out of range; the
    provider never sees any of them."""
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake, job_timeout=60)) as base:
        for images, fields, field in INVALID:
            for path in ("/edits", "/jobs"):
                async with http.post(base + path, data=form(images, **fields)) as resp:
                    body = await resp.json()
                assert (resp.status, body["error"].get("field")) == (422, field), (fields, body)
        async with http.post(f"{base}/edits", json={"prompt": "x"}) as resp:
            assert (resp.status, (await resp.json())["error"]["field"]) == (422, "images")
        async with http.get(f"{base}/jobs/abc", params={"wait": 99}) as resp:
            assert (resp.status, (await resp.json())["error"]["field"]) == (422, "wait")
        assert fake.stats.creates == 0


async def test_provider_outage_and_job_failures_get_the_mapped_status(
    http: aiohttp.ClientSession,
) -> None:
    """A 5xx outage outlasting the retries is 502, a 429 storm 429 with the provider's
    ``Retry-After``, moderation 422, a job past its per-call deadline 504 with its task id."""
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake)) as base:
        fake.faults = Faults(server_error=1.0)
        async with http.post(f"{base}/jobs", data=form()) as resp:
            assert (resp.status, (await resp.json())["error"]["type"]) == (502, "ServerError")
        fake.faults = Faults(rate_limit=1.0, retry_after=4)
        async with http.post(f"{base}/edits", data=form()) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (429, "4")
        assert fake.stats.creates == 12  # the client retried 6 times each
        fake.faults = Faults()
        async with http.post(f"{base}/edits", data=form(prompt="[filter]")) as resp:
            kind = (await resp.json())["error"]["type"]
        assert (resp.status, kind) == (422, "ContentFilterError")
        async with http.post(f"{base}/edits", data=form(prompt="[stuck]", job_timeout=0.2)) as r:
            body = await r.json()
        assert r.status == 504 and body["error"]["task_id"] in fake.stats.jobs


async def test_a_refused_key_is_500_and_never_shown(http: aiohttp.ClientSession) -> None:
    """A key the provider refuses answers 500 without the key anywhere in the answer."""
    wrong = "sk-wrong-key-that-must-not-leak"
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake, api_key=wrong)) as base:
        async with http.post(f"{base}/edits", data=form()) as resp:
            text = await resp.text()
        assert resp.status == 500 and wrong not in text and wrong not in str(resp.headers)


async def test_submit_returns_at_once_and_a_fresh_app_attaches_by_id(
    http: aiohttp.ClientSession,
) -> None:
    """POST /jobs answers 202 with the task id while it runs; a *fresh* app instance (new
    client, new session) reports it succeeded by re-attaching to the id, without a second
    create; an unknown id is 404."""
    async with FakeProvider(api_key=KEY, latency=0.4) as fake:
        async with serve(app_for(fake)) as base:
            async with http.post(f"{base}/jobs", data=form(model="qwen-image-edit-max")) as resp:
                created = await resp.json()
            assert resp.status == 202 and created["status"] == "pending"
            assert resp.headers["Location"] == f"/jobs/{created['id']}"
        async with serve(app_for(fake)) as base:
            async with http.get(f"{base}/jobs/{created['id']}", params={"wait": 5}) as resp:
                attached = await resp.json()
            assert resp.status == 200 and attached["status"] == "succeeded", attached
            assert attached["result"]["urls"]
            async with http.get(f"{base}/jobs/nope", params={"wait": 2}) as resp:
                assert resp.status == 404
        assert fake.stats.jobs_created == 1
        assert [job.model for job in fake.stats.jobs.values()] == ["qwen_image_edit_max"]


async def test_shared_session_outlives_the_client_and_is_closed_by_the_app(
    http: aiohttp.ClientSession,
) -> None:
    """The client runs on the app's own ClientSession: when the client has closed (with a
    job still running) the session is still open, the app then closes it, and no 'Unclosed'
    ResourceWarning is left after a garbage collection."""
    seen: dict[str, Any] = {}

    async def probe(app: web.Application) -> AsyncIterator[None]:
        # Sits between the session and the client in cleanup_ctx, so it unwinds between them.
        yield
        client = app[aiohttp_app.CLIENT]
        with pytest.raises(RuntimeError, match="closed"):
            await client.attach("task-x")
        seen["session_open_after_client_closed"] = not app[aiohttp_app.SESSION].closed
        seen["session"] = app[aiohttp_app.SESSION]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeProvider(api_key=KEY) as fake:
            app = app_for(fake)
            app.cleanup_ctx.insert(1, probe)
            async with serve(app) as base:
                async with http.post(f"{base}/jobs", data=form(prompt="[stuck]")) as resp:
                    assert resp.status == 202
                async with http.post(f"{base}/edits", data=form()) as resp:
                    assert resp.status == 200
                # The client runs on the app's session (no public accessor: a library gap).
                shared = app[aiohttp_app.CLIENT]._calls.pipe.session is app[aiohttp_app.SESSION]
        gc.collect()
    assert shared is True
    assert seen["session_open_after_client_closed"] is True
    assert seen["session"].closed
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning) or "Unclosed" in str(w)]
    assert leaks == []


async def test_a_missing_key_stops_the_app_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no API key anywhere the client's cleanup_ctx raises ConfigurationError at
    startup (naming the variables to set), and the runner's cleanup still closes the shared
    session opened before it."""
    for name in ("QWEN_EDIT_API_KEY", "VTRIX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    app = aiohttp_app.create_app(Settings(provider="vtrix", base_url="http://127.0.0.1:9"))
    with pytest.raises(qe.ConfigurationError, match="QWEN_EDIT_API_KEY"):
        async with serve(app):
            pass
    assert app[aiohttp_app.SESSION].closed
