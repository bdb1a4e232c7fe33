#!/usr/bin/env python3
"""Plue builds Plue: `.plue/ci.plue.py` run with `plue run` three ways in one run, each
in a fresh data directory, on one snapshot of the repository; medians and the ratio.

    python3 bench/ci-cache/ci_cache.py [--plue target/debug/plue] [--runs 1]
        [--crates "plue-types plue-vault plue-outbound"] [--commit HEAD] [--only a,b,c]

  (a) uncached  the same steps with `--input caches=false` (the baseline)
  (b) cold      with caches, first run in a fresh data directory: every cache misses, is
                saved after its step succeeded
  (c) warm      a second run in (b)'s data directory, the lock file unchanged: restores

Each round runs (a), (b), (c) in that order, then deletes its data directories; the
medians are over the rounds. The steps' own times (from `--summary-json`) and every
`cache ...:` line of their logs (restored / saved, with sizes and seconds) are printed for
each run; the Markdown section at the end is what bench/README.md holds.

The snapshot is `git archive` of `--commit` into a throw-away directory under `target/`
(uncommitted edits of the working tree never reach the steps, and every run copies the same
tree). The steps run as users of their own (`plue run` as root), who cannot read a
toolchain under root's 0700 home: when the active toolchain (`rustc --print sysroot`) is not
readable by everyone, it is linked (hard links, no copy: the same filesystem as `target/`)
into the throw-away directory, and its `bin` goes first on PATH. Everything runs under
`nice -n 10`; the throw-away directory (snapshot, data directories, toolchain links) is
removed at the end, also after a failure or Ctrl-C (`--keep` keeps it).

A plain debug `plue` is enough: the builds take minutes, Plue's own share is milliseconds.
"""

import argparse
import json
import os
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ".plue/ci.plue.py"
DEFAULT_CRATES = "plue-types plue-vault plue-outbound"
# Disk the three variants' trees and cache entries need at most, with room (each cargo
# target of the default crates is well under 1 GB, the runners' trees are in memory).
NEED_FREE_BYTES = 4 * 1024**3
# A step's cache line: `cache NAME: restored KEY ... in 1.2 s` / `saved KEY ... in 3.4 s`.
# The parenthesis ends with the entry's size: `(exact, 24.8 MiB)`, `(6.1 MiB)`.
CACHE_TIME = re.compile(r"^cache (\S+): (restored|saved) .*\(([^()]*)\) in ([0-9.]+) s$")
VARIANTS = {
    "a": "uncached (caches=false)",
    "b": "cached, first run (misses, saves)",
    "c": "cached, second run (restores)",
}


def say(text):
    print(text, file=sys.stderr, flush=True)


def readable_by_all(path):
    """Whether a user of its own can reach `path`: every directory on the way searchable
    by others, and nothing under /tmp (each step has a /tmp of its own)."""
    path = path.resolve()
    if path == Path("/tmp") or Path("/tmp") in path.parents:
        return False
    for place in [path, *path.parents]:
        if not os.stat(place).st_mode & stat.S_IXOTH:
            return False
    return True


def toolchain_bin(work):
    """The toolchain's `bin` directory, readable by the steps' users."""
    sysroot = Path(
        subprocess.run(["rustc", "--print", "sysroot"], check=True, capture_output=True,
                       text=True).stdout.strip()
    )
    for tool in ["cargo", "rustc", "rustfmt", "cargo-fmt", "cargo-clippy", "clippy-driver"]:
        if not (sysroot / "bin" / tool).exists():
            sys.exit(f"{sysroot}/bin has no {tool}: install the toolchain's rustfmt and clippy")
    if readable_by_all(sysroot / "bin"):
        return sysroot / "bin"
    linked = work / "rust"
    say(f"linking the toolchain {sysroot} into {linked} (hard links: its steps' users cannot "
        "read it where it is)")
    subprocess.run(["cp", "-al", str(sysroot), str(linked)], check=True)
    return linked / "bin"


