#!/usr/bin/python3
"""Starts an MCP server over stdio and checks that it answers: `initialize`, the
`notifications/initialized` notification, then `tools/list` (every page); prints the
tool names, one a line. Standard library only.

    smoke.py [--expect NAME]... [--call NAME JSON]... [--timeout SECONDS] -- COMMAND ARG...

MCP's stdio transport: newline-delimited JSON-RPC 2.0 on the server's stdin and stdout,
its stderr free for logs. Server-to-client requests met on the way (`ping`, `roots/list`)
are answered; notifications (logging, list changes) are skipped.

--expect NAME   fail unless the server lists a tool named NAME
--call NAME J   also call tool NAME with the JSON object J as its arguments, print its
                text content as `NAME -> TEXT`, fail if it is an error
--timeout S     for the whole exchange (default 30)

Exits 0 when every answer came and checked out; otherwise 1, naming what failed and the
end of the server's stderr.
"""

import argparse
import json
import os
import selectors
import subprocess
import sys
import threading
import time

PROTOCOL_VERSION = "2025-06-18"


class Failure(Exception):
    pass


class Server:
    def __init__(self, argv, deadline):
        self.deadline = deadline
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.stderr = bytearray()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.buffer = b""
        self.next_id = 1
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def _drain_stderr(self):
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self.stderr += chunk
            del self.stderr[:-8192]

    def send(self, message):
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise Failure("the server closed its stdin (exited?)") from None

    def read_message(self):
        while b"\n" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise Failure("timed out waiting for the server")
            if not self.selector.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise Failure(f"the server closed its stdout (exit status {self.proc.poll()})")
            self.buffer += chunk
            if len(self.buffer) > 64 << 20:
                raise Failure("more than 64 MiB without a newline")
        line, self.buffer = self.buffer.split(b"\n", 1)
        if not line.strip():
            return self.read_message()
        try:
            return json.loads(line)
        except ValueError:
            raise Failure(f"not JSON on stdout: {line[:200]!r}") from None

    def request(self, method, params):
        id_ = self.next_id
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": id_, "method": method, "params": params})
        while True:
            message = self.read_message()
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                raise Failure(f"not a JSON-RPC 2.0 message: {message!r:.200}")
            if "method" in message:
                if "id" in message:  # a request from the server
                    self._answer(message)
                continue  # a notification
            if message.get("id") != id_:
                raise Failure(f"an answer to id {message.get('id')!r}, waiting for {id_}")
            if "error" in message:
                raise Failure(f"{method}: error {message['error']!r}")
            if "result" not in message:
                raise Failure(f"{method}: an answer with neither result nor error")
            return message["result"]

    def _answer(self, message):
        method = message["method"]
        if method == "ping":
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        elif method == "roots/list":
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": []}})
        else:
            self.send(
                {
                    "jsonrpc": "2.0",
                    "id": message["id"],
                    "error": {"code": -32601, "message": f"smoke.py does not do {method}"},
                }
            )

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            # Its own session: whatever it started goes too.
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


def main():
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--expect", action="append", default=[])
    parser.add_argument("--call", nargs=2, action="append", default=[], metavar=("NAME", "JSON"))
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        parser.error("no command")

    try:
        server = Server(argv, time.monotonic() + args.timeout)
    except OSError as e:
        print(f"smoke.py: cannot start {argv[0]}: {e}", file=sys.stderr)
        return 1
    try:
        init = server.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "plue-smoke", "version": "1"},
            },
        )
        if not isinstance(init.get("protocolVersion"), str) or "tools" not in init.get(
            "capabilities", {}
        ):
            raise Failure(f"initialize: no protocolVersion or no tools capability: {init!r:.300}")
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        names, cursor = [], None
        while True:
            page = server.request("tools/list", {"cursor": cursor} if cursor else {})
            names += [tool["name"] for tool in page.get("tools", [])]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        for name in names:
            print(name)
        missing = [name for name in args.expect if name not in names]
        if missing:
            raise Failure(f"tools/list lacks {', '.join(missing)}")
        for name, arguments in args.call:
            result = server.request("tools/call", {"name": name, "arguments": json.loads(arguments)})
            text = " ".join(
                c.get("text", f"<{c.get('type')}>") for c in result.get("content", [])
            )
            if result.get("isError"):
                raise Failure(f"tools/call {name}: an error: {text}")
            print(f"{name} -> {text}")
    except Failure as e:
        tail = bytes(server.stderr).decode(errors="replace").strip()
        print(f"smoke.py: {' '.join(argv)}: {e}", file=sys.stderr)
        if tail:
            print("  the end of its stderr:", file=sys.stderr)
            for line in tail.splitlines()[-15:]:
                print(f"  | {line}", file=sys.stderr)
        server.close()
        return 1
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
