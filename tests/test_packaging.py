"""Packaging: the license, the metadata, ``qwen-edit --version`` and the pytest plugin."""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys
import textwrap

import pytest

import qwen_edit_async as qe

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_license_file_is_mit_as_the_metadata_says() -> None:
    """LICENSE holds the MIT text and the installed metadata names MIT."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
    meta = importlib.metadata.metadata("qwen-edit-async")
    assert "MIT" in (meta.get("License-Expression") or meta.get("License") or "")


def test_metadata_has_project_urls_and_python_classifiers() -> None:
    """The installed metadata lists project URLs and one classifier per supported Python."""
    meta = importlib.metadata.metadata("qwen-edit-async")
    urls = {entry.split(",")[0].strip() for entry in meta.get_all("Project-URL") or []}
    assert {"Homepage", "Documentation", "Changelog", "Issues"} <= urls
    classifiers = set(meta.get_all("Classifier") or [])
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert meta["Requires-Python"] == ">=3.10"


def test_extras_testing_and_docs_are_declared() -> None:
    """``[testing]`` brings pytest and pytest-asyncio; ``[docs]`` brings MkDocs."""
    requires = importlib.metadata.requires("qwen-edit-async") or []
    testing = [r for r in requires if r.replace("'", '"').endswith('extra == "testing"')]
    docs = [r for r in requires if r.replace("'", '"').endswith('extra == "docs"')]
    assert any(r.startswith("pytest-asyncio") for r in testing)
    assert any(r.startswith("pytest>") for r in testing)
    assert any(r.startswith("mkdocstrings") for r in docs)
    assert any(r.startswith("mkdocs-material") for r in docs)


def test_cli_version_prints_the_package_version() -> None:
    """``qwen-edit --version`` prints the version and exits 0, without a subcommand."""
    done = subprocess.run(
        [sys.executable, "-m", "qwen_edit_async", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"qwen-edit {qe.__version__}"


def test_pytest_plugin_is_registered_as_an_entry_point() -> None:
    """The package registers its pytest plugin under ``pytest11``."""
    points = importlib.metadata.entry_points(group="pytest11")
    assert any(p.value == "qwen_edit_async.testing._pytest" for p in points)


def _run_pytest(
    tmp_path: pathlib.Path, source: str, *args: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # over 2.5 s on 2 cores (pyproject's rule for the marker)
def test_qwen_fake_fixture_works_in_a_user_suite_without_pytest_asyncio(
    tmp_path: pathlib.Path,
) -> None:
    """A user's suite gets ``qwen_fake`` with no conftest, even with pytest-asyncio off."""
    done = _run_pytest(
        tmp_path,
        """
        import json
        import urllib.request

        def test_fake_answers(qwen_fake):
            assert qwen_fake.url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(qwen_fake.url + "/_fake/stats") as answer:
                stats = json.load(answer)
            assert stats["jobs_created"] == 0
        """,
        "-p",
        "no:asyncio",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_importing_async_fixtures_without_pytest_asyncio_says_what_to_install() -> None:
    """Without pytest-asyncio, importing the async fixtures is an ImportError naming the
    extra to install, not a bare ModuleNotFoundError."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest_asyncio"] = None  # as if it were not installed
        try:
            from qwen_edit_async.testing import fake_provider
        except ImportError as exc:
            assert not isinstance(exc, ModuleNotFoundError), repr(exc)
            print(exc)
        else:
            raise SystemExit("imported")
        from qwen_edit_async.testing import qwen_fake  # needs pytest only
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'qwen-edit-async[testing]'" in done.stdout
    assert "pytest-asyncio" in done.stdout
