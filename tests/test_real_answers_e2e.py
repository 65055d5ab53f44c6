"""Real gateways' and providers' answers through the whole client, against the fake
provider's modes for them (and a small aiohttp server on loopback for answers the fake
does not give): relays, DashScope's refusals, Vtrix's balance error and typed items,
Evolink's late results, transient task failures resubmitted, and verdicts in 200 answers."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import imagesize
import pytest
from aiohttp import web
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider, Faults

URL = "https://example.com/a.png"


def client_for(fake_url: str, provider: str, **options: Any) -> qe.QwenEditClient:
    options.setdefault("poll_initial", 0.05)
    options.setdefault("poll_max_interval", 0.1)
    return qe.QwenEditClient(provider, api_key=API_KEY, base_url=fake_url, **options)


# -- 1, 2. a relay in front of DashScope ----------------------------------------------------


@pytest.mark.parametrize("provider", ["modelstream", "onetoken"])
async def test_relay_n2_edit_yields_both_images_and_downloads_them(
    fake: FakeProvider, provider: str, tmp_path: pathlib.Path
) -> None:
    """Through a relay that collapses DashScope's choices and sends ``"b64_json": ""``, an
    n=2 edit has 2 URL images, and download() fetches both files."""
    fake.faults = Faults(relay=True)
    async with client_for(fake.url, provider) as client:
        result = await client.edit([URL], "two cats", n=2, size="1024*768")
        assert len(result.raw["data"]) == 1  # what the relay listed
        assert len(result.images) == 2 and all(i.b64_json is None for i in result.images)
        paths = await client.download(result, tmp_path)
    assert len(paths) == 2 and len(set(paths)) == 2
    for path in paths:
        assert imagesize.get(path) == (1024, 768)
    assert fake.stats.downloads == 2 and fake.stats.jobs_created == 1


async def test_relay_b64_answer_is_read_inline(fake: FakeProvider, tmp_path: pathlib.Path) -> None:
    """A relay answering inline data sends ``"url": ""``: the data is used, no fetch."""
    fake.faults = Faults(relay=True)
    fake.b64_json = True
    async with client_for(fake.url, "modelstream") as client:
        result = await client.edit([URL], "one cat")
        assert result.images[0].url is None and result.images[0].b64_json
        paths = await client.download(result, tmp_path)
    assert len(paths) == 1 and fake.stats.downloads == 0


# -- 3. relayed error codes -------------------------------------------------------------------


@pytest.mark.parametrize("relay_code", ["bad_response_status_code", None])
@pytest.mark.parametrize(
    ("prompt", "cls"),
    [("cat [filter]", qe.ContentFilterError), ("cat [quota]", qe.InsufficientQuotaError)],
)
async def test_relay_errors_are_classified_by_message(
    fake: FakeProvider, relay_code: str | None, prompt: str, cls: type[qe.APIError]
) -> None:
    """A relay that recodes DashScope's refusal still yields its class, sent once."""
    fake.faults = Faults(relay=True, relay_code=relay_code)
    async with client_for(fake.url, "modelstream") as client:
        with pytest.raises(cls) as info:
            await client.edit([URL], prompt)
    assert info.value.code == relay_code
    assert fake.stats.creates == 1


async def test_relayed_throttle_is_retried(fake: FakeProvider) -> None:
    """A relayed per-period throttle (code lost) is retried; one job is made."""
    fake.faults = Faults(relay=True)
    fake.script("refuse:allocated_quota", "ok")
    async with client_for(fake.url, "onetoken") as client:
        result = await client.edit([URL], "cat")
    assert result.images and fake.stats.creates == 2 and fake.stats.jobs_created == 1


# -- 4. DashScope's codes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusal", "cls"),
    [
        ("free_tier_only", qe.InsufficientQuotaError),
        ("free_tier_only_400", qe.InsufficientQuotaError),
        ("ip_infringement", qe.ContentFilterError),
        ("free_quota_exceeded", qe.InsufficientQuotaError),
    ],
)
@pytest.mark.parametrize("relay", [False, True])
async def test_final_refusals_are_sent_once(
    fake: FakeProvider, refusal: str, cls: type[qe.APIError], relay: bool
) -> None:
    """Exhausted quotas and IP infringement are raised at once, never retried."""
    fake.faults = Faults(relay=relay)
    fake.script(f"refuse:{refusal}", "ok")
    async with client_for(fake.url, "modelstream" if relay else "dashscope") as client:
        with pytest.raises(cls):
            await client.edit([URL], "cat")
    assert fake.stats.creates == 1 and fake.stats.jobs_created == 0


@pytest.mark.parametrize("refusal", ["allocated_quota", "burst"])
async def test_throttles_are_retried(fake: FakeProvider, refusal: str) -> None:
    """A per-period quota throttle and the burst guard are retried until the job is made."""
    fake.script(f"refuse:{refusal}", f"refuse:{refusal}", "ok")
    async with client_for(fake.url, "dashscope") as client:
        result = await client.edit([URL], "cat")
    assert result.images and fake.stats.creates == 3 and fake.stats.jobs_created == 1


