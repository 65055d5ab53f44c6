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
import re
from collections.abc import Mapping, Sequence
from typing import Any, Union

import msgspec

from ._errors import QwenEditError, ValidationError
from ._images import check_image

__all__ = [
    "MAX_IMAGES",
    "MAX_N",
    "MAX_NEGATIVE_PROMPT",
    "MAX_SEED",
    "EditRequest",
    "EditResult",
    "GeneratedImage",
    "Outcome",
    "RequestLike",
    "Size",
    "SizeLike",
    "Usage",
    "as_request",
    "request_from",
]

MIN_SIDE = 512
MAX_SIDE = 2048
SIZE_STEP = 16
MAX_IMAGES = 3
MAX_N = 6
MAX_NEGATIVE_PROMPT = 500
MAX_SEED = 2_147_483_647

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$", re.ASCII)
#: More digits than any side can have; a longer number is out of range without parsing it
#: (int() refuses strings over 4300 digits with a bare ValueError).
_MAX_SIDE_DIGITS = 6


def _snap(side: int) -> int:
    """Nearest multiple of 16, ties going down (as the provider documents: 1032 -> 1024)."""
    return (side + SIZE_STEP // 2 - 1) // SIZE_STEP * SIZE_STEP


class Size(msgspec.Struct, frozen=True):
    """An output size in pixels, each side 512–2048, snapped to a multiple of 16.

    >>> Size(1033, 1032)
    Size(width=1040, height=1024)
    >>> Size.parse("1024x1536") == Size.parse((1024, 1536)) == Size(1024, 1536)
    True
    """

    width: int
    height: int

    def __post_init__(self) -> None:
        snapped = []
        for name, value in (("width", self.width), ("height", self.height)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(
                    f"size.{name}: {value!r} is not an integer; give pixels as whole numbers",
                    field="size",
                )
            if not MIN_SIDE <= value <= MAX_SIDE:
                raise ValidationError(
                    f"size.{name}: {value} is out of range; each side must be "
                    f"{MIN_SIDE} to {MAX_SIDE} pixels",
                    field="size",
                )
            snapped.append(_snap(value))
        msgspec.structs.force_setattr(self, "width", snapped[0])
        msgspec.structs.force_setattr(self, "height", snapped[1])

    @classmethod
    def parse(cls, value: SizeLike) -> Size:
        """Read ``"1024*1536"``, ``"1024x1536"``, ``(1024, 1536)`` or a :class:`Size`."""
        if isinstance(value, Size):
            return value
        if isinstance(value, str):
            match = _SIZE_RE.match(value)
            if not match:
                raise ValidationError(
                    f"size: {value!r} is not a size; write it as 'W*H' or 'WxH', "
                    "for example '1024*1536'",
                    field="size",
                )
            width, height = match.group(1), match.group(2)
            for name, digits in (("width", width), ("height", height)):
                if len(digits.lstrip("0")) > _MAX_SIDE_DIGITS:
                    raise ValidationError(
                        f"size.{name}: {_show_number(digits)} is out of range; each side must "
                        f"be {MIN_SIDE} to {MAX_SIDE} pixels",
                        field="size",
                    )
            return cls(int(width), int(height))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(value[0], value[1])
        raise ValidationError(
            f"size: {value!r} ({type(value).__name__}) is not a size; give 'W*H', 'WxH', "
            "a (width, height) pair or a Size",
            field="size",
        )

    def format(self, separator: str = "*") -> str:
        """``"1024*1536"`` (or with another separator, e.g. ``"x"``)."""
        return f"{self.width}{separator}{self.height}"

    def __str__(self) -> str:
        return self.format()


def _show_number(digits: str) -> str:
    return digits if len(digits) <= 12 else f"a number of {len(digits)} digits"


SizeLike = Union[Size, str, tuple[int, int]]


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

    # Any: msgspec decodes manifests into this type, and it cannot decode os.PathLike.
    images: Sequence[Any]
    prompt: str
    negative_prompt: str | None = None
    n: int | None = None
    size: Size | str | tuple[int, int] | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    callback_url: str | None = None

    def __post_init__(self) -> None:
        images = self.images
        if isinstance(images, (str, bytes, os.PathLike)) or not isinstance(images, Sequence):
            if isinstance(images, (str, bytes, os.PathLike)):
                images = [images]
            else:
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
        normalized = tuple(check_image(image, f"images[{i}]") for i, image in enumerate(images))
        msgspec.structs.force_setattr(self, "images", normalized)

        if not isinstance(self.prompt, str):
            raise ValidationError(
                f"prompt: {type(self.prompt).__name__} is not text; give a non-empty string",
                field="prompt",
            )
        if not self.prompt.strip():
            raise ValidationError(
                "prompt: it is empty; an edit needs an instruction", field="prompt"
            )
        _check_unicode("prompt", self.prompt)

        if self.negative_prompt is not None:
            if not isinstance(self.negative_prompt, str):
                raise ValidationError(
                    f"negative_prompt: {type(self.negative_prompt).__name__} is not text",
                    field="negative_prompt",
                )
            if len(self.negative_prompt) > MAX_NEGATIVE_PROMPT:
                raise ValidationError(
                    f"negative_prompt: {len(self.negative_prompt)} characters; at most "
                    f"{MAX_NEGATIVE_PROMPT} are allowed (the provider would cut the rest silently)",
                    field="negative_prompt",
                )
            _check_unicode("negative_prompt", self.negative_prompt)
        if self.n is not None:
            _int_in("n", self.n, 1, MAX_N)
        if self.seed is not None:
            _int_in("seed", self.seed, 0, MAX_SEED)
        if self.size is not None:
            msgspec.structs.force_setattr(self, "size", Size.parse(self.size))
        _optional_bool("prompt_extend", self.prompt_extend)
        _optional_bool("watermark", self.watermark)
        if self.callback_url is not None:
            if not isinstance(self.callback_url, str) or not self.callback_url.startswith(
                "https://"
            ):
                raise ValidationError(
                    f"callback_url: {self.callback_url!r} is not an https:// URL",
                    field="callback_url",
                )
            _check_unicode("callback_url", self.callback_url)
            if len(self.callback_url) > 2048:
                raise ValidationError(
                    f"callback_url: {len(self.callback_url)} characters; at most 2048 are allowed",
                    field="callback_url",
                )

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
        for name in ("url", "b64_json", "revised_prompt"):
            if getattr(self, name) == "":
                setattr(self, name, None)
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
        count = raw.get("image_count", raw.get("quantity"))
        return cls(
            image_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            cost=_number(raw.get("cost")),
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
