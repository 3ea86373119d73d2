"""A real MCP server for kcode's tests, written with the official SDK's `MCPServer`.

    python demo.py stdio            serve on stdin/stdout
    python demo.py http PORT        serve streamable HTTP on 127.0.0.1:PORT at /mcp
    python demo.py hang             never answer (a server that hangs at start-up)
    python demo.py exit             write a line to stderr and exit before the handshake

`TEST_MARK` in the environment, when set, is added to `echo`'s answer: it shows a variable reached the server.
"""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("demo")


@server.tool()
def echo(text: str) -> str:
    """Answer with the text given, prefixed so a test can tell it came from this server."""
    return f"demo says: {text}{os.environ.get('TEST_MARK', '')}"


@server.tool()
def add(a: int, b: int | None = None) -> int:
    """Add two integers."""
    return a + (b or 0)


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the reason given."""
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
def huge(lines: int) -> str:
    """Numbered lines, as many as asked for."""
    return "".join(f"line {n} of a very long answer\n" for n in range(1, lines + 1))


@server.tool()
def picture() -> Image:
    """A small PNG image."""
    return Image(data=b"\x89PNG\r\n\x1a\n" + bytes(92), format="png")


@server.tool()
def crash() -> str:
    """Kills the server mid-call."""
    os._exit(3)


def main(argv: list[str]) -> None:
    mode = argv[1]
    if mode == "hang":
        time.sleep(3600)
    elif mode == "exit":
        sys.stderr.write("demo: cannot open its database\n")
        sys.exit(1)
    elif mode == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(argv[2]))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main(sys.argv)
