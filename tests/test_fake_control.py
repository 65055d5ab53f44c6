"""Stats, the /_fake/* control routes, the standalone server, fixtures and latency helpers."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _wait import until

import qwen_edit_async.testing as testing
from qwen_edit_async.testing import FakeProvider, FakeStats, Faults, Latency

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

AUTH = {"Authorization": "Bearer sk-any"}
EVOLINK = {"model": "qwen-image-edit-plus", "prompt": "p", "image_urls": ["https://e.com/a.png"]}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def create_task(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(url + "/v1/images/generations", json=EVOLINK) as resp:
        assert resp.status == 200
        task_id: str = (await resp.json())["id"]
        return task_id


async def poll(session: aiohttp.ClientSession, url: str, task_id: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/tasks/{task_id}") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


def test_public_names() -> None:
    """The package exports exactly the documented public names."""
    assert sorted(testing.__all__) == [
        "FakeClock",
        "FakeProvider",
        "FakeStats",
        "Faults",
        "HostileProvider",
        "Latency",
        "fake_in_thread",
        "fake_provider",
        "fake_provider_factory",
        "main",
        "png_bytes",
        "qwen_fake",
    ]
    for name in testing.__all__:
        assert getattr(testing, name) is not None


async def test_stats_count_creates_polls_downloads_and_detection_lag(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Counters follow the traffic; job records give completed_at <= first_seen_completed_at."""
    fake = await fake_provider_factory(latency=0.1)
    task_id = await create_task(session, fake.url)
    assert fake.stats.running == 1
    assert (await poll(session, fake.url, task_id))["status"] != "completed"
    await until(lambda: fake.stats.snapshot()["jobs"][0]["phase"] == "succeeded")  # no poll
    done = await poll(session, fake.url, task_id)
    assert done["status"] == "completed"
    await poll(session, fake.url, task_id)
    async with session.get(done["results"][0]) as resp:
        assert resp.status == 200
    snap = fake.stats.snapshot()
    assert snap["creates"] == 1 and snap["jobs_created"] == 1
    assert snap["polls"] == 3 and snap["polls_before_completion"] == 1
    assert snap["downloads"] == 1
    assert snap["running"] == 0 and snap["peak_running"] == 1
    (record,) = snap["jobs"]
    assert record["id"] == task_id and record["phase"] == "succeeded"
    assert record["polls"] == 3
    assert record["completed_at"] is not None
    lag = record["first_seen_completed_at"] - record["completed_at"]
    assert 0.0 <= lag < 1.0
    assert abs(record["completed_at"] - (record["created_at"] + 0.1)) < 1e-6
    assert isinstance(fake.stats, FakeStats) and "jobs_created=1" in repr(fake.stats)


