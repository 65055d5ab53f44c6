"""The bulk manifest: JSONL, one edit per line, read lazily.

Each line is a JSON object: an optional ``id`` and the :class:`EditRequest` fields::

    {"id": "cat-1", "images": ["cats/1.png"], "prompt": "Give the cat a red hat", "n": 2}
    {"images": ["https://example.com/sofa.jpg"], "prompt": "Make it blue", "size": "1024*1536"}

Relative image paths resolve against the manifest's folder, so a manifest and its images move
together. A line without ``id`` gets a stable one from its content (the first 16 hex digits of
the SHA-256 of its canonical JSON), so a rerun recognises it. A line that cannot be read (bad
JSON, an unknown or invalid field) becomes an :class:`Entry` carrying the error and its line
number; it never stops the reading. Blank lines are skipped (and still counted as lines).

The file is iterated line by line: a manifest of millions of lines is never held in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import msgspec

from .._errors import ManifestError, QwenEditError, ValidationError
from .._models import EditRequest

__all__ = [
    "Entry",
    "ManifestError",
    "check_format",
    "count_lines",
    "read_manifest",
    "stable_id",
]

_FIELDS = frozenset(EditRequest.__struct_fields__)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]+://")
_MAX_ID = 200
_BOM = b"\xef\xbb\xbf"
#: What a manifest is, for the one error a file of another format gets.
_WHAT = (
    "a manifest is JSONL: one JSON object per line, e.g. "
    '{"id": "cat-1", "images": ["cat.png"], "prompt": "Give the cat a red hat"}'
)
_decode = msgspec.json.Decoder().decode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


@dataclasses.dataclass(slots=True)
class Entry:
    """One manifest line: its ``request``, or the ``error`` that made it unusable.

    ``id`` is the line's own, or the stable content id; it is ``None`` only when the line
    could not be decoded at all.
    """

    line: int
    id: str | None
    request: EditRequest | None = None
    error: QwenEditError | None = None
    #: A hash of the line's content (key order and spacing aside): a resume compares it
    #: with the one journaled to find lines edited since the run started.
    digest: str | None = None

    @property
    def n(self) -> int:
        """Images the edit asks for (the provider's default is 1)."""
        if self.request is None or self.request.n is None:
            return 1
        return self.request.n


def stable_id(obj: dict[str, Any]) -> str:
    """The id of a line without one: a hash of its canonical (key-sorted) JSON.

    >>> stable_id({"prompt": "x", "images": ["a.png"]}) == stable_id(
    ...     {"images": ["a.png"], "prompt": "x"})
    True
    """
    return hashlib.sha256(_encode_sorted(obj)).hexdigest()[:16]


def _resolve(image: Any, base: Path) -> Any:
    """A relative local path made absolute against ``base``; anything else unchanged."""
    if not isinstance(image, str) or not image or image[:5].lower() == "data:":
        return image
    if _SCHEME.match(image):
        return image
    path = Path(image).expanduser()
    return path if path.is_absolute() else base / path


def _check_id(value: Any, line: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"line {line}: id {value!r} is not a non-empty string")
    if len(value) > _MAX_ID or any(ord(ch) < 32 for ch in value):
        raise ManifestError(
            f"line {line}: id {value[:40]!r} must be at most {_MAX_ID} printable characters"
        )
    return value


def parse_line(text: bytes | str, line: int, base: Path) -> Entry | None:
    """One manifest line as an :class:`Entry`; ``None`` for a blank line."""
    if not text.strip():
        return None
    try:
        obj = _decode(text)
    except msgspec.DecodeError as exc:
        return Entry(line, None, error=ManifestError(f"line {line}: not valid JSON ({exc})"))
    if not isinstance(obj, dict):
        return Entry(
            line,
            None,
            error=ManifestError(f"line {line}: a {type(obj).__name__}, not a JSON object"),
        )
    digest = hashlib.sha256(_encode_sorted(obj)).hexdigest()[:32]
    raw_id = obj.pop("id", None)
    try:
        entry_id = stable_id(obj) if raw_id is None else _check_id(raw_id, line)
    except ManifestError as exc:
        return Entry(line, None, error=exc)
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        error = ValidationError(
            f"line {line}: unknown field(s) {', '.join(map(repr, unknown))}; a line holds "
            f"'id' and the EditRequest fields: {', '.join(sorted(_FIELDS))}",
            field=unknown[0],
        )
        return Entry(line, entry_id, error=error, digest=digest)
    images = obj.get("images")
    if isinstance(images, list):
        obj["images"] = [_resolve(image, base) for image in images]
    elif images is not None:
        obj["images"] = _resolve(images, base)
    try:
        request = EditRequest(**obj)
    except ValidationError as exc:
        error = ValidationError(f"line {line}: {exc.message}", field=exc.field)
        error.__cause__ = exc
        return Entry(line, entry_id, error=error, digest=digest)
    except (TypeError, ValueError) as exc:  # a required field is missing
        invalid = ValidationError(f"line {line}: {exc}")
        return Entry(line, entry_id, error=invalid, digest=digest)
    return Entry(line, entry_id, request=request, digest=digest)


def read_manifest(path: str | os.PathLike[str]) -> Generator[Entry, None, None]:
    """Yield an :class:`Entry` per non-blank line of the manifest, lazily, in order.

    >>> for entry in read_manifest("edits.jsonl"):          # doctest: +SKIP
    ...     print(entry.line, entry.id, entry.error or "ok")
    """
    manifest = Path(path)
    base = manifest.resolve().parent
    with open(manifest, "rb") as handle:
        for number, text in enumerate(handle, start=1):
            if number == 1:
                text = text.removeprefix(_BOM)  # written by many Windows editors
            entry = parse_line(text, number, base)
            if entry is not None:
                yield entry


def count_lines(path: str | os.PathLike[str]) -> int:
    """Non-blank lines of a file (the progress total), read line by line."""
    with open(path, "rb") as handle:
        return sum(1 for text in handle if text.strip())


def check_format(path: str | os.PathLike[str]) -> None:
    """Raise one :class:`ManifestError` when the file is a JSON array or a CSV table
    rather than JSONL (else every line would be reported on its own).

    >>> check_format("edits.csv")                           # doctest: +SKIP
    ManifestError: edits.csv looks like CSV (first line 'id,prompt,images'); a manifest ...
    """
    first = b""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = (raw.removeprefix(_BOM) if number == 1 else raw).strip()
            if text:
                first = text
                break
    if not first or first.startswith(b"{"):
        return
    shown = first[:60].decode("utf-8", "replace")
    if first.startswith(b"["):
        raise ManifestError(
            f"{path} is a JSON array (first line {shown!r}); {_WHAT}. To convert: "
            f"jq -c '.[]' {path} > edits.jsonl"
        )
    try:
        _decode(first)
    except msgspec.DecodeError:
        if any(sep in first for sep in (b",", b";", b"\t")):
            raise ManifestError(f"{path} looks like CSV (first line {shown!r}); {_WHAT}") from None
        raise ManifestError(f"{path} is not JSONL (first line {shown!r}); {_WHAT}") from None
