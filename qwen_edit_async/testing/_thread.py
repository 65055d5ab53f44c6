"""The fake provider on its own event loop in a background thread, for blocking code."""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._server import FakeProvider

__all__ = ["fake_in_thread"]


class fake_in_thread:  # lower case: used like a function, "with fake_in_thread() as fake"
    """A started :class:`FakeProvider` serving from a background thread; closed on exit.

    For scripts and tests that block (``SyncQwenEditClient``) or run their own loop:
    the fake keeps answering whatever the calling thread does. ``options`` are
    :class:`FakeProvider`'s (``latency=0.01`` unless given). One left open is closed when
    it is collected, at the latest when the interpreter exits.

    >>> with fake_in_thread(latency=0.05) as fake:                    # doctest: +SKIP
    ...     with SyncQwenEditClient("vtrix", api_key="any", base_url=fake.url) as client:
    ...         print(client.edit(["https://example.com/a.png"], "Add a hat").urls)
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("latency", 0.01)
        self._options = options
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __enter__(self) -> FakeProvider:
        if self._finalizer is not None:
            raise RuntimeError("this fake_in_thread is already running")
        options = self._options

        async def start() -> FakeProvider:
            return await FakeProvider(**options).start()

        portal_cm = start_blocking_portal(backend="asyncio")
        portal = portal_cm.__enter__()
        try:
            fake = portal.call(start)
        except BaseException:
            portal_cm.__exit__(None, None, None)
            raise
        # Closed at exit too: a fake left open must not keep the interpreter waiting.
        self._finalizer = weakref.finalize(self, _stop, portal, portal_cm, fake)
        return fake

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finalizer is not None:
            self._finalizer()


def _stop(
    portal: BlockingPortal, portal_cm: AbstractContextManager[Any], fake: FakeProvider
) -> None:
    try:
        portal.call(fake.close)
    finally:
        portal_cm.__exit__(None, None, None)
