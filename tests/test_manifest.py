"""The JSONL manifest: lazy reading, relative paths, stable ids, bad lines with line numbers."""

from __future__ import annotations

import gc
import json
import os
import threading
from pathlib import Path

import psutil
import pytest

from qwen_edit_async import ValidationError
from qwen_edit_async.bulk._manifest import ManifestError, count_lines, read_manifest, stable_id
from tests._imagegen import make_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(make_image("png", 512, 512))
    return tmp_path


def write(path: Path, *lines: object) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def test_relative_image_paths_resolve_against_the_manifest_folder(
    folder: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "in/a.png" in a manifest means the file next to the manifest, whatever the working
    directory; URLs and absolute paths are kept as they are."""
    manifest = write(
        folder / "m.jsonl",
        {"images": ["in/a.png", "https://example.com/b.png"], "prompt": "x"},
        {"images": str(folder / "in" / "a.png"), "prompt": "y"},
    )
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    first, second = read_manifest(Path(os.path.relpath(manifest)))
    assert first.error is None and second.error is None
    assert first.request is not None and second.request is not None
    assert first.request.images == (folder / "in" / "a.png", "https://example.com/b.png")
    assert second.request.images == (folder / "in" / "a.png",)


def test_ids_without_an_id_are_stable_content_hashes(folder: Path) -> None:
    """A line without id gets the same 16-hex id on every read and whatever its key order;
    different content gets a different id; given ids are kept (numbers as text)."""
    manifest = write(
        folder / "m.jsonl",
        {"images": ["in/a.png"], "prompt": "x", "n": 2},
        {"n": 2, "prompt": "x", "images": ["in/a.png"]},
        {"images": ["in/a.png"], "prompt": "x", "n": 3},
        {"id": "cat-1", "images": ["in/a.png"], "prompt": "x"},
        {"id": 7, "images": ["in/a.png"], "prompt": "x"},
    )
    ids = [e.id for e in read_manifest(manifest)]
    assert ids == [e.id for e in read_manifest(manifest)]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0] == stable_id({"images": ["in/a.png"], "prompt": "x", "n": 2})
    assert len(ids[0] or "") == 16 and int(ids[0] or "", 16) >= 0
    assert ids[3:] == ["cat-1", "7"]


def test_bad_lines_are_reported_with_their_line_numbers_and_do_not_stop_reading(
    folder: Path,
) -> None:
    """Bad JSON, a non-object, a bad id, an unknown field, an invalid value, a missing field
    and a missing image each give an entry with its line number and the reason; blank lines
    are skipped but counted; the good lines around them are read."""
    manifest = write(
        folder / "m.jsonl",
        {"id": "good-1", "images": ["in/a.png"], "prompt": "x"},
        "{not json",
        "",
        "[1, 2]",
        {"id": "", "images": ["in/a.png"], "prompt": "x"},
        {"id": "u", "images": ["in/a.png"], "prompt": "x", "colour": "red"},
        {"id": "v", "images": ["in/a.png"], "prompt": "x", "n": 9},
        {"id": "w", "images": ["in/a.png"]},
        {"id": "missing", "images": ["in/nope.png"], "prompt": "x"},
        {"id": "good-2", "images": ["in/a.png"], "prompt": "x"},
    )
    entries = list(read_manifest(manifest))
    assert [e.line for e in entries] == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert [e.id for e in entries if e.error is None] == ["good-1", "good-2"]
    errors = {e.line: e.error for e in entries if e.error is not None}
    for line, error in errors.items():
        assert str(error).startswith(f"line {line}: "), error
    assert isinstance(errors[2], ManifestError) and "not valid JSON" in str(errors[2])
    assert isinstance(errors[4], ManifestError) and "not a JSON object" in str(errors[4])
    assert isinstance(errors[5], ManifestError) and "id" in str(errors[5])
    assert isinstance(errors[6], ValidationError) and "'colour'" in str(errors[6])
    assert isinstance(errors[7], ValidationError) and errors[7].field == "n"
    assert isinstance(errors[8], ValidationError) and "prompt" in str(errors[8])
    assert isinstance(errors[9], ValidationError) and "does not exist" in str(errors[9])
    assert count_lines(manifest) == 9


def test_reading_is_lazy_on_an_endless_stream(folder: Path) -> None:
    """The reader yields lines as they come: on a FIFO fed by a generator that never ends,
    the first 1,000 entries arrive (a reader that loaded the whole file would hang)."""
    fifo = folder / "endless.jsonl"
    os.mkfifo(fifo)
    stop = threading.Event()
    line = json.dumps({"images": ["in/a.png"], "prompt": "x"}).encode() + b"\n"

    def feed() -> None:
        try:
            with open(fifo, "wb") as handle:
                while not stop.is_set():
                    handle.write(line * 100)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    reader = read_manifest(fifo)
    try:
        first = [next(reader) for _ in range(1000)]
    finally:
        stop.set()
        reader.close()
    feeder.join(timeout=5)
    assert len(first) == 1000 and all(e.error is None for e in first)
    assert first[-1].line == 1000


@pytest.mark.slow
def test_a_100k_line_manifest_is_read_in_flat_memory(folder: Path) -> None:
    """Reading all 100,000 lines of a manifest (distinct prompts) while dropping each entry
    grows the process by far less than the lines themselves would take (generous bound)."""
    manifest = folder / "big.jsonl"
    with open(manifest, "w", encoding="utf-8") as handle:
        for i in range(100_000):
            handle.write(f'{{"images": ["in/a.png"], "prompt": "edit number {i} {"x" * 80}"}}\n')
    gc.collect()
    before = psutil.Process().memory_info().rss
    peak = before
    for count, entry in enumerate(read_manifest(manifest), start=1):
        assert entry.error is None
        if count % 10_000 == 0:
            peak = max(peak, psutil.Process().memory_info().rss)
    assert count == 100_000
    assert peak - before < 30 * 2**20, f"grew by {(peak - before) / 2**20:.1f} MB"
