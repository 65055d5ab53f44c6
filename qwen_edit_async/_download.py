"""Results to disk: each image received (fetched or decoded), checked, written atomically.

The bytes at a result URL come from the ``fetch`` it is given (``Calls.fetch``: the pipe,
the retry policy, the caps and deadlines); this module only turns them into files.
"""

from __future__ import annotations

import base64
import binascii
import os
import pathlib
import re
from collections.abc import Awaitable, Callable

import anyio

from ._atomic import fsync_path, write_atomic
from ._config import ClientConfig
from ._errors import DownloadError, with_context
from ._images import EXTENSIONS, image_format
from ._models import EditResult, GeneratedImage

#: ``await fetch(url, index)``: the bytes at a result URL (the conversation's, retried and
#: capped; ``index`` names the image in its errors).
Fetch = Callable[[str, int], Awaitable[bytes]]

__all__ = ["download_result", "safe_stem"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(value: str) -> str:
    """A file-name stem that cannot leave its folder (no separators, no leading dots)."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    return cleaned[:120] or "image"


async def _receive(
    fetch: Fetch, image: GeneratedImage, index: int, config: ClientConfig
) -> tuple[bytes, str]:
    """The bytes of one image (fetched or decoded, checked) and their file extension."""
    if image.b64_json is not None:
        try:
            data = base64.b64decode(image.b64_json, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DownloadError(f"images[{index}]: b64_json is not valid base64") from exc
    elif image.url is not None:
        data = await fetch(image.url, index)
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
    fetch: Fetch,
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
                data, ext = await _receive(fetch, image, index, config)
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
