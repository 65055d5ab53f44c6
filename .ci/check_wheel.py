"""Fail when the built wheel carries anything but the package's sources and metadata.

Usage: python .ci/check_wheel.py DIST_DIR
"""

from __future__ import annotations

import pathlib
import sys
import zipfile


def stray_files(wheel: pathlib.Path) -> list[str]:
    """Names in ``wheel`` that are neither package ``.py``/``py.typed`` nor dist-info."""
    stray = []
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            top = name.split("/", 1)[0]
            if top.endswith(".dist-info"):
                continue
            if top == "qwen_edit_async" and (name.endswith(".py") or name.endswith("/py.typed")):
                continue
            stray.append(name)
    return stray


def main() -> int:
    wheels = sorted(pathlib.Path(sys.argv[1]).glob("*.whl"))
    if len(wheels) != 1:
        print(f"expected one wheel in {sys.argv[1]}, found {len(wheels)}", file=sys.stderr)
        return 1
    stray = stray_files(wheels[0])
    for name in stray:
        print(f"the wheel carries a stray file: {name}", file=sys.stderr)
    print(f"{wheels[0].name}: {'stray files' if stray else 'only sources and metadata'}")
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
