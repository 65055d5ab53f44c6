"""A hostile or broken provider (real servers on 127.0.0.1): echoed keys, huge and deeply
nested answers, task ids that are not path segments, requests that never left, wild hints."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

import qwen_edit_async as qe
from qwen_edit_async import cli
from qwen_edit_async._calls import Calls
from qwen_edit_async._config import ClientConfig, Secret
from qwen_edit_async._http import HttpPipe
from qwen_edit_async._redact import Redactor
from qwen_edit_async._schedule import PollSchedule
from qwen_edit_async.providers import get_provider
from qwen_edit_async.providers._task import task_segment
from qwen_edit_async.testing import FakeProvider, HostileProvider

pytestmark = pytest.mark.timeout(30)

KEY = "sk-hostile-0123456789abcdef"
URL = "https://example.com/in.png"


def client(server: Any, provider: str = "evolink", **options: Any) -> qe.QwenEditClient:
    options.setdefault("job_timeout", 10)
    return qe.QwenEditClient(provider, api_key=KEY, base_url=server.url, **options)


# -- the key a provider echoes is masked where it enters ------------------------------


async def test_a_key_echoed_in_a_401_never_reaches_the_error() -> None:
    """A 401 quoting "Bearer <key>" and the bare key: the error's text, repr, message and body
    show neither; the class is still AuthenticationError."""
    async with HostileProvider(create="echo_key") as server, client(server) as c:
        with pytest.raises(qe.AuthenticationError) as info:
            await c.edit([URL], "x")
    error = info.value
    for text in (str(error), repr(error), error.message, json.dumps(error.body)):
        assert KEY not in text
        assert "Bearer ********" in text or "********" in text
    assert "Invalid API-key provided" in error.message


def test_redactor_masks_bearer_tokens_and_keeps_json_valid() -> None:
    """Any ``Bearer`` token is masked, not only this client's key, and JSON stays JSON."""
    body = json.dumps({"message": 'auth "Bearer other-token" and sk-mine-1234'}).encode()
    masked = Redactor("sk-mine-1234").bytes(body)
    assert json.loads(masked) == {"message": 'auth "Bearer ********" and ********'}
    assert Redactor("sk-mine-1234").bytes(b'{"ok": true}') == b'{"ok": true}'


@pytest.mark.parametrize("scheme", ["BEARer", "bEaReR", "Bearer", "BEARER", "bearer"])
def test_redactor_masks_bearer_tokens_in_any_case(scheme: str) -> None:
    """The scheme is case-insensitive (RFC 7235): a relay that echoes ``BEARer <token>``
    must not get the token through, in bytes or in text."""
    redactor = Redactor("sk-mine-1234")
    body = f'{{"message": "refused {scheme} other-token-5678"}}'
    assert redactor.bytes(body.encode()) == f'{{"message": "refused {scheme} ********"}}'.encode()
    assert redactor.text(body) == f'{{"message": "refused {scheme} ********"}}'


