"""A sixth provider is one dialect module, one registry line and its routes in the fake.

"Kiln" is made up for this test: a task provider with its own paths, body, status words
(``proofing``, ``baking``, ``baked``, ``burnt``), error codes (its moderation code among them,
sent under a plain 400 and in words that say nothing of moderation) and answer shape. Below
are its client dialect and its fake dialect; the ``kiln`` fixture adds one line to
``PROVIDERS`` and one to the fake's ``FAKE_DIALECTS``, nothing else, and the whole
conformance suite passes, end to end included.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest

import qwen_edit_async as qe
from qwen_edit_async._error_map import NO_CODES, ErrorCodes
from qwen_edit_async._models import EditRequest, GeneratedImage
from qwen_edit_async.providers import PROVIDERS, HttpRequest, Provider, get_provider
from qwen_edit_async.providers._task import TaskBody, TaskProvider, task_words
from qwen_edit_async.providers._wire import (
    ENCODER,
    JSON_HEADERS,
    WireRequest,
    WireResponse,
    size_text,
)
from qwen_edit_async.testing import FakeProvider
from qwen_edit_async.testing._fake_dialects import FAKE_DIALECTS, FakeDialect, Urls
from qwen_edit_async.testing._faults import Faults
from qwen_edit_async.testing._jobs import Job
from qwen_edit_async.testing._problems import Kind, Problem
from qwen_edit_async.testing._validate import EditSpec, ImageLookup, parse_flat
from tests._dialect_contract import (
    BASE,
    CHECKS,
    FAKE_CHECKS,
    check_round_trip,
    check_unknown_status_word,
)

# -- the client dialect (what would be qwen_edit_async/providers/_kiln.py) ------------------


class _KilnBody(WireRequest, kw_only=True):
    model: str
    recipe: str
    pictures: list[str]
    n: int | None = None
    size: str | None = None
    avoid: str | None = None
    seed: int | None = None


class _Loaf(WireResponse):
    href: str | None = None


class _KilnTask(TaskBody):
    loaves: list[_Loaf] | None = None


class Kiln(TaskProvider[_KilnTask]):
    """Kiln: ``POST /kiln/v2/batches``, poll ``GET /kiln/v2/batches/{id}``."""

    name = "kiln"
    default_base_url = "https://api.kiln.invalid"
    env_var = "KILN_API_KEY"
    create_path = "/kiln/v2/batches"
    status_path = "/kiln/v2/batches/{task_id}"
    error_codes = ErrorCodes(
        content_filter=frozenset({"kiln.unfit_to_bake"}),
        quota=frozenset({"kiln.no_flour"}),
        throttling=frozenset({"kiln.oven_busy"}),
        auth=frozenset({"kiln.who_are_you"}),
        server=frozenset({"kiln.oven_fire"}),
        not_found=frozenset({"kiln.no_such_batch"}),
        transient=frozenset({"kiln.oven_cold"}),
    )
    status_words = task_words(
        pending=["proofing"], running=["baking"], succeeded=["baked"], failed=["burnt"]
    )
    task_body = _KilnTask

    def build_create(
        self, request: EditRequest, images: list[str], *, model: str | None = None
    ) -> HttpRequest:
        body = _KilnBody(
            model=self.wire_model(model),
            recipe=request.prompt,
            pictures=images,
            n=request.n,
            size=size_text(request, "x"),
            avoid=request.negative_prompt,
            seed=request.seed,
        )
        url = self.base_url + self.create_path
        return HttpRequest("POST", url, ENCODER.encode(body), JSON_HEADERS)

    def result_images(self, task: _KilnTask) -> list[GeneratedImage]:
        return [GeneratedImage(url=loaf.href) for loaf in task.loaves or () if loaf.href]


# -- its fake dialect (what would be its routes in qwen_edit_async/testing/) ---------------

_KILN_ERRORS: dict[Kind, tuple[int, str]] = {
    "auth": (401, "kiln.who_are_you"),
    "async_refused": (403, "kiln.not_allowed"),
    "rate_limit": (429, "kiln.oven_busy"),
    "concurrency": (429, "kiln.oven_busy"),
    "rate_quota": (429, "kiln.oven_busy"),
    "server_error": (500, "kiln.oven_fire"),
    "generation_failed": (500, "kiln.oven_fire"),
    "poll_error": (503, "kiln.oven_fire"),
    "not_found": (404, "kiln.no_such_batch"),
    "too_large": (413, "kiln.bad_dough"),
    # Both under a plain 400, in words that say nothing: only the code tells.
    "content_filter": (400, "kiln.unfit_to_bake"),
    "quota": (400, "kiln.no_flour"),
}
_KILN_WORDS = {"content_filter": "The batch was sent back.", "quota": "See the front desk."}


class KilnFake(FakeDialect):
    name = "kiln"
    providers = ("kiln",)
    create_path = Kiln.create_path
    status_path = Kiln.status_path

    def parse(self, body: Any, lookup: ImageLookup) -> EditSpec:
        if not isinstance(body, dict):
            raise Problem("bad_json", "not a batch")
        flat = {k: v for k, v in body.items() if k not in ("recipe", "pictures", "avoid")}
        flat.update(prompt=body.get("recipe"), image_urls=body.get("pictures"))
        return parse_flat(flat, lookup=lookup)

    def error(self, problem: Problem, request_id: str, faults: Faults) -> tuple[int, Any]:
        status, code = _KILN_ERRORS.get(problem.kind, (400, "kiln.bad_dough"))
        message = _KILN_WORDS.get(problem.kind, problem.message)
        body = {"code": code, "message": message, "request_id": request_id}
        return problem.status or status, body

    def job_id(self, serial: int, rng: random.Random, request_id: str) -> str:
        return f"batch-{serial:05d}"

    def created(self, job: Job, estimated_time: int | None) -> Any:
        return {"id": job.id, "status": "proofing"}

    def task(
        self, job: Job, now: float, urls: Urls, faults: Faults, estimated_time: int | None
    ) -> tuple[Any, bool]:
        phase = job.phase(now)
        if phase == "succeeded":
            loaves = [{"href": url} for url in urls(job)]
            return {"id": job.id, "status": "baked", "loaves": loaves}, True
        if phase == "failed":
            code = "kiln.unfit_to_bake" if job.outcome == "content_filter" else "kiln.collapsed"
            error = {"code": job.fail_code or code, "message": "The batch did not rise."}
            return {"id": job.id, "status": "burnt", "error": error}, True
        return {"id": job.id, "status": "proofing" if phase == "pending" else "baking"}, False


# -- the two registry lines, and the suite ---------------------------------------------------


@pytest.fixture
def kiln(monkeypatch: pytest.MonkeyPatch) -> Iterator[Provider]:
    """Kiln registered for this test only: one line in each registry."""
    monkeypatch.setitem(PROVIDERS, "kiln", Kiln)
    monkeypatch.setitem(FAKE_DIALECTS, "kiln", KilnFake())
    yield get_provider("kiln", base_url=BASE)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_kiln_keeps_the_dialect_contract(kiln: Provider, check: Callable[[Provider], None]) -> None:
    """The sixth dialect passes the check named in the test id."""
    check(kiln)


def test_kiln_logs_an_unknown_status_word_once(
    kiln: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """An undeclared status word keeps a Kiln task running and is logged once."""
    check_unknown_status_word(kiln, caplog)


@pytest.mark.parametrize("check", FAKE_CHECKS, ids=lambda check: check.__name__)
def test_the_fake_speaks_kiln(kiln: Provider, check: Callable[[str], None]) -> None:
    """The fake's side of the sixth dialect passes the check named in the test id."""
    check("kiln")


