"""The pipe is the library's only HTTP client: no other module imports aiohttp to send a
request, and the layers above it reach it only through the conversation.

Read statically from the sources: an import under ``if TYPE_CHECKING:`` is a type, not code
(a caller's shared ``ClientSession`` is typed that way), and the callback receiver's
``aiohttp.web`` is a server, not a client. The fake (``testing/``) is the provider's side.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "qwen_edit_async"


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """Modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def _modules() -> list[pathlib.Path]:
    return [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts]


def test_only_the_pipe_imports_the_aiohttp_client() -> None:
    users = {
        path.relative_to(PACKAGE).as_posix(): sorted(
            name for name in _runtime_imports(path) if name.split(".")[0] == "aiohttp"
        )
        for path in _modules()
    }
    users = {name: imports for name, imports in users.items() if imports}
    assert users == {"_http.py": ["aiohttp", "aiohttp.abc"], "_callbacks.py": ["aiohttp"]}


def test_the_callback_receiver_imports_only_aiohttps_server() -> None:
    source = (PACKAGE / "_callbacks.py").read_text(encoding="utf-8")
    assert "from aiohttp import web\n" in source
    assert "ClientSession" not in source


def test_the_poller_and_downloads_do_not_reach_past_their_layer() -> None:
    """The poller is given a ``status(task_id)`` callable and downloads a ``fetch(url,
    index)`` one: neither imports the pipe, the conversation or aiohttp."""
    for module in ("_poller.py", "_download.py"):
        imports = _runtime_imports(PACKAGE / module)
        assert not [n for n in imports if n.startswith(("._http", "._calls", "aiohttp"))], module
