"""Layer (b) probe: run with full Python *after* lock-down, by tests only (--probe-lockdown).

Each check tries something the process layer must stop, even with the language layer gone,
and records "blocked: <error>" or "ALLOWED". `report` is the JSON of the results.
"""
import json
import os


def _try(action):
    try:
        action()
        return "ALLOWED"
    except BaseException as e:  # noqa: BLE001 - any failure means blocked
        return f"blocked: {type(e).__name__}: {e}"


def _socket():
    import _socket

    _socket.socket()


def _connect():
    import _socket

    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    s.connect(("127.0.0.1", 9))


def _write_file():
    fd = os.open("/tmp/plue-probe-pwned", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"pwned")


def _append_file():
    os.open("/etc/hostname", os.O_APPEND | os.O_WRONLY)


def _mkdir():
    os.mkdir("/tmp/plue-probe-dir")


def _fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)


def _exec():
    os.execv("/bin/true", ["/bin/true"])


def _kill_parent():
    os.kill(os.getppid(), 0)


def _load_extension_module():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _big_allocation():
    bytearray(512 * 1024 * 1024)


report = json.dumps(
    {
        "environment": sorted(os.environ),
        "cwd": os.getcwd(),
        "socket": _try(_socket),
        "connect": _try(_connect),
        "write_file": _try(_write_file),
        "append_file": _try(_append_file),
        "mkdir": _try(_mkdir),
        "fork": _try(_fork),
        "exec": _try(_exec),
        "kill_parent": _try(_kill_parent),
        "load_extension_module": _try(_load_extension_module),
        "big_allocation": _try(_big_allocation),
        "read_file": _try(lambda: open("/etc/hostname").read()),
    }
)
