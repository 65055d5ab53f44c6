"""The one retry policy (``_retry``): which failures are retried, how long each wait is, the
test switch as a context manager, and the poller and downloads following the policy."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest
from aiohttp import web

import qwen_edit_async as qe
from qwen_edit_async import _retry
from qwen_edit_async._retry import RetryPolicy, pause
from qwen_edit_async.providers._base import ProtocolError

pytestmark = pytest.mark.timeout(30)


def policy(**options: float | bool) -> RetryPolicy:
    values: dict[str, float | bool] = {"backoff_base": 0.5, "backoff_max": 30.0}
    values.update(options)
    return RetryPolicy(**values)  # type: ignore[arg-type]


# -- set_testing --------------------------------------------------------------------------


def test_set_testing_as_a_context_manager_restores_the_previous_state() -> None:
    """Inside the block waits are off; after it, the setting in force before comes back,
    also when the block raises, and nested blocks unwind in order."""
    with qe.set_testing(False):
        assert not _retry.testing_enabled()
        with qe.set_testing(True):
            assert _retry.testing_enabled()
            assert policy().delay(5) == 0.0
            with pytest.raises(KeyError), qe.set_testing(False):
                assert not _retry.testing_enabled()
                raise KeyError("x")
            assert _retry.testing_enabled()
        assert not _retry.testing_enabled()
    assert _retry.testing_enabled()  # the suite's own setting (the autouse fixture)


def test_set_testing_called_alone_takes_effect_at_once() -> None:
    """``qe.set_testing(False)`` without ``with`` still switches (and stays switched)."""
    with qe.set_testing(True):
        qe.set_testing(False)
        assert not _retry.testing_enabled()
        assert pause(2.5) == 2.5
    assert _retry.testing_enabled()


# -- delay ----------------------------------------------------------------------------------


def test_ceilings_double_from_backoff_base_up_to_backoff_max() -> None:
    p = policy(backoff_base=0.25, backoff_max=3.0)
    assert [p.ceiling(n) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.ceiling(10_000) == 3.0


def test_delay_is_full_jitter_below_the_ceiling() -> None:
    """Each wait is uniform in [0, ceiling]: never above it, and spread over all of it (not
    the [d/2, d] of a half-jitter nor the bare ceiling of no jitter)."""
    random.seed(12)
    p = policy(backoff_base=1.0, backoff_max=8.0)
    with qe.set_testing(False):
        waits = [p.delay(3) for _ in range(400)]
    assert all(w is not None and 0.0 <= w <= 4.0 for w in waits)
    assert min(w for w in waits if w is not None) < 1.0
    assert max(w for w in waits if w is not None) > 3.0


def test_retry_after_is_honoured_up_to_retry_after_max() -> None:
    p = policy(retry_after_max=10.0)
    with qe.set_testing(False):
        assert p.delay(1, retry_after=7.5) == 7.5
        assert p.delay(1, retry_after=10.5) is None  # more than allowed: give up
    assert p.delay(1, retry_after=7.5) == 0.0  # testing: no wait, still a retry


# -- should_retry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "idempotent", "uncertain", "expected"),
    [
        (qe.RateLimitError("429"), False, False, True),
        (qe.ServerError("503"), False, False, True),
        (qe.TransportError("refused"), False, False, True),
        (qe.BadRequestError("bad"), True, False, False),
        (qe.AuthenticationError("401"), True, False, False),
        (qe.SubmitUncertainError("lost"), False, False, False),
        (qe.SubmitUncertainError("lost"), False, True, True),
        (qe.SubmitUncertainError("lost"), True, False, True),
        (ProtocolError("unreadable"), False, False, False),
        (ProtocolError("unreadable"), True, False, True),
        (ValueError("a bug"), True, False, False),
    ],
)
def test_should_retry(
    error: BaseException, idempotent: bool, uncertain: bool, expected: bool
) -> None:
    """Creates are retried only when the provider certainly refused them (or with
    retry_uncertain); GETs also after a lost or unreadable answer; bugs never."""
    p = policy(retry_uncertain=uncertain)
    assert p.should_retry(error, idempotent=idempotent) is expected


def test_the_policy_is_built_from_the_client_config() -> None:
    config = qe.ClientConfig(
        backoff_base=0.1, backoff_max=0.4, retry_after_max=3.0, retry_uncertain=True
    )
    p = RetryPolicy.from_config(config)
    assert [p.ceiling(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.4]
    assert p.retry_after_max == 3.0 and p.retry_uncertain


# -- downloads follow it ---------------------------------------------------------------------


async def test_a_download_asked_to_wait_longer_than_retry_after_max_gives_up_at_once(
    tmp_path: Path,
) -> None:
    """A 503 whose Retry-After exceeds retry_after_max ends the download after one request,
    saying why (downloads used to ignore Retry-After and retry max_attempts times)."""
    hits: list[int] = []

    async def busy(request: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(status=503, headers={"Retry-After": "600"})

    app = web.Application()
    app.router.add_get("/r.png", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    result = qe.EditResult(
        images=[qe.GeneratedImage(url=f"http://127.0.0.1:{port}/r.png")], provider="vtrix"
    )
    try:
        async with qe.QwenEditClient(
            "vtrix", api_key="sk-retry", base_url="http://127.0.0.1:9", max_attempts=4
        ) as client:
            with anyio.fail_after(10), pytest.raises(qe.DownloadError, match="retry_after_max"):
                await client.download(result, tmp_path)
    finally:
        await runner.cleanup()
    assert len(hits) == 1


def test_every_wait_skipped_in_tests_goes_through_the_policy() -> None:
    """No module decides on its own to skip a wait while testing: each wait goes through
    ``_retry.pause`` or the policy's delays, so ``set_testing`` is one switch. Outside the
    policy, ``testing_enabled()`` is read only where the limits use their cap in place of
    a learned rate (learning it would be a wait, but it is no wait itself)."""
    import ast
    import pathlib

    import qwen_edit_async

    package = pathlib.Path(qwen_edit_async.__file__).parent
    readers: set[tuple[str, str]] = set()
    for path in sorted(package.rglob("*.py")):
        if path.name == "_retry.py":
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "testing_enabled"
                ):
                    readers.add((str(path.relative_to(package)), function.name))
    assert readers == {("_limits.py", "_pace"), ("_shared.py", "pace")}
