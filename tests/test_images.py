"""Image inputs: check_image, sniff, image_kind and ImagePreparer."""

from __future__ import annotations

import base64
import os
import struct
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen_edit_async._errors import ConfigurationError, ValidationError
from qwen_edit_async._images import (
    MAX_IMAGE_BYTES,
    MAX_SIDE,
    MIN_SIDE,
    ImageInfo,
    check_image,
    image_kind,
    sniff,
)
from qwen_edit_async._prepare import ImagePreparer
from tests._imagegen import FORMATS, make_image

MIMES = {f: f"image/{f}" for f in FORMATS}


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def invalid(value: object, field: str = "images[1]") -> ValidationError:
    with pytest.raises(ValidationError) as info:
        check_image(value, field)
    err = info.value
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    return err


# --- real images of each format -------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_file_is_checked_and_sniffed(tmp_path: Path, fmt: str) -> None:
    """A real file of each of the six formats passes check_image, comes back as the same
    Path, and sniff reads its format, mime, width, height and size from the bytes."""
    data = make_image(fmt, 400, 700)
    path = write(tmp_path, f"img.{fmt}", data)
    assert check_image(path, "images[0]") == path
    assert check_image(str(path), "images[0]") == path
    assert sniff(data) == ImageInfo(fmt, MIMES[fmt], 400, 700, len(data))


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_as_bytes(fmt: str) -> None:
    """bytes pass through as the same object; bytearray and memoryview come back as an
    equal bytes copy, so mutating the buffer later cannot change a built request."""
    data = make_image(fmt, 3072, 384)
    assert check_image(data, "images[0]") is data
    buffer = bytearray(data)
    copied = check_image(buffer, "images[0]")
    assert type(copied) is bytes and copied == data
    buffer[:4] = b"XXXX"
    assert copied == data
    assert check_image(memoryview(data), "images[0]") == data


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("width", "height"),
    [(MIN_SIDE - 1, 500), (500, MIN_SIDE - 1), (MAX_SIDE + 1, 500), (500, MAX_SIDE + 1)],
)
def test_sides_outside_384_to_3072_are_refused(
    tmp_path: Path, fmt: str, width: int, height: int
) -> None:
    """Each side must be 384..3072 px: one pixel outside either bound, in either
    direction, is a ValidationError that states the size and the rule."""
    path = write(tmp_path, f"img.{fmt}", make_image(fmt, width, height))
    err = invalid(path)
    assert f"is {width}x{height} px; each side must be 384 to 3072 px" in str(err)
    assert "384 to 3072" in str(invalid(make_image(fmt, width, height)))


def test_bounds_are_inclusive() -> None:
    """384 and 3072 themselves are allowed."""
    for width, height in [(MIN_SIDE, MAX_SIDE), (MAX_SIDE, MIN_SIDE)]:
        data = make_image("png", width, height)
        assert check_image(data, "images[0]") is data


def test_sniff_returns_none_for_non_images_and_broken_headers() -> None:
    """sniff answers None, never raises, for text, empty data, a bare magic number and a
    PNG cut inside its header."""
    assert sniff(b"hello world") is None
    assert sniff(b"") is None
    assert sniff(b"\x89PNG\r\n\x1a\n") is None
    assert sniff(make_image("png", 400, 400)[:20]) is None
    assert sniff(b"BM" + bytes(60)) is None  # "BM" without a known DIB header size


def test_jpeg_with_large_metadata_segments_is_read() -> None:
    """A JPEG whose size marker comes after 300 KB of APP segments (EXIF, ICC...) is still
    measured: the read budget against damaged files does not cut real headers."""
    jpeg = make_image("jpeg", 800, 600)
    segment = b"\xff\xe2" + struct.pack(">H", 65535) + bytes(65533)
    padded = jpeg[:2] + segment * 5 + jpeg[2:]
    info = sniff(padded)
    assert info is not None and (info.width, info.height) == (800, 600)


def test_damaged_jpeg_fails_fast() -> None:
    """A 10 MB 'JPEG' with no size marker is refused in well under the ~1.4 s a byte-by-byte
    scan of it takes, so bad input cannot stall the event loop."""
    damaged = b"\xff\xd8\xff\x01" + b"\xff\x01" * (5 * 2**20 - 4)
    started = time.perf_counter()
    err = invalid(damaged)
    assert time.perf_counter() - started < 0.3
    assert "header gives no width and height" in str(err)


