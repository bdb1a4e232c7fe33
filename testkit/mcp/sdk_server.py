"""An MCP server written with the official Python SDK (`mcp` from PyPI, pinned by
scripts/mcp/requirements.txt): the same protocol from a real implementation rather than
this directory's hand-written one. Run it with the interpreter scripts/mcp/install.sh
made:

    $PLUE_MCP_PYTHON sdk_server.py                        # stdio
    $PLUE_MCP_PYTHON sdk_server.py streamable-http PORT   # streamable HTTP on
                                                          # http://127.0.0.1:PORT/mcp

Tools:
  add {a: integer, b: integer} -> "a+b"
  greet {name: string}         -> "Hello, NAME!"

mcp 2 renamed FastMCP to MCPServer (mcp.server.mcpserver); mcp 1's name is used when
that is what is installed.
"""

import sys

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer

server = MCPServer("plue-test-sdk")


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers and returns the sum."""
    return str(a + b)


@server.tool()
def greet(name: str) -> str:
    """Greets someone by name."""
    return f"Hello, {name}!"


if __name__ == "__main__":
    if sys.argv[1:2] == ["streamable-http"]:
        port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
        try:
            server.run("streamable-http", host="127.0.0.1", port=port)
        except TypeError:  # mcp 1.x: host and port are settings
            server.settings.host, server.settings.port = "127.0.0.1", port
            server.run("streamable-http")
    else:
        server.run()
