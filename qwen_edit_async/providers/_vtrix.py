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

import msgspec

from .._error_map import ErrorCodes
from .._models import EditRequest, GeneratedImage
from ._base import HttpRequest
from ._dashscope import DASHSCOPE_CODES
from ._native import native_request
from ._task import TaskBody, TaskProvider, task_words
from ._wire import WireResponse

__all__ = ["VTRIX_CODES", "Vtrix"]

#: Vtrix relays DashScope (its failed tasks carry DashScope's codes) and adds its own. Its
#: 403 ``{"error": "insufficient balance"}`` has no code: the message words decide.
VTRIX_CODES = DASHSCOPE_CODES | ErrorCodes(
    content_filter=frozenset({"sensitive_content", "data_inspection_failed"}),
    quota=frozenset({"insufficient_balance"}),
    not_found=frozenset({"task_not_found", "not_found"}),
)


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
    create_path = "/model/v1/generation"
    status_path = "/model/v1/generation/task/{task_id}"
    error_codes = VTRIX_CODES
    # Seen in its sources: in_progress, pending, processing, completed, failed (accept all);
    # the rest are read for tolerance.
    status_words = task_words(
        pending=("pending", "queued", "submitted"),
        running=("processing", "in_progress", "running"),
        succeeded=("completed", "succeeded", "success"),
        failed=("failed", "failure", "error", "cancelled", "canceled"),
    )
    task_body = _Task

    def wire_model(self, model: str | None = None) -> str:
        return (model or self.model).replace("-", "_")

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        url = self.base_url + self.create_path
        return native_request(url, request, images, self.wire_model(model))

    def result_images(self, task: _Task) -> list[GeneratedImage]:
        links = (item.image_link() for output in task.output or () for item in output.content)
        return [GeneratedImage(url=link) for link in links if link]

    def result_model(self, task: _Task) -> str | None:
        # Back to the canonical hyphen form the caller used.
        return None if task.model is None else task.model.replace("_", "-")
