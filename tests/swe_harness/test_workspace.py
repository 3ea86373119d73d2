"""A prepared workspace holds exactly the base commit's history, whatever the mirror holds of the future
(the fix, tags, branches, a stash, notes, remotes, reflogs, promisor packs), and the mirror is never touched;
verify_pruned names each kind of leak; the setup commit and the final patch round-trip onto a fresh workspace."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kcode.isolated_git import git_env
from swe_harness.errors import HarnessError
from swe_harness.repos import run_git
from swe_harness.workspace import PruneError, commit_setup_state, prepare_workspace, verify_pruned, workspace_diff

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
BINARY = bytes(range(256)) * 4


@dataclass(frozen=True)
class History:
    root: Path
    """Every repository below, so one snapshot covers them all."""
    source: Path
    """A working tree whose main ends at `fix`; it has every kind of leak, loose objects and reflogs."""
    base: str
    fix: str
    future: tuple[str, ...]
    """Commits a workspace must not hold: the fix, a branch, a stash, a note, a remote's commit."""
    mirrors: dict[str, Path]


def _git(repo: Path, *args: str) -> str:
    return run_git(args, cwd=repo, env=IDENTITY).strip()


def _commit(repo: Path, message: str, files: dict[str, str | bytes]) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    root = tmp_path_factory.mktemp("history")
    src, upstream = root / "source", root / "upstream"
    for repo in (src, upstream):
        _git(root, "init", "-q", "-b", "main", str(repo))
    _commit(src, "bug", {"calc.py": "def add(a, b):\n    return a - b\n", ".gitignore": "*.log\n", "README": "r\n"})
    base = _commit(src, "docs", {"README": "read me\n", "data.bin": BINARY})
    _git(src, "checkout", "-q", "-b", "feature")
    feature = _commit(src, "feature", {"feature.py": "new = 1\n"})
    _git(src, "checkout", "-q", "main")
    fix = _commit(src, "fix", {"calc.py": "def add(a, b):\n    return a + b\n", "fix_only.txt": "the fix\n"})
    _git(src, "tag", "light", fix)
    _git(src, "tag", "-a", "-m", "release", "v1.0", fix)
    _git(src, "notes", "add", "-m", "see the fix", fix)
    (src / "README").write_text("stashed\n")
    _git(src, "stash")
    remote_commit = _commit(upstream, "upstream", {"upstream.txt": "u\n"})
    _git(src, "remote", "add", "upstream", str(upstream))
    _git(src, "fetch", "-q", "upstream")
    stash = _git(src, "rev-parse", "refs/stash")
    note = _git(src, "rev-parse", "refs/notes/commits")
    for key in ("uploadpack.allowFilter", "uploadpack.allowAnySHA1InWant"):
        _git(src, "config", key, "true")
    mirrors = {"working tree": src, "git dir": src / ".git"}
    mirrors["bare"] = root / "bare.git"
    _git(root, "clone", "-q", "--mirror", str(src), str(mirrors["bare"]))
    mirrors["symlink"] = root / "link.git"
    mirrors["symlink"].symlink_to(mirrors["bare"])
    mirrors["alternates"] = root / "shared.git"
    _git(root, "clone", "-q", "--bare", "--shared", str(src), str(mirrors["alternates"]))
    partial = root / "partial"  # fetches the base's blobs lazily, into more promisor packs
    _git(root, "clone", "-q", "--filter=blob:none", "--no-checkout", f"file://{src}", str(partial))
    _git(partial, "checkout", "-q", base)
    _git(partial, "log", "-q", "-p", base)  # and the blobs of its history
    mirrors["partial"] = partial / ".git"
    mirrors["blobless"] = root / "blobless.git"
    _git(root, "clone", "-q", "--bare", "--filter=blob:none", f"file://{src}", str(mirrors["blobless"]))
    return History(root, src, base, fix, (fix, feature, stash, note, remote_commit), mirrors)


