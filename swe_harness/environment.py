"""Python environments for SWE-bench instances, built on this machine instead of in Docker images.

Why it works this way:
- What to build comes from an `EnvironmentSpec` (environment_specs.py: the facts swebench 5.x keeps only in
  per-instance Dockerfiles, as data).
- A build takes minutes and many instances share one, so `ensure_environment` builds a venv once per (spec,
  setup commit) under a cache dir: under a file lock (two workers asking at once build it once), in a temporary
  directory renamed into place when complete (a failed or killed build leaves nothing that is later reused).
  Its record.json names the Python asked for and the one used, the spec, the build time, the repository's
  distributions uninstalled again (below) and `pip freeze`.
- The build installs setuptools and wheel (conda's python came with them), the requirement files, then the
  spec's packages (installed after, they override the files' pins, as in 4.1), the repository's [build-system]
  requires, then the repository itself at the setup commit: every dependency is then in the venv, and the
  install in the workspace later needs no index and no build isolation. `pre_install` lines run before that, in
  the source tree.
- The source tree is a `prepare_workspace` checkout, not `git archive` run in the mirror: git run in a partial
  clone fetches the blobs it lacks and writes a pack into the mirror, which must stay as it is. A mirror that
  lacks the setup commit's blobs fails the build, and says so.
- The repository is then uninstalled from the shared venv. The setup commit is often later than an instance's
  base commit, so its installed copy can hold the very fix the agent is asked to write. pip >= 20.1 names the
  distribution it installed from the source tree in direct_url.json; for older pips and legacy `setup.py install`
  it is the new distribution whose top-level modules are in the source tree.
- Each instance installs its own checkout, so `activate` gives it a private copy of the venv: `cp -a
  --reflink=auto` (shared blocks where the filesystem can, a plain copy otherwise; one process), then bin/
  scripts, pyvenv.cfg and top-level *.pth files rewritten to point at the copy. Not hardlinks: a file written in
  place (`>>`, setuptools' develop rewriting easy-install.pth) would change the shared venv for every instance.
- `pre_install` lines starting with apt-get need root and change the machine for everyone: they are skipped, and
  the log says so.
- pip reads PIP_NO_BUILD_ISOLATION backwards: "0" turns build isolation off (checked with pip 23.0, 23.2, 26.3).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from swe_harness.environment_specs import EnvironmentSpec
from swe_harness.errors import HarnessError
from swe_harness.workspace import prepare_workspace

_DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0", "wheel")  # what pip assumes without a [build-system] table
_COMMAND_TIMEOUT_S = 3600.0
_TAIL_LINES = 20
_RECORD = "record.json"
INTERPRETER_VARIABLES = frozenset({"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV",
                                   "CONDA_PREFIX"})
"""A caller's settings that would make a venv's Python look at another installation; never passed on."""
_RECIPE = 2  # part of every build key: bump it when the build steps change, so cached environments are rebuilt
# A requirement line that installs the repository itself ("-e .", ".[tests]"): it comes last, from the source.
_SELF_INSTALL = re.compile(r"(?:(?:-e|--editable)(?:\s+|=))?\.(?:[\[/].*)?")
_INCLUDE = re.compile(r"(?:-r|--requirement)(?:\s+|=)(\S+)")


class EnvironmentBuildError(HarnessError):
    """A command that builds or installs an environment failed; `log` holds its whole output, `tail` the end."""

    def __init__(self, what: str, log: Path, tail: str) -> None:
        super().__init__(f"{what}; log: {log}" + (f"\n{tail}" if tail else ""))
        self.log = log
        self.tail = tail


@dataclass(frozen=True)
class Environment:
    """A built venv, shared by every instance of its (repository, version); `activate` copies it per instance."""

    path: Path
    python_version: str
    """The interpreter actually used, e.g. "3.9.18"."""
    requested_python: str
    spec: EnvironmentSpec
    build_s: float
    """Seconds this call spent building; 0.0 when the environment was already there."""


@dataclass(frozen=True)
class _Interpreter:
    path: Path
    version: str


# --- building the shared venv -------------------------------------------------------------------------------


def ensure_environment(spec: EnvironmentSpec, mirror: Path, setup_commit: str, cache_dir: Path, *, log: Path,
                       environ: Mapping[str, str] | None = None) -> Environment:
    """The venv for `spec` at `setup_commit`, built under cache_dir/envs unless it is there already.

    `mirror` is a git directory (bare, maybe partial); it is only read. Build output is appended to `log`
    (and kept as build.log beside the venv). `environ` is the environment commands run in (default: ours).
    A build that failed is not tried again by this process (the other instances that need it get the same
    error at once); the next command tries again, in case the machine was fixed in between.
    """
    environ = os.environ if environ is None else environ
    envs = cache_dir / "envs"
    home = envs / f"{spec.name}-{_build_key(spec, setup_commit)[:8]}"
    envs.mkdir(parents=True, exist_ok=True)
    if not (home / _RECORD).exists():
        with _exclusive(envs / f".{home.name}.lock"):
            if home in _FAILED_BUILDS:
                _note(log, f"environment {home.name} failed to build earlier in this run")
                raise _FAILED_BUILDS[home]
            if not (home / _RECORD).exists():
                try:
                    return _build(spec, mirror, setup_commit, home, log=log, environ=environ)
                except HarnessError as exc:
                    _FAILED_BUILDS[home] = exc
                    raise
    record = json.loads((home / _RECORD).read_text())
    _note(log, f"using environment {home} (built {record['built']} in {record['build_s']} s)")
    return Environment(path=home / "venv", python_version=record["python_version"],
                       requested_python=record["requested_python"], spec=spec, build_s=0.0)


_FAILED_BUILDS: dict[Path, HarnessError] = {}
"""Builds that failed in this process, by environment directory; written and read under its build lock."""


def _build_key(spec: EnvironmentSpec, setup_commit: str) -> str:
    """A hash of what goes into the shared venv; install, test_cmd and log_parser only matter later."""
    built = {"python": spec.python, "build_tools": spec.build_tools, "packages": spec.packages,
             "requirements_files": spec.requirements_files, "pre_install": spec.pre_install,
             "variables": dict(spec.variables), "setup_commit": setup_commit, "recipe": _RECIPE}
    return hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    # flock locks belong to an open file description, so two threads that each open the file exclude each other.
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(spec: EnvironmentSpec, mirror: Path, setup_commit: str, home: Path, *, log: Path,
           environ: Mapping[str, str]) -> Environment:
    started = time.monotonic()
    for leftover in [*home.parent.glob(f".{home.name}.tmp-*"), home]:  # from killed builds; we hold the lock
        shutil.rmtree(leftover, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log_start = log.stat().st_size if log.exists() else 0
    python = _find_python(spec.python, environ)
    _note(log, f"building environment {home.name} with Python {python.version} ({python.path})")
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}.tmp-", dir=home.parent))
    try:
        freeze, uninstalled = _build_venv(spec, mirror, setup_commit, python, staging, log=log,
                                          environ=environ)
        _repoint(staging / "venv", staging / "venv", home / "venv")
        build_s = time.monotonic() - started
        with log.open("rb") as whole:
            whole.seek(log_start)
            (staging / "build.log").write_bytes(whole.read())
        record = {"name": home.name, "spec": asdict(spec), "mirror": str(mirror), "setup_commit": setup_commit,
                  "requested_python": spec.python, "python": str(python.path), "python_version": python.version,
                  "build_s": round(build_s, 1), "built": datetime.datetime.now(datetime.UTC).isoformat(),
                  "uninstalled": uninstalled, "pip_freeze": freeze.splitlines()}
        (staging / _RECORD).write_text(json.dumps(record, indent=2) + "\n")
        os.rename(staging, home)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _note(log, f"built environment {home} in {build_s:.1f} s")
    return Environment(path=home / "venv", python_version=python.version, requested_python=spec.python,
                       spec=spec, build_s=build_s)


def _build_venv(spec: EnvironmentSpec, mirror: Path, setup_commit: str, python: _Interpreter, staging: Path, *,
                log: Path, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Create the venv in staging/venv with the repository's dependencies but not the repository itself; return
    `pip freeze --all` and the names of the repository's distributions, installed and uninstalled again."""
    venv, source = staging / "venv", staging / "source"
    _check_out(mirror, setup_commit, source, log)
    base = _clean(environ)
    _run([str(python.path), "-m", "venv", str(venv)], cwd=staging, env=base, log=log)
    env = {**base, **_venv_variables(venv, spec, environ)}
    _pre_install(spec, source, env, log)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    if spec.build_tools:
        _run([*pip, "install", *spec.build_tools], cwd=source, env=env, log=log)
    for requirements in spec.requirements_files:
        _drop_self_installs(source / requirements, seen=set())
        _run([*pip, "install", "-r", requirements], cwd=source, env=env, log=log)
    # The build tools again, so that the resolver fits them to the pins (wheel >= 0.46 wants packaging >= 24).
    wanted = list(dict.fromkeys([*spec.build_tools, *spec.packages, *_build_requires(source, setup_commit, log)]))
    if wanted:
        _run([*pip, "install", *wanted], cwd=source, env=env, log=log)
    before = _metadata_dirs(venv)
    _run([*pip, "install", "--no-build-isolation", "."], cwd=source, env=env, log=log)
    own = _own_distributions(venv, source, before)
    if not own:
        raise EnvironmentBuildError(f"cannot tell which distribution `pip install .` of {setup_commit} installed, "
                                    "so it cannot be uninstalled from the shared venv", log, "")
    shutil.rmtree(source)
    for name in own:  # not from the source tree: `python -m` puts the working directory on sys.path
        _run([*pip, "uninstall", "-y", name], cwd=staging, env=env, log=log)
    freeze = subprocess.run([*pip, "freeze", "--all"], cwd=staging, env=env, capture_output=True, text=True,
                            check=False)
    if freeze.returncode != 0:
        raise EnvironmentBuildError("`pip freeze --all` failed", log, freeze.stderr.strip())
    return freeze.stdout, own


