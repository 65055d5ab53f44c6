"""Request bodies streamed while sent: identical bytes, a new stream per attempt, a changed
file never sent, and memory per job that does not follow the image size."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._body import CHUNK, FileSource, StreamedBody, split_body
from qwen_edit_async._prepare import ImagePreparer
from qwen_edit_async.providers import get_provider

DATA_URI_PROVIDERS = ["dashscope", "dashscope-intl", "modelstream", "onetoken", "vtrix"]
URL = "https://example.com/a.png"


def padded_png(size: int, seed: int = 0) -> bytes:
    """A valid 512x512 PNG padded to exactly ``size`` bytes with a private chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 512, 512, 1, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(bytes(65 * 512), 9))
    iend = chunk(b"IEND", b"")
    fixed = 8 + len(ihdr) + len(idat) + len(iend) + 12
    filler = random.Random(seed).randbytes(size - fixed)
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"raNd", filler) + idat + iend


async def collect(body: StreamedBody) -> bytes:
    return b"".join([chunk async for chunk in body.chunks()])


@pytest.mark.parametrize("provider_name", DATA_URI_PROVIDERS)
async def test_streamed_body_is_byte_identical_for_every_dialect(
    tmp_path: Path, provider_name: str
) -> None:
    """Files of sizes around the chunk size (and not multiples of 3), bytes and a URL in one
    request: the streamed body equals the body built from whole data URIs, byte for byte,
    and its announced length is exact."""
    first = tmp_path / "a.png"
    first.write_bytes(padded_png(CHUNK * 2 + 1, seed=1))
    second = tmp_path / "b.png"
    second.write_bytes(padded_png(CHUNK - 1, seed=2))
    data = padded_png(5000, seed=3)
    request = qe.EditRequest(
        images=[first, data, second] if provider_name != "vtrix" else [first, data],
        prompt='Quote " and \\ and ünïcode',
        n=1,
        seed=7,
    )
    provider = get_provider(provider_name, base_url="https://gateway.example.com")
    prepared, sources = await ImagePreparer(accepts_data_uri=True).prepare_parts(request.images)
    assert len(sources) == len(request.images)
    streamed = split_body(provider.build_create(request, prepared).body or b"", sources)
    assert streamed is not None
    whole = await ImagePreparer(accepts_data_uri=True).prepare(request.images)
    expected = provider.build_create(request, whole).body
    body = await collect(streamed)
    assert body == expected
    assert streamed.length == len(body)


async def test_a_shared_file_is_encoded_once_and_a_single_one_never_cached(
    tmp_path: Path,
) -> None:
    """The encode-once cache holds inputs several jobs share, never inputs used once."""
    single = [tmp_path / f"s{i}.png" for i in range(3)]
    for i, path in enumerate(single):
        path.write_bytes(padded_png(20_000, seed=i))
    shared = tmp_path / "shared.png"
    shared.write_bytes(padded_png(20_000, seed=9))
    preparer = ImagePreparer(accepts_data_uri=True)
    for path in single:
        _, sources = await preparer.prepare_parts([path])
        assert len(sources) == 1
    assert preparer.stats()["entries"] == 0
    uses = [await preparer.prepare_parts([shared]) for _ in range(4)]
    kinds = [type(source).__name__ for _, sources in uses for source in sources]
    assert kinds == ["FileSource"] + 3 * ["EncodedSource"]  # then sent from the cache
    stats = preparer.stats()
    assert (stats["entries"], stats["misses"], stats["hits"]) == (1, 1, 2)


