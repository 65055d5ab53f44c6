"""The steps before a bulk run sends anything: each refuses (:class:`RunRefused`) with what
to do, so a run that cannot go right stops before it spends or writes.

>>> provider_for(RunOptions(manifest=Path("m.jsonl"), out=Path("out"), provider="vtrix")).name
'vtrix'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._callbacks import CallbackReceiver
from .._client import QwenEditClient
from .._errors import ConfigurationError, QwenEditError
from .._images import Uploader
from .._version import __version__
from ..providers import Provider, get_provider
from ._journal import Journal, ProviderMismatch, SettingMismatch
from ._manifest import read_manifest
from ._options import RunOptions, RunRefused
from ._resume_check import compare_manifest
from ._upload import HttpUploader, local_inputs

__all__ = [
    "build_client",
    "check_first_line",
    "check_manifest",
    "open_journal",
    "provider_for",
    "uploader_for",
]


def provider_for(o: RunOptions) -> Provider:
    """The provider the run talks to."""
    try:
        return get_provider(o.provider, base_url=o.base_url, model=o.model)
    except ConfigurationError as exc:
        raise RunRefused(str(exc)) from exc


def uploader_for(o: RunOptions, provider: Provider) -> HttpUploader | None:
    """For URL-only providers: the ``--upload-url`` endpoint, if one was given."""
    url = o.upload_url
    return None if provider.accepts_data_uri or url is None else HttpUploader(url)


def check_first_line(manifest: Path, provider: Provider, uploader: Uploader | None) -> None:
    """Fail fast: local images for a URL-only provider and nowhere to upload them."""
    if provider.accepts_data_uri or uploader is not None:
        return
    for entry in read_manifest(manifest):
        if entry.request is None:
            continue
        local = local_inputs(entry.request)
        if local:
            raise RunRefused(
                f"manifest line {entry.line}: {local[0]} is a local image but "
                f"{provider.name} takes only public URLs (ConfigurationError); pass "
                "--upload-url URL (an endpoint that takes the bytes in a POST and answers "
                '{"url": ...}), or give public https URLs in the manifest'
            )
        return


def build_client(
    o: RunOptions, provider: Provider, uploader: Uploader | None
) -> tuple[QwenEditClient, CallbackReceiver | None]:
    """The run's client, and its callback receiver when ``--callback-url`` was given."""
    options: dict[str, Any] = {}
    if o.job_timeout is not None:
        options["job_timeout"] = o.job_timeout or None
    if o.submit_rate is not None:
        options["submit_rate"] = o.submit_rate
    receiver = None
    try:
        if o.callback_url is not None:
            options["callbacks"] = receiver = CallbackReceiver(o.callback_url)
        client = QwenEditClient(
            provider,
            api_key=o.api_key,
            max_in_flight=o.concurrency,
            uploader=uploader,
            shared=o.shared,
            **options,
        )
    except QwenEditError as exc:
        raise RunRefused(str(exc)) from exc
    return client, receiver


async def open_journal(
    journal: Journal, o: RunOptions, provider: Provider, log: Callable[[str], None]
) -> int:
    """Start ``journal`` (already running in its thread) on a new run; return its number."""
    meta = {
        "provider": provider.name,
        "base_url": provider.base_url,
        "model": provider.model,
        "manifest": str(o.manifest.resolve()),
        "version": __version__,
    }
    try:
        run, swept, _old = await journal.begin_run(meta)
    except ProviderMismatch as exc:
        raise RunRefused(
            f"{o.out} holds a run on provider {exc.old!r}: its task ids mean nothing "
            f"to {provider.name!r}; resume with --provider {exc.old}"
        ) from None
    except SettingMismatch as exc:
        raise RunRefused(
            f"{o.out} holds a run that used base URL {exc.old}, but this run would send "
            f"your key to {provider.base_url}; the key goes only where you say: add "
            f"--base-url {exc.old} if that is where this run should go"
        ) from None
    if swept:
        log(
            f"{swept} job(s) were being submitted when the last run stopped: marked "
            "uncertain (they may exist at the provider); --retry-uncertain resubmits them"
        )
    return run


async def check_manifest(journal: Journal, o: RunOptions, log: Callable[[str], None]) -> None:
    """Refuse a resume with another manifest, or with lines edited since the run began."""
    allow = o.allow_changed_manifest
    changes = await compare_manifest(journal, o.manifest, stop_at_first=not allow)
    if not changes:
        return
    if not allow:
        raise RunRefused(
            f"{o.manifest} is not the manifest the run in {o.out} started with: "
            f"{changes.examples[0]}. Resume with that manifest, or add "
            "--allow-changed-manifest (new ids are added; changed lines keep their "
            "journaled state and are reported)"
        )
    log(
        f"the manifest changed since the run started: {changes.changed} changed line(s) "
        f"keep their journaled state, {changes.new} new id(s) are added; "
        + "; ".join(changes.examples)
    )
