"""pytest fixtures: a started :class:`FakeProvider` per test.

Import them into a ``conftest.py``::

    from qwen_edit_async.testing import fake_provider, fake_provider_factory  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from ._server import FakeProvider

__all__ = ["fake_provider", "fake_provider_factory"]

FakeFactory = Callable[..., Awaitable[FakeProvider]]


@pytest_asyncio.fixture
async def fake_provider() -> AsyncIterator[FakeProvider]:
    """A started :class:`FakeProvider` with a short latency (0.01 s), closed after the test.

    Example::

        async def test_edit(fake_provider):
            async with QwenEditClient("dashscope", api_key="k", base_url=fake_provider.url) as c:
                result = await c.edit(["https://example.com/a.png"], "make it blue")
            assert fake_provider.stats.jobs_created == 1
    """
    async with FakeProvider(latency=0.01) as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_provider_factory() -> AsyncIterator[FakeFactory]:
    """An async factory ``await make(**FakeProvider kwargs)``; every fake is closed after.

    Example::

        async def test_quota(fake_provider_factory):
            fake = await fake_provider_factory(max_running=2, latency=0.2)
    """
    fakes: list[FakeProvider] = []

    async def make(**kwargs: Any) -> FakeProvider:
        kwargs.setdefault("latency", 0.01)
        fake = FakeProvider(**kwargs)
        await fake.start()
        fakes.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in reversed(fakes):
            await fake.close()
