"""Draw the package icon (a house on a shield-blue tile with a check mark) as a PNG of any
size, with the standard library only, so the repository holds no binary files.

    python spk/icon.py 256 PACKAGE_ICON_256.PNG
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

TILE = (3, 105, 161, 255)  # HA-like blue
HOUSE = (255, 255, 255, 255)
CHECK = (46, 160, 67, 255)
CLEAR = (0, 0, 0, 0)


def pixel(x: float, y: float) -> tuple[int, int, int, int]:
    """The colour at (x, y) in the unit square, y downwards."""
    radius = 0.18  # rounded tile corners
    cx, cy = min(max(x, radius), 1 - radius), min(max(y, radius), 1 - radius)
    if (x - cx) ** 2 + (y - cy) ** 2 > radius**2:
        return CLEAR
    # check mark: two thick strokes in the lower right
    for (x0, y0), (x1, y1) in (((0.56, 0.70), (0.66, 0.80)), ((0.66, 0.80), (0.86, 0.56))):
        t = max(
            0.0,
            min(
                1.0,
                ((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2),
            ),
        )
        if (x - x0 - t * (x1 - x0)) ** 2 + (y - y0 - t * (y1 - y0)) ** 2 < 0.055**2:
            return CHECK
    roof = 0.18 <= y <= 0.46 and abs(x - 0.5) <= (y - 0.18) * 1.15
    body = 0.46 <= y <= 0.82 and 0.26 <= x <= 0.74
    door = 0.60 <= y <= 0.82 and 0.44 <= x <= 0.56
    if (roof or body) and not door:
        return HOUSE
    return TILE


def png(size: int) -> bytes:
    rows = bytearray()
    for row in range(size):
        rows.append(0)  # filter: none
        for col in range(size):
            rows.extend(pixel((col + 0.5) / size, (row + 0.5) / size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


if __name__ == "__main__":
    Path(sys.argv[2]).write_bytes(png(int(sys.argv[1])))
