"""The pytest plugin: the fake provider as fixtures for a user's own tests.

Installed with the package (entry point ``pytest11``), so ``qwen_fake`` is there in any test
suite without a ``conftest.py`` line:

- ``qwen_fake``: a started :class:`FakeProvider` on its own event loop in a background
  thread. It needs pytest only, and serves synchronous tests (``SyncQwenEditClient``) and
  async tests of any runner alike.
- ``fake_provider`` and ``fake_provider_factory``: fakes on the test's own event loop, for
  async tests under pytest-asyncio. Import them into a ``conftest.py``::

      from qwen_edit_async.testing import fake_provider, fake_provider_factory  # noqa: F401

``pip install "qwen-edit-async[testing]"`` brings pytest and pytest-asyncio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

try:
    import pytest
except ModuleNotFoundError as exc:  # pragma: no cover - pytest loads this module itself
    raise ImportError(
        "qwen_edit_async.testing's fixtures need pytest: pip install 'qwen-edit-async[testing]'"
    ) from exc

from ._server import FakeProvider
from ._thread import fake_in_thread

try:
    import pytest_asyncio
except ModuleNotFoundError:
    # The plugin loads in every test suite of a machine with this package installed: it
    # must not break suites without pytest-asyncio. Only its async fixtures need it.
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["HAS_PYTEST_ASYNCIO", "fake_provider", "fake_provider_factory", "qwen_fake"]

HAS_PYTEST_ASYNCIO = pytest_asyncio is not None

FakeFactory = Callable[..., Awaitable[FakeProvider]]

MISSING_ASYNCIO = (
    "the fixtures fake_provider and fake_provider_factory need pytest-asyncio: "
    "pip install 'qwen-edit-async[testing]' (or use the qwen_fake fixture, which does not)"
)


@pytest.fixture
def qwen_fake() -> Iterator[FakeProvider]:
    """A started :class:`FakeProvider` (latency 0.01 s) in a background thread.

    Point a client at ``qwen_fake.url`` with any API key; ``qwen_fake.stats`` counts what it
    received, ``qwen_fake.script(...)`` and ``qwen_fake.faults`` inject failures. It is
    closed after the test.

    Example::

        def test_edit(qwen_fake):
            with SyncQwenEditClient("vtrix", api_key="k", base_url=qwen_fake.url) as client:
                result = client.edit(["https://example.com/a.png"], "make it blue")
            assert qwen_fake.stats.jobs_created == 1
    """

    with fake_in_thread() as fake:
        yield fake


if pytest_asyncio is None:

    @pytest.fixture
    def fake_provider() -> FakeProvider:
        """Needs pytest-asyncio (see the module docstring)."""
        raise pytest.UsageError(MISSING_ASYNCIO)

    @pytest.fixture
    def fake_provider_factory() -> FakeFactory:
        """Needs pytest-asyncio (see the module docstring)."""
        raise pytest.UsageError(MISSING_ASYNCIO)

else:

    @pytest_asyncio.fixture
    async def fake_provider() -> AsyncIterator[FakeProvider]:
        """A started :class:`FakeProvider` with a short latency (0.01 s), closed after the test.

        Example::

            async def test_edit(fake_provider):
                async with QwenEditClient(
                    "dashscope", api_key="k", base_url=fake_provider.url
                ) as client:
                    result = await client.edit(["https://example.com/a.png"], "make it blue")
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
