"""The create path spends nothing per job that the job does not need: what is asserted here is
counted (objects made, timers armed), never timed."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import anyio
import pytest
from _wait import until
from anyio._backends import _asyncio as anyio_asyncio
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._http import HttpPipe
from qwen_edit_async._jobs import Deadline, Deadlines
from qwen_edit_async._limits import LocalLimits
from qwen_edit_async.providers import TaskAccepted
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


def client_for(fake: FakeProvider, **options: Any) -> qe.QwenEditClient:
    return qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url, **options)


@pytest.fixture
def scopes_by_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, tuple[Any, float]]]:
    """The deadline of every cancel scope made while a job runs (a frame of the job runner,
    ``_jobs.py``, on the stack): ``anyio.fail_after`` and ``CancelScope()`` both land here."""
    made: dict[int, tuple[Any, float]] = {}  # the scope kept alive: its id is not reused
    original = anyio_asyncio.CancelScope.__init__

    def counted(self: Any, deadline: float = float("inf"), shield: bool = False) -> None:
        # Python runs __init__ twice per scope (anyio's CancelScope.__new__ returns the
        # backend's subclass): one entry per object.
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.endswith("_jobs.py"):
                made[id(self)] = (self, deadline)
                break
            frame = frame.f_back  # type: ignore[assignment]
        original(self, deadline=deadline, shield=shield)

    monkeypatch.setattr(anyio_asyncio.CancelScope, "__init__", counted)
    yield made


async def test_edit_many_makes_no_cancel_scope_or_timer_per_job(
    fake: FakeProvider, scopes_by_jobs: dict[int, tuple[Any, float]]
) -> None:
    """40 jobs with the default deadline (job_timeout 600 s): no cancel scope made by the
    job runner and one deadline timer for all of them (it was a ``fail_after`` per job: a
    scope and a timer each)."""
    async with client_for(fake, max_in_flight=8, adaptive_limits=False) as client:
        assert client.config.job_timeout == 600.0
        requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(40)]
        outcomes = [o async for o in client.edit_many(requests)]
        timers = client._jobs.deadlines.timers
    assert all(o.ok for o in outcomes) and len(outcomes) == 40
    assert list(scopes_by_jobs.values()) == []
    assert timers == 1


async def test_edit_makes_one_scope_per_job_and_no_timer(
    fake: FakeProvider, scopes_by_jobs: dict[int, tuple[Any, float]]
) -> None:
    """A job with a handle (edit, submit) has the one scope ``job.cancel()`` needs, without
    a deadline of its own: the shared timer cancels that same scope."""
    async with client_for(fake, adaptive_limits=False) as client:
        for i in range(5):
            await client.edit([URL], f"e{i}")
        timers = client._jobs.deadlines.timers
    assert [deadline for _, deadline in scopes_by_jobs.values()] == [float("inf")] * 5
    assert timers == 1


async def test_a_deadline_in_edit_many_ends_its_job_and_the_worker_goes_on(
    fake: FakeProvider,
) -> None:
    """One worker (max_in_flight=1): the stuck job ends as timed out at its deadline, and
    the jobs after it run on that worker (its scope was cancelled, not its loop)."""
    async with client_for(fake, max_in_flight=1, job_timeout=0.3) as client:
        requests = [
            qe.EditRequest(images=[URL], prompt="first"),
            qe.EditRequest(images=[URL], prompt="[stuck] held until the deadline"),
            qe.EditRequest(images=[URL], prompt="third"),
            qe.EditRequest(images=[URL], prompt="fourth"),
        ]
        with anyio.fail_after(10):
            outcomes = sorted([o async for o in client.edit_many(requests)], key=lambda o: o.index)
        stats = client.statistics()
    assert [o.ok for o in outcomes] == [True, False, True, True]
    error = outcomes[1].error
    assert isinstance(error, qe.JobTimeoutError)
    assert "job timeout of 0.3 s" in str(error)
    assert (stats.completed, stats.failed, stats.in_flight) == (3, 1, 0)


async def test_a_deadline_cancels_only_jobs_past_it() -> None:
    """Deadlines of two limits: the timer cancels each scope at its own deadline, never
    one whose job ended, and re-arms for the next."""
    deadlines = Deadlines()
    # Scopes not entered: cancel() only marks them, which is what is checked.
    ended = Deadline(0.01, anyio.CancelScope())
    short = Deadline(0.05, anyio.CancelScope())
    long = Deadline(30.0, anyio.CancelScope())
    deadlines.start(ended)
    deadlines.start(long)
    deadlines.start(short)
    deadlines.end(ended)
    with anyio.fail_after(5):
        while not short.expired:
            await asyncio.sleep(0.01)
    assert short.scope.cancel_called
    assert not ended.expired and not ended.scope.cancel_called
    assert not long.expired and not long.scope.cancel_called
    # Armed at the first start, re-armed for short when ended's passed, then for long.
    assert deadlines.timers == 3
    deadlines.end(long)


async def test_ended_deadlines_behind_a_long_job_do_not_pile_up() -> None:
    """A job that runs long does not hold the 10,000 jobs that started and ended after it:
    only the running ones are kept, and no timer was armed for them."""
    deadlines = Deadlines()
    long = Deadline(600.0, anyio.CancelScope())
    deadlines.start(long)
    for _ in range(10_000):
        entry = Deadline(600.0, anyio.CancelScope())
        deadlines.start(entry)
        deadlines.end(entry)
    assert deadlines.running == 1
    assert deadlines.timers == 1
    deadlines.end(long)
    assert deadlines.running == 0


async def test_the_progress_hook_sees_every_job_start_and_end(fake: FakeProvider) -> None:
    """With a hook, each job reports when it takes its slot and when it ends, a timed-out
    one included (edit_many's deadline ends it through its worker's scope)."""
    seen: list[qe.ClientStatistics] = []
    async with client_for(
        fake, max_in_flight=2, job_timeout=0.3, adaptive_limits=False, on_progress=seen.append
    ) as client:
        requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(4)]
        requests.append(qe.EditRequest(images=[URL], prompt="[stuck] never answered"))
        with anyio.fail_after(10):
            outcomes = [o async for o in client.edit_many(requests)]
    assert sum(o.ok for o in outcomes) == 4
    assert len(seen) == 2 * 5
    assert (seen[-1].completed, seen[-1].failed) == (4, 1)


async def test_a_job_with_a_handle_ends_cancelled_or_timed_out_and_reports_it(
    fake: FakeProvider,
) -> None:
    """A job with a handle runs in its own scope: ``job.cancel()`` ends it as cancelled, its
    deadline as timed out; either way it counts as failed and the hook sees it end, and the
    cancellation stops at the job (the caller goes on)."""
    seen: list[qe.ClientStatistics] = []
    async with client_for(
        fake, job_timeout=0.3, adaptive_limits=False, on_progress=seen.append
    ) as client:
        cancelled = await client.submit(qe.EditRequest(images=[URL], prompt="[stuck] a"))
        await _wait_for(lambda: cancelled.request_sent)
        cancelled.cancel()
        with anyio.fail_after(5):
            await cancelled.wait_done()
            timed_out = await client.submit(qe.EditRequest(images=[URL], prompt="[stuck] b"))
            await timed_out.wait_done()
            done = await client.edit([URL], "after them")
    assert isinstance(cancelled.exception(), qe.JobCancelledError)
    assert cancelled.status is qe.JobStatus.CANCELLED
    assert isinstance(timed_out.exception(), qe.JobTimeoutError)
    assert done.images
    assert (seen[-1].completed, seen[-1].failed) == (1, 2)
    assert len(seen) == 2 * 3  # each job: its start and its end


async def _wait_for(condition: Any) -> None:
    with anyio.fail_after(5):
        while not condition():
            await asyncio.sleep(0.005)


def test_no_progress_hook_no_call_per_job(fake: FakeProvider) -> None:
    """Without a hook the runner is given none to call."""
    client = client_for(fake)
    assert client._jobs._progress is None
    hooked = client_for(fake, on_progress=lambda stats: None)
    assert hooked._jobs._progress is not None


async def test_the_key_and_json_headers_are_merged_once_per_client(fake: FakeProvider) -> None:
    """Every create carries the key (the fake refuses any other), yet the pipe merged the
    dialect's JSON headers with the key once for the whole batch, not once per request."""
    async with client_for(fake, max_in_flight=8, adaptive_limits=False) as client:
        requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(20)]
        outcomes = [o async for o in client.edit_many(requests)]
        merged = list(client._calls.pipe._merged.values())  # type: ignore[attr-defined]
    assert len(outcomes) == 20 and all(o.ok for o in outcomes)
    assert len(merged) == 1
    headers = merged[0][2]
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Content-Type"] == "application/json"


