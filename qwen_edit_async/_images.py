"""Image inputs: a path, bytes, a URL or a data URI -> what a provider accepts.

Two stages, so that bad input fails early and memory follows concurrency:

- :func:`check_image` runs when a request is built. It validates one input with at most a
  ``stat`` and a header read (no decoding, no full read) and returns its normalized form.
- :class:`ImagePreparer` runs when a job takes its slot. It reads files in a worker thread,
  re-checks them, and turns files and bytes into data URIs or uploaded URLs, once per distinct
  input however many jobs share it.

The rules (from the model's owner): JPEG, PNG, BMP, TIFF, WEBP or GIF; at most 10 MB; each
side 384 to 3072 px.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TypeAlias
from urllib.parse import urlsplit

import imagesize

from ._errors import ValidationError
from ._urls import is_http_url

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_SIDE",
    "MIN_SIDE",
    "EXTENSIONS",
    "ImageInfo",
    "ImageInput",
    "ImageKind",
    "Uploader",
    "check_image",
    "image_format",
    "image_kind",
    "sniff",
]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_SIDE = 384
MAX_SIDE = 3072

ImageInput: TypeAlias = str | bytes | os.PathLike[str]
"""What users may pass as one image."""

Uploader: TypeAlias = Callable[[bytes, str], Awaitable[str]]
"""``async def upload(data, mime) -> public URL``, for providers that take URLs only."""

ImageKind: TypeAlias = Literal["url", "oss", "data", "file", "bytes"]

_MIMES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "webp": "image/webp",
    "gif": "image/gif",
}
_FORMAT_NAMES = "JPEG, PNG, BMP, TIFF, WEBP or GIF"
_FORMS = (
    "images must be a local file path, an http(s) URL, an oss:// URL (DashScope only), "
    "a data:image/<format>;base64,... URI, or bytes"
)
# Media types seen in the wild for the six formats; anything else is refused up front.
_DATA_SUBTYPES = frozenset({"jpeg", "jpg", "pjpeg", "png", "x-png", "webp", "gif", "bmp"})
_DATA_SUBTYPES |= {"x-bmp", "x-ms-bmp", "tiff", "tif", "x-tiff"}
# BITMAPCOREHEADER (12) and the BITMAPINFOHEADER family: "BM" alone is too weak a magic.
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
# Two letters at least, so "C://x" stays a Windows path.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]+)://")
# An http(s) URL whose authority is only a host name or IPv4 address (no user, port or
# brackets), ended by the path, query, fragment or the end: valid without urlsplit().
_PLAIN_HTTP = re.compile(r"https?://[A-Za-z0-9.-]+(?:[/?#]|\Z)", re.IGNORECASE)
# Base64 text decoded at construction to sniff a data URI: enough for the format and, for
# all but JPEG and TIFF, the size; the second step covers JPEGs with EXIF thumbnails.
_DATA_HEAD_CHARS = (4096, 65536)


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image says, without decoding it.

    ``width`` and ``height`` are as stored (EXIF orientation is not applied; the limits are
    the same either way). ``size`` is the length of the data in bytes.
    """

    format: str
    mime: str
    width: int
    height: int
    size: int


class _Invalid(Exception):
    """A problem with one input, worded without its field (callers add it)."""


def _mb(size: int) -> str:
    text = f"{size / 2**20:.1f} MB"
    # "10.0 MB; images must be at most 10 MB" would read as a contradiction.
    return f"{size} bytes" if size > MAX_IMAGE_BYTES and text == "10.0 MB" else text


