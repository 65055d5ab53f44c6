"""The payload structs: what a user asks for and what a provider gives back.

Requests are validated when they are constructed, before any network I/O: a bad value raises
:class:`~qwen_edit_async.ValidationError` naming the field and the rule. Provider-specific
limits (prompt length, URL-only inputs) are checked by the provider when a client is given
the request.
"""

from __future__ import annotations

import base64
import binascii
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import msgspec

from ._errors import QwenEditError, ValidationError
from ._images import ImageInput, check_image
from ._size import Size, SizeLike

__all__ = [
    "MAX_IMAGES",
    "MAX_N",
    "MAX_NEGATIVE_PROMPT",
    "MAX_SEED",
    "EditRequest",
    "EditResult",
    "GeneratedImage",
    "ImageValue",
    "Outcome",
    "RequestLike",
    "Size",
    "SizeLike",
    "Usage",
    "as_request",
    "request_from",
]

#: One image of a built request: a URL or data URI, a local file, or raw bytes.
ImageValue = Union[str, bytes, pathlib.Path]

MAX_IMAGES = 3
MAX_N = 6
MAX_NEGATIVE_PROMPT = 500
MAX_SEED = 2_147_483_647


def _optional_bool(name: str, value: object) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValidationError(f"{name}: {value!r} is not a boolean; use True or False", field=name)


def _check_unicode(name: str, value: str) -> None:
    # A lone surrogate (from a bad decode or an escaped JSON string) cannot be sent as UTF-8:
    # refuse it here rather than fail with UnicodeEncodeError halfway through a request.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{name}: character {exc.start} is a lone surrogate ({value[exc.start]!a}); "
            "text must be valid Unicode",
            field=name,
        ) from None


def _int_in(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"{name}: {value!r} is not an integer; it must be a whole number from {low} to {high}",
            field=name,
        )
    if not low <= value <= high:
        raise ValidationError(
            f"{name}: {value} is out of range; it must be from {low} to {high}", field=name
        )


#: The field names of the images, made once (every request used to format them anew).
_IMAGE_FIELDS = tuple(f"images[{i}]" for i in range(MAX_IMAGES))


def _normalized_images(images: object) -> tuple[ImageValue, ...]:
    if type(images) is list or type(images) is tuple:
        pass  # the usual forms first: isinstance() against the ABCs below costs more
    elif isinstance(images, (str, bytes, os.PathLike)):
        images = [images]
    elif not isinstance(images, Sequence):
        raise ValidationError(
            f"images: {type(images).__name__} is not a list; give 1 to {MAX_IMAGES} "
            "images (paths, URLs, data URIs or bytes)",
            field="images",
        )
    if not 1 <= len(images) <= MAX_IMAGES:
        raise ValidationError(
            f"images: {len(images)} given; an edit takes 1 to {MAX_IMAGES} images",
            field="images",
        )
    return tuple([check_image(image, _IMAGE_FIELDS[i]) for i, image in enumerate(images)])


def _check_prompt(prompt: object) -> None:
    if not isinstance(prompt, str):
        raise ValidationError(
            f"prompt: {type(prompt).__name__} is not text; give a non-empty string",
            field="prompt",
        )
    if not prompt.strip():
        raise ValidationError("prompt: it is empty; an edit needs an instruction", field="prompt")
    _check_unicode("prompt", prompt)


def _check_negative_prompt(text: object) -> None:
    if not isinstance(text, str):
        raise ValidationError(
            f"negative_prompt: {type(text).__name__} is not text", field="negative_prompt"
        )
    if len(text) > MAX_NEGATIVE_PROMPT:
        raise ValidationError(
            f"negative_prompt: {len(text)} characters; at most {MAX_NEGATIVE_PROMPT} are "
            "allowed (the provider would cut the rest silently)",
            field="negative_prompt",
        )
    _check_unicode("negative_prompt", text)


def _check_callback_url(url: object) -> None:
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValidationError(f"callback_url: {url!r} is not an https:// URL", field="callback_url")
    _check_unicode("callback_url", url)
    if len(url) > 2048:
        raise ValidationError(
            f"callback_url: {len(url)} characters; at most 2048 are allowed",
            field="callback_url",
        )


