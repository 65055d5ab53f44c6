"""The dialects the fake speaks: one :class:`FakeDialect` each, and their registry.

A fake dialect declares its paths (taken from the client's dialect, so both sides agree),
reads a create body into an :class:`EditSpec`, names its jobs and renders its answers: an
error in its shape for a :class:`Problem`, the result of a sync create, a task object at each
poll. The routes are the same for every dialect; a new provider's fake side is one subclass
and one :data:`FAKE_DIALECTS` line (read when a :class:`FakeProvider` is made).
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..providers import DashScope, Evolink, ModelStream, OneToken, Vtrix
from ._dialects import (
    dashscope_refusal,
    dashscope_success,
    evolink_created,
    evolink_refusal,
    evolink_task,
    gateway_refusal,
    openai_success,
    vtrix_created,
    vtrix_refusal,
    vtrix_task,
)
from ._faults import Faults
from ._jobs import Job
from ._problems import Problem
from ._relay import relay_success
from ._validate import (
    HYPHEN_MODELS,
    UNDERSCORE_MODELS,
    EditSpec,
    ImageLookup,
    parse_flat,
    parse_nested,
)

__all__ = ["FAKE_DIALECTS", "FakeDialect", "Urls"]

#: The result URLs of a job (computed only when a finished job is rendered).
Urls = Callable[[Job], list[str]]
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 36)
        out.append(_B36[digit])
    return "".join(reversed(out))


class FakeDialect(abc.ABC):
    """How the fake speaks one provider's wire.

    Task dialects set ``status_path`` (an aiohttp route with ``{task_id}``) and implement
    :meth:`created` and :meth:`task`; sync dialects set ``sync`` and implement
    :meth:`success`.
    """

    #: The fake's name of the dialect, kept on each job (``job.dialect``).
    name: ClassVar[str]
    #: The client dialects (registry names) this fake dialect answers.
    providers: ClassVar[tuple[str, ...]]
    create_path: ClassVar[str]
    status_path: ClassVar[str | None] = None
    sync: ClassVar[bool] = False
    #: Whether sync answers may carry the images inline (``FakeProvider(b64_json=True)``).
    inline_images: ClassVar[bool] = False
    #: The header the API key comes in, and the scheme before it (as the client's dialect).
    auth_header: ClassVar[str] = "Authorization"
    auth_scheme: ClassVar[str | None] = "Bearer"

    def claims(self, body: Any) -> bool:
        """Whether a create body on a path shared with other dialects is this one's."""
        return True

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Raise a :class:`Problem` for a request header this dialect refuses."""
        return None

    @abc.abstractmethod
    def parse(self, body: Any, lookup: ImageLookup) -> EditSpec:
        """Validate a create body (raise a :class:`Problem` for what it refuses)."""

    @abc.abstractmethod
    def error(self, problem: Problem, request_id: str, faults: Faults) -> tuple[int, Any]:
        """``(status, body)`` of an error answer in this dialect's shape."""

    def job_id(self, serial: int, rng: random.Random, request_id: str) -> str:
        """The id of a new job (sync dialects: the request id)."""
        return request_id

    def callback_url(self, body: Any) -> str | None:
        """Where the create body asks the ended task to be POSTed, if the dialect has that."""
        return None

    def success(
        self, job: Job, urls: list[str], request_id: str, faults: Faults, b64: list[str] | None
    ) -> Any:
        """The answer of a sync create that succeeded (``b64``: images inline when asked)."""
        raise NotImplementedError(f"{self.name} is a task dialect")

    def created(self, job: Job, estimated_time: int | None) -> Any:
        """The answer of a task create."""
        raise NotImplementedError(f"{self.name} is a sync dialect")

    def task(
        self, job: Job, now: float, urls: Urls, faults: Faults, estimated_time: int | None
    ) -> tuple[Any, bool]:
        """The task object at monotonic time ``now`` and whether the task has ended."""
        raise NotImplementedError(f"{self.name} is a sync dialect")


class _Native(FakeDialect):
    """DashScope's nested body, answered synchronously."""

    sync = True
    allow_oss: ClassVar[bool] = True

    def parse(self, body: Any, lookup: ImageLookup) -> EditSpec:
        return parse_nested(body, models=HYPHEN_MODELS, lookup=lookup, allow_oss=self.allow_oss)


