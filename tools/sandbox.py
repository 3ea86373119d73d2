"""The bash session's sandbox: what any command the agent runs can touch, whatever an approval let through.

A prefix list of "safe" commands cannot be made safe by adding entries (an approved `sort` writes files with
`-o`, an approved `git status` runs config the editor wrote), so the bound comes from the kernel instead:
bubblewrap (`bwrap`) starts the shell with the whole filesystem read-only except a private, empty /tmp and,
in `workspace-write`, the workspace; the user's credential files replaced by empty ones, no
network unless allowed, and its own PID namespace, so kcode's own process (and `/proc/<pid>/environ` with
the API key) is out of sight. bwrap keeps the shell in kcode's process group, so timeouts and Ctrl-C still
kill every process a command started.

Where bwrap is missing or refused, `unshare` makes the same namespaces and `enter_namespace.py` (the harness's
script) lays out the same mounts inside them; only when neither works does the shell run unsandboxed, and the
user is told so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SandboxMode = Literal["off", "workspace-write", "read-only"]
SANDBOX_MODES: tuple[SandboxMode, ...] = ("off", "workspace-write", "read-only")

CREDENTIAL_PATHS = (".ssh", ".aws", ".azure", ".gnupg", ".docker", ".kube", ".netrc", ".pypirc", ".git-credentials",
                    ".npmrc", ".config/gh", ".config/gcloud", ".config/kcode", ".local/share/kcode")
"""Under the home directory: keys, tokens and kcode's own configuration and sessions, never shown to a command."""
_ENTER = Path(__file__).with_name("enter_namespace.py")
_PRIVATE_TMP = Path("/tmp")
_NETWORK_FAILURES = ("Network is unreachable", "Temporary failure in name resolution", "Could not resolve host",
                     "Name or service not known", "No address associated with hostname")
"""How a connection attempt fails in a network namespace with only a loopback (curl, pip, git, Python, Node)."""


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
    """How to start a shell sandboxed (bwrap or unshare), and a sentence for the user when it cannot be."""

    policy: SandboxPolicy | None = None
    """None when commands run unsandboxed."""
    program: str = ""
    """bwrap, or unshare (with `prefix` its flags), found and probed on this machine."""
    prefix: tuple[str, ...] = ()
    notice: str | None = None
    """For the user, when commands run unsandboxed."""
    rules: str = ""
    """For the model: what a command may do here, so it does not mistake a refusal for a bug."""

    @property
    def active(self) -> bool:
        return self.policy is not None

    @property
    def launcher(self) -> tuple[str, ...]:
        return self.launcher_for()

    def denial(self, output: str) -> str | None:
        """What the sandbox most likely refused a command that failed with `output`, in words for the user
        deciding whether to run it outside; None when nothing in the output points at the sandbox."""
        if self.policy is None:
            return None
        if "Read-only file system" in output:
            return "a write outside the workspace"
        if not self.policy.allow_network and any(sign in output for sign in _NETWORK_FAILURES):
            return "network access"
        return None

    def launcher_for(self, *scratch: Path) -> tuple[str, ...]:
        """The argv prefix that runs a command in the sandbox, with `scratch` (where the session keeps its
        scripts and outputs) writable too; empty when unsandboxed."""
        if self.policy is None:
            return ()
        if Path(self.program).name == "bwrap":
            return (self.program, *bwrap_arguments(self.policy, scratch))
        return (self.program, *self.prefix, *namespace_arguments(self.policy, scratch))


def sandbox_for(policy: SandboxPolicy, *, which: Callable[[str], str | None] = shutil.which,
                is_root: bool | None = None) -> Sandbox:
    """A sandbox for `policy`: bubblewrap where it works here, else unshare with our namespace script, each
    probed by running `true` in it; unsandboxed with a notice when the mode is off or neither works."""
    if policy.mode == "off":
        return Sandbox(notice="The sandbox is off: commands can change any file you can and reach the network.")
    failures = []
    bwrap = which("bwrap")
    if bwrap is None:
        failures.append("bubblewrap (bwrap) is not installed")
    else:
        problem = _probe(Sandbox(policy, bwrap))
        if problem is None:
            return Sandbox(policy, bwrap, rules=_rules(policy))
        failures.append(f"bwrap failed here ({problem})")
    unshare = which("unshare")
    if unshare is None:
        failures.append("unshare (util-linux) is not installed")
    else:
        root = os.geteuid() == 0 if is_root is None else is_root
        for prefix in _unshare_prefixes(policy, root):
            problem = _probe(Sandbox(policy, unshare, prefix))
            if problem is None:
                return Sandbox(policy, unshare, prefix, rules=_rules(policy))
        failures.append(f"unshare failed here ({problem})")
    return Sandbox(notice=f"No sandbox: {'; '.join(failures)}, so commands run unsandboxed (install the "
                          "bubblewrap package to confine them).")