def _check_out(mirror: Path, setup_commit: str, source: Path, log: Path) -> None:
    """Check `setup_commit` out at `source` without running git in the mirror (see the module docstring)."""
    _note(log, f"checking out {setup_commit} from {mirror} at {source}")
    try:
        prepare_workspace(mirror, setup_commit, source)
    except HarnessError as error:
        raise EnvironmentBuildError(f"cannot check out the environment setup commit {setup_commit}: {error}",
                                    log, "") from error


def _metadata_dirs(venv: Path) -> set[Path]:
    return {path for kind in ("dist-info", "egg-info") for path in venv.glob(f"lib/python*/site-packages/*.{kind}")}


def _own_distributions(venv: Path, source: Path, before: set[Path]) -> list[str]:
    """The names of the distributions that `pip install .` in `source` added to the venv: those whose
    direct_url.json points at `source`, else the new ones with a top-level module that is in `source`."""
    after = _metadata_dirs(venv)
    own = [dist for dist in after if _installed_from(dist, source)]
    if not own:
        modules = _source_modules(source)
        own = [dist for dist in after - before if _top_level_modules(dist) & modules]
    return sorted({dist.name.split("-")[0] for dist in own})  # pip escapes "-" in names as "_"


def _installed_from(dist: Path, source: Path) -> bool:
    direct_url = dist / "direct_url.json"
    if not direct_url.is_file():
        return False
    url = urllib.parse.urlsplit(str(json.loads(direct_url.read_text()).get("url", "")))
    return url.scheme == "file" and Path(urllib.parse.unquote(url.path)).resolve() == source.resolve()


