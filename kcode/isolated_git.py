"""The environment git runs in when kcode works on someone's files: their configuration, hooks and `GIT_*`
variables left out, so nobody's aliases, `apply.whitespace` or prompts change what git does.

Shared by the checkpoint store and the SWE-bench harness's workspaces and mirrors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def git_env(extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) without `GIT_*` variables, with the system and global git
    config off and prompts refused, plus `extra`."""
    env = {key: value for key, value in (os.environ if base is None else base).items() if not key.startswith("GIT_")}
    env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    return env | dict(extra or {})