# -- 5. Vtrix's balance error -----------------------------------------------------------------


async def test_vtrix_insufficient_balance_is_quota(fake: FakeProvider) -> None:
    """Vtrix's 403 ``insufficient balance`` is InsufficientQuotaError, sent once."""
    async with client_for(fake.url, "vtrix") as client:
        with pytest.raises(qe.InsufficientQuotaError, match="insufficient balance"):
            await client.edit([URL], "cat [quota]")
    assert fake.stats.creates == 1 and fake.stats.jobs_created == 0


# -- 6. transient task failures are submitted again ---------------------------------------------


@pytest.mark.parametrize("provider", ["evolink", "vtrix"])
async def test_transient_task_failure_is_resubmitted_and_counted(
    fake: FakeProvider, provider: str
) -> None:
    """A task failing with a "retry later" code is submitted again; the job succeeds and
    says it took two submissions."""
    code = "service_error" if provider == "evolink" else "InternalError.Algo"
    fake.script(f"fail:{code}", "ok")
    async with client_for(fake.url, provider) as client:
        job = await client.submit(qe.EditRequest(images=[URL], prompt="cat"))
        first_task = job.task_id
        result = await job.result()
    assert result.images and job.submissions == 2
    assert result.task_id != first_task
    assert fake.stats.jobs_created == 2


async def test_resubmissions_are_bounded_and_reported(fake: FakeProvider) -> None:
    """A task failing transiently every time is submitted 1 + max_resubmits times; the
    error keeps the last task id and says how many submissions were made."""
    async with client_for(fake.url, "evolink") as client:
        outcomes = [
            o
            async for o in client.edit_many(
                [qe.EditRequest(images=[URL], prompt="cat [fail:generation_timeout]")]
            )
        ]
    (outcome,) = outcomes
    err = outcome.error
    assert isinstance(err, qe.JobFailedError) and err.code == "generation_timeout"
    assert outcome.submissions == 3 and err.submissions == 3
    assert err.task_id in fake.stats.jobs and "submissions=3" in str(err)
    assert fake.stats.jobs_created == 3


async def test_max_resubmits_zero_disables_it(fake: FakeProvider) -> None:
    """``max_resubmits=0``: one submission, the transient failure is the job's end."""
    async with client_for(fake.url, "evolink", max_resubmits=0) as client:
        with pytest.raises(qe.JobFailedError) as info:
            await client.edit([URL], "cat [fail:resource_exhausted]")
    assert info.value.submissions is None and fake.stats.jobs_created == 1


@pytest.mark.parametrize(
    ("prompt", "cls"),
    [
        ("cat [filter]", qe.ContentFilterError),
        ("cat [fail:invalid_parameters]", qe.JobFailedError),
        ("cat [fail:image_processing_error]", qe.JobFailedError),
    ],
)
async def test_moderation_and_bad_input_are_never_resubmitted(
    fake: FakeProvider, prompt: str, cls: type[qe.QwenEditError]
) -> None:
    """Moderation and bad-input task failures end the job after one submission."""
    async with client_for(fake.url, "evolink") as client:
        outcomes = [
            o async for o in client.edit_many([qe.EditRequest(images=[URL], prompt=prompt)])
        ]
    assert type(outcomes[0].error) is cls and outcomes[0].submissions == 1
    assert fake.stats.jobs_created == 1


def test_max_resubmits_is_validated() -> None:
    """max_resubmits is a whole number from 0; anything else names the field."""
    assert qe.ClientConfig().max_resubmits == 2
    assert qe.ClientConfig(max_resubmits=0).max_resubmits == 0
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(qe.ValidationError, match="max_resubmits"):
            qe.ClientConfig(max_resubmits=bad)  # type: ignore[arg-type]


# -- 7. Evolink completes before its results are attached -----------------------------------


async def test_completed_before_results_still_succeeds(fake: FakeProvider) -> None:
    """``completed`` with no results for a while is waited out: the paid images arrive."""
    fake.faults = Faults(results_delay=0.25)
    async with client_for(fake.url, "evolink") as client:
        result = await client.edit([URL], "cat", n=2)
    assert len(result.images) == 2
    (job,) = fake.stats.jobs.values()
    assert job.polls >= 2


async def test_results_that_never_come_fail_with_the_task_id(fake: FakeProvider) -> None:
    """Completed without results check after check: the job fails, bounded, with its id,
    and is not resubmitted (the task may be billed)."""
    fake.faults = Faults(results_delay=3600)
    async with client_for(fake.url, "evolink") as client:
        with pytest.raises(qe.JobFailedError, match="without any result image") as info:
            await client.edit([URL], "cat")
    (job,) = fake.stats.jobs.values()
    assert info.value.task_id == job.id
    assert job.polls == 6  # the completed answer and five checks more
    assert fake.stats.jobs_created == 1


# -- 8. Vtrix's typed items -------------------------------------------------------------------


