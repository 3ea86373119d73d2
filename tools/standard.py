"""The toolset every kcode agent gets: bash, the editor, text and file search, and `submit` for headless runs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tools.base import Tool
from tools.bash import BashTool
from tools.clamp import OutputClamp
from tools.editor import EditorTool
from tools.sandbox import Sandbox
from tools.search import FindFilesTool, SearchTextTool
from tools.settings import ToolSettings
from tools.submit import SubmitTool
from tools.toolset import Toolset
from tools.workspace import Workspace


def standard_toolset(root: Path, settings: ToolSettings | None = None, *, submit: bool = False,
                     spill_dir: Path | None = None, hidden_env: Iterable[str] = (),
                     shell_env: Mapping[str, str] | None = None, sandbox: Sandbox | None = None,
                     extra_tools: Sequence[Tool] = ()) -> Toolset:
    """Tools confined to `root`; outputs cut by the clamp are saved in `spill_dir`, which the editor may view.

    The bash session gets `shell_env` (default: this process's environment) less the variables named in
    `hidden_env` (API keys: the model must not read them); it is confined by `sandbox` (unconfined without
    one). Without `spill_dir` the clamp makes a temporary one. `extra_tools` (an MCP server's, say) join the set
    and share its clamp.
    Close the toolset (or use it in `with`) to end its bash session and remove a temporary spill directory.
    """
    if isinstance(hidden_env, str):
        raise ValueError(f"hidden_env takes names of variables, not one string: pass [{hidden_env!r}]")
    settings = settings or ToolSettings()
    hidden = set(hidden_env)
    env = {name: value for name, value in (os.environ if shell_env is None else shell_env).items()
           if name not in hidden}
    clamp = OutputClamp(settings, spill_dir)
    try:
        workspace = Workspace(root, readable_roots=(clamp.spill_dir,),
                              allow_outside=settings.allow_outside_workspace)
        tools: list[Tool] = [
            BashTool(workspace, settings, clamp, env=env,
                     launcher=sandbox.launcher_for(clamp.spill_dir) if sandbox is not None else (),
                     rules=sandbox.rules if sandbox is not None else "",
                     denial=sandbox.denial if sandbox is not None and sandbox.active else None),
            EditorTool(workspace, settings),
            SearchTextTool(workspace, settings),
            FindFilesTool(workspace, settings),
        ]
    except BaseException:
        clamp.close()  # a temporary spill directory must not outlive a toolset that was never made
        raise
    if submit:
        tools.append(SubmitTool())
    return Toolset([*tools, *extra_tools], clamp)
