"""Fault injection: scripted and probabilistic faults, in every dialect's own shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from _wait import until

from qwen_edit_async import testing
from qwen_edit_async.testing import FakeProvider, Faults

fake_provider = testing.fake_provider
fake_provider_factory = testing.fake_provider_factory

AUTH = {"Authorization": "Bearer sk-any"}
IMAGE = "https://example.com/a.png"


def nested(model: str = "qwen-image-edit-plus", text: str = "make it blue") -> dict[str, Any]:
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": [{"image": IMAGE}, {"text": text}]}]},
    }


def request_for(dialect: str, text: str = "make it blue") -> tuple[str, dict[str, Any]]:
    if dialect == "dashscope":
        return "/api/v1/services/aigc/multimodal-generation/generation", nested(text=text)
    if dialect == "modelstream":
        return "/v1/images/generations", nested(text=text)
    if dialect == "onetoken":
        return "/v1/images/edits", nested(text=text)
    if dialect == "evolink":
        return "/v1/images/generations", {
            "model": "qwen-image-edit-plus",
            "prompt": text,
            "image_urls": [IMAGE],
        }
    return "/model/v1/generation", nested(model="qwen_image_edit_plus", text=text)


DIALECTS = ["dashscope", "modelstream", "onetoken", "evolink", "vtrix"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as s:
        yield s


async def send(
    session: aiohttp.ClientSession, fake: FakeProvider, dialect: str, text: str = "make it blue"
) -> tuple[int, Any, dict[str, str]]:
    path, payload = request_for(dialect, text)
    async with session.post(fake.url + path, json=payload) as resp:
        raw = await resp.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        return resp.status, body, dict(resp.headers)


def error_code(dialect: str, body: Any) -> Any:
    if dialect == "dashscope":
        return body["code"]
    if dialect == "vtrix":
        return None
    return body["error"]["code"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_rate_limit_is_429_with_retry_after(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """A scripted rate_limit answers 429 with a Retry-After header, in the dialect's shape."""
    fake_provider.script("rate_limit:3", "ok")
    status, body, headers = await send(session, fake_provider, dialect)
    assert status == 429
    assert headers["Retry-After"] == "3"
    expected: dict[str, str | None] = {
        "dashscope": "Throttling",
        "evolink": "rate_limit_exceeded",
        "modelstream": "rate_limit_exceeded",
        "onetoken": "rate_limit_exceeded",
        "vtrix": None,
    }
    assert error_code(dialect, body) == expected[dialect]
    if dialect == "vtrix":
        assert body["message"]
    assert fake_provider.stats.rate_limited == 1
    assert fake_provider.stats.jobs_created == 0
    status, _, _ = await send(session, fake_provider, dialect)
    assert status == 200
    assert fake_provider.stats.jobs_created == 1


