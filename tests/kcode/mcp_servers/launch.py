"""Starting the demo MCP server for a test: its stdio command line, or a streamable-HTTP instance on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEMO = Path(__file__).with_name("demo.py")


def demo_args(mode: str = "stdio") -> tuple[str, ...]:
    """`command` and `args` of a stdio demo server: this interpreter, so the SDK is importable."""
    return (sys.executable, str(DEMO), mode)


def server_table(name: str, mode: str = "stdio", **keys: object) -> str:
    """A `[mcp_servers.NAME]` table running the demo server, with extra keys as TOML values."""
    command, *args = demo_args(mode)
    lines = [f"[mcp_servers.{name}]", f"command = {_toml(command)}", f"args = [{', '.join(map(_toml, args))}]"]
    lines += [f"{key} = {_toml(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


@contextmanager
def http_demo() -> Iterator[str]:
    """A demo server on streamable HTTP; yields its URL and stops it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([*demo_args("http"), str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the HTTP demo server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)
