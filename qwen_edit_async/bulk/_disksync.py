"""Group commit for saved files: many results made durable by one worker-thread call.

A bulk run saves its images without an fsync per file (see ``download_result(durable=
False)``) and, before the journal lists them, asks :class:`BatchSync` to make them durable.
Every caller that arrives while a sync is running waits for the next one, which covers
them all: one thread call (one ``syncfs`` on Linux) per batch instead of two fsyncs and a
thread per job.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
import anyio.to_thread

from .._atomic import fsync_path

__all__ = ["BatchSync", "disk_full"]


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    syncfs: Callable[[int], int] = function
    return syncfs


_SYNCFS = _load_syncfs()


def sync_paths(anchor: Path, paths: Iterable[Path]) -> None:
    """Make ``paths`` (files and the folders naming them) durable.

    On Linux one ``syncfs`` of the file system holding ``anchor`` (where every path lives)
    writes them all at once; elsewhere each path is fsynced.
    """
    if _SYNCFS is not None:
        fd = os.open(anchor, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), str(anchor))
        finally:
            os.close(fd)
        return
    for path in dict.fromkeys(paths):
        fsync_path(path)


class BatchSync:
    """Make files durable in batches; :meth:`sync` returns once the caller's are.

    Example::

        syncer = BatchSync(out)
        paths = await download_result(..., durable=False)
        await syncer.sync([*paths, folder, folder.parent])
        await journal.succeed(..., files=paths)   # only now may the journal list them
    """

    def __init__(self, anchor: Path) -> None:
        self._anchor = anchor
        self._lock = anyio.Lock()
        self._pending: list[Path] = []
        self._requested = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is durable

    async def sync(self, paths: Iterable[Path]) -> None:
        """Wait until ``paths`` are durable (an ``OSError`` if the sync failed)."""
        self._pending.extend(paths)
        self._requested += 1
        ticket = self._requested
        async with self._lock:
            if self._done >= ticket:  # a batch that began after we queued covered us
                return
            # Taken together, with no await between: every ticket up to ``upto`` has its
            # paths in ``batch``.
            batch, self._pending = self._pending, []
            upto = self._requested
            try:
                await anyio.to_thread.run_sync(sync_paths, self._anchor, batch)
            except BaseException:
                self._pending[:0] = batch  # the next caller syncs them again
                raise
            self._done = upto


#: A save that failed with one of these cannot succeed for any job until someone acts.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def disk_full(error: BaseException | None) -> OSError | None:
    """The disk-full ``OSError`` behind ``error`` (itself or a cause), if any."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return error
        error = error.__cause__
    return None
