"""What `chat`, `fix` and the harness build alike: the limits, the compactor, the sandbox, the guarded approvals,
the checkpoints, the MCP servers and the system prompt of an agent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from kcode.agent.approvals import Approvals
from kcode.agent.context import CompactionSettings, Compactor
from kcode.agent.conversation import Conversation
from kcode.agent.events import ApprovalDecided
from kcode.agent.limits import Budget, Limits
from kcode.agent.prompt import project_rules, system_prompt
from kcode.backends.base import Backend
from kcode.checkpoints.steps import SessionCheckpoints
from kcode.checkpoints.store import CheckpointStore, store_directory
from kcode.config import Settings
from kcode.mcp.tools import McpTool
from kcode.messages import system
from tools.bash import BashTool
from tools.sandbox import Sandbox, SandboxPolicy, sandbox_for
from tools.toolset import Toolset

if TYPE_CHECKING:
    from kcode.mcp.connection import McpServers


def budget(settings: Settings, *, max_steps: int | None = None) -> Budget:
    limits = Limits(max_steps=max_steps or settings.max_steps, max_wall_s=settings.time_limit_s,
                    max_tokens=settings.token_limit, max_cost_usd=settings.cost_limit_usd)
    return Budget(limits, settings.profile.pricing)


def guarded(approvals: Approvals, settings: Settings, root: Path, toolset: Toolset, *, home: Path,
            on_decision: Callable[[ApprovalDecided], None] | None) -> Approvals:
    """`approvals` with the destructive-command guard told what is precious (the workspace, `home`) and where
    the bash session stands, so `rm -rf build` is judged where it will run, and with the tools of trusted MCP
    servers let through; decisions go to `on_decision`."""
    bash = toolset.get("bash")
    shell_cwd = (lambda: bash.session.cwd) if isinstance(bash, BashTool) else None
    trusted = frozenset(name for name in toolset.names
                        if isinstance(tool := toolset.get(name), McpTool) and tool.trusted)
    return replace(approvals, allow_destructive=settings.allow_destructive, workspace=root, home=home,
                   shell_cwd=shell_cwd, on_decision=on_decision, trusted_tools=trusted)


@contextmanager
def mcp_servers(settings: Settings, root: Path, report: Callable[[str], object]) -> Iterator[McpServers | None]:
    """The configured MCP servers, connected for the session (each one that fails is reported in one line and left
    out); None, without importing the SDK, when none is enabled or `--no-mcp` turned them off.

    The SDK is imported here, inside the function, so that `kcode --help` and sessions without servers skip it.
    """
    if not settings.mcp or not any(config.enabled for config in settings.mcp_servers):
        yield None
        return
    from kcode.mcp.connection import McpServers

    with McpServers.start(settings.mcp_servers, cwd=root) as servers:
        for status in servers.statuses():
            if status.state == "failed":
                report(f"MCP server {status.name} is left out: {status.detail}")
        yield servers


def checkpoints(settings: Settings, root: Path, session_id: str) -> SessionCheckpoints:
    """Snapshots before each step, kept in kcode's data directory, which the sandbox hides from the agent."""
    return SessionCheckpoints(CheckpointStore(root, store_directory(settings.data_dir, root)), session_id)


def compactor(settings: Settings, backend: Backend, root: Path) -> Compactor:
    return Compactor(backend, CompactionSettings(threshold=settings.compact_threshold), rules=project_rules(root))


def new_conversation(root: Path, toolset: Toolset) -> Conversation:
    """A history holding only the system prompt, with the project's AGENTS.md rules."""
    return Conversation([system(system_prompt(root, toolset, project_rules(root)))])


def sandbox(settings: Settings, root: Path, home: Path) -> Sandbox:
    """The agent's shell confined to `root` as the settings say, with `home`'s credential files hidden."""
    policy = SandboxPolicy(mode=settings.sandbox, allow_network=settings.allow_network, writable=(root,),
                           home=home, hidden=(settings.config_dir, settings.data_dir))
    return sandbox_for(policy)
