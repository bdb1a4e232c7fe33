#!/usr/bin/python3
"""A well-behaved MCP stdio server (standard library only) for the tests of `llm` steps'
MCP tools.

    friendly.py

Tools:
  add {a: number, b: number}       -> "a+b" (integers stay integers: add 2 3 -> "5")
  echo {text: string}              -> the text
  whoami {}                        -> a JSON object: uid, gid, groups, pid, cwd, hostname,
                                      interfaces (names from /proc/net/dev), tmp_empty (and
                                      tmp_entries, the first 100 names in /tmp), env (the names
                                      of the environment variables, not their values),
                                      cgroup (/proc/self/cgroup) - so a test can check the
                                      server runs in the step's room
  secret_echo {name: string}       -> the value of the environment variable `name` (an
                                      error result when it is unset): the masking test
  fetch {host: string, port: integer, timeout?: number}
                                   -> "connected" when a TCP connection to host:port opens
                                      within timeout (default 3 s), else "error: ..." (the
                                      name lookup's or the connection's error): the network
                                      policy test
  link {url: string, text?: string}
                                   -> "See [text](url) for the details." (text defaults to
                                      "this page"): the outbound wall test
  hidden_admin {command?: string}  -> "hidden_admin ran: COMMAND"; listed by tools/list but
                                      never allow-listed by the tests, so it must never be
                                      shown or called. When the environment variable
                                      HIDDEN_ADMIN_MARKER names a file, a call appends a line
                                      to it, so a test can prove it was never called.
"""

import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcpwire  # noqa: E402
from mcpwire import INTEGER, NUMBER, STRING, ToolError  # noqa: E402


def add(args):
    a, b = args["a"], args["b"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        raise ToolError("a and b must be numbers")
    return str(a + b)


def whoami(_args):
    return json.dumps(room(), sort_keys=True)


def room():
    """What the process sees of where it runs (shared with http_server.py)."""
    try:
        with open("/proc/net/dev") as f:
            interfaces = [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
    except OSError as e:
        interfaces = f"error: {e}"
    try:
        tmp_entries = sorted(os.listdir("/tmp"))
    except OSError as e:
        tmp_entries = f"error: {e}"
    try:
        with open("/proc/self/cgroup") as f:
            cgroup = f.read().strip()
    except OSError as e:
        cgroup = f"error: {e}"
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
        "interfaces": interfaces,
        "tmp_empty": tmp_entries == [],
        "tmp_entries": tmp_entries[:100] if isinstance(tmp_entries, list) else tmp_entries,
        "env": sorted(os.environ),
        "cgroup": cgroup,
    }


def secret_echo(args):
    name = args["name"]
    if name not in os.environ:
        raise ToolError(f"{name} is not set")
    return os.environ[name]


def fetch(args):
    host, port = args["host"], int(args["port"])
    timeout = float(args.get("timeout", 3))
    return connect(host, port, timeout)


def connect(host, port, timeout):
    """ "connected", or "error: ..." saying what failed (shared with netprobe.py)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "connected"
    except socket.gaierror as e:
        return f"error: name lookup: {e}"
    except OSError as e:
        return f"error: {e}"


def link(args):
    return f"See [{args.get('text') or 'this page'}]({args['url']}) for the details."


def hidden_admin(args):
    command = args.get("command", "")
    marker = os.environ.get("HIDDEN_ADMIN_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"hidden_admin called: {command}\n")
    return f"hidden_admin ran: {command}"


def main():
    server = mcpwire.Server("plue-test-friendly")
    server.tool("add", "Adds two numbers and returns the sum.", {"a": NUMBER, "b": NUMBER}, add)
    server.tool("echo", "Returns the text it is given.", {"text": STRING}, lambda a: a["text"])
    server.tool(
        "whoami",
        "Describes the process: user and group ids, working directory, host name, network "
        "interfaces, whether /tmp is empty, and the names of its environment variables.",
        {},
        whoami,
    )
    server.tool(
        "secret_echo",
        "Returns the value of the environment variable it is given the name of.",
        {"name": STRING},
        secret_echo,
    )
    server.tool(
        "fetch",
        "Tries a TCP connection to host:port; says 'connected' or the error.",
        {"host": STRING, "port": INTEGER, "timeout": NUMBER},
        fetch,
        required=["host", "port"],
    )
    server.tool(
        "link",
        "Returns a sentence with a Markdown link to the URL it is given.",
        {"url": STRING, "text": STRING},
        link,
        required=["url"],
    )
    server.tool(
        "hidden_admin",
        "Administrative command. Never offered to a model: the tests do not allow-list it.",
        {"command": STRING},
        hidden_admin,
        required=[],
    )
    server.run()


if __name__ == "__main__":
    main()