async def test_kiln_round_trips_through_the_fake(kiln: Provider) -> None:
    """By its registry name: an edit, a moderated task, an empty balance, an unknown task."""
    await check_round_trip("kiln")


def test_kilns_own_moderation_code_is_what_makes_it_moderation(kiln: Provider) -> None:
    """Kiln's moderation comes as a plain 400 with words that say nothing: its declared code
    makes it a ContentFilterError; the same dialect without the declaration would call it a
    plain bad request (what happened to an undeclared code before)."""
    answer = msgspec.json.encode({"code": "kiln.unfit_to_bake", "message": "Sent back."})
    assert type(kiln.parse_error(400, {}, answer)) is qe.ContentFilterError
    undeclared = type("Undeclared", (Kiln,), {"error_codes": NO_CODES})(base_url=BASE)
    assert type(undeclared.parse_error(400, {}, answer)) is qe.BadRequestError
    failed = {
        "id": "b-1",
        "status": "BURNT",
        "error": {"code": "kiln.unfit_to_bake", "message": "The batch did not rise."},
    }
    status = kiln.parse_status("b-1", 200, {}, msgspec.json.encode(failed))
    assert isinstance(status.error, qe.ContentFilterError) and status.error.task_id == "b-1"


class _RestingKilnFake(KilnFake):
    """Kiln answering a word its dialect does not declare to the first two status requests."""

    def task(
        self, job: Job, now: float, urls: Urls, faults: Faults, estimated_time: int | None
    ) -> tuple[Any, bool]:
        if job.polls <= 2:
            return {"id": job.id, "status": "resting"}, False
        return super().task(job, now, urls, faults, estimated_time)


async def test_an_undeclared_word_keeps_the_task_checked_until_it_ends(
    kiln: Provider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While the provider answers a word the dialect does not know, the client keeps checking
    the task (and logs the word once); the edit ends when the task does."""
    monkeypatch.setitem(FAKE_DIALECTS, "kiln", _RestingKilnFake())
    async with FakeProvider(api_key="k", latency=0.05, estimated_time=None) as fake:
        options: Any = {"poll_initial": 0.02, "poll_max_interval": 0.05}
        async with qe.QwenEditClient("kiln", api_key="k", base_url=fake.url, **options) as client:
            with caplog.at_level(logging.WARNING, logger="qwen_edit_async"):
                result = await client.edit(["https://example.com/a.png"], "Bake it")
        job = next(iter(fake.stats.jobs.values()))
    assert len(result.images) == 1
    assert job.polls >= 3, "the task was checked again after the unknown word"
    logged = [r for r in caplog.records if "'resting'" in r.getMessage()]
    assert len(logged) == 1
