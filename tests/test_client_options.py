"""One way to describe an edit (edit/submit/edit_many), with_options views, attach checks."""

from __future__ import annotations

import anyio
import pytest
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


def client_for(fake: FakeProvider, provider: str, **options: object) -> qe.QwenEditClient:
    """A client on ``provider``'s dialect of the fake, with quick polling."""
    options.setdefault("poll_initial", 0.05)
    options.setdefault("poll_max_interval", 0.2)
    return qe.QwenEditClient(provider, api_key=API_KEY, base_url=fake.url, **options)  # type: ignore[arg-type]


async def wait_for(condition: object, limit: float = 10.0) -> None:
    """Wait until ``condition()`` is true (checked often), failing after ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.005)


# -- one way to describe an edit ---------------------------------------------------------


async def test_submit_takes_images_prompt_and_options_like_edit(fake: FakeProvider) -> None:
    """submit(images, prompt, **options) sends those options; its job ends with n images."""
    async with client_for(fake, "vtrix") as client:
        job = await client.submit([URL], "Add a hat", n=2, size="1024*1536")
        result = await job.result()
    assert len(result.images) == 2
    sent = fake.stats.snapshot()["jobs"][0]
    assert (sent["n"], sent["width"], sent["height"]) == (2, 1024, 1536)


async def test_edit_and_submit_take_a_ready_request(fake: FakeProvider) -> None:
    """edit(request) and submit(request) run the EditRequest as given."""
    request = qe.EditRequest(images=[URL], prompt="Add a hat", n=2)
    async with client_for(fake, "vtrix") as client:
        edited = await client.edit(request)
        submitted = await (await client.submit(request)).result()
    assert len(edited.images) == len(submitted.images) == 2


@pytest.mark.parametrize(
    ("call", "field"),
    [
        ({"prompt": "again"}, "prompt"),
        ({"n": 2}, "n"),
    ],
)
async def test_a_request_with_more_arguments_is_refused_before_sending(
    fake: FakeProvider, call: dict[str, object], field: str
) -> None:
    """A prompt or an option beside a ready request is a ValidationError naming it."""
    request = qe.EditRequest(images=[URL], prompt="x")
    async with client_for(fake, "vtrix") as client:
        for method in (client.edit, client.submit):
            with pytest.raises(qe.ValidationError) as info:
                await method(request, **call)  # type: ignore[operator]
            assert info.value.field == field
    assert fake.stats.creates == 0


async def test_unknown_option_and_missing_prompt_are_named(fake: FakeProvider) -> None:
    """edit(images, prompt, colour=...) names 'colour'; edit(images) names 'prompt'."""
    async with client_for(fake, "vtrix") as client:
        with pytest.raises(qe.ValidationError, match="colour: not a field") as info:
            await client.edit([URL], "x", colour="red")
        assert info.value.field == "colour"
        with pytest.raises(qe.ValidationError) as info:
            await client.submit([URL])
        assert info.value.field == "prompt"
    assert fake.stats.creates == 0


async def test_edit_many_takes_requests_and_keyword_dicts(fake: FakeProvider) -> None:
    """Dicts of EditRequest fields run like requests; an invalid dict ends as its own
    ValidationError outcome (handed back as given) while the others succeed."""
    items: list[object] = [
        {"images": [URL], "prompt": "dict", "n": 2},
        qe.EditRequest(images=[URL], prompt="struct"),
        {"images": [URL], "prompt": "bad", "colour": "red"},
        {"images": [URL]},
    ]
    async with client_for(fake, "vtrix") as client:
        outcomes = {o.index: o async for o in client.edit_many(items)}  # type: ignore[arg-type]
    assert outcomes[0].ok and outcomes[0].result is not None
    assert len(outcomes[0].result.images) == 2
    assert outcomes[0].request == qe.EditRequest(images=[URL], prompt="dict", n=2)
    assert outcomes[1].ok
    assert isinstance(outcomes[2].error, qe.ValidationError)
    assert outcomes[2].error.field == "colour"
    assert outcomes[2].to_dict()["request"] == items[2]
    assert isinstance(outcomes[3].error, qe.ValidationError)
    assert outcomes[3].error.field == "prompt"
    assert fake.stats.creates == 2


# -- with_options -------------------------------------------------------------------------


async def test_with_options_max_attempts_1_fails_fast_on_429(fake: FakeProvider) -> None:
    """A view with max_attempts=1 raises the first 429; the client itself still retries
    it; the cooldown the view's 429 started is the client's too."""
    async with client_for(fake, "vtrix") as client:
        fast = client.with_options(max_attempts=1)
        fake.script("rate_limit")
        with pytest.raises(qe.RateLimitError):
            await fast.edit([URL], "fail fast")
        assert fake.stats.creates == 1
        assert fast._calls is client._calls  # one session, limits and cooldown
        fake.script("rate_limit")
        result = await client.edit([URL], "retried")
    assert result.images
    assert fake.stats.creates == 3


async def test_with_options_job_timeout_and_model_apply_to_the_view_only(
    fake: FakeProvider,
) -> None:
    """The view's job_timeout and model apply to its calls; the client keeps its own."""
    async with client_for(fake, "vtrix") as client:
        quick = client.with_options(job_timeout=0.3, model="qwen-image-edit-max")
        with pytest.raises(qe.JobTimeoutError):
            await quick.edit([URL], "[stuck] never ends")
        await quick.edit([URL], "max")
        await client.edit([URL], "plus")
        assert client.config.job_timeout == 600.0
        assert quick.config.job_timeout == 0.3
    models = [job["model"] for job in fake.stats.snapshot()["jobs"]]
    assert models == ["qwen_image_edit_max", "qwen_image_edit_max", "qwen_image_edit_plus"]


