#!/usr/bin/env python3
"""`png_coverage.py FILE [MIN]`: is this PNG a drawn map, not a blank one? Prints the share of
non-transparent pixels and of distinct colours; exit 1 when the file is no PNG, when fewer than
MIN (default 0.01) of its pixels are drawn, or when every pixel is one flat colour.

Standard library only (hack/smoke.sh runs it against any install): 8-bit greyscale, RGB, palette,
grey+alpha and RGBA, non-interlaced, as MapServer and MapCache write them.
"""

from __future__ import annotations

import struct
import sys
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> list[bytes]:
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return rows


def pixels(data: bytes) -> list[tuple[int, int, int, int]]:
    """Every pixel as RGBA."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    pos, idat, palette, trns = 8, b"", b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or interlace or colour not in CHANNELS:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {colour}, interlace {interlace})")
    n = CHANNELS[colour]
    out = []
    for row in _unfilter(zlib.decompress(idat), width, height, n):
        for x in range(width):
            s = row[x * n : (x + 1) * n]
            if colour == 6:
                out.append(tuple(s))
            elif colour == 2:
                out.append((*s, 255))
            elif colour == 0:
                out.append((s[0], s[0], s[0], 255))
            elif colour == 4:
                out.append((s[0], s[0], s[0], s[1]))
            else:
                i = s[0]
                alpha = trns[i] if i < len(trns) else 255
                out.append((*palette[3 * i : 3 * i + 3], alpha))
    return out


def main() -> int:
    path, least = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
    try:
        with open(path, "rb") as f:
            px = pixels(f.read())
    except (ValueError, zlib.error, struct.error, OSError, UnboundLocalError) as e:
        print(f"{path}: {e}")
        return 1
    drawn = [p for p in px if p[3] > 0]
    share = len(drawn) / len(px) if px else 0.0
    colours = len({p[:3] for p in drawn})
    print(f"{path}: {share:.1%} of {len(px)} pixels drawn, {colours} colours")
    flat = share == 1.0 and colours == 1  # an opaque image of one colour: a background, no map
    return 0 if share >= least and not flat else 1


if __name__ == "__main__":
    sys.exit(main())
