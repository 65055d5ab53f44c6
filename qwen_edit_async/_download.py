"""Results to disk: streamed, bounded, checked, written atomically."""

from __future__ import annotations

import base64
import binascii
import os
import pathlib
import re
import time
import urllib.parse
from typing import TYPE_CHECKING

import anyio

from ._addresses import ForbiddenAddress, forbidden_address
from ._atomic import fsync_path, write_atomic
from ._config import ClientConfig
from ._errors import DownloadError, with_context
from ._http import Lost, NotSent
from ._images import EXTENSIONS, image_format
from ._models import EditResult, GeneratedImage
from ._urls import is_http_url
from .providers._base import parse_retry_after

if TYPE_CHECKING:
    from ._calls import Calls

__all__ = ["download_result", "safe_stem"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(value: str) -> str:
    """A file-name stem that cannot leave its folder (no separators, no leading dots)."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    return cleaned[:120] or "image"


def _expired(url: str) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    for key in ("Expires", "expires", "X-Amz-Expires"):
        if key in query:
            try:
                return float(query[key][0]) < time.time()
            except ValueError:
                return False
    return False


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_HOPS = 5


def _check_url(url: str, index: int, provider: str) -> None:
    """Refuse at once what no retry can fetch: other schemes, forbidden addresses."""
    if not is_http_url(url):
        shown = url if len(url) <= 80 else url[:77] + "..."
        raise DownloadError(
            f"images[{index}]: {shown!r} is not an http(s) URL; it cannot be downloaded",
            provider=provider,
        )
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as exc:
        raise DownloadError(f"images[{index}]: the URL cannot be read: {exc}") from exc
    if not host:
        raise DownloadError(f"images[{index}]: the URL has no host", provider=provider)
    if forbidden_address(host):
        raise DownloadError(
            f"images[{index}]: {host} is a link-local or cloud-metadata address; refused",
            provider=provider,
        )


async def _fetch(calls: Calls, url: str, config: ClientConfig, index: int) -> bytes:
    """GET ``url`` into memory, retrying transient failures; checks type and size.

    Each attempt, redirects included, ends within ``download_timeout``; a URL that cannot
    be fetched (scheme, forbidden address, also after a redirect) fails at once.
    """
    provider = calls.provider.name
    _check_url(url, index, provider)
    attempt = 0
    while True:
        attempt += 1
        try:
            with anyio.move_on_after(config.download_timeout):
                return await _fetch_once(calls, url, config, index)
            # A deadline is not retried: a server that drips would drip again.
            raise DownloadError(
                f"images[{index}]: no complete download within download_timeout="
                f"{config.download_timeout:g} s",
                provider=provider,
            )
        except DownloadError:
            raise
        except ForbiddenAddress as exc:
            raise DownloadError(f"images[{index}]: {exc}", provider=provider) from exc
        except (_Transient, NotSent, Lost) as exc:
            if attempt >= config.max_attempts:
                raise DownloadError(
                    f"images[{index}]: download failed after {attempt} attempts: {exc}",
                    provider=provider,
                ) from exc
            retry_after = exc.retry_after if isinstance(exc, _Transient) else None
            wait = calls.policy.delay(attempt, retry_after)
            if wait is None:
                raise DownloadError(
                    f"images[{index}]: {exc}; the server asked to wait {retry_after:g} s, "
                    f"more than retry_after_max={calls.policy.retry_after_max:g}",
                    provider=provider,
                ) from exc
            await anyio.sleep(wait)


async def _fetch_once(calls: Calls, url: str, config: ClientConfig, index: int) -> bytes:
    provider = calls.provider.name
    cap = config.download_max_bytes
    for _ in range(_MAX_HOPS + 1):
        async with calls.pipe.stream(url, read_timeout=config.read_timeout) as response:
            if response.status in _REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise _Transient(f"HTTP {response.status} without a Location")
                url = urllib.parse.urljoin(response.url, location)
                _check_url(url, index, provider)  # where a redirect leads is checked too
                continue
            if response.status in (401, 403, 404, 410):
                reason = (
                    "the URL has expired (result URLs are signed and valid about 24 h)"
                    if _expired(url) or response.status == 403
                    else "the URL was not found"
                )
                raise DownloadError(
                    f"images[{index}]: HTTP {response.status}: {reason}",
                    provider=provider,
                    status=response.status,
                )
            if response.status >= 400:
                raise _Transient(
                    f"HTTP {response.status}", retry_after=parse_retry_after(response.headers)
                )
            ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
                raise DownloadError(
                    f"images[{index}]: the server sent {ctype!r}, not an image",
                    provider=provider,
                    status=response.status,
                )
            length = response.content_length
            if length is not None and length > cap:
                raise DownloadError(
                    f"images[{index}]: {length} bytes exceeds download_max_bytes={cap}",
                    provider=provider,
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.chunks(256 * 1024):
                size += len(chunk)
                if size > cap:
                    raise DownloadError(
                        f"images[{index}]: more than download_max_bytes={cap} bytes",
                        provider=provider,
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    raise DownloadError(f"images[{index}]: more than {_MAX_HOPS} redirects", provider=provider)


class _Transient(Exception):
    """A download failure worth another attempt (``retry_after``: the wait the server
    asked for, if it did)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def _receive(
    calls: Calls, image: GeneratedImage, index: int, config: ClientConfig
) -> tuple[bytes, str]:
    """The bytes of one image (fetched or decoded, checked) and their file extension."""
    if image.b64_json is not None:
        try:
            data = base64.b64decode(image.b64_json, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DownloadError(f"images[{index}]: b64_json is not valid base64") from exc
    elif image.url is not None:
        data = await _fetch(calls, image.url, config, index)
    else:
        raise DownloadError(f"images[{index}]: the result has neither url nor b64_json")
    if len(data) > config.download_max_bytes:
        raise DownloadError(
            f"images[{index}]: {len(data)} bytes exceeds download_max_bytes="
            f"{config.download_max_bytes}"
        )
    fmt = image_format(data[:64])
    if fmt is None:
        raise DownloadError(f"images[{index}]: the bytes received are not a known image format")
    return data, EXTENSIONS[fmt]


def _store(
    folder: pathlib.Path, files: list[tuple[int, pathlib.Path, bytes]], durable: bool
) -> tuple[dict[int, pathlib.Path], list[DownloadError]]:
    """Everything a result's save does on disk, in one worker-thread call.

    One call per result, not one per step and file: each hop to a thread costs a wake-up,
    and a bulk run with hundreds of results in flight would otherwise keep dozens of
    threads fighting for the GIL. Returns the files written (by image index) and the
    errors of those that could not be, so one bad file does not lose the others.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = _save_error(f"could not create {folder}", exc)
        error.__cause__ = exc
        return {}, [error]
    saved: dict[int, pathlib.Path] = {}
    errors: list[DownloadError] = []
    for index, path, data in files:
        try:
            write_atomic(path, data, durable=durable)
        except OSError as exc:  # a full disk, no permission: this image's save failed
            error = _save_error(f"images[{index}]: could not save {path}", exc)
            error.__cause__ = exc
            errors.append(error)
        else:
            saved[index] = path
    if saved and durable:
        try:
            fsync_path(folder)
        except OSError as exc:
            error = _save_error(f"could not sync {folder}", exc)
            error.__cause__ = exc
            errors.append(error)
    return saved, errors


def _save_error(what: str, exc: OSError) -> DownloadError:
    return DownloadError(f"{what}: {exc.strerror or exc}")


async def download_result(
    calls: Calls,
    result: EditResult,
    dest: str | os.PathLike[str],
    *,
    stem: str | None,
    config: ClientConfig,
    limiter: anyio.CapacityLimiter,
    durable: bool = True,
) -> list[pathlib.Path]:
    """Save every image of ``result`` into ``dest`` (created if needed), in order.

    The images are received concurrently (on the event loop), then written by one
    worker-thread call: the folder, each file atomically, the folder's fsync.
    ``durable=False`` leaves out the fsyncs: for a caller that syncs many results at once
    (``BatchSync``) before recording them anywhere.
    """
    folder = pathlib.Path(dest)
    if stem is None:
        stem = result.task_id or result.request_id or ""
    stem = safe_stem(stem) if stem else ""
    received: list[tuple[int, pathlib.Path, bytes]] = []
    errors: list[Exception] = []

    async def one(index: int, image: GeneratedImage) -> None:
        async with limiter:
            try:
                data, ext = await _receive(calls, image, index, config)
            except Exception as exc:
                # Kept, not raised: the task group would wrap it in an ExceptionGroup.
                errors.append(_with_task(exc, result))
                return
        name = f"{stem}-{index}{ext}" if stem else f"{index}{ext}"
        received.append((index, folder / name, data))

    async with anyio.create_task_group() as group:
        for index, image in enumerate(result.images):
            group.start_soon(one, index, image)
    received.sort(key=lambda item: item[0])
    saved, failures = await anyio.to_thread.run_sync(_store, folder, received, durable)
    errors.extend(_with_task(error, result) for error in failures)
    if errors:
        # A DownloadError first; anything else (a bug) as itself, never grouped.
        raise next((e for e in errors if isinstance(e, DownloadError)), errors[0])
    return [saved[index] for index in sorted(saved)]


def _with_task(exc: Exception, result: EditResult) -> Exception:
    if isinstance(exc, DownloadError):
        return with_context(exc, task_id=result.task_id)
    return exc
