#!/usr/bin/env python3
"""File and function sizes of a Rust source tree.

Usage: scripts/code-size.py [--top N] [--max-file LINES] [--p90 LINES] SRC_DIR

Prints every file's line count (and its count without `#[cfg(test)]`
modules), then the function-length distribution (median, p90, p99, max)
of all `fn` items with a body, once with tests and once without, and the
N longest functions outside tests. A function's length is the lines from
its `fn` line to its closing brace, by brace matching on code with
comments and literals blanked out: approximate, as in STYLE.md.

With --max-file and/or --p90 it is a check: exit 1 when a file's non-test
lines exceed --max-file (`openapi.rs`, a JSON literal, is exempt) or when
the non-test function p90 is not under --p90.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

cycles = import_module("check-module-cycles")

EXEMPT = {"openapi.rs"}


def functions(code):
    """(name, start line, lines) of every fn item with a body."""
    out = []
    for m in re.finditer(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", code):
        # The body starts at the first `{` after the signature, unless a
        # `;` comes first (a trait method without a body).
        j = m.end()
        depth_paren = 0
        while j < len(code):
            ch = code[j]
            if ch in "([<":
                depth_paren += 1
            elif ch in ")]>":
                depth_paren -= 1
            elif ch == ";" and depth_paren <= 0:
                j = -1
                break
            elif ch == "{" and depth_paren <= 0:
                break
            j += 1
        if j < 0 or j >= len(code):
            continue
        depth, k = 1, j + 1
        while k < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[k], 0)
            k += 1
        start = code.count("\n", 0, m.start()) + 1
        end = code.count("\n", 0, k - 1) + 1
        out.append((m.group(1), start, end - start + 1))
    return out


def pct(values, p):
    if not values:
        return 0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main(argv):
    top, max_file, p90_limit, dirs = 15, None, None, []
    it = iter(argv)
    for a in it:
        if a == "--top":
            top = int(next(it))
        elif a == "--max-file":
            max_file = int(next(it))
        elif a == "--p90":
            p90_limit = int(next(it))
        else:
            dirs.append(a)
    if len(dirs) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    src = dirs[0].rstrip("/")
    rows, all_fns, prod_fns, bad = [], [], [], 0
    test_files = test_module_files(src)
    for dirpath, _, filenames in os.walk(src):
        for f in sorted(filenames):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            code = cycles.strip_code(text)
            prod = "\n" * code.count("\n") if path in test_files else (
                cycles.strip_test_modules(code))
            total = text.count("\n")
            non_test = 0 if path in test_files else count_non_test(code, prod)
            rel = os.path.relpath(path, src)
            rows.append((total, non_test, rel))
            all_fns += [(n, rel, s, ln) for n, s, ln in functions(code)]
            prod_fns += [(n, rel, s, ln) for n, s, ln in functions(prod)]
            if max_file and non_test > max_file and f not in EXEMPT:
                bad += 1
    print(f"files under {src} (lines, lines outside #[cfg(test)]):")
    for total, non_test, rel in sorted(rows, reverse=True):
        print(f"  {total:6} {non_test:6}  {rel}")
    for label, fns in (("all fns", all_fns), ("non-test fns", prod_fns)):
        lens = [f[3] for f in fns]
        print(f"{label}: {len(lens)}, median {pct(lens, 50)}, p90 {pct(lens, 90)}, "
              f"p99 {pct(lens, 99)}, max {max(lens) if lens else 0}")
    print("longest non-test functions:")
    for n, rel, s, ln in sorted(prod_fns, key=lambda f: -f[3])[:top]:
        print(f"  {ln:5}  {rel}:{s} {n}")
    p90 = pct([f[3] for f in prod_fns], 90)
    if p90_limit is not None and p90 >= p90_limit:
        print(f"non-test function p90 is {p90}, not under {p90_limit}")
        bad += 1
    if max_file:
        for total, non_test, rel in rows:
            if non_test > max_file and os.path.basename(rel) not in EXEMPT:
                print(f"{rel}: {non_test} lines outside tests (limit {max_file})")
    return 1 if bad else 0


def test_module_files(src):
    """Files of modules declared `#[cfg(test)] mod name;` (and below)."""
    files = cycles.load(src)
    tests = set()
    for mod, path in files.items():
        with open(path, encoding="utf-8") as fh:
            code = cycles.strip_code(fh.read())
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", code):
            tests.add(mod + (m.group(1),))
    return {path for mod, path in files.items()
            if any(mod[:len(t)] == t for t in tests)}


def count_non_test(code, prod):
    """Lines of the file minus those of its test modules (the lines that
    hold code in `code` and were blanked in `prod`)."""
    code_lines = code.splitlines()
    prod_lines = prod.splitlines()
    blanked = sum(1 for a, b in zip(code_lines, prod_lines) if a.strip() and not b.strip())
    return len(code_lines) - blanked


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
