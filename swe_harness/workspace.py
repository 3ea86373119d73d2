"""The repository an agent works in: a copy of a mirror at the instance's base commit that holds nothing of its
future, then the environment's setup committed on top, and at the end the agent's changes as one patch.

Why prune: a full clone lets an agent read the fix (`git log --all`, a tag or a branch after the base, a
stash, a note, a reflog: SWE-bench issues #465, #471, #581). The K2 card's rule is that every git object
unreachable from the base commit disappears, and `verify_pruned` checks exactly that, object by object,
instead of trusting dates (SWE-bench's date-based pruning leaves hundreds of unreachable objects).

Why not a clone: `git clone --no-local` of a pytest-size mirror re-hashes every object (about 4 s here).
Instead the mirror's pack files are copied, unchanged, into a fresh repository whose only ref is `main` at the
base commit, and `git repack -a -d` rewrites them into one pack of what that ref reaches, reusing the deltas
(about 1.5 s with the checks). The mirror is only read: no git command runs in it, and its objects are never
borrowed through alternates (`repack` would also copy every object of a borrowed `.promisor` pack in full).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from kcode.workspace_diff import JUNK_PATTERNS
from swe_harness.errors import HarnessError
from swe_harness.repos import GitError, is_git_dir, run_git

_SETUP_IDENTITY = {"GIT_AUTHOR_NAME": "kcode", "GIT_AUTHOR_EMAIL": "kcode@localhost",
                   "GIT_COMMITTER_NAME": "kcode", "GIT_COMMITTER_EMAIL": "kcode@localhost"}

_MAIN = "refs/heads/main"
_FANOUT = re.compile(r"[0-9a-f]{2}")
_LEAKY_FILES = ("objects/info/alternates", "objects/info/http-alternates", "objects/info/commit-graph",
                "objects/info/commit-graphs", "shallow")


class PruneError(HarnessError):
    """A workspace could not be made to hold exactly the base commit's history (objects missing or left over)."""


def prepare_workspace(mirror: Path, base_commit: str, dest: Path) -> None:
    """Make `dest` (which must not exist) a repository checked out at `base_commit` on branch `main`, holding
    exactly the objects reachable from it, and verify that (`verify_pruned`). `mirror` is a git directory, or
    a working tree with one, and is only read. On failure `dest` is removed."""
    if dest.exists() or dest.is_symlink():
        raise HarnessError(f"cannot prepare a workspace at {dest}: it already exists")
    try:
        _build(_objects_dir(mirror), base_commit, dest, mirror)
        verify_pruned(dest, base_commit)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def verify_pruned(repo: Path, base_commit: str) -> None:
    """Raise PruneError unless `repo`'s object store holds exactly the objects reachable from `base_commit`
    and nothing else can name its future: only `refs/heads/main` (at the base, checked out), no remotes,
    stash, notes, reflogs, `*_HEAD` files, alternates, promisor markers or commit graphs."""
    git_dir = Path(run_git(["rev-parse", "--absolute-git-dir"], cwd=repo).strip())
    base = _resolve_commit(repo, base_commit, where=str(repo))
    reachable, missing = _reachable_objects(repo, base, where=str(repo))
    present = set(run_git(["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"], cwd=repo).split())
    problems = [_some("objects the base does not reach", present - reachable)]
    problems.append(_some("objects of the base missing", missing))
    refs = run_git(["for-each-ref", "--format=%(refname)"], cwd=repo).split()
    problems.append(_some(f"refs besides {_MAIN}", set(refs) - {_MAIN}))
    if _MAIN in refs and run_git(["rev-parse", _MAIN], cwd=repo).strip() != base:
        problems.append(f"{_MAIN} is not at the base commit")
    if (git_dir / "HEAD").read_text().strip() != f"ref: {_MAIN}":
        problems.append(f"HEAD is not {_MAIN}")
    config = run_git(["config", "--local", "--name-only", "--list"], cwd=repo).split()
    problems.append(_some("config entries of a remote or a partial clone",
                          {key for key in config if key.startswith(("remote.", "extensions.partialclone"))}))
    problems.append(_some("files that may name other commits", _leaky_files(git_dir)))
    found = [problem for problem in problems if problem]
    if found:
        raise PruneError(f"the workspace {repo} is not pruned to {base}: {'; '.join(found)}")