def _unshare_prefixes(policy: SandboxPolicy, is_root: bool) -> list[tuple[str, ...]]:
    """unshare's flags: mount and PID namespaces (and network unless allowed), as root or in a user namespace."""
    flags = ("-m", "-p", "--fork", "--kill-child", "--mount-proc", *(() if policy.allow_network else ("-n",)))
    return [flags, ("-r", *flags)] if is_root else [("-r", *flags)]


def _probe(sandbox: Sandbox) -> str | None:
    """Why `true` does not run in `sandbox`, or None when it does."""
    try:
        probe = subprocess.run([*sandbox.launcher, "true"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if probe.returncode == 0:
        return None
    return probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit {probe.returncode}"


def _rules(policy: SandboxPolicy) -> str:
    writable = "Only the workspace and /tmp are writable" if policy.mode == "workspace-write" \
        else "Nothing but /tmp is writable, the workspace included"
    network = "" if policy.allow_network else "; there is no network (downloads and installs fail)"
    return (f"Commands run in a sandbox: {writable}, /tmp is private to this shell{network}, and credential "
            "files such as ~/.ssh look empty. A \"Read-only file system\" error means the sandbox refused.")


def bwrap_arguments(policy: SandboxPolicy, scratch: Iterable[Path] = ()) -> list[str]:
    """bwrap's options for `policy`, with the `scratch` directories writable; the command follows them."""
    arguments = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", str(_PRIVATE_TMP),
                 "--unshare-pid", "--die-with-parent", *(() if policy.allow_network else ("--unshare-net",))]
    bind = "--bind" if policy.mode == "workspace-write" else "--ro-bind"  # read-only even when under /tmp
    mounts = {"keep": bind, "rw": "--bind", "hide": "--tmpfs"}
    for kind, path in _mounts(policy, scratch):
        if kind == "blank":
            arguments += ["--ro-bind", os.devnull, str(path)]
        else:
            arguments += [mounts[kind], str(path)] + ([] if kind == "hide" else [str(path)])
    return arguments


def namespace_arguments(policy: SandboxPolicy, scratch: Iterable[Path] = ()) -> list[str]:
    """The arguments of `enter_namespace.py` (run by unshare) for `policy`; the command follows them."""
    workspace = "rw" if policy.mode == "workspace-write" else "keep"  # `keep` re-binds read-only under `ro`
    marks = [f"{workspace if kind == 'keep' else kind}:{path}" for kind, path in _mounts(policy, scratch)]
    return [sys.executable, "-I", str(_ENTER), "ro", f"tmpfs:{_PRIVATE_TMP}", *marks, "--"]


def _mounts(policy: SandboxPolicy, scratch: Iterable[Path]) -> list[tuple[str, Path]]:
    """What goes over the read-only root: the workspace (`keep`), scratch (`rw`), hidden directories (`hide`)
    and files (`blank`), outermost first, so a directory kept inside a hidden one shows on top of it."""
    mounts = [*(("keep", path) for path in policy.writable), *(("rw", path) for path in scratch)]
    paths = [*(policy.home / relative for relative in CREDENTIAL_PATHS if policy.home is not None), *policy.hidden]
    covers = [_PRIVATE_TMP, *paths]
    for path in paths:
        if any(path != cover and path.is_relative_to(cover) for cover in covers):
            continue  # hidden already; covering it again would only show an empty mount point
        if path.is_dir() and not path.is_symlink():
            mounts.append(("hide", path))
        elif path.exists():
            mounts.append(("blank", path))
    return sorted(mounts, key=lambda mount: len(mount[1].parts))
