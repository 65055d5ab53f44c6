"""Input files that change between validation and sending."""

from __future__ import annotations

import os
import pathlib

import anyio
import pytest
from _imagegen import make_image
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


def _unblock(path: pathlib.Path) -> None:
    """Open the FIFO for writing once, so a reader stuck in open() (the old bug) returns."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader is waiting
    os.close(fd)


async def test_a_file_swapped_for_a_fifo_fails_at_once(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """A checked image file replaced by a FIFO is refused when the job reads it, naming the
    field, instead of blocking in open() for a writer that never comes."""
    path = tmp_path / "cat.png"
    path.write_bytes(make_image("png", 512, 512))
    request = qe.EditRequest(images=[path], prompt="x")
    path.unlink()
    os.mkfifo(path)
    try:
        with anyio.fail_after(10):
            async with qe.QwenEditClient(
                "dashscope", api_key=API_KEY, base_url=fake.url, job_timeout=5
            ) as client:
                with pytest.raises(qe.ValidationError, match=r"^images\[0\]: .*not a regular"):
                    job = await client.submit(request)
                    await job.result()
    finally:
        _unblock(path)
    assert fake.stats.creates == 0


def test_a_fifo_is_refused_at_construction(tmp_path: pathlib.Path) -> None:
    """A FIFO given as an image is refused when the request is built."""
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    try:
        with pytest.raises(qe.ValidationError, match=r"^images\[0\]: .*not a regular file"):
            qe.EditRequest(images=[path], prompt="x")
    finally:
        _unblock(path)