def commit_setup_state(repo: Path, message: str = "kcode: environment setup") -> str:
    """Commit what the environment's install changed (`git add -A`: .gitignore'd files and JUNK_PATTERNS stay
    out) and return the new HEAD, or HEAD itself when nothing changed.

    The commit is plumbing (`commit-tree`, so no hooks and no signing), by a fixed identity dated like its
    parent: the same setup of the same base always gives the same commit id.
    """
    with tempfile.TemporaryDirectory(prefix="kcode-setup-") as scratch:
        exclude = _write_junk_patterns(Path(scratch))
        run_git(["-c", f"core.excludesFile={exclude}", "add", "-A", "--", "."], cwd=repo)
    head = run_git(["rev-parse", "--verify", "HEAD^{commit}"], cwd=repo).strip()
    tree = run_git(["write-tree"], cwd=repo).strip()
    if tree == run_git(["rev-parse", "HEAD^{tree}"], cwd=repo).strip():
        return head
    date = run_git(["show", "-s", "--format=%ct %cz", head], cwd=repo).strip()
    env = _SETUP_IDENTITY | {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    commit = run_git(["commit-tree", tree, "-p", head, "-m", message], cwd=repo, env=env).strip()
    run_git(["update-ref", "-m", message, "HEAD", commit, head], cwd=repo)
    return commit


def workspace_diff(repo: Path, since: str) -> str:
    """The patch from commit `since` to the files in `repo` now, untracked files included, ignored files and
    JUNK_PATTERNS excluded, binary files as git binary patches; `git apply` applies it at `since`.

    The repository's index, HEAD, refs and object store are left alone: the tree is built in a private index
    (started from `since`, not from the agent's index, which may hold conflicts or staged junk) and new blobs go
    to a private object store. Bytes that are not UTF-8 come back as surrogate escapes.
    """
    git_dir = Path(run_git(["rev-parse", "--absolute-git-dir"], cwd=repo).strip())
    with tempfile.TemporaryDirectory(prefix="kcode-diff-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "objects").mkdir()
        env = {"GIT_INDEX_FILE": str(scratch / "index"), "GIT_OBJECT_DIRECTORY": str(scratch / "objects"),
               "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(git_dir / "objects")}
        exclude = _write_junk_patterns(scratch)
        run_git(["read-tree", since], cwd=repo, env=env)
        run_git(["-c", f"core.excludesFile={exclude}", "add", "-A", "--", "."], cwd=repo, env=env)
        return run_git(["diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
                        "--no-renames", "--src-prefix=a/", "--dst-prefix=b/", since], cwd=repo, env=env)


def _build(objects: Path, base_commit: str, dest: Path, mirror: Path) -> None:
    run_git(["init", "--quiet", "--template=", "--initial-branch=main", str(dest)])
    run_git(["config", "core.logAllRefUpdates", "false"], cwd=dest)  # no reflogs, ever
    copied_loose = _copy_objects(objects, dest / ".git" / "objects")
    base = _resolve_commit(dest, base_commit, where=f"the mirror {mirror}")
    run_git(["update-ref", _MAIN, base], cwd=dest)
    try:
        run_git(["repack", "-a", "-d", "-q"], cwd=dest)
    except GitError as error:
        _, missing = _reachable_objects(dest, base, where=f"the mirror {mirror}")
        if missing:
            raise PruneError(f"the mirror {mirror} lacks {len(missing)} of the objects reachable from {base}, "
                             f"e.g. {min(missing)} (a partial clone? fetch them into the mirror)") from error
        raise
    if copied_loose:  # repack leaves unreachable loose objects behind
        run_git(["prune", "--expire=now"], cwd=dest)
    run_git(["read-tree", "-u", "--reset", "HEAD"], cwd=dest)


def _objects_dir(mirror: Path) -> Path:
    for git_dir in (mirror, mirror / ".git"):
        if is_git_dir(git_dir):
            return git_dir / "objects"
    raise HarnessError(f"the mirror {mirror} is not a git directory (no HEAD, objects/ and refs/)")


def _copy_objects(objects: Path, into: Path) -> bool:
    """Copy the packs (without .promisor, .keep or .bitmap files) and loose objects of `objects` and of the
    stores it borrows from into `into`; return whether any loose object came along."""
    copied_loose = False
    for store in _object_stores(objects):
        for index in sorted((store / "pack").glob("pack-*.idx")):
            pack = index.with_suffix(".pack")
            if pack.is_file() and not (into / "pack" / index.name).exists():
                shutil.copyfile(pack, into / "pack" / pack.name)
                shutil.copyfile(index, into / "pack" / index.name)
        for fanout in store.iterdir():
            if _FANOUT.fullmatch(fanout.name) and fanout.is_dir() and any(fanout.iterdir()):
                shutil.copytree(fanout, into / fanout.name, dirs_exist_ok=True)
                copied_loose = True
    return copied_loose


def _object_stores(objects: Path) -> list[Path]:
    """`objects` and, recursively, the object directories its info/alternates file names."""
    stores: list[Path] = []
    pending = [objects.resolve()]
    while pending:
        store = pending.pop(0)
        if store in stores or not store.is_dir():  # a dangling alternate: its objects will be reported missing
            continue
        stores.append(store)
        alternates = store / "info" / "alternates"
        if alternates.is_file():
            lines = [line.strip() for line in alternates.read_text().splitlines()]
            pending += [(store / line).resolve() for line in lines if line and not line.startswith("#")]
    return stores


def _resolve_commit(repo: Path, commit: str, *, where: str) -> str:
    try:
        return run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}"],
                       cwd=repo).strip()
    except GitError:
        raise PruneError(f"the base commit {commit} is not in {where}") from None


def _reachable_objects(repo: Path, base: str, *, where: str) -> tuple[set[str], set[str]]:
    """The objects reachable from `base` that are present, and the trees and blobs that are missing."""
    try:
        listing = run_git(["rev-list", "--objects", "--missing=print", base], cwd=repo)
    except GitError as error:  # a missing commit (a shallow mirror) stops the walk itself
        raise PruneError(f"the history of {base} in {where} is incomplete: {error}") from None
    ids = [line.split(" ", 1)[0] for line in listing.splitlines()]
    return {i for i in ids if not i.startswith("?")}, {i[1:] for i in ids if i.startswith("?")}


def _leaky_files(git_dir: Path) -> set[str]:
    leaks = {name for name in _LEAKY_FILES if (git_dir / name).exists()}
    leaks |= {p.name for p in git_dir.glob("*_HEAD")}  # ORIG_HEAD, FETCH_HEAD, MERGE_HEAD: commits of elsewhere
    leaks |= {str(p.relative_to(git_dir)) for p in (git_dir / "logs").rglob("*") if p.is_file()}
    leaks |= {str(p.relative_to(git_dir)) for p in (git_dir / "objects" / "pack").glob("*.promisor")}
    return leaks


def _some(what: str, items: set[str]) -> str:
    """'<what>: 3 (e.g. <first>)' for a non-empty set, '' for an empty one."""
    return f"{what}: {len(items)} (e.g. {min(items)})" if items else ""


def _write_junk_patterns(scratch: Path) -> Path:
    exclude = scratch / "exclude"
    exclude.write_text(JUNK_PATTERNS)
    return exclude
