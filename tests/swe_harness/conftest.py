"""Fixtures shared by the harness tests: one SWE-bench-shaped task and one built environment per session.

The environment for "acme/calc" is a real venv with pytest in it, built once and reused by every test, as
the harness reuses environments across instances. pytest comes from the package index (the one network
source the project's machines and CI have), pinned to the version this interpreter runs, so pip's cache
usually serves it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swe_harness.testbed import TestbedOptions
from tests.kcode.openai_server import ScriptedServer
from tests.swe_harness.task_repo import REPO, TaskRepo, make_task_repo

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="session")
def task(tmp_path_factory: pytest.TempPathFactory) -> TaskRepo:
    return make_task_repo(tmp_path_factory.mktemp("task"))


@pytest.fixture(scope="session")
def env_specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("specs") / "specs.toml"
    pytest_version = pytest.__version__
    path.write_text(f'["{REPO}"]\nversions = ["1.0"]\npython = "{PYTHON}"\npackages = ["pytest=={pytest_version}"]\n'
                    f'install = "python -m pip install -e ."\ntest_cmd = "pytest -rA"\n'
                    f'log_parser = "parse_log_pytest"\n')
    return path


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("env-cache")


@pytest.fixture
def testbed_options(task: TaskRepo, env_specs: Path, env_cache: Path, tmp_path: Path) -> Iterator[TestbedOptions]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    yield TestbedOptions(repos_dir=task.mirrors_dir, cache_dir=env_cache, base_env=dict(os.environ),
                         extra_specs=env_specs, scratch_root=scratch, clone_missing=False)
    assert not any(scratch.iterdir()), "a testbed outlived its instance"


@pytest.fixture
def openai_server() -> Iterator[ScriptedServer]:
    """The scripted OpenAI-compatible model on 127.0.0.1 that the kcode tests use too."""
    with ScriptedServer() as server:
        yield server
