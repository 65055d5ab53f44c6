"""Completion callbacks: the receiver, the client's use of it, polling as the safety net.

Every test runs the fake provider and the receiver as real aiohttp servers on loopback: the
fake POSTs each ended task to the job's own callback URL, as Evolink documents it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from aiohttp.test_utils import unused_port
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._safety import SafetyNet
from qwen_edit_async.testing import FakeProvider, Faults

URL = "https://example.com/a.png"


@asynccontextmanager
async def receiving(path: str = "/qe", **options: Any) -> AsyncIterator[qe.CallbackReceiver]:
    """A receiver served standalone on a free loopback port."""
    port = unused_port()
    receiver = qe.CallbackReceiver(f"http://127.0.0.1:{port}{path}", **options)
    async with receiver.listen("127.0.0.1", port):
        yield receiver


def client_for(fake: FakeProvider, receiver: qe.CallbackReceiver | None, **options: Any) -> Any:
    return qe.QwenEditClient(
        "evolink", api_key=API_KEY, base_url=fake.url, callbacks=receiver, **options
    )


async def post(url: str, body: bytes, method: str = "POST") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers={"Content-Type": "application/json"}) as r,
    ):
        await r.read()
        return r.status


def records(fake: FakeProvider) -> dict[str, dict[str, Any]]:
    return {job["id"]: job for job in fake.stats.snapshot()["jobs"]}


async def test_callbacks_complete_jobs_without_a_status_request(fake: FakeProvider) -> None:
    """Each create carries its own callback URL under public_url; every job ends by its
    callback, before the (late) safety poll: no status request at all."""
    async with receiving() as receiver, client_for(fake, receiver, poll_initial=5.0) as client:
        requests = [qe.EditRequest(images=[URL], prompt=f"edit {i}") for i in range(20)]
        outcomes = [o async for o in client.edit_many(requests)]
        stats = client.statistics()
    assert all(o.ok for o in outcomes)
    urls = [job["callback_url"] for job in records(fake).values()]
    assert len(set(urls)) == 20
    assert all(u.startswith(receiver.public_url + "/") for u in urls)
    assert (stats.completed_by_callback, stats.completed_by_poll) == (20, 0)
    assert stats.status_requests == 0 and fake.stats.polls == 0
    assert fake.stats.callbacks_delivered == 20
    assert receiver.statistics().completed == 20 and receiver.statistics().active == 0


@pytest.mark.parametrize("prompt", ["Make it blue", "Make it blue [fail:generation_timeout]"])
async def test_a_callback_gives_what_polling_gives(fake: FakeProvider, prompt: str) -> None:
    """The same task read from its callback and from a status request: the same EditResult
    (but the request id of the answer it came in), or the same error."""
    # max_resubmits=0: the transient failure is the job's end, as attach sees it.
    async with (
        receiving() as receiver,
        client_for(fake, receiver, poll_initial=5.0, max_resubmits=0) as client,
    ):
        job = await client.submit(qe.EditRequest(images=[URL], prompt=prompt))
        await job.wait_done()
        assert client.statistics().completed_by_callback == 1
    async with client_for(fake, None) as polling:
        again = await polling.attach(job.id)
        await again.wait_done()
        assert polling.statistics().completed_by_poll == 1
    error, polled_error = job.exception(), again.exception()
    if error is None:
        got, polled = await job.result(), await again.result()
        assert got.request_id and polled.request_id
        got.request_id = polled.request_id = None
        assert got == polled
        assert got.task_id == job.id and got.urls
    else:
        assert type(error) is type(polled_error) is qe.JobFailedError
        assert polled_error is not None
        assert (error.code, error.message, error.task_id) == (
            polled_error.code,
            polled_error.message,
            polled_error.task_id,
        )


async def test_lost_callbacks_cost_time_not_the_job(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """With every callback dropped, the safety polls (capped by poll_max_interval) end
    every job; statistics say they were found by polling, and a warning (once) says that
    no callback arrives."""
    fake.faults = Faults(callback_drop=1.0)
    options = {"poll_initial": 5.0, "poll_max_interval": 0.2}
    async with receiving() as receiver, client_for(fake, receiver, **options) as client:
        requests = [qe.EditRequest(images=[URL], prompt=f"edit {i}") for i in range(24)]
        outcomes = [o async for o in client.edit_many(requests)]
        stats = client.statistics()
    assert all(o.ok for o in outcomes)
    assert (stats.completed_by_callback, stats.completed_by_poll) == (0, 24)
    assert fake.stats.callbacks_dropped == 24 and fake.stats.callbacks_sent == 0
    warnings = [r for r in caplog.records if "no callback has arrived" in r.getMessage()]
    assert len(warnings) == 1 and receiver.public_url in warnings[0].getMessage()


async def test_duplicate_delayed_and_reordered_callbacks_end_each_job_once(
    fake: FakeProvider,
) -> None:
    """Every callback delivered twice, some held back, all late: each job ends once, with
    its own task; every second delivery finds its token used (410) and changes nothing."""
    fake.faults = Faults(
        callback_duplicate=1.0, callback_out_of_order=0.5, callback_delay=0.02, callback_retries=0
    )
    async with receiving() as receiver, client_for(fake, receiver, poll_initial=5.0) as client:
        jobs = [
            await client.submit(qe.EditRequest(images=[URL], prompt=f"e{i}")) for i in range(12)
        ]
        for job in jobs:
            await job.wait_done()
        with anyio.fail_after(5):
            while fake.stats.callbacks_sent < 24:
                await anyio.sleep(0.01)
        stats = client.statistics()
    results = [await job.result() for job in jobs]
    assert [r.task_id for r in results] == [j.id for j in jobs]
    assert stats.completed == 12 and stats.completed_by_callback == 12
    assert fake.stats.callbacks_delivered == 12
    assert fake.stats.callbacks_refused == 12
    assert receiver.statistics().refused == 12


async def test_refusals_change_no_job(fake: FakeProvider) -> None:
    """Unknown token, wrong secret, another task's body, a malformed, a non-task or an
    oversized body, a GET: 4xx each, and the job they aimed at is still waiting."""
    fake.faults = Faults(callback_drop=1.0)  # only the test's own POSTs arrive
    async with receiving(max_body=4096) as receiver, client_for(fake, receiver) as client:
        job = await client.submit(qe.EditRequest(images=[URL], prompt="[stuck]"))
        own = records(fake)[job.id]["callback_url"]
        token = own.rsplit("/", 1)[1]
        other = token[:11] + secrets.token_urlsafe(24)
        base = receiver.public_url
        finished = msgspec.json.encode(
            {"id": job.id, "status": "completed", "progress": 100, "results": [URL]}
        )
        for_another = finished.replace(job.id.encode(), b"task-unified-0-other")
        cases = [
            (f"{base}/{secrets.token_urlsafe(32)}", finished, 404),  # unknown token
            (f"{base}/{other}", finished, 404),  # right key, wrong secret
            (f"{base}/short", finished, 404),
            (own, for_another, 409),
            (own, b"{not json", 400),
            (own, b"[1, 2]", 400),
            (own, b'{"id": "%s"}' % job.id.encode(), 400),  # no status
            (
                own,
                b'{"id": "%s", "status": "completed", "x": "%s"}' % (job.id.encode(), b"a" * 5000),
                413,
            ),
        ]
        for url, body, expected in cases:
            assert await post(url, body) == expected, (url[-20:], body[:40])
        assert await post(own, finished, method="GET") == 405
        assert not job.done()
        # A running status is answered 2xx and ignored; the real end is then taken once.
        running = finished.replace(b'"completed"', b'"processing"')
        assert await post(own, running) == 202
        assert not job.done()
        assert await post(own, finished) == 200
        result = await job.result()
        assert result.task_id == job.id and result.urls == [URL]
        assert await post(own, finished) == 410  # the token is used
    assert receiver.statistics().refused == 9  # the GET is refused by the router


async def test_a_callback_before_the_create_answer_is_held_and_checked(
    fake: FakeProvider,
) -> None:
    """A callback that beats the create's answer (latency 0) is held, then applied once the
    task id is known: the job ends by callback, nothing polled."""
    fake.latency = 0.0
    async with receiving() as receiver, client_for(fake, receiver, poll_initial=5.0) as client:
        outcomes = [
            o
            async for o in client.edit_many(
                qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(30)
            )
        ]
        stats = client.statistics()
    assert all(o.ok for o in outcomes)
    assert stats.completed_by_callback == 30 and stats.status_requests == 0
    assert receiver.statistics().completed == 30


async def test_a_held_callback_for_another_task_is_refused_at_binding() -> None:
    """Held before the task id is known, a body naming another task never completes the
    job: it is dropped once the id is known."""
    receiver = qe.CallbackReceiver("https://hooks.example.com/qe")
    provider = qe.providers.get_provider("evolink")
    ticket = receiver._issue(provider)
    token = ticket.url.rsplit("/", 1)[1]
    body = msgspec.json.encode({"id": "task-b", "status": "completed", "results": [URL]})
    assert receiver.receive(token, {}, body) == (202, "held until the task is accepted")
    ticket.bind("task-a")
    delivered: list[Any] = []
    ticket.connect(lambda status: delivered.append(status) or True)
    assert delivered == []
    assert ticket.early is None


async def test_flood_of_forged_duplicate_and_late_callbacks(fake: FakeProvider) -> None:
    """During a run with lost and doubled callbacks, the receiver is flooded with forged
    tokens, other tasks' bodies sent to live tokens, and late replays of real callbacks:
    every job ends with its own task's result, none is lost, nothing forged is accepted."""
    fake.latency = 0.05
    fake.faults = Faults(callback_drop=0.3, callback_duplicate=0.3, callback_retries=0)
    options = {"poll_initial": 0.3, "poll_max_interval": 0.3, "max_in_flight": 20}
    answers: dict[str, list[int]] = {"forged": [], "other task": [], "replay": []}
    async with (
        receiving() as receiver,
        client_for(fake, receiver, **options) as client,
        aiohttp.ClientSession() as http,
    ):

        async def flood() -> None:
            rounds = 0
            while True:
                now = time.monotonic()
                jobs = [j for j in fake.stats.jobs.values() if j.callback_url]
                ended = [j for j in jobs if j.phase(now) == "succeeded"]
                forged = msgspec.json.encode(
                    {"id": "task-forged", "status": "completed", "results": [URL]}
                )
                shots = [("forged", f"{receiver.public_url}/{secrets.token_urlsafe(32)}", forged)]
                for job in jobs[-10:]:
                    assert job.callback_url is not None
                    if ended:
                        donor = ended[rounds % len(ended)]
                        body = fake.callbacks._body(donor, now)
                        if donor.id != job.id:
                            shots.append(
                                ("other task", job.callback_url, msgspec.json.encode(body))
                            )
                    if job in ended:
                        real = msgspec.json.encode(fake.callbacks._body(job, now))
                        shots.append(("replay", job.callback_url, real))
                for kind, url, body in shots:
                    async with http.post(url, data=body) as resp:
                        answers[kind].append(resp.status)
                rounds += 1
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as group:
            group.start_soon(flood)
            requests = [qe.EditRequest(images=[URL], prompt=f"edit {i}") for i in range(120)]
            outcomes = [o async for o in client.edit_many(requests)]
            group.cancel_scope.cancel()
        stats = client.statistics()
    assert len(outcomes) == 120
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    task_ids = set()
    for outcome in outcomes:
        result = outcome.result
        assert result is not None and result.task_id is not None
        task_ids.add(result.task_id)
        assert all(f"/{result.task_id}_" in url for url in result.urls)
    assert len(task_ids) == 120 and task_ids <= set(records(fake))
    assert stats.completed_by_callback + stats.completed_by_poll == 120
    assert stats.completed_by_poll >= 1  # some callbacks were lost
    assert set(answers["forged"]) == {404}
    assert set(answers["other task"]) <= {409, 410} and len(answers["other task"]) > 20
    assert set(answers["replay"]) <= {200, 410} and 410 in answers["replay"]


