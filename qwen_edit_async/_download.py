"""Results to disk: streamed, bounded, checked, written atomically."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import pathlib
import re
import tempfile
import time
import urllib.parse
from typing import TYPE_CHECKING

import aiohttp
import anyio

from ._config import ClientConfig, testing_enabled
from ._errors import DownloadError
from ._models import EditResult, GeneratedImage

if TYPE_CHECKING:
    from ._transport import Transport

__all__ = ["download_result", "safe_stem"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
}
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
)


def safe_stem(value: str) -> str:
    """A file-name stem that cannot leave its folder (no separators, no leading dots)."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    return cleaned[:120] or "image"


def _sniff_extension(data: bytes) -> str | None:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def _expired(url: str) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    for key in ("Expires", "expires", "X-Amz-Expires"):
        if key in query:
            try:
                return float(query[key][0]) < time.time()
            except ValueError:
                return False
    return False


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask is process-wide and setting it from worker threads would race.
_FILE_MODE = 0o666 & ~_current_umask()


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; saved images follow the umask
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: pathlib.Path) -> None:
    """Make the renames in ``folder`` durable (a journal may record the files next)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _fetch(transport: Transport, url: str, config: ClientConfig, index: int) -> bytes:
    """GET ``url`` into memory, retrying transient failures; checks type and size."""
    cap = config.download_max_bytes
    attempt = 0
    while True:
        attempt += 1
        try:
            async with transport.stream(url) as response:
                if response.status in (401, 403, 404, 410):
                    reason = (
                        "the URL has expired (result URLs are signed and valid about 24 h)"
                        if _expired(url) or response.status == 403
                        else "the URL was not found"
                    )
                    raise DownloadError(
                        f"images[{index}]: HTTP {response.status}: {reason}",
                        provider=transport.provider.name,
                        status=response.status,
                    )
                if response.status >= 400:
                    raise _Transient(f"HTTP {response.status}")
                ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if ctype and not (
                    ctype.startswith("image/") or ctype == "application/octet-stream"
                ):
                    raise DownloadError(
                        f"images[{index}]: the server sent {ctype!r}, not an image",
                        provider=transport.provider.name,
                        status=response.status,
                    )
                length = response.content_length
                if length is not None and length > cap:
                    raise DownloadError(
                        f"images[{index}]: {length} bytes exceeds download_max_bytes={cap}",
                        provider=transport.provider.name,
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > cap:
                        raise DownloadError(
                            f"images[{index}]: more than download_max_bytes={cap} bytes",
                            provider=transport.provider.name,
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except DownloadError:
            raise
        except (_Transient, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if attempt >= config.max_attempts:
                raise DownloadError(
                    f"images[{index}]: download failed after {attempt} attempts: {exc}",
                    provider=transport.provider.name,
                ) from exc
            if not testing_enabled():
                await anyio.sleep(min(config.backoff_max, config.backoff_base * 2**attempt))


class _Transient(Exception):
    pass


async def _save_one(
    transport: Transport,
    image: GeneratedImage,
    index: int,
    folder: pathlib.Path,
    stem: str,
    config: ClientConfig,
) -> pathlib.Path:
    if image.b64_json is not None:
        try:
            data = base64.b64decode(image.b64_json, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DownloadError(f"images[{index}]: b64_json is not valid base64") from exc
    elif image.url is not None:
        data = await _fetch(transport, image.url, config, index)
    else:
        raise DownloadError(f"images[{index}]: the result has neither url nor b64_json")
    if len(data) > config.download_max_bytes:
        raise DownloadError(
            f"images[{index}]: {len(data)} bytes exceeds download_max_bytes="
            f"{config.download_max_bytes}"
        )
    ext = _sniff_extension(data)
    if ext is None:
        raise DownloadError(f"images[{index}]: the bytes received are not a known image format")
    name = f"{stem}-{index}{ext}" if stem else f"{index}{ext}"
    path = folder / name
    await anyio.to_thread.run_sync(_write_atomic, path, data)
    return path


async def download_result(
    transport: Transport,
    result: EditResult,
    dest: str | os.PathLike[str],
    *,
    stem: str | None,
    config: ClientConfig,
    limiter: anyio.CapacityLimiter,
) -> list[pathlib.Path]:
    """Save every image of ``result`` into ``dest`` (created if needed), in order."""
    folder = pathlib.Path(dest)
    await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
    if stem is None:
        stem = result.task_id or result.request_id or ""
    stem = safe_stem(stem) if stem else ""
    paths: list[pathlib.Path | None] = [None] * len(result.images)
    errors: list[DownloadError] = []

    async def one(index: int, image: GeneratedImage) -> None:
        async with limiter:
            try:
                paths[index] = await _save_one(transport, image, index, folder, stem, config)
            except DownloadError as exc:
                if exc.task_id is None:
                    exc.task_id = result.task_id
                errors.append(exc)

    async with anyio.create_task_group() as group:
        for index, image in enumerate(result.images):
            group.start_soon(one, index, image)
    if any(path is not None for path in paths):
        await anyio.to_thread.run_sync(_fsync_dir, folder)
    if errors:
        raise errors[0]
    return [path for path in paths if path is not None]