# --- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist names the field, the path and the allowed forms."""
    err = invalid(str(tmp_path / "cat.png"))
    assert "cat.png' does not exist" in str(err)
    assert "http(s) URL" in str(err) and "data:image/" in str(err)


def test_directory(tmp_path: Path) -> None:
    """A directory is refused as such."""
    assert "is a directory" in str(invalid(tmp_path))


def test_text_file_is_an_unknown_format(tmp_path: Path) -> None:
    """A file that is not one of the six formats is refused, naming the formats."""
    err = invalid(write(tmp_path, "notes.png", b"just some text, not an image\n"))
    assert "JPEG, PNG, BMP, TIFF, WEBP or GIF" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    """An empty file says so."""
    assert "is empty" in str(invalid(write(tmp_path, "empty.png", b"")))


@pytest.mark.parametrize(
    ("size", "shown"), [(13 * 2**20, "13.0 MB"), (MAX_IMAGE_BYTES + 1, "10485761 bytes")]
)
def test_oversize_file_is_refused_by_stat_before_reading(
    tmp_path: Path, size: int, shown: str
) -> None:
    """A sparse file over 10 MB whose content is not an image at all gets the size error,
    not the format error: the size is judged from stat, before any read. One byte over
    shows the exact count (10.0 MB would read as within the limit)."""
    path = tmp_path / "cat.gif"
    with path.open("wb") as fh:
        fh.write(b"this is not an image")
        fh.truncate(size)
    err = invalid(path)
    assert f"file '{path}' is {shown}; images must be at most 10 MB" in str(err)


def test_oversize_bytes() -> None:
    """bytes over 10 MB are refused by length."""
    err = invalid(bytes(MAX_IMAGE_BYTES + 1))
    assert "images must be at most 10 MB" in str(err)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///tmp/a.png", "s3://bucket/a.png", "FTP://x/y"]
)
def test_unsupported_url_schemes(url: str) -> None:
    """Schemes other than http(s), oss and data are refused, naming the scheme and the
    allowed forms (never treated as a relative path)."""
    err = invalid(url)
    assert f"URL scheme '{url.split(':')[0].lower()}://' is not supported" in str(err)
    assert "http(s) URL" in str(err)


def test_url_without_host() -> None:
    """'https://' alone is not a URL."""
    assert "has no host" in str(invalid("https://"))
    assert "malformed" in str(invalid("http://[::1"))


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("data:image/png;base64", "has no ','"),
        ("data:image/png,iVBORw0KGgo=", "not base64-encoded"),
        ("data:text/plain;base64,aGVsbG8=", "media type 'text/plain'"),
        ("data:image/svg+xml;base64,PHN2Zz4=", "media type 'image/svg+xml'"),
        ("data:image/png;base64,", "not valid base64"),
        ("data:image/png;base64,iVBO*w0KGgo=", "not valid base64"),
        ("data:image/png;base64,iVBORw0KG", "not valid base64"),  # 9 chars: never base64
        ("data:image/png;base64,é", "not valid base64"),
        ("data:image/png;base64,aGVsbG8gd29ybGQ=", "not a JPEG, PNG"),
    ],
)
def test_bad_data_uris(uri: str, rule: str) -> None:
    """Malformed data URIs are refused with the problem named."""
    assert rule in str(invalid(uri))


def test_data_uri_bad_tail_is_caught() -> None:
    """Invalid base64 after the sniffed head is caught by the tail check."""
    good = data_uri(make_image("png", 400, 400) + bytes(100_000))
    assert "not valid base64" in str(invalid(good[:-8] + "!!!!!!!!"))


