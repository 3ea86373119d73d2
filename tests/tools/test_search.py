"""search_text and find_files on real trees and a real git repository, through ripgrep and the fallback.

Every search that can run on both backends runs on both, and the outputs must be identical.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tools.clamp import OutputClamp
from tools.gitignore import GlobError, PathGlob, glob_regex, parse_rules, verdict
from tools.search import FindFilesTool, SearchTextTool
from tools.search_results import COUNT_LIMIT
from tools.search_ripgrep import RipgrepUnavailable, find_ripgrep
from tools.settings import ToolSettings
from tools.toolset import Toolset
from tools.workspace import Workspace

HAVE_RG = find_ripgrep() is not None
NO_RG = "ripgrep (rg >= 13) is not installed"
BACKENDS = [pytest.param(True, id="ripgrep", marks=pytest.mark.skipif(not HAVE_RG, reason=NO_RG)),
            pytest.param(False, id="python")]
needs_rg = pytest.mark.skipif(not HAVE_RG, reason=NO_RG)

VISIBLE = [
    "crlf.txt", "docs/readme.md", "keep.log", "latin1.txt", "lib/build", "long.txt", "odd dir/we:ird name.txt",
    "src/app.py", "src/sub/deep.py", "src/top.txt", "unicode.txt", "vendor/lib/inner.log",
]
HIDDEN_OR_IGNORED = [
    ".env", ".hidden/secret.py", "build/out.py", "data.bin", "docs/a/b/c.tmp", "late.bin", "link.py",
    "scratch/notes.txt", "src/.dotfile.py", "src/generated.py", "src/sub/generated.py", "top.txt", "x.log",
]


def _git_init(path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(path)], check=True)


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A git repository with every kind of file the filters must judge."""
    root = tmp_path / "ws"
    root.mkdir()
    _git_init(root)
    _write(root, {
        ".gitignore": "build/\n*.log\n!keep.log\n/top.txt\ndocs/**/*.tmp\n",
        ".ignore": "scratch/\n",
        "src/.gitignore": "generated.py\n",
        "src/app.py": "import os\n\ndef needle_one():\n    return 1\n\n\ndef other():\n    return NEEDLE\n",
        "src/generated.py": "needle\n",
        "src/sub/generated.py": "needle\n",
        "src/sub/deep.py": "x = 'needle'\n",
        "src/top.txt": "needle on top\n",
        "src/.dotfile.py": "needle\n",
        "build/out.py": "needle\n",
        "lib/build": "needle in a file named build\n",
        "x.log": "needle\n",
        "keep.log": "needle kept\n",
        "top.txt": "needle\n",
        "docs/readme.md": "# needle docs\n",
        "docs/a/b/c.tmp": "needle\n",
        ".hidden/secret.py": "needle\n",
        ".env": "needle\n",
        "scratch/notes.txt": "needle\n",
        "data.bin": b"needle\x00\x01needle\n",
        "late.bin": b"needle\n" * 20 + b"\x00tail needle\n",
        "odd dir/we:ird name.txt": "a needle: here\n",
        "unicode.txt": "naïve 日本語 ünïcödé needle ✓\n",
        "long.txt": "x" * 1000 + "needle" + "y" * 1000 + "\n",
        "crlf.txt": "needle\r\nother\r\n",
        "latin1.txt": b"caf\xe9 needle\n",
        "vendor/lib/inner.log": "needle in a nested repository\n",
    })
    _git_init(root / "vendor" / "lib")  # its files do not see the outer .gitignore's `*.log`
    (root / "link.py").symlink_to(root / "src" / "app.py")
    return root


def _tool(cls: type[Any], root: Path, rg: bool, **settings: Any) -> Any:
    return cls(Workspace(root), ToolSettings(**settings), use_ripgrep=rg)


def _run(cls: type[Any], root: Path, rg: bool, arguments: dict[str, Any], **settings: Any) -> Any:
    return _tool(cls, root, rg, **settings).run(arguments)