def test_headers_that_may_change_are_merged_anew() -> None:
    """A header mapping that is not read-only is never kept: a change to it between two
    requests is sent."""
    pipe = HttpPipe()
    own = {"X-Trace": "1"}
    key = MappingProxyType({"Authorization": "Bearer k"})
    assert pipe._headers(own, key, True)["X-Trace"] == "1"
    own["X-Trace"] = "2"
    assert pipe._headers(own, key, True) == {
        "X-Trace": "2",
        "Authorization": "Bearer k",
        "Content-Type": "application/json",
    }
    assert pipe._merged == {}


def test_a_job_without_an_on_send_hook_is_marked_sent_without_a_coroutine() -> None:
    """Most jobs have no ``on_send`` hook: marking them sent is a plain call (nothing to
    await), and a synchronous provider's job counts as accepted at once."""
    job = qe.Job(qe.EditRequest(images=[URL], prompt="x"))
    assert job._sending_sync() is None
    assert job.request_sent and job._is_accepted
    task_job = qe.Job(qe.EditRequest(images=[URL], prompt="x"))
    assert task_job._sending() is None
    assert task_job.request_sent and not task_job._is_accepted


async def test_an_unpaced_create_awaits_no_pace(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates are not paced until the provider refuses one: they go without the pace's
    coroutine. A client with ``submit_rate`` still waits in ``pace()`` for each create."""
    paced: list[int] = []
    original = LocalLimits.pace

    async def counted(self: LocalLimits) -> None:
        paced.append(1)
        await original(self)

    monkeypatch.setattr(LocalLimits, "pace", counted)
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(12)]
    async with client_for(fake, max_in_flight=4) as client:
        outcomes = [o async for o in client.edit_many(requests)]
    assert [o.ok for o in outcomes] == [True] * 12
    assert paced == []
    async with client_for(fake, max_in_flight=4, submit_rate=1000.0) as client:
        outcomes = [o async for o in client.edit_many(requests)]
    assert [o.ok for o in outcomes] == [True] * 12
    assert len(paced) == 12


def test_ready_only_when_neither_a_cooldown_nor_a_rate_needs_a_wait() -> None:
    """``ready()`` says a create may go at once exactly when ``pace()`` would not wait."""
    limits = LocalLimits(max_in_flight=8, submit_rate=None)
    assert limits.ready()
    limits.state.cooldown_until = time.time() + 30.0  # a Retry-After being waited out
    assert not limits.ready()
    limits.state.cooldown_until = time.time() - 1.0
    assert limits.ready()
    limits.state.rate = 20.0  # a rate refusal ended the unpaced start
    assert not limits.ready()
    assert not LocalLimits(max_in_flight=8, submit_rate=50.0).ready()


async def test_a_task_s_create_answer_is_not_kept_while_it_is_polled() -> None:
    """The provider's acceptance of a task (with its parsed answer) is let go once the job
    has its task id: thousands of tasks in flight would otherwise each keep a few more
    objects for the garbage collector to walk."""
    async with FakeProvider(api_key=API_KEY, latency=30.0) as fake:
        client = qe.QwenEditClient("evolink", api_key=API_KEY, base_url=fake.url)
        async with client, anyio.create_task_group() as group:
            group.start_soon(lambda: client.edit(images=["https://example.com/a.png"], prompt="p"))
            await until(lambda: client.statistics().polling == 1)
            gc.collect()
            kept = [o for o in gc.get_objects() if isinstance(o, TaskAccepted)]
            assert kept == []  # the job polls its task; nothing holds the acceptance
            group.cancel_scope.cancel()
