#!/usr/bin/python3
"""A minimal MCP streamable-HTTP server (standard library only), for the HTTP transport
and its credentials: every request must carry `Authorization: Bearer $TOKEN`.

    TOKEN=secret http_server.py [--host 127.0.0.1] [--port 0] [--port-file FILE]

It listens on HOST:PORT (port 0: one the kernel picks) and prints
`listening on http://HOST:PORT/mcp` on stdout once it accepts connections; with
--port-file, the port is also written to FILE (atomically) then.

The endpoint is /mcp:
  POST    one JSON-RPC message. A request is answered with 200 and a JSON body
          (`Content-Type: application/json`, never an event stream); a notification or
          a response with 202 and no body. `initialize` opens a session: its answer
          carries `Mcp-Session-Id`, which every later request must send back (400
          without it, 404 for a session it does not know). A batch (a JSON array) gets
          400.
  GET     405 (it offers no event stream)
  DELETE  ends the session (200; 404 when unknown)
When the environment variable TOKEN is set and not empty, a request whose
Authorization header is not exactly `Bearer $TOKEN` gets 401 with
`WWW-Authenticate: Bearer error="invalid_token"` and is otherwise ignored; the number
of such refusals is logged on stderr (never the header's value). An
`MCP-Protocol-Version` header naming a version it does not know gets 400. Any other path
gets 404.

Tools:
  echo {text: string} -> the text
  whoami {}           -> a JSON object: what friendly.py's whoami says about the process,
                         plus "session" (its id), "authorized" (whether an Authorization
                         header came; its value is never shown) and "headers" (the names
                         of the request's headers, lowercased)
"""

import argparse
import json
import os
import secrets
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcpwire  # noqa: E402
from friendly import room  # noqa: E402
from mcpwire import KNOWN_VERSIONS, STRING, ToolError  # noqa: E402

TOKEN = os.environ.get("TOKEN", "")
SESSIONS = set()
SESSIONS_LOCK = threading.Lock()
REFUSED = [0]

TOOLS = mcpwire.Server("plue-test-http")
TOOLS.tool("echo", "Returns the text it is given.", {"text": STRING}, lambda a: a["text"])
TOOLS.tool("whoami", "Describes the server's process and the request.", {}, None)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "plue-test-mcp-http"

    def log_message(self, format, *args):
        mcpwire.log("http", f"{self.command} {self.path} -> " + (format % args))

    # ------------------------------------------------------------------ replies

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def fail(self, status, message, headers=()):
        self.reply(status, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}, headers)

    def admitted(self):
        """Auth, path, protocol version; False when a refusal went out."""
        if self.path.split("?", 1)[0] != "/mcp":
            self.fail(404, f"no such endpoint: {self.path}")
            return False
        if TOKEN and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            REFUSED[0] += 1
            mcpwire.log(
                "http",
                f"refused a request without the token ({REFUSED[0]} so far; "
                f"Authorization header {'present' if self.headers.get('Authorization') else 'absent'})",
            )
            self.drain()
            self.fail(401, "unauthorized", [("WWW-Authenticate", 'Bearer error="invalid_token"')])
            return False
        version = self.headers.get("MCP-Protocol-Version")
        if version is not None and version not in KNOWN_VERSIONS:
            self.drain()
            self.fail(400, f"unsupported MCP-Protocol-Version {version}")
            return False
        return True

    def drain(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def session(self, required=True):
        """The request's known session id; None (and a refusal sent) otherwise."""
        sid = self.headers.get("Mcp-Session-Id")
        if sid is None:
            self.fail(400, "Bad Request: no Mcp-Session-Id header")
            return None
        with SESSIONS_LOCK:
            known = sid in SESSIONS
        if not known:
            self.fail(404, "Session not found")
            return None
        return sid

    # ------------------------------------------------------------------ methods

    def do_GET(self):
        if self.admitted():
            self.reply(405, None, [("Allow", "POST, DELETE")])

    def do_DELETE(self):
        if not self.admitted():
            return
        sid = self.session()
        if sid:
            with SESSIONS_LOCK:
                SESSIONS.discard(sid)
            self.reply(200)

    def do_POST(self):
        if not self.admitted():
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            message = json.loads(self.rfile.read(length))
        except ValueError:
            self.reply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            return
        if not isinstance(message, dict):
            self.fail(400, "batches are not supported")
            return
        method, id_ = message.get("method"), message.get("id")
        if method == "initialize":
            sid = secrets.token_hex(16)
            with SESSIONS_LOCK:
                SESSIONS.add(sid)
            result = TOOLS.initialize_result(message.get("params") or {})
            self.reply(200, {"jsonrpc": "2.0", "id": id_, "result": result}, [("Mcp-Session-Id", sid)])
            return
        sid = self.session()
        if sid is None:
            return
        if method is None or id_ is None:
            self.reply(202)  # a notification or a response
            return
        params = message.get("params") or {}
        if method == "ping":
            self.reply(200, {"jsonrpc": "2.0", "id": id_, "result": {}})
        elif method == "tools/list":
            self.reply(200, {"jsonrpc": "2.0", "id": id_, "result": {"tools": TOOLS.definitions()}})
        elif method == "tools/call":
            self.reply(200, {"jsonrpc": "2.0", "id": id_, "result": self.call(sid, params)})
        else:
            self.reply(
                200, {"jsonrpc": "2.0", "id": id_, "error": {"code": -32601, "message": f"Method not found: {method}"}}
            )

    def call(self, sid, params):
        name, arguments = params.get("name"), params.get("arguments") or {}
        try:
            if name == "echo":
                text = arguments["text"]
            elif name == "whoami":
                described = room()
                described.update(
                    session=sid,
                    authorized="Authorization" in self.headers,
                    headers=sorted({h.lower() for h in self.headers.keys()}),
                )
                text = json.dumps(described, sort_keys=True)
            else:
                raise ToolError(f"Unknown tool: {name}")
        except (ToolError, KeyError) as e:
            return {"content": [{"type": "text", "text": str(e)}], "isError": True}
        return {"content": [{"type": "text", "text": text}], "isError": False}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 0)))
    parser.add_argument("--port-file")
    args = parser.parse_args()
    if ":" in args.host:
        ThreadingHTTPServer.address_family = socket.AF_INET6
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"listening on http://{host}:{port}/mcp", flush=True)
    mcpwire.log("http", f"listening on {host}:{port}, {'a token is required' if TOKEN else 'no token required'}")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
