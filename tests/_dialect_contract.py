"""The dialect contract: checks over one dialect, and over the fake's side of it.

Run for every registered dialect by ``test_dialect_conformance.py`` and for a throwaway
sixth one by ``test_dialect_sixth.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

import qwen_edit_async as qe
from qwen_edit_async._models import EditRequest
from qwen_edit_async.providers import Provider, TaskState, get_provider
from qwen_edit_async.testing import FakeProvider
from qwen_edit_async.testing._dialects import FAILURE_MESSAGES
from qwen_edit_async.testing._fake_dialects import FAKE_DIALECTS, FakeDialect
from qwen_edit_async.testing._faults import Faults
from qwen_edit_async.testing._problems import Kind, Problem
from qwen_edit_async.testing._quota import RATE_MESSAGE

BASE = "http://127.0.0.1:8000"
MINIMAL = EditRequest(images=["https://e.com/a.png"], prompt="Make it snow")
FULL = EditRequest(
    images=["https://e.com/a.png", "https://e.com/b.png"],
    prompt="Put the cat from image 1 on the sofa from image 2",
    negative_prompt="blurry",
    n=1,
    size="1024*1536",
    prompt_extend=False,
    watermark=False,
    seed=7,
)

#: The class each declared kind of code must become, most telling kind first: a code in two
#: kinds (DashScope's ``InternalError`` is a server error and a transient task failure) is
#: held to the first.
KIND_CLASSES: list[tuple[str, type[qe.APIError]]] = [
    ("content_filter", qe.ContentFilterError),
    ("quota", qe.InsufficientQuotaError),
    ("auth", qe.AuthenticationError),
    ("throttling", qe.RateLimitError),
    ("server", qe.ServerError),
]


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def dialect(name: str) -> Provider:
    """The registered dialect ``name`` on a loopback base URL."""
    return get_provider(name, base_url=BASE)


# -- the checks ----------------------------------------------------------------------------


def check_paths(provider: Provider) -> None:
    """Creates go to ``base_url + create_path``; task statuses to ``status_path`` with the id
    as one quoted segment; a sync dialect has no status request."""
    assert provider.create_path.startswith("/"), "create_path must start with '/'"
    request = provider.build_create(MINIMAL, list(MINIMAL.images))
    assert request.method == "POST"
    assert request.url == BASE + provider.create_path
    if not provider.is_task:
        assert provider.status_path is None
        with pytest.raises(NotImplementedError):
            provider.build_status("t-1")
        return
    assert provider.status_path is not None and "{task_id}" in provider.status_path
    status = provider.build_status("t-1/x")
    assert status.method == "GET" and status.body is None
    assert status.url == BASE + provider.status_path.format(task_id="t-1%2Fx")


def check_auth(provider: Provider) -> None:
    """The key goes in the declared header, after the declared scheme, and nowhere else."""
    headers = provider.authorization("sk-secret")
    assert list(headers) == [provider.auth_header]
    expected = "sk-secret" if provider.auth_scheme is None else f"{provider.auth_scheme} sk-secret"
    assert headers[provider.auth_header] == expected
    request = provider.build_create(MINIMAL, list(MINIMAL.images))
    assert b"sk-secret" not in (request.body or b"")
    assert "sk-secret" not in str(dict(request.headers))


def check_request_id_header(provider: Provider) -> None:
    """An error answer's request id is read from each declared header."""
    assert provider.request_id_headers, "request_id_headers must name at least one header"
    for name in provider.request_id_headers:
        error = provider.parse_error(400, {name: "rid-1"}, encode({"message": "no"}))
        assert error.request_id == "rid-1", name


def check_error_codes(provider: Provider) -> None:
    """Every declared code becomes its kind's class, whatever the status (here a plain 400),
    in the flat and in OpenAI's nested shape; unknown task ids and transient task failures
    are what they are declared to be."""
    codes = provider.error_codes
    seen: set[str] = set()
    for kind, cls in KIND_CLASSES:
        for code in sorted(getattr(codes, kind) - seen):
            seen.add(code)
            for body in ({"code": code, "message": "m"}, {"error": {"code": code, "message": "m"}}):
                error = provider.parse_error(400, {}, encode(body))
                assert type(error) is cls, f"{kind} code {code!r} became {type(error).__name__}"
                assert error.code == code and error.provider == provider.name
    for code in sorted(codes.free_quota_or_throttling):
        free = provider.parse_error(429, {}, encode({"code": code, "message": "Free quota gone"}))
        busy = provider.parse_error(429, {}, encode({"code": code, "message": "Slow down"}))
        assert type(free) is qe.InsufficientQuotaError and type(busy) is qe.RateLimitError
    for code in sorted(codes.not_found - seen):
        error = provider.parse_error(400, {}, encode({"code": code, "message": "m"}), task_id="t")
        assert type(error) is qe.TaskNotFoundError, code


