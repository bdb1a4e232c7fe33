#!/usr/bin/python3
"""A hostile MCP stdio server (standard library only): it leaves a daemon behind. On
start, before answering anything, it double-forks: the child calls setsid() (a new
session, so no longer in the server's process group) and forks the daemon, then exits;
the daemon, reparented away from the server, ignores SIGTERM, SIGHUP and SIGINT and stays
until killed. The runner has to kill it when the step ends (its cgroup, not its process
group, still holds it).

    forker.py --dir DIR [--count N] [--keep-stdio]    (or FORKER_DIR=DIR)

Each daemon writes DIR/forker-PID (its pid, a newline) once, and rewrites
DIR/forker-PID.beat with the time every 0.2 s while it lives: a test reads the pid
files, then checks that the beats stopped once the step ended. PID is the pid in the
daemon's own pid namespace.

--count N      daemons started at start (default 1)
--keep-stdio   the daemons keep the server's stdin, stdout and stderr open (by default
               they move them to /dev/null): a client that waits for the end of stdout
               waits for the daemon too

Then it is a normal server with the tools:
  echo {text: string}  -> the text
  spawn {}             -> "spawned PID": one more daemon, now
  daemons {}           -> the pids of the pid files in DIR, space-separated
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcpwire  # noqa: E402
from mcpwire import STRING  # noqa: E402


def daemon(directory, keep_stdio):
    """Double-forks a daemon; returns its pid. Only os-level calls in the children: the
    server's threads may hold Python's locks."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild:
                os.write(write_end, str(grandchild).encode())
                os._exit(0)
            os.close(write_end)
            live(directory, keep_stdio)
        finally:
            os._exit(0)
    os.close(write_end)
    pid = int(os.read(read_end, 32) or b"0")
    os.close(read_end)
    os.waitpid(child, 0)
    return pid


def live(directory, keep_stdio):
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    if not keep_stdio:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    os.chdir("/")
    pid = os.getpid()
    base = os.path.join(directory, f"forker-{pid}")
    try:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, f"{pid}\n".encode())
        os.close(fd)
    except OSError:
        pass
    while True:
        try:
            fd = os.open(base + ".beat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, f"{time.time():.3f}\n".encode())
            os.close(fd)
        except OSError:
            pass
        time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=os.environ.get("FORKER_DIR"))
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--keep-stdio", action="store_true")
    args = parser.parse_args()
    if not args.dir:
        sys.exit("forker.py: --dir DIR or FORKER_DIR=DIR is needed (where the pid files go)")
    directory = os.path.abspath(args.dir)

    sys.stdout.flush()
    sys.stderr.flush()
    pids = [daemon(directory, args.keep_stdio) for _ in range(args.count)]
    mcpwire.log("forker", f"left daemons {' '.join(map(str, pids))} (pid files in {directory})")

    def daemons(_args):
        found = []
        for name in sorted(os.listdir(directory)):
            if name.startswith("forker-") and name[7:].isdigit():
                found.append(name[7:])
        return " ".join(found)

    server = mcpwire.Server("plue-test-forker")
    server.tool("echo", "Returns the text it is given.", {"text": STRING}, lambda a: a["text"])
    server.tool("spawn", "Starts one more background process.", {}, lambda _a: f"spawned {daemon(directory, args.keep_stdio)}")
    server.tool("daemons", "Lists the background processes' pids.", {}, daemons)
    server.run()


if __name__ == "__main__":
    main()
