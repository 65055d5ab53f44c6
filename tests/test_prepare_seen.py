"""How the image preparer tells a shared input from one used once: the table of inputs seen
costs the same small memory however many distinct files a batch names."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from qwen_edit_async._images import _file_key
from qwen_edit_async._prepare import ImagePreparer, _SeenTable
from qwen_edit_async.testing import png_bytes


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
    prepared, sources = await preparer.prepare_parts([shared])
    assert sources == []  # second use: prepared whole
    assert prepared[0].startswith("data:image/png;base64,iVBORw0KGgo")
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
    assert [len(sources) for _, sources in uses] == [1, 0]
    stats = preparer.stats()
    assert (stats["entries"], stats["misses"], stats["streamed"]) == (1, 1, 2)
