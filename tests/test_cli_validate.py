"""`qwen-edit validate` and `qwen-edit run --max-images`, as real subprocesses against the
fake provider in another process: what validate reports, that it sends nothing, and that a
budget is never passed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen_edit_async.cli import main
from tests._bulk_support import (
    FakeServer,
    edits,
    fake_fixture,  # noqa: F401  (a pytest fixture)
    journal_rows,
    read_results,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    write_images,
    write_manifest,
)
from tests._imagegen import make_image

pytestmark = pytest.mark.timeout(60)

_QUIET = ("creates", "jobs_created", "polls", "downloads", "uploads", "rejected")


class Done:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def validate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Done:
    """``qwen-edit validate ARGS`` in this process (the CLI's own entry point): quicker than
    a subprocess; the fake still runs in its own process."""
    capsys.readouterr()
    code = main(["validate", *map(str, args)])
    captured = capsys.readouterr()
    return Done(code, captured.out, captured.err)


def assert_nothing_sent(fake: FakeServer) -> None:
    stats = fake.stats()
    assert {name: stats[name] for name in _QUIET} == dict.fromkeys(_QUIET, 0)


def test_validate_a_good_manifest_counts_jobs_images_and_cost_and_sends_nothing(
    tmp_path: Path, fake: FakeServer
) -> None:
    """Every line valid: exit 0; the jobs, the sum of n and the cost estimate are printed;
    the fake (whose own file URLs are among the inputs) received no request at all."""
    write_images(tmp_path)
    remote = f"{fake.url}/files/never-fetched.png"
    lines = [
        {"id": "a", "images": ["in/a.png"], "prompt": "one", "n": 2},
        {"id": "b", "images": ["in/a.png", "in/b.png"], "prompt": "two", "n": 3},
        {"id": "c", "images": [remote], "prompt": "three"},
        "",
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    done = run_cli("validate", manifest, "--provider", "vtrix", "--price-per-image", "0.03")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "3 line(s) for vtrix: 3 valid job(s), 0 invalid" in out
    assert "images to generate: 6 " in out
    assert "3 local file(s) read and checked, 1 remote URL(s) not fetched" in out
    assert "cost estimate: 6 image(s) x 0.03 = 0.18" in out
    assert "every line is valid" in out
    assert_nothing_sent(fake)


def test_validate_reports_every_bad_line_with_its_reason(
    tmp_path: Path, fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each kind of bad line is reported with its line number and the rule it breaks; the
    valid lines are still counted (jobs, images, cost); exit 1; nothing is sent."""
    write_images(tmp_path)
    (tmp_path / "in" / "small.png").write_bytes(make_image("png", 300, 500))
    (tmp_path / "in" / "notes.png").write_text("not an image at all")
    with open(tmp_path / "in" / "huge.png", "wb") as handle:
        handle.truncate(11 * 1024 * 1024)
    ok = {"images": ["in/a.png"], "prompt": "fine"}
    lines = [
        {**ok, "id": "good-1", "n": 2},  # 1
        "{not json",  # 2
        {**ok, "id": "typo", "promt": "x"},  # 3
        {**ok, "id": "missing", "images": ["in/nope.png"]},  # 4
        {**ok, "id": "small", "images": ["in/small.png"]},  # 5
        {**ok, "id": "text", "images": ["in/notes.png"]},  # 6
        {**ok, "id": "huge", "images": ["in/huge.png"]},  # 7
        {**ok, "id": "long", "prompt": "p" * 801},  # 8
        {**ok, "id": "good-1"},  # 9: duplicate id
        {**ok, "id": "many", "n": 7},  # 10
        {**ok, "id": "big", "size": "4000*4000"},  # 11
        {**ok, "id": "four", "images": ["in/a.png"] * 4},  # 12
        {**ok, "id": "good-2", "n": 3},  # 13
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    done = validate(capsys, manifest, "--provider", "dashscope", "--price-per-image", "0.5")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "13 line(s) for dashscope: 2 valid job(s), 11 invalid" in out
    assert "images to generate: 5 " in out
    assert "cost estimate: 5 image(s) x 0.5 = 2.50" in out
    reported = {
        int(line.split()[1].rstrip(":")): line
        for line in out.splitlines()
        if line.startswith("  line ")
    }
    assert sorted(reported) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    expected = {
        2: "not valid JSON",
        3: "unknown field(s) 'promt'",
        4: "does not exist",
        5: "is 300x500 px; each side must be 384 to 3072 px",
        6: "is not a JPEG, PNG, BMP, TIFF, WEBP or GIF image",
        7: "images must be at most 10 MB",
        8: "prompt: 801 characters; dashscope keeps at most 800",
        9: "duplicate id 'good-1' (line 1 has it)",
        10: "n: 7 is out of range",
        11: "each side must be 512 to 2048",
        12: "images: 4 given; an edit takes 1 to 3",
    }
    for number, reason in expected.items():
        assert reason in reported[number], (number, reported[number])
    assert "(id huge)" in reported[7]
    assert_nothing_sent(fake)


def test_validate_applies_the_chosen_providers_rules(
    tmp_path: Path, fake: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same manifest under two providers: a 1,500-character prompt and a local file are
    fine for Vtrix; Evolink keeps 2,000 characters but takes URLs only, so its local file is
    refused unless --upload-url says where the run will upload it (not contacted)."""
    write_images(tmp_path)
    lines = [
        {"id": "long", "images": ["https://example.com/a.png"], "prompt": "p" * 1500},
        {"id": "local", "images": ["in/a.png"], "prompt": "x"},
    ]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    vtrix = validate(capsys, manifest, "--provider", "vtrix")
    assert vtrix.returncode == 1
    assert "line 1 (id long): prompt: 1500 characters; vtrix keeps at most 800" in vtrix.stdout
    assert "line 2" not in vtrix.stdout
    evolink = validate(capsys, manifest, "--provider", "evolink")
    assert evolink.returncode == 1
    assert "line 1" not in evolink.stdout
    assert "line 2 (id local): images[0]: file" in evolink.stdout
    assert "evolink takes only public URLs" in evolink.stdout
    assert "--upload-url" in evolink.stdout
    uploading = validate(
        capsys, manifest, "--provider", "evolink", "--upload-url", f"{fake.url}/_fake/upload"
    )
    assert uploading.returncode == 0, uploading.stdout
    assert "2 valid job(s), 0 invalid" in uploading.stdout
    assert_nothing_sent(fake)


def test_validate_refuses_a_manifest_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing manifest: exit 2 and one line naming it, no traceback. An empty one is not
    valid (exit 1: there is nothing to run)."""
    missing = validate(capsys, tmp_path / "nope.jsonl", "--provider", "vtrix")
    assert missing.returncode == 2
    assert "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr
    empty = write_manifest(tmp_path / "empty.jsonl", [])
    done = validate(capsys, empty, "--provider", "vtrix")
    assert done.returncode == 1
    assert "no jobs" in done.stdout


def test_validate_says_once_that_a_json_array_or_csv_is_not_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON array or a CSV file: exit 2 with one message saying what a manifest is, not
    one error per line."""
    array = tmp_path / "edits.json"
    array.write_text(json.dumps([{"images": ["a.png"], "prompt": "x"}] * 3, indent=1))
    table = tmp_path / "edits.csv"
    table.write_text("id,images,prompt\na,a.png,x\nb,b.png,y\n")
    for path, what in ((array, "JSON array"), (table, "CSV")):
        done = validate(capsys, path, "--provider", "vtrix")
        assert done.returncode == 2, done.stdout
        assert what in done.stderr and "a manifest is JSONL" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "line 2" not in done.stdout


def _run(manifest: Path, out: Path, fake: FakeServer, *extra: str) -> list[str]:
    return [
        "run",
        str(manifest),
        "--out",
        str(out),
        "--provider",
        "vtrix",
        "--base-url",
        fake.url,
        "--progress",
        "none",
        *extra,
    ]


@pytest.mark.slow
def test_max_images_never_sends_a_job_past_the_budget_and_resume_sends_the_rest(
    tmp_path: Path, fake: FakeServer
) -> None:
    """--max-images 5 over jobs asking 2, 2, 2, 1, 2, 1 images (one at a time): jobs 1, 2
    and 4 fit (5 images); 3, 5 and 6 would pass the budget, so they are never sent, stay
    queued, and the run says so (exit 1). A --resume without the flag sends exactly them."""
    write_images(tmp_path)
    jobs = edits(6, n_cycle=(2, 2, 2, 1, 2, 1))
    manifest = write_manifest(tmp_path / "m.jsonl", jobs)
    out = tmp_path / "out"
    args = _run(manifest, out, fake, "--concurrency", "1")
    first = run_cli(*args, "--max-images", "5")
    assert first.returncode == 1, first.stdout + first.stderr
    stats = fake.stats(jobs=True)
    assert stats["creates"] == 3
    assert sum(job["n"] for job in stats["jobs"]) == 5
    rows = journal_rows(out)
    states = {job_id: row["status"] for job_id, row in rows.items()}
    assert states == {
        "job-0000": "succeeded",
        "job-0001": "succeeded",
        "job-0002": "queued",
        "job-0003": "succeeded",
        "job-0004": "queued",
        "job-0005": "queued",
    }
    assert all(rows[i]["attempts"] == 0 for i in ("job-0002", "job-0004", "job-0005"))
    assert "3 job(s) left queued, not sent" in first.stdout
    assert "past --max-images 5; to send them: qwen-edit run " in first.stdout
    hint = first.stdout.split("to send them: ", 1)[1].split(" (add a new", 1)[0]
    assert hint.endswith(" --resume") and "--max-images" not in hint
    second = run_cli(*args, "--resume")
    assert second.returncode == 0, second.stdout + second.stderr
    assert fake.stats()["creates"] == 6
    assert {row["id"]: row["status"] for row in read_results(out)} == dict.fromkeys(
        states, "succeeded"
    )


def test_max_images_holds_under_concurrency(tmp_path: Path, fake: FakeServer) -> None:
    """Eight workers racing for a budget of 7 images over 20 jobs of 1 or 2 images: the
    fake is asked for at most 7 images in all, and every job not sent is still queued."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(20))
    out = tmp_path / "out"
    done = run_cli(*_run(manifest, out, fake, "--concurrency", "8", "--max-images", "7"))
    assert done.returncode == 1, done.stdout + done.stderr
    stats = fake.stats(jobs=True)
    asked = sum(job["n"] for job in stats["jobs"])
    assert 6 <= asked <= 7  # the next job (1 or 2 images) did not fit
    rows = journal_rows(out).values()
    sent = [row for row in rows if row["status"] != "queued"]
    assert len(sent) == stats["creates"]
    assert all(row["status"] == "succeeded" for row in sent)
    assert all(row["attempts"] == 0 for row in rows if row["status"] == "queued")


def test_max_images_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--max-images 0 is refused by the parser (exit 2, naming the option), before anything
    runs or is created."""
    with pytest.raises(SystemExit) as exited:
        main(["run", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o"), "--max-images", "0"])
    assert exited.value.code == 2
    assert "--max-images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
