"""no_network_prefix: a command run under it reaches nothing, not even a server on this machine's loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swe_harness.network import (
    NetworkIsolationError,
    isolated,
    no_network_prefix,
    probe_no_network_prefix,
    with_network,
)

# Exits 0 when the connect succeeds, else prints the errno name. It refuses to dial at all unless the only
# interface it can see is loopback, so a broken prefix can never send a packet off this machine.
_CONNECT = """
import errno, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
if host != "127.0.0.1" and [name for _, name in socket.if_nameindex()] != ["lo"]:
    print("NOT-ISOLATED", socket.if_nameindex()); sys.exit(3)
try:
    socket.create_connection((host, port), timeout=5).close()
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc)); sys.exit(1)
"""


def _prefix() -> tuple[str, ...]:
    try:
        return no_network_prefix()
    except NetworkIsolationError as exc:
        pytest.skip(f"this machine cannot isolate the network: {exc}")


@pytest.fixture
def server() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def _connect(prefix: tuple[str, ...], host: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-c", _CONNECT, host, str(port)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_prefix_is_unshare_in_a_new_network_namespace() -> None:
    prefix = _prefix()
    assert prefix[:2] in {("unshare", "-nm"), ("unshare", "-rnm")}
    assert no_network_prefix() is prefix  # probed once


def test_inside_loopback_is_up_for_the_suite_s_own_servers_and_the_command_keeps_the_pid() -> None:
    prefix = _prefix()
    local_server = ("import socket\nwith socket.create_server(('127.0.0.1', 0)) as s:\n"
                    "    socket.create_connection(s.getsockname(), timeout=5).close()\nprint('reached')")
    inside = subprocess.run([*prefix, sys.executable, "-c", local_server], capture_output=True, text=True,
                            timeout=30)
    assert inside.stdout.strip() == "reached", inside.stderr
    process = subprocess.Popen([*prefix, "sh", "-c", "echo $$"], stdout=subprocess.PIPE, text=True)
    assert process.communicate(timeout=30)[0].strip() == str(process.pid)


def test_a_server_on_loopback_is_reachable_outside_but_not_under_the_prefix(server: int) -> None:
    prefix = _prefix()
    assert _connect((), "127.0.0.1", server).returncode == 0  # the check itself can see a connection succeed
    isolated = _connect(prefix, "127.0.0.1", server)
    assert isolated.returncode == 1, isolated.stdout + isolated.stderr
    assert isolated.stdout.strip() in {"ENETUNREACH", "ECONNREFUSED"}


def test_a_private_address_fails_at_once_under_the_prefix() -> None:
    prefix = _prefix()
    started = time.monotonic()
    result = _connect(prefix, "10.255.255.1", 80)  # only ever dialled inside the namespace
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip() == "ENETUNREACH"
    assert time.monotonic() - started < 5.0


def test_no_unshare_on_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NetworkIsolationError, match=r"`unshare` .* not on PATH"):
        probe_no_network_prefix({"PATH": str(tmp_path)}, is_root=False)


def test_an_unshare_that_fails_is_reported_with_its_reason(tmp_path: Path) -> None:
    fake = tmp_path / "unshare"
    fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(NetworkIsolationError) as caught:
        probe_no_network_prefix({"PATH": str(tmp_path)}, is_root=True)
    message = str(caught.value)
    assert "`unshare -nm true`: unshare: unshare failed: Operation not permitted" in message
    assert "`unshare -rnm true`" in message


def test_the_probe_runs_the_prefix_it_returns(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "unshare"
    fake.write_text(f'#!/bin/sh\nfor last; do :; done\nprintf "%s %s\\n" "$1" "$last" >> {calls}\n'
                    '[ "$1" = -rnm ]\n')
    fake.chmod(0o755)
    prefix = probe_no_network_prefix({"PATH": f"{tmp_path}{os.pathsep}/usr/bin:/bin"}, is_root=True)
    assert prefix[:2] == ("unshare", "-rnm")
    assert calls.read_text().splitlines() == ["-nm true", "-rnm true"]


def test_hidden_directories_are_empty_inside_kept_ones_show_through_and_the_host_sees_no_mount(
        tmp_path: Path) -> None:
    prefix = _prefix()
    mirrors, scratch = tmp_path / "mirrors", tmp_path / "scratch"
    (mirrors / "acme__calc").mkdir(parents=True)
    (mirrors / "acme__calc" / "HEAD").write_text("the future\n")
    for testbed in ("mine", "theirs"):
        (scratch / testbed).mkdir(parents=True)
        (scratch / testbed / "file").write_text(f"{testbed}\n")
    script = f"ls -A {mirrors}; echo --; ls -A {scratch}; cat {scratch}/mine/file; echo written > {scratch}/mine/new"
    inside = subprocess.run([*isolated(prefix, hide=[mirrors, scratch], keep=[scratch / "mine"]), "sh", "-c",
                             script], capture_output=True, text=True, timeout=30)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == "--\nmine\nmine\n"
    assert (mirrors / "acme__calc" / "HEAD").read_text() == "the future\n"  # untouched outside
    assert sorted(p.name for p in scratch.iterdir()) == ["mine", "theirs"]
    assert (scratch / "mine" / "new").read_text() == "written\n"  # the kept testbed is the real one
    assert isolated(prefix) == prefix


def test_tests_write_only_their_testbed_and_a_home_and_tmp_of_their_own() -> None:
    """As the grader runs a model's patch: read-only everywhere but the testbed, the user's home replaced by
    an empty writable one, a kept directory (the interpreter) showing through it read-only."""
    prefix = _prefix()
    root = Path(tempfile.mkdtemp(prefix="kcode-isolated-", dir="/var/tmp"))  # /tmp is made private below
    try:
        home, outside, testbed = root / "home", root / "outside", root / "testbed"
        for directory in (home / ".ssh", home / "python", outside, testbed):
            directory.mkdir(parents=True)
        (home / ".ssh" / "id_rsa").write_text("KEY\n")
        (home / "python" / "bin").write_text("interpreter\n")
        script = (f"ls -A {home}; cat {home}/python/bin; echo mine > {home}/new && echo home-ok; "
                  f"echo x > {outside}/x || echo outside-refused; echo t > /tmp/t && echo tmp-ok; "
                  f"echo y > {home}/python/y || echo kept-refused; echo w > {testbed}/w && echo testbed-ok")
        launcher = isolated(prefix, keep=[home / "python"], writable=[testbed], private=[Path("/tmp"), home])
        inside = subprocess.run([*launcher, "sh", "-c", script], capture_output=True, text=True, timeout=30)
        assert inside.stdout.split() == ["python", "interpreter", "home-ok", "outside-refused", "tmp-ok",
                                         "kept-refused", "testbed-ok"], inside.stderr
        assert inside.stderr.count("Read-only file system") == 2
        assert sorted(p.name for p in home.iterdir()) == [".ssh", "python"] and not (outside / "x").exists()
        assert (testbed / "w").read_text() == "w\n"
    finally:
        shutil.rmtree(root)


def test_the_command_starts_even_when_the_launching_python_s_own_library_is_hidden() -> None:
    """pyenv's Python lives in the home the grader hides: nothing may be imported once the mounts are made."""
    library = Path(os.__file__).parent
    inside = subprocess.run([*isolated(_prefix(), hide=[library]), "sh", "-c", f"ls -A {library} | wc -l"],
                            capture_output=True, text=True, timeout=30)
    assert inside.returncode == 0 and inside.stdout.split() == ["0"], inside.stderr


def test_with_network_keeps_the_host_network_but_still_hides(tmp_path: Path, server: int) -> None:
    prefix = _prefix()
    online = with_network(prefix)
    assert online[1] in {"-m", "-rm"} and online[2:] == prefix[2:] and with_network(()) == ()
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "secret").write_text("x")
    inside = subprocess.run([*isolated(online, hide=[tmp_path / "private"]), sys.executable, "-c", _CONNECT,
                             "127.0.0.1", str(server)], capture_output=True, text=True, timeout=30)
    assert inside.returncode == 0, inside.stdout + inside.stderr  # the host's loopback server is reachable
    listing = subprocess.run([*isolated(online, hide=[tmp_path / "private"]), "ls", "-A", str(tmp_path / "private")],
                             capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0 and listing.stdout == ""