def _both(cls: type[Any], root: Path, arguments: dict[str, Any], **settings: Any) -> str:
    """The output, after checking that ripgrep and the fallback give exactly the same one."""
    through_rg = _run(cls, root, True, arguments, **settings)
    through_python = _run(cls, root, False, arguments, **settings)
    assert through_rg.data["backend"] == "ripgrep" and through_python.data["backend"] == "python"
    assert through_rg.output == through_python.output
    return through_python.output


def _paths(output: str) -> list[str]:
    """The file paths in a search_text output (paths may hold ':' but not ':<digits>:')."""
    return sorted({m[1] for m in re.finditer(r"^(.+?):\d+:", output, re.MULTILINE)})


@needs_rg
@pytest.mark.parametrize("arguments", [
    {"pattern": "needle"},
    {"pattern": "needle", "ignore_case": True, "context": 2},
    {"pattern": "needle", "glob": "*.py"},
    {"pattern": r"ne+dle\b", "path": "src"},
    {"pattern": "needle", "path": "build"},
    {"pattern": "needle", "path": "x.log"},
    {"pattern": "needle", "path": ".hidden", "glob": "*.py"},
    {"pattern": "ÜNÏCÖDÉ", "ignore_case": True},
    {"pattern": "(?i)NEEDLE_one|ret"},
    {"pattern": r"^\s+return \w+$"},
    {"pattern": "\\d"},
])
def test_ripgrep_and_fallback_give_identical_output(tree: Path, arguments: dict[str, Any]) -> None:
    output = _both(SearchTextTool, tree, arguments)
    assert "matching line" in output


@pytest.mark.parametrize("rg", BACKENDS)
def test_hidden_ignored_binary_and_linked_files_are_skipped(tree: Path, rg: bool) -> None:
    result = _run(SearchTextTool, tree, rg, {"pattern": "needle", "ignore_case": True})
    assert _paths(result.output) == VISIBLE
    assert result.data["files"] == len(VISIBLE)
    for name in HIDDEN_OR_IGNORED:
        assert not any(line.startswith(name + ":") for line in result.output.splitlines())


@needs_rg
def test_gitignore_applies_only_inside_a_git_repository(tmp_path: Path) -> None:
    _write(tmp_path, {".gitignore": "*.log\n", ".ignore": "skip.txt\n", "a.log": "needle\n",
                      "skip.txt": "needle\n", "b.txt": "needle\n"})
    assert _both(FindFilesTool, tmp_path, {"pattern": "*"}).splitlines()[1:] == ["a.log", "b.txt"]
    _git_init(tmp_path)
    assert _both(FindFilesTool, tmp_path, {"pattern": "*"}).splitlines()[1:] == ["b.txt"]


@needs_rg
def test_a_whitelisted_hidden_directory_is_searched(tree: Path) -> None:
    (tree / ".gitignore").write_text("!.hidden/\n")
    output = _both(SearchTextTool, tree, {"pattern": "needle", "path": "."})
    assert ".hidden/secret.py:1:needle" in output.splitlines()


@pytest.mark.parametrize("rg", BACKENDS)
def test_output_format_paths_lines_and_encodings(tree: Path, rg: bool) -> None:
    lines = _run(SearchTextTool, tree, rg, {"pattern": "needle"}).output.splitlines()
    assert lines[0] == "12 matching lines in 12 files:"
    assert "odd dir/we:ird name.txt:1:a needle: here" in lines
    assert "unicode.txt:1:naïve 日本語 ünïcödé needle ✓" in lines
    assert "crlf.txt:1:needle" in lines  # no carriage return left
    assert "latin1.txt:1:caf\ufffd needle" in lines
    assert lines.index("src/app.py:3:def needle_one():") < lines.index("src/sub/deep.py:1:x = 'needle'")


@pytest.mark.parametrize("rg", BACKENDS)
def test_a_long_line_is_clipped_around_the_match(tree: Path, rg: bool) -> None:
    output = _run(SearchTextTool, tree, rg, {"pattern": "needle", "path": "long.txt"}, max_line_chars=100).output
    line = output.splitlines()[1]
    assert line.startswith("long.txt:1:[...975 chars] xxx")
    assert "needle" in line and line.endswith(" [...931 more chars]")
    assert len(line) < 160


