"""The public surface: __all__ matches what is exported, errors form the documented tree."""

from __future__ import annotations

import pickle

import pytest

import qwen_edit_async as qe


def test_all_lists_exactly_the_public_names() -> None:
    """Every public attribute of the package is in __all__ and every name there exists."""
    public = {
        name
        for name, value in vars(qe).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("qwen_edit")
    } | {"providers", "USE_CLIENT_DEFAULT"}
    assert set(qe.__all__) == public | {"__version__"}
    assert qe.__all__ == sorted(qe.__all__)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (qe.ValidationError, qe.QwenEditError),
        (qe.ValidationError, ValueError),
        (qe.ConfigurationError, qe.QwenEditError),
        (qe.TransportError, qe.QwenEditError),
        (qe.SubmitUncertainError, qe.TransportError),
        (qe.APIError, qe.QwenEditError),
        (qe.AuthenticationError, qe.APIError),
        (qe.PermissionDeniedError, qe.APIError),
        (qe.RateLimitError, qe.APIError),
        (qe.InsufficientQuotaError, qe.APIError),
        (qe.BadRequestError, qe.APIError),
        (qe.ContentFilterError, qe.BadRequestError),
        (qe.TaskNotFoundError, qe.BadRequestError),
        (qe.ServerError, qe.APIError),
        (qe.JobFailedError, qe.QwenEditError),
        (qe.JobTimeoutError, qe.QwenEditError),
        (qe.DownloadError, qe.QwenEditError),
    ],
)
def test_error_tree_matches_the_design(child: type, parent: type) -> None:
    """Each error class derives from the class the drawn tree (`_errors.py`) puts above it."""
    assert issubclass(child, parent)


def test_errors_carry_context_and_survive_pickling() -> None:
    """Provider, status, code, request and task ids are kept, shown, and pickled."""
    err = qe.RateLimitError(
        "slow down",
        provider="evolink",
        status=429,
        code="rate_limit_exceeded",
        request_id="r-1",
        task_id="t-1",
        retry_after=2.5,
    )
    text = str(err)
    for part in ("slow down", "evolink", "429", "rate_limit_exceeded", "r-1", "t-1"):
        assert part in text
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is qe.RateLimitError
    assert (clone.status, clone.retry_after, clone.task_id) == (429, 2.5, "t-1")


def test_every_error_class_lives_in_the_one_tree() -> None:
    """Every error class of the package is defined in ``_errors`` and drawn in its docstring."""
    import inspect

    from qwen_edit_async import _errors, _job, providers
    from qwen_edit_async.bulk import _manifest

    found = {
        value
        for module in (qe, _job, _manifest, providers)
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, qe.QwenEditError)
    }
    assert {"JobCancelledError", "ManifestError", "ProtocolError"} <= {c.__name__ for c in found}
    tree = _errors.__doc__ or ""
    for cls in found:
        assert cls.__module__ == "qwen_edit_async._errors", cls
        drawn = f"── {cls.__name__} " in tree or tree.count(f"\n    {cls.__name__}\n") == 1
        assert drawn, cls