def _snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and link below `root`: content hash, mode and modification time."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        state[str(path.relative_to(root))] = (digest, info.st_mode, info.st_mtime_ns)
    return state


def _all_objects(repo: Path) -> set[str]:
    return set(_git(repo, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split())


def _reachable(repo: Path, commit: str) -> set[str]:
    return {line.split()[0] for line in _git(repo, "rev-list", "--objects", commit).splitlines()}


def _exists(repo: Path, sha: str) -> bool:
    done = subprocess.run(["git", "cat-file", "-e", sha], cwd=repo, env=git_env(), capture_output=True)
    return done.returncode == 0


@pytest.fixture
def workspace(history: History, tmp_path: Path) -> Path:
    dest = tmp_path / "workspace"
    prepare_workspace(history.mirrors["bare"], history.base, dest)
    return dest


@pytest.mark.parametrize("kind", ["working tree", "git dir", "bare", "symlink", "alternates", "partial"])
def test_a_workspace_holds_exactly_the_base_history(history: History, tmp_path: Path, kind: str) -> None:
    before = _snapshot(history.root)
    dest = tmp_path / "workspace"
    prepare_workspace(history.mirrors[kind], history.base, dest)
    assert _snapshot(history.root) == before, "the mirror (or a repository it borrows from) changed"
    assert _all_objects(dest) == _reachable(history.source, history.base)
    assert not any(_exists(dest, commit) for commit in history.future)
    assert not _exists(dest, _git(history.source, "rev-parse", "v1.0"))  # the annotated tag object
    assert _git(dest, "log", "--all", "--format=%H") == _git(history.source, "log", "--format=%H", history.base)
    assert _git(dest, "for-each-ref", "--format=%(refname) %(objectname)") == f"refs/heads/main {history.base}"
    assert _git(dest, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert _git(dest, "status", "--porcelain", "--ignored") == ""
    assert (dest / "calc.py").read_text() == "def add(a, b):\n    return a - b\n"
    assert (dest / "data.bin").read_bytes() == BINARY
    git_dir = dest / ".git"
    assert not (git_dir / "logs").exists() and not list(git_dir.glob("*_HEAD"))
    assert not list(git_dir.rglob("*.promisor")) and not (git_dir / "objects" / "info" / "alternates").exists()
    assert _git(dest, "config", "--list", "--local").splitlines() == [
        "core.repositoryformatversion=0", "core.filemode=true", "core.bare=false", "core.logallrefupdates=false"]


def test_a_mirror_that_lacks_objects_of_the_base_is_refused_and_left_alone(history: History, tmp_path: Path) -> None:
    before = _snapshot(history.root)
    dest = tmp_path / "workspace"
    readme_blob = _git(history.source, "rev-parse", f"{history.base}:README")
    with pytest.raises(PruneError, match=rf"lacks \d+ of the objects reachable from {history.base}, e\.g\. [0-9a-f]"
                                         r"{40} \(a partial clone\?"):
        prepare_workspace(history.mirrors["blobless"], history.base, dest)
    assert readme_blob not in _all_objects(history.mirrors["blobless"])  # `cat-file -e` would fetch it
    assert _snapshot(history.root) == before
    assert not dest.exists()


def test_a_base_the_mirror_does_not_have_is_an_error(history: History, tmp_path: Path) -> None:
    with pytest.raises(PruneError, match=f"the base commit {'1' * 40} is not in the mirror"):
        prepare_workspace(history.mirrors["bare"], "1" * 40, tmp_path / "workspace")
    assert not (tmp_path / "workspace").exists()


def test_an_existing_destination_is_refused(history: History, tmp_path: Path) -> None:
    (tmp_path / "workspace").mkdir()
    with pytest.raises(HarnessError, match="already exists"):
        prepare_workspace(history.mirrors["bare"], history.base, tmp_path / "workspace")


Leak = Callable[[Path], None]


def _write(name: str, text: str) -> Leak:
    def leak(repo: Path) -> None:
        (repo / ".git" / name).write_text(text)
    return leak


def _run(*args: str) -> Leak:
    def leak(repo: Path) -> None:
        _git(repo, *args)
    return leak


def _stray_blob(repo: Path) -> None:
    (repo / "stray.txt").write_text("stray\n")
    _git(repo, "hash-object", "-w", "stray.txt")


def _stash(repo: Path) -> None:
    (repo / "README").write_text("changed\n")
    _git(repo, "stash", "-q")


def _commit_on_main(repo: Path) -> None:
    _commit(repo, "later", {"later.txt": "x\n"})


LEAKS: dict[str, tuple[Leak, str]] = {
    "a stray blob": (_stray_blob,
                     "objects the base does not reach: 1 \\(e.g. [0-9a-f]{40}\\)"),
    "a lightweight tag": (_run("tag", "v0"), "refs besides refs/heads/main: 1 \\(e.g. refs/tags/v0\\)"),
    "an annotated tag": (_run("tag", "-a", "-m", "m", "v0"), "objects the base does not reach: 1.*refs/tags/v0"),
    "a branch": (_run("branch", "other"), "refs/heads/other"),
    "a stash": (_stash, "objects the base does not reach: .*refs/stash.*files that may name other commits: 2"),
    "a note": (_run("notes", "add", "-m", "n"), "refs/notes/commits"),
    "a remote": (_run("remote", "add", "origin", "/elsewhere"),
                 "config entries of a remote or a partial clone: 2 \\(e.g. remote.origin"),
    "a partial clone setting": (_run("config", "extensions.partialClone", "origin"), "extensions.partialclone"),
    "a reflog": (_run("-c", "core.logAllRefUpdates=true", "update-ref", "-m", "x", "refs/heads/main", "HEAD"),
                 "files that may name other commits: \\d \\(e.g. logs/HEAD\\)"),
    "an ORIG_HEAD": (_write("ORIG_HEAD", "0" * 40 + "\n"), "ORIG_HEAD"),
    "alternates": (_write("objects/info/alternates", "/elsewhere/objects\n"), "objects/info/alternates"),
    "a promisor marker": (_write("objects/pack/pack-0.promisor", ""), "pack-0.promisor"),
    "a commit after the base": (_commit_on_main, "objects the base does not reach: 3 .*main is not at the base"),
    "a detached HEAD": (_run("checkout", "-q", "--detach"), "HEAD is not refs/heads/main"),
}


@pytest.mark.parametrize("leak", LEAKS)
def test_verify_pruned_names_each_kind_of_leak(history: History, workspace: Path, leak: str) -> None:
    verify_pruned(workspace, history.base)
    make_leak, message = LEAKS[leak]
    make_leak(workspace)
    with pytest.raises(PruneError, match=f"is not pruned to {history.base}: .*{message}"):
        verify_pruned(workspace, history.base)


def test_verify_pruned_reports_a_missing_base_and_missing_objects(history: History, workspace: Path) -> None:
    unknown = history.base[:7] + "0" * 33
    with pytest.raises(PruneError, match=f"the base commit {unknown} is not in {workspace}"):
        verify_pruned(workspace, unknown)
    pack_dir = workspace / ".git" / "objects" / "pack"
    for path in pack_dir.iterdir():
        path.unlink()
    blobless = subprocess.run(["git", "pack-objects", "--revs", "--stdout", "--filter=blob:none"],
                              cwd=history.source, env=git_env(), input=history.base.encode(), capture_output=True)
    subprocess.run(["git", "index-pack", "--stdin"], cwd=workspace, env=git_env(), input=blobless.stdout, check=True,
                   capture_output=True)
    with pytest.raises(PruneError, match=r"objects of the base missing: 5 \(e.g. [0-9a-f]{40}\)"):
        verify_pruned(workspace, history.base)
    (pack_dir / next(pack_dir.glob("*.pack")).name).unlink()
    run_git(["hash-object", "-w", "-t", "commit", "--stdin"], cwd=workspace,
            stdin=_git(history.source, "cat-file", "commit", history.base) + "\n")
    with pytest.raises(PruneError, match=f"the history of {history.base} in {workspace} is incomplete: "):
        verify_pruned(workspace, history.base)


def _install(repo: Path) -> None:
    """What an environment's install step typically leaves in a workspace."""
    (repo / "generated.py").write_text("version = '1.0'\n")
    (repo / "install.log").write_text("ignored by .gitignore\n")
    for junk in ("__pycache__/calc.cpython-311.pyc", "calc.egg-info/PKG-INFO", ".pytest_cache/v"):
        (repo / junk).parent.mkdir(parents=True, exist_ok=True)
        (repo / junk).write_bytes(b"\0junk")


def test_commit_setup_state_commits_what_install_made_except_ignored_files_and_junk(history: History,
                                                                                    workspace: Path) -> None:
    assert commit_setup_state(workspace) == history.base  # nothing changed: no commit
    _install(workspace)
    setup = commit_setup_state(workspace)
    assert _git(workspace, "rev-parse", "HEAD", "HEAD~1").split() == [setup, history.base]
    assert _git(workspace, "diff", "--name-only", history.base, setup) == "generated.py"
    assert _git(workspace, "log", "-1", "--format=%an <%ae> %s") == "kcode <kcode@localhost> kcode: environment setup"
    assert _git(workspace, "status", "--porcelain") == "?? .pytest_cache/\n?? __pycache__/\n?? calc.egg-info/".strip()
    assert not (workspace / ".git" / "logs").exists()


def test_the_patch_applies_to_a_fresh_workspace_set_up_the_same_way(history: History, workspace: Path,
                                                                    tmp_path: Path) -> None:
    _install(workspace)
    setup = commit_setup_state(workspace)
    (workspace / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (workspace / "README").unlink()
    (workspace / "data.bin").write_bytes(BINARY[::-1])
    (workspace / "pkg").mkdir()
    (workspace / "pkg" / "latin1.py").write_bytes(b"# caf\xe9\n")
    (workspace / "__pycache__" / "new.cpython-311.pyc").write_bytes(b"\0")
    (workspace / "more.log").write_text("ignored\n")
    _git(workspace, "add", "-f", "__pycache__/new.cpython-311.pyc")  # junk the agent staged is junk still
    index_before, objects_before = (workspace / ".git" / "index").read_bytes(), _all_objects(workspace)
    patch = workspace_diff(workspace, setup)

    assert "+++ b/calc.py" in patch and "deleted file mode" in patch and "GIT binary patch" in patch
    assert "+++ b/pkg/latin1.py" in patch and "__pycache__" not in patch and "more.log" not in patch
    assert "generated.py" not in patch  # part of the setup commit, not of the agent's change
    assert "+++ b/generated.py" in workspace_diff(workspace, history.base)
    assert (workspace / ".git" / "index").read_bytes() == index_before
    assert _all_objects(workspace) == objects_before
    assert _git(workspace, "rev-parse", "HEAD") == setup

    fresh = tmp_path / "fresh"
    prepare_workspace(history.mirrors["bare"], history.base, fresh)
    _install(fresh)
    assert commit_setup_state(fresh) == setup  # same setup, same commit id
    patch_file = tmp_path / "patch.diff"
    patch_file.write_bytes(patch.encode(errors="surrogateescape"))
    _git(fresh, "apply", "--check", str(patch_file))
    _git(fresh, "apply", str(patch_file))
    for name in ("calc.py", "data.bin", "pkg/latin1.py"):
        assert (fresh / name).read_bytes() == (workspace / name).read_bytes()
    assert not (fresh / "README").exists()
