"""Request bodies in, a validated :class:`EditSpec` out, or a :class:`Problem` raised.

Two body shapes exist: the nested DashScope body (DashScope, ModelStream, OneToken, Vtrix)
and Evolink's flat body. The rules are the providers' documented ones: one text, 1-3
images, n 1-6, size sides 512-2048 snapped to multiples of 16, prompt truncated at 800
characters (Evolink: refused over 2000).
"""

from __future__ import annotations

import binascii
import io
import ipaddress
import math
import re
from base64 import b64decode
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import imagesize

from ._problems import Problem

__all__ = [
    "HYPHEN_MODELS",
    "MAX_IMAGE_BYTES",
    "UNDERSCORE_MODELS",
    "EditSpec",
    "ImageLookup",
    "default_size",
    "parse_flat",
    "parse_nested",
    "snap",
]

HYPHEN_MODELS = frozenset(
    {
        "qwen-image-edit-plus",
        "qwen-image-edit-plus-2025-10-30",
        "qwen-image-edit-plus-2025-12-15",
        "qwen-image-edit-max",
        "qwen-image-edit",
    }
)
UNDERSCORE_MODELS = frozenset(m.replace("-", "_") for m in HYPHEN_MODELS)
_SINGLE_IMAGE_MODELS = frozenset({"qwen-image-edit", "qwen_image_edit"})

MAX_IMAGE_BYTES = 10 * 1024 * 1024
DASHSCOPE_PROMPT_LIMIT = 800
EVOLINK_PROMPT_LIMIT = 2000
NEGATIVE_PROMPT_LIMIT = 500
SEED_MAX = 2147483647
_SIZE_STAR = re.compile(r"\s*(\d{1,5})\s*\*\s*(\d{1,5})\s*")
_SIZE_X = re.compile(r"\s*(\d{1,5})\s*x\s*(\d{1,5})\s*")

#: ``url -> (width, height)`` when known, ``None`` when unknown (assumed 1:1); raises
#: ``Problem("download_failed")`` for a URL the provider could not fetch.
ImageLookup = Callable[[str], "tuple[int, int] | None"]


