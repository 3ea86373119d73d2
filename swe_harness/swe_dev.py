"""SWE-Dev tasks (feature-driven development, as the K2 card scores it) on the harness's testbeds.

A SWE-Dev task (one `*-metadata.json` of DorothyDUUU/SWE-Dev) names a package, a test file and its code
(`test_file`, `test_code`), the package's files with the functions to write removed but their docstrings kept
(`file_code`), the same files whole (`GT_file_code`) and a requirements document (`PRD`). It carries no
repository or commit, since SWE-Dev ships each package in a Docker image; here the package comes from a mirror
under `--repos` like any instance's: `repo` ("owner/name", default "swe-dev/<package_name>") and `base_commit`
(default: the mirror's HEAD), `version` and `environment_setup_commit` may be added to the task.

What the agent gets is a *task commit*: the base commit's tree with the hidden test files deleted and `file_code`
written over the package, committed with no parent. A parent would be the base, whose tree holds the tests and
the removed functions, so the task commit stands alone and the workspace is pruned to it exactly as for SWE-bench
(workspace.py): no object of the tests or of the reference code is left in it. The environment is built from the
base commit (or the task's setup commit), so every task of a package shares it.

The score follows SWE-Dev's evaluation: the hidden test file runs once over the reference code and once over
the agent's patch, in a fresh testbed and without network; the pass rate is the share of the tests passing over
the reference that pass over the patch. A run's score is the mean over its tasks, a task that ended in an error
counting 0.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from swe_harness.dataset import Instance, refuse_repeats
from swe_harness.errors import HarnessError
from swe_harness.repos import find_mirror, run_git
from swe_harness.testbed import TestbedOptions
from swe_harness.workspace import prepare_workspace

_IDENTITY = {"GIT_AUTHOR_NAME": "kcode", "GIT_AUTHOR_EMAIL": "kcode@localhost",
             "GIT_COMMITTER_NAME": "kcode", "GIT_COMMITTER_EMAIL": "kcode@localhost"}
_NEEDED = ("sample_name", "package_name", "test_file", "test_code", "file_code", "GT_file_code", "PRD")


@dataclass(frozen=True)
class SweDevTask:
    """One SWE-Dev task, with the repository it is built from."""

    task_id: str
    """SWE-Dev's `sample_name`, e.g. "datefinder-test_extract_date_strings"."""
    repo: str
    base_commit: str
    """A commit of the mirror; "" for the mirror's HEAD."""
    version: str
    environment_setup_commit: str
    """The commit the environment is built from; "" for the base commit."""
    requirements: str
    """The PRD: what to implement, with signatures and docstrings; the agent's task."""
    hidden_tests: Mapping[str, str] = field(hash=False)
    """Test file path → its code: restored and run to score."""
    removed_tests: tuple[str, ...]
    """Every test file that exercises the functions to write (the hidden one and those of the call tree): none
    is in the agent's workspace."""
    masked_files: Mapping[str, str] = field(hash=False)
    """Path → the file with the functions to write removed: what the agent starts from."""
    reference_files: Mapping[str, str] = field(hash=False)
    """Path → the whole file: what the hidden tests are first run over."""


def load_tasks(path: Path) -> list[SweDevTask]:
    """The tasks in `path`: one task's JSON, a JSON list of tasks, JSON lines, or a directory of `*.json`
    files; HarnessError naming the file and the problem for anything else."""
    if path.is_dir():
        records = [(item, record) for item in sorted(path.glob("*.json")) for record in _records(item)]
    else:
        records = [(path, record) for record in _records(path)]
    if not records:
        raise HarnessError(f"{path} holds no SWE-Dev task")
    tasks = [_task(record, where) for where, record in records]
    refuse_repeats([task.task_id for task in tasks], path, "task")
    return tasks


def select_tasks(tasks: Sequence[SweDevTask], ids: Sequence[str]) -> list[SweDevTask]:
    """The tasks named by `ids` (all when none); an unknown id is an error, so a typo never runs nothing."""
    if not ids:
        return list(tasks)
    unknown = sorted(set(ids) - {task.task_id for task in tasks})
    if unknown:
        raise HarnessError(f"not among the tasks: {', '.join(unknown)}")
    return [task for task in tasks if task.task_id in set(ids)]