class DashScopeFake(_Native):
    name = "dashscope"
    providers = ("dashscope", "dashscope-intl")
    create_path = DashScope.create_path

    def error(self, problem: Problem, request_id: str, faults: Faults) -> tuple[int, Any]:
        return dashscope_refusal(problem, request_id)

    def check_headers(self, headers: Mapping[str, str]) -> None:
        if headers.get("X-DashScope-Async") == "enable":
            raise Problem("async_refused", "current user api does not support asynchronous calls")

    def success(
        self, job: Job, urls: list[str], request_id: str, faults: Faults, b64: list[str] | None
    ) -> Any:
        return dashscope_success(job, urls, request_id)


class _GatewayFake(_Native):
    """OpenAI's answer and error shapes around DashScope's (which they relay)."""

    inline_images = True

    def error(self, problem: Problem, request_id: str, faults: Faults) -> tuple[int, Any]:
        return gateway_refusal(problem, faults)

    def success(
        self, job: Job, urls: list[str], request_id: str, faults: Faults, b64: list[str] | None
    ) -> Any:
        if faults.relay:
            return relay_success(job, dashscope_success(job, urls, request_id), b64)
        if b64 is not None:
            return openai_success(job, None, b64)
        return openai_success(job, urls)


class ModelStreamFake(_GatewayFake):
    name = "modelstream"
    providers = ("modelstream",)
    create_path = ModelStream.create_path
    allow_oss = False


class OneTokenFake(_GatewayFake):
    name = "onetoken"
    providers = ("onetoken",)
    create_path = OneToken.create_path


class EvolinkFake(FakeDialect):
    name = "evolink"
    providers = ("evolink",)
    create_path = Evolink.create_path
    status_path = Evolink.status_path

    def claims(self, body: Any) -> bool:
        # ModelStream shares the path with the nested body.
        return (
            isinstance(body, dict)
            and "input" not in body
            and ("prompt" in body or "image_urls" in body)
        )

    def parse(self, body: Any, lookup: ImageLookup) -> EditSpec:
        return parse_flat(body, lookup=lookup)

    def error(self, problem: Problem, request_id: str, faults: Faults) -> tuple[int, Any]:
        return evolink_refusal(problem, faults)

    def job_id(self, serial: int, rng: random.Random, request_id: str) -> str:
        suffix = _b36(serial, 4) + _b36(rng.getrandbits(20), 4)
        return f"task-unified-{int(time.time())}-{suffix}"

    def callback_url(self, body: Any) -> str | None:
        url = body.get("callback_url") if isinstance(body, dict) else None
        return url if isinstance(url, str) else None

    def created(self, job: Job, estimated_time: int | None) -> Any:
        return evolink_created(job, estimated_time)

    def task(
        self, job: Job, now: float, urls: Urls, faults: Faults, estimated_time: int | None
    ) -> tuple[Any, bool]:
        return evolink_task(job, now, urls, estimated_time, faults.results_delay)


class VtrixFake(FakeDialect):
    name = "vtrix"
    providers = ("vtrix",)
    create_path = Vtrix.create_path
    status_path = Vtrix.status_path

    def parse(self, body: Any, lookup: ImageLookup) -> EditSpec:
        return parse_nested(body, models=UNDERSCORE_MODELS, lookup=lookup, allow_oss=False)

    def error(self, problem: Problem, request_id: str, faults: Faults) -> tuple[int, Any]:
        return vtrix_refusal(problem, request_id)

    def job_id(self, serial: int, rng: random.Random, request_id: str) -> str:
        return f"task-{serial:06d}{rng.getrandbits(40):010x}"

    def created(self, job: Job, estimated_time: int | None) -> Any:
        return vtrix_created(job)

    def task(
        self, job: Job, now: float, urls: Urls, faults: Faults, estimated_time: int | None
    ) -> tuple[Any, bool]:
        return vtrix_task(job, now, urls, faults.vtrix_error_form, faults.vtrix_item_type)


#: The dialects the fake speaks, by name. On a path two dialects share (ModelStream and
#: Evolink), the first that claims the body answers, else the last registered.
FAKE_DIALECTS: dict[str, FakeDialect] = {
    "dashscope": DashScopeFake(),
    "evolink": EvolinkFake(),
    "modelstream": ModelStreamFake(),
    "onetoken": OneTokenFake(),
    "vtrix": VtrixFake(),
}