def test_callbacks_on_a_provider_that_does_not_call_back_are_refused() -> None:
    """Only Evolink calls back: any other provider refuses callbacks= when built."""
    receiver = qe.CallbackReceiver("https://hooks.example.com/qe")
    for provider in ("vtrix", "dashscope", "modelstream"):
        with pytest.raises(qe.ConfigurationError, match="does not call back"):
            qe.QwenEditClient(provider, api_key="k", callbacks=receiver)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://hooks.example.com/qe", "https"),
        ("ftp://hooks.example.com/qe", "https"),
        ("https://hooks.example.com/qe?x=1", "query"),
        ("https://hooks.example.com/" + "a" * 2000, "at most"),
    ],
)
def test_public_url_is_checked(url: str, rule: str) -> None:
    """The public URL must be https (http on loopback only), without query, and leave room
    for the token within Evolink's 2048 characters."""
    with pytest.raises(qe.ConfigurationError, match=rule) as info:
        qe.CallbackReceiver(url)
    assert "public_url" in str(info.value)


def test_safety_net_learns_from_callbacks_and_is_capped() -> None:
    """Before 32 callbacks: 2 x the hint (or poll_initial), capped; then 1.3 x the 95th
    percentile of callback latencies, capped at max_interval."""
    net = SafetyNet(initial=1.0, max_interval=10.0)
    assert net.plan(None).first == 2.0
    assert net.plan(30.0).first == 10.0
    for _ in range(64):
        net.observe_callback(1.0)
    assert net.plan(None).first == pytest.approx(1.3)
    for _ in range(32):  # the tail grows past the cap
        net.observe_callback(20.0)
    assert net.plan(None).first == 10.0
    plan = net.plan(None)
    assert plan.at(1) > plan.at(0) and plan.at(5) - plan.at(4) <= 10.0
