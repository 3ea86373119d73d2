"""Environments: built specs, one shared venv per spec built once, private per-instance copies.

Everything runs offline: the test project builds with an in-tree PEP 517 backend (below), so neither setuptools
nor wheel is needed (venvs of Python >= 3.12 have no setuptools, and `wheel` is never bundled), and the builds
run with PIP_NO_INDEX=1. A pyenv Python other than ours is used when one is installed. The package's text at the
setup commit is a marker that must not be found in a shared venv; mirrors, partial clones among them, are compared
file by file (mtime and size) before and after a build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from swe_harness.environment import Environment, EnvironmentBuildError, activate, ensure_environment
from swe_harness.environment_specs import EnvironmentSpec, environment_spec
from swe_harness.errors import HarnessError

# A PEP 517/660 backend in ~20 lines: a wheel with the package, or an editable wheel with a .pth to the source.
_BACKEND = '''
import base64, hashlib, os, zipfile
DIST = "tinypkg-0.1"
def _line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))
def _wheel(directory, files):
    files = dict(files)
    metadata = "Metadata-Version: 2.1\\nName: %s\\nVersion: %s\\n" % tuple(DIST.split("-"))
    files[DIST + ".dist-info/METADATA"] = metadata.encode()
    files[DIST + ".dist-info/WHEEL"] = b"Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = DIST + ".dist-info/RECORD"
    files[record] = "".join(_line(p, d) + "\\n" for p, d in files.items()).encode() + (record + ",,\\n").encode()
    with zipfile.ZipFile(os.path.join(directory, DIST + "-py3-none-any.whl"), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return DIST + "-py3-none-any.whl"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open("tinypkg/__init__.py", "rb") as source:
        return _wheel(wheel_directory, {"tinypkg/__init__.py": source.read()})
def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {"tinypkg.pth": (os.path.abspath(".") + "\\n").encode()})
'''
_PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "_backend"\nbackend-path = ["."]\n'
# The package's text at the environment setup commit: it must not be in the shared venv (it may be a future fix).
_SETUP_MARKER = "kcode-test-marker-of-the-setup-commit"

_PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
_OTHER_PYTHON = next((v for v in ("3.10", "3.9", "3.12") if any(_PYENV_VERSIONS.glob(f"{v}.*"))), None)
_PYTHON = _OTHER_PYTHON or f"{sys.version_info.major}.{sys.version_info.minor}"
_OFFLINE = {**os.environ, "PIP_NO_INDEX": "1"}
_PYTHON_36 = any(_PYENV_VERSIONS.glob("3.6.*"))  # its pip 18.1 writes no direct_url.json

# Versions of these repositories in SWE-bench Verified and Lite (test splits).
_DATASET_VERSIONS = {
    "psf/requests": ["0.14", "1.1", "2.0", "2.3", "2.4", "2.7", "2.9", "2.10", "2.26", "2.27"],
    "pallets/flask": ["2.0", "2.3"],
    "pytest-dev/pytest": ["4.4", "4.5", "4.6", "5.0", "5.1", "5.2", "5.4", "6.0", "6.2", "6.3", "7.0", "7.2", "8.0"],
    "pylint-dev/pylint": ["2.9", "2.10", "2.13", "2.14", "2.15", "3.0"],
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def _project(root: Path, marker: str) -> Path:
    (root / "tinypkg").mkdir(parents=True)
    (root / "tinypkg" / "__init__.py").write_text(f"MARKER = {marker!r}\n")
    (root / "_backend.py").write_text(_BACKEND)
    (root / "pyproject.toml").write_text(_PYPROJECT)
    return root


def _spec(**changes: object) -> EnvironmentSpec:
    spec = EnvironmentSpec(python=_PYTHON, install="python -m pip install -e .", build_tools=(), name="tiny")
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def _snapshot(tree: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(tree)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in tree.rglob("*") if p.is_file() and not p.is_symlink()}


def _stat_tree(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(tree)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in tree.rglob("*")}


def _holding(tree: Path, text: str) -> list[str]:
    return [str(p) for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and text.encode() in p.read_bytes()]


def _python(variables: Mapping[str, str], code: str, cwd: Path) -> str:
    return subprocess.run(["python", "-c", code], cwd=cwd, env={**os.environ, **variables},
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = _project(tmp_path_factory.mktemp("repo"), _SETUP_MARKER)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "tiny")
    return repo / ".git"


@pytest.fixture(scope="module")
def built(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Environment], Path, Path]:
    """Two workers ask for the same environment at once."""
    cache, logs = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("logs")
    results: list[Environment] = []

    def worker(number: int) -> None:
        results.append(ensure_environment(_spec(), mirror, _git(mirror.parent, "rev-parse", "HEAD"), cache,
                                          log=logs / f"{number}.log", environ=_OFFLINE))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2, "a worker failed; see its log under " + str(logs)
    return results, cache, logs


# --- specs ------------------------------------------------------------------------------------------------------


def test_builtin_specs_hold_the_facts() -> None:
    requests = environment_spec("psf/requests", "1.1")
    assert (requests.python, requests.install, requests.log_parser) == ("3.9", "python -m pip install .",
                                                                        "parse_log_requests")
    assert (requests.build_tools, requests.packages) == (("setuptools", "wheel"), ("pytest",))
    assert requests.name == "psf__requests-1.1"
    pytest_72 = environment_spec("pytest-dev/pytest", "7.2")
    assert pytest_72.variables == {"SETUPTOOLS_SCM_PRETEND_VERSION": "7.2.0"}
    assert "tomli==2.0.1" in pytest_72.packages
    assert "setuptools==68.0.0" in environment_spec("pytest-dev/pytest", "4.4").packages
    assert environment_spec("pytest-dev/pytest", "6.3").pre_install == ("sed -i 's/>=>=/>=/' setup.cfg",)
    flask = environment_spec("pallets/flask", "2.0")
    assert (flask.python, flask.requirements_files) == ("3.9", ("requirements/dev.txt",))
    assert environment_spec("pallets/flask", "2.3").python == "3.11"
    assert environment_spec("pylint-dev/pylint", "2.8").pre_install[0].startswith("apt-get")
    assert "astroid==3.0.0a6" in environment_spec("pylint-dev/pylint", "3.0").packages


def test_every_dataset_version_has_a_spec_with_a_known_parser() -> None:
    parsers = pytest.importorskip("swebench.harness.log_parsers").PARSER_REGISTRY
    for repo, versions in _DATASET_VERSIONS.items():
        for version in versions:
            assert environment_spec(repo, version).log_parser in parsers, (repo, version)


def test_an_unknown_version_names_the_known_ones() -> None:
    with pytest.raises(HarnessError, match=r"psf/requests version 9\.9; known versions: 0\.7, 0\.8, .*, 3\.0$"):
        environment_spec("psf/requests", "9.9")
    with pytest.raises(HarnessError, match="no environment spec for nobody/nothing; known repositories: mwaskom/"):
        environment_spec("nobody/nothing", "1.0")


def test_extra_specs_add_repositories_and_replace_whole_ones(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('["psf/requests"]\nversions = ["9.9"]\npython = "3.12"\ninstall = "make"\nbuild_tools = []\n'
                     '[["psf/requests".overrides]]\nversions = ["9.9"]\nvariables = {V = "{version}"}\n')
    spec = environment_spec("psf/requests", "9.9", extra)
    assert (spec.python, spec.install, spec.build_tools, spec.variables) == ("3.12", "make", (), {"V": "9.9"})
    with pytest.raises(HarnessError, match=r"known versions: 9\.9$"):
        environment_spec("psf/requests", "1.1", extra)
    extra.write_text('["a/b"]\nversions = ["1"]\npython = "3.9"\ninstall = "x"\npyhton = "3.8"\n')
    with pytest.raises(HarnessError, match=r"a/b 1: unknown fields \['pyhton'\]"):
        environment_spec("a/b", "1", extra)


# --- building ---------------------------------------------------------------------------------------------------


def test_two_workers_asking_at_once_build_once(built: tuple[list[Environment], Path, Path]) -> None:
    (first, second), cache, logs = built
    assert first.path == second.path
    assert sorted(e.build_s > 0 for e in (first, second)) == [False, True]
    assert first.path.parent.parent == cache / "envs"
    assert first.path.parent.name.startswith("tiny-")
    building = [log.read_text().count("# kcode: building environment") for log in sorted(logs.iterdir())]
    assert sorted(building) == [0, 1]
    assert [p.name for p in (cache / "envs").iterdir() if not p.name.startswith(".")] == [first.path.parent.name]


def test_a_built_environment_is_reused_and_recorded(built: tuple[list[Environment], Path, Path],
                                                    mirror: Path, tmp_path: Path) -> None:
    (first, _), cache, _ = built
    again = ensure_environment(_spec(), mirror, _git(mirror.parent, "rev-parse", "HEAD"), cache,
                               log=tmp_path / "log", environ=_OFFLINE)
    assert (again.path, again.build_s) == (first.path, 0.0)
    record = json.loads((first.path.parent / "record.json").read_text())
    assert record["requested_python"] == _PYTHON
    assert record["python_version"] == again.python_version
    if _OTHER_PYTHON:
        assert again.python_version.startswith(_OTHER_PYTHON + ".")
        assert record["python"].startswith(str(_PYENV_VERSIONS))
    assert record["uninstalled"] == ["tinypkg"]
    assert not any(line.startswith("tinypkg") for line in record["pip_freeze"])
    assert record["spec"]["install"] == "python -m pip install -e ."
    assert (first.path.parent / "build.log").read_text().count("$ ") >= 3
    assert "using environment" in (tmp_path / "log").read_text()
    shebang = (first.path / "bin" / "pip").read_text().splitlines()[0]
    assert shebang.startswith(f"#!{first.path}/bin/python")  # the staging directory's name is gone


def test_a_failing_build_raises_with_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    broken = _project(tmp_path / "broken", "broken")
    (broken / "_backend.py").write_text(_BACKEND + "def build_wheel(*args, **kwargs):\n"
                                                    "    raise RuntimeError('broken on purpose')\n")
    _git(broken, "init", "-q")
    _git(broken, "add", "-A")
    _git(broken, "commit", "-qm", "broken")
    log = tmp_path / "build.log"
    with pytest.raises(EnvironmentBuildError, match="broken on purpose") as caught:
        ensure_environment(_spec(), broken / ".git", _git(broken, "rev-parse", "HEAD"), tmp_path / "cache", log=log,
                           environ=_OFFLINE)
    assert str(log) in str(caught.value)
    assert "pip install --no-build-isolation ." in str(caught.value).splitlines()[0]
    assert [p.name for p in (tmp_path / "cache" / "envs").iterdir() if not p.name.endswith(".lock")] == []
    started = time.monotonic()  # the next instance that needs it gets the same error at once, with no rebuild
    with pytest.raises(EnvironmentBuildError, match="broken on purpose"):
        ensure_environment(_spec(), broken / ".git", _git(broken, "rev-parse", "HEAD"), tmp_path / "cache", log=log,
                           environ=_OFFLINE)
    assert time.monotonic() - started < 1 and log.read_text().endswith("failed to build earlier in this run\n")


def test_the_shared_venv_holds_nothing_of_the_repository(built: tuple[list[Environment], Path, Path]) -> None:
    venv = built[0][0].path
    assert _holding(venv, _SETUP_MARKER) == []
    assert not list(venv.glob("lib/python*/site-packages/tinypkg*"))


@pytest.mark.skipif(not _PYTHON_36, reason="needs a pyenv Python 3.6 (pip 18.1, which writes no direct_url.json)")
def test_without_direct_url_the_repository_is_the_new_distribution_of_its_modules(tmp_path: Path) -> None:
    # pip 18.1 installs the setup.py project with `setup.py install` (an .egg-info) and its dependency from a wheel
    # (a .dist-info); only the project goes.
    backend: dict[str, object] = {}
    exec(_BACKEND, backend)
    (tmp_path / "wheels").mkdir()
    backend["DIST"] = "depkg-1.0"
    backend["_wheel"](str(tmp_path / "wheels"), {"depkg/__init__.py": b""})  # type: ignore[operator]
    repo = _project(tmp_path / "repo", _SETUP_MARKER)
    (repo / "pyproject.toml").write_text("[build-system]\nrequires = []\n")
    (repo / "setup.py").write_text("from setuptools import setup\nsetup(name='tinypkg', version='0.1', "
                                   "packages=['tinypkg'], install_requires=['depkg'])\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "tiny")
    environment = ensure_environment(_spec(python="3.6"), repo / ".git", _git(repo, "rev-parse", "HEAD"),
                                     tmp_path / "cache", log=tmp_path / "log",
                                     environ={**_OFFLINE, "PIP_FIND_LINKS": str(tmp_path / "wheels")})
    assert json.loads((environment.path.parent / "record.json").read_text())["uninstalled"] == ["tinypkg"]
    assert _holding(environment.path, _SETUP_MARKER) == []
    python = str(environment.path / "bin" / "python")
    subprocess.run([python, "-c", "import depkg"], cwd=tmp_path, check=True)
    assert subprocess.run([python, "-c", "import tinypkg"], cwd=tmp_path, capture_output=True).returncode == 1


@pytest.fixture
def partial_mirror(tmp_path: Path) -> tuple[Path, str]:
    """A blobless partial clone (`--filter=blob:none`, with its promisor remote) of a one-commit repository."""
    upstream = _project(tmp_path / "upstream", _SETUP_MARKER)
    _git(upstream, "init", "-q")
    _git(upstream, "add", "-A")
    _git(upstream, "commit", "-qm", "tiny")
    _git(upstream, "config", "uploadpack.allowFilter", "true")
    mirror = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--filter=blob:none", f"file://{upstream}", str(mirror)],
                   check=True)
    assert _git(mirror, "config", "remote.origin.partialclonefilter") == "blob:none"
    assert list((mirror / "objects" / "pack").glob("*.promisor"))
    return mirror, _git(upstream, "rev-parse", "HEAD")


def test_a_partial_mirror_is_only_read(partial_mirror: tuple[Path, str], tmp_path: Path) -> None:
    mirror, commit = partial_mirror
    for path in _git(mirror, "ls-tree", "-r", "--name-only", commit).split():
        _git(mirror, "cat-file", "-p", f"{commit}:{path}")  # fetches the blob, as one would to build from it
    before = _stat_tree(mirror)
    environment = ensure_environment(_spec(), mirror, commit, tmp_path / "cache", log=tmp_path / "log",
                                     environ=_OFFLINE)
    assert environment.build_s > 0
    assert _stat_tree(mirror) == before


def test_a_partial_mirror_without_the_blobs_fails_the_build_and_is_left_alone(
        partial_mirror: tuple[Path, str], tmp_path: Path) -> None:
    mirror, commit = partial_mirror
    before = _stat_tree(mirror)
    with pytest.raises(EnvironmentBuildError, match=f"cannot check out the environment setup commit {commit}: "
                                                    f"the mirror {mirror} lacks 3 of the objects"):
        ensure_environment(_spec(), mirror, commit, tmp_path / "cache", log=tmp_path / "log", environ=_OFFLINE)
    assert _stat_tree(mirror) == before
    assert [p.name for p in (tmp_path / "cache" / "envs").iterdir() if not p.name.endswith(".lock")] == []


# --- activating -------------------------------------------------------------------------------------------------


def test_activations_are_private_and_leave_the_shared_env_alone(built: tuple[list[Environment], Path, Path],
                                                                  tmp_path: Path) -> None:
    environment = built[0][0]
    before = _snapshot(environment.path)
    where = "import sys, tinypkg; print(tinypkg.__file__, tinypkg.MARKER, sys.prefix)"
    workspaces = {name: _project(tmp_path / name, name) for name in ("one", "two")}
    variables = {name: activate(environment, ws, tmp_path / f"scratch-{name}", environ=_OFFLINE)
                 for name, ws in workspaces.items()}
    for name, ws in workspaces.items():
        private = tmp_path / f"scratch-{name}" / "venv"
        assert variables[name]["VIRTUAL_ENV"] == str(private)
        assert variables[name]["PATH"].startswith(f"{private}/bin{os.pathsep}")
        assert (variables[name]["PIP_NO_INDEX"], variables[name]["PIP_NO_BUILD_ISOLATION"]) == ("1", "0")
        module, marker, prefix = _python(variables[name], where, cwd=tmp_path).split()
        assert (Path(module), marker, Path(prefix)) == (ws / "tinypkg" / "__init__.py", name, private)
        pip = subprocess.run(["pip", "--version"], env={**os.environ, **variables[name]}, capture_output=True,
                             text=True, check=True).stdout
        assert f"from {private}/lib/" in pip  # a console script runs the private interpreter
    assert _snapshot(environment.path) == before
    shared = subprocess.run([environment.path / "bin" / "python", "-c", "import tinypkg"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert "No module named 'tinypkg'" in shared.stderr


def test_an_activated_venv_is_a_copy_not_links(built: tuple[list[Environment], Path, Path], tmp_path: Path) -> None:
    environment = built[0][0]
    activate(environment, _project(tmp_path / "ws", "ws"), tmp_path / "scratch", environ=_OFFLINE)
    [shared] = environment.path.glob("lib/python*/site-packages/pip/__init__.py")
    private = tmp_path / "scratch" / "venv" / shared.relative_to(environment.path)
    before = shared.read_bytes()
    assert private.read_bytes() == before
    with private.open("a") as written_in_place:
        written_in_place.write("# an agent was here\n")
    assert shared.read_bytes() == before
    assert private.stat().st_ino != shared.stat().st_ino


def test_pre_install_skips_apt_get_and_install_retries_with_the_index(
        built: tuple[list[Environment], Path, Path], tmp_path: Path) -> None:
    spec = _spec(pre_install=("apt-get install -y nothing", "echo ran > pre_install.txt"),
                 install='test "${PIP_NO_INDEX:-}" != 1 && echo "online install" > install.txt')
    environment = dataclasses.replace(built[0][0], spec=spec)
    workspace = _project(tmp_path / "ws", "ws")
    variables = activate(environment, workspace, tmp_path / "scratch", environ=_OFFLINE)
    assert variables["PIP_NO_INDEX"] == "1"
    assert (workspace / "pre_install.txt").read_text() == "ran\n"
    assert (workspace / "install.txt").read_text() == "online install\n"
    log = (tmp_path / "scratch" / "activate.log").read_text()
    assert "skipped, apt-get needs root and changes this machine: apt-get install -y nothing" in log
    assert "once more with the package index" in log


def test_an_install_that_fails_twice_raises_with_its_last_lines(built: tuple[list[Environment], Path, Path],
                                                                tmp_path: Path) -> None:
    environment = dataclasses.replace(built[0][0], spec=_spec(install="echo 'no such thing' >&2; exit 7"))
    with pytest.raises(EnvironmentBuildError) as caught:
        activate(environment, _project(tmp_path / "ws", "ws"), tmp_path / "scratch", environ=_OFFLINE)
    message = str(caught.value)
    assert message.splitlines()[0].endswith(f"failed (exit 7); log: {tmp_path / 'scratch' / 'activate.log'}")
    assert "no such thing" in message
