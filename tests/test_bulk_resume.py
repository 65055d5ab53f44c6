"""What a resume may read and where a run may write: the same manifest, the whole record in
results.jsonl, image folders one per id, no symbolic link followed. `qwen-edit run` as a real
subprocess against the fake provider in another process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests._bulk_support import (
    FakeServer,
    check_folder,
    edits,
    fake_fixture,  # noqa: F401  (a pytest fixture)
    journal_rows,
    read_results,
    run_args,
    run_cli,
    server_fixture,  # noqa: F401  (a pytest fixture)
    write_images,
    write_manifest,
)

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("planted", ["images/job-0001", "images", ".results.jsonl.part"])
def test_a_symlink_planted_in_dir_is_refused_and_nothing_is_written_through_it(
    fake: FakeServer, tmp_path: Path, planted: str
) -> None:
    """A link inside DIR (an image folder, the images folder, the temporary results file)
    makes the run exit 2 naming the link, before anything is sent; its target is untouched."""
    write_images(tmp_path)
    manifest = write_manifest(tmp_path / "m.jsonl", edits(3))
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = out / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere if not planted.endswith(".part") else elsewhere / "victim")
    done = run_cli(*run_args(manifest, out, fake))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{link} is a symbolic link" in done.stderr
    assert fake.stats()["creates"] == 0
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow  # a run of eight jobs and a status command: about 3 s
def test_ids_that_differ_only_by_case_or_by_a_hash_suffix_get_their_own_folders(
    fake: FakeServer, tmp_path: Path
) -> None:
    """`a b` and `a_b-<its hash>`, `Cat` and `cat`: every id gets its own folder (recorded
    in the journal), no two share one even on a case-insensitive file system."""
    write_images(tmp_path)
    base = edits(1)[0]
    ids = ["a b", "a_b-c8687a08", "a_b", "Cat", "cat", "CAT", "x/../y", ".."]
    manifest = write_manifest(tmp_path / "m.jsonl", [{**base, "id": i} for i in ids])
    out = tmp_path / "out"
    done = run_cli(*run_args(manifest, out, fake))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = journal_rows(out)
    folders = [rows[i]["folder"] for i in ids]
    assert len({f.lower() for f in folders}) == len(ids), folders
    assert all("/" not in f and f not in (".", "..") for f in folders)
    assert rows["cat"]["folder"] == "cat"
    check_folder(out, ids)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(folders)


@pytest.mark.slow
def test_a_changed_line_or_another_manifest_is_refused_naming_the_first_difference(
    fake: FakeServer, tmp_path: Path
) -> None:
    """Resuming with an edited line, or with another manifest, exits 2 naming the first
    difference and sends nothing; --allow-changed-manifest adds the new ids, keeps the
    changed line's journaled result, and results.jsonl keeps every journaled job."""
    write_images(tmp_path)
    original = edits(3)
    manifest = write_manifest(tmp_path / "m.jsonl", original)
    out = tmp_path / "out"
    assert run_cli(*run_args(manifest, out, fake)).returncode == 0
    changed = write_manifest(
        tmp_path / "changed.jsonl",
        [original[0], {**original[1], "prompt": "something else"}, original[2]],
    )
    refused = run_cli(*run_args(changed, out, fake, "--resume"))
    assert refused.returncode == 2
    assert "line 2: the edit of id 'job-0001' differs from the one the run journaled" in (
        refused.stderr
    )
    assert "--allow-changed-manifest" in refused.stderr
    other = write_manifest(tmp_path / "other.jsonl", edits(2, prefix="new"))
    refused = run_cli(*run_args(other, out, fake, "--resume"))
    assert refused.returncode == 2
    assert "line 1: id 'new-0000' is not in the journaled run" in refused.stderr
    assert fake.stats()["jobs_created"] == 3
    same = run_cli(*run_args(tmp_path / "m.jsonl", out, fake, "--resume"))
    assert same.returncode == 0, same.stderr
    accepted = run_cli(*run_args(other, out, fake, "--resume", "--allow-changed-manifest"))
    assert accepted.returncode == 0, accepted.stderr
    assert "2 new id(s) are added" in accepted.stderr
    assert fake.stats()["jobs_created"] == 5
    results = read_results(out)
    assert sorted(r["id"] for r in results) == [
        "job-0000",
        "job-0001",
        "job-0002",
        "new-0000",
        "new-0001",
    ]
    kept = run_cli(*run_args(changed, out, fake, "--resume", "--allow-changed-manifest"))
    assert kept.returncode == 0 and "1 changed line(s) keep their journaled state" in kept.stderr
    assert fake.stats()["jobs_created"] == 5


@pytest.mark.slow
def test_a_bad_line_fixed_before_resuming_is_not_a_change(fake: FakeServer, tmp_path: Path) -> None:
    """A line the run refused may be fixed and resumed: it is sent, nothing is refused."""
    write_images(tmp_path)
    good = edits(3)
    broken = write_manifest(tmp_path / "m.jsonl", [good[0], {**good[1], "n": 99}, good[2]])
    out = tmp_path / "out"
    assert run_cli(*run_args(broken, out, fake)).returncode == 1
    fixed = write_manifest(tmp_path / "m.jsonl", good)
    done = run_cli(*run_args(fixed, out, fake, "--resume"))
    assert done.returncode == 0, done.stderr
    assert "3 succeeded, 0 failed" in done.stdout


@pytest.mark.slow  # a run and two status commands: about 3 s
def test_results_rows_carry_urls_and_usage_and_status_json_counts_by_state_and_type(
    fake: FakeServer, tmp_path: Path
) -> None:
    """Every results.jsonl row has the result's urls and usage; `status --json` prints the
    jobs per state and the failures per error type."""
    write_images(tmp_path)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [*edits(4), "{not json", {**edits(1)[0], "id": "z", "n": 99}]
    )
    out = tmp_path / "out"
    assert run_cli(*run_args(manifest, out, fake)).returncode == 1
    rows = {row["id"]: row for row in read_results(out)}
    ok = rows["job-0001"]
    assert ok["status"] == "succeeded" and len(ok["urls"]) == 2
    assert all(url.startswith(fake.url) for url in ok["urls"])
    assert "usage" in ok
    assert rows["line 5"]["error"]["type"] == "ManifestError"
    status = run_cli("status", out, "--json")
    assert status.returncode == 0
    document = json.loads(status.stdout)
    assert document["counts"]["succeeded"] == 4
    assert document["counts"]["queued"] == 0
    assert document["refused_lines"] == 2
    assert document["failures_by_type"] == {"ManifestError": 1, "ValidationError": 1}
    assert document["provider"] == "vtrix" and document["base_url"] == fake.url
    assert os.environ.get("QWEN_EDIT_API_KEY", "\0") not in status.stdout
