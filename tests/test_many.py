"""edit_many: its cost follows the work, it leaves nothing open, and closing never hangs it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from typing import Any

import anyio
import pytest
from anyio._backends import _asyncio as anyio_asyncio
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


def client_for(fake: FakeProvider, provider: str, **options: object) -> qe.QwenEditClient:
    options.setdefault("poll_initial", 0.05)
    options.setdefault("poll_max_interval", 0.2)
    return qe.QwenEditClient(provider, api_key=API_KEY, base_url=fake.url, **options)  # type: ignore[arg-type]


def _workers() -> int:
    """edit_many's worker tasks now running (anyio names a task after its function)."""
    return sum(1 for task in asyncio.all_tasks() if task.get_name().endswith("_Run.work"))


async def _wait_until(condition: object, what: str) -> None:
    with anyio.fail_after(5):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)
    assert condition(), what  # type: ignore[operator]


async def test_one_request_starts_one_job_whatever_max_in_flight(fake: FakeProvider) -> None:
    """With max_in_flight=100,000 a single request adds a handful of tasks, not a pool of
    100,000 workers (which took seconds and gigabytes to start)."""
    fake.latency = 0.3
    async with client_for(fake, "dashscope", max_in_flight=100_000) as client:
        stream = client.edit_many([qe.EditRequest(images=[URL], prompt="one")])
        consumer = asyncio.ensure_future(anext(stream))
        await _wait_until(lambda: client.statistics().in_flight == 1, "the job is running")
        workers = _workers()
        outcome = await consumer
        await stream.aclose()
    assert outcome.ok
    assert workers == 1


async def test_workers_never_exceed_the_requests_nor_max_in_flight(fake: FakeProvider) -> None:
    """Ten requests at max_in_flight=1000 run with at most ten workers, all at once
    (fixed limits: a learned limit would start them a few at a time)."""
    fake.latency = 0.3
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(10)]
    client = client_for(fake, "dashscope", max_in_flight=1000, adaptive_limits=False)
    async with client:
        stream = client.edit_many(requests)
        consumer = asyncio.ensure_future(anext(stream))
        await _wait_until(lambda: client.statistics().in_flight == 10, "ten jobs are running")
        workers = _workers()
        await consumer
        rest = [o async for o in stream]
    assert len(rest) == 9
    assert workers == 10


@pytest.mark.parametrize("leave_early", [False, True])
async def test_edit_many_leaves_no_unclosed_resource(fake: FakeProvider, leave_early: bool) -> None:
    """A run that ends, or a consumer that leaves early, leaves no ResourceWarning
    (unclosed memory object streams were reported when they were collected)."""
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(12)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        async with client_for(fake, "vtrix", max_in_flight=3) as client:
            stream = client.edit_many(requests)
            async for outcome in stream:
                assert outcome.ok
                if leave_early:
                    break
            await stream.aclose()
            await _wait_until(lambda: client.statistics().in_flight == 0, "the jobs ended")
        del stream
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


@pytest.mark.parametrize(("count", "admitted"), [(6, 4), (2, 2)], ids=["while-reading", "all-read"])
async def test_closing_the_client_under_a_consumer_ends_the_loop(
    fake: FakeProvider, count: int, admitted: int
) -> None:
    """A consumer in another task gets the cancelled outcomes and an error when the client
    is closed under it: it never waits forever for jobs no one will run. Six stuck
    requests: the window took 4 (2 running, 2 waiting for a worker) and the feeder is still
    reading. Two: every request was read and the feeder waits for the workers; closing
    still reaches them. Either way the close waits until no worker is left."""
    requests = [qe.EditRequest(images=[URL], prompt="[stuck] x") for _ in range(count)]
    client = client_for(fake, "vtrix", max_in_flight=2)
    outcomes: list[qe.Outcome] = []
    await client.__aenter__()

    async def consume() -> None:
        async for outcome in client.edit_many(requests):
            outcomes.append(outcome)

    consumer = asyncio.ensure_future(consume())
    await _wait_until(lambda: client.statistics().polling == 2, "two tasks are watched")
    assert _workers() == 2
    with anyio.fail_after(5):
        await client.aclose()
    assert _workers() == 0
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="closed"):
        await consumer
    assert sorted(o.index for o in outcomes) == list(range(admitted))
    assert all(isinstance(o.error, qe.JobCancelledError) for o in outcomes)


