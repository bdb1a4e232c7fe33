#!/usr/bin/env python3
"""Plue against its peers: the same workloads as Luigi tasks, a shell loop and a Plue
workflow, each run as a cold process, alternately, in one run; medians and ratios.

    python3 bench/peers/peers.py [--plue target/release/plue] [--runs 3] [--only W1,W2]

Luigi comes from PyPI, pinned (LUIGI below), into a virtualenv under target/peers-venv
(created on first use). The shell loop and the `python` baselines use the real
interpreter behind `python3` (its `sys.executable`), never a version-manager shim.

Workloads (names as in issue 15):
  start  one no-op step
  W1     40 sequential Python steps computing fib(10)
  W2     a chain of 200 no-op steps
  W3     1 -> 500 -> 1 fan-out and fan-in of no-op steps
Variants (other shapes, heavier Python, larger outputs; not in the default set):
  V1     10 sequential Python steps, each importing json and computing fib(22)
  V2     a chain of 20 steps, each printing 5,000 lines (100,000 lines in all)
  V3     4 independent chains of 50 no-op steps, joined by one last step
Plue runs each workload with `plue run` on a fresh data directory (SQLite, local runners);
Luigi with `--local-scheduler --workers 2` and a LocalTarget per task (how Luigi knows a
task is done); the shell loop runs the steps one after another in one bash.

The "floor" column (no-op workloads only, when `plue-bench` is built beside `plue`) is
`plue-bench floor --quiet`: the same number of `bash -c true` steps, as many at a time as
the workload allows two runners, each started through the runner's own process path
(session, cgroup, mount namespace, step user) and nothing else — no engine, store or
HTTP. It is the least Plue can take while it isolates every step; "floor / Luigi" is the
best ratio any change outside that path could reach.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

LUIGI = "luigi==3.8.1"
ROOT = Path(__file__).resolve().parents[2]

FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(10))\n"
HEAVY = (
    "import json\n"
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    "print(len(json.dumps([{'i': i, 's': str(i) * 8} for i in range(2000)])), fib(22))\n"
)


def real_python():
    """The interpreter behind `python3` on PATH (a pyenv shim costs ~160 ms a start)."""
    out = subprocess.run(
        ["python3", "-c", "import sys; print(sys.executable)"],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def venv_python(python):
    venv = ROOT / "target" / "peers-venv"
    bin_python = venv / "bin" / "python"
    marker = venv / (LUIGI + ".installed")
    if not marker.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(bin_python), "-m", "pip", "install", "-q", LUIGI], check=True)
        marker.write_text("")
    return str(bin_python)


# --- The workloads, written for each tool ------------------------------------------------

def plue_workflow(name):
    steps = {
        "start": "steps = [Step.bash('s0', 'true')]",
        "W1": (
            f"script = {FIB!r}\n"
            "    steps = [Step.python('t%d' % i, script, depends_on=(['t%d' % (i - 1)] if i else []))"
            " for i in range(40)]"
        ),
        "W2": (
            "steps = [Step.bash('t%d' % i, 'true', depends_on=(['t%d' % (i - 1)] if i else []))"
            " for i in range(200)]"
        ),
        "W3": (
            "steps = [Step.bash('root', 'true')]\n"
            "    steps += [Step.bash('f%d' % i, 'true', depends_on=['root']) for i in range(500)]\n"
            "    steps.append(Step.bash('join', 'true', depends_on=['f%d' % i for i in range(500)]))"
        ),
        "V1": (
            f"script = {HEAVY!r}\n"
            "    steps = [Step.python('t%d' % i, script, depends_on=(['t%d' % (i - 1)] if i else []))"
            " for i in range(10)]"
        ),
        "V2": (
            "steps = [Step.bash('t%d' % i, 'seq 1 5000', depends_on=(['t%d' % (i - 1)] if i else []))"
            " for i in range(20)]"
        ),
        "V3": (
            "steps = [Step.bash('c%d_%d' % (c, i), 'true',"
            " depends_on=(['c%d_%d' % (c, i - 1)] if i else [])) for c in range(4) for i in range(50)]\n"
            "    steps.append(Step.bash('join', 'true', depends_on=['c%d_49' % c for c in range(4)]))"
        ),
    }[name]
    return (
        "def workflow():\n"
        f"    {steps}\n"
        f"    return Plan(name='{name.lower()}', triggers=[Trigger.manual()], steps=steps)\n"
    )


LUIGI_COMMON = textwrap.dedent(
    """
    import sys
    import luigi

    OUT = sys.argv[1]

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    class Step(luigi.Task):
        name = luigi.Parameter()

        def output(self):
            return luigi.LocalTarget(f"{OUT}/{self.name}")

        def work(self):
            pass

        def run(self):
            self.work()
            with self.output().open("w") as f:
                f.write("done")
    """
)

LUIGI_WORKLOADS = {
    "start": """
