"""OpenAI-shaped gateways (ModelStream, OneToken): the native body in, OpenAI's image answer out.

Both most likely relay to DashScope synchronously, so DashScope's codes (``DataInspectionFailed``,
``Throttling``...) surface inside OpenAI's error object::

    200  {"created": 1757156493, "data": [{"url": "https://...", "b64_json": null,
                                           "revised_prompt": "..."}]}
    4xx  {"error": {"message": "...", "type": "...", "param": null, "code": "DataInspectionFailed"}}

:func:`openai_error` reads that error object (``code`` a string, an integer or null) and is
also used by Evolink, whose errors have the same shape.

Relays built on new-api (which such gateways run) add three habits, all handled here: every
image carries ``"b64_json": ""`` beside its ``url`` (an empty string is absent); ``data[]`` has
one entry per DashScope *choice*, which holds all n images, so the images are taken from the
raw answer the relay keeps under ``metadata`` when it lists more; and upstream errors arrive
as ``"code": "bad_response_status_code"`` (or none) with the upstream status and message, so
the message decides the class (see :func:`~qwen_edit_async._errors.api_error`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from .._errors import APIError, ConfigurationError, api_error
from .._models import EditRequest, EditResult, GeneratedImage, Usage
from ._base import HttpRequest, Provider, TaskAccepted, parse_retry_after
from ._dashscope import NativeAnswer, native_images
from ._native import native_request
from ._wire import (
    ErrorDetail,
    WireResponse,
    check_count,
    error_fields,
    fallback_message,
    is_success,
    load,
    load_error,
    no_images,
    request_id,
)

__all__ = ["ModelStream", "OneToken", "openai_error"]


class _Image(WireResponse):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class _Answer(WireResponse):
    data: list[_Image] | None = None
    usage: dict[str, Any] | None = None
    error: ErrorDetail | str | None = None
    #: The upstream (DashScope) answer, as relays built on new-api keep it.
    metadata: Any = None


def _upstream(metadata: Any) -> NativeAnswer | None:
    """The raw DashScope answer kept under ``metadata`` (an object or its JSON text), or
    ``None`` when it is absent or not that shape."""
    if isinstance(metadata, (str, bytes)):
        try:
            metadata = msgspec.json.decode(metadata)
        except msgspec.DecodeError:
            return None
    if not isinstance(metadata, dict) or "output" not in metadata:
        return None
    try:
        return msgspec.convert(metadata, NativeAnswer)
    except msgspec.ValidationError:
        return None


def openai_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    task_id: str | None = None,
) -> APIError:
    """The error for an OpenAI-style ``{"error": {"code", "message", "type", "param"}}`` body.

    A relayed flat DashScope body (``{"code", "message", "request_id"}``) is read too.
    """
    error, raw = load_error(body)
    code, message = error_fields(error.error)
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


class _Gateway(Provider):
    """The native body sent to ``{base}{path}``, read in OpenAI's image shape."""

    path: ClassVar[str]

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        return native_request(self.base_url + self.path, request, images, self.wire_model(model))

    def parse_create(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> EditResult | TaskAccepted:
        if not is_success(status):
            raise self.parse_error(status, headers, body)
        answer, raw = load(body, _Answer, provider=self.name, status=status)
        rid = request_id(headers)
        if not answer.data and answer.error is not None:
            # Some gateways answer 200 with an error object.
            raise self.parse_error(status, headers, body)
        images = [
            GeneratedImage(url=item.url, b64_json=item.b64_json, revised_prompt=item.revised_prompt)
            for item in answer.data or ()
            # An empty string is no image: relays send "b64_json": "" beside every url.
            if item.url or item.b64_json
        ]
        kept = _upstream(answer.metadata)
        upstream = native_images(kept.output) if kept is not None else []
        if len(upstream) > len(images):
            # The relay made one data[] entry per DashScope choice, and DashScope puts all n
            # images in one choice: the raw answer it kept holds the images paid for.
            for image, item in zip(upstream, answer.data or (), strict=False):
                image.revised_prompt = item.revised_prompt or None
            images = upstream
        if not images:
            raise no_images(self.name, status, rid, raw)
        check_count(images, self.name, status, rid, raw)
        usage = answer.usage
        if usage is None and kept is not None:
            usage = kept.usage
        return EditResult(
            images=images,
            provider=self.name,
            request_id=rid,
            usage=Usage.from_raw(usage),
            raw=raw,
        )

    def parse_error(
        self, status: int, headers: Mapping[str, str], body: bytes, *, task_id: str | None = None
    ) -> APIError:
        return openai_error(self.name, status, headers, body, task_id=task_id)


class ModelStream(_Gateway):
    """ModelStream (``https://api.modelstream.ai``): synchronous, ``POST /v1/images/generations``
    even for edits. Takes URLs and data URIs.

    >>> from qwen_edit_async import EditRequest
    >>> provider = ModelStream()
    >>> provider.build_create(EditRequest(images=["https://example.com/a.png"], prompt="x"),
    ...                       ["https://example.com/a.png"]).url
    'https://api.modelstream.ai/v1/images/generations'
    """

    name = "modelstream"
    default_base_url = "https://api.modelstream.ai"
    env_var = "MODELSTREAM_API_KEY"
    path = "/v1/images/generations"


class OneToken(_Gateway):
    """OneToken: synchronous, ``POST {base_url}/v1/images/edits``. Takes URLs and data URIs.

    Its host is not published, so ``base_url`` is required.

    >>> from qwen_edit_async import EditRequest
    >>> OneToken(base_url="https://gateway.example.com").build_create(
    ...     EditRequest(images=["https://example.com/a.png"], prompt="x"),
    ...     ["https://example.com/a.png"]).url
    'https://gateway.example.com/v1/images/edits'
    """

    name = "onetoken"
    # No published host: the constructor insists on ``base_url`` instead.
    default_base_url = ""
    env_var = "ONETOKEN_API_KEY"
    path = "/v1/images/edits"

    def __init__(self, *, base_url: str | None = None, model: str | None = None) -> None:
        if not base_url:
            raise ConfigurationError(
                "onetoken: its base URL is not published; pass base_url=...",
                provider=self.name,
            )
        super().__init__(base_url=base_url, model=model)
