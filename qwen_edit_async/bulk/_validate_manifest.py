"""``qwen-edit validate``: check a whole manifest against one provider's rules, sending nothing.

Every line is read as a run would read it (JSON, fields, ids, local image files: format,
bytes, dimensions), then checked by the provider's own rules (prompt length, ``oss://`` inputs,
callbacks, the single-output model) and for what a run would refuse: local images for a
URL-only provider with no upload endpoint, an id used by two lines. Every local file is read
in full once (a file that cannot be read to its end fails here, not halfway through a paid
run). Remote URLs are not fetched: validating must not touch the network.

>>> from qwen_edit_async.providers import get_provider
>>> check = check_manifest("edits.jsonl", get_provider("evolink"))   # doctest: +SKIP
>>> check.ok, check.jobs, check.images                               # doctest: +SKIP
(True, 120, 180)
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import IO

from .._errors import QwenEditError
from .._images import MAX_IMAGE_BYTES, image_kind, sniff
from ..providers import Provider
from ._manifest import Entry, check_format, read_manifest

__all__ = ["ManifestCheck", "Problem", "check_manifest", "print_check"]

_LINE_PREFIX = re.compile(r"^line \d+: ")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """A manifest line a run would refuse: its number, its id (when known) and why."""

    line: int
    id: str | None
    reason: str


@dataclasses.dataclass(slots=True)
class ManifestCheck:
    """What :func:`check_manifest` found.

    ``jobs`` counts the valid lines and ``images`` the images they ask for (the sum of their
    ``n``); ``problems`` lists every invalid line in manifest order.
    """

    provider: str
    lines: int = 0
    jobs: int = 0
    images: int = 0
    local_files: int = 0
    remote_urls: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every line is a valid job (and there is at least one)."""
        return not self.problems and self.jobs > 0

    def cost(self, price_per_image: float) -> float:
        """The estimated price of the valid jobs: images times the price of one."""
        return self.images * price_per_image


class _FileReader:
    """Reads each distinct local file in full once, and says what is wrong with it."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int, int], str | None] = {}

    def problem(self, path: Path) -> str | None:
        try:
            st = os.stat(path)
        except OSError as exc:
            return f"file {str(path)!r} cannot be read ({exc.strerror or exc})"
        key = (os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._seen:
            self._seen[key] = self._read(path, st.st_size)
        return self._seen[key]

    @staticmethod
    def _read(path: Path, expected: int) -> str | None:
        try:
            with open(path, "rb") as handle:
                head = handle.read(_CHUNK)
                total = len(head)
                while chunk := handle.read(_CHUNK):
                    total += len(chunk)
                    if total > MAX_IMAGE_BYTES:
                        return f"file {str(path)!r} grew past 10 MB while it was read"
        except OSError as exc:
            return f"file {str(path)!r} cannot be read to its end ({exc.strerror or exc})"
        if total != expected:
            return f"file {str(path)!r} changed while it was read ({expected} -> {total} bytes)"
        if sniff(head) is None:
            return f"file {str(path)!r} has no readable image header"
        return None


def _reason(error: BaseException) -> str:
    return _LINE_PREFIX.sub("", str(error), count=1)


def _check_entry(
    entry: Entry,
    provider: Provider,
    model: str | None,
    has_uploader: bool,
    files: _FileReader,
    check: ManifestCheck,
) -> str | None:
    """Why ``entry`` would be refused, or ``None``; counts its inputs."""
    if entry.error is not None or entry.request is None:
        return _reason(entry.error or QwenEditError("unreadable"))
    request = entry.request
    try:
        provider.check(request, model=model)
    except QwenEditError as exc:
        return _reason(exc)
    for index, image in enumerate(request.images):
        kind = image_kind(image)
        if kind == "url" or kind == "oss":
            check.remote_urls += 1
            continue
        if not provider.accepts_data_uri and not has_uploader:
            what = f"file {str(image)!r}" if kind == "file" else "an inline (data URI) image"
            return (
                f"images[{index}]: {what} is not a public URL, and {provider.name} takes only "
                "public URLs; give https URLs, or run with --upload-url URL (an endpoint that "
                'takes the bytes in a POST and answers {"url": ...})'
            )
        if isinstance(image, Path):
            check.local_files += 1
            problem = files.problem(image)
            if problem is not None:
                return f"images[{index}]: {problem}"
    return None


def check_manifest(
    manifest: str | os.PathLike[str],
    provider: Provider,
    *,
    model: str | None = None,
    has_uploader: bool = False,
) -> ManifestCheck:
    """Check every line of ``manifest`` as ``provider`` would take it; send nothing.

    ``has_uploader`` says local images will be uploaded (``--upload-url``) for a URL-only
    provider. Raises :class:`OSError` when the manifest cannot be opened and
    :class:`~qwen_edit_async.QwenEditError` when it is not a manifest at all.

    >>> from qwen_edit_async.providers import get_provider
    >>> check_manifest("edits.jsonl", get_provider("dashscope")).problems   # doctest: +SKIP
    [Problem(line=4, id='cat-4', reason="images[0]: file 'cat4.png' does not exist; ...")]
    """
    check_format(manifest)  # a JSON array or a CSV file: one error, not one per line
    check = ManifestCheck(provider=provider.name)
    files = _FileReader()
    first_line: dict[str, int] = {}
    for entry in read_manifest(manifest):
        check.lines += 1
        reason = _check_entry(entry, provider, model, has_uploader, files, check)
        if reason is None and entry.id is not None:
            earlier = first_line.setdefault(entry.id, entry.line)
            if earlier != entry.line:
                reason = f"duplicate id {entry.id!r} (line {earlier} has it); one id per line"
        if reason is not None:
            check.problems.append(Problem(entry.line, entry.id, reason))
            continue
        check.jobs += 1
        check.images += entry.n
    return check


def print_check(
    check: ManifestCheck, manifest: str, out: IO[str], *, price_per_image: float | None = None
) -> None:
    """The report ``qwen-edit validate`` prints."""
    bad = len(check.problems)
    print(
        f"{manifest}: {check.lines} line(s) for {check.provider}: {check.jobs} valid job(s), "
        f"{bad} invalid",
        file=out,
    )
    print(f"images to generate: {check.images} (the sum of n over the valid jobs)", file=out)
    print(
        f"inputs: {check.local_files} local file(s) read and checked, {check.remote_urls} "
        "remote URL(s) not fetched (validate sends nothing)",
        file=out,
    )
    if price_per_image is not None:
        print(
            f"cost estimate: {check.images} image(s) x {price_per_image:g} = "
            f"{check.cost(price_per_image):.2f} (billed per generated image; failed edits "
            "are free)",
            file=out,
        )
    if bad:
        print("invalid lines:", file=out)
        for problem in check.problems:
            label = f"line {problem.line}" + (f" (id {problem.id})" if problem.id else "")
            print(f"  {label}: {problem.reason}", file=out)
    elif check.jobs == 0:
        print("no jobs: the manifest has no edit lines", file=out)
    else:
        print("every line is valid", file=out)
