"""examples/quickstart.py and examples/bulk_script.py run as real subprocesses (as a user
runs them) and exit with the expected code and output."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from _imagegen import make_image

from qwen_edit_async.testing import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


async def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run an example with this interpreter; return its exit code and combined output.

    Asynchronous so that a fake provider served by this test keeps answering meanwhile.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_EDIT_")}
    environ.update(env or {})
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error::ResourceWarning",
        *args,
        cwd=cwd,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def folder(path: Path, count: int) -> Path:
    path.mkdir()
    for i in range(count):
        (path / f"photo{i:02}.png").write_bytes(make_image("png", 512, 768))
    (path / "notes.txt").write_text("not an image: ignored")
    return path


async def test_quickstart_runs_against_an_in_process_fake(tmp_path: Path) -> None:
    """With no base URL the quickstart starts a fake provider, runs the README's edit (n=2,
    1024*1536), prints both URLs, saves both PNGs under ./out and exits 0, with no
    ResourceWarning (run with -W error::ResourceWarning)."""
    code, out = await run(str(EXAMPLES / "quickstart.py"), cwd=tmp_path)
    assert code == 0, out
    assert "using a fake provider" in out
    saved = sorted((tmp_path / "out").iterdir())
    assert len(saved) == 2 and all(p.suffix == ".png" and p.stat().st_size for p in saved)
    assert out.count("1024x1536.png") == 2  # the fake names results by their size
    assert "Unclosed" not in out and "ResourceWarning" not in out


@pytest.mark.slow
async def test_bulk_script_edits_a_folder_with_a_plain_progress_bar(tmp_path: Path) -> None:
    """With no base URL the bulk script fans 20 images out against an in-process fake,
    prints plain progress lines and the summary, saves every result with --out, skips
    non-images, and exits 0."""
    photos = folder(tmp_path / "photos", 20)
    code, out = await run(
        str(EXAMPLES / "bulk_script.py"),
        str(photos),
        "--plain",
        "--concurrency",
        "5",
        "--out",
        "edited",
        cwd=tmp_path,
    )
    assert code == 0, out
    assert "[20/20] 0 failed, 0 in flight" in out
    assert "20 edited, 0 failed, 0 skipped of 20" in out
    assert sorted(p.name for p in (tmp_path / "edited").iterdir()) == [
        f"photo{i:02}-0.png" for i in range(20)
    ]


@pytest.mark.slow
async def test_bulk_script_obeys_base_url_provider_and_concurrency(tmp_path: Path) -> None:
    """Pointed at a provider with --base-url/--provider/--concurrency 4, the script (rich
    bar by default) sends every image there, never runs more than 4 jobs at once and
    reaches 4; a file the API would refuse is reported as skipped and the exit code is 1.
    (Jobs last 0.8 s: the client's slow start sends its first creates a quarter of a
    second apart, so shorter jobs would end before four run at once.)"""
    photos = folder(tmp_path / "photos", 12)
    (photos / "tiny.png").write_bytes(make_image("png", 100, 100))
    async with FakeProvider(api_key="sk-bulk", latency=0.8) as fake:
        code, out = await run(
            str(EXAMPLES / "bulk_script.py"),
            str(photos),
            "--base-url",
            fake.url,
            "--provider",
            "vtrix",
            "--concurrency",
            "4",
            cwd=tmp_path,
            env={"QWEN_EDIT_API_KEY": "sk-bulk"},
        )
    assert code == 1, out
    assert "tiny.png: skipped" in out
    assert "12 edited, 0 failed, 1 skipped of 13" in out
    assert "using a fake provider" not in out
    assert fake.stats.jobs_created == 12
    assert fake.stats.peak_running == 4
