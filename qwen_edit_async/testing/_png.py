"""A tiny PNG encoder for the fake's result images (stdlib zlib + struct only).

Images are two horizontal bands of flat colour: cheap to build at any size, still a real,
decodable PNG. They are built on first download and cached by (width, height, colour).
"""

from __future__ import annotations

import functools
import struct
import zlib

__all__ = ["PALETTE", "colour_for", "png_bytes"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Colour pairs (top band, bottom band); a job image picks one by a hash of its name.
PALETTE: tuple[tuple[bytes, bytes], ...] = tuple(
    (bytes((r, g, b)), bytes((255 - r, 255 - g, 255 - b)))
    for r in (32, 96, 160, 224)
    for g in (48, 176)
    for b in (64, 128, 200)
)


def colour_for(key: str) -> int:
    """The palette index for an image name: deterministic across runs and processes."""
    return zlib.crc32(key.encode()) % len(PALETTE)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


@functools.lru_cache(maxsize=64)
def png_bytes(width: int, height: int, colour: int = 0) -> bytes:
    """An RGB PNG of ``width`` x ``height`` pixels in palette colour ``colour``."""
    if width < 1 or height < 1:
        raise ValueError("PNG dimensions must be positive")
    top, bottom = PALETTE[colour % len(PALETTE)]
    # Each scanline starts with filter type 0 (None).
    row_top = b"\x00" + top * width
    row_bottom = b"\x00" + bottom * width
    half = height // 2
    raw = row_top * half + row_bottom * (height - half)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 1))
        + _chunk(b"IEND", b"")
    )
