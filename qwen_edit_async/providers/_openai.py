"""OpenAI-shaped gateways (ModelStream, OneToken): the native body in, OpenAI's image answer out.

Both most likely relay to DashScope synchronously, so DashScope's codes (``DataInspectionFailed``,
``Throttling``...) surface inside OpenAI's error object::

    200  {"created": 1757156493, "data": [{"url": "https://...", "b64_json": null,
                                           "revised_prompt": "..."}]}
    4xx  {"error": {"message": "...", "type": "...", "param": null, "code": "DataInspectionFailed"}}

:func:`~qwen_edit_async.providers._wire.read_error` reads that error object (``code`` a
string, an integer or null), as it reads every error shape.

Relays built on new-api (which such gateways run) add three habits, all handled here: every
image carries ``"b64_json": ""`` beside its ``url`` (an empty string is absent); ``data[]`` has
one entry per DashScope *choice*, which holds all n images, so the images are taken from the
raw answer the relay keeps under ``metadata`` when it lists more; and upstream errors arrive
as ``"code": "bad_response_status_code"`` (or none) with the upstream status and message, so
the message decides the class (see :func:`~qwen_edit_async._errors.api_error`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._error_map import ErrorCodes
from .._errors import ConfigurationError
from .._models import EditRequest, GeneratedImage
from ._base import HttpRequest
from ._dashscope import DASHSCOPE_CODES, NativeAnswer, native_images
from ._native import native_request
from ._sync import SyncProvider
from ._wire import ErrorDetail, WireResponse

__all__ = ["OPENAI_CODES", "ModelStream", "OneToken"]

#: The codes of OpenAI's error object as gateways (new-api and its forks) use them.
OPENAI_CODES = ErrorCodes(
    content_filter=frozenset({"content_policy_violation", "content_filter"}),
    quota=frozenset({"insufficient_quota", "insufficient_user_quota"}),
    throttling=frozenset({"rate_limit_exceeded"}),
    auth=frozenset({"invalid_api_key"}),
)


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


class _Gateway(SyncProvider[_Answer]):
    """The native body sent to ``{base}{create_path}``, read in OpenAI's image shape."""

    # They relay DashScope, whose codes surface inside OpenAI's error object.
    error_codes = DASHSCOPE_CODES | OPENAI_CODES
    answer_body = _Answer

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        url = self.base_url + self.create_path
        return native_request(url, request, images, self.wire_model(model))

    def answer_error(self, answer: _Answer) -> bool:
        # Some gateways answer 200 with an error object.
        return not answer.data and answer.error is not None

    def result_images(self, answer: _Answer) -> list[GeneratedImage]:
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
        return images

    def result_usage(self, answer: _Answer) -> dict[str, Any] | None:
        if answer.usage is not None:
            return answer.usage
        kept = _upstream(answer.metadata)
        return None if kept is None else kept.usage


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
    create_path = "/v1/images/generations"


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
    create_path = "/v1/images/edits"

    def __init__(self, *, base_url: str | None = None, model: str | None = None) -> None:
        if not base_url:
            raise ConfigurationError(
                "onetoken: its base URL is not published; pass base_url=...",
                provider=self.name,
            )
        super().__init__(base_url=base_url, model=model)
