"""Memory the image preparer keeps: the table of inputs seen costs the same however many
distinct files a batch names, and a file several jobs share is sent from its one cached
encoding, never copied into each job's body."""

from __future__ import annotations

import os
import tracemalloc
import zlib
from pathlib import Path

import pytest
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._body import CHUNK, EncodedSource, FileSource, StreamedBody, split_body
from qwen_edit_async._images import _file_key
from qwen_edit_async._prepare import ImagePreparer, _SeenTable
from qwen_edit_async.providers import get_provider
from qwen_edit_async.testing import FakeProvider, png_bytes

DATA_URI_PROVIDERS = ["dashscope", "dashscope-intl", "modelstream", "onetoken", "vtrix"]


def padded(size: int, colour: int) -> bytes:
    """A valid PNG padded to exactly ``size`` bytes (an unknown ancillary chunk: skipped)."""
    png = png_bytes(512, 512, colour=colour)
    filler = bytes(range(256)) * (size // 256 + 1)
    filler = filler[: size - len(png) - 12]
    crc = zlib.crc32(b"raNd" + filler).to_bytes(4, "big")
    chunk = len(filler).to_bytes(4, "big") + b"raNd" + filler + crc
    return png[:-12] + chunk + png[-12:]


async def collect(body: StreamedBody) -> bytes:
    return b"".join([chunk async for chunk in body.chunks()])


def test_remembering_distinct_files_takes_memory_independent_of_their_count() -> None:
    """100,000 distinct files, each used once (as a batch of photos names them): the preparer
    keeps under 1 MiB to remember them (a dict of their keys took 9 MiB)."""
    preparer = ImagePreparer(accepts_data_uri=True)
    device = os.stat(__file__).st_dev
    # The keys the preparer makes for files: (path, device, inode, size, mtime in ns).
    keys = [
        (f"/photos/2026/batch-{i:06d}.jpg", device, i, 2**20, 10**18 + i) for i in range(100_000)
    ]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        first_uses = sum(preparer._first_use(key) for key in keys)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert first_uses == len(keys)  # all distinct: every one streamed, none cached
    assert grown < 2**20, grown


async def test_a_file_seen_again_after_many_others_is_cached(tmp_path: Path) -> None:
    """A file used by the first job and again after 2,000 other distinct files is recognized
    as shared on its second use: encoded once and cached, not streamed again."""
    shared = tmp_path / "shared.png"
    shared.write_bytes(png_bytes(512, 512, colour=1))
    preparer = ImagePreparer(accepts_data_uri=True)
    _, sources = await preparer.prepare_parts([shared])
    assert len(sources) == 1  # first use: streamed
    st = os.stat(shared)
    mine = _SeenTable.slot(_file_key(shared, st))[0]
    others = [(f"/other/{i}.png", st.st_dev, i, 20_000, i) for i in range(2500)]
    others = [key for key in others if _SeenTable.slot(key)[0] != mine][:2000]
    assert all(preparer._first_use(key) for key in others)
    _, sources = await preparer.prepare_parts([shared])
    assert isinstance(sources[0], EncodedSource)  # second use: encoded once, from the cache
    stats = preparer.stats()
    assert (stats["entries"], stats["misses"], stats["streamed"]) == (1, 1, 1)


async def test_a_file_forgotten_by_the_table_is_streamed_again_then_cached(
    tmp_path: Path,
) -> None:
    """The table's trade-off: another input taking a file's slot between its uses makes the
    second use stream again (the same bytes are sent), and the third is cached."""
    shared = tmp_path / "shared.png"
    shared.write_bytes(png_bytes(512, 512, colour=2))
    preparer = ImagePreparer(accepts_data_uri=True)
    await preparer.prepare_parts([shared])
    st = os.stat(shared)
    mine = _SeenTable.slot(_file_key(shared, st))[0]
    rival = next(
        key
        for key in ((f"/other/{i}.png", 0, i, 1, i) for i in range(10**6))
        if _SeenTable.slot(key)[0] == mine
    )
    assert preparer._first_use(rival)
    uses = [await preparer.prepare_parts([shared]) for _ in range(2)]
    kinds = [type(source) for _, sources in uses for source in sources]
    assert kinds == [FileSource, EncodedSource]
    stats = preparer.stats()
    assert (stats["entries"], stats["misses"], stats["streamed"]) == (1, 1, 2)


@pytest.mark.parametrize("provider_name", DATA_URI_PROVIDERS)
async def test_a_shared_file_sent_from_the_cache_gives_the_same_body(
    tmp_path: Path, provider_name: str
) -> None:
    """A file's second use (cached) and a file used once in one request, sizes around the
    slice size: the streamed body equals the body built from whole data URIs, byte for
    byte, with its exact length."""
    shared = tmp_path / "shared.png"
    shared.write_bytes(padded(CHUNK * 2 + 1, colour=1))
    single = tmp_path / "single.png"
    single.write_bytes(padded(CHUNK - 1, colour=2))
    preparer = ImagePreparer(accepts_data_uri=True)
    await preparer.prepare_parts([shared])  # first use: streamed from the file
    images = [shared, single] if provider_name != "vtrix" else [shared]
    request = qe.EditRequest(images=images, prompt='Quote " and ünïcode', seed=7)
    provider = get_provider(provider_name, base_url="https://gateway.example.com")
    prepared, sources = await preparer.prepare_parts(request.images)
    assert isinstance(sources[0], EncodedSource)
    streamed = split_body(provider.build_create(request, prepared).body or b"", sources)
    assert streamed is not None
    whole = await ImagePreparer(accepts_data_uri=True).prepare(request.images)
    body = await collect(streamed)
    assert body == provider.build_create(request, whole).body
    assert streamed.length == len(body)


async def test_a_job_with_a_shared_file_holds_no_copy_of_it(tmp_path: Path) -> None:
    """A 9 MiB file shared by jobs, already cached: building and sending one more job's body
    takes well under 2 MiB (a body with the image in it would take its 12 MiB of base64)."""
    shared = tmp_path / "shared.png"
    shared.write_bytes(padded(9 * 2**20, colour=3))
    preparer = ImagePreparer(accepts_data_uri=True)
    for _ in range(2):  # used once (streamed), then again (encoded once, cached)
        await preparer.prepare_parts([shared])
    assert preparer.stats()["entries"] == 1
    request = qe.EditRequest(images=[shared], prompt="x")
    provider = get_provider("dashscope")
    tracemalloc.start()
    try:
        prepared, sources = await preparer.prepare_parts(request.images)
        http = provider.build_create(request, prepared)
        body = split_body(http.body or b"", sources)
        assert body is not None
        total = 0
        async for chunk in body.chunks():
            total += len(chunk)
        assert total == body.length > 12 * 2**20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, peak


async def test_jobs_sharing_a_file_succeed_against_the_fake(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """Eight jobs naming one file (sent from the cache after its first use) and one its own:
    the fake decodes every image it is sent and every job succeeds."""
    shared = tmp_path / "shared.png"
    shared.write_bytes(padded(CHUNK + 5, colour=4))
    single = tmp_path / "single.png"
    single.write_bytes(png_bytes(640, 480, colour=5))
    requests = [qe.EditRequest(images=[shared], prompt=f"job {i}") for i in range(8)]
    requests.append(qe.EditRequest(images=[single, shared], prompt="both"))
    async with qe.QwenEditClient(
        "dashscope", api_key=API_KEY, base_url=fake.url, max_in_flight=4
    ) as client:
        outcomes = [outcome async for outcome in client.edit_many(requests)]
    assert [o.error for o in outcomes] == [None] * 9
    assert fake.stats.jobs_created == 9