def check_status_errors(provider: Provider) -> None:
    """Without a telling code, the status decides, the same for every dialect."""
    expected = {
        400: qe.BadRequestError,
        401: qe.AuthenticationError,
        402: qe.InsufficientQuotaError,
        403: qe.PermissionDeniedError,
        408: qe.ServerError,
        429: qe.RateLimitError,
        500: qe.ServerError,
        503: qe.ServerError,
    }
    for status, cls in expected.items():
        error = provider.parse_error(status, {"Retry-After": "3"}, encode({"message": "m"}))
        assert type(error) is cls, status
        assert error.status == status and error.retry_after == 3.0
    unknown = provider.parse_error(404, {}, encode({"message": "m"}), task_id="t-9")
    assert type(unknown) is qe.TaskNotFoundError and unknown.task_id == "t-9"
    html = provider.parse_error(502, {}, b"<html>Bad gateway</html>")
    assert type(html) is qe.ServerError and "Bad gateway" in html.message


def _task_answer(word: str) -> bytes:
    return encode({"id": "t-1", "status": word})


def check_status_words(provider: Provider) -> None:
    """Each declared status word, any case, reads as its state; a task declares a word for
    every state."""
    if not provider.is_task:
        return
    words: Any = getattr(provider, "status_words", None)
    assert words, "a task dialect declares status_words"
    assert set(words.values()) == set(TaskState), "a word for every state"
    for word, state in words.items():
        for spelled in (word, word.upper()):
            status = provider.parse_status("t-1", 200, {}, _task_answer(spelled))
            assert status.state is state, spelled
            if state is TaskState.FAILED:
                assert isinstance(status.error, qe.QwenEditError) and status.error.task_id == "t-1"


def check_unknown_status_word(provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    """A word the dialect does not declare is running (the task keeps being checked) and is
    logged once, however often it is answered."""
    if not provider.is_task:
        return
    word = f"warming-up-{provider.name}"
    with caplog.at_level(logging.WARNING, logger="qwen_edit_async"):
        states = [provider.parse_status("t-1", 200, {}, _task_answer(word)).state for _ in range(3)]
    assert states == [TaskState.RUNNING] * 3
    logged = [r for r in caplog.records if word in r.getMessage()]
    assert len(logged) == 1 and provider.name in logged[0].getMessage()


def check_success_without_image(provider: Provider) -> None:
    """A success that lists no image is a failed job (never an unreadable answer, never a
    result with nothing in it)."""
    if not provider.is_task:
        with pytest.raises(qe.JobFailedError, match="without any result image"):
            provider.parse_create(200, {}, b"{}")
        return
    words: Any = getattr(provider, "status_words", {})
    done = next(word for word, state in words.items() if state is TaskState.SUCCEEDED)
    status = provider.parse_status("t-1", 200, {}, _task_answer(done))
    assert status.result is None and isinstance(status.error, qe.JobFailedError)


def _nulls(value: Any, where: str = "body") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _nulls(v, f"{where}[{i}]")]
    return []


def check_bodies_without_nulls(provider: Provider) -> None:
    """Fields the user did not set are left out, never sent as null; the prompt is sent."""
    for request in (MINIMAL, FULL):
        built = provider.build_create(request, list(request.images))
        body = msgspec.json.decode(built.body or b"null")
        assert _nulls(body) == [], _nulls(body)
        assert request.prompt in (built.body or b"").decode()


CHECKS: list[Callable[[Provider], None]] = [
    check_paths,
    check_auth,
    check_request_id_header,
    check_error_codes,
    check_status_errors,
    check_status_words,
    check_success_without_image,
    check_bodies_without_nulls,
]


# -- the fake's side ------------------------------------------------------------------------

