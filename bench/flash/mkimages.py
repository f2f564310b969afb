#!/usr/bin/env python3
"""Make the benchmark's 1 GiB images in DIR:
dense.img   no zero blocks: 512 MiB random bytes, then 512 MiB base64 text
sparse80.img  80% of its 64 KiB blocks zero (one random block in five)"""
import base64, os, sys

d = sys.argv[1]
GiB, MiB, K64 = 1 << 30, 1 << 20, 64 << 10
path = os.path.join(d, "dense.img")
if not os.path.exists(path):
    with open(path + ".tmp", "wb") as f:
        for _ in range(512):
            f.write(os.urandom(MiB))
        for _ in range(512):
            f.write(base64.b64encode(os.urandom(3 * MiB // 4)))
    os.rename(path + ".tmp", path)
path = os.path.join(d, "sparse80.img")
if not os.path.exists(path):
    with open(path + ".tmp", "wb") as f:
        zero = bytes(4 * K64)
        for _ in range(GiB // (5 * K64)):
            f.write(os.urandom(K64))
            f.write(zero)
        f.truncate(GiB)
    os.rename(path + ".tmp", path)