def _top_level_modules(dist: Path) -> set[str]:
    """top_level.txt (setuptools writes it), else the first parts of the paths in RECORD."""
    if (dist / "top_level.txt").is_file():
        return set((dist / "top_level.txt").read_text().split())
    record = (dist / "RECORD").read_text().splitlines() if (dist / "RECORD").is_file() else []
    return {Path(line.split(",")[0]).parts[0].removesuffix(".py") for line in record
            if line and not line.startswith("..")} - {dist.name}


def _source_modules(source: Path) -> set[str]:
    """The packages and modules at the top of `source` and of its src/ and lib/ folders."""
    roots = [root for root in (source, source / "src", source / "lib") if root.is_dir()]
    return {path.name.removesuffix(".py") for root in roots for path in root.iterdir()
            if (path / "__init__.py").is_file() or (path.suffix == ".py" and path.is_file())}


def _find_python(requested: str, environ: Mapping[str, str]) -> _Interpreter:
    """pyenv's newest X.Y.* first (root: $PYENV_ROOT or ~/.pyenv), else pythonX.Y on PATH, else python3 on PATH."""
    root = Path(environ.get("PYENV_ROOT") or Path(environ.get("HOME", "/")) / ".pyenv")
    pattern = re.compile(re.escape(requested) + r"\.(\d+)")
    installed = sorted(((int(match.group(1)), folder) for folder in (root / "versions").glob(f"{requested}.*")
                        if (match := pattern.fullmatch(folder.name))), reverse=True)
    candidates = [folder / "bin" / "python" for _, folder in installed]
    for name in (f"python{requested}", "python3"):
        found = shutil.which(name, path=environ.get("PATH", ""))
        candidates += [Path(found)] if found else []
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return _Interpreter(candidate, probe.stdout.strip())
    raise HarnessError(f"no Python {requested} under {root / 'versions'} and no python3 on PATH")


def _drop_self_installs(requirements: Path, *, seen: set[Path]) -> None:
    """Comment out lines that install the repository itself, here and in the files it includes with -r."""
    if requirements in seen or not requirements.is_file():
        return  # pip names a missing file better than we would
    seen.add(requirements)
    lines = requirements.read_text().splitlines()
    kept = []
    for line in lines:
        bare = re.sub(r"(^|\s)#.*", "", line).strip()
        if include := _INCLUDE.fullmatch(bare):
            _drop_self_installs(requirements.parent / include.group(1), seen=seen)
        kept.append(f"# kcode: the repository is installed last: {line}" if _SELF_INSTALL.fullmatch(bare) else line)
    if kept != lines:
        requirements.write_text("\n".join(kept) + "\n")


def _build_requires(source: Path, setup_commit: str, log: Path) -> list[str]:
    """The [build-system] requires at the setup commit, so later installs need no build isolation."""
    pyproject = source / "pyproject.toml"
    if not pyproject.exists():
        return list(_DEFAULT_BUILD_REQUIRES)
    try:
        build_system = tomllib.loads(pyproject.read_text()).get("build-system")
    except tomllib.TOMLDecodeError as exc:
        raise EnvironmentBuildError(f"pyproject.toml at {setup_commit} is not valid TOML: {exc}", log, "") from exc
    if build_system is None:
        return list(_DEFAULT_BUILD_REQUIRES)
    return list(build_system.get("requires", []))


def _repoint(venv: Path, old: Path, new: Path) -> None:
    """Make the venv's scripts, pyvenv.cfg and *.pth files say `new` where they say `old` (by replacing them)."""
    scripts = [path for path in (venv / "bin").iterdir() if path.is_file() and not path.is_symlink()]
    for path in [*scripts, venv / "pyvenv.cfg", *venv.glob("lib/python*/site-packages/*.pth")]:
        data = path.read_bytes()
        if os.fsencode(old) in data:
            fresh = path.with_name(f".{path.name}.kcode-new")
            fresh.write_bytes(data.replace(os.fsencode(old), os.fsencode(new)))
            shutil.copymode(path, fresh)
            os.replace(fresh, path)


