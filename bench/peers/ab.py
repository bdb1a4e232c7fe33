#!/usr/bin/env python3
"""Two or more `plue` binaries side by side on the peers' workloads: each as a cold
`plue run` on a fresh data directory, alternating the order every round; medians.

    python3 bench/peers/ab.py --plue OLD,NEW [--only W1,V1] [--runs 9]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the same workloads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plue", required=True, help="comma-separated plue binaries")
    parser.add_argument("--only", default="W1,V1")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    binaries = [b for b in args.plue.split(",") if b]
    names = [n for n in args.only.split(",") if n]
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is not an executable")
    times = {(b, n): [] for b in binaries for n in names}
    with tempfile.TemporaryDirectory(prefix="plue-ab-") as work:
        for round_ in range(args.runs):
            for name in names:
                order = binaries if round_ % 2 == 0 else binaries[::-1]
                for binary in order:
                    run_dir = Path(tempfile.mkdtemp(dir=work))
                    workflow = run_dir / "flow.plue.py"
                    workflow.write_text(peers.plue_workflow(name))
                    (run_dir / "ws").mkdir()
                    started = time.perf_counter()
                    subprocess.run(
                        [binary, "run", str(workflow), "--data-dir", str(run_dir / "data")],
                        cwd=run_dir / "ws", env=dict(os.environ, NO_COLOR="1"),
                        capture_output=True, check=True,
                    )
                    times[(binary, name)].append(time.perf_counter() - started)
    print(f"medians of {args.runs} alternated cold runs")
    for name in names:
        cells = "  ".join(f"{b}: {statistics.median(times[(b, name)]):.3f} s" for b in binaries)
        print(f"{name}  {cells}")


if __name__ == "__main__":
    main()