@pytest.mark.parametrize("rg", BACKENDS)
def test_ignore_case(tree: Path, rg: bool) -> None:
    sensitive = _run(SearchTextTool, tree, rg, {"pattern": "NEEDLE", "path": "src"})
    insensitive = _run(SearchTextTool, tree, rg, {"pattern": "NEEDLE", "path": "src", "ignore_case": True})
    assert sensitive.output.splitlines()[1:] == ["src/app.py:8:    return NEEDLE"]
    assert insensitive.data["matches"] == 4


@pytest.mark.parametrize("rg", BACKENDS)
def test_glob_narrows_but_never_reincludes(tree: Path, rg: bool) -> None:
    by_name = _run(SearchTextTool, tree, rg, {"pattern": "needle", "glob": "*.py"})
    assert _paths(by_name.output) == ["src/app.py", "src/sub/deep.py"]  # not generated.py, .dotfile.py, secret.py
    by_path = _run(SearchTextTool, tree, rg, {"pattern": "needle", "glob": "src/**/*.{py,txt}"})
    assert _paths(by_path.output) == ["src/app.py", "src/sub/deep.py", "src/top.txt"]
    inside = _run(SearchTextTool, tree, rg, {"pattern": "needle", "glob": "*.log", "path": "vendor"})
    assert _paths(inside.output) == ["vendor/lib/inner.log"]


@pytest.mark.parametrize("rg", BACKENDS)
@pytest.mark.parametrize("pattern", ["a(", "[z-a]", "x{2,1}"])
def test_an_invalid_regex_is_an_error_result(tree: Path, rg: bool, pattern: str) -> None:
    toolset = Toolset([_tool(SearchTextTool, tree, rg)], OutputClamp(ToolSettings(), tree.parent / "spill"))
    result = toolset.dispatch("search_text", {"pattern": pattern})
    assert result.is_error
    assert result.output.startswith(f"Invalid regex {pattern!r}")


@pytest.mark.parametrize("rg", BACKENDS)
@pytest.mark.parametrize("pattern", ["a\\nb", "a\nb"])
def test_a_pattern_with_a_line_break_is_refused(tree: Path, rg: bool, pattern: str) -> None:
    toolset = Toolset([_tool(SearchTextTool, tree, rg)], OutputClamp(ToolSettings(), tree.parent / "spill"))
    result = toolset.dispatch("search_text", {"pattern": pattern})
    assert result.is_error and "line break" in result.output


@pytest.mark.parametrize("rg", BACKENDS)
def test_posix_classes_work_in_ripgrep_and_are_refused_by_the_fallback(tree: Path, rg: bool) -> None:
    toolset = Toolset([_tool(SearchTextTool, tree, rg)], OutputClamp(ToolSettings(), tree.parent / "spill"))
    result = toolset.dispatch("search_text", {"pattern": "[[:digit:]]", "path": "src"})
    if rg:
        assert result.output.splitlines()[1:] == ["src/app.py:4:    return 1"]
    else:  # Python's re would read it as the set ':[dgit' and find other lines
        assert result.is_error and "no POSIX classes" in result.output


@pytest.mark.parametrize("rg", BACKENDS)
def test_look_around_works_on_both_backends(tree: Path, rg: bool) -> None:
    result = _run(SearchTextTool, tree, rg, {"pattern": r"needle(?=_one)|(?<=return )NEEDLE", "path": "src"})
    assert result.output.splitlines()[1:] == ["src/app.py:3:def needle_one():", "src/app.py:8:    return NEEDLE"]


@pytest.mark.parametrize("rg", BACKENDS)
def test_no_match_says_so(tree: Path, rg: bool) -> None:
    result = _run(SearchTextTool, tree, rg, {"pattern": "absent_word", "glob": "*.py"})
    assert not result.is_error
    assert result.output.startswith("No matches for 'absent_word' in the workspace (files matching glob '*.py').")
    assert result.data["matches"] == 0