class Root(Step):
    pass
goal = Root(name="s0")
""",
    "W1": """
class Fib(Step):
    i = luigi.IntParameter()
    def requires(self):
        return [Fib(name="t%d" % (self.i - 1), i=self.i - 1)] if self.i else []
    def work(self):
        print(fib(10))
goal = Fib(name="t39", i=39)
""",
    "W2": """
class Link(Step):
    i = luigi.IntParameter()
    def requires(self):
        return [Link(name="t%d" % (self.i - 1), i=self.i - 1)] if self.i else []
goal = Link(name="t199", i=199)
""",
    "W3": """
class Root(Step):
    pass
class Fan(Step):
    def requires(self):
        return [Root(name="root")]
class Join(Step):
    def requires(self):
        return [Fan(name="f%d" % i) for i in range(500)]
goal = Join(name="join")
""",
    "V1": """
import json
class Heavy(Step):
    i = luigi.IntParameter()
    def requires(self):
        return [Heavy(name="t%d" % (self.i - 1), i=self.i - 1)] if self.i else []
    def work(self):
        print(len(json.dumps([{'i': i, 's': str(i) * 8} for i in range(2000)])), fib(22))
goal = Heavy(name="t9", i=9)
""",
    "V2": """
class Loud(Step):
    i = luigi.IntParameter()
    def requires(self):
        return [Loud(name="t%d" % (self.i - 1), i=self.i - 1)] if self.i else []
    def work(self):
        print("\\n".join(str(n) for n in range(1, 5001)), flush=True)
goal = Loud(name="t19", i=19)
""",
    "V3": """
class Link(Step):
    c = luigi.IntParameter()
    i = luigi.IntParameter()
    def requires(self):
        return [Link(name="c%d_%d" % (self.c, self.i - 1), c=self.c, i=self.i - 1)] if self.i else []
class Join(Step):
    def requires(self):
        return [Link(name="c%d_49" % c, c=c, i=49) for c in range(4)]
