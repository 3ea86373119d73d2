"""DESIGN.md's import table as tests: source scans of every package, and real imports in fresh interpreters."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).parents[2]
HEAVY = ("torch", "triton", "safetensors", "tiktoken", "transformers")
ENGINE_BOUNDARY = {"kcode/backends/local.py", "kcode/commands/serve.py", "kcode/commands/engine_tools.py"}
"""The only kcode modules that may import `engine` (and so torch), and only inside a function (STYLE.md §8)."""


def imports(path: Path, *, import_time_only: bool) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of each absolute import in `path`; with `import_time_only`, only those that
    run when the module is imported: not inside functions, not under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def visit(node: ast.AST) -> Iterator[tuple[int, str]]:
        for child in ast.iter_child_nodes(node):
            if import_time_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if import_time_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from visit(ast.Module(body=child.orelse, type_ignores=[]))
                continue
            if isinstance(child, ast.Import):
                yield from ((child.lineno, alias.name.split(".")[0]) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.lineno, child.module.split(".")[0]
            yield from visit(child)

    yield from visit(tree)


def full_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of each absolute import anywhere in `path`, for rules about subpackages."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def violations(package: str, forbidden: set[str], *, import_time_only: bool) -> list[str]:
    return [f"{path.relative_to(REPO)}:{line} imports {module}"
            for path in sources(package) for line, module in imports(path, import_time_only=import_time_only)
            if module in forbidden]


def test_the_scanner_sees_imports_where_python_runs_them(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nimport os, json.decoder\nif TYPE_CHECKING:\n"
                      "    import torch\nelse:\n    import rich\nclass A:\n    import abc\n"
                      "def f():\n    import engine\ntry:\n    import tiktoken\nexcept ImportError:\n    pass\n")
    assert {m for _, m in imports(sample, import_time_only=True)} == {
        "typing", "os", "json", "rich", "abc", "tiktoken"}
    assert {"torch", "engine"} <= {m for _, m in imports(sample, import_time_only=False)}


def test_tools_import_only_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"tools", "__future__"}
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in sources("tools")
           for line, module in imports(path, import_time_only=False) if module not in allowed]
    assert bad == []


def test_engine_never_imports_kcode_tools_or_the_harness() -> None:
    assert violations("engine", {"kcode", "tools", "swe_harness"}, import_time_only=False) == []


def test_kcode_imports_nothing_heavy_when_imported() -> None:
    assert violations("kcode", {*HEAVY, "engine"}, import_time_only=True) == []


def test_only_the_engine_boundary_reaches_engine_or_torch_even_lazily() -> None:
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in sources("kcode")
           if str(path.relative_to(REPO)) not in ENGINE_BOUNDARY
           for line, module in imports(path, import_time_only=False) if module in {*HEAVY, "engine"}]
    assert bad == []


def test_only_the_eval_commands_and_their_progress_view_reach_the_harness() -> None:
    def allowed(path: str) -> bool:
        return fnmatch.fnmatch(path, "kcode/commands/eval*.py") or path == "kcode/ui/eval_progress.py"

    bad = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in sources("kcode")
           if not allowed(str(path.relative_to(REPO)))
           for line, module in imports(path, import_time_only=True) if module == "swe_harness"]
    assert bad == []


def test_the_harness_never_imports_the_ui() -> None:
    bad = [f"{path.relative_to(REPO)}:{line} imports {module}" for path in sources("swe_harness")
           for line, module in full_imports(path)
           if module == "kcode.ui" or module.startswith(("kcode.ui.", "prompt_toolkit"))]
    assert bad == []


def loaded_after(code: str) -> set[str]:
    """Top-level modules present in a fresh interpreter after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_agent_loop_imports_no_ui_no_torch_and_no_api_client() -> None:
    loaded = loaded_after("import kcode.agent.loop, kcode.agent.trajectory, kcode.sessions")
    assert "kcode" in loaded
    assert loaded.isdisjoint({"rich", "prompt_toolkit", "torch", "openai", "triton"})


def test_importing_every_kcode_module_leaves_torch_out() -> None:
    loaded = loaded_after("import pkgutil, importlib, kcode\n"
                          "for m in pkgutil.walk_packages(kcode.__path__, 'kcode.'):\n"
                          "    if not m.name.endswith('__main__'):\n"  # that one runs the CLI
                          "        importlib.import_module(m.name)")
    assert loaded.isdisjoint({"torch", "triton", "engine"})


def test_importing_every_tools_module_pulls_in_nothing_but_the_standard_library() -> None:
    loaded = loaded_after("import pkgutil, importlib, tools\n"
                          "for m in pkgutil.walk_packages(tools.__path__, 'tools.'):\n"
                          "    importlib.import_module(m.name)")
    assert loaded.isdisjoint({"kcode", "engine", "swe_harness", "rich", "torch"})
