"""Files replaced whole: the one way the library writes a file someone else may read.

A file is written under a temporary name in its own folder and renamed over its target
only once the whole content is written, so a process killed at any point leaves either the
old file (or none) or the whole new one, never half of it. The temporary name is new and
random (``.NAME.XXXXXXXX.part``), created exclusively: a symbolic link planted beside the
target is never followed, and two writers never share a temporary file. A killed write
leaves a ``.*.part`` file behind, which a later run may remove.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["FILE_MODE", "atomic_write", "fsync_path", "write_atomic"]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Mode of the files written: what ``open()`` would give (0666 less the umask). Read once:
#: os.umask is process-wide and setting it from worker threads would race.
FILE_MODE = 0o666 & ~_current_umask()


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a folder by its path (a folder's fsync makes renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: Path, *, durable: bool = True, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """A file to write that replaces ``path`` when the block ends without an exception.

    Binary unless ``encoding`` is given. ``durable=True`` fsyncs the content before the
    rename; the caller fsyncs the folder (:func:`fsync_path`) when the new name must
    survive a power cut, once for all the files it wrote there. ``durable=False`` leaves
    every fsync to the caller, who must make the file durable before recording it anywhere
    (a power cut could otherwise leave it empty once its name is on disk). On an exception
    the temporary file is removed and ``path`` is untouched.

    >>> with atomic_write(Path("out/results.jsonl")) as handle:   # doctest: +SKIP
    ...     handle.write(b'{"id": "a"}\\n')
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; written files follow the umask
        with os.fdopen(fd, "w" if encoding else "wb", encoding=encoding) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` whole (see :func:`atomic_write`)."""
    with atomic_write(path, durable=durable) as handle:
        handle.write(data)
