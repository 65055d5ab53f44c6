"""report.html in a real headless Chromium: written by `qwen-edit run` and `qwen-edit report`,
thumbnails drawn, no console error, no network, filters, failures grouped, untrusted text kept
as text, and 10,000 jobs drawn one page at a time."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from qwen_edit_async.bulk._report import ReportData, render_report
from qwen_edit_async.cli import main
from qwen_edit_async.testing._png import png_bytes
from tests._bulk_support import (
    FakeServer,
    journal_rows,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    write_manifest,
)
from tests._chromium import VISIBLE_IMAGES_DRAWN, Browser, read_png

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


def colourful_inputs(folder: Path) -> list[str]:
    """Three inputs in distinct colours (two bands each), as the manifest names them."""
    (folder / "in").mkdir(parents=True, exist_ok=True)
    names = []
    for index, (width, height) in enumerate(((640, 480), (512, 768), (600, 600))):
        name = f"in/input-{index}.png"
        (folder / name).write_bytes(png_bytes(width, height, 5 + 7 * index))
        names.append(name)
    return names


def open_report(browser: Browser, page: Path) -> None:
    browser.open(page.resolve().as_uri())
    browser.wait_until("document.body.dataset.rendered !== undefined")


def thumbnails_match_their_files(browser: Browser, base: Path) -> int:
    """Screenshot the viewport; each visible thumbnail shows its file's top-band colour at
    the matching point. Returns how many thumbnails were checked."""
    sizes = browser.evaluate(VISIBLE_IMAGES_DRAWN)
    assert sizes and all(width > 0 for width, _ in sizes)
    boxes = browser.evaluate(
        """Array.from(document.images).map(img => {
             const b = img.getBoundingClientRect();
             const scale = Math.min(b.width / img.naturalWidth, b.height / img.naturalHeight);
             const h = img.naturalHeight * scale;
             return {src: img.getAttribute('src'), x: b.left + b.width / 2,
                     y: b.top + (b.height - h) / 2 + h / 4, bottom: b.bottom};
           }).filter(t => t.bottom > 0 && t.y < innerHeight - 2)"""
    )
    shot = read_png(browser.screenshot())
    assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 20, "the screenshot is nearly blank"
    from PIL import Image

    for box in boxes:
        source = Image.open(base / box["src"].replace("%20", " ")).convert("RGB")
        expected = source.getpixel((source.width // 2, source.height // 4))
        drawn = shot.getpixel((int(box["x"]), int(box["y"])))
        assert all(abs(a - b) <= 12 for a, b in zip(drawn, expected, strict=True)), (
            box,
            drawn,
            expected,
        )
    return len(boxes)


@pytest.mark.slow
def test_run_writes_a_report_that_shows_every_job_and_its_thumbnails(
    tmp_path: Path, server: FakeServer, browser: Browser
) -> None:
    """A real run (fake in its own process) ends by writing DIR/report.html. In Chromium the
    page loads with no console error and no network request; its summary matches the
    journal; the thumbnails of inputs and outputs are drawn (pixels checked against the
    files); the status filter and the search narrow the grid; failures are grouped by
    error type with their messages."""
    server.reset(latency=0.05)
    inputs = colourful_inputs(tmp_path)
    lines: list[dict[str, Any]] = []
    for i in range(9):
        prompt = f"make variant {i}" + (" [fail]" if i in (2, 7) else "")
        prompt += " [filter]" if i == 5 else ""
        lines.append(
            {"id": f"job-{i}", "images": inputs[: 1 + i % 3], "prompt": prompt, "n": 1 + i % 2}
        )
    lines.append({"id": "remote", "images": ["https://example.com/cat.png"], "prompt": "x"})
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    out = tmp_path / "out"
    done = run_cli(
        "run",
        manifest,
        "--out",
        out,
        "--provider",
        "vtrix",
        "--base-url",
        server.url,
        "--progress",
        "none",
        "--concurrency",
        "4",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    page = out / "report.html"
    assert f"report: {page}" in done.stdout
    rows = journal_rows(out)
    failed = sorted(job_id for job_id, row in rows.items() if row["status"] == "failed")
    assert failed == ["job-2", "job-5", "job-7"]

    open_report(browser, page)
    tiles = browser.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('.tile')).map(t => "
        "[t.querySelector('span').textContent, Number(t.querySelector('strong').textContent)]))"
    )
    images = sum(len(json.loads(row["files"] or "[]")) for row in rows.values())
    assert tiles == {"succeeded": 7, "failed": 3, "uncertain": 0, "queued": 0, "images": images}
    assert thumbnails_match_their_files(browser, out) >= 8
    cards = "Array.from(document.querySelectorAll('#grid .card'))"
    assert browser.evaluate(f"{cards}.length") == 10
    assert browser.evaluate(f"{cards}[9].querySelector('.thumb.ph').textContent") == "remote image"

    browser.evaluate("document.querySelector('.filters button[data-status=failed]').click()")
    shown = browser.evaluate(
        f"{cards}.map(c => [c.querySelector('.jid').textContent, c.dataset.status])"
    )
    assert shown == [["job-2", "failed"], ["job-5", "failed"], ["job-7", "failed"]]
    browser.evaluate("document.querySelector('.filters button[data-status=all]').click()")
    browser.evaluate(
        "const s = document.getElementById('search'); s.value = 'VARIANT 4';"
        "s.dispatchEvent(new Event('input'))"
    )
    browser.wait_until(f"{cards}.length === 1")
    assert browser.evaluate(f"{cards}[0].querySelector('.jid').textContent") == "job-4"

    groups = browser.evaluate(
        "Array.from(document.querySelectorAll('.failures details')).map(d => "
        "[d.querySelector('.etype').textContent, d.querySelector('summary .count').textContent,"
        " Array.from(d.querySelectorAll('li')).map(li => li.textContent)])"
    )
    by_type = {etype: (count, messages) for etype, count, messages in groups}
    assert list(by_type) == ["JobFailedError", "ContentFilterError"]  # most jobs first
    assert by_type["JobFailedError"][0] == "2 job(s)"
    # Two failures alike but for their request and task ids: one message, counted twice.
    (failure,) = by_type["JobFailedError"][1]
    message = rows["job-2"]["error_message"]
    assert failure.startswith("2× " + message.split(" (")[0])
    assert "task_id=" in message and "task_id=" not in failure
    assert failure.endswith("e.g. job-2, job-7")
    browser.evaluate(
        "document.querySelector('.show-type[data-error-type=ContentFilterError]').click()"
    )
    browser.wait_until(f"{cards}.length === 1")
    assert browser.evaluate(f"{cards}[0].querySelector('.jid').textContent") == "job-5"

    # A click on a thumbnail shows that job at full size; arrows walk the filtered jobs.
    browser.evaluate("document.querySelector('.error-filter').click()")
    browser.evaluate(f"{cards}[1].querySelector('a.thumb.out').click()")
    viewer = "document.getElementById('viewer')"
    assert browser.evaluate(f"!{viewer}.hidden && {viewer}.querySelector('.jid').textContent")
    assert browser.evaluate(f"{viewer}.querySelector('.jid').textContent") == "job-1"
    browser.wait_until(
        f"Array.from({viewer}.querySelectorAll('.vouts img')).every(i => i.naturalWidth > 0)"
    )
    files = json.loads(rows["job-1"]["files"])
    shown = browser.evaluate(
        f"Array.from({viewer}.querySelectorAll('.vouts img')).map(i => i.getAttribute('src'))"
    )
    assert shown == files
    key = "document.dispatchEvent(new KeyboardEvent('keydown', {key: '%s'}))"
    browser.evaluate(key % "ArrowRight")
    assert browser.evaluate(f"{viewer}.querySelector('.jid').textContent") == "job-2"
    browser.evaluate(key % "Escape")
    assert browser.evaluate(f"{viewer}.hidden")

    assert browser.console_errors() == []
    remote = [url for url in browser.requests() if not url.startswith(("file:", "data:"))]
    assert remote == []


def test_report_command_writes_the_page_and_refuses_a_folder_without_a_run(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`qwen-edit report DIR` (re)writes DIR/report.html from the journal (exit 0); a folder
    with no run journal: exit 2 and one line, no traceback, no file."""
    server.reset(latency=0.05)
    inputs = colourful_inputs(tmp_path)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"id": "one-edit", "images": inputs[:1], "prompt": "x"}]
    )
    out = tmp_path / "out"
    run = run_cli(
        "run",
        manifest,
        "--out",
        out,
        "--provider",
        "vtrix",
        "--base-url",
        server.url,
        "--progress",
        "none",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (out / "report.html").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.html'}"
    assert '"one-edit"' in (out / "report.html").read_text()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    captured = capsys.readouterr()
    assert "no run journal" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "nothing-here" / "report.html").exists()


