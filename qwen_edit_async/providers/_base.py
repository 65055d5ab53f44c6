"""What every provider dialect is: pure functions from a request to bytes and back.

A dialect never does I/O. It builds an :class:`HttpRequest` (method, URL, headers without the
API key, JSON bytes) and reads ``(status, headers, body)`` into a typed answer:

- a finished :class:`~qwen_edit_async.EditResult` (synchronous providers),
- a :class:`TaskAccepted` with the task id and its hints (task providers),
- a :class:`TaskStatus` when polling,
- or it raises the right error from :mod:`qwen_edit_async._errors`.

Adding a provider is one module with one :class:`Provider` subclass and one registry line.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

import msgspec

from .._error_map import NO_CODES, ErrorCodes, api_error
from .._errors import (
    APIError,
    ConfigurationError,
    ProtocolError,
    QwenEditError,
    ValidationError,
)
from .._models import EditRequest, EditResult
from .._urls import is_http_url
from ._wire import header, parse_retry_after, read_error

__all__ = [
    "HttpRequest",
    "ProtocolError",
    "Provider",
    "TaskAccepted",
    "TaskState",
    "TaskStatus",
    "parse_retry_after",
]

P = TypeVar("P", bound="Provider")


class HttpRequest(msgspec.Struct, frozen=True, gc=False):
    """A request to send. ``headers`` never holds the API key: the transport adds it.

    A frozen Struct: one is built per create, and a frozen dataclass took five times as
    long to make. ``gc=False``: it holds bytes and text only, never a cycle.

    >>> HttpRequest("GET", "https://example.com/v1/tasks/t-1").body is None
    True
    """

    method: Literal["GET", "POST"]
    url: str
    body: bytes | None = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskAccepted:
    """A task provider accepted a job: poll ``task_id`` for its end."""

    task_id: str
    #: The provider's hint of how long the task takes, in seconds.
    estimated_time: float | None = None
    request_id: str | None = None
    raw: Any = None


class TaskState(enum.Enum):
    """Where a task stands, whatever words the provider uses."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskStatus:
    """One status answer. ``result`` is set when it succeeded, ``error`` when it failed.

    A ``SUCCEEDED`` answer without ``result`` says the task completed before its results
    were attached: the poller checks again a few times, then raises ``error``.
    """

    task_id: str
    state: TaskState
    #: Progress from 0.0 to 1.0 when the provider reports one.
    progress: float | None = None
    result: EditResult | None = None
    error: QwenEditError | None = None
    raw: Any = None


def check_base_url(url: str, *, provider: str | None = None) -> str:
    """``url`` without its trailing slash, or :class:`ConfigurationError` if it is not an
    http(s) root URL (``127.0.0.1:8765`` without a scheme would never reach a server).

    >>> check_base_url("http://127.0.0.1:8000/")
    'http://127.0.0.1:8000'
    """
    problem = None
    if not isinstance(url, str) or not is_http_url(url):
        problem = "it must start with http:// or https://"
    elif any(c.isspace() or ord(c) < 32 for c in url):
        problem = "it must not contain spaces or control characters"
    else:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            problem = f"it cannot be parsed ({exc})"
        else:
            if not parts.hostname:
                problem = "it has no host"
            elif parts.query or parts.fragment:
                problem = "it must not have a query or a fragment"
    if problem is not None:
        raise ConfigurationError(
            f"base_url: {url!r} is not an http(s) root URL: {problem}; give scheme and host, "
            "for example 'https://dashscope-intl.aliyuncs.com' or 'http://127.0.0.1:8000'",
            provider=provider,
        )
    return url.rstrip("/")


