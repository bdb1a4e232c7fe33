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

def crates():
    """The workspace's members, as Cargo.toml lists them: a new crate is checked too."""
    text = open("Cargo.toml", encoding="utf-8").read()
    members = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    return re.findall(r'"([^"]+)"', members.group(1))


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


IDENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")


def use_tree(text, at):
    """The paths a use tree starting at `at` names: `a::b`, `a::{b, c::{d, e}}`, `{a, b}`.

    Every branch of a group is a path of its own (`super::{a, b}` names both `a` and `b`);
    `self` inside a group names the group's own module; `*` and `as` names end a path.
    """
    paths, _ = _tree(text, at)
    return paths


def _tree(text, at):
    prefix = []
    while True:
        if text.startswith("{", at):
            paths, at = _group(text, at + 1)
            return [prefix + p for p in paths], at
        m = IDENT.match(text, at)
        if not m:
            return ([prefix] if prefix else []), at
        name, at = m.group(1), m.end()
        if name != "self":
            prefix.append(name)
        if text.startswith("::", at):
            at += 2
            continue
        return [prefix], at


def _group(text, at):
    paths = []
    while at < len(text):
        while at < len(text) and text[at] in " \t\n,":
            at += 1
        if text.startswith("}", at):
            return paths, at + 1
        branch, after = _tree(text, at)
        paths += branch if branch else [[]]
        # Skip what ends the branch (`as name`, `*`) up to the next `,` or `}` at this level.
        depth = 0
        at = after
        while at < len(text):
            c = text[at]
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
            elif c == "," and depth == 0:
                break
            at += 1
        if at == after and not branch:
            at += 1
    return paths, at


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
        refs = []
        for g in re.finditer(r"\b(crate::|(?:super::)+|self::)", text):
            prefix = g.group(1)
            if prefix == "crate::":
                base = []
            elif prefix == "self::":
                base = list(module)
            else:
                ups = prefix.count("super::")
                base = list(module[:len(module) - ups]) if ups <= len(module) else []
            refs += [base + tail for tail in use_tree(text, g.end())]
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
    for crate in crates():
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