def test_data_uri_size_is_computed_from_length() -> None:
    """A data URI that would decode to more than 10 MB is refused from its length alone
    (its payload is 'A's, which no decoder would call a PNG: the size check comes first)."""
    chars = (MAX_IMAGE_BYTES // 3 + 1) * 4
    err = invalid("data:image/png;base64," + "A" * chars)
    assert "data URI decodes to 10485762 bytes; images must be at most 10 MB" in str(err)


def test_data_uri_dimensions_checked() -> None:
    """A data URI of a 100x100 PNG is refused for its size in pixels."""
    assert "100x100 px" in str(invalid(data_uri(make_image("png", 100, 100))))


def test_valid_data_uri_passes_unchanged() -> None:
    """A valid data URI (with or without padding, any supported mime) is returned as is."""
    for fmt in FORMATS:
        uri = data_uri(make_image(fmt, 400, 400), MIMES[fmt])
        assert check_image(uri, "images[0]") is uri
        unpadded = uri.rstrip("=")
        assert check_image(unpadded, "images[0]") is unpadded


@pytest.mark.parametrize("value", [None, 3, 1.5, True, ["a.png"], {"url": "x"}, object()])
def test_wrong_types(value: object) -> None:
    """Non-image types are refused naming the type."""
    assert f"got {type(value).__name__}" in str(invalid(value))


def test_empty_string_and_bad_paths() -> None:
    """Empty strings, NUL bytes and unknown ~user homes are ValidationErrors, not
    OSError/ValueError/RuntimeError tracebacks."""
    assert "the string is empty" in str(invalid(""))
    assert "embedded null byte" in str(invalid("a\0b.png"))
    invalid("~no_such_user_qwen_edit/a.png")
    invalid("x" * 5000)  # ENAMETOOLONG


# --- normalization -----------------------------------------------------------------------------


def test_urls_pass_through_and_kinds() -> None:
    """http(s) and oss URLs come back unchanged; image_kind tells every normalized kind."""
    for url, kind in [
        ("https://example.com/a.png", "url"),
        ("HTTP://example.com/a.png", "url"),
        ("oss://bucket/a.png", "oss"),
    ]:
        assert check_image(url, "images[0]") is url
        assert image_kind(url) == kind
    assert image_kind(data_uri(b"x")) == "data"
    assert image_kind(Path("a.png")) == "file"
    assert image_kind(b"x") == "bytes"
    with pytest.raises(ValueError, match="check_image"):
        image_kind("a.png")


def test_home_expanded_and_relative_paths_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'~' is expanded; a relative path stays relative (not resolved); os.PathLike works."""
    write(tmp_path, "a.png", make_image("png", 400, 400))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert check_image("~/a.png", "images[0]") == tmp_path / "a.png"
    assert check_image("a.png", "images[0]") == Path("a.png")

    class Custom:
        def __fspath__(self) -> str:
            return "a.png"

    assert check_image(Custom(), "images[0]") == Path("a.png")


def test_header_cache_keyed_by_size_and_mtime(tmp_path: Path) -> None:
    """A file checked once is not read again while its stat is unchanged: overwriting it
    with garbage of the same size and mtime still passes (served from the cache), and a
    new mtime makes the next check read it again and refuse it."""
    data = make_image("png", 400, 400)
    path = write(tmp_path, "a.png", data)
    check_image(path, "images[0]")
    before = path.stat()
    with path.open("r+b") as fh:  # in place: same inode
        fh.write(b"garbage!" * (len(data) // 8))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert check_image(path, "images[0]") == path
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    invalid(path)


# --- property: only ValidationError ------------------------------------------------------------

_prefixes = st.sampled_from(
    [
        "",
        "http://",
        "https://",
        "HTTPS://",
        "oss://",
        "ftp://",
        "file://",
        "s3://",
        "data:",
        "data:image/png;base64,",
        "data:image/jpeg;base64,/9j/",
        "data:image/png;",
        "~",
        "/",
        "./",
        "C:\\",
        "\0",
        "data:image/gif;base64,R0lGODlh",
    ]
)
_magic = st.sampled_from(
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xc0\x00\x11",
        b"GIF89a",
        b"II*\x00",
        b"MM\x00*",
        b"II+\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"RIFF\x00\x00\x00\x00WEBPVP8L",
        b"RIFF\x00\x00\x00\x00WEBPVP8X",
        b"BM" + bytes(12) + b"\x0c\x00\x00\x00",
        b"BM" + bytes(12) + b"(\x00\x00\x00",
    ]
)
_real = st.builds(
    lambda fmt, w, h, cut: make_image(fmt, w, h)[:cut],
    st.sampled_from(FORMATS),
    st.integers(1, 4000),
    st.integers(1, 4000),
    st.integers(0, 400),
)
_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.builds(lambda p, s: p + s, _prefixes, st.text()),
    st.builds(lambda m, b: m + b, _magic, st.binary(max_size=300)),
    _real,
    _real.map(data_uri),
    st.builds(bytearray, st.binary()),
    st.binary().map(lambda b: memoryview(b)),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(), st.integers(), max_size=2),
)


@pytest.mark.slow  # 300 examples: about 3 s
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_anything)
def test_check_image_raises_only_validation_error(value: Any) -> None:
    """For arbitrary objects, strings, bytes and cut real images, check_image either
    returns a normalized value (strings unchanged, bytes equal to the input) or raises
    ValidationError naming the field, never another exception type."""
    try:
        result = check_image(value, "images[0]")
    except ValidationError as err:
        assert err.field == "images[0]" and str(err).startswith("images[0]: ")
        return
    if isinstance(result, str):
        assert result is value
    elif isinstance(result, bytes):
        assert result == bytes(value)
        info = sniff(result)
        assert info is not None and MIN_SIDE <= info.width <= MAX_SIDE
    else:
        assert isinstance(result, Path)
    assert image_kind(result) in {"url", "oss", "data", "file", "bytes"}


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(), st.builds(lambda m, b: m + b, _magic, st.binary(max_size=300))))
def test_sniff_never_raises(data: bytes) -> None:
    """sniff answers an ImageInfo or None for any bytes."""
    info = sniff(data)
    assert info is None or (info.width > 0 and info.height > 0 and info.size == len(data))


# --- ImagePreparer -------------------------------------------------------------------------------


class Uploads:
    """A recording uploader; ``gate`` holds calls until set, ``fail`` makes them raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, str]] = []
        self.fail: Exception | None = None
        self.gate: anyio.Event | None = None

    async def __call__(self, data: bytes, mime: str) -> str:
        self.calls.append((data, mime))
        if self.gate is not None:
            await self.gate.wait()
        await anyio.sleep(0.01)
        if self.fail is not None:
            raise self.fail
        return f"https://cdn.example.com/{len(self.calls)}.{mime.split('/')[1]}"