def test_a_bulk_run_keeps_no_echoed_key_in_results_journal_or_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``qwen-edit run`` against a key-echoing provider: results.jsonl, the journal and the
    terminal output never hold the key."""
    monkeypatch.setenv("QWEN_EDIT_API_KEY", KEY)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(json.dumps({"id": f"j{i}", "images": [URL], "prompt": "x"}) for i in range(2))
        + "\n"
    )
    out = tmp_path / "out"

    async def scenario() -> int:
        async with HostileProvider(create="echo_key") as server:
            argv = ["run", str(manifest), "--out", str(out), "--provider", "evolink"]
            argv += ["--base-url", server.url, "--progress", "none"]
            return await anyio.to_thread.run_sync(cli.main, argv)

    code = anyio.run(scenario)
    assert code != 0
    captured = capsys.readouterr()
    results = (out / "results.jsonl").read_text()
    assert "AuthenticationError" in results
    journal = (out / "journal.sqlite3").read_bytes()
    for text in (results, captured.out, captured.err):
        assert KEY not in text
    assert KEY.encode() not in journal


async def test_a_completion_callback_quoting_the_key_is_masked_before_it_is_read() -> None:
    """A callback body whose failure message quotes the key: the job's error does not show
    it (the client gives the receiver its mask); a callback nested too deeply is a 400."""
    async with FakeProvider(latency=0) as fake:
        receiver = qe.CallbackReceiver("https://hooks.example.com/qe")
        c = qe.QwenEditClient("evolink", api_key=KEY, base_url=fake.url, callbacks=receiver)
        ticket = receiver._issue(c.provider, mask=c._calls.mask)
    token = ticket.url.rsplit("/", 1)[1]
    ticket.bind("task-a")
    delivered: list[Any] = []
    ticket.connect(lambda status: delivered.append(status) or True)
    deep = b'{"id": "task-a", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert receiver.receive(token, {}, deep)[0] == 400
    message = f"upstream refused Bearer {KEY} ({KEY})"
    body = json.dumps({"id": "task-a", "status": "failed", "error": {"message": message}})
    assert receiver.receive(token, {}, body.encode())[0] == 200
    error = delivered[0].error
    assert KEY not in str(error) and KEY not in json.dumps(error.body)
    assert "Bearer ********" in str(error)


# -- answers are capped, and unreadable ones are QwenEditErrors ------------------------


@pytest.mark.parametrize("where", ["create", "status"])
async def test_a_huge_answer_is_refused_at_the_cap(where: str) -> None:
    """A 64 MiB answer with no Content-Length is not read whole: a clear error naming
    max_response_bytes, after about the cap, whether it answers a create or a status."""
    hostile = {"create": "huge"} if where == "create" else {"status": "huge"}
    async with (
        HostileProvider(**hostile) as server,
        client(server, max_response_bytes=256 * 1024) as c,
    ):
        with pytest.raises(qe.TransportError, match="max_response_bytes=262144"):
            await c.edit([URL], "x")
        if where == "status":
            assert server.polled  # one status request, not retried to the job's deadline
            assert sum(server.polled.values()) == 1


async def test_an_error_answer_larger_than_the_cap_is_still_classified() -> None:
    """A 503 with a 1 MiB body is read up to the cap and is a ServerError, not a cap error."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, body=b"x" * (1024 * 1024))

    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    async with (
        _serve(app) as url,
        qe.QwenEditClient(
            "evolink", api_key=KEY, base_url=url, max_attempts=1, max_response_bytes=1024
        ) as c,
    ):
        with pytest.raises(qe.ServerError):
            await c.edit([URL], "x")


@pytest.mark.parametrize("where", ["create", "status"])
async def test_deeply_nested_json_is_a_qwen_edit_error(where: str) -> None:
    """JSON nested 100,000 deep raises a QwenEditError (uncertain for a create, a failed
    check for a status), never a bare RecursionError."""
    hostile = {"create": "deep"} if where == "create" else {"status": "deep"}
    async with HostileProvider(**hostile) as server, client(server, job_timeout=1) as c:
        with pytest.raises(qe.QwenEditError) as info:
            await c.edit([URL], "x")
    expected = qe.SubmitUncertainError if where == "create" else qe.JobTimeoutError
    assert isinstance(info.value, expected)


async def test_a_deeply_nested_error_body_keeps_its_status_class() -> None:
    """A 401 whose body is nested too deeply is still an AuthenticationError."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=401, body=b"[" * 50_000 + b"]" * 50_000)

    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    async with _serve(app) as url, qe.QwenEditClient("evolink", api_key=KEY, base_url=url) as c:
        with pytest.raises(qe.AuthenticationError):
            await c.edit([URL], "x")


# -- task ids are one URL path segment ---------------------------------------------


@pytest.mark.parametrize("bad", ["", ".", "..", "  "])
async def test_attach_refuses_ids_that_are_not_a_path_segment(bad: str) -> None:
    """attach("..") and friends: a ValidationError naming task_id, before any request."""
    async with HostileProvider() as server, client(server) as c:
        with pytest.raises(qe.ValidationError, match="task_id") as info:
            await c.attach(bad)
        assert info.value.field == "task_id"
        assert server.polled == {}


def test_task_ids_are_quoted_as_one_segment() -> None:
    """``/``, ``?`` and ``#`` are escaped for both task dialects; dots stay inside the id."""
    for name, prefix in (("evolink", "/v1/tasks/"), ("vtrix", "/model/v1/generation/task/")):
        provider = get_provider(name, base_url="http://127.0.0.1:9")
        url = provider.build_status("a/../b?c#d").url
        assert url == f"http://127.0.0.1:9{prefix}a%2F..%2Fb%3Fc%23d"
    assert task_segment("task-1.png") == "task-1.png"


async def test_a_task_id_of_dot_dot_from_a_provider_fails_the_job_clearly() -> None:
    """A create answering id ".." is not polled at ``/v1/``: the job fails with a
    ValidationError naming task_id."""
    async with HostileProvider(task_id="..") as server, client(server) as c:
        with pytest.raises(qe.ValidationError, match="task_id"):
            await c.edit([URL], "x")
        assert server.polled == {}


