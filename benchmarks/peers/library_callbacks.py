"""Peer: this library with completion callbacks (``callbacks=CallbackReceiver(...)``), the
receiver served standalone on loopback in the peer's process; otherwise the ``library`` peer.
"""

from __future__ import annotations

from typing import Any

from ._common import main
from .library import run as run_library


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    return await run_library({**spec, "callbacks": True})


if __name__ == "__main__":
    main(run)