@pytest.mark.parametrize("rg", BACKENDS)
def test_context_lines_and_group_separators(tree: Path, rg: bool) -> None:
    result = _run(SearchTextTool, tree, rg, {"pattern": "return", "path": "src", "context": 1})
    assert result.output.splitlines() == [
        "2 matching lines in 1 file:",
        "src/app.py-3-def needle_one():",
        "src/app.py:4:    return 1",
        "src/app.py-5-",
        "--",
        "src/app.py-7-def other():",
        "src/app.py:8:    return NEEDLE",
    ]


def _many(root: Path, files: int, lines_per_file: int, line: str = "hit\n") -> None:
    _write(root, {f"f{i:02d}.txt": line * lines_per_file for i in range(files)})


@pytest.mark.parametrize("rg", BACKENDS)
def test_more_matches_than_the_limit_are_counted_not_shown(tmp_path: Path, rg: bool) -> None:
    _many(tmp_path, files=4, lines_per_file=3, line="hit\nctx\n")
    result = _run(SearchTextTool, tmp_path, rg, {"pattern": "hit", "context": 1}, max_search_matches=5)
    lines = result.output.splitlines()
    assert lines[0] == "12 matching lines in 4 files:"
    assert lines[1:-1] == ["f00.txt:1:hit", "f00.txt-2-ctx", "f00.txt:3:hit", "f00.txt-4-ctx", "f00.txt:5:hit",
                           "f00.txt-6-ctx", "--", "f01.txt:1:hit", "f01.txt-2-ctx", "f01.txt:3:hit",
                           "f01.txt-4-ctx"]
    assert lines[-1].startswith("[7 more matching lines not shown; narrow the search")
    assert result.data == {"backend": "ripgrep" if rg else "python", "matches": 12, "files": 4, "shown": 5,
                           "complete": True, "timed_out": False, "secret_files_left_out": 0}


