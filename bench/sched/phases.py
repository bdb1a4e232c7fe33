#!/usr/bin/env python3
"""Where one step of a `plue run` chain spends its time, from the scheduler's trace.

    perf record -o sched.data -a -e sched:sched_switch -e sched:sched_waking \\
        -e sched:sched_process_fork -e sched:sched_process_exec -e sched:sched_process_exit \\
        -- plue run CHAIN.plue.py --runners 1 --data-dir DATA
    perf script -i sched.data -F comm,pid,tid,cpu,time,event,trace > sched.txt
    python3 bench/sched/phases.py sched.txt

CHAIN is a chain of `bash` steps (`true`) or of `python` steps (`pass`), as `plue-bench
steps` runs them. The processes are found in the trace: the engine is the first `plue`
exec'd, the runner the `plue` that starts the steps (a bash step's leader is its fork; a
python step is a child of the warm interpreter, the first `python3` the runner started).
Each stretch is bounded by events the trace names: a wake-up sent from one process to
another (`sched_waking`, taken in the waker), a fork, an exit, a process turned zombie.
Printed: the median and mean of each stretch over the chain's steps, in ms.
"""

import bisect
import re
import statistics
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)$")


def read(path):
    events = []
    for line in open(path, encoding="utf-8", errors="replace"):
        m = LINE.match(line)
        if m:
            _comm, pid, tid, _cpu, t, event, trace = m.groups()
            events.append((float(t), int(pid), int(tid), event.split(":")[-1], trace))
    return events


def field(trace, name):
    m = re.search(r"(?:^|\s)" + name + r"=(\S+)", trace)
    return m.group(1) if m else None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    events = read(sys.argv[1])
    tgid = {tid: pid for _, pid, tid, _, _ in events}
    plues, zygote = [], None
    forks = {}  # child pid -> (parent tgid, time)
    for t, pid, tid, event, trace in events:
        if event == "sched_process_exec":
            name = field(trace, "filename") or ""
            if name.endswith("/plue"):
                plues.append(pid)
        if event == "sched_process_fork":
            forks[int(field(trace, "child_pid"))] = (pid, t)
    if len(plues) < 2:
        sys.exit("no engine and runner found: was `plue run` traced with -a?")
    engine = plues[0]
    execs = {tid: field(trace, "filename") for _, _, tid, ev, trace in events if ev == "sched_process_exec"}
    leaders = [c for c, (parent, _) in forks.items() if parent in plues and (execs.get(c) or "").endswith("/bash")]
    pythons = [c for c, (parent, _) in forks.items() if parent in plues and "python3" in (execs.get(c) or "")]
    if pythons:
        zygote = pythons[0]
        runner = forks[zygote][0]
        steps = [c for c, (parent, _) in forks.items() if parent == zygote]
    else:
        runner = forks[leaders[0]][0] if leaders else None
        steps = leaders
    if runner is None or not steps:
        sys.exit("no step processes found in the trace")
    steps_set = set(steps)

    def side(tid):
        return "engine" if tgid.get(tid) == engine else "runner" if tgid.get(tid) == runner else None

    wakes = []  # (t, waker side, target tid)
    at = {c: {} for c in steps}
    for t, pid, tid, event, trace in events:
        if event == "sched_waking":
            target = int(field(trace, "pid"))
            wakes.append((t, side(tid), target, tid))
            if target in steps_set:
                at[target].setdefault("woken", []).append((t, tid))
            if tid in steps_set and target == zygote:
                at[tid].setdefault("ok", t)
        elif event == "sched_process_exit" and tid in steps_set:
            at[tid]["exit"] = t
        elif event == "sched_switch":
            prev, state = int(field(trace, "prev_pid")), field(trace, "prev_state") or ""
            if prev in steps_set and state.startswith("Z"):
                at[prev].setdefault("zombie", t)
    times = [w[0] for w in wakes]

    def first_wake(after, before, waker, target_side):
        i = bisect.bisect(times, after)
        while i < len(wakes) and wakes[i][0] < before:
            if wakes[i][1] == waker and side(wakes[i][2]) == target_side:
                return wakes[i][0]
            i += 1
        return None

    # A step starts (for its stretches) when the runner lets it go: a bash leader's fork;
    # a python step's go (the runner's wake-up of it after the zygote's answer).
    def start(c):
        if not pythons:
            return forks[c][1]
        gos = [t for t, waker in at[c].get("woken", []) if side(waker) == "runner"]
        return gos[0] if gos else None

    ordered = sorted((start(c), c) for c in steps if start(c) is not None and "zombie" in at[c] and "exit" in at[c])
    stretches = {}

    def add(name, value):
        stretches.setdefault(name, []).append(value * 1000)

    for (t0, c), (t_next, n) in zip(ordered, ordered[1:]):
        d = at[c]
        sent = first_wake(d["zombie"], t_next, "runner", "engine")
        answered = sent and first_wake(sent, t_next, "engine", "runner")
        if not answered:
            continue
        if pythons:
            # The request reaches the next spare: its first wake-up after the answer.
            request = next((t for t, _ in at[n].get("woken", []) if t > answered), None)
            ok = at[n].get("ok")
            if request is None or ok is None or not request < ok < t_next:
                continue
            add("python: script (go → exit)", d["exit"] - t0)
        else:
            add("bash: fork → exit (set-up, exec, `true`)", d["exit"] - t0)
        add("exit → zombie (the process's teardown)", d["zombie"] - d["exit"])
        add("runner: zombie → completion sent", sent - d["zombie"])
        add("engine: completion → next assignment", answered - sent)
        if pythons:
            add("runner: assignment → the request reaches the spare", request - answered)
            add("spare: request → set up (OK)", ok - request)
            add("zygote and runner: OK → go", t_next - ok)
        else:
            add("runner: assignment → next fork", t_next - answered)
        add("the whole step (start → next start)", t_next - t0)
    if not stretches:
        sys.exit("no complete step found in the trace")
    kind = "python" if pythons else "bash"
    print(f"{kind} chain: engine {engine}, runner {runner}, {len(ordered)} steps traced\n")
    print("| stretch | median ms | mean ms | steps |\n|---|---:|---:|---:|")
    for name, values in stretches.items():
        print(f"| {name} | {statistics.median(values):.3f} | {statistics.mean(values):.3f} | {len(values)} |")


if __name__ == "__main__":
    main()