class EditRequest(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, frozen=True
):
    """One edit: 1–3 input images and an instruction.

    Validated at construction and immutable afterwards, so what was checked is what is sent;
    derive a variant with ``msgspec.structs.replace(request, n=2)``, which validates again.
    The stored ``size`` is the snapped :class:`Size` the provider will produce. ``images`` is
    a tuple of the inputs in a normalized form: ``str`` for URLs and data URIs,
    :class:`pathlib.Path` for local files, ``bytes`` for raw image data. Fields left as
    ``None`` are not sent: the provider's default applies.

    >>> req = EditRequest(images=["cat.png"], prompt="Make it a watercolour")  # doctest: +SKIP
    >>> EditRequest(images=["https://example.com/a.png"], prompt="x", size="1033*1032").size
    Size(width=1040, height=1024)
    """

    # A type checker sees the normalized values the fields hold once built, and the
    # constructor below taking what users give. At run time the fields are declared as
    # wide as what msgspec may decode from JSON (a manifest line): os.PathLike cannot be
    # decoded, and a size may be written "W*H". __post_init__ narrows them.
    if TYPE_CHECKING:
        images: tuple[ImageValue, ...]
    else:
        images: Sequence[Any]
    prompt: str
    negative_prompt: str | None = None
    n: int | None = None
    if TYPE_CHECKING:
        size: Size | None = None
    else:
        size: Size | str | tuple[int, int] | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    callback_url: str | None = None

    if TYPE_CHECKING:

        def __init__(
            self,
            *,
            images: Sequence[ImageInput] | ImageInput,
            prompt: str,
            negative_prompt: str | None = None,
            n: int | None = None,
            size: SizeLike | None = None,
            prompt_extend: bool | None = None,
            watermark: bool | None = None,
            seed: int | None = None,
            callback_url: str | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "images", _normalized_images(self.images))
        _check_prompt(self.prompt)
        if self.negative_prompt is not None:
            _check_negative_prompt(self.negative_prompt)
        if self.n is not None:
            _int_in("n", self.n, 1, MAX_N)
        if self.seed is not None:
            _int_in("seed", self.seed, 0, MAX_SEED)
        if self.size is not None:
            msgspec.structs.force_setattr(self, "size", Size.parse(self.size))
        if self.prompt_extend is not None:
            _optional_bool("prompt_extend", self.prompt_extend)
        if self.watermark is not None:
            _optional_bool("watermark", self.watermark)
        if self.callback_url is not None:
            _check_callback_url(self.callback_url)

    def to_dict(self) -> dict[str, Any]:
        """The request as plain JSON-able values (paths as strings, bytes as base64).

        Fields that were not set are left out.
        """
        out: dict[str, Any] = msgspec.to_builtins(self, enc_hook=_enc_hook)
        out["images"] = list(out["images"])  # a JSON array, as it was given
        return out


#: What ``edit_many`` takes for one edit: a request, or a dict of its fields.
RequestLike = Union[EditRequest, Mapping[str, Any]]

_FIELDS = frozenset(EditRequest.__struct_fields__)


def request_from(value: object) -> EditRequest:
    """An :class:`EditRequest` from a request or a dict of its fields.

    >>> request_from({"images": ["https://example.com/a.png"], "prompt": "x", "n": 2}).n
    2
    """
    if isinstance(value, EditRequest):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in _FIELDS)
        if unknown:
            raise ValidationError(
                f"{unknown[0]}: not a field of an edit; the fields are "
                f"{', '.join(EditRequest.__struct_fields__)}",
                field=unknown[0],
            )
        for name in ("images", "prompt"):
            if name not in value:
                raise ValidationError(f"{name}: missing; every edit needs it", field=name)
        return EditRequest(**value)
    raise ValidationError(
        f"request: {type(value).__name__} is not an EditRequest or a dict of its fields",
        field="request",
    )


def as_request(images: object, prompt: str | None, options: Mapping[str, Any]) -> EditRequest:
    """The request of an ``edit(images, prompt, **options)`` or ``edit(request)`` call."""
    if isinstance(images, EditRequest):
        if prompt is not None or options:
            given = ["prompt"] * (prompt is not None) + sorted(options)
            raise ValidationError(
                f"{given[0]}: given beside an EditRequest; put it in the request instead",
                field=given[0],
            )
        return images
    if prompt is None:
        raise ValidationError(
            "prompt: missing; give the images and a prompt, or an EditRequest", field="prompt"
        )
    return request_from({**options, "images": images, "prompt": prompt})


def _enc_hook(value: Any) -> Any:
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


