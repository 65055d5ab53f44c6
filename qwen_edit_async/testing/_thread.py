"""The fake provider on its own event loop in a background thread, for blocking code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from anyio.from_thread import start_blocking_portal

from ._server import FakeProvider

__all__ = ["fake_in_thread"]


@contextmanager
def fake_in_thread(**options: Any) -> Iterator[FakeProvider]:
    """A started :class:`FakeProvider` serving from a background thread; closed on exit.

    For scripts and tests that block (``SyncQwenEditClient``) or run their own loop:
    the fake keeps answering whatever the calling thread does. ``options`` are
    :class:`FakeProvider`'s (``latency=0.01`` unless given).

    >>> with fake_in_thread(latency=0.05) as fake:                    # doctest: +SKIP
    ...     with SyncQwenEditClient("vtrix", api_key="any", base_url=fake.url) as client:
    ...         print(client.edit(["https://example.com/a.png"], "Add a hat").urls)
    """
    options.setdefault("latency", 0.01)

    async def start() -> FakeProvider:
        return await FakeProvider(**options).start()

    with start_blocking_portal(backend="asyncio") as portal:
        fake = portal.call(start)
        try:
            yield fake
        finally:
            portal.call(fake.close)
