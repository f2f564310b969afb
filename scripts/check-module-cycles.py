#!/usr/bin/env python3
"""Fail when the modules of a Rust crate import each other in a circle.

Usage: scripts/check-module-cycles.py [--edges] SRC_DIR [SRC_DIR ...]
       e.g. scripts/check-module-cycles.py crates/bty-web/src

Each .rs file under SRC_DIR is a module (`lib.rs` or `main.rs` is the crate
root, `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`; `src/bin/` is
skipped). An edge is every `crate::...` and `super::...` path in the code,
in `use` trees and inline, resolved to the longest module it names.
Comments, string literals and `#[cfg(test)]` modules are left out: a doc
link or a test's import is not a dependency of the shipped code.

The rule, checked at every level of the module tree: the children of a
module, each taken together with everything below it, must not import each
other in a circle. So `config -> routes::boot -> cycle -> sse -> state ->
config` is a cycle (siblings of the crate root), and so is
`ui::machines <-> ui::live`; a child using its own parent's helpers
(`super::is_htmx`) while the parent wires the child's handlers into a router
is not (a module and its children are one unit seen from outside).

Exit status: 0 no cycle, 1 a cycle (each printed with the file-level edges
that make it), 2 usage.
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """Blank out comments, string and char literals (keep line structure)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
            continue
        m = re.match(r'b?r(#*)"', text[i:i + 260]) if c in "rb" else None
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
            continue
        if c == "'":
            # A char literal ('a', '\n', '\u{1f}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def strip_test_modules(code):
    """Remove `#[cfg(test)] mod name { ... }` blocks."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", code)
        if not m:
            return code
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[:m.start()] + "\n" * code.count("\n", m.start(), j) + code[j:]


def expand_use_tree(tree):
    """`a::{b::{self, C}, d}` -> [['a','b'], ['a','b','C'], ['a','d']]."""
    tokens = re.findall(IDENT + r"|::|\{|\}|,|\*", tree)
    pos = 0

    def parse(prefix):
        nonlocal pos
        paths, cur = [], list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                paths += parse_group(cur)
            elif t in ("}", ","):
                break
            elif t == "::":
                pos += 1
                continue
            elif t == "as":
                pos += 2
                continue
            elif t == "*":
                pos += 1
            elif t == "self":
                pos += 1
            else:
                cur.append(t)
                pos += 1
                continue
        paths.append(cur)
        return paths

    def parse_group(prefix):
        nonlocal pos
        paths = []
        while pos < len(tokens) and tokens[pos] != "}":
            if tokens[pos] == ",":
                pos += 1
                continue
            paths += parse(prefix)
        pos += 1
        return paths

    return parse([])


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        return ()
    return tuple(parts)


def references(code):
    """Every `crate::`/`super::` path in `code`, as a list of segments."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]*);", code):
        paths += expand_use_tree(m.group(1))
    code = re.sub(r"\buse\s+[^;]*;", "", code)
    for m in re.finditer(r"\b(?:crate|super)(?:\s*::\s*" + IDENT + r")+", code):
        paths.append(re.findall(IDENT, m.group(0)))
    return [p for p in paths if p and p[0] in ("crate", "super")]


def resolve(module, path, modules):
    if path[0] == "crate":
        base, rest = (), path[1:]
    else:
        base, rest = module, path
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    best = base
    for k in range(1, len(rest) + 1):
        cand = base + tuple(rest[:k])
        if cand in modules:
            best = cand
        else:
            break
    return best


def load(src):
    files = {}
    has_lib = os.path.exists(os.path.join(src, "lib.rs"))
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        if rel_dir.split(os.sep)[0] == "bin":
            continue
        for f in filenames:
            if not f.endswith(".rs"):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, f))
            if rel == "main.rs" and has_lib:
                continue
            files[module_of(rel)] = os.path.join(src, rel)
    return files


def edges_of(files):
    modules = set(files)
    edges = {}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as fh:
            code = strip_test_modules(strip_code(fh.read()))
        for p in references(code):
            target = resolve(mod, p, modules)
            if target != mod:
                edges.setdefault((mod, target), path)
    return edges


def name(mod):
    return "::".join(mod) or "crate"


def sccs(nodes, succ):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def check(src, show_edges):
    files = load(src)
    edges = edges_of(files)
    if show_edges:
        for (a, b), path in sorted(edges.items()):
            print(f"  {name(a)} -> {name(b)}")
    # level (a module) -> {(child, child): [file-level edges]}
    levels = {}
    for (u, v) in edges:
        k = 0
        while k < min(len(u), len(v)) and u[k] == v[k]:
            k += 1
        if k == len(u) or k == len(v):
            continue  # one contains the other: a unit seen from outside
        level = u[:k]
        levels.setdefault(level, {}).setdefault((u[:k + 1], v[:k + 1]), []).append((u, v))
    found = 0
    for level, pairs in sorted(levels.items()):
        succ = {}
        for (a, b) in pairs:
            succ.setdefault(a, set()).add(b)
        nodes = {a for a, _ in pairs} | {b for _, b in pairs}
        for comp in sccs(nodes, succ):
            if len(comp) < 2:
                continue
            found += 1
            members = set(comp)
            print(f"{src}: cycle among the children of {name(level)}: "
                  + ", ".join(name(c) for c in sorted(comp)))
            for (a, b), via in sorted(pairs.items()):
                if a in members and b in members:
                    for (u, v) in sorted(via):
                        print(f"    {name(u)} -> {name(v)}   ({files[u]})")
    n_edges = len(edges)
    if not found:
        print(f"{src}: {len(files)} modules, {n_edges} import edges, no cycle")
    return found


def main(argv):
    show = "--edges" in argv
    dirs = [a for a in argv if a != "--edges"]
    if not dirs or any(a.startswith("-") for a in dirs):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    bad = 0
    for d in dirs:
        if not os.path.isdir(d):
            print(f"{d}: not a directory", file=sys.stderr)
            return 2
        bad += check(d.rstrip("/"), show)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