class Recorder:
    """A loopback DashScope that records every create body it received in full, and every
    request that ended before its Content-Length."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.bodies: list[bytes] = []
        self.incomplete: list[tuple[int, int]] = []  # (bytes received, Content-Length)
        self.started = asyncio.Event()
        self.resume = asyncio.Event()
        self.resume.set()

    async def create(self, request: web.Request) -> web.StreamResponse:
        declared = request.content_length or 0
        received = bytearray()
        try:
            received += await request.content.readexactly(min(declared, 65536))
            self.started.set()
            await self.resume.wait()
            received += await request.content.readexactly(declared - len(received))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            partial = getattr(exc, "partial", b"")
            self.incomplete.append((len(received) + len(partial), declared))
            raise
        self.bodies.append(bytes(received))
        if len(self.bodies) <= self.failures:
            return web.json_response({"code": "InternalError", "message": "x"}, status=500)
        return web.json_response(
            {
                "request_id": f"r{len(self.bodies)}",
                "output": {"choices": [{"message": {"content": [{"image": URL}]}}]},
            }
        )

    async def __aenter__(self) -> str:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/api/v1/services/aigc/multimodal-generation/generation", self.create)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_a_retry_streams_the_body_anew(tmp_path: Path) -> None:
    """A 500 then a 200: the body is streamed twice, complete and identical both times."""
    image = tmp_path / "a.png"
    image.write_bytes(padded_png(CHUNK * 3 + 2))
    recorder = Recorder(failures=1)
    async with (
        recorder as url,
        qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=url) as client,
    ):
        result = await client.edit([image], "x")
    assert result.images[0].url == URL
    assert len(recorder.bodies) == 2
    assert recorder.bodies[0] == recorder.bodies[1]
    whole = await ImagePreparer(accepts_data_uri=True).prepare([image])
    assert whole[0].encode() in recorder.bodies[1]


@pytest.mark.parametrize("change", ["shrink", "grow", "rewrite"])
async def test_a_file_changed_while_streaming_aborts_the_attempt(
    tmp_path: Path, change: str
) -> None:
    """The file changes after the first 64 KiB went out: the attempt is aborted before its
    end, the server never receives a complete body (no corrupt image is ever sent), and
    the job fails with ValidationError, not 'may have been billed'."""
    image = tmp_path / "a.png"
    size = 6 * 2**20
    image.write_bytes(padded_png(size))
    recorder = Recorder()
    recorder.resume.clear()
    async with recorder as url:
        async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=url) as client:
            job = asyncio.ensure_future(client.edit([image], "x"))
            await asyncio.wait_for(recorder.started.wait(), 10)
            if change == "shrink":
                os.truncate(image, size // 2)
            elif change == "grow":
                with open(image, "ab") as fh:
                    fh.write(b"\0" * 10)
            else:  # same size, new content
                stamp = os.stat(image).st_mtime_ns
                with open(image, "r+b") as fh:
                    fh.seek(size - 100)
                    fh.write(b"\1" * 50)
                os.utime(image, ns=(stamp + 10**9, stamp + 10**9))
            recorder.resume.set()
            with pytest.raises(qe.ValidationError, match="changed while it was sent"):
                await asyncio.wait_for(job, 20)
        await asyncio.sleep(0)
    assert recorder.bodies == []  # nothing complete arrived
    for received, declared in recorder.incomplete:
        assert received < declared


async def _measure(path: Path) -> int:
    """Peak traced memory while one streamed body for ``path`` is produced and consumed."""
    preparer = ImagePreparer(accepts_data_uri=True)
    request = qe.EditRequest(images=[path], prompt="x")
    provider = get_provider("dashscope")
    tracemalloc.start()
    try:
        prepared, sources = await preparer.prepare_parts(request.images)
        body = split_body(provider.build_create(request, prepared).body or b"", sources)
        assert body is not None
        chunks: AsyncIterator[bytes] = body.chunks()
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        assert total == body.length
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


async def test_memory_per_job_does_not_follow_the_input_size(tmp_path: Path) -> None:
    """Producing the body of a 9 MiB image peaks at about the same memory as for a
    300 KiB one: a few chunks, never the file, its base64 or the JSON body."""
    small = tmp_path / "small.png"
    small.write_bytes(padded_png(300 * 1024, seed=1))
    large = tmp_path / "large.png"
    large.write_bytes(padded_png(9 * 2**20, seed=2))
    small_peak = await _measure(small)
    large_peak = await _measure(large)
    assert large_peak < 2 * 2**20, large_peak  # the file alone is 9 MiB, its base64 12 MiB
    assert large_peak < small_peak + 1 * 2**20, (small_peak, large_peak)


async def test_a_read_stuck_while_streaming_does_not_hold_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk read stuck in its worker thread (a hung mount) mid-body: the job still ends at
    its deadline and the client closes; the abandoned thread closes the file later."""
    image = tmp_path / "a.png"
    image.write_bytes(padded_png(CHUNK * 4))
    release = threading.Event()
    entered = threading.Event()
    real_read = FileSource._read

    def stuck_read(self: FileSource, handle: Any, want: int, last: bool) -> bytes:
        if want and not entered.is_set() and handle.fd >= 0:
            entered.set()
            release.wait(30)
        data = real_read(self, handle, want, last)
        return data

    monkeypatch.setattr(FileSource, "_read", stuck_read)
    recorder = Recorder()
    try:
        async with recorder as url:
            with anyio.fail_after(10):
                async with qe.QwenEditClient(
                    "dashscope", api_key=API_KEY, base_url=url, job_timeout=0.5
                ) as client:
                    with pytest.raises(qe.JobTimeoutError):
                        await client.edit([image], "x")
                    assert entered.is_set()
    finally:
        release.set()
    assert recorder.bodies == []
