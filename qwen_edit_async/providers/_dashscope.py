"""DashScope native (Alibaba Model Studio): synchronous, the connection stays open until the
images are ready.

Success ``{"output": {"choices": [{"message": {"content": [{"image": url}]}}]}, "usage": {...},
"request_id": ...}``; error ``{"request_id", "code", "message"}`` with ``code`` a string such
as ``InvalidParameter``, ``DataInspectionFailed`` or ``Throttling``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._errors import APIError, api_error
from .._models import EditRequest, EditResult, GeneratedImage, Usage
from ._base import HttpRequest, Provider, TaskAccepted, parse_retry_after
from ._native import native_request
from ._wire import (
    WireResponse,
    check_count,
    fallback_message,
    is_success,
    load,
    load_error,
    no_images,
    request_id,
)

__all__ = ["DashScope", "DashScopeIntl", "NativeAnswer", "dashscope_error", "native_images"]

PATH = "/api/v1/services/aigc/multimodal-generation/generation"


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


def dashscope_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    task_id: str | None = None,
) -> APIError:
    """The error for DashScope's flat ``{"request_id", "code", "message"}`` body."""
    error, raw = load_error(body)
    return api_error(
        provider=provider,
        status=status,
        code=error.code,
        message=error.message or fallback_message(status, raw),
        request_id=request_id(headers, error.request_id),
        task_id=task_id,
        retry_after=parse_retry_after(headers),
        body=raw,
    )


class DashScope(Provider):
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
    mode = "sync"
    accepts_oss = True

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        return native_request(self.base_url + PATH, request, images, self.wire_model(model))

    def parse_create(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> EditResult | TaskAccepted:
        if not is_success(status):
            raise self.parse_error(status, headers, body)
        answer, raw = load(body, NativeAnswer, provider=self.name, status=status)
        rid = request_id(headers, answer.request_id)
        if answer.output is None and answer.code:
            raise self.parse_error(status, headers, body)
        images = native_images(answer.output)
        if not images:
            raise no_images(self.name, status, rid, raw)
        check_count(images, self.name, status, rid, raw)
        return EditResult(
            images=images,
            provider=self.name,
            request_id=rid,
            usage=Usage.from_raw(answer.usage),
            raw=raw,
        )

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, *, task_id: str | None = None
    ) -> APIError:
        return dashscope_error(self.name, status, headers, body, task_id=task_id)


class DashScopeIntl(DashScope):
    """Alibaba Model Studio in Singapore (``https://dashscope-intl.aliyuncs.com``).

    Same wire as :class:`DashScope`; use a key issued in the international region.

    >>> DashScopeIntl().base_url
    'https://dashscope-intl.aliyuncs.com'
    """

    name = "dashscope-intl"
    default_base_url = "https://dashscope-intl.aliyuncs.com"
