"""How the client's modules depend on each other, and who may change a job or an error."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

import qwen_edit_async as qe
from qwen_edit_async._errors import with_context
from qwen_edit_async._job import Job

PACKAGE = Path(qe.__file__).parent


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / name).read_text(encoding="utf-8"))


def _imported_modules(tree: ast.Module) -> set[str]:
    """Every module a file imports, ``if TYPE_CHECKING:`` blocks and local imports included."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.add(base)
            found.update(f"{base}.{alias.name}" if base == "." else base for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _job_fields() -> set[str]:
    job = Job(qe.EditRequest(images=["https://example.com/a.png"], prompt="x"))
    # Set in __init__, or declared on the class (a new job reads the class's value).
    return set(vars(job)) | set(Job.__annotations__)


def test_edit_many_does_not_import_the_client() -> None:
    """``_many`` is given what it needs by the client: no import of ``_client`` (no circle)."""
    imported = _imported_modules(_tree("_many.py"))
    assert not {name for name in imported if name.endswith("_client")}, imported


_USERS_OF_JOBS = sorted(
    str(path.relative_to(PACKAGE))
    for path in PACKAGE.rglob("*.py")
    # The fake provider's jobs are its own records, not Job.
    if path.name != "_job.py" and "testing" not in path.parts
)


@pytest.mark.parametrize("name", _USERS_OF_JOBS)
def test_only_the_job_changes_its_own_fields(name: str) -> None:
    """Outside ``_job.py`` nothing assigns to a job's fields: the job owns its transitions."""
    fields = _job_fields()
    assert {"status", "task_id", "submissions", "request_sent", "_scope"} <= fields
    writes = []
    for node in ast.walk(_tree(name)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for part in ast.walk(target):
                if (
                    isinstance(part, ast.Attribute)
                    and part.attr in fields
                    and isinstance(part.value, ast.Name)
                    and part.value.id == "job"
                ):
                    writes.append(f"{name}:{part.lineno} job.{part.attr}")
    assert writes == []


#: Fields of an error, and the names the package gives variables holding one.
_ERROR_FIELDS = frozenset(
    {"message", "code", "retryable", "retry_after", "limit", "submissions", "field", "body"}
    | {"args", "task_id", "request_id", "provider", "status"}
)
_ERROR_NAME = re.compile(r"^(e|err|error|exc|exception)(_\w+)?$")


def _error_writes(tree: ast.Module) -> list[int]:
    """Lines that set a field of an error held in a variable (``error.task_id = ...``)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in _ERROR_FIELDS
                    and isinstance(target.value, ast.Name)
                    and _ERROR_NAME.match(target.value.id)
                ):
                    lines.append(node.lineno)
    return lines


def test_no_error_is_changed_after_it_was_created() -> None:
    """Across the package an error's fields are set only by its constructor: the mapping
    passes ``limit=`` and ``retryable=``, and one that learns more (its task id) is copied
    with ``with_context``."""
    changed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        changed += [f"{path.relative_to(PACKAGE)}:{n}" for n in _error_writes(tree)]
    assert changed == []


def test_with_context_copies_and_leaves_the_original_alone() -> None:
    """An error learns its task id as a new error; the original is unchanged."""
    cause = OSError("reset")
    try:
        try:
            raise cause
        except OSError as exc:
            raise qe.ServerError("boom", provider="evolink", status=500) from exc
    except qe.ServerError as caught:
        original = caught
    clone = with_context(original, task_id="t-9", submissions=3, provider="other")
    assert clone is not original
    assert type(clone) is qe.ServerError
    assert (clone.task_id, clone.submissions, clone.provider) == ("t-9", 3, "evolink")
    assert (original.task_id, original.submissions) == (None, None)
    assert clone.__cause__ is cause
    assert clone.__traceback__ is original.__traceback__
    assert "task_id=t-9" in str(clone) and "task_id" not in str(original)
    assert pickle.loads(pickle.dumps(clone)).task_id == "t-9"


def test_with_context_returns_the_error_itself_when_it_has_nothing_to_add() -> None:
    """Fields already set win; ``None`` adds nothing; then the same object comes back."""
    err = qe.JobFailedError("failed", task_id="t-1")
    assert with_context(err, task_id="t-2", submissions=None) is err
    assert err.task_id == "t-1"


def test_a_finished_job_names_its_task_without_changing_the_error_it_was_given() -> None:
    """``Job._finish`` gives the job an error saying its task and submissions; the error
    raised inside (which others may hold) keeps its own fields."""
    job = Job(None, task_id="task-7")
    job._count_submission()
    job._count_submission()
    raised = qe.TransportError("connection reset")
    job._finish(None, raised)
    error = job.exception()
    assert isinstance(error, qe.TransportError)
    assert (error.task_id, error.submissions) == ("task-7", 2)
    assert (raised.task_id, raised.submissions) == (None, None)
    assert job.status is qe.JobStatus.FAILED


async def test_job_transitions_in_order() -> None:
    """A job moves itself through submitting, sent, accepted and done, calling its hooks."""
    calls: list[object] = []

    async def on_send() -> None:
        calls.append("send")

    async def on_accepted(task_id: str, request_id: str | None) -> None:
        calls.append((task_id, request_id))

    job = Job(
        qe.EditRequest(images=["https://example.com/a.png"], prompt="x"),
        on_send=on_send,
        on_accepted=on_accepted,
    )
    assert job.status is qe.JobStatus.WAITING
    job._submitting()
    assert job.status is qe.JobStatus.SUBMITTING
    job._count_submission()
    waiting = job._sending()  # the hook's coroutine, to be awaited before the send
    assert waiting is not None and not job.request_sent
    await waiting
    assert job.request_sent and job.status is qe.JobStatus.SUBMITTING
    await job._accept("task-1", "req-1")
    assert (job.task_id, job.request_id, job.status) == ("task-1", "req-1", qe.JobStatus.PENDING)
    await job._wait_accepted()  # returns at once: accepted
    assert calls == ["send", ("task-1", "req-1")]
    job._finish(None, qe.JobCancelledError("cancelled"))
    assert job.status is qe.JobStatus.CANCELLED and job.done()
