"""Cut a command off the network before it runs a repository's tests or the agent's shell.

Why: test suites dial real hosts (requests' suite connects to 10.255.255.1, a private address that must never
see traffic from here), and the agent must not fetch the fix from the internet. A fresh network namespace has
only its own loopback interface and no route out: every connect beyond it fails at once with ENETUNREACH, and
nothing is sent. The loopback is brought up first, as in a container, because test suites start servers on
localhost and talk to them; the host's own localhost stays out of reach. `unshare -nm` makes the namespaces (network and
mount) as root; otherwise `unshare -rnm` makes a user namespace first (mapping the caller to root inside it),
where the kernel allows unprivileged user namespaces. `enter_namespace.py` then raises the loopback, hides
private directories (`isolated`) and becomes the command, keeping the process id (the bash session signals
that process's group).

The answer is probed by running `<prefix> true`, never guessed from the user id: containers often lack the
capability, and some kernels forbid unprivileged user namespaces. When neither form works the harness stops
with NetworkIsolationError; it never runs tests with the network on.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tools
from swe_harness.errors import HarnessError

_PROBE_TIMEOUT_S = 10.0
_ENTER = Path(tools.__file__).with_name("enter_namespace.py")


class NetworkIsolationError(HarnessError):
    """No way to run a command without network access on this machine; the message says what was tried."""


@functools.cache
def no_network_prefix() -> tuple[str, ...]:
    """The argv prefix that runs a command with no network, probed once per process (failures are not cached)."""
    return probe_no_network_prefix(os.environ, is_root=os.geteuid() == 0)


def prefix_needs() -> tuple[Path, ...]:
    """What a command run under the prefix must still see to launch the prefix again inside (as the grader's
    install step does for the tests): this Python, its venv, its standard library and the namespace script,
    wherever they live (a venv under /tmp, a checkout in the home that the tests' namespace hides)."""
    return tuple(dict.fromkeys([Path(sys.prefix), Path(sys.base_prefix).resolve(), _ENTER.parent]))


def with_network(prefix: Sequence[str]) -> tuple[str, ...]:
    """`prefix` (from `no_network_prefix`) with the host's network: private mounts only (`unshare -m` / `-rm`),
    for the steps that may reach the package index but must not see private directories either."""
    if not prefix:
        return ()
    return (prefix[0], prefix[1].replace("n", ""), *prefix[2:])


def isolated(prefix: Sequence[str], *, hide: Iterable[Path] = (), keep: Iterable[Path] = (),
             writable: Iterable[Path] | None = None, private: Iterable[Path] = ()) -> tuple[str, ...]:
    """`prefix` (from `no_network_prefix`) that also covers the `hide` directories with empty ones, except for
    the `keep` directories inside them; the command follows. With `writable` everything else is read-only, and
    `private` directories are fresh, empty and writable (a private /tmp, a home of its own)."""
    marks = [*(f"hide:{path}" for path in hide), *(f"tmpfs:{path}" for path in private),
             *(f"keep:{path}" for path in keep)]
    if writable is not None:
        marks += ["ro", *(f"rw:{path}" for path in writable)]
    return (*prefix, *marks, "--") if marks else tuple(prefix)


def probe_no_network_prefix(environ: Mapping[str, str], *, is_root: bool) -> tuple[str, ...]:
    """Try `unshare -nm` (as root) and `unshare -rnm` with `environ`'s PATH; the first that runs `true` wins."""
    unshare = shutil.which("unshare", path=environ.get("PATH", ""))
    if unshare is None:
        raise NetworkIsolationError(
            "cannot cut tests off the network: `unshare` (util-linux) is not on PATH; install util-linux")
    enter = (sys.executable, "-I", str(_ENTER))
    candidates = [("unshare", "-nm"), ("unshare", "-rnm")] if is_root else [("unshare", "-rnm")]
    failures = []
    for flags in candidates:
        prefix = (*flags, *enter)
        argv = [unshare, *prefix[1:], "true"]
        try:
            result = subprocess.run(argv, env=dict(environ), capture_output=True, text=True,
                                    timeout=_PROBE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failures.append(f"`{' '.join(flags)} true`: {exc}")
            continue
        if result.returncode == 0:
            return prefix
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        failures.append(f"`{' '.join(flags)} true`: {reason}")
    raise NetworkIsolationError(
        "cannot cut tests off the network: " + "; ".join(failures)
        + " (run as root, or where unprivileged user namespaces are allowed; on Ubuntu 24.04 see"
        " sysctl kernel.apparmor_restrict_unprivileged_userns)")
