"""The poller without sockets: it takes a ``status(task_id)`` callable, so its handling of
answers and failures is tested with plain coroutines."""

from __future__ import annotations

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
async def running(status: Callable[[str], object]) -> AsyncIterator[Poller]:
    poller = Poller(
        status,  # type: ignore[arg-type]
        PollSchedule(initial=0.001, max_interval=0.01, jitter=0.0),
        concurrency=2,
        policy=RetryPolicy(backoff_base=0.01, backoff_max=0.05),
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
