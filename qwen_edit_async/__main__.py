"""``python -m qwen_edit_async``: the ``qwen-edit`` command line."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
