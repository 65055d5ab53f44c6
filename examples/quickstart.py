"""The README's first example, runnable anywhere.

    python examples/quickstart.py                      # against an in-process fake provider
    python examples/quickstart.py cat.png sofa.jpg --provider dashscope-intl \\
        --base-url https://dashscope-intl.aliyuncs.com  # for real (DASHSCOPE_API_KEY set)

With no base URL (``--base-url`` or ``QWEN_EDIT_BASE_URL``) it starts the library's fake
provider on 127.0.0.1 and edits two placeholder image URLs there, so no key or network is
needed. Prints the result URLs and the files saved under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

PLACEHOLDERS = ["https://example.com/cat.png", "https://example.com/sofa.jpg"]


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Edit images once and save the results.")
    parser.add_argument("images", nargs="*", help="1-3 paths or URLs (default: placeholders)")
    parser.add_argument("--prompt", default="Put the cat from image 1 on the sofa from image 2")
    parser.add_argument("--provider", default=os.environ.get("QWEN_EDIT_PROVIDER", "dashscope"))
    parser.add_argument("--base-url", default=os.environ.get("QWEN_EDIT_BASE_URL"))
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)

    async with contextlib.AsyncExitStack() as stack:
        api_key = None  # the library reads QWEN_EDIT_API_KEY or the provider's variable
        if args.base_url is None:
            fake = await stack.enter_async_context(FakeProvider(latency=0.2))
            args.base_url, api_key = fake.url, "fake-key"
            print(f"no --base-url: using a fake provider at {fake.url}")
        elif not args.images:
            parser.error("give 1-3 images to edit")

        # --- the README example -------------------------------------------------------
        async with qe.QwenEditClient(
            args.provider, api_key=api_key, base_url=args.base_url
        ) as client:
            result = await client.edit(
                args.images or PLACEHOLDERS, args.prompt, n=2, size="1024*1536", seed=7
            )
            print("urls:", *result.urls, sep="\n  ")
            paths = await client.download(result, args.out)
            print("saved:", *paths, sep="\n  ")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except qe.QwenEditError as exc:  # already says what and where (never the key)
        sys.exit(f"error: {type(exc).__name__}: {exc}")
