"""The command line's event loop: uvloop when it is installed, else asyncio."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_async"]

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` in a new event loop: uvloop when it is installed (the ``speed`` extra)
    and ``QWEN_EDIT_LOOP`` is not ``asyncio``, else the standard asyncio loop.

    >>> async def answer() -> int:
    ...     return 42
    >>> run_async(answer())
    42
    """
    if os.environ.get("QWEN_EDIT_LOOP", "").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            # Annotated: without uvloop installed its stubs are absent and run() is Any.
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)
