"""The template of synchronous dialects (DashScope, ModelStream, OneToken): the create's
answer is the result.

It mirrors :class:`~qwen_edit_async.providers._task.TaskProvider`: a dialect declares
``create_path``, ``error_codes`` and ``answer_body`` (the Struct of its success answer), and
writes ``build_create`` and ``result_images``; the template reads the answer, an error in a
200 answer, an answer without images and one listing too many.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from .._models import MAX_N, EditResult, GeneratedImage, Usage
from ._base import Provider, TaskAccepted
from ._wire import WireResponse, check_count, load, no_images

__all__ = ["SyncProvider"]

A = TypeVar("A", bound=WireResponse)


class SyncProvider(Provider, Generic[A]):
    """A provider whose create answers with the finished images."""

    mode = "sync"
    #: The Struct of this provider's success answers.
    answer_body: type[A]

    @abc.abstractmethod
    def result_images(self, answer: A) -> list[GeneratedImage]:
        """The images of a success answer (none: the template raises the right error)."""

    def answer_error(self, answer: A) -> bool:
        """Whether a 2xx answer is an error object instead of a result (read as an error)."""
        return False

    def answer_request_id(self, answer: A) -> str | None:
        """The request id the answer body carries, if it has one."""
        return None

    def result_usage(self, answer: A) -> dict[str, Any] | None:
        """The usage figures of a success answer, as given."""
        return None

    def parse_create(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> EditResult | TaskAccepted:
        if not 200 <= status < 300:
            raise self.parse_error(status, headers, body)
        answer, raw = load(body, self.answer_body, provider=self.name, status=status)
        rid = self.request_id(headers, self.answer_request_id(answer))
        if self.answer_error(answer):
            raise self.parse_error(status, headers, body)
        images = self.result_images(answer)
        if not images:
            raise no_images(self.name, status, rid, raw)
        if len(images) > MAX_N:  # the check itself only when it fails: every create reads this
            check_count(images, self.name, status, rid, raw)
        return EditResult(
            images=images,
            provider=self.name,
            request_id=rid,
            usage=Usage.from_raw(self.result_usage(answer)),
            raw=raw,
        )
