"""Connections to MCP servers through the official `mcp` SDK, run on one background event-loop thread.

The SDK is asyncio and the agent loop is not. `McpServers` owns a thread running an event loop; each server
is held open by one task there (the SDK's transports and sessions must be entered and left by the same task),
and the agent's thread hands each call over and waits for the answer. Servers start concurrently; one that
fails or outlasts its `startup_timeout_s` is left out and says why. One that dies later is marked stopped:
its tools answer with an error saying so until `restart` brings it back.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import mcp_types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from kcode.mcp.config import McpServerConfig
from kcode.mcp.results import tool_result
from kcode.mcp.schema import adapt_input_schema
from kcode.mcp.status import ServerState, ServerStatus
from kcode.mcp.tools import McpTool, describe, kcode_tool_name
from tools.base import ToolResult

_CLOSE_WAIT_S = 5.0
_T = TypeVar("_T")


class _Link:
    """One server: the task that holds its session open, the tools it listed, and how it stands."""

    def __init__(self, config: McpServerConfig, cwd: Path) -> None:
        self.config, self.cwd = config, cwd
        self.state: ServerState = "failed"
        self.detail = "not started"
        self.session: ClientSession | None = None
        self.tools: list[mcp_types.Tool] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stderr: TextIO | None = None

    async def start(self) -> None:
        """Connect and list the tools within the startup timeout; otherwise stop trying and say why."""
        self.state, self.detail, self.session, self.tools = "failed", "", None, []
        if self.config.problem is not None:
            self.detail = self.config.problem
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(ready))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.config.startup_timeout_s)
        except TimeoutError:
            await self.stop(wait_s=0)
            self.state, self.detail = "failed", f"did not start within {self.config.startup_timeout_s:g} s"
        except Exception as exc:
            self.state, self.detail = "failed", self._reason(exc)

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        try:
            async with AsyncExitStack() as stack:
                read, write = await self._open_transport(stack)
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.tools = await _all_tools(session)
                self.session, self.state = session, "connected"
                ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif self.state == "connected":
                self.mark_stopped(exc)
        finally:
            self.session = None

    async def _open_transport(self, stack: AsyncExitStack) -> tuple[Any, Any]:
        config = self.config
        if config.command is not None:
            if self._stderr is None:  # the server's log, kept so a failure can quote its last line
                self._stderr = cast(TextIO, tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace"))  # noqa: SIM115
            parameters = StdioServerParameters(command=config.command, args=list(config.args), env=dict(config.env),
                                               cwd=self.cwd)
            read, write = await stack.enter_async_context(stdio_client(parameters, errlog=self._stderr))
            return read, write
        client = await stack.enter_async_context(create_mcp_http_client(headers=dict(config.headers)))
        read, write = await stack.enter_async_context(streamable_http_client(str(config.url), http_client=client))
        return read, write

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        name = self.config.name
        session = self.session
        if self.state != "connected" or session is None:
            return ToolResult.error(f"The MCP server {name!r} is not running ({self.detail}); its tools cannot be "
                                    "used until the user restarts it. Do without them.")
        try:
            result = await asyncio.wait_for(session.call_tool(tool, dict(arguments)), self.config.tool_timeout_s)
        except TimeoutError:
            return ToolResult.error(f"The MCP server {name!r} did not answer within {self.config.tool_timeout_s:g} "
                                    "s; the call was abandoned.")
        except MCPError as exc:
            if exc.code != mcp_types.CONNECTION_CLOSED:
                return ToolResult.error(f"The MCP server {name!r} refused the call: {exc.message}")
            self.mark_stopped(exc, "it exited or closed the connection")
            return ToolResult.error(f"The MCP server {name!r} stopped during the call ({self.detail}); its tools "
                                    "cannot be used until the user restarts it.")
        except Exception as exc:
            self.mark_stopped(exc)
            return ToolResult.error(f"The MCP server {name!r} failed during the call ({self.detail}); its tools "
                                    "cannot be used until the user restarts it.")
        return tool_result(result)

    def mark_stopped(self, exc: BaseException, detail: str | None = None) -> None:
        """Its session has ended; `detail` (default: the error in words) says how."""
        self.state, self.session = "stopped", None
        self.detail = detail or self._reason(exc, quote_log=False)
        self._stop.set()

    async def stop(self, wait_s: float = _CLOSE_WAIT_S) -> None:
        """End the session (and a stdio server's process), waiting `wait_s` for it before cancelling outright."""
        task, self._task = self._task, None
        self._stop.set()
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), wait_s)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:  # the session already ended in an error, reported when it happened
            pass

    def close_log(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def status(self) -> ServerStatus:
        tools = tuple((tool.name, (tool.description or "").strip()) for tool in self.tools)
        return ServerStatus(self.config.name, self.state, self.config.target, self.config.trust, self.detail,
                            tools if self.state == "connected" else ())

    def _reason(self, exc: BaseException, *, quote_log: bool = True) -> str:
        """The error in a few words; with `quote_log`, the last line the server wrote to stderr as well (at start-up
        the likeliest cause; later it may be about anything)."""
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        text = str(exc) if isinstance(exc, MCPError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        if quote_log and self._stderr is not None:
            self._stderr.seek(0)
            lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
            if lines:
                text += f"; it said: {lines[-1][:200]}"
        return text


async def _all_tools(session: ClientSession) -> list[mcp_types.Tool]:
    """Every tool the server lists, page after page."""
    page = await session.list_tools()
    tools = list(page.tools)
    while page.next_cursor:
        page = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=page.next_cursor))
        tools.extend(page.tools)
    return tools


