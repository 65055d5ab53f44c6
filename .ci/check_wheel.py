"""Fail when the built wheel carries anything but the package's sources and metadata, or
lacks the license or the ``py.typed`` marker.

Usage: python .ci/check_wheel.py DIST_DIR
"""

from __future__ import annotations

import pathlib
import sys
import zipfile

#: What every wheel must carry besides sources: the license (in its metadata) and the
#: marker that tells type checkers the package is typed.
REQUIRED = ("LICENSE", "qwen_edit_async/py.typed")


def stray_files(names: list[str]) -> list[str]:
    """Names that are neither package ``.py``/``py.typed`` nor dist-info."""
    stray = []
    for name in names:
        top = name.split("/", 1)[0]
        if top.endswith(".dist-info"):
            continue
        if top == "qwen_edit_async" and (name.endswith(".py") or name.endswith("/py.typed")):
            continue
        stray.append(name)
    return stray


def missing_files(names: list[str]) -> list[str]:
    """Entries of :data:`REQUIRED` that no name in the wheel ends with."""
    return [need for need in REQUIRED if not any(name.endswith(need) for name in names)]


def problems(wheel: pathlib.Path) -> list[str]:
    """Every reason ``wheel`` is not fit to publish, one line each."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    return [f"the wheel carries a stray file: {name}" for name in stray_files(names)] + [
        f"the wheel lacks {need}" for need in missing_files(names)
    ]


def main() -> int:
    wheels = sorted(pathlib.Path(sys.argv[1]).glob("*.whl"))
    if len(wheels) != 1:
        print(f"expected one wheel in {sys.argv[1]}, found {len(wheels)}", file=sys.stderr)
        return 1
    found = problems(wheels[0])
    for line in found:
        print(line, file=sys.stderr)
    print(f"{wheels[0].name}: {'not fit to publish' if found else 'only sources and metadata'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