# --- per-instance copies --------------------------------------------------------------------------------------


def activate(environment: Environment, workspace: Path, scratch: Path, *, log: Path | None = None,
             environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Install `workspace` into a private copy of the environment (scratch/venv); return the variables to run with.

    The variables (PATH, VIRTUAL_ENV, PIP_NO_INDEX=1, build isolation off, the spec's variables) are meant to be
    laid over the caller's environment. The install runs offline first, then once more with the index. Output
    goes to `log` (default scratch/activate.log).
    """
    environ = os.environ if environ is None else environ
    venv, log = scratch / "venv", scratch / "activate.log" if log is None else log
    variables = {**_venv_variables(venv, environment.spec, environ), "PIP_NO_INDEX": "1",
                 "PIP_NO_BUILD_ISOLATION": "0"}
    env = {**_clean(environ), **variables}
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    _clone(environment.path, venv, env=env, log=log)
    _pre_install(environment.spec, workspace, env, log)
    install = ["bash", "-c", environment.spec.install]
    try:
        _run(install, cwd=workspace, env=env, log=log)
    except EnvironmentBuildError:
        _note(log, "the offline install failed; once more with the package index")
        _run(install, cwd=workspace, env={k: v for k, v in env.items() if k != "PIP_NO_INDEX"}, log=log)
    return variables


def interpreter_home(venv: Path) -> Path:
    """The installation of the interpreter `venv` was made from (pyvenv.cfg's `home` is its bin directory)."""
    for line in (venv / "pyvenv.cfg").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).parent
    raise HarnessError(f"{venv / 'pyvenv.cfg'} does not say which interpreter the venv uses")


def _clone(source: Path, dest: Path, *, env: Mapping[str, str], log: Path) -> None:
    """Copy the venv at `source` to `dest` (timestamps kept, so its bytecode stays valid) and point it at `dest`."""
    _run(["cp", "-a", "--reflink=auto", "--", str(source), str(dest)], cwd=dest.parent, env=env, log=log)
    _repoint(dest, source, dest)


def _venv_variables(venv: Path, spec: EnvironmentSpec, environ: Mapping[str, str]) -> dict[str, str]:
    return {**spec.variables, "PATH": f"{venv / 'bin'}{os.pathsep}{environ.get('PATH', os.defpath)}",
            "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _clean(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus what would make a venv's Python look elsewhere."""
    return {key: value for key, value in environ.items() if key not in INTERPRETER_VARIABLES}


# --- running commands -----------------------------------------------------------------------------------------


def _pre_install(spec: EnvironmentSpec, cwd: Path, env: Mapping[str, str], log: Path) -> None:
    for line in spec.pre_install:
        if line.lstrip().startswith("apt-get"):
            _note(log, f"skipped, apt-get needs root and changes this machine: {line}")
        else:
            _run(["bash", "-c", line], cwd=cwd, env=env, log=log)


def _run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> None:
    """Run `argv` with its output appended to `log`; raise EnvironmentBuildError with the last lines if it fails."""
    shown = argv[2] if argv[:2] == ["bash", "-c"] else shlex.join(argv)
    with log.open("ab") as out:
        out.write(f"$ {shown}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = process.wait(timeout=_COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    if code != 0:
        reason = f"timed out after {_COMMAND_TIMEOUT_S:.0f} s" if code is None else f"exit {code}"
        raise EnvironmentBuildError(f"`{shown}` failed ({reason})", log, _tail(log))


def _note(log: Path, message: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"# kcode: {message}\n")


def _tail(log: Path) -> str:
    with log.open("rb") as handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - 16_384))
        return "\n".join(handle.read().decode(errors="replace").splitlines()[-_TAIL_LINES:])