KEY = "sk-conformance"
IMAGE = "https://example.com/a.png"
REFUSED = "The request was refused."
#: Each refusal of the fake, the message it says it with, and the class it must read as.
PROBLEMS: list[tuple[Kind, str, type[qe.APIError]]] = [
    ("invalid", REFUSED, qe.BadRequestError),
    ("bad_json", REFUSED, qe.BadRequestError),
    ("empty_model", REFUSED, qe.BadRequestError),
    ("empty_input", REFUSED, qe.BadRequestError),
    ("unknown_model", REFUSED, qe.BadRequestError),
    ("bad_url", REFUSED, qe.BadRequestError),
    ("download_failed", REFUSED, qe.BadRequestError),
    ("unsupported_format", REFUSED, qe.BadRequestError),
    ("too_large", REFUSED, qe.BadRequestError),
    ("auth", "Invalid API-key provided.", qe.AuthenticationError),
    ("async_refused", REFUSED, qe.PermissionDeniedError),
    ("rate_limit", RATE_MESSAGE, qe.RateLimitError),
    ("concurrency", "Too many concurrent tasks: at most 2 may run at once.", qe.RateLimitError),
    ("rate_quota", RATE_MESSAGE, qe.RateLimitError),
    ("server_error", REFUSED, qe.ServerError),
    ("content_filter", FAILURE_MESSAGES["content_filter"], qe.ContentFilterError),
    ("quota", FAILURE_MESSAGES["quota"], qe.InsufficientQuotaError),
    ("generation_failed", FAILURE_MESSAGES["fail"], qe.ServerError),
    ("poll_error", REFUSED, qe.ServerError),
    ("not_found", REFUSED, qe.TaskNotFoundError),
]


def fake_dialect_for(name: str) -> FakeDialect:
    """The one fake dialect that answers the client dialect ``name``."""
    speakers = [d for d in FAKE_DIALECTS.values() if name in d.providers]
    assert len(speakers) == 1, f"the fake needs one FakeDialect listing {name!r} in providers"
    return speakers[0]


def check_fake_paths(name: str) -> None:
    """The fake answers the dialect at the dialect's own paths, in the same mode."""
    provider, speaker = dialect(name), fake_dialect_for(name)
    assert speaker.create_path == provider.create_path
    assert speaker.status_path == provider.status_path
    assert speaker.sync is not provider.is_task
    assert (speaker.auth_header, speaker.auth_scheme) == (
        provider.auth_header,
        provider.auth_scheme,
    ), "the fake reads the key where the dialect sends it"


#: The fake's answer modes that change error bodies: plain, through a relay that drops the
#: upstream code, and Evolink's older integer codes.
FAULT_MODES = [Faults(), Faults(relay=True), Faults(evolink_int_codes=True)]


def check_fake_refusals(name: str) -> None:
    """Each refusal of the fake, in the dialect's shape (plain, relayed, integer codes),
    reads as its class and keeps the request id."""
    provider, speaker = dialect(name), fake_dialect_for(name)
    for faults in FAULT_MODES:
        for kind, message, cls in PROBLEMS:
            status, body = speaker.error(Problem(kind, message), "rid-7", faults)
            task_id = "t-1" if kind == "not_found" else None
            headers = {"X-Request-Id": "rid-7"}
            error = provider.parse_error(status, headers, encode(body), task_id=task_id)
            assert type(error) is cls, f"{kind}: {type(error).__name__} from {status} {body}"
            assert error.request_id == "rid-7"


async def check_round_trip(name: str) -> None:
    """Against the fake: an edit of two images, a moderated edit (inside the task for a task
    dialect), an empty balance, and (task dialects) attaching to an unknown task."""
    provider = dialect(name)
    async with FakeProvider(api_key=KEY, latency=0.01, estimated_time=None) as fake:
        async with qe.QwenEditClient(name, api_key=KEY, base_url=fake.url) as client:  # type: ignore[arg-type]
            result = await client.edit([IMAGE], "Make it snow", n=2)
            assert len(result.images) == 2 and result.provider == name
            fake.script("content_filter")
            with pytest.raises(qe.ContentFilterError) as moderated:
                await client.edit([IMAGE], "Make it snow")
            assert (moderated.value.task_id is not None) is provider.is_task
            fake.script("quota")
            with pytest.raises(qe.InsufficientQuotaError):
                await client.edit([IMAGE], "Make it snow")
            if provider.is_task:
                with pytest.raises(qe.TaskNotFoundError):
                    await client.attach("no-such-task")
        # Moderation fails a task (billed as created) but refuses a sync create; an empty
        # balance is refused before any job.
        assert fake.stats.jobs_created == (2 if provider.is_task else 1)


FAKE_CHECKS: list[Callable[[str], None]] = [check_fake_paths, check_fake_refusals]
