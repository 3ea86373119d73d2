"""The sandboxed bash session, with real commands against a decoy home and a decoy repository beside the
workspace: whatever a command tries, the decoys are intact afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tools.bash_session import BashSession
from tools.sandbox import SandboxPolicy, bwrap_arguments, namespace_arguments, sandbox_for
from tools.standard import standard_toolset


@pytest.fixture
def decoys() -> Iterator[dict[str, Path]]:
    """A home, a repository and the workspace outside /tmp (the sandbox gives commands a private /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="kcode-decoys-", dir="/var/tmp"))
    yield _decoys(root)
    shutil.rmtree(root)


def _decoys(root: Path) -> dict[str, Path]:
    home, repo, workspace = root / "home", root / "other-repo", root / "ws"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".netrc").write_text("machine example.com password hunter2\n")
    (home / "notes.txt").write_text("my notes\n")
    repo.mkdir()
    (repo / "work.py").write_text("uncommitted work\n")
    workspace.mkdir()
    return {"home": home, "repo": repo, "ws": workspace}


@pytest.fixture(params=["bwrap", "unshare"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every sandboxed test runs under bubblewrap and under the unshare fallback used where bwrap is missing."""
    return str(request.param)


def only(backend: str) -> Callable[[str], str | None]:
    """A `which` that finds the programs of one backend only."""
    return lambda name: shutil.which(name) if name == backend else None


def session(tmp_path: Path, decoys: dict[str, Path], backend: str, **policy: object) -> BashSession:
    box = sandbox_for(SandboxPolicy(writable=(decoys["ws"],), home=decoys["home"], **policy),  # type: ignore[arg-type]
                      which=only(backend))
    if not box.active:
        pytest.skip(f"no sandbox on this machine: {box.notice}")
    outputs = tmp_path / "outputs"
    outputs.mkdir(exist_ok=True)
    return BashSession(decoys["ws"], new_output_path=lambda: outputs / f"{time.monotonic_ns()}",
                       launcher=box.launcher_for(outputs), state_root=outputs)


def run(shell: BashSession, command: str) -> tuple[int | None, str]:
    outcome = shell.run(command, timeout_s=30)
    return outcome.exit_code, outcome.output_path.read_text()


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_commands_write_the_workspace_and_nothing_of_the_decoys(tmp_path: Path, decoys: dict[str, Path],
                                                                 backend: str) -> None:
    with session(tmp_path, decoys, backend) as shell:
        assert run(shell, "echo built > out.txt && cat out.txt") == (0, "built\n")
        for attack in (f"rm -rf {decoys['repo']}", f"echo gone > {decoys['home']}/notes.txt",
                       f"sort -o {decoys['repo']}/work.py /dev/null", f"mv {decoys['repo']}/work.py /tmp/stolen"):
            code, output = run(shell, attack)
            assert code != 0 and "Read-only file system" in output, attack
        assert run(shell, "echo scratch > /tmp/probe && cat /tmp/probe") == (0, "scratch\n")
        (tmp_path / "host-file").write_text("host\n")
        assert run(shell, f"cat {tmp_path}/host-file 2>/dev/null || echo private") == (0, "private\n")
    assert (decoys["ws"] / "out.txt").read_text() == "built\n"
    assert (decoys["repo"] / "work.py").read_text() == "uncommitted work\n"
    assert (decoys["home"] / "notes.txt").read_text() == "my notes\n"


def test_credentials_network_and_kcode_s_own_process_are_out_of_sight(
        tmp_path: Path, decoys: dict[str, Path], backend: str, listener: int) -> None:
    with session(tmp_path, decoys, backend) as shell:
        code, output = run(shell, f"ls -A {decoys['home']}/.ssh; cat {decoys['home']}/.netrc; echo end")
        assert output.endswith("end\n") and "PRIVATE" not in output and "id_ed25519" not in output
        assert "hunter2" not in output
        code, output = run(shell, f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo connected")
        assert code != 0 and "connected" not in output
        code, output = run(shell, f"test -e /proc/{os.getpid()} && echo visible || echo hidden")
        assert output == "hidden\n"


def test_network_when_allowed_and_a_read_only_workspace(tmp_path: Path, decoys: dict[str, Path], backend: str,
                                                         listener: int) -> None:
    with session(tmp_path, decoys, backend, allow_network=True) as shell:
        assert run(shell, f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo connected") == (0, "connected\n")
    with session(tmp_path, decoys, backend, mode="read-only") as shell:
        code, output = run(shell, "echo no > out.txt")
        assert code != 0 and "Read-only file system" in output
        assert run(shell, "ls | wc -l") == (0, "0\n")


def test_a_timeout_still_kills_what_the_sandboxed_command_started(tmp_path: Path, decoys: dict[str, Path],
                                                                  backend: str) -> None:
    with session(tmp_path, decoys, backend) as shell:
        started = time.monotonic()
        outcome = shell.run("sleep 60", timeout_s=1)
        assert outcome.timed_out and time.monotonic() - started < 10
        assert run(shell, "echo alive") == (0, "alive\n")  # a fresh sandboxed shell took over


def test_off_and_missing_sandboxes_say_so_plainly(tmp_path: Path) -> None:
    off = sandbox_for(SandboxPolicy(mode="off"))
    assert not off.active and off.notice is not None and "sandbox is off" in off.notice and off.launcher == ()
    missing = sandbox_for(SandboxPolicy(), which=lambda name: None)
    assert not missing.active and missing.notice is not None and missing.launcher == ()
    assert "bubblewrap (bwrap) is not installed" in missing.notice and "unshare" in missing.notice
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    failing = sandbox_for(SandboxPolicy(), which=lambda name: str(broken) if name == "bwrap" else None)
    assert not failing.active and failing.notice is not None and "No permissions" in failing.notice
    fallback = sandbox_for(SandboxPolicy(), which=lambda name: str(broken) if name == "bwrap" else shutil.which(name))
    assert fallback.active and fallback.notice is None and Path(fallback.launcher[0]).name == "unshare"


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A directory outside /tmp, which the sandbox replaces with a private one anyway."""
    path = Path(tempfile.mkdtemp(prefix="kcode-sandbox-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


def test_the_policy_becomes_bwrap_options(host_dir: Path) -> None:
    (host_dir / ".aws").mkdir()
    (host_dir / ".pypirc").write_text("x")
    arguments = bwrap_arguments(SandboxPolicy(writable=(Path("/w"),), home=host_dir))
    assert arguments[:3] == ["--ro-bind", "/", "/"] and "--unshare-pid" in arguments
    assert arguments[arguments.index("/w") - 1: arguments.index("/w") + 2] == ["--bind", "/w", "/w"]
    assert "--unshare-net" in arguments
    assert ["--tmpfs", str(host_dir / ".aws")] == arguments[arguments.index(str(host_dir / ".aws")) - 1:][:2]
    pypirc = arguments.index(str(host_dir / ".pypirc"))
    assert arguments[pypirc - 2: pypirc + 1] == ["--ro-bind", os.devnull, str(host_dir / ".pypirc")]
    assert "--unshare-net" not in bwrap_arguments(SandboxPolicy(allow_network=True))
    read_only = bwrap_arguments(SandboxPolicy(mode="read-only", writable=(Path("/w"),)), [Path("/s")])
    assert read_only[read_only.index("/w") - 1] == "--ro-bind" and read_only[read_only.index("/s") - 1] == "--bind"


def test_a_directory_kept_inside_a_hidden_one_is_mounted_on_top_of_it(host_dir: Path) -> None:
    runs, mirrors, workspace = host_dir / "runs", host_dir / "mirrors", host_dir / "runs" / "r1" / "ws"
    for directory in (mirrors, workspace):
        directory.mkdir(parents=True)
    policy = SandboxPolicy(writable=(workspace,), hidden=(runs, mirrors))
    arguments = bwrap_arguments(policy)
    assert arguments.index(str(runs)) < arguments.index(str(workspace))
    marks = namespace_arguments(policy)
    assert marks[marks.index("ro"):] == ["ro", "tmpfs:/tmp", f"hide:{runs}", f"hide:{mirrors}", f"rw:{workspace}",
                                         "--"]
    assert f"keep:{workspace}" in namespace_arguments(replace(policy, mode="read-only"))
    nested = bwrap_arguments(SandboxPolicy(hidden=(runs, runs / "r1", Path("/tmp/x"))))
    assert str(runs / "r1") not in nested and "/tmp/x" not in nested  # covered already: no empty mount points


def test_the_model_is_told_what_the_sandbox_allows(decoys: dict[str, Path]) -> None:
    box = sandbox_for(SandboxPolicy(writable=(decoys["ws"],), home=decoys["home"]))
    if not box.active:
        pytest.skip(f"no sandbox on this machine: {box.notice}")
    with standard_toolset(decoys["ws"], sandbox=box) as toolset:
        description = toolset.schemas()[0]["function"]["description"]
        assert "Only the workspace and /tmp are writable" in description and "there is no network" in description
        result = toolset.dispatch("bash", '{"command": "touch /etc/kcode-probe"}')
        assert "Read-only file system" in result.output and "[exit code 1]" in result.output
    open_box = sandbox_for(SandboxPolicy(mode="read-only", allow_network=True))
    assert "Nothing but /tmp is writable" in open_box.rules and "no network" not in open_box.rules
    with standard_toolset(decoys["ws"]) as plain:
        assert "sandbox" not in plain.schemas()[0]["function"]["description"]


def test_no_process_in_the_sandbox_can_read_a_hidden_key(decoys: dict[str, Path], backend: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """kcode's own environment holds the API key; the shell's has it removed, and kcode's process, whose
    /proc/PID/environ still holds it, is in another PID namespace."""
    monkeypatch.setenv("KCODE_API_KEY", "sk-decoy-0123456789")
    box = sandbox_for(SandboxPolicy(writable=(decoys["ws"],), home=decoys["home"]), which=only(backend))
    with standard_toolset(decoys["ws"], sandbox=box, hidden_env=["KCODE_API_KEY"]) as toolset:
        result = toolset.dispatch("bash", '{"command": "env; cat /proc/*/environ | tr \\"\\\\0\\" \\"\\\\n\\"; '
                                          'ls /proc | grep -c \'^[0-9]\'"}')
    assert "PATH=" in result.output and "sk-decoy" not in result.output and "KCODE_API_KEY" not in result.output
    assert int(result.output.split()[-1]) < 10  # the namespace's few processes, none of the host's
