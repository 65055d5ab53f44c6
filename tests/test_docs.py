"""The documentation site: every public name has a reference entry; the build is offline."""

from __future__ import annotations

import pathlib
import re

import qwen_edit_async as qe

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
#: Names that are not documented as objects of their own.
NOT_OBJECTS = {"__version__", "providers", "USE_CLIENT_DEFAULT"}


def documented() -> set[str]:
    names = set()
    for page in REFERENCE.glob("*.md"):
        names |= set(re.findall(r"^::: qwen_edit_async\.(\w+)\s*$", page.read_text(), re.M))
    return names


def test_every_public_name_has_a_reference_entry() -> None:
    """Each name in qwen_edit_async.__all__ is rendered by a '::: qwen_edit_async.NAME'
    line in docs/reference/ (add one there when adding a public name)."""
    missing = set(qe.__all__) - NOT_OBJECTS - documented()
    assert not missing, f"add '::: qwen_edit_async.NAME' to a page of docs/reference/: {missing}"


def test_every_page_is_in_the_navigation() -> None:
    """mkdocs.yml lists every page of docs/, so none is built without a way to reach it."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages and all(page in nav for page in pages), pages


def test_the_build_fetches_nothing() -> None:
    """No plugin or theme setting of mkdocs.yml reaches the network at build time: no
    inventories to download, no social cards, no privacy plugin, no web font."""
    lines = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines()
    config = "\n".join(line.split("#", 1)[0] for line in lines)  # settings, not comments
    for needle in ("inventories", "import:", "social", "privacy", "http://", "https://"):
        assert needle not in config, needle
    assert "font: false" in config
