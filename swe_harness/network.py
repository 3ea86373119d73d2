"""Cut a command off the network before it runs a repository's tests or the agent's shell.

Why: test suites dial real hosts (requests' suite connects to 10.255.255.1, a private address that must never
see traffic from here), and the agent must not fetch the fix from the internet. A fresh network namespace has
only its own loopback interface and no route out: every connect beyond it fails at once with ENETUNREACH, and
nothing is sent. The loopback is brought up first, as in a container, because test suites start servers on
localhost and talk to them; the host's own localhost stays out of reach. `unshare -n` makes the namespace as
root; otherwise `unshare -rn` makes a user namespace first (mapping the caller to root inside it), where the
kernel allows unprivileged user namespaces. The command then replaces the small Python that raised the
loopback, so it keeps the process id (the bash session signals that process's group).

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
from collections.abc import Mapping

from swe_harness.errors import HarnessError

_PROBE_TIMEOUT_S = 10.0
_LOOPBACK_UP = (
    "import fcntl, os, socket, struct, sys\n"
    "with socket.socket() as s:\n"  # SIOCSIFFLAGS on `lo`: IFF_UP | IFF_LOOPBACK | IFF_RUNNING
    "    fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'lo', 0x1 | 0x8 | 0x40))\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


class NetworkIsolationError(HarnessError):
    """No way to run a command without network access on this machine; the message says what was tried."""


@functools.cache
def no_network_prefix() -> tuple[str, ...]:
    """The argv prefix that runs a command with no network, probed once per process (failures are not cached)."""
    return probe_no_network_prefix(os.environ, is_root=os.geteuid() == 0)


def probe_no_network_prefix(environ: Mapping[str, str], *, is_root: bool) -> tuple[str, ...]:
    """Try `unshare -n` (as root) and `unshare -rn` with `environ`'s PATH; the first that runs `true` wins."""
    unshare = shutil.which("unshare", path=environ.get("PATH", ""))
    if unshare is None:
        raise NetworkIsolationError(
            "cannot cut tests off the network: `unshare` (util-linux) is not on PATH; install util-linux")
    loopback_up = (sys.executable, "-c", _LOOPBACK_UP)
    candidates = [("unshare", "-n"), ("unshare", "-rn")] if is_root else [("unshare", "-rn")]
    failures = []
    for flags in candidates:
        prefix = (*flags, *loopback_up)
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
