"""The MCP stdio transport for the test servers in this directory (standard library only):
newline-delimited JSON-RPC 2.0 on stdin and stdout, logs on stderr.

A server is a list of tools and a handler per tool:

    server = Server("friendly")
    server.tool("add", "Adds two numbers.", {"a": NUMBER, "b": NUMBER}, lambda args: ...)
    server.run()

A handler takes the arguments (a dict) and returns a string (the text content), a dict
(the whole `tools/call` result), or raises ToolError (a result with `isError: true`).
Each `tools/call` runs on its own thread, so a slow tool does not stop `ping` or other
calls; every message goes out whole, under one lock (`Server.send`, or `Server.out`
for a tool that writes its own bytes).

Methods: `initialize` (the client's protocolVersion echoed when it is one of
KNOWN_VERSIONS, the newest otherwise), `ping`, `tools/list`, `tools/call`; notifications
are accepted silently; any other request gets -32601. A line that is not JSON gets a
-32700 error, as JSON-RPC says.
"""

import json
import os
import sys
import threading

KNOWN_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]

NUMBER = {"type": "number"}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}


def schema(properties, required=None):
    """A tool's inputSchema: an object of these properties, all required unless told."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


class ToolError(Exception):
    """Raised by a handler: the call's result is this text with isError true."""


def log(name, *parts):
    print(f"[{name}]", *parts, file=sys.stderr, flush=True)


class Server:
    def __init__(self, name, version="1.0.0", list_changed=False, instructions=None):
        self.name = name
        self.version = version
        self.list_changed = list_changed
        self.instructions = instructions
        self.tools = []  # [(definition, handler)]
        self.lock = threading.Lock()
        self.out = sys.stdout.buffer
        self.client_version = None
        # Hooks a server may set: called with the request after its answer went out.
        self.after_list = None
        self.after_call = None
        # Replaces the initialize handler (for servers that misbehave at start).
        self.on_initialize = None

    def tool(self, name, description, properties_or_schema, handler, required=None):
        if "type" in properties_or_schema and properties_or_schema.get("type") == "object":
            input_schema = properties_or_schema
        else:
            input_schema = schema(properties_or_schema, required)
        self.tools.append(
            ({"name": name, "description": description, "inputSchema": input_schema}, handler)
        )

    def definitions(self):
        """The tools/list answer's tools; a server may override it."""
        return [definition for definition, _ in self.tools]

    def handler(self, name):
        for definition, handler in self.tools:
            if definition["name"] == name:
                return handler
        return None

    # ------------------------------------------------------------------ output

    def send(self, message):
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self.lock:
            try:
                self.out.write(data)
                self.out.flush()
            except BrokenPipeError:
                os._exit(0)

    def result(self, id_, result):
        self.send({"jsonrpc": "2.0", "id": id_, "result": result})

    def error(self, id_, code, message):
        self.send({"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}})

    def notify(self, method, params=None):
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    # ------------------------------------------------------------------ input

    def run(self):
        log(self.name, f"started, pid {os.getpid()}")
        stdin = sys.stdin.buffer
        while True:
            line = stdin.readline()
            if not line:
                log(self.name, "stdin closed, exiting")
                return
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.error(None, -32700, "Parse error")
                continue
            if not isinstance(message, dict):
                self.error(None, -32600, "Invalid Request: not an object (batches are not supported)")
                continue
            self.dispatch(message)

    def dispatch(self, message):
        method = message.get("method")
        id_ = message.get("id")
        if method is None:
            return  # an answer to a request of ours; none of these servers sends one
        if id_ is None:
            if method == "notifications/initialized":
                log(self.name, "initialized")
            return
        params = message.get("params") or {}
        if method == "initialize":
            if self.on_initialize:
                self.on_initialize(message)
                return
            self.result(id_, self.initialize_result(params))
        elif method == "ping":
            self.result(id_, {})
        elif method == "tools/list":
            self.result(id_, {"tools": self.definitions()})
            if self.after_list:
                self.after_list(message)
        elif method == "tools/call":
            threading.Thread(target=self.call, args=(message,), daemon=True).start()
        else:
            self.error(id_, -32601, f"Method not found: {method}")

    def initialize_result(self, params):
        asked = params.get("protocolVersion")
        self.client_version = asked
        version = asked if asked in KNOWN_VERSIONS else KNOWN_VERSIONS[0]
        tools = {"listChanged": True} if self.list_changed else {}
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": tools},
            "serverInfo": {"name": self.name, "version": self.version},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def call(self, message):
        id_ = message["id"]
        params = message.get("params") or {}
        name = params.get("name")
        arguments = params.get("arguments") or {}
        handler = self.handler(name)
        if handler is None:
            self.error(id_, -32602, f"Unknown tool: {name}")
            return
        try:
            value = handler(arguments, id_) if getattr(handler, "wants_id", False) else handler(arguments)
        except ToolError as e:
            value = {"content": [{"type": "text", "text": str(e)}], "isError": True}
        except Exception as e:  # a bug or bad arguments: still an answer
            value = {"content": [{"type": "text", "text": f"{type(e).__name__}: {e}"}], "isError": True}
        if value is None:
            return  # the handler answered (or will never answer) by itself
        if isinstance(value, str):
            value = {"content": [{"type": "text", "text": value}], "isError": False}
        self.result(id_, value)
        if self.after_call:
            self.after_call(message)


def wants_id(handler):
    """Marks a handler that takes (arguments, request id) and may answer by itself
    (returning None)."""
    handler.wants_id = True
    return handler


def here():
    return os.path.dirname(os.path.abspath(__file__))
