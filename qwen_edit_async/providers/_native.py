"""The native (DashScope) request body, also spoken by ModelStream, OneToken and Vtrix::

    {"model": "qwen-image-edit-plus",
     "input": {"messages": [{"role": "user", "content": [
         {"image": "https://..."}, {"image": "data:image/png;base64,..."}, {"text": "..."}]}]},
     "parameters": {"n": 2, "size": "1024*1536", ...}}

Images come first, in the caller's order (the prompt calls them "image 1/2/3" and the output
takes the last one's aspect ratio), then the single ``text`` item. Unset parameters are left
out, and so is ``parameters`` when none is set.

Images are sent as the ``str`` they arrive in: msgspec writes each into the output buffer once
(3 x 13 MB data URIs encode in about the time of one copy of the payload), which
pre-encoding them as ``msgspec.Raw`` could only add a copy to.
"""

from __future__ import annotations

from typing import Literal

from .._models import EditRequest
from ._base import HttpRequest
from ._wire import ENCODER, JSON_HEADERS, WireRequest, size_text


class ImageItem(WireRequest):
    image: str


class TextItem(WireRequest):
    text: str


class Message(WireRequest):
    role: Literal["user"]
    content: list[ImageItem | TextItem]


class Input(WireRequest):
    messages: list[Message]


class Parameters(WireRequest, kw_only=True):
    n: int | None = None
    negative_prompt: str | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    size: str | None = None
    seed: int | None = None


class NativeBody(WireRequest, kw_only=True):
    model: str
    input: Input
    parameters: Parameters | None = None


def native_body(request: EditRequest, images: list[str], model: str) -> NativeBody:
    """The body for ``request`` with ``images`` ready to send, for the wire id ``model``."""
    content: list[ImageItem | TextItem] = list(map(ImageItem, images))  # no frame per body
    content.append(TextItem(request.prompt))
    parameters = None
    if (
        request.n is not None
        or request.negative_prompt is not None
        or request.prompt_extend is not None
        or request.watermark is not None
        or request.size is not None
        or request.seed is not None
    ):
        parameters = Parameters(
            n=request.n,
            negative_prompt=request.negative_prompt,
            prompt_extend=request.prompt_extend,
            watermark=request.watermark,
            size=size_text(request, "*"),
            seed=request.seed,
        )
    return NativeBody(model=model, input=Input([Message("user", content)]), parameters=parameters)


def native_request(url: str, request: EditRequest, images: list[str], model: str) -> HttpRequest:
    """``POST url`` with the native body."""
    body = ENCODER.encode(native_body(request, images, model))
    return HttpRequest("POST", url, body, JSON_HEADERS)
