"""Answers captured from real gateways and providers, for the fake to give on demand.

- A *relay* (the open-source new-api and its forks, which OpenAI-shaped gateways run) in
  front of DashScope: every image carries ``"b64_json": ""`` beside its ``url`` (no
  omit-empty), ``data[]`` has one entry per DashScope *choice* (DashScope puts all n images in
  one), the raw DashScope answer is kept under ``metadata``, and upstream errors lose their
  code (``"bad_response_status_code"`` or none) but keep their status and message. Switched
  on with ``Faults(relay=True)``; ``Faults(relay_code=None)`` drops the code altogether.
- Refusals with DashScope's own codes and texts (free tier exhausted, IP infringement, the
  two meanings of ``Throttling.AllocationQuota``, the burst guard, arrears): the script word
  ``refuse:NAME`` answers the next create with one. Vtrix's 403 ``{"error": "insufficient
  balance", "message": "Forbidden"}`` is its answer to the ``quota`` fault.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._jobs import Job

__all__ = ["REFUSALS", "Refusal", "relay_error", "relay_success", "vtrix_balance_body"]


class Refusal(NamedTuple):
    """A real refusal: HTTP status, DashScope's code and the message as it writes it."""

    status: int
    code: str
    message: str


#: Names for ``refuse:NAME``.
REFUSALS: dict[str, Refusal] = {
    "free_tier_only": Refusal(
        403,
        "AllocationQuota.FreeTierOnly",
        "The free quota has been exhausted. To continue, please enable paid usage in the console.",
    ),
    "free_tier_only_400": Refusal(
        400,
        "AllocationQuota.FreeTierOnly",
        "The free quota has been exhausted. To continue, please enable paid usage in the console.",
    ),
    "ip_infringement": Refusal(
        400,
        "IPInfringementSuspect",
        "Input data is suspected of being involved in IP infringement.",
    ),
    "free_quota_exceeded": Refusal(
        429, "Throttling.AllocationQuota", "Free allocated quota exceeded."
    ),
    "allocated_quota": Refusal(
        429,
        "Throttling.AllocationQuota",
        "Allocated quota exceeded, please increase your quota limit.",
    ),
    "burst": Refusal(
        429,
        "Throttling.BurstRate",
        "Request rate increased too quickly. To ensure system stability, please adjust "
        "your client logic to scale requests more smoothly over time.",
    ),
    "arrearage": Refusal(
        400, "Arrearage", "Access denied, please make sure your account is in good standing."
    ),
}


def vtrix_balance_body(request_id: str) -> dict[str, Any]:
    """Vtrix's balance error: the cause is in ``error``, ``message`` says only "Forbidden"."""
    return {"error": "insufficient balance", "message": "Forbidden", "request_id": request_id}


def relay_error(status: int, message: str, code: str | None) -> dict[str, Any]:
    """An upstream error as a relay rewraps it: its own generic code (or none), the
    upstream message and status kept."""
    error: dict[str, Any] = {"message": message, "type": "upstream_error", "param": ""}
    if code is not None:
        error["code"] = code
    return {"error": error}


def relay_success(job: Job, native: dict[str, Any], b64: list[str] | None = None) -> dict[str, Any]:
    """The relay's answer around DashScope's ``native`` one: one ``data[]`` entry per
    choice (its first image), empty strings for what is absent, the raw answer under
    ``metadata``."""
    data = []
    for i, choice in enumerate(native["output"]["choices"]):
        content = choice["message"]["content"]
        first = content[0]["image"] if content else ""
        data.append(
            {
                "url": "" if b64 is not None else first,
                "b64_json": b64[i] if b64 is not None else "",
                "revised_prompt": job.revised_prompt or "",
            }
        )
    return {"created": int(job.created_at), "data": data, "metadata": native}
