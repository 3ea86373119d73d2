"""A testbed: the pruned workspace of one instance with its environment active, where run and grade both start.

It is what SWE-bench's instance container holds, without Docker: the repository at the base commit and
nothing of its future, the (repo, version) environment cloned for this instance and the repository
installed into it, and whatever that install changed committed as the setup state, so a patch taken later
holds the agent's changes only. Everything lives in one scratch directory, removed when the testbed closes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kcode.isolated_git import git_env
from swe_harness.dataset import Instance
from swe_harness.environment import INTERPRETER_VARIABLES, Environment, activate, ensure_environment, interpreter_home
from swe_harness.environment_specs import EnvironmentSpec, environment_spec
from swe_harness.errors import HarnessError, InstanceError
from swe_harness.network import isolated, prefix_needs
from swe_harness.repos import find_mirror
from swe_harness.workspace import commit_setup_state, prepare_workspace
from tools.sandbox import Sandbox, SandboxPolicy, sandbox_for


@dataclass(frozen=True)
class TestbedOptions:
    """Where mirrors, environments and scratch space live; shared by every instance of a run."""

    __test__ = False  # a name starting with "Test" is not a test class

    repos_dir: Path
    """Mirrors named `owner__name`, bare or not; missing ones are cloned here when `clone_missing`."""
    cache_dir: Path
    """Built environments, reused across instances and runs."""
    base_env: Mapping[str, str]
    """The environment every command of the instance starts from (the caller's, less API keys); it must give
    a PATH and a HOME, where pyenv's interpreters are found."""
    extra_specs: Path | None = None
    """A TOML file of environment specs (the shape of specs/python.toml) for repositories the built-in specs
    do not know, or to replace theirs."""
    scratch_root: Path | None = None
    """Where testbeds are made; the system's temporary directory when None. Give every run its own, so that
    it can be hidden from the instances (which then see only their own testbed in it)."""
    private_dirs: tuple[Path, ...] = ()
    """More directories the instance's commands must not see (the output, kcode's configuration); the mirrors,
    the environment cache and the scratch root are always hidden."""
    clone_missing: bool = True


@dataclass(frozen=True)
class Testbed:
    """An instance ready to work on: `variables` is the whole environment its commands run with."""

    __test__ = False  # a name starting with "Test" is not a test class

    instance: Instance
    workspace: Path
    scratch: Path
    setup_commit: str
    """HEAD after the environment's install: patches are taken and applied against it."""
    spec: EnvironmentSpec
    environment: Environment
    variables: Mapping[str, str]
    hidden: tuple[Path, ...]
    """What the instance's commands must not see: the mirrors (the fix is in their history), the environment
    cache, other testbeds, and the options' private directories."""
    setup_s: float
    """Seconds spent making the testbed, the environment's build included."""

    def launcher(self, network_prefix: Sequence[str]) -> tuple[str, ...]:
        """The argv prefix for the tests, which run code the model wrote: nothing but the testbed writable, only
        this testbed visible of everything in `hidden`, and an empty home and /tmp of their own (the home is
        the user's, with their credentials; the tests get what SWE-bench's fresh container gives them). The
        environment's interpreter stays visible where it lives, in the home too for pyenv's, and so does kcode's
        own (the install step launches the tests' namespace with it)."""
        home = self.variables.get("HOME")
        needed = [interpreter_home(self.scratch / "venv"), *prefix_needs()]
        return isolated(network_prefix, hide=self.hidden, keep=needed, writable=[self.scratch],
                        private=[Path("/tmp"), *([Path(home)] if home else [])])

    def sandbox(self) -> Sandbox:
        """The agent's shell's sandbox, as `kcode fix` has it: only the testbed writable, no network, the
        user's credentials and everything in `hidden` but this testbed out of sight. No sandbox, no run."""
        home = self.variables.get("HOME")
        sandbox = sandbox_for(SandboxPolicy(writable=(self.scratch,), home=Path(home) if home else None,
                                            hidden=self.hidden))
        if not sandbox.active:
            raise InstanceError(self.instance.instance_id, f"cannot sandbox the agent's shell: {sandbox.notice}")
        return sandbox


def require_sandbox() -> None:
    """Stop before any instance when the agent's shell cannot be sandboxed on this machine at all."""
    sandbox = sandbox_for(SandboxPolicy())
    if not sandbox.active:
        raise HarnessError(f"cannot sandbox the agent's shell: {sandbox.notice}")


@contextmanager
def open_testbed(instance: Instance, options: TestbedOptions, log_dir: Path) -> Iterator[Testbed]:
    """Make the testbed and remove it afterwards; every failure is an InstanceError naming the instance.

    The environment's build and install logs go to `log_dir`, which outlives the testbed.
    """
    started = time.monotonic()
    if options.scratch_root is not None:  # made where the run started; on another node of a cluster, made here
        options.scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"kcode-swe-{instance.instance_id[:40]}-", dir=options.scratch_root))
    try:
        try:
            testbed = _make(instance, options, scratch, log_dir, started)
        except InstanceError:
            raise
        except HarnessError as exc:
            raise InstanceError(instance.instance_id, str(exc)) from None
        yield testbed
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def instance_environ(options: TestbedOptions) -> dict[str, str]:
    """What every command of an instance starts from: the options' environment, less what would make a venv's
    Python look elsewhere, with git isolated from the user's configuration."""
    return git_env(base={name: value for name, value in options.base_env.items()
                         if name not in INTERPRETER_VARIABLES})


def _make(instance: Instance, options: TestbedOptions, scratch: Path, log_dir: Path, started: float) -> Testbed:
    spec = environment_spec(instance.repo, instance.version, options.extra_specs)
    mirror = find_mirror(options.repos_dir, instance.repo, clone_missing=options.clone_missing)
    workspace = scratch / instance.repo.split("/")[-1]
    prepare_workspace(mirror, instance.base_commit, workspace)
    base_env = instance_environ(options)
    log_dir.mkdir(parents=True, exist_ok=True)
    environment = ensure_environment(spec, mirror, instance.environment_setup_commit, options.cache_dir,
                                     log=log_dir / "environment.log", environ=base_env)
    variables = {**base_env, **activate(environment, workspace, scratch, log=log_dir / "environment.log",
                                        environ=base_env)}
    setup_commit = commit_setup_state(workspace)
    hidden = (options.repos_dir, mirror, options.cache_dir, *options.private_dirs,
              *([options.scratch_root] if options.scratch_root is not None else []))
    return Testbed(instance=instance, workspace=workspace, scratch=scratch, setup_commit=setup_commit, spec=spec,
                   environment=environment, variables=variables, hidden=tuple(dict.fromkeys(hidden)),
                   setup_s=time.monotonic() - started)