class McpServers:
    """The session's MCP servers, connected on a background event-loop thread; close it to stop them."""

    def __init__(self, configs: Sequence[McpServerConfig], *, cwd: Path) -> None:
        self._configs = list(configs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kcode-mcp", daemon=True)
        self._thread.start()
        self._links = {config.name: _Link(config, cwd) for config in configs if config.enabled}

    @classmethod
    def start(cls, configs: Sequence[McpServerConfig], *, cwd: Path) -> McpServers:
        """Connect every enabled server at once; returns when each has started, failed or timed out."""
        servers = cls(configs, cwd=cwd)
        try:
            servers._wait(servers._start_all())
        except BaseException:
            servers.close()
            raise
        return servers

    async def _start_all(self) -> None:
        await asyncio.gather(*(link.start() for link in self._links.values()))

    def statuses(self) -> list[ServerStatus]:
        """Every configured server, disabled ones included, in the order of the config file."""
        return [self._links[c.name].status() if c.name in self._links else ServerStatus(c.name, "disabled", c.target)
                for c in self._configs]

    def tools(self) -> list[McpTool]:
        """The tools of the servers that started, named `mcp__SERVER__TOOL`; a name taken twice keeps the first."""
        tools: dict[str, McpTool] = {}
        for link in self._links.values():
            for tool in link.tools:
                name = kcode_tool_name(link.config.name, tool.name)
                tools.setdefault(name, McpTool(name, describe(link.config.name, tool.description),
                                               adapt_input_schema(tool.input_schema), link.config.name, tool.name,
                                               link.config.trust, self))
        return list(tools.values())

    def call(self, server: str, tool: str, arguments: Mapping[str, Any]) -> ToolResult:
        link = self._links.get(server)
        if link is None:
            return ToolResult.error(f"There is no running MCP server named {server!r}.")
        return self._wait(link.call(tool, arguments))

    def restart(self, name: str) -> ServerStatus | None:
        """Stop the server (if it runs) and start it again; None when no enabled server has that name."""
        link = self._links.get(name)
        if link is None:
            return None

        async def again() -> None:
            await link.stop()
            await link.start()

        self._wait(again())
        return link.status()

    def close(self) -> None:
        """Stop every server and the event-loop thread."""
        if self._loop.is_closed():
            return

        async def stop_all() -> None:
            await asyncio.gather(*(link.stop() for link in self._links.values()))

        try:
            self._wait(stop_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_CLOSE_WAIT_S)
            if not self._thread.is_alive():
                self._loop.close()
            for link in self._links.values():
                link.close_log()

    def __enter__(self) -> McpServers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wait(self, work: Awaitable[_T]) -> _T:
        """Run `work` on the servers' loop and wait for it; Ctrl-C abandons it (a call is cancelled there)."""
        future = asyncio.run_coroutine_threadsafe(_awaited(work), self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise


async def _awaited(work: Awaitable[_T]) -> _T:
    return await work