def _show(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


#: The one magic-byte table: how each accepted format begins, as (offset, bytes) pairs that
#: must all match. Inputs (:func:`sniff`) and downloaded results (their file extension) both
#: read it.
_MAGIC: tuple[tuple[str, tuple[tuple[int, bytes], ...]], ...] = (
    ("jpeg", ((0, b"\xff\xd8\xff"),)),
    ("png", ((0, b"\x89PNG\r\n\x1a\n"),)),
    ("gif", ((0, b"GIF87a"),)),
    ("gif", ((0, b"GIF89a"),)),
    ("tiff", ((0, b"II*\x00"),)),
    ("tiff", ((0, b"MM\x00*"),)),
    ("tiff", ((0, b"II+\x00"),)),  # BigTIFF
    ("webp", ((0, b"RIFF"), (8, b"WEBP"))),
    ("bmp", ((0, b"BM"),)),  # and a known header size (below): "BM" alone is common text
)

#: File extension of each format, for results written to disk.
EXTENSIONS = {
    "jpeg": ".jpg",
    "png": ".png",
    "gif": ".gif",
    "tiff": ".tiff",
    "webp": ".webp",
    "bmp": ".bmp",
}


def image_format(head: bytes) -> str | None:
    """The format (a key of :data:`EXTENSIONS`) whose magic bytes ``head`` starts with.

    >>> image_format(b"\x89PNG\r\n\x1a\n...")
    'png'
    """
    for fmt, parts in _MAGIC:
        if all(head[at : at + len(magic)] == magic for at, magic in parts):
            if fmt == "bmp" and int.from_bytes(head[14:18], "little") not in _BMP_DIB_SIZES:
                continue
            return fmt
    return None


class _ReadBudget:
    """A stream that refuses reads past a fixed count.

    imagesize reads byte by byte while it looks for the next JPEG marker: on a damaged
    10 MB file that is seconds of CPU on the event loop. A real header takes a few reads
    per segment, so the budget only cuts short files that would fail anyway.
    """

    def __init__(self, stream: IO[bytes], reads: int = 4096) -> None:
        self._stream = stream
        self._left = reads

    def read(self, size: int = -1) -> bytes:
        self._left -= 1
        if self._left < 0:
            raise ValueError("image header too long")
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)


def _dimensions(stream: IO[bytes], fmt: str, head: bytes) -> tuple[int, int] | None:
    """Width and height from the header, or None when it cannot be read."""
    # imagesize reads GIF sizes as signed, BMP core headers as info headers and keeps the
    # scaling bits of lossy WEBP: those three are fixed-offset fields, read here.
    if fmt == "gif" and len(head) >= 10:
        width, height = struct.unpack_from("<HH", head, 6)
    elif fmt == "bmp" and int.from_bytes(head[14:18], "little") == 12 and len(head) >= 22:
        width, height = struct.unpack_from("<HH", head, 18)
    elif fmt == "webp" and head[12:16] == b"VP8 " and len(head) >= 30:
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", head, 26))
    else:
        # A stream, never a str or bytes: imagesize fetches str URLs and opens bytes as paths.
        width, height = imagesize.get(_ReadBudget(stream), exif_rotation=False)
    if width <= 0 or height <= 0:
        return None
    return width, height


def _inspect(stream: IO[bytes], size: int, subject: str) -> ImageInfo:
    """Check size, format and dimensions of one image; raise :class:`_Invalid`."""
    if size > MAX_IMAGE_BYTES:
        raise _Invalid(f"{subject} is {_mb(size)}; images must be at most 10 MB")
    if size == 0:
        raise _Invalid(f"{subject} is empty; images must be {_FORMAT_NAMES} images")
    head = stream.read(64)
    fmt = image_format(head)
    if fmt is None:
        raise _Invalid(
            f"{subject} is not a {_FORMAT_NAMES} image (judged by its first bytes); "
            f"images must be one of these formats"
        )
    dims = _dimensions(stream, fmt, head)
    if dims is None:
        raise _Invalid(
            f"{subject} starts like {fmt.upper()} but its header gives no width and height; "
            f"images must be complete {_FORMAT_NAMES} files"
        )
    info = ImageInfo(fmt, _MIMES[fmt], dims[0], dims[1], size)
    _check_sides(info.width, info.height, subject)
    return info


def _check_sides(width: int, height: int, subject: str) -> None:
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise _Invalid(
            f"{subject} is {width}x{height} px; each side must be {MIN_SIDE} to {MAX_SIDE} px"
        )


def sniff(data: bytes) -> ImageInfo | None:
    """Format and size of an image from its bytes, or None if it is not one of the six
    formats or its header is unreadable. Limits are not checked here.

    ``size`` is ``len(data)``. Give the whole image, or at least its header.

    >>> sniff(open("cat.png", "rb").read())
    ImageInfo(format='png', mime='image/png', width=1024, height=768, size=48213)
    """
    data = bytes(data) if not isinstance(data, bytes) else data
    head = data[:64]
    fmt = image_format(head)
    if fmt is None:
        return None
    dims = _dimensions(io.BytesIO(data), fmt, head)
    if dims is None:
        return None
    return ImageInfo(fmt, _MIMES[fmt], dims[0], dims[1], len(data))


# --- check_image --------------------------------------------------------------------------

