"""examples/fastapi_app.py served for real by uvicorn on 127.0.0.1, against the fake provider.

Every test drives the app over HTTP with an aiohttp client; none calls a handler directly.
Retry waits are zero (``conftest._no_retry_waits``), so outages fail fast.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
from _imagegen import make_image

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider, Faults

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import fastapi_app
from _backend import Settings

KEY = "sk-backend-test-0123456789"
PNG = make_image("png", 512, 512)
# Fast polling so that a 0.1 s fake job is seen finished within a few ms.
FAST = {"poll_initial": 0.02, "poll_max_interval": 0.05, "poll_jitter": 0.0}


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():  # startup failed: surface why
            await task
            raise RuntimeError("uvicorn exited during startup")
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def app_for(fake: FakeProvider, provider: str = "vtrix", **options: Any) -> Any:
    settings_keys = {"max_in_flight", "job_timeout", "api_key", "model"}
    settings = {k: options.pop(k) for k in list(options) if k in settings_keys}
    settings.setdefault("api_key", KEY)
    return fastapi_app.create_app(
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


@pytest.mark.parametrize("provider", ["vtrix", "dashscope"])
async def test_fifty_concurrent_edits_share_one_capped_client(
    provider: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 concurrent POST /edits all succeed through one client configured from QWEN_EDIT_*
    variables; the provider never runs more than QWEN_EDIT_MAX_IN_FLIGHT=8 jobs at once, and
    does reach 8 (the cap was exercised, not just unreached). Task and sync providers alike."""
    async with FakeProvider(api_key=KEY, latency=0.1) as fake:
        monkeypatch.setenv("QWEN_EDIT_PROVIDER", provider)
        monkeypatch.setenv("QWEN_EDIT_BASE_URL", fake.url)
        monkeypatch.setenv("QWEN_EDIT_API_KEY", KEY)
        monkeypatch.setenv("QWEN_EDIT_MAX_IN_FLIGHT", "8")
        async with serve(fastapi_app.create_app(**FAST)) as base:

            async def one(i: int) -> dict[str, Any]:
                async with http.post(f"{base}/edits", data=form(n=2, seed=i)) as resp:
                    assert resp.status == 200, await resp.text()
                    return dict(await resp.json())

            bodies = await asyncio.gather(*(one(i) for i in range(50)))
            async with http.get(f"{base}/healthz") as resp:
                health = await resp.json()
        assert all(len(body["urls"]) == 2 for body in bodies)
        assert all(url.startswith(fake.url) for body in bodies for url in body["urls"])
        assert fake.stats.jobs_created == 50
        assert fake.stats.peak_running == 8
        assert health["completed"] == 50 and health["in_flight"] == 0


INVALID = [
    (1, {"n": 9}, "n"),
    (1, {"n": "abc"}, "n"),
    (4, {}, "images"),
    (0, {}, "images"),
    (1, {"prompt": ""}, "prompt"),
    (1, {"prompt": "   "}, "prompt"),
    (1, {"size": "100*100"}, "size"),
    (1, {"seed": -1}, "seed"),
    (1, {"job_timeout": 0}, "job_timeout"),
    (1, {"job_timeout": 10_000}, "job_timeout"),
]


async def test_invalid_input_is_422_naming_the_field(http: aiohttp.ClientSession) -> None:
    """Each bad form (n=9, n=abc, 4 files, no file, empty or blank prompt, bad size or seed,
    a job timeout out of range) answers 422 with ``error.field`` naming the field and the
    message mentioning it, on POST /edits and POST /jobs; so do ``wait`` out of range and a
    body that is not multipart. None of them reaches the provider."""
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake, job_timeout=60)) as base:
        for images, fields, field in INVALID:
            for path in ("/edits", "/jobs"):
                async with http.post(base + path, data=form(images, **fields)) as resp:
                    body = await resp.json()
                assert (resp.status, body["error"].get("field")) == (422, field), (fields, body)
                assert field in body["error"]["message"]
        async with http.post(f"{base}/edits", json={"prompt": "x"}) as resp:
            assert (resp.status, (await resp.json())["error"]["field"]) == (422, "images")
        async with http.get(f"{base}/jobs/abc", params={"wait": 99}) as resp:
            assert (resp.status, (await resp.json())["error"]["field"]) == (422, "wait")
        assert fake.stats.creates == 0


OUTAGES = [
    (Faults(server_error=1.0, server_status=503), 502, "ServerError"),
    (Faults(drop_before_accept=1.0), 502, "TransportError"),
    (Faults(drop_after_accept=1.0), 502, "SubmitUncertainError"),
    (Faults(rate_limit=1.0, retry_after=7), 429, "RateLimitError"),
]


async def test_provider_outage_gets_the_mapped_status(http: aiohttp.ClientSession) -> None:
    """An outage that outlasts the client's retries answers the mapped status on POST /edits
    and POST /jobs: 5xx and refused connections 502 after 6 attempts each; a create dropped
    after it was accepted 502 as SubmitUncertainError after 1 attempt (never resent: it may
    be billed); a 429 storm 429 with the provider's ``Retry-After`` after 6 attempts."""
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake)) as base:
        for faults, status, kind in OUTAGES:
            fake.faults = faults
            fake.reset()
            for path in ("/edits", "/jobs"):
                async with http.post(base + path, data=form()) as resp:
                    body = await resp.json()
                assert (resp.status, body["error"]["type"]) == (status, kind), body
                if status == 429:
                    assert resp.headers["Retry-After"] == "7"
                    assert body["error"]["retry_after"] == 7
                else:
                    assert "Retry-After" not in resp.headers
            assert fake.stats.creates == (2 if kind == "SubmitUncertainError" else 12), kind


