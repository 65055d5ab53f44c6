"""Waiting in tests: on a condition, never for a fixed time.

``await asyncio.sleep(0.1); assert x`` passes or fails with the machine's load. ``await
until(lambda: x)`` returns as soon as ``x`` holds and fails (after a generous limit) only
when it never does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import anyio


async def until(
    condition: Callable[[], object | Awaitable[object]],
    seconds: float = 10.0,
    interval: float = 0.005,
) -> None:
    """Return once ``condition()`` (a function, or a coroutine function) is true; fail with
    ``TimeoutError`` after ``seconds``."""
    with anyio.fail_after(seconds):
        while True:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await anyio.sleep(interval)
