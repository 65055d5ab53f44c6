"""What the routes, the control routes and the callback sender need of the fake.

They are handed the :class:`~qwen_edit_async.testing.FakeProvider` that builds them, but know
it only by this protocol, so that none of them imports the server module that imports them.
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal, Protocol

from ._faults import Decision, Faults
from ._files import FileStore
from ._latency import Latency, LatencyLike
from ._quota import RateGuard
from ._stats import FakeStats

__all__ = ["FakeState"]


class FakeState(Protocol):
    """The fake's configuration, counters and sources of ids and fates."""

    api_key: str | None
    faults: Faults
    max_running: int | None
    max_rate: float | None
    burst: int | None
    url_lifetime: float
    estimated_time: int | Literal["auto"] | None
    b64_json: bool
    seed: int
    rng: random.Random
    poll_rng: random.Random
    rate_guard: RateGuard
    files: FileStore
    closing: asyncio.Event

    @property
    def latency(self) -> Latency: ...

    @latency.setter
    def latency(self, value: LatencyLike) -> None: ...

    @property
    def stats(self) -> FakeStats: ...

    @property
    def evolink_estimated_time(self) -> int | None: ...

    @property
    def pending_script(self) -> list[str]: ...

    def script(self, *words: str) -> None: ...

    def reset(self) -> None: ...

    def next_decision(self) -> Decision: ...

    def next_request_id(self) -> str: ...

    def next_job_serial(self) -> int: ...
