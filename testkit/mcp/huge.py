#!/usr/bin/python3
"""A hostile MCP stdio server (standard library only): answers too big, too long, too
slow, too many, or not JSON at all. Each behaviour really happens (the bytes are
written, the sleep is slept).

    huge.py [--initialize ok|silent|garbage|exit] [--preamble] [--many-tools N]

Tools:
  huge {megabytes: number}   a text result of that many MiB (1 MiB = 1048576 characters
                             of ASCII), written as one JSON line in 64 KiB pieces
  endless {}                 starts an answer (`{"jsonrpc":"2.0","id":ID,"result":
                             {"content":[{"type":"text","text":"AAAA...`) and writes "A"
                             forever, never a newline, until stdout is closed; it holds
                             the output, so nothing else is answered after it
  slow {seconds?: number}    sleeps (default 86400 s), then answers "slept N s"
  flood {count?: integer, kind?: "log"|"progress"}
                             sends `count` (default 10000) notifications first:
                             notifications/message (level info, logger "flood") or, with
                             kind progress, notifications/progress for the call's
                             progressToken (or "flood" when it gave none); then answers
                             "sent N notifications"
  stderr_flood {megabytes: number}
                             writes that many MiB to stderr, then answers "wrote N MiB to
                             stderr" (a client that does not drain stderr blocks it)
  badjson {kind?: string}    answers the call with something that is not its answer:
                             garbage (default): the line `this is not JSON {{{`
                             binary: bytes that are not UTF-8, then a newline
                             array: the line `[1,2,3]`
                             wrong_id: a well-formed result for the id plus 1000
                             no_jsonrpc: the result without its "jsonrpc" member
                             and nothing else for that call
At start:
  --initialize silent   never answers initialize (everything else is answered)
  --initialize garbage  answers initialize with a line that is not JSON
  --initialize exit     exits with status 3 when asked to initialize
  --preamble            writes a line of plain text to stdout before anything else (as
                        servers that log to stdout do)
  --many-tools N        lists N more tools, t00000 ... (each echoes {text})
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcpwire  # noqa: E402
from mcpwire import INTEGER, NUMBER, STRING  # noqa: E402

MIB = 1 << 20
PIECE = 64 << 10


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--initialize", choices=["ok", "silent", "garbage", "exit"], default="ok")
    parser.add_argument("--preamble", action="store_true")
    parser.add_argument("--many-tools", type=int, default=0)
    args = parser.parse_args()

    server = mcpwire.Server("plue-test-huge")
    out = server.out

    def prefix(id_):
        return (
            b'{"jsonrpc":"2.0","id":'
            + json.dumps(id_).encode()
            + b',"result":{"content":[{"type":"text","text":"'
        )

    @mcpwire.wants_id
    def huge(arguments, id_):
        size = int(float(arguments["megabytes"]) * MIB)
        pattern = (b"huge-output-0123456789-" * (PIECE // 23 + 1))[:PIECE]
        with server.lock:
            try:
                out.write(prefix(id_))
                left = size
                while left > 0:
                    out.write(pattern[: min(left, PIECE)])
                    left -= PIECE
                out.write(b'"}],"isError":false}}\n')
                out.flush()
            except BrokenPipeError:
                os._exit(0)
        mcpwire.log("huge", f"wrote {size} bytes of text")

    @mcpwire.wants_id
    def endless(_arguments, id_):
        piece = b"A" * PIECE
        with server.lock:
            try:
                out.write(prefix(id_))
                while True:
                    out.write(piece)
                    out.flush()
            except BrokenPipeError:
                os._exit(0)

    def slow(arguments):
        seconds = float(arguments.get("seconds", 86400))
        time.sleep(seconds)
        return f"slept {seconds:g} s"

    @mcpwire.wants_id
    def flood(arguments, id_):
        count = int(arguments.get("count", 10000))
        kind = arguments.get("kind", "log")
        token = ((arguments.get("_meta") or {}).get("progressToken")) or "flood"
        for i in range(count):
            if kind == "progress":
                server.notify(
                    "notifications/progress",
                    {"progressToken": token, "progress": i + 1, "total": count, "message": f"step {i + 1}"},
                )
            else:
                server.notify(
                    "notifications/message",
                    {"level": "info", "logger": "flood", "data": f"flood message {i + 1} of {count}"},
                )
        return f"sent {count} notifications"

    def stderr_flood(arguments):
        size = int(float(arguments["megabytes"]) * MIB)
        line = (b"stderr flood " * 80)[:1023] + b"\n"
        err = sys.stderr.buffer
        left = size
        while left > 0:
            err.write(line[: min(left, len(line))])
            left -= len(line)
        err.flush()
        return f"wrote {arguments['megabytes']} MiB to stderr"

    @mcpwire.wants_id
    def badjson(arguments, id_):
        kind = arguments.get("kind", "garbage")
        good = {"content": [{"type": "text", "text": "ok"}], "isError": False}
        lines = {
            "garbage": b"this is not JSON {{{\n",
            "binary": b"\xff\xfe\x00garbage\x80\xc3\x28\n",
            "array": b"[1,2,3]\n",
            "wrong_id": json.dumps(
                {"jsonrpc": "2.0", "id": (id_ + 1000) if isinstance(id_, int) else f"{id_}-other", "result": good}
            ).encode()
            + b"\n",
            "no_jsonrpc": json.dumps({"id": id_, "result": good}).encode() + b"\n",
        }
        if kind not in lines:
            raise mcpwire.ToolError(f"unknown kind {kind!r}: one of {', '.join(lines)}")
        with server.lock:
            out.write(lines[kind])
            out.flush()

    # The tools' progressToken lives in params._meta, not in the arguments: pass it along.
    plain_call = server.call

    def call(message):
        params = message.get("params") or {}
        if params.get("name") == "flood" and isinstance(params.get("_meta"), dict):
            params.setdefault("arguments", {})["_meta"] = params["_meta"]
        plain_call(message)

    server.call = call

    server.tool("huge", "Returns a text of the given number of MiB.", {"megabytes": NUMBER}, huge)
    server.tool("endless", "Returns a text that never ends.", {}, endless)
    server.tool("slow", "Sleeps, then answers.", {"seconds": NUMBER}, slow, required=[])
    server.tool(
        "flood",
        "Sends many notifications, then answers.",
        {"count": INTEGER, "kind": {"type": "string", "enum": ["log", "progress"]}},
        flood,
        required=[],
    )
    server.tool("stderr_flood", "Writes MiB to stderr, then answers.", {"megabytes": NUMBER}, stderr_flood)
    server.tool(
        "badjson",
        "Answers with something that is not its answer.",
        {"kind": {"type": "string", "enum": ["garbage", "binary", "array", "wrong_id", "no_jsonrpc"]}},
        badjson,
        required=[],
    )
    for i in range(args.many_tools):
        server.tool(f"t{i:05d}", f"Filler tool number {i}.", {"text": STRING}, lambda a: a["text"])

    if args.initialize != "ok":

        def initialize(message):
            mcpwire.log("huge", f"initialize: {args.initialize}")
            if args.initialize == "garbage":
                with server.lock:
                    out.write(b"<html>this is not an initialize result</html>\n")
                    out.flush()
            elif args.initialize == "exit":
                sys.stdout.flush()
                os._exit(3)

        server.on_initialize = initialize

    if args.preamble:
        out.write(b"huge.py starting up, hello from stdout!\n")
        out.flush()
    server.run()


if __name__ == "__main__":
    main()
