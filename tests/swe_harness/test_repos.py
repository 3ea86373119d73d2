"""find_mirror finds every mirror layout the harness meets and clones missing ones whole or not at all;
run_git is immune to the user's git configuration and never hangs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from swe_harness.errors import HarnessError
from swe_harness.repos import GitError, find_mirror, is_git_dir, run_git

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working tree with one commit, to make mirrors of."""
    repo = tmp_path_factory.mktemp("repos") / "source"
    run_git(["init", "-q", "-b", "main", str(repo)])
    (repo / "a.py").write_text("x = 1\n")
    run_git(["add", "."], cwd=repo)
    run_git(["commit", "-q", "-m", "one"], cwd=repo, env=IDENTITY)
    return repo


def _bare(source: Path, dest: Path) -> Path:
    run_git(["clone", "-q", "--bare", str(source), str(dest)])
    return dest


def test_run_git_returns_output_and_names_the_failing_command(source: Path) -> None:
    assert run_git(["rev-parse", "--is-inside-work-tree"], cwd=source).strip() == "true"
    with pytest.raises(GitError, match=r"`git rev-parse --verify no-such-ref` failed \(exit 128\): fatal: "):
        run_git(["rev-parse", "--verify", "no-such-ref"], cwd=source)


def test_run_git_ignores_the_users_config_and_git_variables(source: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = tmp_path / "gitconfig"
    leaky.write_text("[user]\n\tname = Leaky\n[core]\n\thooksPath = /leaky/hooks\n")
    (tmp_path / ".gitconfig").write_text(leaky.read_text())
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(leaky))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(GitError):  # `git config --get` exits 1 when the name is unset
        run_git(["config", "--get", "user.name"], cwd=source)
    assert run_git(["config", "--get", "core.hooksPath"], cwd=source).strip() == "/dev/null"
    assert Path(run_git(["rev-parse", "--absolute-git-dir"], cwd=source).strip()) == source / ".git"


def test_run_git_stops_a_command_that_outlives_its_timeout(source: Path) -> None:
    started = time.monotonic()
    with pytest.raises(GitError, match=r"took longer than 0.5 s"):
        run_git(["-c", "alias.slow=!sleep 30 | cat", "slow"], cwd=source, timeout_s=0.5)
    assert time.monotonic() - started < 5


def test_finds_a_bare_mirror_named_owner__name(source: Path, tmp_path: Path) -> None:
    mirror = _bare(source, tmp_path / "psf__requests")
    assert find_mirror(tmp_path, "psf/requests", clone_missing=False) == mirror


def test_finds_the_git_dir_of_a_working_tree_and_of_a_dot_git_name(source: Path, tmp_path: Path) -> None:
    shutil.copytree(source, tmp_path / "owner__tree")
    assert find_mirror(tmp_path, "owner/tree", clone_missing=False) == tmp_path / "owner__tree" / ".git"
    mirror = _bare(source, tmp_path / "owner__bare.git")
    assert find_mirror(tmp_path, "owner/bare", clone_missing=False) == mirror


def test_finds_a_configless_partial_layout_under_owner_plus_name_repo(source: Path, tmp_path: Path) -> None:
    """The layout of /work/.mirror: owner+name/repo, a bare directory without a config file."""
    mirror = _bare(source, tmp_path / "pallets+flask" / "repo")
    (mirror / "config").unlink()
    assert is_git_dir(mirror)
    assert find_mirror(tmp_path, "pallets/flask", clone_missing=False) == mirror


def test_a_symlinked_mirror_resolves_to_its_target(source: Path, tmp_path: Path) -> None:
    mirror = _bare(source, tmp_path / "store" / "real.git")
    (tmp_path / "repos").mkdir()
    (tmp_path / "repos" / "owner__name").symlink_to(mirror)
    assert find_mirror(tmp_path / "repos", "owner/name", clone_missing=False) == mirror


def test_a_missing_mirror_without_cloning_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=rf"no mirror of owner/name: none of {tmp_path}/owner__name, "):
        find_mirror(tmp_path, "owner/name", clone_missing=False)


def test_a_directory_that_is_no_repository_is_an_error_not_a_clone_target(tmp_path: Path) -> None:
    (tmp_path / "owner__name").mkdir()
    (tmp_path / "broken__link").symlink_to(tmp_path / "nowhere")
    for repo in ("owner/name", "broken/link"):
        with pytest.raises(HarnessError, match="is not a git repository"):
            find_mirror(tmp_path, repo, url_base="file:///nonexistent")


@pytest.mark.parametrize("repo", ["requests", "a/b/c", "../x", "owner/..", "own er/x"])
def test_a_malformed_repository_name_is_refused(tmp_path: Path, repo: str) -> None:
    with pytest.raises(HarnessError, match="is not a repository name"):
        find_mirror(tmp_path, repo, clone_missing=False)


def test_a_missing_mirror_is_cloned_bare_into_place(source: Path, tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    shutil.copytree(source, origin / "owner" / "name")
    repos = tmp_path / "repos"
    mirror = find_mirror(repos, "owner/name", url_base=f"file://{origin}")
    assert mirror == repos / "owner__name"
    assert run_git(["rev-parse", "--is-bare-repository"], cwd=mirror).strip() == "true"
    assert run_git(["rev-parse", "main"], cwd=mirror) == run_git(["rev-parse", "main"], cwd=source)
    assert [p.name for p in repos.iterdir()] == ["owner__name"]  # no temporary directory left behind


def test_a_clone_that_fails_says_so_quickly_and_leaves_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(HarnessError, match=r"could not clone the missing mirror owner__name from "
                                           r"file:///nonexistent/owner/name: .*does not appear to be a git"):
        find_mirror(tmp_path, "owner/name", url_base="file:///nonexistent")
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []
