"""One answer per question: which image format bytes are, what an http(s) URL is, how a file
is replaced atomically; and defaults that agree with ``ClientConfig``."""

from __future__ import annotations

import base64
import importlib.util
import json
import pathlib
import re
import zipfile

import anyio
import anyio.to_thread
import pytest
from _imagegen import make_image
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._atomic import FILE_MODE, atomic_write, write_atomic
from qwen_edit_async._config import ClientConfig
from qwen_edit_async._images import EXTENSIONS, image_format, sniff
from qwen_edit_async._prepare import ImagePreparer
from qwen_edit_async.bulk._journal import Journal
from qwen_edit_async.bulk._manifest import Entry
from qwen_edit_async.testing import FakeProvider

LICENSE = "qwen_edit_async-0.dist-info/licenses/LICENSE"
RECORD = "qwen_edit_async-0.dist-info/RECORD"
_SPEC = importlib.util.spec_from_file_location(
    "check_wheel", pathlib.Path(__file__).parents[1] / ".ci" / "check_wheel.py"
)
assert _SPEC is not None and _SPEC.loader is not None
check_wheel = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_wheel)

META = {"provider": "vtrix", "base_url": "http://127.0.0.1:1", "model": "m"}
SCHEME_SPELLINGS = (
    '("http://", "https://")',
    '("https://", "http://")',
    '("http", "https")',
    '("https", "http")',
)
FORMATS = ["png", "jpeg", "gif", "webp", "bmp", "tiff"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_inputs_and_downloads_read_the_same_magic_bytes(
    fmt: str, fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Every format an input may have is also recognised in a result and saved under its own
    extension (a TIFF result was refused before: the downloader had a shorter table)."""
    data = make_image(fmt, 400, 400)
    info = sniff(data)
    assert info is not None and info.format == fmt == image_format(data)
    result = qe.EditResult(
        images=[qe.GeneratedImage(b64_json=base64.b64encode(data).decode())], provider="x"
    )
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        (path,) = await client.download(result, tmp_path, stem="r")
    assert path.name == "r-0" + EXTENSIONS[fmt]
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    "data",
    [
        b"BM, said the text file" + b"\x00" * 40,
        b"GIF8 and then nothing",
        b"RIFF\x00\x00\x00\x00WAVE",
    ],
    ids=["BM", "GIF8", "RIFF-WAVE"],
)
async def test_bytes_that_only_look_like_an_image_are_refused_as_a_result(
    data: bytes, fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """Text starting with "BM" or "GIF8" is not saved as an image (the downloader used to
    accept any of them)."""
    assert image_format(data) is None
    result = qe.EditResult(
        images=[qe.GeneratedImage(b64_json=base64.b64encode(data).decode())], provider="x"
    )
    async with qe.QwenEditClient("dashscope", api_key=API_KEY, base_url=fake.url) as client:
        with pytest.raises(qe.DownloadError, match="not a known image format"):
            await client.download(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_image_cache_bound_defaults_to_the_client_configs() -> None:
    """A preparer made without a bound keeps what ClientConfig promises (64 MiB), not more."""
    preparer = ImagePreparer(accepts_data_uri=True)
    assert preparer._cache_bytes == ClientConfig().image_cache_bytes == 64 * 2**20


async def test_an_upper_case_scheme_is_a_url_everywhere(
    fake: FakeProvider, tmp_path: pathlib.Path
) -> None:
    """``HTTP://`` is the same scheme as ``http://`` (RFC 3986) for the base URL, an image
    input, the fake's check of it and the result's download: one test answers all four."""
    base_url = "HTTP://" + fake.url.removeprefix("http://")
    async with qe.QwenEditClient("evolink", api_key=API_KEY, base_url=base_url) as client:
        result = await client.edit(["HTTPS://example.com/a.png"], "x")
        (path,) = await client.download(result, tmp_path, stem="r")
    assert path.name == "r-0.png" and image_format(path.read_bytes()) == "png"


def test_only_one_module_spells_out_the_http_schemes() -> None:
    """Every "is this an http(s) URL" question of the library goes through
    ``_urls.is_http_url`` (the fake provider, which never uses the library, has its own)."""
    package = pathlib.Path(qe.__file__).parent
    spelled = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "_urls.py"
        and "testing" not in path.relative_to(package).parts
        and any(pattern in path.read_text(encoding="utf-8") for pattern in SCHEME_SPELLINGS)
    ]
    assert spelled == []


def test_an_atomic_write_replaces_whole_and_follows_the_umask(tmp_path: pathlib.Path) -> None:
    """The new content appears under the name only when complete; the mode is 0666 less the
    umask (not mkstemp's 0600); no temporary file stays."""
    target = tmp_path / "results.jsonl"
    target.write_bytes(b"old\n")
    with atomic_write(target) as handle:
        handle.write(b"new\n")
        assert target.read_bytes() == b"old\n"  # not yet
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o777 == FILE_MODE
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]
    with atomic_write(tmp_path / "page.html", durable=False, encoding="utf-8") as text:
        text.write("café")
    assert (tmp_path / "page.html").read_text(encoding="utf-8") == "café"


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(
    tmp_path: pathlib.Path,
) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, encoding="utf-8") as handle:
        handle.write("half a page")
        raise RuntimeError("the journal could not be read")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_an_atomic_write_never_follows_a_link_planted_beside_its_target(
    tmp_path: pathlib.Path,
) -> None:
    """Links at the temporary names the writers used to use (fixed) are left alone."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    for name in (".results.jsonl.part", ".report.html.part", ".0.png.part"):
        (folder / name).symlink_to(outside)
    write_atomic(folder / "0.png", b"\x89PNG\r\n\x1a\n")
    with atomic_write(folder / "report.html", encoding="utf-8") as handle:
        handle.write("<html>")
    assert outside.read_text() == "keep me"
    assert (folder / "0.png").read_bytes() == b"\x89PNG\r\n\x1a\n"
    assert not (folder / "0.png").is_symlink() and not (folder / "report.html").is_symlink()


async def test_results_are_written_whole_and_a_killed_writes_leftover_is_removed(
    tmp_path: pathlib.Path,
) -> None:
    """``results.jsonl`` goes through the atomic writer, and the temporary file a killed
    earlier write left is removed (a link there is removed, its target untouched)."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".results.jsonl.k2j4x9aa.part").write_text('{"id": "half')
    (folder / ".results.jsonl.zz1.part").symlink_to(outside)
    journal = Journal(tmp_path / "journal.sqlite3")
    await anyio.to_thread.run_sync(journal.start)
    try:
        run, _, _ = await journal.begin_run(META)
        request = qe.EditRequest(images=["https://example.com/a.png"], prompt="x")
        await journal.admit([Entry(1, "a", request)], run, retry_uncertain=False)
        path = await journal.export_results(folder, run)
    finally:
        journal.close()
    assert path == folder / "results.jsonl"
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a"]
    assert sorted(p.name for p in folder.iterdir()) == ["results.jsonl"]
    assert outside.read_text() == "keep me"
    assert path.stat().st_mode & 0o777 == FILE_MODE


def test_the_fake_provider_takes_only_the_dialects_declarations_from_the_library() -> None:
    """The fake reimplements the servers on its own, so a library bug is not mirrored by the
    fake that tests it: what it may take from the library is the dialects' declared
    vocabulary (``..providers``), nothing of the client's logic."""
    testing = pathlib.Path(qe.__file__).parent / "testing"
    offenders = [
        f"{path.name}: {line.strip()}"
        for path in sorted(testing.glob("*.py"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if (
            line.lstrip().startswith("from ..")
            and not line.lstrip().startswith("from ..providers ")
        )
        or "import qwen_edit_async" in line
    ]
    assert offenders == []


def _wheel(tmp_path: pathlib.Path, names: list[str]) -> pathlib.Path:
    path = tmp_path / "qwen_edit_async-0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, "")
    return path


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["qwen_edit_async/__init__.py", "qwen_edit_async/py.typed", LICENSE, RECORD], []),
        (
            ["qwen_edit_async/_client.py.orig", "qwen_edit_async/py.typed", LICENSE],
            ["the wheel carries a stray file: qwen_edit_async/_client.py.orig"],
        ),
        (["qwen_edit_async/__init__.py", "qwen_edit_async/py.typed"], ["the wheel lacks LICENSE"]),
        (
            ["qwen_edit_async/__init__.py", LICENSE, "tests/test_x.py"],
            [
                "the wheel carries a stray file: tests/test_x.py",
                "the wheel lacks qwen_edit_async/py.typed",
            ],
        ),
    ],
)
def test_the_wheel_check_refuses_stray_files_and_a_missing_license(
    tmp_path: pathlib.Path, names: list[str], expected: list[str]
) -> None:
    """CI's wheel check: only the package's sources, py.typed and metadata, LICENSE included."""
    assert check_wheel.problems(_wheel(tmp_path, names)) == expected


#: Sleeps that wait for time itself to pass (a Redis TTL runs on the server's clock).
_TIMED_ON_PURPOSE = {("test_shared.py", "past one TTL")}
_SLEEP = re.compile(r"^\s*(await\s+(asyncio|anyio)\.sleep|time\.sleep)\((?!0\)|0\.0\))")


def test_no_test_sleeps_and_then_asserts() -> None:
    """A fixed sleep followed by an assert passes or fails with the machine's load: tests
    wait on the condition instead (``tests/_wait.py``, ``anyio.wait_all_tasks_blocked``, the
    fake's clock)."""
    found = []
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not _SLEEP.match(line):
                continue
            if any(path.name == name and mark in line for name, mark in _TIMED_ON_PURPOSE):
                continue
            after = next((x for x in lines[number:] if x.strip()), "")
            indent = len(line) - len(line.lstrip())
            if after.strip().startswith("assert") and len(after) - len(after.lstrip()) == indent:
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert found == []
