"""Preparing image inputs for a provider when a job takes its slot.

Files are read in a worker thread, encoded as data URIs or handed to the user's uploader,
and shared: concurrent jobs naming the same input wait for one piece of work, and results
are kept in an LRU bounded in bytes, so memory follows concurrency, not batch size.

For providers that take data URIs, :meth:`ImagePreparer.prepare_parts` goes further: a file
or bytes input used once is not encoded at all here, but streamed into the request body
while it is sent (:mod:`._body`), so memory per job does not follow image size. Only an
input seen again (shared by several jobs) is encoded once and kept in the cache, and each
job's body sends that one encoding in slices rather than a copy of it.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ._body import BytesSource, EncodedSource, FileSource, Source, placeholder
from ._config import ClientConfig
from ._errors import ConfigurationError, ValidationError
from ._images import (
    _FORMS,
    MAX_IMAGE_BYTES,
    ImageInfo,
    ImageInput,
    Uploader,
    _file_key,
    _inspect,
    _Invalid,
    _mb,
    _reason,
    _show,
    image_kind,
    open_regular,
)

__all__ = ["ImagePreparer"]


def _to_data_uri(data: bytes, mime: str) -> str:
    # One C encode, one join, one ASCII decode: no Python-level loop over the data.
    return (
        b"data:%s;base64,%s" % (mime.encode("ascii"), binascii.b2a_base64(data, newline=False))
    ).decode("ascii")


def _read_file(path: Path) -> tuple[bytes, ImageInfo, tuple[Any, ...]]:
    """Read and re-check a file (in a worker thread); return data, info and cache key."""
    subject = f"file {_show(str(path))}"
    try:
        with open_regular(path, subject) as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > MAX_IMAGE_BYTES:
                raise _Invalid(f"{subject} is {_mb(st.st_size)}; images must be at most 10 MB")
            data = fh.read(st.st_size + 1)
    except FileNotFoundError:
        raise _Invalid(f"{subject} no longer exists; {_FORMS}") from None
    except OSError as exc:
        raise _Invalid(f"{subject} cannot be read ({_reason(exc)}); {_FORMS}") from exc
    if len(data) != st.st_size:
        raise _Invalid(f"{subject} changed while it was read; images must not change")
    info = _inspect(io.BytesIO(data), len(data), subject)
    return data, info, _file_key(path, st)


def _probe_file(path: Path, field: str) -> tuple[FileSource, tuple[Any, ...]]:
    """Check a file by its header only (in a worker thread); the body streams it later."""
    subject = f"file {_show(str(path))}"
    try:
        with open_regular(path, subject) as fh:
            st = os.fstat(fh.fileno())
            info = _inspect(fh, st.st_size, subject)
    except FileNotFoundError:
        raise _Invalid(f"{subject} no longer exists; {_FORMS}") from None
    except OSError as exc:
        raise _Invalid(f"{subject} cannot be read ({_reason(exc)}); {_FORMS}") from exc
    source = FileSource(path, info.mime, st.st_size, (st.st_dev, st.st_ino), st.st_mtime_ns, field)
    return source, _file_key(path, st)


def _encoded(value: str) -> EncodedSource | None:
    """A data URI made by :func:`_to_data_uri` as a source to stream (``None`` for any
    other string: its placeholder must rebuild the header ``data:<mime>;base64,``)."""
    if value[:5] != "data:":
        return None
    comma = value.find(",", 0, 256)
    if comma < 0 or value[comma - 7 : comma] != ";base64":
        return None
    return EncodedSource(value, value[5 : comma - 7])


#: Slots of the table of inputs seen (8 bytes each: 128 KiB).
_SEEN_SLOTS = 2**14


class _SeenTable:
    """The inputs seen lately, to tell an input several jobs share from one used once.

    A direct-mapped table of key hashes: it costs 128 KiB however many distinct files a
    batch names (a dict of the keys themselves grew to 22 MiB at 65,536 files). A key whose
    slot another key took meanwhile is forgotten: that input, seen again, is streamed again
    instead of cached, and its next use is recognized. Either way the same bytes are sent;
    the table only picks how.

    >>> seen = _SeenTable()
    >>> seen.add(("a.png", 1)), seen.add(("a.png", 1))
    (False, True)
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots = array("q", bytes(8 * _SEEN_SLOTS))

    @staticmethod
    def slot(key: Hashable) -> tuple[int, int]:
        """``key``'s slot and the hash stored there (never 0, the mark of an empty slot)."""
        digest = hash(key) or 1
        return digest & (_SEEN_SLOTS - 1), digest

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; return whether it was remembered already."""
        index, digest = self.slot(key)
        if self._slots[index] == digest:
            return True
        self._slots[index] = digest
        return False


@dataclass
class _Pending:
    done: anyio.Event
    value: str | None = None
    error: Exception | None = None


@dataclass
class _Entry:
    value: str
    cost: int
    source: object = None  # keeps an id()-keyed bytes object alive, so its id stays unique


class _NoUploader(Exception):
    """A local input for a URL-only provider, and no uploader (callers add the field)."""


class ImagePreparer:
    """Turns checked inputs into strings a provider accepts, when a job takes its slot.

    - URLs (and ``oss://``) pass through.
    - Files and bytes become ``data:`` URIs if ``accepts_data_uri``, else are given to
      ``uploader(data, mime)`` for a public URL. Data URIs pass through, or are decoded and
      uploaded for URL-only providers. A local input with neither raises
      :class:`~qwen_edit_async.ConfigurationError`.
    - Files are read in a worker thread and checked again (they may have changed since the
      request was built: :class:`~qwen_edit_async.ValidationError`).
    - Each distinct input is read, encoded or uploaded once: concurrent jobs wait for the
      same work, and results stay in an LRU bounded by ``cache_bytes``. Files are keyed by
      (path, inode, size, mtime), bytes by object identity (hashing 10 MB per job would cost
      more than encoding it; pass the same ``bytes`` object to share), data URIs by value.
      Failures are shared with the jobs already waiting, then forgotten.

    >>> preparer = ImagePreparer(accepts_data_uri=True)
    >>> await preparer.prepare([Path("cat.png"), "https://example.com/sofa.jpg"])
    ['data:image/png;base64,iVBORw0KGgo...', 'https://example.com/sofa.jpg']
    """

    def __init__(
        self,
        *,
        accepts_data_uri: bool,
        uploader: Uploader | None = None,
        cache_bytes: int = ClientConfig.image_cache_bytes,
        provider: str | None = None,
    ) -> None:
        self._accepts_data_uri = accepts_data_uri
        self._uploader = uploader
        self._cache_bytes = cache_bytes
        self._provider = provider
        self._cache: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._cached_bytes = 0
        self._pending: dict[Hashable, _Pending] = {}
        self._hits = 0
        self._misses = 0
        self._shared = 0
        self._streamed = 0
        #: Inputs streamed once: seen again, an input is shared and worth caching.
        self._seen = _SeenTable() if accepts_data_uri else None

    def stats(self) -> dict[str, int]:
        """Counters: ``hits`` (served from the cache), ``shared`` (joined work in flight),
        ``misses`` (work done), ``streamed`` (inputs left to stream into the body),
        ``entries``, ``bytes_cached``, ``in_flight``."""
        return {
            "streamed": self._streamed,
            "hits": self._hits,
            "shared": self._shared,
            "misses": self._misses,
            "entries": len(self._cache),
            "bytes_cached": self._cached_bytes,
            "in_flight": len(self._pending),
        }

    async def prepare(self, images: Sequence[ImageInput], *, field: str = "images") -> list[str]:
        """Return one provider-ready string per input, in order."""
        out: list[str] = []
        for index, image in enumerate(images):
            name = f"{field}[{index}]"
            try:
                out.append(await self._prepare_one(image))
            except _Invalid as exc:
                raise ValidationError(f"{name}: {exc}", field=name) from exc.__cause__
            except _NoUploader as exc:
                raise ConfigurationError(
                    f"{name}: {exc} but this provider takes only public URLs; pass "
                    f"uploader=... to QwenEditClient, or give public https URLs",
                    provider=self._provider,
                ) from None
        return out

    async def prepare_parts(
        self, images: Sequence[str | bytes | Path], *, field: str = "images"
    ) -> tuple[list[str], list[Source]]:
        """Like :meth:`prepare`, but files and bytes become placeholder data URIs
        (:func:`~._body.placeholder`) and sources to stream into the body; returns both. A
        file used once is read while it is sent; a file several jobs share is encoded once,
        cached, and sent in slices of that one encoding, so no job's body holds a copy of
        an image.

        Only for providers that take data URIs (else this is :meth:`prepare`).
        """
        if not self._accepts_data_uri:
            return await self.prepare(images, field=field), []
        out: list[str] = []
        sources: list[Source] = []
        for index, image in enumerate(images):
            name = f"{field}[{index}]"
            try:
                source = await self._source(image, name)
                if source is None:
                    value = await self._prepare_one(image)
                    # A shared file: its cached data URI (base64 made here, nothing to
                    # escape in JSON). Data URIs given stay whole: their text is unchecked.
                    source = _encoded(value) if isinstance(image, Path) else None
                    if source is None:
                        out.append(value)
                        continue
                out.append(placeholder(len(sources), source.mime))
                sources.append(source)
            except _Invalid as exc:
                raise ValidationError(f"{name}: {exc}", field=name) from exc.__cause__
        return out, sources

    async def _source(self, image: str | bytes | Path, field: str) -> Source | None:
        """A source to stream for bytes and for a file seen for the first time, else
        ``None`` (the input is prepared whole, and a shared file is cached)."""
        if isinstance(image, bytes):
            # Always streamed: the caller holds the bytes already, and object ids are reused
            # too soon to tell a shared object from a new one at the same address.
            info = _inspect(io.BytesIO(image), len(image), f"the image data ({len(image)} bytes)")
            self._streamed += 1
            return BytesSource(image, info.mime)
        if not isinstance(image, Path):
            return None
        try:
            st = os.stat(image)
        except (OSError, ValueError):
            return None  # the usual path says why
        if not self._first_use(_file_key(image, st)):
            return None
        source, _ = await anyio.to_thread.run_sync(
            _probe_file, image, field, abandon_on_cancel=True
        )
        self._streamed += 1
        return source

    def _first_use(self, key: Hashable) -> bool:
        if key in self._cache or key in self._pending:
            return False
        # Seen before: shared, so encoded once and kept.
        return self._seen is None or not self._seen.add(key)

    async def _prepare_one(self, image: ImageInput) -> str:
        kind = image_kind(image)
        if kind in ("url", "oss"):
            assert isinstance(image, str)
            return image
        if kind == "data":
            assert isinstance(image, str)
            if self._accepts_data_uri:
                return image
            self._need_uploader("a data URI was given")
            return await self._once(
                ("data", image), len(image), None, lambda: self._upload_data_uri(image)
            )
        if isinstance(image, bytes):
            if not self._accepts_data_uri:
                self._need_uploader(f"{len(image)} bytes were given")
            return await self._once(
                ("bytes", id(image), len(image)), len(image), image, lambda: self._from_bytes(image)
            )
        assert isinstance(image, Path)
        if not self._accepts_data_uri:
            self._need_uploader(f"a local file ({_show(str(image))}) was given")
        try:
            st = os.stat(image)
        except FileNotFoundError:
            raise _Invalid(f"file {_show(str(image))} no longer exists; {_FORMS}") from None
        except (OSError, ValueError) as exc:
            raise _Invalid(
                f"file {_show(str(image))} cannot be read ({_reason(exc)}); {_FORMS}"
            ) from exc
        return await self._once(_file_key(image, st), 0, None, lambda: self._from_file(image))

    def _need_uploader(self, what: str) -> None:
        if self._uploader is None:
            raise _NoUploader(what)

    async def _from_file(self, path: Path) -> tuple[str, Hashable]:
        if self._accepts_data_uri:

            def read_and_encode() -> tuple[str, tuple[Any, ...]]:
                data, info, key = _read_file(path)
                return _to_data_uri(data, info.mime), key

            # A read stuck in the kernel (a hung network mount) must not hold up the job's
            # deadline or the client's close: on cancellation the thread is abandoned.
            return await anyio.to_thread.run_sync(read_and_encode, abandon_on_cancel=True)
        data, info, key = await anyio.to_thread.run_sync(_read_file, path, abandon_on_cancel=True)
        return await self._upload(data, info.mime), key

    async def _from_bytes(self, data: bytes) -> tuple[str, None]:
        # Re-sniffed (cheap, header only): a bytes subclass could have been built unchecked.
        info = _inspect(io.BytesIO(data), len(data), f"the image data ({len(data)} bytes)")
        if self._accepts_data_uri:
            return await anyio.to_thread.run_sync(_to_data_uri, data, info.mime), None
        return await self._upload(data, info.mime), None

    async def _upload_data_uri(self, uri: str) -> tuple[str, None]:
        payload = uri[uri.index(",") + 1 :]
        try:
            data = await anyio.to_thread.run_sync(
                lambda: base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
            )
        except (binascii.Error, ValueError):
            raise _Invalid("data URI payload is not valid base64") from None
        info = _inspect(io.BytesIO(data), len(data), "the data URI's image")
        return await self._upload(data, info.mime), None

    async def _upload(self, data: bytes, mime: str) -> str:
        assert self._uploader is not None
        url = await self._uploader(data, mime)
        if not isinstance(url, str) or not url:
            raise ConfigurationError(
                f"the uploader returned {url!r}; it must return a public URL string",
                provider=self._provider,
            )
        return url

    async def _once(
        self,
        key: Hashable,
        extra_cost: int,
        source: object,
        work: Callable[[], Awaitable[tuple[str, Hashable | None]]],
    ) -> str:
        """Return the cached result for ``key``, join the work in flight, or do it."""
        while True:
            entry = self._cache.get(key)
            if entry is not None and (source is None or entry.source is source):
                self._cache.move_to_end(key)
                self._hits += 1
                return entry.value
            pending = self._pending.get(key)
            if pending is None:
                break
            self._shared += 1
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.value is not None:
                return pending.value
            # The task doing the work was cancelled: take it over.
        pending = self._pending[key] = _Pending(anyio.Event())
        self._misses += 1
        try:
            value, result_key = await work()
            pending.value = value
        except Exception as exc:
            pending.error = exc
            raise
        finally:
            # On cancellation neither is set, and a waiter takes the work over.
            del self._pending[key]
            pending.done.set()
        # A file is cached under the stat of what was read, if it is still the one asked for.
        if result_key is None or result_key == key:
            self._store(key, _Entry(value, len(value) + extra_cost, source))
        return value

    def _store(self, key: Hashable, entry: _Entry) -> None:
        if entry.cost > self._cache_bytes:
            return
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.cost
        self._cache[key] = entry
        self._cached_bytes += entry.cost
        while self._cached_bytes > self._cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.cost
