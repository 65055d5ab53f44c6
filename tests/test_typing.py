"""A user's type checker sees the options: a misspelt or mistyped option is a mypy error."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

import qwen_edit_async as qe
from qwen_edit_async._options import ClientOptions, EditOptions, ProviderName
from qwen_edit_async.providers import PROVIDERS

REPO = Path(__file__).resolve().parent.parent

#: User code; a line ending in ``# E: text`` must be a mypy error containing ``text``, and
#: every other line must pass ``mypy --strict``.
SNIPPET = textwrap.dedent(
    """
    import pathlib

    import qwen_edit_async as qe


    async def main(provider: qe.providers.Provider) -> None:
        async with qe.QwenEditClient("evolink", job_timeout=30, poll_rate=None) as client:
            result = await client.edit(["cat.png"], "Add a hat", n=2, size="1024*1024", seed=7)
            reveal_type(result)
            job = await client.submit(["cat.png"], "Add a hat", watermark=False)
            reveal_type(job)
            await client.edit(["cat.png"], "Add a hat", sise="1024*1024")  # E: "sise"
            await client.edit(["cat.png"], "Add a hat", n="2")  # E: "n"
            await client.submit(["cat.png"], "Add a hat", seeed=7)  # E: "seeed"
        qe.QwenEditClient("evolink", job_timout=30)  # E: "job_timout"
        qe.QwenEditClient("evolink", max_attempts="6")  # E: "max_attempts"
        qe.QwenEditClient("evolnk")  # E: "QwenEditClient"
        qe.QwenEditClient(provider, read_timeout=5.0)
        with qe.SyncQwenEditClient("vtrix", job_timeout=None) as sync:
            sync.edit(["cat.png"], "Add a hat", n=1)
            sync.edit(["cat.png"], "Add a hat", negative_promt="blur")  # E: "negative_promt"
        qe.SyncQwenEditClient("vtrix", poll_jiter=0.1)  # E: "poll_jiter"
        request = qe.EditRequest(images=[pathlib.Path("cat.png")], prompt="x", size=(1024, 1024))
        reveal_type(request.size)
        reveal_type(request.images)
        qe.EditRequest(images=["cat.png"], prompt="x", size=1024)  # E: "size"
    """
)

REVEALED = [
    "qwen_edit_async._models.EditResult",
    "qwen_edit_async._job.Job",
    "qwen_edit_async._size.Size | None",
    "tuple[str | bytes | pathlib.Path, ...]",
]


@pytest.mark.slow
def test_a_users_mypy_checks_the_options(tmp_path: Path) -> None:
    """mypy --strict on user code: typos and wrong types in client and edit options are
    errors on exactly the marked lines; correct calls pass; the built request's ``size``
    is ``Size | None`` and its ``images`` a tuple of normalized inputs."""
    snippet = tmp_path / "user_code.py"
    snippet.write_text(SNIPPET, encoding="utf-8")
    command = [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary"]
    # The library's own modules are checked by its CI; here only the user's code counts.
    command += ["--follow-imports", "silent", "--hide-error-context", str(snippet)]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(REPO), "PATH": ""},
        timeout=240,
    )
    assert proc.stderr == ""
    errors: dict[int, list[str]] = {}
    revealed: list[str] = []
    for line in proc.stdout.splitlines():
        match = re.match(r".*user_code\.py:(\d+): (error|note): (.*)", line)
        assert match, line
        number, kind, text = int(match[1]), match[2], match[3]
        if kind == "note" and text.startswith("Revealed type is "):
            revealed.append(text.removeprefix("Revealed type is ").strip('"'))
        elif kind == "error":
            errors.setdefault(number, []).append(text)
    expected = {
        number: marker.split("# E: ", 1)[1]
        for number, marker in enumerate(SNIPPET.splitlines(), start=1)
        if "# E: " in marker
    }
    assert sorted(errors) == sorted(expected), proc.stdout
    for number, text in expected.items():
        assert any(text in message for message in errors[number]), (number, errors[number])
    assert revealed == REVEALED


def test_provider_names_are_the_registry() -> None:
    """The ``provider`` literal lists exactly the registry's names."""
    assert set(get_args(ProviderName)) == set(PROVIDERS)


def test_option_types_are_the_config_and_request_fields() -> None:
    """``ClientOptions`` is every ``ClientConfig`` field with its type, and ``EditOptions``
    every optional ``EditRequest`` field: the lists cannot drift from the classes."""
    config_hints = get_type_hints(qe.ClientConfig)
    assert get_type_hints(ClientOptions) == config_hints
    request_fields = set(qe.EditRequest.__struct_fields__) - {"images", "prompt"}
    assert set(get_type_hints(EditOptions)) == request_fields


def test_the_typed_constructor_of_edit_request_lists_its_fields() -> None:
    """The constructor a type checker sees for ``EditRequest`` takes exactly its fields,
    keyword-only: a field added to the struct cannot be missing for users' mypy."""
    import ast

    import qwen_edit_async._models as models

    tree = ast.parse(Path(models.__file__).read_text(encoding="utf-8"))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EditRequest"]
    inits = [
        node
        for node in ast.walk(cls)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    ]
    assert len(inits) == 1
    arguments = inits[0].args
    assert [a.arg for a in arguments.args] == ["self"]
    assert [a.arg for a in arguments.kwonlyargs] == list(qe.EditRequest.__struct_fields__)