async def test_the_window_bounds_requests_taken_from_the_input(fake: FakeProvider) -> None:
    """At most 2 x max_in_flight requests are taken from the input before their outcomes
    are consumed, and the input is read on as outcomes are taken."""
    fake.latency = 0.05
    taken = 0

    def requests():  # type: ignore[no-untyped-def]
        nonlocal taken
        for i in range(100):
            taken += 1
            yield qe.EditRequest(images=[URL], prompt=f"e{i}")

    async with client_for(fake, "dashscope", max_in_flight=4) as client:
        stream = client.edit_many(requests())
        first = await anext(stream)
        assert first.ok
        # Nothing consumed beyond one outcome: the window (8) holds the feeder back.
        await _wait_until(lambda: client.statistics().in_flight == 0, "the window is full")
        assert taken <= 8 + 1
        rest = [o async for o in stream]
    assert len(rest) == 99
    assert sorted(o.index for o in [first, *rest]) == list(range(100))


async def test_the_first_creates_go_out_while_the_first_window_is_read(fake: FakeProvider) -> None:
    """A large batch does not hold its first create back until the feeder has read (and made
    jobs of) the whole first window: with max_in_flight=1000, the provider has a create
    before the 2,000th request is taken (it used to get none before all 2,000 were)."""
    fake.latency = 5.0
    creates_seen: list[int] = []

    def requests():  # type: ignore[no-untyped-def]
        for i in range(2000):
            creates_seen.append(fake.stats.creates)
            yield qe.EditRequest(images=[URL], prompt=f"e{i}")

    async with client_for(fake, "evolink", max_in_flight=1000) as client:
        stream = client.edit_many(requests())
        consumer = asyncio.ensure_future(anext(stream))
        await _wait_until(lambda: len(creates_seen) == 2000, "the first window is read")
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.aclose()
    assert creates_seen[0] == 0
    assert creates_seen[-1] > 0


async def test_requests_read_ahead_hold_no_job_yet(fake: FakeProvider) -> None:
    """The window reads up to 2 x max_in_flight requests ahead; those not yet taken by a
    worker are kept as given, without a job (a job is made when its work starts)."""
    fake.latency = 30.0
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(50)]
    async with client_for(fake, "evolink", max_in_flight=10, adaptive_limits=False) as client:
        stream = client.edit_many(requests)
        consumer = asyncio.ensure_future(anext(stream))
        await _wait_until(lambda: client.statistics().polling == 10, "ten tasks are watched")
        gc.collect()
        ours = {id(request) for request in requests}  # (other tests' jobs may linger)
        jobs = [o for o in gc.get_objects() if isinstance(o, qe.Job) and id(o.request) in ours]
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.aclose()
    assert len(jobs) == 10  # the 10 running; the 10 read ahead have none


async def test_workers_are_not_tasks_of_the_client_s_task_group(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """edit_many starts its feeder in the client's task group and its workers as plain
    tasks: anyio's bookkeeping per task (a handle, a cancel scope, an event) is a dozen
    objects per worker, walked by the garbage collector for as long as thousands of
    workers wait for their tasks."""
    spawned: list[str] = []
    original = anyio_asyncio.TaskGroup.start_soon

    def counted(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        spawned.append(getattr(func, "__qualname__", repr(func)))
        return original(self, func, *args, **kwargs)

    monkeypatch.setattr(anyio_asyncio.TaskGroup, "start_soon", counted)
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(30)]
    async with client_for(fake, "vtrix", max_in_flight=10, adaptive_limits=False) as client:
        outcomes = [o async for o in client.edit_many(requests)]
    assert len(outcomes) == 30 and all(o.ok for o in outcomes)
    assert [name for name in spawned if name.startswith("_Run.")] == ["_Run.feed"]


async def test_a_worker_s_unexpected_error_reaches_the_consumer(fake: FakeProvider) -> None:
    """A bug in a worker (here: running a job raises) is raised from the loop, not left to
    the client's task group, so the consumer never waits for outcomes that will not come."""
    async with client_for(fake, "dashscope", max_in_flight=4) as client:

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise ZeroDivisionError("a bug")

        client._jobs.run = broken  # type: ignore[method-assign]
        requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(3)]
        with anyio.fail_after(5), pytest.raises(ZeroDivisionError, match="a bug"):
            async for _ in client.edit_many(requests):
                pass
        del client._jobs.run  # the runner's own again
        assert not client.closed  # the client goes on
        assert (await client.edit([URL], "after")).images
