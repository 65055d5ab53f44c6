"""Closing a client: from any task, never stuck behind a worker thread."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest
from _imagegen import make_image
from conftest import API_KEY

import qwen_edit_async as qe
import qwen_edit_async._prepare as prepare_module
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


async def test_aclose_from_another_task_closes_the_client(fake: FakeProvider) -> None:
    """A client opened in one task and closed in another (a FastAPI lifespan, a signal
    handler) closes cleanly and cancels the job it was running."""
    client = qe.QwenEditClient("evolink", api_key=API_KEY, base_url=fake.url, job_timeout=None)
    await client.__aenter__()
    # [stuck]: the fake's task never ends, so the job is still running when we close.
    job = await client.submit(qe.EditRequest(images=[URL], prompt="x [stuck]"))

    closer = asyncio.create_task(client.aclose())
    with anyio.fail_after(10):
        await closer
    assert client.closed
    with pytest.raises(qe.JobCancelledError):
        await job.result()


async def test_a_failing_body_is_not_cancelled_by_the_client(fake: FakeProvider) -> None:
    """Errors inside ``async with client`` propagate as themselves, and the client closes."""
    with pytest.raises(KeyError):
        async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
            await client.edit([URL], "x")
            raise KeyError("mine")
    assert client.closed


async def test_close_does_not_wait_for_a_stuck_file_read(
    fake: FakeProvider, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file read stuck in its worker thread (a hung network mount) neither holds the job
    past its deadline nor holds up leaving ``async with client``."""
    path = tmp_path / "cat.png"  # type: ignore[operator]
    path.write_bytes(make_image("png", 512, 512))
    release = threading.Event()
    entered = threading.Event()

    def stuck_read(*args: object) -> object:
        entered.set()
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(prepare_module, "_read_file", stuck_read)
    # A file used once is checked by its header, then streamed: stuck there too.
    monkeypatch.setattr(prepare_module, "_probe_file", stuck_read)
    try:
        with anyio.fail_after(10):
            async with qe.QwenEditClient(
                "dashscope", api_key=API_KEY, base_url=fake.url, job_timeout=0.5
            ) as client:
                with pytest.raises(qe.JobTimeoutError):
                    await client.edit([path], "x")
                assert entered.is_set()
    finally:
        release.set()