HOSTILE = [
    "</script><script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "<!-- <script>window.__pwned = 3</script>",
    "\u2028\u2029 ' \" & <b>bold</b> ${window.__pwned = 4}",
]


def _hostile_data(folder: Path) -> ReportData:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "images" / "o.png").write_bytes(png_bytes(512, 512, 1))
    jobs: list[list[Any]] = []
    for i, text in enumerate(HOSTILE):
        jobs.append(
            [
                text,
                "failed",
                text,
                "",
                1,
                [["url", "javascript:window.__pwned=5"]],
                [["img", "images/o.png"]],
                text,
                text,
                i + 1,
            ]
        )
    return ReportData({"provider": HOSTILE[1], "manifest": HOSTILE[0]}, jobs, 0, 1.0)


def test_untrusted_text_stays_text(tmp_path: Path, browser: Browser) -> None:
    """Ids, prompts, error types and messages and settings that carry markup or script are
    shown literally: nothing they hold runs or becomes an element; a javascript: input URL
    is not made a link."""
    page = tmp_path / "report.html"
    page.write_text(render_report(_hostile_data(tmp_path), title=HOSTILE[1]), encoding="utf-8")
    raw = page.read_text()
    for text in HOSTILE:
        assert text not in raw
    open_report(browser, page)
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('b, img[onerror], [onerror]').length") == 0
    assert browser.evaluate("document.querySelectorAll('a[href^=javascript]').length") == 0
    scripts = browser.evaluate("document.scripts.length")
    assert scripts == 2  # the data block and the page's own script
    ids = browser.evaluate("Array.from(document.querySelectorAll('.jid')).map(e => e.textContent)")
    assert ids == HOSTILE
    prompts = browser.evaluate(
        "Array.from(document.querySelectorAll('.prompt')).map(e => e.textContent)"
    )
    assert prompts == HOSTILE
    messages = browser.evaluate(
        "Array.from(document.querySelectorAll('.failures .msg')).map(e => e.textContent)"
    )
    assert sorted(messages) == sorted(HOSTILE)
    types = browser.evaluate(
        "Array.from(document.querySelectorAll('.show-type')).map(b => b.dataset.errorType)"
    )
    assert sorted(types) == sorted(HOSTILE)
    assert HOSTILE[1] in browser.evaluate("document.title")
    assert browser.console_errors() == []