async def test_vtrix_image_url_items_are_results(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Result items typed ``image_url`` are read and downloaded."""
    fake.faults = Faults(vtrix_item_type="image_url")
    async with client_for(fake.url, "vtrix") as client:
        result = await client.edit([URL], "cat", n=2)
        assert len(await client.download(result, tmp_path)) == 2


# -- 9, 21. answers that are a verdict, on a small server ------------------------------------

Handler = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Handler]], Any]]:
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for route, handler in routes.items():
            method, path = route.split(" ", 1)
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


DASHSCOPE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"


@pytest.mark.parametrize(
    "answer",
    [
        {"output": {"choices": [{"message": {"content": [{"text": "sorry"}]}}]}},
        {"output": {"choices": []}, "request_id": "r"},
    ],
)
async def test_sync_200_without_image_is_a_failed_job_not_uncertain(
    serve: Any, answer: dict[str, Any]
) -> None:
    """A synchronous 200 with no image: the job ran, so JobFailedError, sent once."""
    creates = 0

    async def create(request: web.Request) -> web.Response:
        nonlocal creates
        creates += 1
        return web.json_response(answer)

    url = await serve({f"POST {DASHSCOPE_PATH}": create})
    async with client_for(url, "dashscope") as client:
        with pytest.raises(qe.JobFailedError) as info:
            await client.edit([URL], "cat")
    assert not isinstance(info.value, qe.SubmitUncertainError)
    assert creates == 1


async def test_status_200_error_object_ends_the_job_at_once(serve: Any) -> None:
    """A status answer that is only an error object is classified at the first check,
    not retried until the job timeout."""
    polls = 0

    async def create(request: web.Request) -> web.Response:
        return web.json_response({"id": "task-x", "status": "pending"})

    async def status(request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        return web.json_response(
            {"error": {"code": "invalid_task_id", "message": "task not found", "type": "x"}}
        )

    url = await serve({"POST /v1/images/generations": create, "GET /v1/tasks/{id}": status})
    async with client_for(url, "evolink", job_timeout=30) as client:
        with pytest.raises(qe.TaskNotFoundError) as info:
            await client.edit([URL], "cat")
    assert info.value.task_id == "task-x" and polls == 1


@pytest.mark.parametrize(("n", "listed"), [(None, 2), (1, 3000), (2, 3)])
async def test_more_images_than_asked_are_refused_before_any_fetch(
    serve: Any, n: int | None, listed: int
) -> None:
    """A result listing more images than n (or than 6) is refused; nothing is fetched."""
    fetched = 0
    base = ""

    async def create(request: web.Request) -> web.Response:
        return web.json_response({"id": "task-y", "status": "pending"})

    async def status(request: web.Request) -> web.Response:
        results = [f"{base}/img/{i}.png" for i in range(listed)]
        return web.json_response({"id": "task-y", "status": "completed", "results": results})

    async def image(request: web.Request) -> web.Response:
        nonlocal fetched
        fetched += 1
        return web.Response(body=b"")

    base = await serve(
        {
            "POST /v1/images/generations": create,
            "GET /v1/tasks/{id}": status,
            "GET /img/{name}": image,
        }
    )
    options = {} if n is None else {"n": n}
    async with client_for(base, "evolink") as client:
        with pytest.raises(qe.JobFailedError, match=f"lists {listed} images") as info:
            await client.edit([URL], "cat", **options)
    assert info.value.task_id == "task-y" and fetched == 0


async def test_completed_before_results_by_callback_is_collected_by_polling(
    fake: FakeProvider,
) -> None:
    """A callback saying ``completed`` without results does not end the job: the status
    checks collect the results."""
    from aiohttp.test_utils import unused_port

    fake.faults = Faults(results_delay=0.25)
    port = unused_port()
    receiver = qe.CallbackReceiver(f"http://127.0.0.1:{port}/qe")
    async with (
        receiver.listen("127.0.0.1", port),
        qe.QwenEditClient(
            "evolink",
            api_key=API_KEY,
            base_url=fake.url,
            callbacks=receiver,
            poll_initial=0.05,
            poll_max_interval=0.1,
        ) as client,
    ):
        result = await client.edit([URL], "cat", n=2)
    assert len(result.images) == 2
    assert fake.stats.callbacks_delivered >= 1


async def test_modes_switch_over_the_control_routes(fake: FakeProvider) -> None:
    """A fake in another process is switched the same way: ``POST /_fake/faults`` and
    ``/_fake/script`` take the new fields and words."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(
            fake.url + "/_fake/faults", json={"relay": True, "relay_code": None}
        ) as resp:
            assert resp.status == 200
        async with session.post(fake.url + "/_fake/script", json=["refuse:burst"]) as resp:
            assert resp.status == 200
        async with session.post(fake.url + "/_fake/script", json=["refuse:nope"]) as resp:
            assert resp.status == 400
    assert fake.faults.relay and fake.faults.relay_code is None
    async with client_for(fake.url, "modelstream") as client:
        result = await client.edit([URL], "cat", n=2)
    assert len(result.images) == 2 and fake.stats.rate_limited == 1


def test_unknown_refusal_names_the_known_ones() -> None:
    """``refuse:NAME`` with an unknown name is refused, listing the names."""
    fake = FakeProvider()
    with pytest.raises(ValueError, match="free_tier_only"):
        fake.script("refuse:nope")
