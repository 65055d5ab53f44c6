"""Request bodies produced while they are sent: memory per job does not follow image size.

A dialect builds its JSON body as always (it stays pure), but each local image is given to it
as a short placeholder data URI (``data:<mime>;base64,<token>``). The encoded body is then cut
at the tokens into parts: the JSON before, the image's base64 (produced from the file in
chunks while the request is written), the JSON after. The exact ``Content-Length`` is known
up front (base64 is 4 bytes per 3), and the bytes sent are identical to the body built from
the whole data URI.

Each attempt streams anew from the source (:meth:`StreamedBody.chunks`). A file that is not
the one checked (other inode, size or modification time, or a read that ends early or runs
long) aborts the attempt before its last byte is sent: the provider gets an incomplete body,
never a corrupt image, and the job fails with :class:`~qwen_edit_async.ValidationError`.
"""

from __future__ import annotations

import binascii
import errno
import os
import secrets
import stat
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from ._errors import ValidationError

__all__ = [
    "BytesSource",
    "EncodedSource",
    "FileSource",
    "Source",
    "SourceChanged",
    "StreamedBody",
    "split_body",
]

#: Raw bytes per chunk: a multiple of 3, so chunks encode to base64 without padding and the
#: pieces join into exactly the base64 of the whole. 384 KiB in, 512 KiB out: few
#: worker-thread hops per image, and under 1 MiB held per job while it is sent.
CHUNK = 3 * 2**17

#: Marks a placeholder in a body; random per process, so no prompt can forge it by chance.
_TOKEN = "qeaPart" + secrets.token_hex(12)


class SourceChanged(ValidationError):
    """A local image changed between its check and the end of its upload."""


@dataclass(frozen=True, slots=True)
class FileSource:
    """A checked file: streamed from disk, and refused if it is no longer what was checked."""

    path: Path
    mime: str
    size: int
    inode: tuple[int, int]
    mtime_ns: int
    field: str

    @property
    def encoded_length(self) -> int:
        return 4 * ((self.size + 2) // 3)

    def _changed(self, why: str) -> SourceChanged:
        return SourceChanged(
            f"{self.field}: file {str(self.path)!r} changed while it was sent ({why}); "
            "nothing complete was sent. Images must not change while their job runs",
            field=self.field,
        )

    def _check(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise self._changed("it is no longer a regular file")
        if (st.st_dev, st.st_ino) != self.inode:
            raise self._changed("another file now has its name")
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise self._changed(f"{self.size} bytes were checked, {st.st_size} are there now")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The file's base64, chunk by chunk (read and encoded in a worker thread).

        A read stuck in its thread (a hung network mount) does not hold up the job's
        deadline or cancellation: the thread is abandoned and closes the file itself.
        """
        try:
            handle = await anyio.to_thread.run_sync(self._open, abandon_on_cancel=True)
        except OSError as exc:
            raise self._changed(exc.strerror or str(exc)) from exc
        try:
            left = self.size
            while left > 0:
                want = min(CHUNK, left)
                last = want == left
                yield await anyio.to_thread.run_sync(
                    self._read, handle, want, last, abandon_on_cancel=True
                )
                left -= want
        finally:
            handle.close()

    def _open(self) -> _Handle:
        # Non-blocking open: a FIFO put in the file's place must not hang the thread.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            self._check(os.fstat(fd))
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return _Handle(fd)

    def _read(self, handle: _Handle, want: int, last: bool) -> bytes:
        with handle:
            fd = handle.fd
            data = os.read(fd, want + 1 if last else want)
            while len(data) < want:
                more = os.read(fd, want - len(data) + (1 if last else 0))
                if not more:
                    raise self._changed(f"it ended {want - len(data)} bytes early")
                data += more
            if len(data) > want:
                raise self._changed("it grew")
            if last:
                # The last chunk goes out only if the file is still the one checked.
                self._check(os.fstat(fd))
        return binascii.b2a_base64(data, newline=False)


class _Handle:
    """A file descriptor closed once, and never while a worker thread is reading it (an
    abandoned read closes it when it returns), so its number cannot be reused under it."""

    __slots__ = ("_close_pending", "_lock", "_reading", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._reading = False
        self._close_pending = False

    def __enter__(self) -> _Handle:
        with self._lock:
            if self._close_pending:
                raise OSError(errno.EBADF, "the upload was abandoned")
            self._reading = True
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._reading = False
            if self._close_pending:
                os.close(self.fd)

    def close(self) -> None:
        with self._lock:
            if self._close_pending:
                return
            self._close_pending = True
            if not self._reading:
                os.close(self.fd)


@dataclass(frozen=True, slots=True)
class BytesSource:
    """Image bytes the caller holds: encoded chunk by chunk, never as one whole copy."""

    data: bytes
    mime: str

    @property
    def encoded_length(self) -> int:
        return 4 * ((len(self.data) + 2) // 3)

    async def chunks(self) -> AsyncIterator[bytes]:
        view = memoryview(self.data)
        for start in range(0, len(view), CHUNK):
            yield binascii.b2a_base64(view[start : start + CHUNK], newline=False)


@dataclass(frozen=True, slots=True)
class EncodedSource:
    """An image already encoded (the cached data URI of a file several jobs share): its
    base64 sent in slices, so no job holds a body with the whole image in it."""

    uri: str
    mime: str

    @property
    def encoded_length(self) -> int:
        return len(self.uri) - self.uri.index(",", 0, 256) - 1

    async def chunks(self) -> AsyncIterator[bytes]:
        step = 4 * CHUNK // 3
        for start in range(self.uri.index(",", 0, 256) + 1, len(self.uri), step):
            yield self.uri[start : start + step].encode("ascii")


Source = FileSource | BytesSource | EncodedSource


def placeholder(index: int, mime: str) -> str:
    """The data URI a dialect is given in place of local image ``index``."""
    return f"data:{mime};base64,{_TOKEN}{index:03d}"


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """A request body as parts: JSON bytes and image sources, with its exact length."""

    parts: tuple[bytes | Source, ...]
    length: int

    async def chunks(self) -> AsyncIterator[bytes]:
        """The whole body, produced anew on each call (one call per attempt)."""
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                async for chunk in part.chunks():
                    yield chunk


def split_body(body: bytes, sources: Sequence[Source]) -> StreamedBody | None:
    """Cut ``body`` (encoded with :func:`placeholder` ``i`` for ``sources[i]``) into parts.

    ``None`` when a placeholder is not found exactly once (a dialect that re-encodes the
    image would do that): the caller then builds the body whole.
    """
    parts: list[bytes | Source] = []
    length = 0
    rest = body
    for index, source in enumerate(sources):
        token = f"{_TOKEN}{index:03d}".encode("ascii")
        if body.count(token) != 1:
            return None
        before, rest = rest.split(token, 1)
        parts += [before, source]
        length += len(before) + source.encoded_length
    parts.append(rest)
    length += len(rest)
    return StreamedBody(tuple(p for p in parts if not isinstance(p, bytes) or p), length)
