"""The template of task dialects (Evolink, Vtrix): a create answered by a task, then polls.

Both answer with a task object ``{"id", "status", "progress", "model", "usage", "error"}``;
each dialect declares its status words, paths and error codes and supplies where its images
are and its request body.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import quote

from .._error_map import task_error
from .._errors import QwenEditError, ValidationError
from .._models import EditResult, GeneratedImage, Usage
from ._base import HttpRequest, ProtocolError, Provider, TaskAccepted, TaskState, TaskStatus
from ._wire import (
    NO_HEADERS,
    ErrorDetail,
    WireResponse,
    check_count,
    error_fields,
    is_success,
    load,
    no_images,
)

__all__ = ["TaskBody", "TaskProvider", "task_segment", "task_words"]

logger = logging.getLogger("qwen_edit_async")

#: (provider, word) pairs already logged as unknown: each is logged once per process.
_UNKNOWN_WORDS: set[tuple[str, str]] = set()
_UNKNOWN_WORDS_MAX = 1000


class TaskBody(WireResponse):
    """The fields every task answer has; subclasses add where their images are."""

    id: str | None = None
    #: Vtrix's CLI shows the id under this name too.
    task_id: str | None = None
    status: str | None = None
    model: str | None = None
    progress: float | None = None
    usage: dict[str, Any] | None = None
    error: ErrorDetail | str | None = None


def task_words(
    *,
    pending: Iterable[str] = (),
    running: Iterable[str] = (),
    succeeded: Iterable[str] = (),
    failed: Iterable[str] = (),
) -> Mapping[str, TaskState]:
    """A dialect's ``status_words``: each word, lower-cased, to the state it means.

    >>> task_words(running=["Baking"], succeeded=["done"])["baking"]
    <TaskState.RUNNING: 'running'>
    """
    groups = (
        (TaskState.PENDING, pending),
        (TaskState.RUNNING, running),
        (TaskState.SUCCEEDED, succeeded),
        (TaskState.FAILED, failed),
    )
    return MappingProxyType(
        {word.strip().lower(): state for state, words in groups for word in words}
    )


def task_segment(task_id: str) -> str:
    """``task_id`` quoted as exactly one URL path segment.

    ``/`` and ``?`` are escaped; an empty id, ``.`` and ``..`` are refused with
    :class:`ValidationError`, because URL normalisation would turn them into another path
    (``/v1/tasks/..`` is ``/v1/``) and the request would reach a different endpoint.

    >>> task_segment("task-1/../x?y")
    'task-1%2F..%2Fx%3Fy'
    """
    if not isinstance(task_id, str) or task_id.strip() in ("", ".", ".."):
        raise ValidationError(
            f"task_id: {task_id!r} is not a task id (empty, '.' and '..' cannot be a URL "
            "path segment)",
            field="task_id",
        )
    return quote(task_id, safe="")


def fraction(value: float | None, *, percent: bool) -> float | None:
    """Progress as 0.0-1.0 from a percentage or a fraction, clamped."""
    if value is None:
        return None
    if percent or value > 1:
        value = value / 100
    return min(1.0, max(0.0, value))


B = TypeVar("B", bound=TaskBody)


class TaskProvider(Provider, Generic[B]):
    """A provider whose create answers with a task to poll.

    A dialect declares ``create_path``, ``status_path``, ``status_words``, ``error_codes``
    and ``task_body``, and writes ``build_create`` and ``result_images``; the template reads
    creates, statuses and failures. A status word it does not declare is logged once per
    word and read as running: the task exists and has not said it ended, so it keeps being
    checked (bounded by the job's deadline) rather than failing a job that may be billed.
    """

    mode = "task"
    status_path: ClassVar[str]
    #: The provider's status words, lower-cased, and what each means.
    status_words: ClassVar[Mapping[str, TaskState]]
    #: The Struct of this provider's task answers.
    task_body: type[B]
    #: Whether ``progress`` is a percentage (else a fraction 0.0-1.0).
    progress_percent = False

    def build_status(self, task_id: str) -> HttpRequest:
        url = self.base_url + self.status_path.format(task_id=task_segment(task_id))
        return HttpRequest("GET", url, None, NO_HEADERS)

    def task_state(self, word: str) -> TaskState:
        """The state for a status word, any case; an unknown word is running (and logged
        once per word)."""
        key = word.strip().lower()
        state = self.status_words.get(key)
        if state is not None:
            return state
        seen = (self.name, key)
        if seen not in _UNKNOWN_WORDS and len(_UNKNOWN_WORDS) < _UNKNOWN_WORDS_MAX:
            _UNKNOWN_WORDS.add(seen)
            logger.warning(
                "%s answered the unknown task status %r: read as running, the task keeps "
                "being checked until it ends or the job's deadline passes",
                self.name,
                key[:80],
            )
        return TaskState.RUNNING

    def _failure(
        self, error: ErrorDetail | str | None, task_id: str, request_id: str | None, raw: Any
    ) -> QwenEditError:
        """The error of a failed task from its ``error`` field (an object, a string or absent)."""
        code, message = error_fields(error)
        return task_error(
            provider=self.name,
            code=code,
            message=message,
            task_id=task_id,
            codes=self.error_codes,
            request_id=request_id,
            body=raw,
        )

    @abc.abstractmethod
    def result_images(self, task: B) -> list[GeneratedImage]:
        """The images of a completed task."""

    def estimated_time(self, task: B) -> float | None:
        """The provider's hint of how long the task takes, in seconds."""
        return None

    def result_model(self, task: B) -> str | None:
        """The canonical model name reported by the task."""
        return task.model

    def parse_create(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> EditResult | TaskAccepted:
        if not is_success(status):
            raise self.parse_error(status, headers, body)
        task, raw = load(body, self.task_body, provider=self.name, status=status)
        rid = self.request_id(headers)
        task_id = task.id or task.task_id
        if not task_id:
            if task.error is not None:
                # An error object in a 200 answer: read it as the error it is.
                raise self.parse_error(status, headers, body)
            raise ProtocolError(
                "the answer has no task id", provider=self.name, status=status, request_id=rid
            )
        return TaskAccepted(
            task_id=task_id, estimated_time=self.estimated_time(task), request_id=rid, raw=raw
        )

    def parse_status(
        self, task_id: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> TaskStatus:
        if not is_success(status):
            raise self.parse_error(status, headers, body, task_id=task_id)
        task, raw = load(body, self.task_body, provider=self.name, status=status)
        rid = self.request_id(headers)
        if task.status is None:
            if task.error is not None:
                # An error object instead of a task: the provider's verdict on this status
                # request, classified now rather than retried as an unreadable answer.
                raise self.parse_error(status, headers, body, task_id=task_id)
            raise ProtocolError(
                "the answer has no status",
                provider=self.name,
                status=status,
                request_id=rid,
                task_id=task_id,
            )
        state = self.task_state(task.status)
        progress = fraction(task.progress, percent=self.progress_percent)
        if state is TaskState.FAILED:
            error = self._failure(task.error, task_id, rid, raw)
            return TaskStatus(task_id, state, progress, error=error, raw=raw)
        if state is not TaskState.SUCCEEDED:
            return TaskStatus(task_id, state, progress, raw=raw)
        images = self.result_images(task)
        if not images:
            # Completed, results not attached yet (Evolink does this for a few seconds): no
            # result, and the error to raise if they never come. The poller checks again.
            error = no_images(self.name, status, rid, raw, task_id=task_id)
            return TaskStatus(task_id, state, progress, error=error, raw=raw)
        try:
            check_count(images, self.name, status, rid, raw, task_id=task_id)
        except QwenEditError as exc:
            return TaskStatus(task_id, TaskState.FAILED, progress, error=exc, raw=raw)
        result = EditResult(
            images=images,
            provider=self.name,
            model=self.result_model(task),
            task_id=task_id,
            request_id=rid,
            usage=Usage.from_raw(task.usage),
            raw=raw,
        )
        return TaskStatus(task_id, state, progress, result=result, raw=raw)