_HEADER_CACHE_SIZE = 4096
_header_cache: OrderedDict[tuple[Any, ...], ImageInfo] = OrderedDict()
# check_image runs on the event loop and in worker threads (the preparer's re-check).
_header_lock = threading.Lock()


def check_image(value: object, field: str) -> str | bytes | Path:
    """Validate one image input and return its normalized form.

    - ``"http://..."``/``"https://..."`` and ``"oss://..."``: returned unchanged.
    - ``"data:image/<format>;base64,<data>"``: syntax, media type, first bytes and decoded
      size (from the length) checked; returned unchanged.
    - A path (``str`` without a scheme, or ``os.PathLike``): a :class:`~pathlib.Path` with
      ``~`` expanded. The file must exist and be a regular file of at most 10 MB (by
      ``stat``, before reading), in one of the six formats, each side 384 to 3072 px (from
      the header). Header results are cached by (path, inode, size, mtime), so a file named
      by many requests costs one ``stat`` each.
    - ``bytes``, ``bytearray``, ``memoryview``: the same checks; returned as ``bytes``
      (a copy for the mutable ones, so later changes cannot alter a built request).

    Anything else raises :class:`~qwen_edit_async.ValidationError` naming ``field``.

    >>> check_image("~/cat.png", "images[0]")
    PosixPath('/home/me/cat.png')
    """
    try:
        if isinstance(value, str):
            return _check_str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _check_bytes(value)
        if isinstance(value, os.PathLike):
            try:
                raw = os.fspath(value)
            except Exception as exc:
                raise _Invalid(f"os.fspath() failed on the path object: {exc}") from exc
            text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
            return _check_path(text)
    except _Invalid as exc:
        raise ValidationError(f"{field}: {exc}", field=field) from exc.__cause__
    raise ValidationError(f"{field}: got {type(value).__name__}; {_FORMS}", field=field)


def _check_str(value: str) -> str | Path:
    if is_http_url(value):  # the common case first (a bulk run checks one per request)
        return _check_http_url(value)
    if not value:
        raise _Invalid(f"the string is empty; {_FORMS}")
    if value[:5].lower() == "data:":
        _check_data_uri(value)
        return value
    match = _SCHEME.match(value)
    if match is None:
        return _check_path(value)
    scheme = match.group(1).lower()
    if scheme == "oss":
        if len(value) <= len("oss://"):
            raise _Invalid(f"URL {_show(value)} names no object; {_FORMS}")
        return value
    raise _Invalid(f"URL scheme '{scheme}://' is not supported ({_show(value)}); {_FORMS}")


def _check_http_url(value: str) -> str:
    if value.isascii():  # ASCII is valid UTF-8: no lone surrogate to look for
        if _PLAIN_HTTP.match(value) is not None:
            return value  # a plain host name or IPv4 address: it has a host, nothing to split
    else:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid(
                f"URL {_show(value)} is not valid Unicode (a lone surrogate); {_FORMS}"
            ) from None
    try:
        host = urlsplit(value).hostname
    except ValueError as exc:
        raise _Invalid(f"URL {_show(value)} is malformed ({exc}); {_FORMS}") from exc
    if not host:
        raise _Invalid(f"URL {_show(value)} has no host; {_FORMS}")
    return value