class _EchoingProvider:
    """A loopback server speaking Vtrix that refuses every create with an error message full
    of markup (a provider's text is untrusted too)."""

    MESSAGE = '<img src=x onerror="window.__pwned=6"></script><script>window.__pwned=7</script>'

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def create(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response(
                {"code": "InvalidParameter", "message": self.MESSAGE}, status=400
            )

        app = web.Application()
        app.router.add_post("/model/v1/generation", create)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_providers_error_message_with_markup_is_shown_as_text(
    tmp_path: Path, browser: Browser
) -> None:
    """End to end: a provider answers with an error message holding markup and script; the
    run's report shows it as text in the card and in the failure group, and nothing runs."""
    provider = _EchoingProvider()
    try:
        inputs = colourful_inputs(tmp_path)
        manifest = write_manifest(
            tmp_path / "m.jsonl", [{"id": "<b>x</b>", "images": inputs[:1], "prompt": "<i>p</i>"}]
        )
        out = tmp_path / "out"
        done = run_cli(
            "run",
            manifest,
            "--out",
            out,
            "--provider",
            "vtrix",
            "--base-url",
            provider.url,
            "--progress",
            "none",
        )
    finally:
        provider.close()
    assert done.returncode == 1, done.stdout + done.stderr
    open_report(browser, out / "report.html")
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('#grid b, #grid i, [onerror]').length") == 0
    assert browser.evaluate("document.querySelector('.jid').textContent") == "<b>x</b>"
    assert browser.evaluate("document.querySelector('.prompt').textContent") == "<i>p</i>"
    assert _EchoingProvider.MESSAGE in browser.evaluate(
        "document.querySelector('.err').textContent"
    )
    assert _EchoingProvider.MESSAGE in browser.evaluate(
        "document.querySelector('.failures .msg').textContent"
    )
    assert browser.console_errors() == []


def test_ten_thousand_jobs_draw_one_page_with_lazy_images(tmp_path: Path, browser: Browser) -> None:
    """10,000 jobs: the page draws one page of cards (60), each image lazy; paging reaches
    the last job; a status filter runs over all of them; no console error."""
    inputs = colourful_inputs(tmp_path)
    (tmp_path / "images").mkdir()
    outputs = []
    for colour in range(4):
        name = f"images/out-{colour}.png"
        (tmp_path / name).write_bytes(png_bytes(512, 512, colour))
        outputs.append(name)
    states = ("succeeded", "succeeded", "succeeded", "failed", "uncertain", "queued")
    jobs: list[list[Any]] = []
    for i in range(10_000):
        state = states[i % len(states)]
        outs = [["img", outputs[i % 4]]] * (1 + i % 2) if state == "succeeded" else []
        error = ("JobFailedError", f"generation failed #{i % 7}") if state == "failed" else ("", "")
        jobs.append(
            [
                f"job-{i:05d}",
                state,
                f"prompt number {i}",
                "1024*1024",
                1 + i % 2,
                [["img", inputs[i % 3]]],
                outs,
                *error,
                i + 1,
            ]
        )
    page = tmp_path / "report.html"
    page.write_text(render_report(ReportData({}, jobs, 0, 100.0)), encoding="utf-8")
    open_report(browser, page)
    assert browser.evaluate("document.querySelectorAll('#grid .card').length") == 60
    images = browser.evaluate("Array.from(document.images).map(i => i.loading)")
    assert 60 <= len(images) <= 60 * 3 and set(images) == {"lazy"}
    assert thumbnails_match_their_files(browser, tmp_path) > 0
    browser.evaluate("document.querySelectorAll('.pager button')[0].click()")  # prev: no-op
    for _ in range(3):
        browser.evaluate("document.querySelectorAll('.pager[data-where=top] button')[1].click()")
    assert browser.evaluate("document.querySelector('.card .jid').textContent") == "job-00180"
    browser.evaluate("document.querySelector('.filters button[data-status=uncertain]').click()")
    assert browser.evaluate("document.querySelector('.pager .where').textContent") == (
        "page 1 of 28 · 1666 of 10000 jobs"
    )
    statuses = browser.evaluate(
        "new Set(Array.from(document.querySelectorAll('#grid .card')).map(c => c.dataset.status))"
        ".size"
    )
    assert statuses == 1
    assert browser.console_errors() == []


def test_without_chromium_the_browser_tests_skip_with_the_install_command_but_fail_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No chromium on PATH: outside CI the report's browser tests are skipped with the
    command that installs it; with CI=true they fail instead (CI must install it)."""
    from tests._chromium import chromium_path

    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install -y chromium"):
        chromium_path()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI must install it"):
        chromium_path()


def test_a_symlink_planted_at_the_reports_temporary_file_is_not_followed(
    tmp_path: Path, server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A symlink at DIR/.report.html.part pointing outside DIR is never written through:
    the report goes to a new temporary file of its own, the outside file is untouched."""
    server.reset(latency=0.05)
    inputs = colourful_inputs(tmp_path)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"id": "a", "images": inputs[:1], "prompt": "x"}]
    )
    out = tmp_path / "out"
    run = run_cli(
        "run",
        manifest,
        "--out",
        out,
        "--provider",
        "vtrix",
        "--base-url",
        server.url,
        "--progress",
        "none",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (out / ".report.html.part").symlink_to(outside)
    (out / "report.html").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.html'}"
    assert "<html" in (out / "report.html").read_text(encoding="utf-8")
    assert outside.read_text() == "keep me"
    assert (out / ".report.html.part").is_symlink()
    assert [p.name for p in out.glob(".report.html*.part")] == [".report.html.part"]