@contextmanager
def task_testbed(task: SweDevTask, options: TestbedOptions) -> Iterator[tuple[Instance, TestbedOptions]]:
    """The task as an instance over its task commit, and testbed options whose mirrors directory holds only that
    commit's repository (made in the scratch root, removed afterwards). The real mirrors stay hidden from the
    agent, as they always are."""
    mirror = find_mirror(options.repos_dir, task.repo, clone_missing=options.clone_missing)
    if options.scratch_root is not None:
        options.scratch_root.mkdir(parents=True, exist_ok=True)
    mirrors = Path(tempfile.mkdtemp(prefix=f"kcode-swe-dev-{task.task_id[:40]}-", dir=options.scratch_root))
    try:
        base = task.base_commit or run_git(["rev-parse", "--verify", "HEAD^{commit}"], cwd=mirror).strip()
        commit = build_task_repository(task, mirror, base, mirrors / task.repo.replace("/", "__"))
        row = {"instance_id": task.task_id, "repo": task.repo, "base_commit": commit, "version": task.version,
               "problem_statement": task.requirements, "FAIL_TO_PASS": [], "PASS_TO_PASS": [],
               "environment_setup_commit": task.environment_setup_commit or base}
        instance = Instance(instance_id=task.task_id, repo=task.repo, base_commit=commit,
                            problem_statement=task.requirements, version=task.version, gold_patch="", test_patch="",
                            fail_to_pass=(), pass_to_pass=(), row=row)
        yield instance, replace(options, repos_dir=mirrors, clone_missing=False,
                                private_dirs=(*options.private_dirs, options.repos_dir, mirror))
    finally:
        shutil.rmtree(mirrors, ignore_errors=True)


def build_task_repository(task: SweDevTask, mirror: Path, base_commit: str, dest: Path) -> str:
    """Make `dest` a repository holding `base_commit`'s history (the environment is built from it) and the task
    commit: the base's tree less the hidden tests, with the masked files written over it, and no parent. Return
    the task commit's id, the same for the same task and base."""
    prepare_workspace(mirror, base_commit, dest)
    for name in task.removed_tests:
        _inside(dest, name).unlink(missing_ok=True)
    for name, code in task.masked_files.items():
        target = _inside(dest, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code, encoding="utf-8")
    run_git(["add", "-A", "--", "."], cwd=dest)
    tree = run_git(["write-tree"], cwd=dest).strip()
    date = run_git(["show", "-s", "--format=%ct %cz", base_commit], cwd=dest).strip()
    env = _IDENTITY | {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    return run_git(["commit-tree", tree, "-m", f"SWE-Dev task {task.task_id}"], cwd=dest, env=env).strip()


def pass_rate(reference: Mapping[str, str], candidate: Mapping[str, str]) -> tuple[float, list[str], list[str]]:
    """(share of the tests passing over the reference that pass over the candidate, those passing, those not),
    as SWE-Dev scores; 0.0 when none passes over the reference."""
    expected = sorted(test for test, status in reference.items() if status in ("PASSED", "XFAIL"))
    passed = [test for test in expected if candidate.get(test) in ("PASSED", "XFAIL")]
    failed = [test for test in expected if test not in passed]
    return (len(passed) / len(expected) if expected else 0.0), passed, failed


def _records(path: Path) -> list[Mapping[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            values: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            values = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"cannot read SWE-Dev tasks from {path}: {exc}") from None
    records: list[Any] = values if isinstance(values, list) else [values]
    if not all(isinstance(record, dict) for record in records):
        raise HarnessError(f"{path}: expected a SWE-Dev task object, or a list of them")
    return records


def _task(record: Mapping[str, Any], where: Path) -> SweDevTask:
    name = str(record.get("sample_name") or "a task")
    missing = [key for key in _NEEDED if record.get(key) in (None, "")]
    if missing:
        raise HarnessError(f"{where}: {name} lacks {', '.join(missing)}")
    files = {key: record[key] for key in ("file_code", "GT_file_code")}
    if not all(isinstance(value, dict) for value in files.values()):
        raise HarnessError(f"{where}: {name}: file_code and GT_file_code must map paths to code")
    # The call tree names the tests that exercise the functions to write ("tests/x.py:test_a"): their files go too.
    called = {str(key).split(":", 1)[0] for key in record.get("call_tree") or {}}
    test_file = str(record["test_file"])
    return SweDevTask(
        task_id=str(record["sample_name"]), repo=str(record.get("repo") or f"swe-dev/{record['package_name']}"),
        base_commit=str(record.get("base_commit") or ""), version=str(record.get("version") or ""),
        environment_setup_commit=str(record.get("environment_setup_commit") or ""),
        requirements=str(record["PRD"]), hidden_tests={test_file: str(record["test_code"])},
        removed_tests=tuple(sorted(called | {test_file})),
        masked_files={str(k): str(v) for k, v in files["file_code"].items()},
        reference_files={str(k): str(v) for k, v in files["GT_file_code"].items()})


def _inside(root: Path, name: str) -> Path:
    """`root / name`, refusing a task path that would leave the repository (`../x`, `/etc/x`)."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()) or path == root.resolve():
        raise HarnessError(f"the task names {name!r}, which is not a file inside the repository")
    return path