class EditSpec:
    """A request that passed validation, reduced to what the fake needs."""

    __slots__ = ("height", "model", "n", "prompt", "prompt_extend", "seed", "width")

    def __init__(
        self,
        *,
        model: str,
        prompt: str,
        n: int,
        width: int,
        height: int,
        prompt_extend: bool,
        seed: int | None,
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.n = n
        self.width = width
        self.height = height
        self.prompt_extend = prompt_extend
        self.seed = seed

    @property
    def revised_prompt(self) -> str | None:
        """What the gateways report as the rewritten prompt (``None`` without extension)."""
        return f"{self.prompt} (refined)" if self.prompt_extend else None


def snap(side: int) -> int:
    """Nearest multiple of 16, ties going down (1033 -> 1040, 1032 -> 1024)."""
    return max(16, (side + 7) // 16 * 16)


def default_size(dims: tuple[int, int] | None) -> tuple[int, int]:
    """About 1024x1024 pixels in total at the aspect ratio of ``dims`` (1:1 when unknown)."""
    if dims is None:
        return 1024, 1024
    ratio = dims[0] / dims[1]
    width = math.sqrt(1024 * 1024 * ratio)
    return snap(round(width)), snap(round(width / ratio))


def _parse_size(value: object, pattern: re.Pattern[str], form: str) -> tuple[int, int]:
    if not isinstance(value, str):
        raise Problem("invalid", f"size must be a string like {form}", param="size")
    match = pattern.fullmatch(value)
    if match is None:
        raise Problem("invalid", f"size {value!r} is not in the form {form}", param="size")
    width, height = int(match.group(1)), int(match.group(2))
    if not (512 <= width <= 2048 and 512 <= height <= 2048):
        raise Problem(
            "invalid",
            f"size {value!r}: width and height must each be between 512 and 2048",
            param="size",
        )
    return snap(width), snap(height)


def _int_in(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Problem("invalid", f"{name} must be an integer in [{low}, {high}]", param=name)
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise Problem("invalid", f"{name} must be a boolean", param=name)
    return value


def _optional_str(value: object, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise Problem("invalid", f"{name} must be a string", param=name)


def _http_url(value: str) -> bool:
    """An http(s) URL, the scheme in any case (as providers read it)."""
    return value[:8].lower().startswith(("http://", "https://"))


def data_uri_dims(uri: str, param: str) -> tuple[int, int]:
    """Decode a ``data:image/...;base64,`` URI and read its dimensions."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.endswith(";base64") or not header[5:].startswith("image/"):
        raise Problem(
            "bad_url", f"{param}: data URI must be data:image/<type>;base64,...", param=param
        )
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise Problem("too_large", f"{param}: image is larger than 10 MB", param=param)
    try:
        raw = b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Problem("invalid", f"{param}: data URI is not valid base64", param=param) from None
    width, height = imagesize.get(io.BytesIO(raw))
    if width <= 0 or height <= 0:
        raise Problem(
            "unsupported_format", f"{param}: the image format is not supported", param=param
        )
    return int(width), int(height)


def _image_dims(
    ref: str, index: int, lookup: ImageLookup, *, allow_oss: bool, param: str
) -> tuple[int, int] | None:
    where = f"{param}[{index}]"
    if ref.startswith("data:"):
        return data_uri_dims(ref, where)
    if _http_url(ref):
        return lookup(ref)
    if allow_oss and ref.startswith("oss://"):
        return None
    raise Problem("bad_url", f"{where}: {ref[:60]!r} is not a valid image URL", param=where)


def _nested_model(body: Any, models: frozenset[str]) -> str:
    if not isinstance(body, dict):
        raise Problem("bad_json", "request body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise Problem("empty_model", "Model can not be empty.", param="model")
    if not isinstance(model, str) or model not in models:
        raise Problem("unknown_model", "Model not exist.", param="model")
    return model


def _nested_content(body: dict[str, Any]) -> list[Any]:
    """The content list of the single user message."""
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        raise Problem("empty_input", "Required parameter input missing.", param="input")
    messages = inp.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Problem("empty_input", "input.messages must be a non-empty list.", param="messages")
    if len(messages) != 1:
        raise Problem(
            "invalid", "Only single-turn requests are supported: one message.", param="messages"
        )
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        raise Problem("invalid", "The message must have role 'user'.", param="messages")
    content = message.get("content")
    if not isinstance(content, list):
        raise Problem("invalid", "message content must be a list.", param="content")
    return content


def _images_and_text(content: list[Any]) -> tuple[list[str], str]:
    """The image references, in order, and the one text of a content list."""
    images: list[str] = []
    texts: list[str] = []
    for item in content:
        if not isinstance(item, dict) or len(item) != 1:
            raise Problem(
                "invalid",
                "each content item must be {'image': ...} or {'text': ...}",
                param="content",
            )
        ((key, value),) = item.items()
        if key not in ("image", "text") or not isinstance(value, str):
            raise Problem(
                "invalid",
                f"unsupported content item {key!r}; expected image or text",
                param="content",
            )
        (images if key == "image" else texts).append(value)
    if not texts or not texts[0]:
        raise Problem("invalid", "The text field in content is required.", param="text")
    if len(texts) > 1:
        raise Problem("invalid", "Only one text item is supported in content.", param="text")
    if not 1 <= len(images) <= 3:
        raise Problem(
            "invalid", "The number of input images must be between 1 and 3.", param="image"
        )
    return images, texts[0]


def parse_nested(
    body: Any,
    *,
    models: frozenset[str],
    lookup: ImageLookup,
    allow_oss: bool = True,
) -> EditSpec:
    """Validate a DashScope-shaped body (``model``, ``input.messages``, ``parameters``)."""
    model = _nested_model(body, models)
    images, text = _images_and_text(_nested_content(body))
    dims = [
        _image_dims(ref, i, lookup, allow_oss=allow_oss, param="image")
        for i, ref in enumerate(images)
    ]
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        raise Problem("invalid", "parameters must be an object.", param="parameters")
    n = _int_in(params.get("n", 1), "n", 1, 6)
    if n > 1 and model in _SINGLE_IMAGE_MODELS:
        raise Problem("invalid", f"{model} generates exactly one image: n must be 1.", param="n")
    size = params.get("size")
    if size is None or model in _SINGLE_IMAGE_MODELS:
        width, height = default_size(dims[-1])
    else:
        width, height = _parse_size(size, _SIZE_STAR, "W*H")
    _optional_str(params.get("negative_prompt"), "negative_prompt")
    prompt_extend = _bool(params.get("prompt_extend", True), "prompt_extend")
    _bool(params.get("watermark", False), "watermark")
    seed = params.get("seed")
    if seed is not None:
        seed = _int_in(seed, "seed", 0, SEED_MAX)
    return EditSpec(
        model=model,
        prompt=text[:DASHSCOPE_PROMPT_LIMIT],
        n=n,
        width=width,
        height=height,
        prompt_extend=prompt_extend,
        seed=seed,
    )


def _check_callback(url: object) -> None:
    if not isinstance(url, str) or len(url) > 2048:
        raise Problem(
            "invalid", "callback_url must be a URL of at most 2048 characters", param="callback_url"
        )
    if _fake_loopback(url):
        return  # the fake alone allows http(s) loopback URLs: the only ones it calls
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise Problem("invalid", "callback_url must be an https URL", param="callback_url")
    host = parts.hostname
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise Problem(
                "invalid", "callback_url must not point to a private address", param="callback_url"
            ) from None
        return
    if address.is_private or address.is_loopback or address.is_link_local:
        raise Problem(
            "invalid", "callback_url must not point to a private address", param="callback_url"
        )


def _fake_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:  # lower case
        return False
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _flat_image_dims(urls: Any, lookup: ImageLookup) -> list[tuple[int, int] | None]:
    """The dimensions of Evolink's ``image_urls`` (1 to 3 http(s) URLs, no inline data)."""
    if not isinstance(urls, list) or not urls:
        raise Problem("invalid", "image_urls is required (1 to 3 URLs)", param="image_urls")
    if len(urls) > 3:
        raise Problem("invalid", "image_urls takes at most 3 images", param="image_urls")
    dims: list[tuple[int, int] | None] = []
    for i, url in enumerate(urls):
        where = f"image_urls[{i}]"
        if not isinstance(url, str):
            raise Problem("invalid", f"{where} must be a string URL", param="image_urls")
        if not _http_url(url):
            raise Problem(
                "bad_url",
                f"{where}: only http(s) image URLs are accepted (no base64)",
                param="image_urls",
            )
        dims.append(lookup(url))
    return dims


def parse_flat(body: Any, *, lookup: ImageLookup) -> EditSpec:
    """Validate Evolink's flat body (``prompt``, ``image_urls``, ``size`` as ``WxH``)."""
    if not isinstance(body, dict):
        raise Problem("bad_json", "request body must be a JSON object")
    model = body.get("model")
    if model is None or model == "":
        raise Problem("empty_model", "model is required", param="model")
    if not isinstance(model, str) or model not in HYPHEN_MODELS:
        raise Problem("unknown_model", f"model {str(model)[:80]!r} is not supported", param="model")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise Problem("invalid", "prompt is required", param="prompt")
    if len(prompt) > EVOLINK_PROMPT_LIMIT:
        raise Problem(
            "invalid", f"prompt is longer than {EVOLINK_PROMPT_LIMIT} characters", param="prompt"
        )
    dims = _flat_image_dims(body.get("image_urls"), lookup)
    n = _int_in(body.get("n", 1), "n", 1, 6)
    if n > 1 and model in _SINGLE_IMAGE_MODELS:
        raise Problem("invalid", f"{model} generates exactly one image: n must be 1", param="n")
    size = body.get("size")
    if size is None:
        width, height = default_size(dims[-1])
    else:
        if n != 1:
            raise Problem("invalid", "size is only available when n is 1", param="size")
        width, height = _parse_size(size, _SIZE_X, "WxH")
    _optional_str(body.get("negative_prompt"), "negative_prompt")
    prompt_extend = _bool(body.get("prompt_extend", True), "prompt_extend")
    _bool(body.get("watermark", False), "watermark")
    seed = body.get("seed")
    if seed is not None:
        seed = _int_in(seed, "seed", 0, SEED_MAX)
    if body.get("callback_url") is not None:
        _check_callback(body["callback_url"])
    return EditSpec(
        model=model,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        prompt_extend=prompt_extend,
        seed=seed,
    )