# -- what never left is not uncertain ------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _NoDns(aiohttp.abc.AbstractResolver):
    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        raise OSError(f"cannot resolve {host}")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("failure", ["invalid_url", "dns", "ssl", "refused"])
async def test_a_create_that_never_left_is_a_transport_error(failure: str) -> None:
    """Invalid URL, DNS failure, TLS failure, refused connection: TransportError, never
    SubmitUncertainError. An unusable URL is not retried."""
    provider = get_provider("evolink", base_url="http://127.0.0.1:9")
    connector = aiohttp.TCPConnector(resolver=_NoDns()) if failure == "dns" else None
    async with FakeProvider(latency=0) as fake:
        provider.base_url = {
            "invalid_url": "127.0.0.1:8765",  # set after the constructor's check
            "dns": "http://no-such-host.test",
            "ssl": "https" + fake.url[4:],  # TLS spoken to a plain HTTP server
            "refused": f"http://127.0.0.1:{_closed_port()}",
        }[failure]
        request = provider.build_create(qe.EditRequest(images=[URL], prompt="x"), [URL])
        async with aiohttp.ClientSession(connector=connector) as session:
            calls = Calls(provider, Secret(KEY), ClientConfig(), HttpPipe(session=session))
            await calls.pipe.open()
            with pytest.raises(qe.TransportError) as info:
                await calls.create(request)
    assert not isinstance(info.value, qe.SubmitUncertainError)
    assert "may have been" not in str(info.value)
    if failure == "invalid_url":
        assert "cannot be requested" in str(info.value)
        assert info.value.retryable is False


@pytest.mark.parametrize("bad", ["127.0.0.1:8765", "ftp://host", "http://", "http://h:port"])
def test_a_base_url_without_scheme_or_host_is_refused_by_client_and_provider(bad: str) -> None:
    """The client and get_provider refuse it with a ConfigurationError naming base_url."""
    with pytest.raises(qe.ConfigurationError, match="base_url"):
        qe.QwenEditClient("evolink", api_key=KEY, base_url=bad)
    with pytest.raises(qe.ConfigurationError, match="base_url"):
        get_provider("vtrix", base_url=bad)


def test_the_cli_refuses_a_base_url_without_scheme_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--base-url 127.0.0.1:8765``: a clear error, exit 2, no job marked uncertain."""
    monkeypatch.setenv("QWEN_EDIT_API_KEY", KEY)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "images": [URL], "prompt": "x"}) + "\n")
    out = tmp_path / "out"
    argv = ["run", str(manifest), "--out", str(out), "--provider", "vtrix"]
    code = cli.main([*argv, "--base-url", "127.0.0.1:8765", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert "base_url" in err and "http://" in err
    results = out / "results.jsonl"
    assert not results.exists() or "uncertain" not in results.read_text()


# -- hints are clamped; no interval exceeds poll_max_interval --------------------------


@pytest.mark.parametrize("hint", [4000.0, 1e308, 1e-300])
@pytest.mark.parametrize("recheck", [False, True])
def test_no_poll_interval_exceeds_the_cap_whatever_the_hint(hint: float, recheck: bool) -> None:
    """First check and every later interval are at most max_interval, also after recheck."""
    schedule = PollSchedule(initial=1.0, max_interval=2.0, recheck=recheck, rng=random.Random(0))
    for _ in range(40):
        plan = schedule.plan(hint)
        previous = 0.0
        for attempt in range(8):
            due = plan.at(attempt)
            when = plan.recheck(attempt, due)
            while when > due + 1e-3:  # the poller asks again when the new time comes
                due, when = when, plan.recheck(attempt, when)
            assert 0 < due - previous <= 2.0 + 1e-9, (attempt, previous, due)
            schedule.observe(plan, attempt, done=False, elapsed=due)
            previous = due


async def test_a_task_hinting_hours_is_checked_within_poll_max_interval() -> None:
    """estimated_time=4000 with poll_max_interval=0.3: the finished task is collected at
    once, not after the job's deadline."""
    async with (
        HostileProvider(estimated_time=4000) as server,
        client(server, poll_max_interval=0.3, job_timeout=5) as c,
    ):
        started = time.monotonic()
        result = await c.edit([URL], "x")
    assert result.images and time.monotonic() - started < 3


# -- helpers -------------------------------------------------------------------------------


class _serve:
    """Serve ``app`` on 127.0.0.1; yields its root URL."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)

    async def __aenter__(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
