#!/usr/bin/env python3
"""Fails when a module of any crate of the workspace imports another that imports it back.

Reads `crate::`, `super::` and `crate::{...}` paths in each crate's sources (comments and
`mod tests` blocks left out), maps every path to the deepest module file that exists, and
looks for strongly connected components twice: between top-level modules and between
files. Arrows between crates need no check: Cargo refuses a cycle of crates.

usage: .ci/module-circles.py [--edges]     (from the workspace root)
"""
import os
import re
import sys
from collections import defaultdict

CRATES = ["evaluator", "prompts", "runner", "store", "vault", "forge", "pool", "core", "server", "engine", "bench",
          "bench/bombs", "testkit"]


def modules(src):
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            found[tuple(parts)] = path
    return found


def is_test(module):
    return any(part == "tests" or part.endswith("_tests") for part in module)


def code(text):
    text = re.sub(r"//[^\n]*", "", text)
    cut = text.find("#[cfg(test)]\nmod tests {")
    return text if cut < 0 else text[:cut]


def edges_of(src, depth):
    found = modules(src)

    def resolve(path):
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in found:
                return tuple(path[:n])
        return None

    edges = defaultdict(set)
    for module, path in found.items():
        if is_test(module):
            continue
        text = code(open(path, encoding="utf-8").read())
        refs = [g.group(1).split("::") for g in
                re.finditer(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text)]
        for g in re.finditer(r"\bcrate::\{([^}]*)\}", text):
            refs += [part.strip().split("::") for part in g.group(1).split(",") if part.strip()]
        for g in re.finditer(r"\b((?:super::)+)((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
            ups = g.group(1).count("super::")
            base = list(module[:len(module) - ups]) if ups <= len(module) else []
            refs.append(base + g.group(2).split("::"))
        for ref in refs:
            target = resolve(ref)
            if target is None or target == module or is_test(target):
                continue
            a, b = (module[:depth], target[:depth]) if depth else (module, target)
            if a and b and a != b:
                edges[a].add(b)
    return edges


def circles(edges):
    sys.setrecursionlimit(20000)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def main():
    bad = 0
    for crate in CRATES:
        src = os.path.join(crate, "src")
        for depth, level in ((1, "top-level modules"), (0, "files")):
            edges = edges_of(src, depth)
            for component in circles(edges):
                bad += 1
                names = {c: "::".join(c) for c in component}
                print(f"{crate}: a circle between {level}: {', '.join(names.values())}")
                for a in component:
                    inside = sorted(names[b] for b in edges[a] if b in names)
                    print(f"    {names[a]} -> {', '.join(inside)}")
            if "--edges" in sys.argv and depth == 1:
                for a in sorted(edges):
                    print(f"{crate}: {'::'.join(a)} -> "
                          f"{', '.join(sorted('::'.join(b) for b in edges[a]))}")
    if bad:
        print(f"{bad} import circle(s): break each by moving what both sides need below them")
        return 1
    print("no module imports another that imports it back, in any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
