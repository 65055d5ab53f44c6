"""Evolink: a flat body, an asynchronous task, and polling.

Create ``POST /v1/images/generations`` with ``{"model", "prompt", "image_urls", ...}`` (URLs
only, ``size`` as ``WxH``), answered by a task object; poll ``GET /v1/tasks/{id}``::

    {"id": "task-unified-...", "status": "pending|processing|completed|failed",
     "progress": 0-100, "task_info": {"estimated_time": 30},
     "results": ["https://.../image.png"],                              (completed)
     "error": {"code": "content_policy_violation", "message": "..."}}   (failed)

HTTP errors are OpenAI-shaped, with ``code`` a string in current docs and an integer in
older ones (read by :func:`~qwen_edit_async.providers._wire.read_error`).
"""

from __future__ import annotations

from .._error_map import ErrorCodes
from .._models import EditRequest, GeneratedImage
from ._base import HttpRequest
from ._dashscope import DASHSCOPE_CODES
from ._openai import OPENAI_CODES
from ._task import TaskBody, TaskProvider, task_words
from ._wire import ENCODER, JSON_HEADERS, WireRequest, WireResponse, size_text, url_only

__all__ = ["EVOLINK_CODES", "Evolink"]

#: Evolink's own codes, beside OpenAI's (its HTTP errors are OpenAI's object) and DashScope's
#: (the model's owner, whose codes relays pass on). Its task errors list ``quota_exceeded``,
#: ``service_error``... as "retry later"; HTTP 402 ``quota_exceeded`` is the balance error.
EVOLINK_CODES = (
    DASHSCOPE_CODES
    | OPENAI_CODES
    | ErrorCodes(
        content_filter=frozenset({"content_policy_violation"}),
        quota=frozenset({"quota_exceeded", "insufficient_balance"}),
        not_found=frozenset({"invalid_task_id", "task_not_found", "not_found"}),
        transient=frozenset(
            {
                "quota_exceeded",
                "service_error",
                "generation_timeout",
                "resource_exhausted",
                "service_unavailable",
                "internal_error",
            }
        ),
    )
)


class _Body(WireRequest, kw_only=True):
    model: str
    prompt: str
    image_urls: list[str]
    n: int | None = None
    negative_prompt: str | None = None
    size: str | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    callback_url: str | None = None


class _TaskInfo(WireResponse):
    estimated_time: float | None = None


class _Url(WireResponse):
    url: str | None = None


class _Task(TaskBody):
    task_info: _TaskInfo | None = None
    # Documented as URL strings; objects with a ``url`` are read too.
    results: list[str | _Url] | None = None


class Evolink(TaskProvider[_Task]):
    """Evolink (``https://api.evolink.ai``): task mode, image URLs only, prompts up to 2000
    characters, optional ``callback_url``.

    >>> from qwen_edit_async import EditRequest
    >>> provider = Evolink()
    >>> req = provider.build_create(
    ...     EditRequest(images=["https://example.com/1.png"], prompt="Replace the background",
    ...                 size="1024*1024"),
    ...     ["https://example.com/1.png"])
    >>> req.body
    b'{"model":"qwen-image-edit-plus","prompt":"Replace the background","image_urls":["https://example.com/1.png"],"size":"1024x1024"}'
    >>> provider.build_status("task-unified-1757156493-imcg5zqt").url
    'https://api.evolink.ai/v1/tasks/task-unified-1757156493-imcg5zqt'
    """

    name = "evolink"
    default_base_url = "https://api.evolink.ai"
    env_var = "EVOLINK_API_KEY"
    create_path = "/v1/images/generations"
    status_path = "/v1/tasks/{task_id}"
    error_codes = EVOLINK_CODES
    # Documented: pending, processing, completed, failed; the rest are read for tolerance.
    status_words = task_words(
        pending=("pending", "queued", "submitted"),
        running=("processing", "in_progress", "running"),
        succeeded=("completed", "succeeded", "success"),
        failed=("failed", "failure", "error", "cancelled", "canceled"),
    )
    accepts_data_uri = False
    max_prompt = 2000
    supports_callback = True
    task_body = _Task
    progress_percent = True

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        body = _Body(
            model=self.wire_model(model),
            prompt=request.prompt,
            image_urls=url_only(self.name, images),
            n=request.n,
            negative_prompt=request.negative_prompt,
            size=size_text(request, "x"),
            prompt_extend=request.prompt_extend,
            watermark=request.watermark,
            seed=request.seed,
            callback_url=request.callback_url,
        )
        url = self.base_url + self.create_path
        return HttpRequest("POST", url, ENCODER.encode(body), JSON_HEADERS)

    def estimated_time(self, task: _Task) -> float | None:
        return task.task_info.estimated_time if task.task_info else None

    def result_images(self, task: _Task) -> list[GeneratedImage]:
        urls = (item if isinstance(item, str) else item.url for item in task.results or ())
        return [GeneratedImage(url=url) for url in urls if url]
