"""What `chat`, `fix` and the harness build alike: the limits, the compactor, the sandbox, the guarded approvals,
the checkpoints and the system prompt of an agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

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
from kcode.messages import system
from tools.bash import BashTool
from tools.sandbox import Sandbox, SandboxPolicy, sandbox_for
from tools.toolset import Toolset


def budget(settings: Settings, *, max_steps: int | None = None) -> Budget:
    limits = Limits(max_steps=max_steps or settings.max_steps, max_wall_s=settings.time_limit_s,
                    max_tokens=settings.token_limit, max_cost_usd=settings.cost_limit_usd)
    return Budget(limits, settings.profile.pricing)


def guarded(approvals: Approvals, settings: Settings, root: Path, toolset: Toolset, *, home: Path,
            on_decision: Callable[[ApprovalDecided], None] | None) -> Approvals:
    """`approvals` with the destructive-command guard told what is precious (the workspace, `home`) and where
    the bash session stands, so `rm -rf build` is judged where it will run; decisions go to `on_decision`."""
    bash = toolset.get("bash")
    shell_cwd = (lambda: bash.session.cwd) if isinstance(bash, BashTool) else None
    return replace(approvals, allow_destructive=settings.allow_destructive, workspace=root, home=home,
                   shell_cwd=shell_cwd, on_decision=on_decision)


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