async def test_control_routes_drive_a_fake_over_http(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """/_fake/faults, /_fake/script, /_fake/config, /_fake/stats and /_fake/reset all work."""
    url = fake_provider.url
    async with session.post(url + "/_fake/faults", json={"rate_limit": 1.0, "retry_after": 4}) as r:
        assert r.status == 200 and (await r.json())["retry_after"] == 4
    assert fake_provider.faults == Faults(rate_limit=1.0, retry_after=4)
    async with session.get(url + "/_fake/faults") as r:
        assert (await r.json())["rate_limit"] == 1.0
    async with session.post(url + "/_fake/faults", json={"rate_limt": 1.0}) as r:
        assert r.status == 400
    async with session.post(url + "/_fake/faults", json={"rate_limit": 2.0}) as r:
        assert r.status == 400
    async with session.post(
        url + "/_fake/script", json={"script": ["ok", "server_error:502"]}
    ) as r:
        assert (await r.json())["pending"] == ["ok", "server_error:502"]
    async with session.post(url + "/_fake/script", json=["nonsense"]) as r:
        assert r.status == 400
    await create_task(session, url)  # "ok" despite rate_limit=1.0
    async with session.post(url + "/v1/images/generations", json=EVOLINK) as r:
        assert r.status == 502
    async with session.post(url + "/v1/images/generations", json=EVOLINK) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "4"
    async with session.post(
        url + "/_fake/config",
        json={"latency": 0.5, "max_running": 3, "estimated_time": None, "url_lifetime": 60},
    ) as r:
        config = await r.json()
    assert config["max_running"] == 3 and config["estimated_time"] is None
    assert fake_provider.latency.typical == 0.5 and fake_provider.url_lifetime == 60
    async with session.post(url + "/_fake/config", json={"latency_lognormal": [0.2, 0.3]}) as r:
        assert (await r.json())["latency_typical"] == 0.2
    async with session.post(url + "/_fake/config", json={"bogus": 1}) as r:
        assert r.status == 400
    async with session.get(url + "/_fake/stats?jobs=0") as r:
        stats = await r.json()
    assert "jobs" not in stats
    assert (stats["creates"], stats["jobs_created"], stats["rate_limited"]) == (3, 1, 1)
    async with session.get(url + "/_fake/stats") as r:
        assert len((await r.json())["jobs"]) == 1
    async with session.post(url + "/_fake/reset") as r:
        assert r.status == 200
    assert fake_provider.stats.creates == 0 and fake_provider.stats.jobs == {}
    assert fake_provider.faults.rate_limit == 1.0  # reset keeps configuration


async def test_fixture_yields_a_started_fake(fake_provider: FakeProvider) -> None:
    """The fake_provider fixture is started and answers on its URL."""
    assert fake_provider.url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as s, s.get(fake_provider.url + "/_fake/stats") as r:
        assert r.status == 200


async def test_factory_fixture_builds_configured_fakes(fake_provider_factory: Any) -> None:
    """fake_provider_factory passes options through and gives distinct started fakes."""
    a = await fake_provider_factory(max_running=1, api_key="k")
    b = await fake_provider_factory()
    assert a.url != b.url
    assert a.max_running == 1 and a.api_key == "k"


async def test_latency_helpers_and_callables_set_each_job_duration(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """A callable latency is sampled per job with the fake's seeded generator."""
    draws = iter([0.05, 0.2, 0.35] * 20)
    fake = await fake_provider_factory(latency=lambda rng: next(draws))
    for _ in range(3):
        await create_task(session, fake.url)
    assert sorted(j.latency for j in fake.stats.jobs.values()) == [0.05, 0.2, 0.35]
    assert Latency.fixed(0.5)(random.Random(1)) == 0.5
    lognormal = Latency.lognormal(median=0.5, sigma=0.3)
    samples = sorted(lognormal(random.Random(i)) for i in range(201))
    assert 0.4 < samples[100] < 0.6 and samples[0] < samples[-1]
    assert all(0.1 <= Latency.uniform(0.1, 0.2)(random.Random(i)) <= 0.2 for i in range(20))
    with pytest.raises(ValueError):
        Latency.fixed(-1)
    with pytest.raises(TypeError):
        FakeProvider(latency="slow")  # type: ignore[arg-type]


async def test_estimated_time_auto_rounds_the_typical_latency() -> None:
    """estimated_time="auto" is the typical latency rounded to whole seconds."""
    assert FakeProvider(latency=Latency.lognormal(2.6, 0.3)).evolink_estimated_time == 3
    assert FakeProvider(latency=0.05).evolink_estimated_time == 0
    assert FakeProvider(estimated_time=12).evolink_estimated_time == 12
    assert FakeProvider(estimated_time=None).evolink_estimated_time is None


def test_url_before_start_is_an_error() -> None:
    """fake.url is only meaningful once the server is bound."""
    with pytest.raises(RuntimeError):
        _ = FakeProvider().url


async def test_standalone_server_prints_its_url_answers_and_stops_on_sigterm(
    session: aiohttp.ClientSession,
) -> None:
    """python -m qwen_edit_async.testing --port 0 prints 'serving on URL', serves, exits 0."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "qwen_edit_async.testing",
        "--port",
        "0",
        "--latency",
        "0.01",
        "--no-estimated-time",
        "--api-key",
        "sk-cli",
        "--max-running",
        "5",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=15)).decode()
        assert line.startswith("serving on http://127.0.0.1:")
        url = line.split("serving on ", 1)[1].strip()
        headers = {"Authorization": "Bearer sk-cli"}
        async with session.post(
            url + "/v1/images/generations", json=EVOLINK, headers=headers
        ) as resp:
            assert resp.status == 200
            task = await resp.json()
        assert "estimated_time" not in task["task_info"]
        async with session.get(url + "/_fake/config") as resp:
            assert (await resp.json())["max_running"] == 5
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_main_reports_a_port_in_use() -> None:
    """main() returns 1 with a message when it cannot bind."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        start = time.monotonic()
        assert testing.main(["--port", str(port)]) == 1
        assert time.monotonic() - start < 10


async def test_sync_job_records_and_reset_during_an_open_request(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Sync jobs record when they were answered; reset() keeps open requests counted."""
    fake = await fake_provider_factory(latency=0.2)
    body = {
        "model": "qwen-image-edit-plus",
        "input": {
            "messages": [
                {"role": "user", "content": [{"image": "https://e.com/a.png"}, {"text": "x"}]}
            ]
        },
    }
    path = fake.url + "/api/v1/services/aigc/multimodal-generation/generation"
    pending = asyncio.ensure_future(session.post(path, json=body))
    await until(lambda: fake.stats.running == 1)
    fake.reset()
    assert fake.stats.running == 1
    resp = await pending
    assert resp.status == 200
    resp.release()
    assert fake.stats.running == 0
    async with session.post(path, json=body) as resp:
        request_id = (await resp.json())["request_id"]
    record = fake.stats.snapshot()["jobs"][0]
    assert record["id"] == request_id and record["phase"] == "succeeded"
    assert record["completed_at"] == record["first_seen_completed_at"] is not None
    assert record["completed_at"] - record["created_at"] >= 0.19