@needs_rg
def test_counting_stops_at_the_count_limit_on_both_backends(tmp_path: Path) -> None:
    _many(tmp_path, files=3, lines_per_file=COUNT_LIMIT // 2 + 1)
    output = _both(SearchTextTool, tmp_path, {"pattern": "hit"}, max_search_matches=3)
    lines = output.splitlines()
    assert lines[0] == "At least 10,002 matching lines in 2 files (counting stopped there):"
    assert lines[-1].startswith("[9,999+ more matching lines not shown")


@pytest.mark.parametrize("rg", BACKENDS)
def test_a_search_past_its_deadline_stops_and_says_so(tree: Path, rg: bool) -> None:
    ticks = itertools.count(0.0, 100.0)
    tool = SearchTextTool(Workspace(tree), ToolSettings(), use_ripgrep=rg, timeout_s=60.0,
                          clock=lambda: next(ticks))
    result = tool.run({"pattern": "needle"})
    assert result.data["timed_out"] and not result.data["complete"]
    assert result.output.startswith("The search stopped at its 60 s time limit")


@pytest.mark.parametrize("rg", BACKENDS)
@pytest.mark.parametrize("path", ["..", "/etc", "src/../../.."])
def test_a_path_outside_the_workspace_is_refused(tree: Path, rg: bool, path: str) -> None:
    toolset = Toolset([_tool(SearchTextTool, tree, rg), _tool(FindFilesTool, tree, rg)],
                      OutputClamp(ToolSettings(), tree.parent / "spill"))
    for name, pattern in (("search_text", "needle"), ("find_files", "*.py")):
        result = toolset.dispatch(name, {"pattern": pattern, "path": path})
        assert result.is_error and "outside the workspace" in result.output


@needs_rg
def test_a_readable_root_outside_the_workspace_is_searched_with_absolute_paths(tree: Path) -> None:
    outputs = tree.parent / "outputs"
    _write(outputs, {"output-1.txt": "line\nneedle found\n", ".hidden.txt": "needle\n"})
    workspace = Workspace(tree, readable_roots=(outputs,))
    results = [SearchTextTool(workspace, ToolSettings(), use_ripgrep=rg).run({"pattern": "needle", "path": str(outputs),
                                                                             "glob": "*.txt"})
               for rg in (True, False)]
    assert results[0].output == results[1].output
    assert results[0].output.splitlines()[1:] == [f"{outputs}/output-1.txt:2:needle found"]


@pytest.mark.parametrize("rg", BACKENDS)
def test_a_missing_path_is_an_error(tree: Path, rg: bool) -> None:
    with pytest.raises(Exception, match="does not exist"):
        _run(SearchTextTool, tree, rg, {"pattern": "x", "path": "nowhere"})


@needs_rg
@pytest.mark.parametrize("pattern", ["**/*.py", "deep.py", "*.{log,md}", "src/**", "[a-l]*", "?????.txt",
                                     "src/*/*.py", "**/sub/*", "*", "odd dir/*", "lib/build", "a**b"])
def test_find_files_agrees_on_both_backends(tree: Path, pattern: str) -> None:
    output = _both(FindFilesTool, tree, {"pattern": pattern})
    assert output.splitlines()[0].endswith(":") or output.startswith("No files match")


@pytest.mark.parametrize("rg", BACKENDS)
def test_find_files_by_glob_and_by_name(tree: Path, rg: bool) -> None:
    python_files = _run(FindFilesTool, tree, rg, {"pattern": "**/*.py"})
    assert python_files.output.splitlines() == ["2 files:", "src/app.py", "src/sub/deep.py"]
    assert python_files.data["files"] == 2
    by_name = _run(FindFilesTool, tree, rg, {"pattern": "deep.py", "path": "src"})
    assert by_name.output.splitlines() == ["1 file:", "src/sub/deep.py"]
    nothing = _run(FindFilesTool, tree, rg, {"pattern": "*.rs"})
    assert nothing.output.startswith("No files match '*.rs' in the workspace.")


@pytest.mark.parametrize("rg", BACKENDS)
def test_find_files_truncates_with_a_count(tmp_path: Path, rg: bool) -> None:
    _many(tmp_path, files=30, lines_per_file=1)
    result = _run(FindFilesTool, tmp_path, rg, {"pattern": "*.txt"}, max_search_matches=10)
    lines = result.output.splitlines()
    assert lines[0] == "30 files:" and lines[1:11] == [f"f{i:02d}.txt" for i in range(10)]
    assert lines[-1].startswith("[20 more files not shown;")


@pytest.mark.parametrize("rg", BACKENDS)
@pytest.mark.parametrize("glob", ["[", "{a", "a\\", "}", "  "])
def test_an_invalid_glob_is_an_error_result(tree: Path, rg: bool, glob: str) -> None:
    toolset = Toolset([_tool(SearchTextTool, tree, rg), _tool(FindFilesTool, tree, rg)],
                      OutputClamp(ToolSettings(), tree.parent / "spill"))
    assert toolset.dispatch("find_files", {"pattern": glob}).is_error
    assert toolset.dispatch("search_text", {"pattern": "x", "glob": glob}).is_error


@pytest.mark.parametrize("rg", BACKENDS)
def test_dispatch_checks_argument_types(tree: Path, rg: bool) -> None:
    toolset = Toolset([_tool(SearchTextTool, tree, rg)], OutputClamp(ToolSettings(), tree.parent / "spill"))
    result = toolset.dispatch("search_text", '{"pattern": 3, "context": "two"}')
    assert result.is_error
    assert "'pattern' must be string" in result.output and "'context' must be integer" in result.output
    assert "between 0 and 10" in toolset.dispatch("search_text", {"pattern": "x", "context": 11}).output


@pytest.mark.parametrize("rg", BACKENDS)
def test_a_huge_result_is_clamped_through_dispatch(tmp_path: Path, rg: bool) -> None:
    _write(tmp_path, {"big.txt": ("hit " + "z" * 300 + "\n") * 400})
    settings = ToolSettings(max_output_chars=5_000, max_search_matches=1_000)
    tool = SearchTextTool(Workspace(tmp_path / "."), settings, use_ripgrep=rg)
    result = Toolset([tool], OutputClamp(settings, tmp_path / "spill")).dispatch("search_text", {"pattern": "hit"})
    assert len(result.output) <= 5_000 and "left out" in result.output
    assert result.data["matches"] == 400 and result.data["shown"] == 400


@pytest.mark.parametrize("rg", BACKENDS)
def test_descriptions_name_the_limit_and_the_dialect(tree: Path, rg: bool) -> None:
    tool = _tool(SearchTextTool, tree, rg, max_search_matches=77)
    assert "At most 77 matching lines" in tool.description
    assert ("ripgrep's (Rust) regex syntax" if rg else "Python `re` syntax") in tool.description
    assert "at most 77" in _tool(FindFilesTool, tree, rg, max_search_matches=77).description


def test_use_ripgrep_true_without_ripgrep_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RipgrepUnavailable, match="use_ripgrep=True"):
        SearchTextTool(Workspace(tmp_path), ToolSettings(), use_ripgrep=True)
    assert SearchTextTool(Workspace(tmp_path), ToolSettings()).ripgrep is None
    with pytest.raises(ValueError, match="timeout_s must be positive, got 0"):
        FindFilesTool(Workspace(tmp_path), ToolSettings(), timeout_s=0)


