"""The bash session's sandbox: what any command the agent runs can touch, whatever an approval let through.

A prefix list of "safe" commands cannot be made safe by adding entries (an approved `sort` writes files with
`-o`, an approved `git status` runs config the editor wrote), so the bound comes from the kernel instead:
bubblewrap (`bwrap`) starts the shell with the whole filesystem read-only except a private, empty /tmp and,
in `workspace-write`, the workspace; the user's credential files replaced by empty ones, no
network unless allowed, and its own PID namespace, so kcode's own process (and `/proc/<pid>/environ` with
the API key) is out of sight. bwrap keeps the shell in kcode's process group, so timeouts and Ctrl-C still
kill every process a command started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SandboxMode = Literal["off", "workspace-write", "read-only"]
SANDBOX_MODES: tuple[SandboxMode, ...] = ("off", "workspace-write", "read-only")

CREDENTIAL_PATHS = (".ssh", ".aws", ".azure", ".gnupg", ".docker", ".kube", ".netrc", ".pypirc", ".git-credentials",
                    ".npmrc", ".config/gh", ".config/gcloud", ".config/kcode", ".local/share/kcode")
"""Under the home directory: keys, tokens and kcode's own configuration and sessions, never shown to a command."""


@dataclass(frozen=True)
class SandboxPolicy:
    """What the sandboxed shell may do."""

    mode: SandboxMode = "workspace-write"
    allow_network: bool = False
    writable: tuple[Path, ...] = ()
    """The workspace: writable in `workspace-write`, read-only in `read-only` (also when it lies in /tmp)."""
    home: Path | None = None
    """Whose credential files to hide."""
    hidden: tuple[Path, ...] = ()
    """More directories shown empty (kcode's configuration and sessions where XDG variables put them)."""


@dataclass(frozen=True)
class Sandbox:
    """The launcher that starts the shell sandboxed, and a sentence for the user when it cannot."""

    launcher: tuple[str, ...]
    notice: str | None = None
    """For the user, when commands run unsandboxed."""
    rules: str = ""
    """For the model: what a command may do here, so it does not mistake a refusal for a bug."""

    @property
    def active(self) -> bool:
        return bool(self.launcher)

    def launcher_for(self, scratch: Path) -> tuple[str, ...]:
        """The launcher with `scratch` (where the session keeps its scripts and outputs) writable too."""
        return (*self.launcher, "--bind", str(scratch), str(scratch)) if self.launcher else ()


def sandbox_for(policy: SandboxPolicy, *, which: Callable[[str], str | None] = shutil.which) -> Sandbox:
    """The bwrap launcher for `policy`, probed once by running `true` in it; unsandboxed with a notice when the
    mode is off or bwrap is missing or does not work here."""
    if policy.mode == "off":
        return Sandbox((), "The sandbox is off: commands can change any file you can and reach the network.")
    bwrap = which("bwrap")
    if bwrap is None:
        return Sandbox((), "No sandbox: bubblewrap (bwrap) is not installed, so commands run unsandboxed "
                           "(install the bubblewrap package to confine them).")
    launcher = (bwrap, *bwrap_arguments(policy))
    try:
        probe = subprocess.run([*launcher, "true"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Sandbox((), f"No sandbox: bwrap could not start ({exc}), so commands run unsandboxed.")
    if probe.returncode != 0:
        reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit {probe.returncode}"
        return Sandbox((), f"No sandbox: bwrap failed here ({reason}), so commands run unsandboxed.")
    return Sandbox(launcher, rules=_rules(policy))


def _rules(policy: SandboxPolicy) -> str:
    writable = "Only the workspace and /tmp are writable" if policy.mode == "workspace-write" \
        else "Nothing but /tmp is writable, the workspace included"
    network = "" if policy.allow_network else "; there is no network (downloads and installs fail)"
    return (f"Commands run in a sandbox: {writable}, /tmp is private to this shell{network}, and credential "
            "files such as ~/.ssh look empty. A \"Read-only file system\" error means the sandbox refused.")


def bwrap_arguments(policy: SandboxPolicy) -> list[str]:
    """bwrap's options for `policy`; the command follows them."""
    arguments = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--unshare-pid",
                 "--die-with-parent"]
    bind = "--bind" if policy.mode == "workspace-write" else "--ro-bind"  # read-only even when under /tmp
    for directory in policy.writable:
        arguments += [bind, str(directory), str(directory)]
    if not policy.allow_network:
        arguments.append("--unshare-net")
    arguments += _hide(policy)
    return arguments


def _hide(policy: SandboxPolicy) -> Iterable[str]:
    paths = [*(policy.home / relative for relative in CREDENTIAL_PATHS if policy.home is not None), *policy.hidden]
    hidden: list[str] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            hidden += ["--tmpfs", str(path)]
        elif path.exists():
            hidden += ["--ro-bind", os.devnull, str(path)]
    return hidden
