"""The bulk package sits on top of the core: the core never imports it.

Checked two ways: statically (no module outside ``bulk/`` except the command line imports
``bulk``) and at run time (importing the library and its fake loads no ``bulk`` module).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "qwen_edit_async"

# The command line is the one place above both the core and the bulk package.
_ALLOWED = {PACKAGE / "cli.py"}


def _imports_bulk(path: pathlib.Path) -> list[str]:
    """The import statements of ``path`` that reach the bulk package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n for n in names if n.startswith("qwen_edit_async.bulk")]
    return found


def test_no_core_module_imports_the_bulk_package() -> None:
    """Only ``bulk/`` itself and ``cli.py`` import ``qwen_edit_async.bulk``."""
    offenders = {
        str(path.relative_to(PACKAGE)): hits
        for path in PACKAGE.rglob("*.py")
        if "bulk" not in path.relative_to(PACKAGE).parts and path not in _ALLOWED
        if (hits := _imports_bulk(path))
    }
    assert offenders == {}


def test_the_check_sees_a_relative_import_of_bulk() -> None:
    """The static check recognises the relative spelling a core module would use."""
    assert _imports_bulk(PACKAGE / "cli.py")


def test_importing_the_library_and_the_fake_loads_no_bulk_module() -> None:
    """``import qwen_edit_async`` (and its testing helpers) leaves ``bulk`` unloaded."""
    code = (
        "import sys, qwen_edit_async, qwen_edit_async.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith('qwen_edit_async.bulk')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_only_the_fake_reaches_into_the_fakes_private_modules() -> None:
    """Outside ``testing/`` the package imports the fake only by its public names."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "testing" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and "testing._" in f".{node.module or ''}":
                offenders.append(f"{path.relative_to(PACKAGE)}: {node.module}")
    assert offenders == []


def test_no_production_module_probes_the_fakes_control_routes() -> None:
    """A run never asks a server whether it is the fake (no ``/_fake/config`` probing)."""
    probing = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "testing" not in path.relative_to(PACKAGE).parts
        and "/_fake/config" in path.read_text(encoding="utf-8")
    ]
    assert probing == []


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    """Lines per module of the bulk package and the command line, and per function there."""
    modules, functions = {}, {}
    for path in [*sorted((PACKAGE / "bulk").glob("*.py")), PACKAGE / "cli.py"]:
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(PACKAGE))
        modules[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                functions[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return modules, functions


def test_the_bulk_package_and_the_command_line_stay_readable() -> None:
    """No module over 500 lines, no function over 60 (the parser tables included), and the
    command line only assembles the commands."""
    modules, functions = _sizes()
    assert {name: n for name, n in modules.items() if n > 500} == {}
    assert {name: n for name, n in functions.items() if n > 60} == {}
    assert modules["cli.py"] < 100
