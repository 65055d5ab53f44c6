"""Retries that never double-charge, proven with the fake provider's own counters."""

from __future__ import annotations

import collections
import logging
import time

import pytest
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider, Faults

URL = "https://example.com/a.png"


def client_for(fake: FakeProvider, provider: str, **options: object) -> qe.QwenEditClient:
    options.setdefault("poll_initial", 0.05)
    options.setdefault("poll_max_interval", 0.2)
    return qe.QwenEditClient(provider, api_key=API_KEY, base_url=fake.url, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", ["dashscope", "vtrix", "evolink"])
@pytest.mark.parametrize(
    "fault", ["rate_limit:1", "server_error:500", "server_error:503", "drop_before_accept"]
)
async def test_refused_creates_are_retried_and_billed_once(
    fake: FakeProvider, provider: str, fault: str
) -> None:
    """429, 5xx and a connection reset before acceptance are retried: one job is billed."""
    fake.script(fault, fault, "ok")
    options = {"uploader": fake.uploader} if provider == "evolink" else {}
    async with client_for(fake, provider, **options) as client:
        result = await client.edit([URL], "retry me")
    assert result.images
    assert fake.stats.creates == 3
    assert fake.stats.jobs_created == 1


@pytest.mark.parametrize("provider", ["dashscope", "modelstream", "vtrix", "evolink"])
@pytest.mark.parametrize("fault", ["drop_after_accept", "malformed"])
async def test_a_lost_answer_is_uncertain_and_never_resent(
    fake: FakeProvider, provider: str, fault: str
) -> None:
    """When the job was created but the answer was lost, the client raises
    SubmitUncertainError and sends no second create."""
    fake.script(fault)
    options = {"uploader": fake.uploader} if provider == "evolink" else {}
    async with client_for(fake, provider, **options) as client:
        with pytest.raises(qe.SubmitUncertainError) as info:
            await client.edit([URL], "only once")
    assert fake.stats.creates == 1
    assert fake.stats.jobs_created == 1
    assert info.value.provider == provider
    assert "may have been created" in str(info.value)


async def test_retry_uncertain_opt_in_resends(fake: FakeProvider) -> None:
    """With retry_uncertain=True a lost answer is resent (and the user accepts paying twice)."""
    fake.script("drop_after_accept", "ok")
    async with client_for(fake, "vtrix", retry_uncertain=True) as client:
        assert (await client.edit([URL], "again")).images
    assert fake.stats.jobs_created == 2


@pytest.mark.parametrize(
    ("prompt", "provider", "error"),
    [
        ("[filter] x", "dashscope", qe.ContentFilterError),
        ("[quota] x", "dashscope", qe.InsufficientQuotaError),
        ("[quota] x", "evolink", qe.InsufficientQuotaError),
    ],
)
async def test_errors_that_cannot_succeed_are_not_retried(
    fake: FakeProvider, prompt: str, provider: str, error: type[qe.QwenEditError]
) -> None:
    """Moderation and exhausted quota are raised at once: one create, no retry."""
    options = {"uploader": fake.uploader} if provider == "evolink" else {}
    async with client_for(fake, provider, **options) as client:
        with pytest.raises(error):
            await client.edit([URL], prompt)
    assert fake.stats.creates == 1


async def test_bad_key_is_authentication_error_without_the_key(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused key raises AuthenticationError; neither the error nor any log line shows
    the key, even at DEBUG."""
    secret = "sk-wrong-key-9f8e7d6c5b4a"
    caplog.set_level(logging.DEBUG, logger="qwen_edit_async")
    async with qe.QwenEditClient("dashscope", api_key=secret, base_url=fake.url) as client:
        with pytest.raises(qe.AuthenticationError) as info:
            await client.edit([URL], "x")
        text = repr(client) + str(info.value) + repr(info.value) + repr(info.value.body)
    assert fake.stats.creates == 1
    assert caplog.records, "the request should have been logged at DEBUG"
    assert secret not in text
    assert secret not in caplog.text


@pytest.mark.slow
async def test_a_429_pauses_every_submission_once(fake: FakeProvider) -> None:
    """One 429 with Retry-After starts one client-wide cooldown that all submissions wait
    out, instead of each job hammering the provider."""
    qe.set_testing(False)
    fake.script("rate_limit:1")
    fake.latency = 0.01
    start = time.monotonic()
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(8)]
    async with client_for(fake, "dashscope", max_in_flight=8) as client:
        outcomes = [o async for o in client.edit_many(requests)]
    assert all(o.ok for o in outcomes)
    assert time.monotonic() - start >= 0.9
    # One refused create, then each job exactly once: nobody retried into the cooldown.
    assert fake.stats.rate_limited == 1
    assert fake.stats.creates == 9


@pytest.mark.slow
async def test_thousand_jobs_all_accounted_for_under_faults() -> None:
    """1,000 jobs under injected 429s, 5xx, failed and stuck tasks: every one ends once,
    with a result or a typed error; a job is created again only after its task failed."""
    faults = Faults(rate_limit=0.05, retry_after=0, server_error=0.05, fail_task=0.05, stuck=0.02)
    async with FakeProvider(api_key=API_KEY, latency=0.01, faults=faults, seed=7) as fake:
        requests = (qe.EditRequest(images=[URL], prompt=f"edit {i}") for i in range(1000))
        seen: collections.Counter[int] = collections.Counter()
        kinds: collections.Counter[str] = collections.Counter()
        submissions: dict[int, int] = {}
        # The deadline ends the stuck tasks; it leaves room for creates on a loaded machine.
        async with client_for(fake, "vtrix", max_in_flight=100, job_timeout=3.0) as client:
            async for outcome in client.edit_many(requests):
                seen[outcome.index] += 1
                submissions[outcome.index] = outcome.submissions
                assert (outcome.result is None) != (outcome.error is None)
                kinds[type(outcome.error).__name__ if outcome.error else "ok"] += 1
                if outcome.error is not None:
                    assert isinstance(outcome.error, qe.QwenEditError)
                    # On a loaded machine a deadline may pass before the create is answered:
                    # only then is no task id known.
                    assert outcome.error.task_id or isinstance(outcome.error, qe.JobTimeoutError)
            stats = client.statistics()
        assert sorted(seen) == list(range(1000)) and set(seen.values()) == {1}
        # Failed tasks (not billed) were submitted again, and every submission is counted (one
        # cut short by the job's deadline may not have reached the provider).
        assert 1000 < fake.stats.jobs_created <= sum(submissions.values())
        assert max(submissions.values()) <= 3
        assert kinds["JobTimeoutError"] > 0
        assert kinds["ok"] + kinds["JobFailedError"] + kinds["JobTimeoutError"] == 1000
        assert (stats.in_flight, stats.polling) == (0, 0)
        print(dict(kinds), f"status requests per job {stats.status_requests / 1000:.2f}")


async def test_a_status_endpoint_outage_is_waited_out(fake: FakeProvider) -> None:
    """Status requests that fail with 503 are asked again later: the jobs still succeed,
    and no task is created twice."""
    fake.faults = Faults(poll_error=0.6)
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(30)]
    async with client_for(fake, "vtrix", max_in_flight=30) as client:
        outcomes = [o async for o in client.edit_many(requests)]
        stats = client.statistics()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if o.error]
    assert fake.stats.jobs_created == 30
    assert stats.status_requests > 30


async def test_submit_rate_spaces_the_creates(fake: FakeProvider) -> None:
    """submit_rate caps creates per second."""
    requests = [qe.EditRequest(images=[URL], prompt=f"e{i}") for i in range(6)]
    start = time.monotonic()
    async with client_for(fake, "dashscope", max_in_flight=6, submit_rate=10) as client:
        assert all([o.ok async for o in client.edit_many(requests)])
    assert time.monotonic() - start >= 0.45
