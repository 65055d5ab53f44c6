"""Tiny, genuinely valid images written with the standard library only (no Pillow).

``make_image(fmt, width, height)`` returns the bytes of a black (or transparent-free,
single-colour) image of the given size in one of the six formats the API takes. Every file is
a complete, decodable image, not just a header, and stays small even at 3072x3072:

- png:  1-bit greyscale, zlib-compressed rows.
- jpeg: baseline greyscale; Huffman tables with one code each, so each 8x8 block costs 2 bits.
- bmp:  1-bit palette, uncompressed (1.2 MB at 3072x3072).
- tiff: little-endian baseline bilevel, one uncompressed strip.
- webp: lossless VP8L whose prefix codes each hold one symbol, so pixels cost 0 bits.
- gif:  GIF89a, LZW kept at 3-bit codes by a clear code every two pixels ("uncompressed GIF").
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["FORMATS", "make_image"]

FORMATS = ("png", "jpeg", "bmp", "tiff", "webp", "gif")


def make_image(fmt: str, width: int, height: int) -> bytes:
    """Return a valid ``fmt`` image of ``width`` x ``height`` pixels."""
    if width < 1 or height < 1:
        raise ValueError("width and height must be positive")
    makers = {
        "png": _png,
        "jpeg": _jpeg,
        "jpg": _jpeg,
        "bmp": _bmp,
        "tiff": _tiff,
        "webp": _webp,
        "gif": _gif,
    }
    try:
        maker = makers[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}") from None
    return maker(width, height)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    # bit depth 1, colour type 0 (greyscale); each row is a filter byte then packed bits.
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    raw = bytes((1 + (width + 7) // 8) * height)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _jpeg(width: int, height: int) -> bytes:
    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = segment(0xDB, b"\x00" + bytes([1]) * 64)
    sof0 = segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    # One code of length 1 ("0") per table: DC category 0 (no change), AC symbol 0x00 (EOB).
    one_code = bytes([1]) + bytes(15)
    dht_dc = segment(0xC4, b"\x00" + one_code + b"\x00")
    dht_ac = segment(0xC4, b"\x10" + one_code + b"\x00")
    sos = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    bits = 2 * blocks  # "0" (DC diff 0) + "0" (EOB) per block: a flat mid-grey image
    scan = bytes(bits // 8)
    if bits % 8:
        scan += bytes([0xFF >> (bits % 8)])  # pad the last byte with 1 bits, as required
    return b"\xff\xd8" + app0 + dqt + sof0 + dht_dc + dht_ac + sos + scan + b"\xff\xd9"


def _bmp(width: int, height: int) -> bytes:
    stride = ((width + 31) // 32) * 4
    pixels = bytes(stride * height)
    palette = b"\x00\x00\x00\x00\xff\xff\xff\x00"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, len(pixels), 2835, 2835, 2, 0)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def _tiff(width: int, height: int) -> bytes:
    short, long_, rational = 3, 4, 5
    strip = bytes(((width + 7) // 8) * height)
    tags = 12
    ifd_size = 2 + tags * 12 + 4
    resolution_at = 8 + ifd_size
    strip_at = resolution_at + 16

    def entry(tag: int, kind: int, value: int) -> bytes:
        if kind == short:
            return struct.pack("<HHIHH", tag, kind, 1, value, 0)
        return struct.pack("<HHII", tag, kind, 1, value)

    entries = [
        entry(256, long_, width),  # ImageWidth
        entry(257, long_, height),  # ImageLength
        entry(258, short, 1),  # BitsPerSample
        entry(259, short, 1),  # Compression: none
        entry(262, short, 1),  # PhotometricInterpretation: BlackIsZero
        entry(273, long_, strip_at),  # StripOffsets
        entry(277, short, 1),  # SamplesPerPixel
        entry(278, long_, height),  # RowsPerStrip
        entry(279, long_, len(strip)),  # StripByteCounts
        entry(282, rational, resolution_at),  # XResolution
        entry(283, rational, resolution_at + 8),  # YResolution
        entry(296, short, 2),  # ResolutionUnit: inch
    ]
    assert len(entries) == tags
    ifd = struct.pack("<H", tags) + b"".join(entries) + struct.pack("<I", 0)
    resolution = struct.pack("<IIII", 72, 1, 72, 1)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + resolution + strip


class _Bits:
    """An LSB-first bit writer (the order VP8L and GIF's LZW both use)."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, nbits: int) -> None:
        self.value |= (value & ((1 << nbits) - 1)) << self.count
        self.count += nbits

    def to_bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def _webp(width: int, height: int) -> bytes:
    if width > 16384 or height > 16384:
        raise ValueError("VP8L images are at most 16384 px a side")
    bits = _Bits()
    bits.put(width - 1, 14)
    bits.put(height - 1, 14)
    bits.put(0, 1)  # alpha_is_used hint
    bits.put(0, 3)  # version
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # no meta prefix codes
    # Five "simple" prefix codes with one symbol each: green, red, blue 0; alpha 255;
    # distance 0. A one-symbol code takes zero bits per pixel, so no pixel data follows.
    for symbol in (0, 0, 0, 255, 0):
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        if symbol < 2:
            bits.put(0, 1)
            bits.put(symbol, 1)
        else:
            bits.put(1, 1)
            bits.put(symbol, 8)
    payload = b"\x2f" + bits.to_bytes()
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    if len(payload) % 2:
        chunk += b"\x00"
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def _gif(width: int, height: int) -> bytes:
    if width > 0xFFFF or height > 0xFFFF:
        raise ValueError("GIF images are at most 65535 px a side")
    screen = struct.pack("<6sHHBBB", b"GIF89a", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    # LZW with minimum code size 2: clear = 4, end = 5, 3-bit codes. A clear code before
    # every two pixels keeps the table from growing, so codes stay 3 bits wide. Eight
    # (clear, 0, 0) groups are 72 bits, a whole number of bytes, so the bulk is one pattern
    # repeated; only the last pixels are packed one by one.
    clear, end = 4, 5
    unit = _Bits()
    for _ in range(8):
        for code in (clear, 0, 0):
            unit.put(code, 3)
    pixels = width * height
    stream = unit.to_bytes() * (pixels // 16)
    tail = _Bits()
    left = pixels % 16
    while left:
        tail.put(clear, 3)
        for _ in range(min(2, left)):
            tail.put(0, 3)
        left -= min(2, left)
    tail.put(end, 3)
    stream += tail.to_bytes()
    blocks = b"".join(
        bytes([len(stream[i : i + 255])]) + stream[i : i + 255] for i in range(0, len(stream), 255)
    )
    return screen + palette + descriptor + b"\x02" + blocks + b"\x00" + b"\x3b"