@pytest.mark.asyncio
async def test_data_uri_round_trip(tmp_path: Path) -> None:
    """A file and bytes become data URIs whose payload decodes to the exact input bytes,
    with the mime of the sniffed format."""
    jpeg = make_image("jpeg", 500, 400)
    path = check_image(write(tmp_path, "a.jpg", jpeg), "images[0]")
    gif = make_image("gif", 400, 400)
    preparer = ImagePreparer(accepts_data_uri=True)
    out = await preparer.prepare([path, gif])
    assert out[0].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(out[0].split(",", 1)[1]) == jpeg
    assert out[1].startswith("data:image/gif;base64,")
    assert base64.b64decode(out[1].split(",", 1)[1]) == gif


@pytest.mark.asyncio
async def test_urls_pass_through_without_uploader() -> None:
    """URLs, oss URLs and (for data-URI providers) data URIs are returned unchanged; a
    URL-only provider needs no uploader for them."""
    uri = data_uri(make_image("png", 400, 400))
    urls = ["https://example.com/a.png", "oss://bucket/b.png"]
    assert await ImagePreparer(accepts_data_uri=True).prepare([*urls, uri]) == [*urls, uri]
    assert await ImagePreparer(accepts_data_uri=False).prepare(urls) == urls


@pytest.mark.asyncio
async def test_one_upload_for_a_file_shared_by_50_concurrent_jobs(tmp_path: Path) -> None:
    """50 concurrent prepares naming one file read and upload it once; all get its URL."""
    png = make_image("png", 400, 400)
    path = check_image(write(tmp_path, "a.png", png), "images[0]")
    uploads = Uploads()
    preparer = ImagePreparer(accepts_data_uri=False, uploader=uploads)
    results: list[list[str]] = []

    async def job() -> None:
        results.append(await preparer.prepare([path]))

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(job)
    assert uploads.calls == [(png, "image/png")]
    assert results == [["https://cdn.example.com/1.png"]] * 50
    stats = preparer.stats()
    assert stats["misses"] == 1 and stats["shared"] + stats["hits"] == 49
    assert await preparer.prepare([path]) == ["https://cdn.example.com/1.png"]
    assert len(uploads.calls) == 1


