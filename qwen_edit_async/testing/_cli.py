"""``python -m qwen_edit_async.testing``: run the fake provider as a standalone server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import msgspec

from ._faults import Faults
from ._latency import Latency, LatencyLike
from ._server import FakeProvider

__all__ = ["build_parser", "main"]


def _lognormal(text: str) -> Latency:
    try:
        median, sigma = (float(part) for part in text.split(","))
        return Latency.lognormal(median=median, sigma=sigma)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MEDIAN,SIGMA (e.g. 0.5,0.3): {exc}") from None


def _faults(text: str) -> Faults:
    try:
        return msgspec.json.decode(text, type=Faults)
    except (msgspec.DecodeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--faults: {exc}") from None


def build_parser(prog: str = "python -m qwen_edit_async.testing") -> argparse.ArgumentParser:
    """The command line of the standalone fake (also used by ``qwen-edit serve-fake``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the fake qwen-image-edit-plus provider (every dialect) on loopback. "
        "Prints 'serving on URL' once listening; stops on SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--latency", type=float, default=0.5, help="seconds per job (0.5)")
    timing.add_argument(
        "--latency-lognormal",
        type=_lognormal,
        metavar="MEDIAN,SIGMA",
        help="log-normal seconds per job, e.g. 0.5,0.3",
    )
    hint = parser.add_mutually_exclusive_group()
    hint.add_argument(
        "--no-estimated-time",
        action="store_true",
        help="leave Evolink's task_info.estimated_time out",
    )
    hint.add_argument("--estimated-time", type=int, help="Evolink's hint in seconds")
    parser.add_argument("--api-key", help="require exactly this key (default: any key)")
    parser.add_argument(
        "--url-lifetime", type=float, default=3600.0, help="seconds result URLs stay valid (3600)"
    )
    parser.add_argument("--max-running", type=int, help="429 when this many jobs are running")
    parser.add_argument(
        "--max-rate", type=float, help="429 beyond this many requests in any second"
    )
    parser.add_argument(
        "--burst",
        type=int,
        help="with --max-rate: 429 when a rate rises too quickly (token bucket of this many)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--faults",
        type=_faults,
        metavar="JSON",
        help="fault probabilities, e.g. '{\"rate_limit\": 0.1}'",
    )
    parser.add_argument(
        "--b64-json",
        action="store_true",
        help="ModelStream/OneToken answer with b64_json instead of url",
    )
    return parser


def fake_from_args(args: argparse.Namespace) -> FakeProvider:
    """A configured, not yet started :class:`FakeProvider` from parsed arguments."""
    latency: LatencyLike = args.latency_lognormal or args.latency
    estimated: int | str | None = "auto"
    if args.no_estimated_time:
        estimated = None
    elif args.estimated_time is not None:
        estimated = args.estimated_time
    return FakeProvider(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        latency=latency,
        url_lifetime=args.url_lifetime,
        estimated_time=estimated,  # type: ignore[arg-type]
        faults=args.faults,
        max_running=args.max_running,
        max_rate=args.max_rate,
        burst=args.burst,
        seed=args.seed,
        b64_json=args.b64_json,
    )


async def serve(fake: FakeProvider) -> None:
    """Serve until SIGTERM or SIGINT, printing the ``serving on URL`` line once bound."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with fake:
            print(f"serving on {fake.url}", flush=True)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake provider from the command line; returns the exit code.

    Example::

        $ python -m qwen_edit_async.testing --port 0 --latency-lognormal 0.5,0.3
        serving on http://127.0.0.1:41234
    """
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(fake_from_args(args)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
