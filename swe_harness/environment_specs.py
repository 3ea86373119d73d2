"""What each (repository, version) needs in its environment: facts kept as data, in specs/python.toml.

swebench 5.x keeps these facts (Python version, pins, requirement files, install command) only in per-instance
Dockerfiles outside the package, so they live here, taken from swebench 4.1.0's constants, for psf/requests,
pallets/flask, pytest-dev/pytest, pylint-dev/pylint, pydata/xarray, mwaskom/seaborn and sphinx-doc/sphinx. A
user's own file in the same TOML shape (`--env-specs`) adds repositories or replaces the built-in ones. See the top
of specs/python.toml for the shape.

A repository SWE-bench does not know needs the same facts plus how to read its test output: `log_parser` is
one of SWE-bench's parsers by name or one of ours (`pytest`, `junit`: log_parsers.py), and a table without
`versions` describes every version of its repository (hand-written instances need not give one).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from swe_harness.errors import HarnessError
from swe_harness.log_parsers import check_parser_name

_SPEC_FIELDS = frozenset({"python", "install", "build_tools", "packages", "requirements_files", "pre_install",
                          "variables", "test_cmd", "log_parser", "junit_xml"})
ANY_VERSION = "*"
"""The version key of a repository table that lists no `versions`: it holds for every version."""


@dataclass(frozen=True)
class EnvironmentSpec:
    """How to build and use the environment of one (repository, version)."""

    python: str
    """Interpreter version, "X.Y"."""
    install: str
    """Shell line that installs the repository in its workspace, e.g. "python -m pip install -e ."."""
    build_tools: tuple[str, ...] = ("setuptools", "wheel")
    """pip requirements installed first, into the bare venv: conda's python came with setuptools and wheel, and
    without wheel old pip installs sdists with `setup.py install`, which compiles no bytecode."""
    packages: tuple[str, ...] = ()
    """pip requirements installed after the requirement files (so their pins win)."""
    requirements_files: tuple[str, ...] = ()
    """Repository paths read at the environment setup commit and installed after the build tools."""
    pre_install: tuple[str, ...] = ()
    """Shell lines run in the source tree before the repository is installed."""
    variables: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Extra environment for install and tests (SETUPTOOLS_SCM_PRETEND_VERSION, ...)."""
    test_cmd: str = "pytest -rA"
    """The test command when a dataset row brings no eval script."""
    log_parser: str = "parse_log_pytest"
    """A key of swebench.harness.log_parsers.PARSER_REGISTRY, or `pytest` / `junit` (log_parsers.py)."""
    junit_xml: str = ""
    """With `log_parser = "junit"`: the file, relative to the workspace, that `test_cmd` writes its JUnit XML to."""
    name: str = "custom"
    """Names the environment's directory, e.g. "psf__requests-1.1"."""


def environment_spec(repo: str, version: str, extra_specs: Path | None = None) -> EnvironmentSpec:
    """The spec of `repo` ("owner/name") at `version`; `extra_specs` (same TOML shape) replaces whole repositories."""
    specs = dict(_builtin_specs())
    if extra_specs is not None:
        specs.update(load_specs(extra_specs))
    if repo not in specs:
        raise HarnessError(f"no environment spec for {repo}; known repositories: {', '.join(sorted(specs))}")
    if version in specs[repo]:
        return specs[repo][version]
    if ANY_VERSION in specs[repo]:
        return specs[repo][ANY_VERSION]
    known = ", ".join(sorted(specs[repo], key=_version_order))
    raise HarnessError(f"no environment spec for {repo} version {version or '(none given)'}; known versions: {known}")


def load_specs(path: Path) -> dict[str, dict[str, EnvironmentSpec]]:
    """The specs in a TOML file of specs/python.toml's shape, by repository and version; HarnessError naming
    the file and the problem when it cannot be read or does not fit the shape."""
    try:
        return _parse_specs(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read environment specs {path}: {exc}") from None
    except (AttributeError, TypeError, ValueError) as exc:  # a value of the wrong type somewhere in the tables
        raise HarnessError(f"{path}: a value has the wrong type ({exc})") from None


@functools.cache
def _builtin_specs() -> dict[str, dict[str, EnvironmentSpec]]:
    text = (resources.files("swe_harness") / "specs" / "python.toml").read_text()
    return _parse_specs(text, "swe_harness/specs/python.toml")


def _parse_specs(text: str, source: str) -> dict[str, dict[str, EnvironmentSpec]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{source} is not valid TOML: {exc}") from exc
    specs: dict[str, dict[str, EnvironmentSpec]] = {}
    for repo, table in data.items():
        defaults = {key: value for key, value in table.items() if key not in ("versions", "overrides")}
        fields = {version: dict(defaults) for version in table.get("versions", (ANY_VERSION,))}
        for override in table.get("overrides", ()):
            for version in override.get("versions", ()):
                if version not in fields:
                    raise HarnessError(f"{source}: {repo} overrides version {version}, which is not in its versions")
                fields[version].update({key: value for key, value in override.items() if key != "versions"})
        specs[repo] = {version: _spec(repo, version, values, source)
                       for version, values in fields.items()}
    return specs


def _spec(repo: str, version: str, values: dict[str, Any], source: str) -> EnvironmentSpec:
    unknown = sorted(set(values) - _SPEC_FIELDS)
    if unknown or "python" not in values or "install" not in values:
        problem = f"unknown fields {unknown}" if unknown else "needs both python and install"
        raise HarnessError(f"{source}: {repo} {version}: {problem}")
    log_parser = values.get("log_parser", "parse_log_pytest")
    try:
        check_parser_name(log_parser)
    except ValueError as exc:
        raise HarnessError(f"{source}: {repo} {version}: {exc}") from None
    if (log_parser == "junit") != bool(values.get("junit_xml")):
        raise HarnessError(f"{source}: {repo} {version}: junit_xml (the file test_cmd writes) goes with "
                           'log_parser = "junit", and only with it')
    return EnvironmentSpec(
        python=values["python"], install=values["install"],
        build_tools=tuple(values.get("build_tools", EnvironmentSpec.build_tools)),
        packages=tuple(values.get("packages", ())),
        requirements_files=tuple(values.get("requirements_files", ())),
        pre_install=tuple(values.get("pre_install", ())),
        variables={key: value.replace("{version}", version) for key, value in values.get("variables", {}).items()},
        test_cmd=values.get("test_cmd", "pytest -rA"), log_parser=log_parser, junit_xml=values.get("junit_xml", ""),
        name=repo.replace("/", "__") + ("" if version == ANY_VERSION else f"-{version}"))


def _version_order(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))
