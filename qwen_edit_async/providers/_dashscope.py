"""DashScope native (Alibaba Model Studio): synchronous, the connection stays open until the
images are ready.

Success ``{"output": {"choices": [{"message": {"content": [{"image": url}]}}]}, "usage": {...},
"request_id": ...}``; error ``{"request_id", "code", "message"}`` with ``code`` a string such
as ``InvalidParameter``, ``DataInspectionFailed`` or ``Throttling``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._error_map import ErrorCodes
from .._models import EditRequest, GeneratedImage
from ._base import HttpRequest
from ._native import native_request
from ._sync import SyncProvider
from ._wire import WireResponse

__all__ = ["DASHSCOPE_CODES", "DashScope", "DashScopeIntl", "NativeAnswer", "native_images"]

PATH = "/api/v1/services/aigc/multimodal-generation/generation"

#: DashScope's codes and what they mean. Every relay of DashScope (the OpenAI-shaped
#: gateways, Vtrix) passes them through, so those dialects speak them too.
DASHSCOPE_CODES = ErrorCodes(
    content_filter=frozenset({"DataInspectionFailed", "IPInfringementSuspect"}),
    quota=frozenset({"Arrearage", "AllocationQuota.FreeTierOnly"}),
    throttling=frozenset({"Throttling", "Throttling.RateQuota", "Throttling.BurstRate"}),
    # "Free allocated quota exceeded." is exhausted; "Allocated quota exceeded, please
    # increase your quota limit." is a per-period throttle.
    free_quota_or_throttling=frozenset({"Throttling.AllocationQuota"}),
    auth=frozenset({"InvalidApiKey"}),
    server=frozenset(
        {"InternalError", "InternalError.Algo", "InternalError.Timeout", "SystemError"}
    ),
    not_found=frozenset({"NotFound"}),
    transient=frozenset(
        {
            "InternalError",
            "InternalError.Algo",
            "InternalError.Timeout",
            "SystemError",
            "RequestTimeOut",
            "ServiceUnavailable",
            "Throttling",
            "Throttling.RateQuota",
            "Throttling.BurstRate",
        }
    ),
)


class _Content(WireResponse):
    image: str | None = None


class _Message(WireResponse):
    content: list[_Content] = msgspec.field(default_factory=list)


class _Choice(WireResponse):
    message: _Message | None = None


class _Output(WireResponse):
    choices: list[_Choice] = msgspec.field(default_factory=list)


class NativeAnswer(WireResponse):
    output: _Output | None = None
    usage: dict[str, Any] | None = None
    request_id: str | None = None
    code: str | int | None = None


def native_images(output: _Output | None) -> list[GeneratedImage]:
    """Every image of a native answer, across all choices (DashScope puts all n in one)."""
    if output is None:
        return []
    return [
        GeneratedImage(url=item.image)
        for choice in output.choices
        if choice.message is not None
        for item in choice.message.content
        if item.image
    ]


class DashScope(SyncProvider[NativeAnswer]):
    """Alibaba Model Studio in Beijing (``https://dashscope.aliyuncs.com``).

    Synchronous: give the transport a long read timeout. Takes URLs, data URIs and
    ``oss://`` temporary URLs; keys only work in their own region (see
    :class:`DashScopeIntl` for Singapore).

    >>> import json
    >>> from qwen_edit_async import EditRequest
    >>> provider = DashScope()
    >>> req = provider.build_create(
    ...     EditRequest(images=["https://example.com/a.png"], prompt="Make it snow"),
    ...     ["https://example.com/a.png"])
    >>> req.url
    'https://dashscope.aliyuncs.com/api/v1/services/aigc/multimodal-generation/generation'
    >>> json.loads(req.body)["input"]["messages"][0]["content"]
    [{'image': 'https://example.com/a.png'}, {'text': 'Make it snow'}]
    """

    name = "dashscope"
    default_base_url = "https://dashscope.aliyuncs.com"
    env_var = "DASHSCOPE_API_KEY"
    create_path = PATH
    error_codes = DASHSCOPE_CODES
    accepts_oss = True
    answer_body = NativeAnswer

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        return native_request(self.base_url + PATH, request, images, self.wire_model(model))

    def answer_error(self, answer: NativeAnswer) -> bool:
        return answer.output is None and bool(answer.code)

    def answer_request_id(self, answer: NativeAnswer) -> str | None:
        return answer.request_id

    def result_images(self, answer: NativeAnswer) -> list[GeneratedImage]:
        return native_images(answer.output)

    def result_usage(self, answer: NativeAnswer) -> dict[str, Any] | None:
        return answer.usage


class DashScopeIntl(DashScope):
    """Alibaba Model Studio in Singapore (``https://dashscope-intl.aliyuncs.com``).

    Same wire as :class:`DashScope`; use a key issued in the international region.

    >>> DashScopeIntl().base_url
    'https://dashscope-intl.aliyuncs.com'
    """

    name = "dashscope-intl"
    default_base_url = "https://dashscope-intl.aliyuncs.com"
