"""The poller without sockets: it takes a ``status(task_id)`` callable, so its handling of
answers and failures is tested with plain coroutines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

import qwen_edit_async as qe
from qwen_edit_async._poller import Poller
from qwen_edit_async._retry import RetryPolicy
from qwen_edit_async._schedule import PollSchedule
from qwen_edit_async.providers._base import ProtocolError, TaskState, TaskStatus

pytestmark = pytest.mark.timeout(10)


@asynccontextmanager
async def running(
    status: Callable[[str], object], *, concurrency: int = 2, status_timeout: float | None = None
) -> AsyncIterator[Poller]:
    poller = Poller(
        status,  # type: ignore[arg-type]
        PollSchedule(initial=0.001, max_interval=0.01, jitter=0.0),
        concurrency=concurrency,
        policy=RetryPolicy(backoff_base=0.01, backoff_max=0.05),
        status_timeout=status_timeout,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(poller.run, group)
        yield poller
        group.cancel_scope.cancel()


def answers(*script: TaskStatus | BaseException) -> tuple[list[str], Callable[[str], object]]:
    """A status callable playing ``script`` in order (the last answer repeats)."""
    asked: list[str] = []

    async def status(task_id: str) -> TaskStatus:
        asked.append(task_id)
        step = script[min(len(asked), len(script)) - 1]
        if isinstance(step, BaseException):
            raise step
        return step

    return asked, status


async def test_transient_failures_are_asked_again_until_the_task_ends() -> None:
    """A refused connection, an unreadable answer and a 503 are retried (the policy's
    idempotent rules); a running task is checked again; the final status comes back."""
    done = TaskStatus("t-1", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
    asked, status = answers(
        qe.TransportError("refused"),
        ProtocolError("unreadable"),
        qe.ServerError("busy"),
        TaskStatus("t-1", TaskState.RUNNING),
        done,
    )
    async with running(status) as poller:
        with anyio.fail_after(5):
            assert await poller.wait("t-1") is done
    assert asked == ["t-1"] * 5
    assert poller.completed_by_poll == 1 and poller.pending == 0


async def test_an_error_retries_cannot_cure_ends_the_wait_with_the_task_id() -> None:
    asked, status = answers(qe.AuthenticationError("key revoked"))
    async with running(status) as poller:
        with anyio.fail_after(5), pytest.raises(qe.AuthenticationError) as info:
            await poller.wait("t-2")
    assert asked == ["t-2"]
    assert info.value.task_id == "t-2"


async def test_a_bug_in_the_status_call_reaches_the_waiter() -> None:
    _, status = answers(ZeroDivisionError("bug"))
    async with running(status) as poller:
        with anyio.fail_after(5), pytest.raises(ZeroDivisionError):
            await poller.wait("t-3")


async def test_a_status_retry_after_beyond_retry_after_max_is_waited_out_not_fatal() -> None:
    """A create asked to wait longer than ``retry_after_max`` gives up; a task that exists
    is not given up on: its next check waits at most the poller's longest interval."""
    done = TaskStatus("t-4", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
    asked, status = answers(qe.RateLimitError("slow down", retry_after=3600.0), done)
    async with running(status) as poller:
        with anyio.fail_after(5):
            assert await poller.wait("t-4") is done
    assert asked == ["t-4", "t-4"]


class _At:
    """A plan with one check, ``first`` s after acceptance (and ``step`` s apart after)."""

    def __init__(self, first: float, step: float = 0.05) -> None:
        self.first, self.step = first, step

    def at(self, attempt: int) -> float:
        return self.first + attempt * self.step

    def recheck(self, attempt: int, elapsed: float) -> float:
        return elapsed


class _Passes:
    """Counts the passes of the running asyncio loop (``_run_once`` calls) in the block."""

    def __enter__(self) -> _Passes:
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.count = 0
        self._original = self.loop._run_once  # type: ignore[attr-defined]

        def counted() -> None:
            self.count += 1
            self._original()

        self.loop._run_once = counted  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.loop._run_once  # type: ignore[attr-defined]


async def test_a_check_costs_four_event_loop_passes_at_most() -> None:
    """Checks due at distinct times: the timer that says one is due hands it to a worker in
    the same pass (no dispatcher task to wake, no cancellation delivered): its timer, the
    worker's pass, the waiter's pass and its task's end. (The dispatcher as a task took a
    pass to deliver its wake-up as a cancellation and one to run: 103 for these 20.)"""
    done = TaskStatus("t", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
    _, status = answers(done)
    count = 20
    async with running(status) as poller:
        await anyio.sleep(0)  # the poller is up

        async def one(i: int) -> None:
            assert await poller.wait(f"t-{i}", plan=_At(0.02 + 0.01 * i)) is done

        with _Passes() as passes, anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for i in range(count):
                    group.start_soon(one, i)
    assert poller.completed_by_poll == count
    # Starting the waiters and the worker, and ending the task group, cost a few more.
    assert passes.count <= 4 * count + 6, passes.count


async def test_checks_due_together_go_out_in_one_pass() -> None:
    """Checks due within a few milliseconds of each other (1% of their time) leave on one
    timer: their workers all start their requests in the same event-loop pass."""
    passes_at_start: list[int] = []
    done = TaskStatus("t", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
    gate = anyio.Event()

    async def status(task_id: str) -> TaskStatus:
        passes_at_start.append(passes.count)
        await gate.wait()
        return done

    async with running(status) as poller:
        poller._concurrency = 10
        await anyio.sleep(0)
        with _Passes() as passes, anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for i in range(5):
                    # 0.9 ms apart, 0.5 s after acceptance: due together (within 5 ms).
                    plan = _At(0.5 + 9e-4 * i)
                    group.start_soon(lambda i=i, plan=plan: poller.wait(f"t-{i}", plan=plan))
                while len(passes_at_start) < 5:
                    await anyio.sleep(0.005)
                gate.set()
    assert len(set(passes_at_start)) == 1, passes_at_start


async def test_a_status_request_past_status_timeout_is_ended_and_asked_again() -> None:
    """The poller bounds each request itself (``status_timeout``): one that never answers
    is ended then and the task asked again."""
    done = TaskStatus("t", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
    asked: list[str] = []
    hung: list[str] = []

    async def status(task_id: str) -> TaskStatus:
        asked.append(task_id)
        if task_id == "slow" and not hung:
            hung.append(task_id)
            await anyio.sleep_forever()
        return done

    async with running(status, concurrency=4, status_timeout=0.2) as poller:
        with anyio.fail_after(5):
            started = anyio.current_time()
            assert await poller.wait("slow", plan=_At(0.01)) is done
            took = anyio.current_time() - started
            assert await poller.wait("quick", plan=_At(0.01)) is done
    assert asked == ["slow", "slow", "quick"]
    assert took >= 0.2
    assert poller.pending == 0 and not poller._started


async def test_an_answer_in_the_same_loop_pass_as_its_status_timeout_is_kept_once() -> None:
    """An answer that arrives in the same event-loop pass as its request's ``status_timeout``
    (both overdue after a stall) counts; the request is not also ended and scheduled again,
    so the task never has two status requests in flight (which once broke the poller)."""
    still_running = TaskStatus("t", TaskState.RUNNING)
    done = TaskStatus("t", TaskState.SUCCEEDED, result=qe.EditResult(images=[], provider="x"))
    asked: list[float] = []
    in_flight = most = 0

    async def status(task_id: str) -> TaskStatus:
        nonlocal in_flight, most
        asked.append(time.monotonic())
        in_flight += 1
        most = max(most, in_flight)
        try:
            loop = asyncio.get_running_loop()
            answer: asyncio.Future[TaskStatus] = loop.create_future()
            # The answer is due before the poller's timeout timer (0.1 s), and a stall
            # makes both overdue: the loop runs them in one pass, the answer first.
            reply = still_running if len(asked) == 1 else done
            loop.call_later(0.05, lambda: answer.done() or answer.set_result(reply))
            loop.call_soon(time.sleep, 0.3)
            return await answer
        finally:
            in_flight -= 1

    async with running(status, concurrency=4, status_timeout=0.1) as poller:
        with anyio.fail_after(5):
            assert await poller.wait("t", plan=_At(0.01, step=0.2)) is done
    assert most == 1
    assert len(asked) == 2, asked
    assert poller.pending == 0 and not poller._started and not poller._heap
