"""Fault injection: what can go wrong with a create request, and how it is chosen.

Each create request that passes the API key check gets one :class:`Decision`: the next
entry of the script if any is queued, else one independent draw per non-zero probability
of :class:`Faults`, in the order of ``_DRAW_ORDER``. When that decision is ``ok``, magic
words in the prompt may still force an outcome.
"""

from __future__ import annotations

import math
import random
import re
from typing import Literal, NamedTuple

import msgspec

from ._relay import REFUSALS

__all__ = ["OUTCOMES", "SCRIPT_WORDS", "Decision", "Faults", "draw", "parse_script", "prompt_magic"]


class Faults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Probabilities of faults, each drawn independently per create request.

    Example::

        fake.faults = Faults(rate_limit=0.1, retry_after=2, drop_after_accept=0.01)

    Fields (probabilities are 0.0-1.0):

    - ``rate_limit``: answer 429 with a ``Retry-After: <retry_after>`` header; no job.
    - ``server_error``: answer ``server_status`` (500, 502, 503...) in the dialect's shape; no job.
    - ``drop_before_accept``: close the connection without answering; no job.
    - ``drop_after_accept``: create (and bill) the job, then close without answering.
    - ``malformed``: create the job, then answer 200 with a body that is not valid JSON.
    - ``content_filter``: moderation refuses the input (sync dialects at submission, task
      dialects as a failed task).
    - ``quota``: the account is out of funds, refused at submission in every dialect
      (DashScope ``Arrearage``, Evolink 402 ``quota_exceeded``, Vtrix 403
      ``{"error": "insufficient balance"}``). Evolink's task-level ``quota_exceeded`` ("retry
      later") is ``fail_code="quota_exceeded"``.
    - ``fail_task``: generation fails (code ``fail_code`` or the dialect's default).
    - ``stuck``: the job never finishes (a sync request is held until the client gives up).
    - ``poll_error``: a task status request answers 503 (status requests only).
    - ``vtrix_error_form``: which of Vtrix's three documented ``error`` forms failed tasks use.
    - ``evolink_int_codes``: Evolink HTTP errors carry the integer status as ``code``
      (as in its older docs) instead of a string.

    Completion callbacks (Evolink tasks with a loopback ``callback_url``):

    - ``callback_drop``: the callback is never sent (probability).
    - ``callback_delay``: seconds between the task's end and the first attempt.
    - ``callback_duplicate``: the callback is delivered twice (probability).
    - ``callback_out_of_order``: held back until the next callback has gone (probability).
    - ``callback_timeout``, ``callback_retries``, ``callback_retry_base``: each attempt's
      timeout, and the retries after a non-2xx answer or a failed connection, waiting
      ``callback_retry_base`` seconds and doubling (Evolink: 10 s, 3, 1 s: 1/2/4 s).
    - ``relay``: ModelStream and OneToken answer as a new-api relay in front of DashScope:
      ``"b64_json": ""`` beside every url, one ``data[]`` entry per DashScope choice (so an
      n=2 edit lists one image) with the raw answer under ``metadata``, and upstream errors
      recoded ``relay_code`` (``None``: no code), status and message kept.
    - ``results_delay``: seconds an Evolink task reports ``completed`` (progress below 100,
      ``results`` null) before its results are attached.
    - ``vtrix_item_type``: the ``type`` of Vtrix result items; ``"image_url"`` writes them
      ``{"type": "image_url", "image_url": {"url": ...}}``.

    The script word ``refuse:NAME`` answers a create with a real refusal (see
    ``REFUSALS``: ``free_tier_only``, ``free_tier_only_400``, ``ip_infringement``,
    ``free_quota_exceeded``, ``allocated_quota``, ``burst``, ``arrearage``).
    """

    rate_limit: float = 0.0
    retry_after: int = 1
    server_error: float = 0.0
    server_status: int = 500
    drop_before_accept: float = 0.0
    drop_after_accept: float = 0.0
    malformed: float = 0.0
    content_filter: float = 0.0
    quota: float = 0.0
    fail_task: float = 0.0
    fail_code: str | None = None
    stuck: float = 0.0
    poll_error: float = 0.0
    vtrix_error_form: Literal["str_code", "int_code", "string"] = "str_code"
    evolink_int_codes: bool = False
    callback_drop: float = 0.0
    callback_delay: float = 0.0
    callback_duplicate: float = 0.0
    callback_out_of_order: float = 0.0
    callback_timeout: float = 10.0
    callback_retries: int = 3
    callback_retry_base: float = 1.0
    relay: bool = False
    relay_code: str | None = "bad_response_status_code"
    results_delay: float = 0.0
    vtrix_item_type: Literal["image", "image_url"] = "image"

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], got {value!r}")
        if not 500 <= self.server_status <= 599:
            raise ValueError(f"Faults.server_status must be 5xx, got {self.server_status!r}")
        if self.retry_after < 0:
            raise ValueError("Faults.retry_after must be >= 0")
        for name in ("callback_delay", "callback_retry_base", "callback_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"Faults.{name} must be >= 0")
        if self.callback_timeout <= 0:
            raise ValueError("Faults.callback_timeout must be > 0")
        if not (0.0 <= self.results_delay < math.inf):
            raise ValueError("Faults.results_delay must be a finite number of seconds >= 0")


class Decision(NamedTuple):
    """The fate of one create request: an outcome word and its optional argument."""

    kind: str
    arg: str | None = None


#: Outcomes of an accepted job (not transport faults).
OUTCOMES = frozenset({"ok", "fail", "content_filter", "quota", "stuck"})

#: Words accepted by ``FakeProvider.script``; ``word:arg`` passes an argument
#: (``rate_limit:5`` = Retry-After 5 s, ``server_error:503``, ``fail:generation_timeout``,
#: ``refuse:free_tier_only``).
SCRIPT_WORDS = frozenset(
    {"rate_limit", "server_error", "drop_before_accept", "drop_after_accept", "malformed"}
    | {"refuse"}
    | OUTCOMES
)
_ALIASES = {"fail_task": "fail", "filter": "content_filter", "ok": "ok"}

_DRAW_ORDER: tuple[tuple[str, str], ...] = (
    ("drop_before_accept", "drop_before_accept"),
    ("rate_limit", "rate_limit"),
    ("server_error", "server_error"),
    ("drop_after_accept", "drop_after_accept"),
    ("malformed", "malformed"),
    ("content_filter", "content_filter"),
    ("quota", "quota"),
    ("fail_task", "fail"),
    ("stuck", "stuck"),
)
_PROBABILITIES = (
    *(field for field, _ in _DRAW_ORDER),
    "poll_error",
    "callback_drop",
    "callback_duplicate",
    "callback_out_of_order",
)

OK = Decision("ok")


def parse_script(words: tuple[str, ...]) -> list[Decision]:
    """Turn ``("rate_limit:2", "ok")`` into decisions; unknown words raise ``ValueError``."""
    out: list[Decision] = []
    for word in words:
        name, _, arg = word.partition(":")
        name = _ALIASES.get(name, name)
        if name not in SCRIPT_WORDS:
            known = ", ".join(sorted(SCRIPT_WORDS))
            raise ValueError(f"unknown script word {word!r}; known: {known}")
        if name == "rate_limit" and arg:
            _check_number(word, arg, integer=True)
        if name == "refuse" and arg not in REFUSALS:
            known = ", ".join(sorted(REFUSALS))
            raise ValueError(f"{word!r}: refuse takes one of {known}")
        if name == "server_error" and arg:
            _check_number(word, arg, integer=True)
            if not 500 <= int(arg) <= 599:
                raise ValueError(f"{word!r}: server_error takes a 5xx status")
        out.append(Decision(name, arg or None))
    return out


def _check_number(word: str, arg: str, *, integer: bool) -> None:
    try:
        value = int(arg) if integer else float(arg)
    except ValueError:
        raise ValueError(f"{word!r}: {arg!r} is not a number") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"{word!r}: {arg!r} must be >= 0")


def draw(faults: Faults, rng: random.Random) -> Decision:
    """One independent draw per non-zero probability, first hit wins."""
    for field, kind in _DRAW_ORDER:
        p = getattr(faults, field)
        if p > 0.0 and rng.random() < p:
            return Decision(kind)
    return OK


_MAGIC = re.compile(r"\[(fail|filter|quota|stuck)(?::([A-Za-z0-9_.\-]+))?\]")
_MAGIC_KIND = {"fail": "fail", "filter": "content_filter", "quota": "quota", "stuck": "stuck"}


def prompt_magic(prompt: str) -> Decision | None:
    """``[fail]``, ``[fail:CODE]``, ``[filter]``, ``[quota]`` or ``[stuck]`` in a prompt."""
    if "[" not in prompt:
        return None
    match = _MAGIC.search(prompt)
    if match is None:
        return None
    return Decision(_MAGIC_KIND[match.group(1)], match.group(2))
