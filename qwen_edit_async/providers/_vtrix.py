"""Vtrix (SeaCloud gateway): the native body with an underscored model id, a task, polling.

Create ``POST /model/v1/generation`` answered ``{"id", "status", "model"}``; poll
``GET /model/v1/generation/task/{id}``::

    {"id": "...", "status": "in_progress|pending|processing|completed|failed",
     "progress": 0.0-1.0,
     "output": [{"content": [{"type": "image", "url": "https://..."}]}],   (completed;
                 items may also be {"type": "image_url", "image_url": {"url": ...}})
     "usage": {"cost": "0.03", "quantity": 1, "unit_price": "0.03"},
     "error": "..." | {"code": 123, "error_message": "..."} | {"code": "...", "message": "..."}}

HTTP errors (401, 403 for a missing balance or permission, 429, 500) carry ``message`` or
``error`` (a string or an object); 403 ``{"error": "insufficient balance", ...}`` is the
balance error.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .._errors import APIError, api_error
from .._models import EditRequest, GeneratedImage
from ._base import HttpRequest, parse_retry_after
from ._native import native_request
from ._task import TaskBody, TaskProvider, task_segment
from ._wire import (
    NO_HEADERS,
    WireResponse,
    error_fields,
    fallback_message,
    load_error,
    request_id,
)

__all__ = ["Vtrix", "vtrix_error"]


class _Url(WireResponse):
    url: str | None = None


class _Content(WireResponse):
    type: str | None = None
    url: str | None = None
    # Typed items as OpenAI writes them: {"type": "image_url", "image_url": {"url": ...}}.
    image_url: _Url | str | None = None
    image: str | None = None

    def image_link(self) -> str | None:
        """The URL of an image-typed item (``image``, ``image_url``...; untyped counts)."""
        if self.type is not None and "image" not in self.type.lower():
            return None
        linked = self.image_url.url if isinstance(self.image_url, _Url) else self.image_url
        return self.url or linked or self.image or None


class _Output(WireResponse):
    content: list[_Content] = msgspec.field(default_factory=list)


class _Task(TaskBody):
    output: list[_Output] | None = None


def vtrix_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    task_id: str | None = None,
) -> APIError:
    """The error for Vtrix's ``{"message": ...}`` or ``{"error": "..." | {code, message}}``.

    A 403 whose message speaks of balance becomes
    :class:`~qwen_edit_async.InsufficientQuotaError` (decided by :func:`api_error`).
    """
    error, raw = load_error(body)
    code, message = error_fields(error.error)
    if error.message and message and message.lower() not in error.message.lower():
        # {"error": "insufficient balance", "message": "Forbidden"}: the cause is in
        # ``error``; keep both texts so the mapping reads it.
        message = f"{error.message}: {message}"
    return api_error(
        provider=provider,
        status=status,
        code=error.code if code is None else code,
        message=message or error.message or fallback_message(status, raw),
        request_id=request_id(headers, error.request_id),
        task_id=task_id,
        retry_after=parse_retry_after(headers),
        body=raw,
    )


class Vtrix(TaskProvider[_Task]):
    """Vtrix (``https://cloud.vtrix.ai``): task mode, the native body, URLs or data URIs.

    Model names are given in the canonical hyphen form and sent with underscores.

    >>> from qwen_edit_async import EditRequest
    >>> provider = Vtrix(model="qwen-image-edit-plus-2025-12-15")
    >>> provider.wire_model()
    'qwen_image_edit_plus_2025_12_15'
    >>> provider.build_create(EditRequest(images=["https://example.com/a.png"], prompt="x"),
    ...                       ["https://example.com/a.png"]).url
    'https://cloud.vtrix.ai/model/v1/generation'
    >>> provider.build_status("task-1").url
    'https://cloud.vtrix.ai/model/v1/generation/task/task-1'
    """

    name = "vtrix"
    default_base_url = "https://cloud.vtrix.ai"
    env_var = "VTRIX_API_KEY"
    task_body = _Task

    def wire_model(self, model: str | None = None) -> str:
        return (model or self.model).replace("-", "_")

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        url = self.base_url + "/model/v1/generation"
        return native_request(url, request, images, self.wire_model(model))

    def build_status(self, task_id: str) -> HttpRequest:
        url = f"{self.base_url}/model/v1/generation/task/{task_segment(task_id)}"
        return HttpRequest("GET", url, None, NO_HEADERS)

    def result_images(self, task: _Task) -> list[GeneratedImage]:
        links = (item.image_link() for output in task.output or () for item in output.content)
        return [GeneratedImage(url=link) for link in links if link]

    def result_model(self, task: _Task) -> str | None:
        # Back to the canonical hyphen form the caller used.
        return None if task.model is None else task.model.replace("_", "-")

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, *, task_id: str | None = None
    ) -> APIError:
        return vtrix_error(self.name, status, headers, body, task_id=task_id)