@pytest.mark.asyncio
async def test_bytes_are_shared_by_identity() -> None:
    """The same bytes object is uploaded once; an equal but distinct object is not
    deduplicated (keys are identities, not 10 MB hashes)."""
    data = make_image("webp", 400, 400)
    uploads = Uploads()
    preparer = ImagePreparer(accepts_data_uri=False, uploader=uploads)
    first = await preparer.prepare([data, data])
    assert first == ["https://cdn.example.com/1.webp"] * 2
    await preparer.prepare([bytes(bytearray(data))])
    assert len(uploads.calls) == 2


@pytest.mark.asyncio
async def test_data_uri_uploaded_for_url_only_provider() -> None:
    """A data URI given to a URL-only provider is decoded and uploaded with its real mime."""
    bmp = make_image("bmp", 400, 400)
    uploads = Uploads()
    out = await ImagePreparer(accepts_data_uri=False, uploader=uploads).prepare(
        [data_uri(bmp, "image/png")]
    )
    assert out == ["https://cdn.example.com/1.bmp"]
    assert uploads.calls == [(bmp, "image/bmp")]


@pytest.mark.asyncio
async def test_local_input_without_uploader_is_a_configuration_error(tmp_path: Path) -> None:
    """A file, bytes or data URI for a URL-only provider without an uploader raises
    ConfigurationError naming the field and the fix."""
    png = make_image("png", 400, 400)
    path = write(tmp_path, "a.png", png)
    preparer = ImagePreparer(accepts_data_uri=False, provider="vtrix")
    for value in (path, png, data_uri(png)):
        with pytest.raises(ConfigurationError) as info:
            await preparer.prepare(["https://example.com/x.png", value])
        assert str(info.value).startswith("images[1]: ")
        assert "pass uploader=... to QwenEditClient, or give public https URLs" in str(info.value)
        assert info.value.provider == "vtrix"


@pytest.mark.asyncio
async def test_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    """With room for one data URI, preparing three files keeps one entry within the
    bound; the evicted first file is read again when asked for again."""
    paths = [write(tmp_path, f"{i}.bmp", make_image("bmp", 400 + i, 400)) for i in range(3)]
    one = len(data_uri(paths[2].read_bytes()))
    preparer = ImagePreparer(accepts_data_uri=True, cache_bytes=one + 100)
    for path in paths:
        await preparer.prepare([path])
    stats = preparer.stats()
    assert stats["entries"] == 1 and stats["bytes_cached"] <= one + 100
    assert stats["misses"] == 3
    await preparer.prepare([paths[2]])
    assert preparer.stats()["hits"] == 1
    await preparer.prepare([paths[0]])
    assert preparer.stats()["misses"] == 4


@pytest.mark.asyncio
async def test_entry_larger_than_cache_is_not_kept(tmp_path: Path) -> None:
    """An encoding larger than cache_bytes is returned but not cached."""
    path = write(tmp_path, "a.png", make_image("png", 400, 400))
    preparer = ImagePreparer(accepts_data_uri=True, cache_bytes=10)
    await preparer.prepare([path])
    assert preparer.stats()["entries"] == 0 and preparer.stats()["bytes_cached"] == 0


@pytest.mark.asyncio
async def test_file_changed_after_construction(tmp_path: Path) -> None:
    """A file valid when the request was built but replaced by text, grown past 10 MB or
    deleted before its job runs is a ValidationError naming the caller's field."""
    path = check_image(write(tmp_path, "a.png", make_image("png", 400, 400)), "images[0]")
    assert isinstance(path, Path)
    preparer = ImagePreparer(accepts_data_uri=True)
    path.write_bytes(b"now a text file, and longer than before")
    with pytest.raises(ValidationError, match=r"^images\[2\]: .*not a JPEG") as info:
        await preparer.prepare(["https://e.com/a.png", "https://e.com/b.png", path])
    assert info.value.field == "images[2]"
    os.truncate(path, MAX_IMAGE_BYTES + 1)
    with pytest.raises(ValidationError, match="at most 10 MB"):
        await preparer.prepare([path])
    path.unlink()
    with pytest.raises(ValidationError, match="no longer exists"):
        await preparer.prepare([path])