class GeneratedImage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One output image: a signed ``url`` (expires, usually after 24 h) or ``b64_json``.

    ``revised_prompt`` is the provider's rewrite of the prompt when ``prompt_extend`` is on.
    Use :meth:`read_bytes` for base64 results and ``client.download`` for URLs. An empty
    string means absent, as relays send ``"b64_json": ""`` beside every ``url``; an image
    with neither a URL nor data is a :class:`~qwen_edit_async.ValidationError`.

    >>> GeneratedImage(url="https://example.com/x.png", b64_json="").b64_json is None
    True
    """

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.url == "":
            self.url = None
        if self.b64_json == "":
            self.b64_json = None
        if self.revised_prompt == "":
            self.revised_prompt = None
        if self.url is None and self.b64_json is None:
            raise ValidationError(
                "GeneratedImage: it has neither url nor b64_json; an image needs one of them",
                field="url",
            )

    def read_bytes(self) -> bytes:
        """The image bytes of a ``b64_json`` result.

        Raises :class:`~qwen_edit_async.ValidationError` (a ``ValueError``) for a URL-only
        result (download it with ``client.download``).
        """
        if self.b64_json is None:
            raise ValidationError(
                "b64_json: this image has only a URL; download it with client.download()",
                field="b64_json",
            )
        try:
            return base64.b64decode(self.b64_json, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise QwenEditError("b64_json is not valid base64") from exc


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the provider says the edit used, where the providers agree on a meaning.

    ``image_count``: images generated (DashScope ``image_count``, Vtrix ``quantity``).
    ``cost``: the charge as the provider states it, in its own currency (Vtrix ``cost``);
    ``None`` where the provider does not say. ``raw`` keeps the provider's usage object as
    it came, for everything else (DashScope's ``width``/``height``, Evolink's credits).

    >>> Usage.from_raw({"cost": "0.03", "quantity": 1, "unit_price": "0.03"})
    Usage(image_count=1, cost=0.03, raw={'cost': '0.03', 'quantity': 1, 'unit_price': '0.03'})
    """

    image_count: int | None = None
    cost: float | None = None
    raw: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: object) -> Usage | None:
        """Read a provider's usage object (``None`` when there is none).

        Tolerant: a field of an unexpected type is left ``None`` rather than failing a
        result that was paid for.
        """
        if not isinstance(raw, dict):
            return None
        count = raw.get("image_count")
        if count is None:
            count = raw.get("quantity")
        return cls(
            image_count=count if type(count) is int else None,  # not a bool, nor a float
            cost=_number(raw["cost"]) if "cost" in raw else None,
            raw=raw,
        )


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class EditResult(msgspec.Struct, kw_only=True):
    """A finished edit.

    ``usage`` is what the provider reported as used (see :class:`Usage`). ``raw`` is the
    provider's decoded body (the final status body for task providers), for what these
    fields do not model.

    >>> result = EditResult(images=[GeneratedImage(url="https://r/1.png")], provider="vtrix")
    >>> result.to_dict()["images"]
    [{'url': 'https://r/1.png'}]
    """

    images: list[GeneratedImage]
    provider: str
    model: str | None = None
    task_id: str | None = None
    request_id: str | None = None
    usage: Usage | None = None
    raw: Any = None

    @property
    def urls(self) -> list[str]:
        """The URLs of the images that have one, in order."""
        return [image.url for image in self.images if image.url is not None]

    def to_dict(self, *, include_raw: bool = False) -> dict[str, Any]:
        """The result as plain JSON values, for a database row or a JSON file.

        Keys: ``images`` (each ``url``, ``b64_json``, ``revised_prompt`` when set),
        ``provider``, ``model``, ``task_id``, ``request_id``, ``usage`` (``image_count``,
        ``cost``, ``raw``, or ``None``). The provider's whole body is left out unless
        ``include_raw`` (it can be large). ``json.dumps`` accepts the answer as it is.
        """
        out: dict[str, Any] = {
            "images": [msgspec.to_builtins(image) for image in self.images],
            "provider": self.provider,
            "model": self.model,
            "task_id": self.task_id,
            "request_id": self.request_id,
            "usage": None if self.usage is None else _json_safe(self.usage),
        }
        if include_raw:
            out["raw"] = _json_safe(self.raw)
        return out


def _json_safe(value: Any) -> Any:
    # msgspec turns structs, bytes (base64), dates and enums into JSON types; anything
    # else a provider body could hold becomes its text rather than failing the caller.
    return msgspec.to_builtins(value, enc_hook=_text_hook)


def _text_hook(value: Any) -> Any:
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return repr(value)


def error_to_dict(error: BaseException) -> dict[str, Any]:
    """An error as JSON values: ``type``, ``message`` and what the error knows of the call."""
    out: dict[str, Any] = {"type": type(error).__name__}
    if isinstance(error, QwenEditError):
        out["message"] = error.message
        for name in ("provider", "status", "code", "request_id", "task_id"):
            value = getattr(error, name, None)
            if value is not None:
                out[name] = value if isinstance(value, (int, str)) else str(value)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            out["retry_after"] = retry_after
    else:
        out["message"] = str(error)
    return out


class Outcome(msgspec.Struct, frozen=True):
    """What ``edit_many`` yields for each request, in completion order.

    Exactly one of ``result`` and ``error`` is set. ``index`` is the request's position in
    the input. ``submissions`` is how many creates the job took: 1 normally, more when a
    task that failed transiently was submitted again, 0 when it never got that far.
    """

    index: int
    request: EditRequest
    result: EditResult | None = None
    error: BaseException | None = None
    submissions: int = 0

    @property
    def ok(self) -> bool:
        """True when the edit succeeded."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The outcome as plain JSON values: ``index``, ``ok``, ``request``, ``result``,
        ``error``.

        ``request`` is :meth:`EditRequest.to_dict` (paths as text, bytes as base64);
        ``result`` is :meth:`EditResult.to_dict` or ``None``; ``error`` is ``None`` or
        ``{"type": class name, "message": ..., "provider", "status", "code", "request_id",
        "task_id"}`` with the keys the error knows. The API key is never part of it.

        >>> import json
        >>> async for outcome in client.edit_many(requests):  # doctest: +SKIP
        ...     print(json.dumps(outcome.to_dict()))
        """
        return {
            "index": self.index,
            "ok": self.ok,
            "request": (
                self.request.to_dict()
                if isinstance(self.request, EditRequest)
                else _json_safe(self.request)  # an invalid input, handed back as given
            ),
            "result": None if self.result is None else self.result.to_dict(),
            "error": None if self.error is None else error_to_dict(self.error),
        }
