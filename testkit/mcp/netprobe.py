#!/usr/bin/python3
"""A hostile MCP stdio server (standard library only): it tries the network, on start
and when asked, and says what happened. For "a server that tries the network under
`none`" (and under an allow-list).

    netprobe.py [--connect HOST:PORT]... [--resolve NAME]... [--out FILE]

On start (on a thread, so initialize is answered at once) it opens a TCP connection to
each --connect target (or NETPROBE_CONNECT, comma-separated; default 1.1.1.1:443) and
resolves each --resolve name (or NETPROBE_RESOLVE, comma-separated; default example.com),
3 s each at most for the connections; the results go to stderr and, with --out FILE (or
NETPROBE_OUT), to FILE as one JSON object, written when all are done:
  {"interfaces": [...], "connect": {"HOST:PORT": "connected" | "error: ..."},
   "resolve": {"NAME": ["ADDRESS", ...] | "error: ..."}}

Tools:
  startup {}   -> that JSON object (waits for the start's probes)
  probe {host?: string, port?: integer, name?: string, timeout?: number}
               -> a JSON object: "connect" (host:port, when both are given: "connected" or
                  "error: ..."), "resolve" (name, when given: its addresses or
                  "error: ..."), "interfaces" (the names in /proc/net/dev)
"""

import argparse
import json
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcpwire  # noqa: E402
from friendly import connect  # noqa: E402
from mcpwire import INTEGER, NUMBER, STRING  # noqa: E402


def interfaces():
    try:
        with open("/proc/net/dev") as f:
            return [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]
    except OSError as e:
        return f"error: {e}"


def resolve(name):
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(name, None)})
    except socket.gaierror as e:
        return f"error: {e}"
    except OSError as e:
        return f"error: {e}"


def split_target(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def from_env(name, default):
    value = os.environ.get(name)
    return [v for v in value.split(",") if v] if value else default


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", action="append")
    parser.add_argument("--resolve", action="append")
    parser.add_argument("--out", default=os.environ.get("NETPROBE_OUT"))
    args = parser.parse_args()
    targets = args.connect or from_env("NETPROBE_CONNECT", ["1.1.1.1:443"])
    names = args.resolve or from_env("NETPROBE_RESOLVE", ["example.com"])

    report = {"interfaces": interfaces(), "connect": {}, "resolve": {}}
    done = threading.Event()

    def probe_at_start():
        for target in targets:
            host, port = split_target(target)
            report["connect"][target] = connect(host, port, 3)
            mcpwire.log("netprobe", f"connect {target}: {report['connect'][target]}")
        for name in names:
            report["resolve"][name] = resolve(name)
            mcpwire.log("netprobe", f"resolve {name}: {report['resolve'][name]}")
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f)
        done.set()

    threading.Thread(target=probe_at_start, daemon=True).start()

    def startup(_args):
        done.wait()
        return json.dumps(report, sort_keys=True)

    def probe(a):
        result = {"interfaces": interfaces()}
        if a.get("host") and a.get("port") is not None:
            result["connect"] = connect(a["host"], int(a["port"]), float(a.get("timeout", 3)))
        if a.get("name"):
            result["resolve"] = resolve(a["name"])
        mcpwire.log("netprobe", f"probe {json.dumps(a)}: {json.dumps(result)}")
        return json.dumps(result, sort_keys=True)

    server = mcpwire.Server("plue-test-netprobe")
    server.tool("startup", "What the network probes at start found.", {}, startup)
    server.tool(
        "probe",
        "Tries a TCP connection to host:port and resolves a name; says what happened.",
        {"host": STRING, "port": INTEGER, "name": STRING, "timeout": NUMBER},
        probe,
        required=[],
    )
    server.run()


if __name__ == "__main__":
    main()