goal = Join(name="join")
""",
}

LUIGI_MAIN = """
sys.setrecursionlimit(10000)
ok = luigi.build([goal], local_scheduler=True, workers=2, log_level="WARNING")
sys.exit(0 if ok else 1)
"""


# Steps and how many may run at once (two runners), for the no-op workloads.
FLOOR_SHAPES = {"start": (1, 1), "W2": (200, 1), "W3": (502, 2), "V3": (201, 2)}


def shell_script(name, python):
    return {
        "start": "true\n",
        "W1": f"for i in $(seq 40); do {python} -c '{FIB}' >/dev/null; done\n",
        "W2": "for i in $(seq 200); do /bin/true; done\n",
        "W3": "/bin/true\nfor i in $(seq 500); do /bin/true; done\n/bin/true\n",
        "V1": f"for i in $(seq 10); do {python} -c \"{HEAVY}\" >/dev/null; done\n",
        "V2": "for i in $(seq 20); do seq 1 5000; done\n",
        "V3": "for i in $(seq 201); do /bin/true; done\n",
    }[name]


# --- Running -----------------------------------------------------------------------------

def timed(argv, cwd, env=None):
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(
            f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return elapsed


def run_one(tool, name, work, plue, python, luigi_python):
    run_dir = Path(tempfile.mkdtemp(prefix=f"{tool}-{name}-", dir=work))
    if tool == "floor":
        steps, parallel = FLOOR_SHAPES[name]
        bench = str(Path(plue).with_name("plue-bench"))
        return timed(
            [bench, "floor", "--steps", str(steps), "--parallel", str(parallel), "--quiet"],
            run_dir,
        )
    if tool == "shell":
        script = run_dir / "run.sh"
        script.write_text(shell_script(name, python))
        return timed(["bash", str(script)], run_dir)
    if tool == "luigi":
        script = run_dir / "flow.py"
        script.write_text(LUIGI_COMMON + LUIGI_WORKLOADS[name] + LUIGI_MAIN)
        (run_dir / "out").mkdir()
        return timed([luigi_python, str(script), str(run_dir / "out")], run_dir)
    workflow = run_dir / "flow.plue.py"
    workflow.write_text(plue_workflow(name))
    (run_dir / "ws").mkdir()
    env = dict(os.environ, NO_COLOR="1", PLUE_PYTHON=python)
    # The workspace is the directory plue run starts in: an empty one.
    return timed(
        [plue, "run", str(workflow), "--data-dir", str(run_dir / "data")],
        run_dir / "ws", env,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plue", default=str(ROOT / "target" / "release" / "plue"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="start,W1,W2,W3")
    args = parser.parse_args()
    if args.runs < 1:
        sys.exit("--runs must be at least 1")
    if not os.access(args.plue, os.X_OK):
        sys.exit(f"{args.plue} is not built: cargo build --release -p engine")
    python = real_python()
    luigi_python = venv_python(python)
    names = [n for n in args.only.split(",") if n]
    tools = ["shell", "luigi", "plue"]
    if os.access(Path(args.plue).with_name("plue-bench"), os.X_OK):
        tools.append("floor")
    else:
        print("(no plue-bench beside plue: no floor column; cargo build --release -p bench)")
    results = {(t, n): [] for t in tools for n in names}
    with tempfile.TemporaryDirectory(prefix="plue-peers-") as work:
        for round_ in range(args.runs):
            for name in names:
                # Alternate the order between rounds: no tool always runs on a warm cache.
                order = tools if round_ % 2 == 0 else list(reversed(tools))
                for tool in order:
                    if tool == "floor" and name not in FLOOR_SHAPES:
                        continue
                    results[(tool, name)].append(
                        run_one(tool, name, work, args.plue, python, luigi_python)
                    )
    print(f"medians of {args.runs} cold runs; {LUIGI}; python {python}")
    print()
    floor_column = "floor" in tools
    header = "| workload | shell loop | Luigi | Plue | Plue / Luigi | Plue / shell |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if floor_column:
        header += " floor | floor / Luigi | Plue above floor, per step |"
        rule += "---:|---:|---:|"
    print(header)
    print(rule)
    for name in names:
        shell, luigi, plue = (statistics.median(results[(t, name)]) for t in ("shell", "luigi", "plue"))
        row = (
            f"| {name} | {shell:.3f} s | {luigi:.3f} s | {plue:.3f} s "
            f"| {plue / luigi:.2f}x | {plue / shell:.2f}x |"
        )
        if floor_column:
            if results[("floor", name)]:
                floor = statistics.median(results[("floor", name)])
                steps = FLOOR_SHAPES[name][0]
                row += (
                    f" {floor:.3f} s | {floor / luigi:.2f}x "
                    f"| {1000 * (plue - floor) / steps:.2f} ms |"
                )
            else:
                row += " — | — | — |"
        print(row)


if __name__ == "__main__":
    main()
