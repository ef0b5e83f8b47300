#!/usr/bin/env python3
"""How easy the code is to change, measured: the longest functions, the
files over 500 lines, and cycles between a crate's top-level modules.

    python3 tools/structure.py [--top N]

Tests are left out: the `tests/` crate, and `#[cfg(test)]` modules and
files. Functions are measured from their `fn` line to their closing brace;
braces inside strings, chars and comments are skipped. Module cycles are
found between the top-level modules of each crate (a module `a` uses `b`
when a file under `a` names `crate::b` or `super::b` at the top level),
with Tarjan's strongly connected components.
"""

import argparse
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def rust_files():
    listed = subprocess.run(
        ["git", "ls-files", "*.rs"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        if name.startswith("tests/") or "/tests/" in name or name.endswith("/tests.rs"):
            continue
        yield ROOT / name


def code_only(text):
    """The text with strings, chars and comments blanked (lines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not text[i - 1].isalnum()):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + len(hashes) + 2)
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_test_modules(code):
    """Blanks `#[cfg(test)]` items (a module or a function)."""
    lines = code.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            depth, started, j = 0, False, i + 1
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                started = started or "{" in lines[j]
                if lines[j].rstrip().endswith(";") and not started:
                    break
                if started and depth <= 0:
                    break
                j += 1
            for k in range(i, min(j + 1, len(lines))):
                lines[k] = ""
            i = j + 1
        else:
            i += 1
    return "\n".join(lines)


FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def functions(path, code):
    lines = code.split("\n")
    for number, line in enumerate(lines):
        match = FN.search(line)
        if not match:
            continue
        depth, started = 0, False
        for end in range(number, len(lines)):
            text = lines[end] if end != number else line[match.start() :]
            if not started and ";" in text and "{" not in text:
                break  # a declaration without a body
            depth += text.count("{") - text.count("}")
            started = started or "{" in text
            if started and depth <= 0:
                yield match.group(1), number + 1, end - number + 1
                break


def module_of(path):
    """(crate directory, top-level module) of a source file."""
    parts = path.relative_to(ROOT).parts
    if "src" not in parts:
        return None
    crate = parts[0]
    rest = parts[parts.index("src") + 1 :]
    if rest[0] in ("lib.rs", "main.rs"):
        return crate, "crate"
    return crate, rest[0].removesuffix(".rs")


def cycles(uses):
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in uses.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(uses):
        if v not in index:
            visit(v)
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    fns, long_files, uses = [], [], {}
    for path in rust_files():
        text = path.read_text()
        code = without_test_modules(code_only(text))
        relative = path.relative_to(ROOT)
        kept = [l for l in code.split("\n") if l.strip()]
        total = len(text.split("\n"))
        if total > 500:
            long_files.append((total, len(kept), str(relative)))
        for name, line, length in functions(path, code):
            fns.append((length, f"{relative}:{line}", name))
        owner = module_of(path)
        if owner and owner[1] != "crate":
            crate, module = owner
            for used in re.findall(r"\b(?:crate|super)::([a-z_][a-z0-9_]*)", code):
                if used != module and (ROOT / crate / "src" / f"{used}.rs").exists() or (
                    ROOT / crate / "src" / used / "mod.rs"
                ).exists():
                    if used != module:
                        uses.setdefault((crate, module), set()).add((crate, used))
    fns.sort(reverse=True)
    print(f"longest functions (of {len(fns)}):")
    for length, where, name in fns[: args.top]:
        print(f"  {length:4} lines  {name}  {where}")
    print(f"functions over 100 lines: {sum(1 for f in fns if f[0] > 100)}")
    print(f"functions over 60 lines: {sum(1 for f in fns if f[0] > 60)}")
    print("files over 500 lines (lines; lines of non-test code):")
    for total, kept, name in sorted(long_files, reverse=True):
        print(f"  {total:5} {kept:5}  {name}")
    if not long_files:
        print("  none")
    found = cycles(uses)
    print(f"module cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(f"{c}::{m}" for c, m in component))


if __name__ == "__main__":
    main()
