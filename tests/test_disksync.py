"""Saving results cheaply: one worker-thread call per result, fsyncs batched in bulk runs."""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async import cli
from qwen_edit_async.bulk import _disksync
from qwen_edit_async.bulk._disksync import BatchSync, sync_paths
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"

pytestmark = pytest.mark.timeout(30)


def _count_thread_calls(monkeypatch: pytest.MonkeyPatch, module: str) -> list[str]:
    """Record the worker-thread calls made by ``module``'s functions."""
    calls: list[str] = []
    original = anyio.to_thread.run_sync

    async def counting(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(function, "__module__", None) == module:
            calls.append(function.__name__)
        return await original(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return calls


async def test_saving_a_result_takes_one_worker_thread_call(
    fake: FakeProvider, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three images: the folder, the three files and the folder's fsync in one thread call
    (not one per step and file), and the files are whole with no temporary file left."""
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        result = await client.edit([URL], "x", n=3)
        calls = _count_thread_calls(monkeypatch, "qwen_edit_async._download")
        paths = await client.download(result, tmp_path / "a" / "b", stem="")
    assert calls == ["_store"]
    assert [p.name for p in paths] == ["0.png", "1.png", "2.png"]
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["0.png", "1.png", "2.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


@pytest.mark.parametrize("durable", [True, False])
async def test_durable_false_leaves_the_fsyncs_to_the_caller(
    fake: FakeProvider,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    durable: bool,
) -> None:
    """``download`` fsyncs each file and the folder; the unsynced form used by bulk runs
    (which sync in batches) does not fsync at all."""
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        result = await client.edit([URL], "x", n=2)
        synced: list[int] = []
        original = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or original(fd))
        paths = await client._download(result, tmp_path, stem="", durable=durable)
    assert len(synced) == (3 if durable else 0)  # two files and their folder
    assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG"] * 2


async def test_callers_that_arrive_during_a_sync_share_the_next_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: while one sync runs, later callers wait and one more sync covers them
    all; none returns before a sync that began after it asked."""
    batches: list[list[str]] = []
    release = threading.Event()

    def recording(anchor: pathlib.Path, paths: Iterable[pathlib.Path]) -> None:
        batches.append(sorted(p.name for p in paths))
        if len(batches) == 1:
            release.wait(10)  # the first sync is slow: the others queue behind it

    monkeypatch.setattr(_disksync, "sync_paths", recording)
    syncer = BatchSync(tmp_path)
    returned: list[str] = []

    async def sync(name: str) -> None:
        await syncer.sync([tmp_path / name])
        returned.append(name)

    async with anyio.create_task_group() as group:
        group.start_soon(sync, "a")
        while not batches:
            await anyio.sleep(0.01)
        for name in ("b", "c", "d"):
            group.start_soon(sync, name)
        await anyio.wait_all_tasks_blocked()
        assert returned == []  # "a" is still syncing; the others wait for the next sync
        release.set()
    assert batches == [["a"], ["b", "c", "d"]]
    assert sorted(returned) == ["a", "b", "c", "d"]


async def test_a_failed_sync_raises_and_its_files_are_synced_by_the_next(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync that fails raises OSError to its caller; the files it held are not dropped."""
    batches: list[list[str]] = []

    def failing_once(anchor: pathlib.Path, paths: Iterable[pathlib.Path]) -> None:
        batches.append(sorted(p.name for p in paths))
        if len(batches) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(_disksync, "sync_paths", failing_once)
    syncer = BatchSync(tmp_path)
    with pytest.raises(OSError, match="Input/output"):
        await syncer.sync([tmp_path / "a"])
    await syncer.sync([tmp_path / "b"])
    assert batches == [["a"], ["a", "b"]]


def test_without_syncfs_each_path_is_fsynced_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ``syncfs`` is missing every file and folder is fsynced, each once."""
    (tmp_path / "x.png").write_bytes(b"x")
    monkeypatch.setattr(_disksync, "_SYNCFS", None)
    synced: list[int] = []
    original = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or original(fd))
    sync_paths(tmp_path, [tmp_path / "x.png", tmp_path, tmp_path / "x.png"])
    assert len(synced) == 2


def test_a_bulk_run_syncs_in_batches_before_the_journal_lists_the_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``qwen-edit run``: fewer syncs than jobs, and at each sync none of its files is yet
    journaled as saved; in the end every journaled file was synced and is whole."""
    monkeypatch.setenv("QWEN_EDIT_API_KEY", API_KEY)
    out = tmp_path / "out"
    journal = out / "journal.sqlite3"
    synced: set[str] = set()
    batches = 0
    original = _disksync.sync_paths

    def journaled_files() -> set[str]:
        conn = sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT files FROM jobs WHERE status = 'succeeded'").fetchall()
        finally:
            conn.close()
        return {name for (files,) in rows if files for name in json.loads(files)}

    def checking(anchor: pathlib.Path, paths: Iterable[pathlib.Path]) -> None:
        nonlocal batches
        batches += 1
        names = {p.relative_to(out).as_posix() for p in paths if p.is_file()}
        assert not names & journaled_files()  # synced before it is journaled
        time.sleep(0.05)  # a slow disk: the jobs finishing meanwhile share the next sync
        original(anchor, paths)
        synced.update(names)

    monkeypatch.setattr(_disksync, "sync_paths", checking)
    manifest = tmp_path / "m.jsonl"
    lines = [{"id": f"j{i}", "images": [URL], "prompt": "x", "n": 2} for i in range(40)]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))

    async def scenario() -> int:
        async with FakeProvider(api_key=API_KEY, latency=0.05) as fake:
            argv = ["run", str(manifest), "--out", str(out), "--base-url", fake.url]
            argv += ["--concurrency", "40", "--progress", "none"]
            return await anyio.to_thread.run_sync(cli.main, argv)

    assert anyio.run(scenario) == 0
    files = journaled_files()
    assert len(files) == 80
    assert files <= synced
    assert 1 <= batches < 40
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in files)