async def test_failures_inside_the_job_are_mapped(http: aiohttp.ClientSession) -> None:
    """Moderation is 422, a failed task 502, a job past its (per-call) deadline 504 carrying
    the task id and a status URL that re-attaches to the task, and an unknown model (refused
    by the provider) 422."""
    async with FakeProvider(api_key=KEY, latency=0.05) as fake, serve(app_for(fake)) as base:
        cases = [
            ({"prompt": "[filter] a hat"}, 422, "ContentFilterError"),
            ({"prompt": "[fail] a hat"}, 502, "JobFailedError"),
            ({"prompt": "[stuck] a hat", "job_timeout": 0.3}, 504, "JobTimeoutError"),
            ({"model": "no-such-model"}, 422, "BadRequestError"),
        ]
        for fields, status, kind in cases:
            async with http.post(f"{base}/edits", data=form(**fields)) as resp:
                body = await resp.json()
            assert (resp.status, body["error"]["type"]) == (status, kind), body
            if kind == "JobTimeoutError":
                task_id = body["error"]["task_id"]
                assert fake.stats.jobs[task_id].outcome == "stuck"
                assert body["error"]["status_url"] == f"/jobs/{task_id}"
                # The task may still finish: its status URL re-attaches to it.
                async with http.get(base + body["error"]["status_url"]) as resp:
                    assert (resp.status, (await resp.json())["status"]) == (200, "pending")


async def test_per_call_model_override_uses_the_same_client(http: aiohttp.ClientSession) -> None:
    """``model`` in the form reaches the provider for that call only; the next call uses the
    app's default model (one client, no second one built)."""
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake)) as base:
        for fields in ({"model": "qwen-image-edit-max"}, {}):
            async with http.post(f"{base}/edits", data=form(**fields)) as resp:
                assert resp.status == 200, await resp.text()
        models = [job.model for job in fake.stats.jobs.values()]
    assert models == ["qwen_image_edit_max", "qwen_image_edit_plus"]  # Vtrix ids


async def test_a_refused_key_is_500_and_never_shown(http: aiohttp.ClientSession) -> None:
    """A key the provider refuses is our misconfiguration: 500, and neither the body nor the
    headers contain the key."""
    wrong = "sk-wrong-key-that-must-not-leak"
    async with FakeProvider(api_key=KEY) as fake, serve(app_for(fake, api_key=wrong)) as base:
        for path in ("/edits", "/jobs"):
            async with http.post(base + path, data=form()) as resp:
                text = await resp.text()
                assert resp.status == 500
                assert wrong not in text and wrong not in str(resp.headers)
                assert "AuthenticationError" in text


async def test_submit_returns_at_once_and_a_fresh_app_attaches_by_id(
    http: aiohttp.ClientSession,
) -> None:
    """POST /jobs answers 202 with the task id while the task still runs; GET /jobs/{id}
    reports it pending, then succeeded with its URLs. A job left running when the app stops
    is found by a *fresh* app instance (new client) by id alone, by re-attaching, without a
    second create. An id nobody knows is 404."""
    async with FakeProvider(api_key=KEY, latency=0.5) as fake:
        async with serve(app_for(fake)) as base:
            async with http.post(f"{base}/jobs", data=form(n=2)) as resp:
                assert resp.status == 202
                created = await resp.json()
                assert resp.headers["Location"] == f"/jobs/{created['id']}"
            assert created["status"] == "pending" and created["id"] == created["task_id"]
            async with http.get(f"{base}/jobs/{created['id']}") as resp:
                assert (await resp.json())["status"] == "pending"
            async with http.get(f"{base}/jobs/{created['id']}", params={"wait": 5}) as resp:
                done = await resp.json()
            assert done["status"] == "succeeded" and len(done["result"]["urls"]) == 2

            async with http.post(f"{base}/jobs", data=form()) as resp:
                orphan = (await resp.json())["id"]
        # The first app is gone; its client cancelled the local job, not the provider's task.
        async with serve(app_for(fake)) as base:
            async with http.get(f"{base}/jobs/{orphan}", params={"wait": 5}) as resp:
                attached = await resp.json()
            assert resp.status == 200 and attached["status"] == "succeeded"
            assert attached["result"]["task_id"] == orphan
            async with http.get(f"{base}/jobs/task-does-not-exist", params={"wait": 2}) as resp:
                assert resp.status == 404
        assert fake.stats.jobs_created == 2


async def test_shutdown_with_work_in_flight_leaves_no_resource_warnings(
    http: aiohttp.ClientSession,
) -> None:
    """Stopping the app while a job is still running closes everything it opened: no
    'Unclosed' ResourceWarning after a garbage collection, and the provider's task remains
    (its id still works on a fresh app)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with FakeProvider(api_key=KEY, latency=0.05) as fake, serve(app_for(fake)) as base:
            async with http.post(f"{base}/jobs", data=form(prompt="[stuck]")) as resp:
                assert resp.status == 202
            async with http.post(f"{base}/edits", data=form()) as resp:
                assert resp.status == 200
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning) or "Unclosed" in str(w)]
    assert leaks == []


async def test_a_missing_key_stops_the_app_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no API key anywhere the lifespan raises ConfigurationError: the app refuses to
    start instead of answering 500 to every request."""
    for name in ("QWEN_EDIT_API_KEY", "VTRIX_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    app = fastapi_app.create_app(Settings(provider="vtrix", base_url="http://127.0.0.1:9"))
    # The lifespan itself (uvicorn would log the error and exit with status 3).
    with pytest.raises(qe.ConfigurationError, match="QWEN_EDIT_API_KEY or VTRIX_API_KEY"):
        async with app.router.lifespan_context(app):
            pass
