"""Hostile inputs for serving tests and the load benchmark: crafted PNGs and deep or huge JSON."""

from __future__ import annotations

import base64
import struct
import zlib


def bilevel_png(width: int, height: int) -> bytes:
    """A 1-bit black PNG of ``width`` x ``height`` pixels: a few KB that decode to ``width * height`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the packed pixels
    compressor = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 20) // len(row))
    pieces = []
    for start in range(0, height, rows_per_piece):
        pieces.append(compressor.compress(row * min(rows_per_piece, height - start)))
    pieces.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(pieces)) + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def deep_json(levels: int) -> bytes:
    """``{"inputs": [[[[...]]]]}`` nested ``levels`` deep."""
    return b'{"inputs": ' + b"[" * levels + b"]" * levels + b"}"


def huge_int_json(digits: int) -> bytes:
    """``{"inputs": [999...]}`` with a ``digits``-digit integer (Python refuses over 4,300)."""
    return b'{"inputs": [' + b"9" * digits + b"]}"
