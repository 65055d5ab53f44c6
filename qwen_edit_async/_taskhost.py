"""A task group held open in a task of its own, from :meth:`TaskHost.start` to :meth:`stop`.

The client's task group (its poller and every job) lives in its own task rather than the
caller's: then any task may close the client (a FastAPI lifespan, a signal handler), and a
job's failure never cancels the code inside ``async with``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

__all__ = ["TaskHost"]

logger = logging.getLogger("qwen_edit_async")


class TaskHost:
    """Holds one task group open until :meth:`stop`; started once."""

    def __init__(self) -> None:
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self, first: Callable[[TaskGroup], Coroutine[Any, Any, None]]) -> TaskGroup:
        """Open the task group, start ``first(task_group)`` in it, and return it.

        If the group cannot start (or the caller is cancelled meanwhile) nothing is left
        running and the error is raised.
        """
        started: asyncio.Future[TaskGroup] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        runner = self._runner = asyncio.create_task(self._hold(started, first))
        try:
            await asyncio.wait((started, runner), return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                raise RuntimeError("the client's task group ended as it started") from (
                    runner.exception()
                )
        except BaseException:
            self._runner = None
            runner.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(runner, return_exceptions=True)
            raise
        return started.result()

    async def _hold(
        self,
        started: asyncio.Future[TaskGroup],
        first: Callable[[TaskGroup], Coroutine[Any, Any, None]],
    ) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(first, task_group)
            started.set_result(task_group)
            await self._stop.wait()
            task_group.cancel_scope.cancel()

    async def stop(self) -> None:
        """Cancel everything in the task group and wait until it has ended (shielded: a
        caller cancelled while stopping still leaves nothing running). Idempotent."""
        runner, self._runner = self._runner, None
        self._stop.set()
        if runner is None:
            return
        with anyio.CancelScope(shield=True):
            (outcome,) = await asyncio.gather(runner, return_exceptions=True)
        if isinstance(outcome, Exception):
            # Jobs and the poller catch their own errors; this is a bug, so say so rather
            # than raise an exception group out of a close.
            logger.error("the client's task group failed", exc_info=outcome)