@pytest.mark.asyncio
async def test_changed_valid_file_is_read_again(tmp_path: Path) -> None:
    """A file rewritten with another valid image is not served stale from the cache."""
    path = write(tmp_path, "a.png", make_image("png", 400, 400))
    preparer = ImagePreparer(accepts_data_uri=True)
    first = await preparer.prepare([path])
    new = make_image("gif", 500, 500)
    path.write_bytes(new)
    second = await preparer.prepare([path])
    assert second != first and base64.b64decode(second[0].split(",", 1)[1]) == new


@pytest.mark.asyncio
async def test_failure_shared_by_waiters_but_not_cached(tmp_path: Path) -> None:
    """An upload that fails fails once for the 10 jobs waiting on it, and the next
    prepare tries again (and succeeds)."""
    path = write(tmp_path, "a.png", make_image("png", 400, 400))
    uploads = Uploads()
    uploads.fail = RuntimeError("upload refused")
    preparer = ImagePreparer(accepts_data_uri=False, uploader=uploads)
    errors: list[BaseException] = []

    async def job() -> None:
        try:
            await preparer.prepare([path])
        except RuntimeError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(job)
    assert len(errors) == 10 and len(uploads.calls) == 1
    uploads.fail = None
    assert await preparer.prepare([path]) == ["https://cdn.example.com/2.png"]


@pytest.mark.asyncio
async def test_cancelled_leader_is_taken_over_by_a_waiter(tmp_path: Path) -> None:
    """If the job doing the upload is cancelled, a job waiting on it does the work itself
    instead of waiting forever or seeing the other job's cancellation."""
    path = write(tmp_path, "a.png", make_image("png", 400, 400))
    uploads = Uploads()
    uploads.gate = anyio.Event()
    preparer = ImagePreparer(accepts_data_uri=False, uploader=uploads)
    got: list[list[str]] = []

    async def waiter() -> None:
        got.append(await preparer.prepare([path]))

    async with anyio.create_task_group() as outer:
        with anyio.CancelScope() as leader_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(preparer.prepare, [path])
                while not uploads.calls:
                    await anyio.sleep(0)
                outer.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()  # the waiter waits on the leader's work
                leader_scope.cancel()
        uploads.gate.set()
    assert len(uploads.calls) == 2
    assert got == [["https://cdn.example.com/2.png"]]


@pytest.mark.asyncio
async def test_uploader_must_return_a_url_string(tmp_path: Path) -> None:
    """An uploader that returns something other than a non-empty str is a
    ConfigurationError, not a bad value sent to the provider."""

    async def bad(data: bytes, mime: str) -> Any:
        return None

    preparer = ImagePreparer(accepts_data_uri=False, uploader=bad)
    with pytest.raises(ConfigurationError, match="must return a public URL string"):
        await preparer.prepare([make_image("png", 400, 400)])


def test_a_plain_url_is_checked_without_splitting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common URL (a plain host name, then its path) needs no ``urlsplit()``; one with a
    user, a port or brackets still goes through it, and what is wrong is still refused."""
    from qwen_edit_async import _images

    split: list[str] = []
    real = _images.urlsplit

    def counted(value: str) -> Any:
        split.append(value)
        return real(value)

    monkeypatch.setattr(_images, "urlsplit", counted)
    for url in ("https://example.com/a.png?x=1", "HTTP://10.0.0.1", "http://cdn.example.com#f"):
        assert check_image(url, "images[0]") == url
    assert split == []
    assert check_image("https://user@example.com:8443/a.png", "images[0]")
    assert split == ["https://user@example.com:8443/a.png"]
    with pytest.raises(ValidationError, match="malformed"):
        check_image("http://[::1/a.png", "images[0]")
    with pytest.raises(ValidationError, match="has no host"):
        check_image("http:///a.png", "images[0]")
    with pytest.raises(ValidationError, match="lone surrogate"):
        check_image("https://example.com/\udcff.png", "images[0]")
