#!/usr/bin/env python3
"""Regenerate favicon.ico (32x32, one PNG inside an ICO) from the shapes of
favicon.svg: a blue rounded square with a white arrow down onto a bar.
Run from this directory: python3 favicon.gen.py"""
import struct, zlib

N = 32
BLUE, WHITE, CLEAR = (0x0B, 0x5C, 0xAD, 255), (255, 255, 255, 255), (0, 0, 0, 0)

def inside_rounded(x, y, r=6):
    cx = min(max(x, r), N - r)
    cy = min(max(y, r), N - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r

def arrow(x, y):
    if 13 <= x <= 19 and 6 <= y <= 15:
        return True
    # triangle (8,15) (24,15) (16,23)
    return 15 <= y <= 23 and abs(x - 16) <= 23 - y

def bar(x, y):
    return 7 <= x <= 25 and 24 <= y <= 27

rows = []
for py in range(N):
    row = b"\x00"
    for px in range(N):
        x, y = px + 0.5, py + 0.5
        if not inside_rounded(x, y):
            c = CLEAR
        elif arrow(x, y) or bar(x, y):
            c = WHITE
        else:
            c = BLUE
        row += bytes(c)
    rows.append(row)

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", N, N, 8, 6, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", N, N, 0, 0, 1, 32, len(png), 22) + png
open("favicon.ico", "wb").write(ico)