def snapshot(commit, into):
    """`git archive` of `commit` unpacked into `into`; the full commit id."""
    full = subprocess.run(["git", "rev-parse", "--verify", commit + "^{commit}"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout.strip()
    into.mkdir()
    archive = subprocess.Popen(["git", "archive", full], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        sys.exit(f"git archive {full} failed")
    if not (into / WORKFLOW).is_file():
        sys.exit(f"{commit} has no {WORKFLOW}")
    return full


def step_seconds(record):
    """Each step's wall time (its last attempt), in seconds, from a run record."""
    times = {}
    for attempt in record.get("attempt_records", []):
        if attempt.get("started_at") and attempt.get("finished_at"):
            times[attempt["step"]] = (attempt["finished_at"] - attempt["started_at"]) / 1000
    return times


def cache_lines(stdout):
    """Every `cache ...` line of the steps' logs, as (step, text)."""
    found = []
    for line in stdout.splitlines():
        step, sep, text = line.partition(" | ")
        if sep and text.startswith("cache "):
            found.append((step.strip(), text.strip()))
    return found


def run_ci(plue, src, data, crates, caches, env, log):
    """One `plue run` of the workflow; (wall seconds, succeeded, record, stdout)."""
    summary = data.parent / (data.name + ".json")
    command = [
        "nice", "-n", "10", str(plue), "run", WORKFLOW,
        "--data-dir", str(data),
        "--summary-json", str(summary),
        "--input", "crates=" + crates,
        "--input", "caches=" + ("true" if caches else "false"),
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=src, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    with open(log, "a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}\n")
    record = json.loads(summary.read_text()) if summary.exists() else {}
    return wall, done.returncode == 0, record, done.stdout


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plue", default=None,
                        help="the plue binary (default: target/release/plue, else target/debug/plue)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of (a), (b), (c)")
    parser.add_argument("--crates", default=DEFAULT_CRATES,
                        help="the workflow's crates input (empty: the whole workspace)")
    parser.add_argument("--commit", default="HEAD", help="what to snapshot")
    parser.add_argument("--only", default="a,b,c",
                        help="variants to run; c needs b (its data directory)")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away directory")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "c" in only and "b" not in only:
        sys.exit("--only c needs b: the second run reuses the first one's data directory")
    plue = Path(args.plue) if args.plue else next(
        (p for p in [ROOT / "target/release/plue", ROOT / "target/debug/plue"] if p.exists()),
        None)
    if plue is None or not plue.exists():
        sys.exit("no plue binary: cargo build -p engine --bin plue (or pass --plue)")
    plue = plue.resolve()
    (ROOT / "target").mkdir(exist_ok=True)
    free = shutil.disk_usage(ROOT / "target").free
    if free < NEED_FREE_BYTES:
        sys.exit(f"{free / 1024**3:.1f} GB free under target/: at least "
                 f"{NEED_FREE_BYTES / 1024**3:.0f} GB needed")
    work = Path(tempfile.mkdtemp(prefix="ci-cache-", dir=ROOT / "target"))
    os.chmod(work, 0o755)
    # A Ctrl-C or a kill removes the directory too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        measure(args, only, plue, work)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def measure(args, only, plue, work):
    log = work.parent / (work.name + ".log")
    src = work / "src"
    commit = snapshot(args.commit, src)
    bin_dir = toolchain_bin(work)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CARGO_", "RUSTUP_TOOLCHAIN", "PLUE_"))}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["NO_COLOR"] = "1"
    load = os.getloadavg()[0]
    started = datetime.now(timezone.utc)
    say(f"commit {commit[:7]}, crates '{args.crates}', plue {plue}, load {load:.1f}, "
        f"log {log}")
    walls = {v: [] for v in VARIANTS}
    steps = {v: [] for v in VARIANTS}
    failed = []
    cache_times = {"b": [], "c": []}
    for round_ in range(args.runs):
        plan = [("a", False, f"a-{round_}"), ("b", True, f"bc-{round_}"),
                ("c", True, f"bc-{round_}")]
        for variant, caches, data_name in plan:
            if variant not in only:
                continue
            data = work / data_name
            wall, ok, record, stdout = run_ci(plue, src, data, args.crates, caches, env, log)
            per_step = step_seconds(record)
            lines = cache_lines(stdout)
            say(f"round {round_ + 1} ({variant}) {VARIANTS[variant]}: {wall:.1f} s, "
                f"{'succeeded' if ok else 'FAILED'}; steps "
                + ", ".join(f"{s} {t:.1f} s" for s, t in sorted(per_step.items())))
            for step, text in lines:
                say(f"    {step}: {text}")
            if not ok:
                failed.append(f"round {round_ + 1} ({variant}): {record.get('reason')}")
            walls[variant].append(wall)
            steps[variant].append(per_step)
            if variant in cache_times:
                cache_times[variant].extend(
                    (m.group(2), m.group(1), m.group(3).split(", ")[-1], float(m.group(4)))
                    for _, text in lines if (m := CACHE_TIME.match(text)))
        for data_name in (f"a-{round_}", f"bc-{round_}"):
            shutil.rmtree(work / data_name, ignore_errors=True)
    report(args, commit, started, load, plue, walls, steps, cache_times, failed)


def report(args, commit, started, load, plue, walls, steps, cache_times, failed):
    """The Markdown section for bench/README.md, on stdout."""
    def step_median(variant, step):
        return median([s[step] for s in steps[variant] if step in s])

    print(f"## ci-cache — Plue builds Plue, with and without step caches\n")
    print(f"`python3 bench/ci-cache/ci_cache.py --runs {args.runs} --crates \"{args.crates}\"` "
          f"({started:%Y-%m-%d %H:%M} UTC, commit {commit[:7]}, load {load:.1f} at the start, "
          f"`{plue.relative_to(ROOT) if ROOT in plue.parents else plue}`, medians of "
          f"{args.runs}).\n")
    print("| variant | wall | fmt | module-circles | clippy | test |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant, what in VARIANTS.items():
        if not walls[variant]:
            continue
        cells = [f"{median(walls[variant]):.1f} s"] + [
            f"{step_median(variant, s):.1f} s" for s in ["fmt", "module-circles", "clippy", "test"]
        ]
        print(f"| ({variant}) {what} | " + " | ".join(cells) + " |")
    if walls["a"] and walls["c"]:
        ratio = median(walls["a"]) / median(walls["c"])
        print(f"\n(a) / (c): **{ratio:.1f}×** (goal ≥ 3×: {'met' if ratio >= 3 else 'not met'})")
    for variant, verb in [("b", "saved"), ("c", "restored")]:
        by_name = {}
        for kind, name, size, t in cache_times[variant]:
            if kind == verb:
                by_name.setdefault(name, (size, []))[1].append(t)
        if by_name:
            print(f"\n({variant}) {verb}, median of each cache's times: " + ", ".join(
                f"{n} {size} in {median(ts):.1f} s" for n, (size, ts) in by_name.items()))
        elif walls[variant]:
            print(f"\n({variant}): no cache was {verb}")
    if failed:
        print("\nFailed runs: " + "; ".join(failed))


if __name__ == "__main__":
    main()
