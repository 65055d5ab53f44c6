"""Every dialect in ``PROVIDERS`` holds to one contract.

Each check is a plain function over a provider object, run here for every registered dialect
(and, in ``test_dialect_sixth.py``, for a throwaway sixth one): its paths, its auth header, its
request-id header, the class of every error code it declares, its status words (and an
unknown one), a success without images, and request bodies without nulls. Then the fake's
side: the fake speaks the dialect at the same paths, each of its refusals reads as the right
class, and an edit, a moderated edit and an empty balance go end to end. A new dialect that
forgets one of these fails here, naming what it forgot.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import qwen_edit_async as qe
from qwen_edit_async.providers import PROVIDERS, Provider
from tests._dialect_contract import (
    CHECKS,
    FAKE_CHECKS,
    check_round_trip,
    check_unknown_status_word,
    dialect,
)

# -- over the registry ---------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_dialect_keeps_the_contract(name: str, check: Callable[[Provider], None]) -> None:
    """The registered dialect passes the check named in the test id."""
    check(dialect(name))


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_every_task_dialect_logs_an_unknown_status_word_once(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown status word keeps the task running and is logged once per word."""
    check_unknown_status_word(dialect(name), caplog)


@pytest.mark.parametrize("check", FAKE_CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_the_fake_speaks_every_dialect(name: str, check: Callable[[str], None]) -> None:
    """The fake side of the registered dialect passes the check named in the test id."""
    check(name)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_every_dialect_round_trips_through_the_fake(name: str) -> None:
    """An edit, a moderated edit and an empty balance end as they should, end to end."""
    await check_round_trip(name)


def test_an_undeclared_moderation_code_is_not_moderation() -> None:
    """The dialect's declaration is what decides: a code no dialect declares stays a plain
    bad request, and the same code declared by a dialect becomes moderation (what the
    conformance checks above rely on)."""
    from qwen_edit_async._error_map import ErrorCodes, api_error

    plain = api_error(provider="p", status=400, code="nsfw_blocked", message="m")
    declared = api_error(
        provider="p",
        status=400,
        code="NSFW_BLOCKED",
        message="m",
        codes=ErrorCodes(content_filter=frozenset({"nsfw_blocked"})),
    )
    assert type(plain) is qe.BadRequestError and type(declared) is qe.ContentFilterError