async def test_rate_limit_probability_uses_faults_retry_after(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Faults(rate_limit=1.0, retry_after=7) refuses every create with Retry-After: 7."""
    fake = await fake_provider_factory(faults=Faults(rate_limit=1.0, retry_after=7))
    for _ in range(3):
        status, _, headers = await send(session, fake, "evolink")
        assert status == 429 and headers["Retry-After"] == "7"
    assert fake.stats.rate_limited == 3


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("server_status", [500, 502, 503])
async def test_server_errors_in_each_dialect_shape(
    fake_provider: FakeProvider,
    session: aiohttp.ClientSession,
    dialect: str,
    server_status: int,
) -> None:
    """server_error:<status> answers that 5xx with the dialect's error body; no job."""
    fake_provider.script(f"server_error:{server_status}")
    status, body, _ = await send(session, fake_provider, dialect)
    assert status == server_status
    if dialect == "dashscope":
        assert body["code"].startswith("InternalError") and body["request_id"]
    elif dialect == "vtrix":
        assert body["error"]
    else:
        assert body["error"]["message"] and body["error"]["code"]
    assert fake_provider.stats.server_errors == 1
    assert fake_provider.stats.jobs_created == 0


async def test_default_server_status_comes_from_faults(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Faults(server_error=1.0, server_status=503) answers 503 Evolink service_unavailable."""
    fake = await fake_provider_factory(faults=Faults(server_error=1.0, server_status=503))
    status, body, _ = await send(session, fake, "evolink")
    assert status == 503
    assert body["error"]["code"] == "service_unavailable"


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_drop_before_accept_disconnects_without_creating(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """drop_before_accept closes the connection: the client sees a disconnect, nothing billed."""
    fake_provider.script("drop_before_accept")
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await send(session, fake_provider, dialect)
    assert fake_provider.stats.creates == 1
    assert fake_provider.stats.jobs_created == 0
    assert fake_provider.stats.dropped == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_drop_after_accept_bills_a_job_the_client_never_hears_of(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """drop_after_accept creates (and bills) the job, then disconnects with no answer."""
    fake_provider.script("drop_after_accept")
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await send(session, fake_provider, dialect)
    assert fake_provider.stats.jobs_created == 1
    (job,) = fake_provider.stats.jobs.values()
    assert job.dialect == dialect
    # The fake keeps serving afterwards.
    status, _, _ = await send(session, fake_provider, dialect)
    assert status == 200


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_malformed_answers_200_with_invalid_json(
    fake_provider: FakeProvider, session: aiohttp.ClientSession, dialect: str
) -> None:
    """malformed answers 200 whose body does not parse as JSON; the job exists."""
    fake_provider.script("malformed")
    status, body, headers = await send(session, fake_provider, dialect)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, bytes)
    with pytest.raises(ValueError):
        json.loads(body)
    assert fake_provider.stats.jobs_created == 1
    assert fake_provider.stats.malformed == 1


@pytest.mark.parametrize(
    ("word", "status", "code"),
    [("content_filter", 400, "DataInspectionFailed"), ("quota", 400, "Arrearage")],
)
async def test_sync_refusals_at_submission_are_not_billed(
    fake_provider: FakeProvider,
    session: aiohttp.ClientSession,
    word: str,
    status: int,
    code: str,
) -> None:
    """DashScope refuses moderated input and empty accounts at submission, creating nothing."""
    fake_provider.script(word)
    got, body, _ = await send(session, fake_provider, "dashscope")
    assert (got, body["code"]) == (status, code)
    assert fake_provider.stats.jobs_created == 0


async def test_sync_failed_generation_is_an_error_after_the_latency(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """fail on a sync dialect answers 500 InternalError.Algo (or fail_code) after latency."""
    fake = await fake_provider_factory(latency=0.1, faults=Faults(fail_task=1.0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, body, _ = await send(session, fake, "dashscope")
    assert loop.time() - start >= 0.09
    assert (status, body["code"]) == (500, "InternalError.Algo")
    assert fake.stats.jobs_created == 1
    fake.script("fail:InternalError.Timeout")
    status, body, _ = await send(session, fake, "modelstream")
    assert body["error"]["code"] == "InternalError.Timeout"


async def test_fail_code_from_faults_reaches_evolink_task(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Faults(fail_task=1, fail_code=...) makes Evolink tasks fail with that code."""
    fake = await fake_provider_factory(faults=Faults(fail_task=1.0, fail_code="service_error"))
    _, task, _ = await send(session, fake, "evolink")
    await until(lambda: fake.stats.jobs[task["id"]].completed_at is not None)
    async with session.get(f"{fake.url}/v1/tasks/{task['id']}") as resp:
        done = await resp.json()
    assert done["status"] == "failed" and done["error"]["code"] == "service_error"


@pytest.mark.parametrize("dialect", ["evolink", "vtrix"])
async def test_stuck_task_never_completes(
    fake_provider_factory: Any, session: aiohttp.ClientSession, dialect: str
) -> None:
    """A stuck task keeps reporting it is processing after a task sent with it has ended."""
    fake = await fake_provider_factory(latency=0.02)
    fake.script("stuck", "ok")
    _, task, _ = await send(session, fake, dialect)
    _, other, _ = await send(session, fake, dialect)
    await until(lambda: fake.stats.jobs[other["id"]].completed_at is not None)
    path = "/v1/tasks/" if dialect == "evolink" else "/model/v1/generation/task/"
    async with session.get(fake.url + path + task["id"]) as resp:
        polled = await resp.json()
    assert polled["status"] == ("processing" if dialect == "evolink" else "in_progress")
    limit = 100 if dialect == "evolink" else 1.0
    assert polled["progress"] < limit
    assert fake.stats.running == 1
    assert fake.stats.jobs[task["id"]].completed_at is None


async def test_stuck_sync_request_is_held_until_the_client_gives_up(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """A stuck sync request never answers; when the client leaves, it stops running."""
    fake_provider.script("stuck")
    path, payload = request_for("dashscope")
    with pytest.raises(asyncio.TimeoutError):
        await session.post(
            fake_provider.url + path, json=payload, timeout=aiohttp.ClientTimeout(total=0.3)
        )
    assert fake_provider.stats.jobs_created == 1
    await until(lambda: fake_provider.stats.running == 0)


async def test_close_does_not_wait_for_a_stuck_sync_request(
    session: aiohttp.ClientSession,
) -> None:
    """Closing the fake drops held requests promptly instead of waiting for them."""
    fake = await FakeProvider(latency=0.01).start()
    fake.script("stuck")
    path, payload = request_for("dashscope")
    pending = asyncio.ensure_future(session.post(fake.url + path, json=payload))
    await until(lambda: fake.stats.running == 1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await fake.close()
    assert loop.time() - start < 1.5
    with pytest.raises(aiohttp.ClientError):
        await pending


@pytest.mark.parametrize("dialect", ["evolink", "vtrix"])
async def test_max_running_refuses_creates_over_the_quota(
    fake_provider_factory: Any, session: aiohttp.ClientSession, dialect: str
) -> None:
    """With max_running=2, a third task while two run gets 429; after they finish, it works."""
    fake = await fake_provider_factory(latency=0.3, max_running=2)
    assert (await send(session, fake, dialect))[0] == 200
    assert (await send(session, fake, dialect))[0] == 200
    status, body, _ = await send(session, fake, dialect)
    assert status == 429
    if dialect == "evolink":
        assert body["error"]["code"] == "rate_limit_exceeded"
    assert fake.stats.rate_limited == 1
    await until(lambda: fake.stats.running == 0)
    assert (await send(session, fake, dialect))[0] == 200
    assert fake.stats.peak_running == 2
    assert fake.stats.jobs_created == 3


async def test_max_running_counts_open_sync_requests(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Sync requests in flight count against max_running: the third concurrent one is 429."""
    fake = await fake_provider_factory(latency=0.3, max_running=2)
    first = [asyncio.ensure_future(send(session, fake, "dashscope")) for _ in range(2)]
    await until(lambda: fake.stats.running == 2)
    status, body, _ = await send(session, fake, "dashscope")
    assert (status, body["code"]) == (429, "Throttling.RateQuota")
    assert [r[0] for r in await asyncio.gather(*first)] == [200, 200]
    assert fake.stats.peak_running == 2


async def test_script_runs_before_probabilities(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Scripted words are used first; then the Faults probabilities apply."""
    fake = await fake_provider_factory(faults=Faults(server_error=1.0))
    fake.script("ok", "rate_limit")
    assert fake.pending_script == ["ok", "rate_limit"]
    assert (await send(session, fake, "vtrix"))[0] == 200
    assert (await send(session, fake, "vtrix"))[0] == 429
    assert (await send(session, fake, "vtrix"))[0] == 500
    assert fake.pending_script == []


async def test_faults_can_be_replaced_at_runtime(
    fake_provider: FakeProvider, session: aiohttp.ClientSession
) -> None:
    """Assigning fake.faults changes behaviour for the next create."""
    fake_provider.faults = Faults(rate_limit=1.0)
    assert (await send(session, fake_provider, "onetoken"))[0] == 429
    fake_provider.faults = Faults()
    assert (await send(session, fake_provider, "onetoken"))[0] == 200


async def test_probabilities_are_seeded_and_deterministic(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Two fakes with the same seed and faults give the same sequence of outcomes."""
    faults = Faults(rate_limit=0.3, server_error=0.2)
    outcomes = []
    for _ in range(2):
        fake = await fake_provider_factory(seed=42, faults=faults)
        outcomes.append([(await send(session, fake, "vtrix"))[0] for _ in range(30)])
    assert outcomes[0] == outcomes[1]
    assert {200, 429, 500} <= set(outcomes[0])


async def test_poll_error_answers_503_on_status_requests(
    fake_provider_factory: Any, session: aiohttp.ClientSession
) -> None:
    """Faults(poll_error=1.0) fails polls with 503 while creates still work."""
    fake = await fake_provider_factory(faults=Faults(poll_error=1.0))
    status, task, _ = await send(session, fake, "evolink")
    assert status == 200
    async with session.get(f"{fake.url}/v1/tasks/{task['id']}") as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "service_unavailable"


def test_faults_and_script_words_are_validated() -> None:
    """Probabilities outside [0, 1], non-5xx statuses and unknown words are refused."""
    with pytest.raises(ValueError):
        Faults(rate_limit=1.5)
    with pytest.raises(ValueError):
        Faults(server_status=404)
    fake = FakeProvider()
    with pytest.raises(ValueError):
        fake.script("explode")
    with pytest.raises(ValueError):
        fake.script("server_error:404")
    with pytest.raises(ValueError):
        fake.script("rate_limit:soon")
    fake.script("filter", "fail_task", "fail:x")
    assert fake.pending_script == ["content_filter", "fail", "fail:x"]