async def test_a_view_shares_slots_counters_and_lifecycle(fake: FakeProvider) -> None:
    """A view's job waits for the client's only slot; both report the same counters;
    leaving a view's block closes nothing; closing the client closes the view."""
    async with client_for(fake, "vtrix", max_in_flight=1) as client:
        view = client.with_options(job_timeout=None)
        blocker = await client.submit([URL], "[stuck] hold the slot")
        async with anyio.create_task_group() as tg:
            tg.start_soon(view.edit, [URL], "waits")
            await wait_for(lambda: client.statistics().waiting == 1)
            assert view.statistics() == client.statistics()
            blocker.cancel()
        assert client.statistics().completed == 1
        async with view as same:
            assert same is view
        assert not client.closed
        assert (await view.edit([URL], "still open")).images
    assert view.closed
    with pytest.raises(RuntimeError, match="closed"):
        await view.edit([URL], "after close")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"job_timeout": -1}, "job_timeout"),
        ({"model": " "}, "model"),
    ],
)
def test_with_options_validates_its_values(options: dict[str, object], field: str) -> None:
    """Bad view options are ValidationErrors naming the option."""
    client = qe.QwenEditClient("vtrix", api_key=API_KEY)
    with pytest.raises(qe.ValidationError) as info:
        client.with_options(**options)  # type: ignore[arg-type]
    assert info.value.field == field


# -- attach ------------------------------------------------------------------------------


async def test_attach_to_a_finished_task_answers_from_one_status_request(
    fake: FakeProvider,
) -> None:
    """attach to a task that already ended gives a done job after one status request."""
    async with client_for(fake, "vtrix") as client:
        task_id = (await client.submit([URL], "x")).id
        await wait_for(lambda: client.statistics().completed == 1)
        polls = fake.stats.polls
        job = await client.attach(task_id)
        assert job.done()
        assert (await job.result()).task_id == task_id
        assert fake.stats.polls == polls + 1
        failed = await client.submit([URL], "[fail] x")
        await wait_for(failed.done)
        again = await client.attach(failed.id)
        assert again.done()
        assert isinstance(again.exception(), qe.JobFailedError)
        assert again.exception().task_id == failed.id  # type: ignore[union-attr]