def _check_data_uri(value: str) -> None:
    comma = value.find(",", 0, 256)
    if comma < 0:
        raise _Invalid(
            f"data URI {_show(value, 40)} has no ',' after its header; "
            f"images given inline must be data:image/<format>;base64,<data>"
        )
    params = [p.strip().lower() for p in value[5:comma].split(";")]
    mime = params[0]
    if not mime.startswith("image/"):
        raise _Invalid(
            f"data URI has media type {mime!r}; images given inline must be "
            f"data:image/<format>;base64,<data>"
        )
    if mime[6:] not in _DATA_SUBTYPES:
        raise _Invalid(f"data URI has media type {mime!r}; images must be {_FORMAT_NAMES}")
    if len(params) < 2 or params[-1] != "base64":
        raise _Invalid(
            "data URI is not base64-encoded (no ';base64' before ','); images given inline "
            "must be data:image/<format>;base64,<data>"
        )
    payload_at = comma + 1
    chars = len(value) - payload_at
    pad = 2 if value.endswith("==") else 1 if value.endswith("=") else 0
    not_base64 = _Invalid(
        "data URI payload is not valid base64 text; images given inline must be "
        "data:image/<format>;base64,<data>"
    )
    # isascii() is O(1) on str; the full alphabet is checked on the decoded parts only, so
    # building a request stays cheap for a 13 MB URI. Length 4k+1 can never be base64.
    if chars == 0 or not value.isascii() or (chars - pad) % 4 == 1:
        raise not_base64
    size = (chars - pad) * 3 // 4
    if size > MAX_IMAGE_BYTES:
        raise _Invalid(f"data URI decodes to {_mb(size)}; images must be at most 10 MB")
    tail_at = payload_at + max(0, (chars // 4 - 16) * 4)
    _b64decode(value[tail_at:], not_base64)
    subject = "the data URI's image"
    for limit in _DATA_HEAD_CHARS:
        head = _b64decode(value[payload_at : payload_at + limit], not_base64)
        fmt = image_format(head[:64])
        if fmt is None:
            raise _Invalid(
                f"{subject} is not a {_FORMAT_NAMES} image (judged by its first bytes); "
                f"images must be one of these formats"
            )
        dims = _dimensions(io.BytesIO(head), fmt, head[:64])
        if dims is not None:
            _check_sides(dims[0], dims[1], subject)
            return
        if chars <= limit:
            break
    # A header past the first 48 KiB is left to the provider (or to the upload step).


def _b64decode(text: str, error: _Invalid) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise error from None


def _check_bytes(value: bytes | bytearray | memoryview) -> bytes:
    try:
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        if size > MAX_IMAGE_BYTES:  # before copying a mutable buffer
            raise _Invalid(f"the image data is {_mb(size)}; images must be at most 10 MB")
        data = value if isinstance(value, bytes) else bytes(value)
    except (ValueError, TypeError) as exc:  # a released memoryview
        raise _Invalid(f"the buffer given cannot be read ({exc}); {_FORMS}") from exc
    _inspect(io.BytesIO(data), len(data), f"the image data ({len(data)} bytes)")
    return data


def _check_path(text: str) -> Path:
    subject = f"file {_show(text)}"
    try:
        path = Path(text).expanduser()
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise _Invalid(f"{subject} does not exist; {_FORMS}") from None
    except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, too long, no home dir
        raise _Invalid(f"{subject} cannot be used ({_reason(exc)}); {_FORMS}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise _Invalid(f"{subject} is a directory; images must be image files")
    if not stat.S_ISREG(st.st_mode):
        raise _Invalid(f"{subject} is not a regular file; images must be image files")
    if st.st_size > MAX_IMAGE_BYTES:
        raise _Invalid(f"{subject} is {_mb(st.st_size)}; images must be at most 10 MB")
    key = _file_key(path, st)
    with _header_lock:
        info = _header_cache.get(key)
        if info is not None:
            _header_cache.move_to_end(key)
            return path
    try:
        with open_regular(path, subject) as fh:
            info = _inspect(fh, st.st_size, subject)
    except OSError as exc:
        raise _Invalid(f"{subject} cannot be read ({_reason(exc)}); {_FORMS}") from exc
    with _header_lock:
        _header_cache[key] = info
        if len(_header_cache) > _HEADER_CACHE_SIZE:
            _header_cache.popitem(last=False)
    return path


def open_regular(path: Path, subject: str) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file, without ever blocking.

    A FIFO or device put in a file's place after it was checked would make a plain ``open``
    wait for a writer forever (in a worker thread nobody can cancel): ``O_NONBLOCK`` makes
    that open return at once, and the opened file itself is checked, not the name.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Invalid(f"{subject} is not a regular file; images must be image files")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_key(path: Path, st: os.stat_result) -> tuple[Any, ...]:
    # The inode too: a file replaced by rename keeps its name and may keep size and mtime.
    return (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def image_kind(value: ImageInput) -> ImageKind:
    """The kind of a value returned by :func:`check_image`.

    >>> image_kind("https://example.com/a.png"), image_kind(Path("a.png"))
    ('url', 'file')
    """
    if isinstance(value, Path):
        return "file"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, str):
        if is_http_url(value):
            return "url"
        prefix = value[:8].lower()
        if prefix.startswith("oss://"):
            return "oss"
        if prefix.startswith("data:"):
            return "data"
    raise ValueError(f"not a checked image input: {type(value).__name__}; use check_image()")


# --- ImagePreparer ------------------------------------------------------------------------
