"""``python -m qwen_edit_async.testing``: the standalone fake provider."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