@pytest.mark.parametrize(("glob", "regex"), [
    ("*.py", rb"[^/]*\.py"),
    ("**", rb".*"),
    ("**/x", rb"(?:/?|.*/)x"),
    ("a/**", rb"a/.*"),
    ("a/**/b", rb"a(?:/|/.*/)b"),
    ("a**b", rb"a[^/]*[^/]*b"),
    ("{a,b}?", rb"(?:a|b)[^/]"),
    ("[!a-c]", rb"[^a-c]"),
    ("[]-]", rb"[\]\-]"),
])
def test_globs_translate_as_globset_does(glob: str, regex: bytes) -> None:
    assert glob_regex(glob) == regex


def test_ignore_rules_follow_gitignore_semantics() -> None:
    rules = parse_rules("\ufeff# comment\nbuild/\n*.log\n!keep.log\n/top\ndocs/**/*.tmp\n\\#hash\ntrailing   \n")
    assert verdict(rules, b"build", is_dir=True) is True
    assert verdict(rules, b"build", is_dir=False) is None  # directory-only
    assert verdict(rules, b"deep/x.log", is_dir=False) is True
    assert verdict(rules, b"deep/keep.log", is_dir=False) is False  # negation: the last match wins
    assert verdict(rules, b"top", is_dir=False) is True and verdict(rules, b"a/top", is_dir=False) is None
    assert verdict(rules, b"docs/c.tmp", is_dir=False) and verdict(rules, b"docs/a/b/c.tmp", is_dir=False)
    assert verdict(rules, b"#hash", is_dir=False) and verdict(rules, b"trailing", is_dir=False)
    assert PathGlob("src/*.py").matches(b"src/a.py") and not PathGlob("src/*.py").matches(b"x/src/a.py")
    with pytest.raises(GlobError, match="unclosed character class"):
        PathGlob("[ab")


def test_parity_with_the_tree_walk_on_unusual_names(tmp_path: Path) -> None:
    names = ["A/x", "B.py", "a/x", "a-b/x", "a.py", "a_b", "b.py", "é/x", "Z", "z z"]
    _write(tmp_path, dict.fromkeys(names, "hit\n"))
    os.mkfifo(tmp_path / "fifo")
    expected = ["A/x", "B.py", "Z", "a/x", "a-b/x", "a.py", "a_b", "b.py", "z z", "é/x"]
    for rg in [False, *([True] if HAVE_RG else [])]:
        assert _run(FindFilesTool, tmp_path, rg, {"pattern": "*"}).output.splitlines()[1:] == expected