class Provider(abc.ABC):
    """A wire dialect of qwen-image-edit-plus, bound to a base URL and a default model.

    Subclasses declare their vocabulary as class attributes: paths, the auth and request-id
    headers, what their error codes mean (``error_codes``), and what they accept, so bad
    combinations fail before any request. They implement the build/parse methods, usually by
    filling in :class:`~qwen_edit_async.providers._sync.SyncProvider` or
    :class:`~qwen_edit_async.providers._task.TaskProvider`.
    """

    #: Registry name, e.g. ``"evolink"``.
    name: ClassVar[str]
    #: Root URL (scheme and host, plus a prefix only where the gateway adds one).
    default_base_url: ClassVar[str]
    #: Path of the request that starts an edit, after ``base_url``.
    create_path: ClassVar[str]
    #: Path of a task's status, ``{task_id}`` where the id goes (task providers only).
    status_path: ClassVar[str | None] = None
    #: The request header carrying the API key, and the scheme written before the key.
    auth_header: ClassVar[str] = "Authorization"
    auth_scheme: ClassVar[str | None] = "Bearer"
    #: Answer headers holding the request id, tried in order when the body has none.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-dashscope-request-id", "x-request-id")
    #: What the provider's own error codes mean (statuses and message words are shared).
    error_codes: ClassVar[ErrorCodes] = NO_CODES
    #: The provider's own API key variable, read after ``QWEN_EDIT_API_KEY``.
    env_var: ClassVar[str | None] = None
    #: ``"sync"``: the create answers with the result. ``"task"``: poll a task id.
    mode: ClassVar[Literal["sync", "task"]] = "sync"
    #: Whether images may be sent inline as data URIs (else URLs only).
    accepts_data_uri: ClassVar[bool] = True
    #: Whether ``oss://`` temporary URLs are understood.
    accepts_oss: ClassVar[bool] = False
    #: Longest prompt the provider keeps (longer ones would be cut silently upstream).
    max_prompt: ClassVar[int] = 800
    #: Whether ``callback_url`` is supported.
    supports_callback: ClassVar[bool] = False
    #: Status requests per second the provider tolerates, when documented.
    poll_rate_limit: ClassVar[float | None] = None

    default_model: ClassVar[str] = "qwen-image-edit-plus"

    def __init__(self, *, base_url: str | None = None, model: str | None = None) -> None:
        self.base_url = check_base_url(base_url or self.default_base_url, provider=self.name)
        self.model = model or self.default_model

    def replace(self: P, *, base_url: str | None = None, model: str | None = None) -> P:
        """A copy with another base URL or default model."""
        return type(self)(base_url=base_url or self.base_url, model=model or self.model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def is_task(self) -> bool:
        return self.mode == "task"

    def authorization(self, api_key: str) -> dict[str, str]:
        """The header that carries ``api_key``, e.g. ``{"Authorization": "Bearer k"}``."""
        value = api_key if self.auth_scheme is None else f"{self.auth_scheme} {api_key}"
        return {self.auth_header: value}

    def request_id(self, headers: Mapping[str, str], from_body: str | None = None) -> str | None:
        """The provider's id of a request: the one in the body, else from its headers."""
        return from_body or header(headers, *self.request_id_headers)

    # -- validation ---------------------------------------------------------------------

    def check(self, request: EditRequest, *, model: str | None = None) -> None:
        """Raise :class:`ValidationError` for what this provider would refuse or cut.

        Called before a request takes a slot. The base checks the prompt length, callback
        support, ``oss://`` inputs and ``n`` for the single-output model.
        """
        if len(request.prompt) > self.max_prompt:
            raise ValidationError(
                f"prompt: {len(request.prompt)} characters; {self.name} keeps at most "
                f"{self.max_prompt} and would cut the rest silently",
                field="prompt",
                provider=self.name,
            )
        if request.callback_url is not None and not self.supports_callback:
            raise ValidationError(
                f"callback_url: {self.name} does not support completion callbacks",
                field="callback_url",
                provider=self.name,
            )
        for i, image in enumerate(() if self.accepts_oss else request.images):
            if isinstance(image, str) and image.startswith("oss://"):
                raise ValidationError(
                    f"images[{i}]: oss:// URLs are understood by DashScope only, not {self.name}",
                    field=f"images[{i}]",
                    provider=self.name,
                )
        chosen = model or self.model
        if chosen == "qwen-image-edit" and (request.n or 1) > 1:
            raise ValidationError(
                f"n: {request.n}; qwen-image-edit makes one image (use qwen-image-edit-plus)",
                field="n",
                provider=self.name,
            )

    def wire_model(self, model: str | None = None) -> str:
        """The provider's id for a canonical model name."""
        return model or self.model

    # -- the wire -----------------------------------------------------------------------

    @abc.abstractmethod
    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        """The request that starts an edit. ``images`` are ready to send (URLs or data URIs)."""

    @abc.abstractmethod
    def parse_create(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> EditResult | TaskAccepted:
        """Read the create answer; raise the right error for an error answer."""

    def build_status(self, task_id: str) -> HttpRequest:
        """The status request of a task (task providers)."""
        raise NotImplementedError(f"{self.name} has no tasks to poll")

    def parse_status(
        self, task_id: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> TaskStatus:
        """Read a status answer; raise the right error for an error answer."""
        raise NotImplementedError(f"{self.name} has no tasks to poll")

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, *, task_id: str | None = None
    ) -> APIError:
        """The error for an error answer: its body read by the one error reader, its class
        decided by the shared mapping with this dialect's ``error_codes``."""
        answer = read_error(status, body)
        return api_error(
            provider=self.name,
            status=status,
            code=answer.code,
            message=answer.message,
            codes=self.error_codes,
            request_id=self.request_id(headers, answer.request_id),
            task_id=task_id,
            retry_after=parse_retry_after(headers),
            body=answer.raw,
        )
