"""One writer per output folder: an exclusive ``flock`` on ``DIR/.qwen-edit.lock``.

Two runs on one folder would each submit the jobs the other has not journaled yet and pay
for them twice. The lock is held for a run's whole life and released by the OS when the
process ends, ``kill -9`` included, so a stale lock never needs cleaning up. The file holds
the owner's pid and start time, for the message the second run prints.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderLock", "FolderLocked"]

LOCK_NAME = ".qwen-edit.lock"


class FolderLocked(Exception):
    """Another process holds the folder's lock; the message names its pid and start time."""


class FolderLock:
    """The exclusive lock on ``folder``; :meth:`release` (or the process's end) frees it.

    >>> lock = FolderLock.acquire(Path("results"))     # doctest: +SKIP
    >>> lock.release()                                  # doctest: +SKIP
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> FolderLock:
        """Take the lock or raise :class:`FolderLocked` at once (never waits)."""
        path = folder / LOCK_NAME
        try:
            # O_NOFOLLOW: a planted symlink must not make us truncate a file elsewhere.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if path.is_symlink():
                raise FolderLocked(f"{path} is a symbolic link; remove it") from exc
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderLocked(
                f"{folder} is in use by another qwen-edit run ({holder}); one run per folder "
                "at a time, so that no job is paid twice: wait for it to end or stop it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {since}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        """Free the lock (closing the file releases the ``flock``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
