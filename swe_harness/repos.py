"""Local mirrors of the benchmark's repositories, and the one way the harness runs git.

Every instance starts from a mirror on disk instead of a network clone: a run of 500 instances over a dozen
repositories would otherwise fetch the same history 500 times, and the agent's machine may be offline. A mirror
is only ever read; workspaces are built beside it (see `workspace.py`).

`run_git` exists so that nobody's git configuration changes what the harness does: the system and global
config files are ignored (a user's hooks, GPG signing, templates, credential prompts or `diff.noprefix`
would otherwise leak into workspaces and patches), inherited `GIT_*` variables (a `GIT_DIR` from an enclosing
hook) are dropped, and a hung command (a clone on a dead network) is killed with its whole process group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from kcode.isolated_git import git_env
from swe_harness.errors import HarnessError

SAFE_CONFIG: tuple[str, ...] = (
    "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false",
    "-c", "core.fsmonitor=false", "-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "core.autocrlf=false",
)
"""Passed to every git command: no hooks, no signing, no background maintenance, no line-ending rewrites."""

_REPO_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_STDERR_CHARS = 600


class GitError(HarnessError):
    """A git command failed or ran out of time; the message names the command and git's own words."""


def run_git(args: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
            timeout_s: float | None = None, stdin: str | None = None) -> str:
    """Run `git <args>` and return its standard output; raise GitError on a non-zero exit or a timeout.

    `env` adds variables to `git_env()`. Output is decoded as UTF-8 with surrogate escapes, so bytes that are
    not UTF-8 (a patch of a Latin-1 file) survive a round trip through `str`.
    """
    command = ["git", *SAFE_CONFIG, *args]
    shown = " ".join(["git", *args])
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    with subprocess.Popen(command, cwd=cwd, env=git_env(env), start_new_session=True,
                          stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        try:
            out, err = process.communicate(None if stdin is None else stdin.encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group: a clone's helpers would keep the pipes open
            process.communicate()
            raise GitError(f"`{shown}` took longer than {timeout_s:g} s and was stopped") from None
    if process.returncode != 0:
        stderr = err.decode(errors="replace").strip()[-_STDERR_CHARS:] or "no error output"
        raise GitError(f"`{shown}` failed (exit {process.returncode}): {stderr}")
    return out.decode(errors="surrogateescape")


def find_mirror(repos_dir: Path, repo: str, *, clone_missing: bool = True, url_base: str = "https://github.com",
                clone_timeout_s: float = 3600.0) -> Path:
    """The git directory of `repo`'s ("owner/name") mirror under `repos_dir`, cloned there first if missing.

    The mirror may be `owner__name`, `owner+name` or `owner__name.git`: a bare repository (a partial clone
    without a config file will do), a working tree (its `.git` directory is returned), a directory holding
    such a repository as `repo/` (the layout of /work/.mirror), or a symlink to any of these. The returned
    path is resolved. A missing mirror is cloned bare from `url_base/owner/name` when `clone_missing`.
    """
    owner, name = _split_repo(repo)
    candidates = [repos_dir / f"{owner}__{name}", repos_dir / f"{owner}+{name}", repos_dir / f"{owner}__{name}.git"]
    for candidate in candidates:
        if candidate.exists() or candidate.is_symlink():
            return _git_dir_of(candidate)
    if not clone_missing:
        raise HarnessError(f"no mirror of {repo}: none of {', '.join(str(c) for c in candidates)} exists "
                           f"(clone it there with `git clone --bare {url_base}/{owner}/{name} {candidates[0]}`)")
    return _clone(f"{url_base}/{owner}/{name}", candidates[0], clone_timeout_s)


def is_git_dir(path: Path) -> bool:
    """Whether `path` looks like a git directory to git itself: HEAD, objects/ and refs/ (a config is optional)."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _split_repo(repo: str) -> tuple[str, str]:
    parts = repo.split("/")
    if len(parts) != 2 or not all(_REPO_NAME.fullmatch(p) and p not in {".", ".."} for p in parts):
        raise HarnessError(f"{repo!r} is not a repository name of the form owner/name")
    return parts[0], parts[1]


def _git_dir_of(path: Path) -> Path:
    resolved = path.resolve()
    dot_git = resolved / ".git"
    if dot_git.is_file():  # a linked worktree or submodule: ".git" holds "gitdir: <path>"
        target = dot_git.read_text().removeprefix("gitdir:").strip()
        dot_git = (resolved / target).resolve()
    for git_dir in (resolved, dot_git, resolved / "repo"):
        if is_git_dir(git_dir):
            return git_dir
    raise HarnessError(f"the mirror {path} is not a git repository (no HEAD, objects/ and refs/ in it, "
                       "in .git/ or in repo/)")


def _clone(url: str, target: Path, timeout_s: float) -> Path:
    """Clone into a temporary sibling and rename it into place, so a failed or concurrent clone never leaves a
    half mirror that a later run would take for a whole one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".cloning", dir=target.parent))
    try:
        run_git(["-c", "http.lowSpeedLimit=1000", "-c", "http.lowSpeedTime=60",
                 "clone", "--bare", "--quiet", "--", url, str(partial)], timeout_s=timeout_s)
        try:
            partial.rename(target)
        except OSError:
            if not target.exists():
                raise
            # Another worker cloned it meanwhile: theirs is as good as ours.
    except GitError as error:
        raise HarnessError(f"could not clone the missing mirror {target.name} from {url}: {error}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _git_dir_of(target)
