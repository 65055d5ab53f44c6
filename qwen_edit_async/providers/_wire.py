"""What the dialects share on the wire: base Structs, one encoder, reading JSON answers.

Answers are parsed once into plain Python values (kept as ``raw`` on results and errors) and
then converted to the typed Struct the dialect reads. ``msgspec.convert`` reuses the parsed
strings instead of parsing the bytes a second time: as fast as a typed decode on small
bodies, half the time and no second copy of multi-megabyte ``b64_json`` answers.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import msgspec

from .._errors import ConfigurationError, JobFailedError, ProtocolError
from .._models import MAX_N, EditRequest, GeneratedImage, Size

T = TypeVar("T")

#: Headers of every JSON request. Read-only because every request shares it.
JSON_HEADERS: Mapping[str, str] = MappingProxyType({"Content-Type": "application/json"})
NO_HEADERS: Mapping[str, str] = MappingProxyType({})

ENCODER = msgspec.json.Encoder()
_ANY = msgspec.json.Decoder()


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present in ``headers`` (case-insensitively for plain dicts)."""
    for name in names:
        value = headers.get(name)
        if value is None and not hasattr(headers, "getall"):
            lowered = name.lower()
            value = next((v for k, v in headers.items() if k.lower() == lowered), None)
        if value:
            return value
    return None


def decode(decoder: msgspec.json.Decoder[T], body: bytes, *, provider: str, status: int) -> T:
    """Decode ``body`` or raise :class:`ProtocolError` saying what was wrong."""
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the decoder follows; unreadable too.
        raise _unreadable(exc, body, provider, status) from exc


def _unreadable(exc: Exception, body: bytes, provider: str, status: int) -> ProtocolError:
    snippet = body[:200].decode("utf-8", "replace")
    return ProtocolError(
        f"unreadable answer: {exc}; body starts {snippet!r}", provider=provider, status=status
    )


class WireRequest(msgspec.Struct, omit_defaults=True, gc=False):
    """Base of request bodies (only ever encoded: nothing decodes into them, and the fake
    provider checks the JSON it receives with its own rules, as a provider would).

    ``omit_defaults``: a field the user did not set (``None``) is left out, never sent as
    ``null``, so the provider's own default applies. ``gc=False``: bodies hold no cycles.
    """


class WireResponse(msgspec.Struct):
    """Base of answer bodies: declare only the fields read; unknown fields are ignored,
    because providers add fields without notice."""


class ErrorDetail(WireResponse):
    """An error object: OpenAI-style ``{code, message, type}``, Vtrix ``{code, error_message}``."""

    code: str | int | None = None
    message: str | None = None
    error_message: str | None = None


class ErrorBody(WireResponse):
    """Every error body seen, in one lenient shape; each dialect reads the fields it uses."""

    request_id: str | None = None
    code: str | int | None = None
    message: str | None = None
    error: ErrorDetail | str | None = None


def is_success(status: int) -> bool:
    return 200 <= status < 300


def load(body: bytes, cls: type[T], *, provider: str, status: int) -> tuple[T, Any]:
    """``body`` as ``cls`` and as plain values, or :class:`ProtocolError` saying why not."""
    try:
        raw = _ANY.decode(body)  # not through decode(): one call less on every answer
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise _unreadable(exc, body, provider, status) from exc
    try:
        return msgspec.convert(raw, cls), raw
    except msgspec.ValidationError as exc:
        snippet = body[:200].decode("utf-8", "replace")
        raise ProtocolError(
            f"unexpected answer: {exc}; body starts {snippet!r}", provider=provider, status=status
        ) from exc


def load_error(body: bytes) -> tuple[ErrorBody, Any]:
    """Read an error body without failing: the status alone already says it is an error.

    An unreadable body (an HTML page from a proxy, an odd shape) gives an empty
    :class:`ErrorBody` and its text, cut to 500 characters, as ``raw``.
    """
    try:
        raw = _ANY.decode(body)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deeply
        return ErrorBody(), body[:500].decode("utf-8", "replace").strip() or None
    try:
        return msgspec.convert(raw, ErrorBody), raw
    except msgspec.ValidationError:
        return ErrorBody(), raw


def fallback_message(status: int, raw: Any) -> str:
    """A message for an error body that carries none: the status and any text it had."""
    return f"HTTP {status}: {raw}" if isinstance(raw, str) else f"HTTP {status}"


class ErrorAnswer(NamedTuple):
    """What an error body says, whichever of the three shapes it came in."""

    code: str | int | None
    message: str
    #: The request id the body carries, if any.
    request_id: str | None
    #: The decoded body (or its text, cut, when it was not JSON).
    raw: Any


def read_error(status: int, body: bytes) -> ErrorAnswer:
    """The one reader of error bodies, in any of the shapes providers use.

    - flat ``{"request_id", "code", "message"}`` (DashScope, relayed DashScope),
    - OpenAI's ``{"error": {"code", "message", "type", "param"}}`` (gateways, Evolink;
      ``code`` a string, an integer or null),
    - ``{"message": ...}`` or ``{"error": "..." | {"code", "error_message"}}`` (Vtrix).

    The nested error's code and message win; where a body has a message of its own beside a
    different nested one (``{"error": "insufficient balance", "message": "Forbidden"}``) both
    are kept, because the cause may be in either. An unreadable body gives the status alone.

    >>> read_error(403, b'{"error": "insufficient balance", "message": "Forbidden"}').message
    'Forbidden: insufficient balance'
    >>> read_error(400, b'{"code": "InvalidParameter", "message": "bad n"}')[:2]
    ('InvalidParameter', 'bad n')
    """
    error, raw = load_error(body)
    code, message = error_fields(error.error)
    if error.message and message and message.lower() not in error.message.lower():
        message = f"{error.message}: {message}"
    return ErrorAnswer(
        code=error.code if code is None else code,
        message=message or error.message or fallback_message(status, raw),
        request_id=error.request_id,
        raw=raw,
    )


def size_text(request: EditRequest, separator: str = "*") -> str | None:
    return None if request.size is None else Size.parse(request.size).format(separator)


def url_only(provider: str, images: list[str]) -> list[str]:
    """``images`` unchanged, or :class:`ConfigurationError` for an inline image."""
    for i, image in enumerate(images):
        if image[:5].lower() == "data:":
            raise ConfigurationError(
                f"images[{i}]: {provider} takes image URLs only, not inline data; "
                "give a public URL or configure an uploader",
                provider=provider,
            )
    return images


def error_fields(error: ErrorDetail | str | None) -> tuple[str | int | None, str | None]:
    """``(code, message)`` of an ``error`` field: an object or a plain string."""
    if isinstance(error, ErrorDetail):
        return error.code, error.message or error.error_message
    return None, error


def no_images(
    provider: str, status: int, request_id: str | None, raw: Any, task_id: str | None = None
) -> JobFailedError:
    """The error of a success answer that lists no image.

    A failed job, not an unreadable answer: the answer arrived, so the job certainly ran
    (never "uncertain"), and reading the same answer again cannot help.
    """
    where = "the task completed" if task_id is not None else "the answer succeeded"
    return JobFailedError(
        f"{where} without any result image",
        provider=provider,
        status=status,
        request_id=request_id,
        task_id=task_id,
        body=raw,
    )


def check_count(
    images: list[GeneratedImage],
    provider: str,
    status: int,
    request_id: str | None,
    raw: Any,
    task_id: str | None = None,
) -> list[GeneratedImage]:
    """``images``, or :class:`JobFailedError` when there are more than an edit can make.

    A result listing thousands of URLs is refused before anything is fetched or written.
    """
    if len(images) > MAX_N:
        raise JobFailedError(
            f"the result lists {len(images)} images; an edit makes at most {MAX_N}: "
            "refused, nothing was fetched",
            provider=provider,
            status=status,
            request_id=request_id,
            task_id=task_id,
            body=raw,
        )
    return images
