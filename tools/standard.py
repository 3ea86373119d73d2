"""The toolset every kcode agent gets: bash, the editor, text and file search, and `submit` for headless runs."""

from __future__ import annotations

from pathlib import Path

from tools.base import Tool
from tools.bash import BashTool
from tools.clamp import OutputClamp
from tools.editor import EditorTool
from tools.search import FindFilesTool, SearchTextTool
from tools.settings import ToolSettings
from tools.submit import SubmitTool
from tools.toolset import Toolset
from tools.workspace import Workspace


def standard_toolset(root: Path, settings: ToolSettings | None = None, *, submit: bool = False,
                     spill_dir: Path | None = None) -> Toolset:
    """Tools confined to `root`; outputs cut by the clamp are saved in `spill_dir`, which the editor may view.

    Close the toolset (or use it in `with`) to end its bash session.
    """
    settings = settings or ToolSettings()
    clamp = OutputClamp(settings, spill_dir)
    workspace = Workspace(root, readable_roots=(clamp.spill_dir,), allow_outside=settings.allow_outside_workspace)
    tools: list[Tool] = [
        BashTool(workspace, settings, clamp),
        EditorTool(workspace, settings),
        SearchTextTool(workspace, settings),
        FindFilesTool(workspace, settings),
    ]
    if submit:
        tools.append(SubmitTool())
    return Toolset(tools, clamp)
