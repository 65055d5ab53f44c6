"""The CLI's ``-v``/``--log-level``/``--log-file``: the library's log lines, never a key.

Log lines are written with every API key found in the environment and any ``Bearer`` token
masked, and with control characters escaped (a provider's text may carry them).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from ._text import printable

__all__ = ["KeyMask", "add_logging_options", "setup_logging"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE)


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """Add ``-v``, ``--log-level`` and ``--log-file`` to ``parser``."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show the library's log lines on stderr: -v for INFO, -vv for DEBUG",
    )
    parser.add_argument(
        "--log-level",
        choices=_LEVELS,
        type=str.upper,
        metavar="LEVEL",
        help="log level: DEBUG, INFO, WARNING or ERROR (default: WARNING; INFO with "
        "--log-file), e.g. --log-level debug",
    )
    parser.add_argument(
        "--log-file",
        metavar="FILE",
        help="append the log lines to FILE instead of stderr, e.g. --log-file run.log",
    )


class KeyMask(logging.Filter):
    """Masks ``secrets`` and ``Bearer`` tokens in each record's message."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return printable(_BEARER.sub(r"\1***", text))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.mask(record.getMessage())
        record.args = None
        if record.exc_info:  # a traceback may quote a key too: format it here, masked
            record.exc_text = self.mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def setup_logging(args: argparse.Namespace) -> logging.Handler | None:
    """Route the ``qwen_edit_async`` logger as asked; ``None`` when nothing was asked."""
    verbose = getattr(args, "verbose", 0)
    level_name = getattr(args, "log_level", None)
    log_file = getattr(args, "log_file", None)
    if not (verbose or level_name or log_file):
        return None
    if level_name is None:
        level_name = "DEBUG" if verbose >= 2 else "INFO" if verbose or log_file else "WARNING"
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    secrets = [value for name, value in os.environ.items() if name.endswith("_API_KEY")]
    handler.addFilter(KeyMask(secrets))
    logger = logging.getLogger("qwen_edit_async")
    logger.setLevel(level_name)
    logger.addHandler(handler)
    return handler
