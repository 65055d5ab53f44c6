"""MkDocs hooks for the API reference: docstrings written for Python's help() read well.

The docstrings show examples as ``>>>`` sessions, which Markdown would read as nested
quotes (and their ``[...]`` output as links): each session is fenced as ``pycon``, without
the ``# doctest:`` directives, which mean nothing to a reader. Sphinx roles
(``:class:`Job```, ``:meth:`~QwenEditClient.edit```) become inline code.
"""

from __future__ import annotations

import re
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor

_DIRECTIVE = re.compile(r"\s*#\s*doctest:.*$")
_FENCE = ("```", "~~~")
_ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):  # ~a.b.C shows as C
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class _DoctestFence(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        in_fence = False
        i = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.lstrip()
            if stripped.startswith(_FENCE):
                in_fence = not in_fence
            elif not in_fence and stripped.startswith(">>>"):
                indent = line[: len(line) - len(stripped)]
                session = []
                while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
                    session.append(indent + _DIRECTIVE.sub("", lines[i][len(indent) :]))
                    i += 1
                out += ["", indent + "```pycon", *session, indent + "```", ""]
                continue
            if not in_fence:
                line = _ROLE.sub(_role, line)
            out.append(line)
            i += 1
        return out


class _DoctestExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # the name is Markdown's API
        # Before the fenced-code preprocessors (priority 25), so they see the new fences.
        md.preprocessors.register(_DoctestFence(md), "doctest_fence", 30)


def on_config(config: Any) -> Any:
    """Add the extension to the page and docstring renderers (mkdocstrings reads the same
    list when it first renders)."""
    config.markdown_extensions.append(_DoctestExtension())
    return config
