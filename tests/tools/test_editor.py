"""The editor tool on real files in a temporary workspace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tools.base import ToolResult
from tools.clamp import OutputClamp
from tools.edit_history import Edit, EditHistory
from tools.editor import MAX_EDIT_BYTES, EditorTool
from tools.editor_view import open_regular_file
from tools.errors import ToolError
from tools.settings import ToolSettings
from tools.toolset import Toolset
from tools.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


def make_editor(root: Path, readable: tuple[Path, ...] = (), **settings: Any) -> EditorTool:
    return EditorTool(Workspace(root, readable_roots=readable), ToolSettings(**settings))


def run(editor: EditorTool, **arguments: Any) -> ToolResult:
    """Through the Toolset, as the agent calls it, so schema checks apply too."""
    toolset = Toolset([editor], OutputClamp(editor.settings, spill_dir=editor.workspace.root.parent / "spill"))
    return toolset.dispatch("editor", arguments)


def numbered(first: int, *lines: str) -> str:
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(lines, first))


def no_temp_files(directory: Path) -> bool:
    return not any(".kcode-tmp" in p.name for p in directory.rglob("*"))


# -- view ---------------------------------------------------------------------------------------------


def test_view_shows_a_window_of_numbered_lines_and_how_to_see_more(root: Path) -> None:
    (root / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 251)))
    result = run(make_editor(root, view_window_lines=100), command="view", path="f.txt")
    lines = result.output.splitlines()
    assert not result.is_error
    assert lines[0] == "f.txt: lines 1-100 of 250"
    assert lines[1] == "     1\tline 1" and lines[100] == "   100\tline 100"
    assert lines[101] == "[more lines follow; view_range [101, 200] shows the next 100]"
    assert result.data == {"path": "f.txt"}


def test_view_range_start_only_end_minus_one_and_exact_range(root: Path) -> None:
    (root / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 251)))
    editor = make_editor(root, view_window_lines=100)
    tail = run(editor, command="view", path="f.txt", view_range=[201])
    assert tail.output.splitlines()[0] == "f.txt: lines 201-250 of 250"
    assert tail.output.endswith("   250\tline 250\n[end of file]")
    window = run(editor, command="view", path="f.txt", view_range=[120, -1])
    assert window.output.splitlines()[0] == "f.txt: lines 120-219 of 250"
    assert "[more lines follow; view_range [220, 250] shows the next 31]" in window.output
    exact = run(editor, command="view", path="f.txt", view_range=[3, 5])
    assert exact.output.splitlines()[1:4] == numbered(3, "line 3", "line 4", "line 5").splitlines()


@pytest.mark.parametrize(("view_range", "message"), [
    ([300], "has only 250 lines"),
    ([0, 5], "must be 1 or more"),
    ([9, 4], "end 4 is before its start 9"),
    ([1, 2, 3], "[start] or [start, end]"),
])
def test_bad_view_ranges_are_explained(root: Path, view_range: list[int], message: str) -> None:
    (root / "f.txt").write_text("x\n" * 250)
    result = run(make_editor(root), command="view", path="f.txt", view_range=view_range)
    assert result.is_error and message in result.output


def test_view_clips_long_lines_and_says_how_much_was_cut(root: Path) -> None:
    (root / "wide.txt").write_text("short\n" + "a" * 1234 + "\n")
    result = run(make_editor(root, max_line_chars=500), command="view", path="wide.txt")
    assert f"     2\t{'a' * 500} [... 734 more characters clipped]" in result.output
    assert "sed -n '2p' wide.txt" in result.output


def test_view_keeps_tabs_and_shows_an_empty_file(root: Path) -> None:
    (root / "Makefile").write_text("all:\n\techo hi\n")
    (root / "empty.txt").write_text("")
    editor = make_editor(root)
    assert "     2\t\techo hi" in run(editor, command="view", path="Makefile").output
    assert run(editor, command="view", path="empty.txt").output == "empty.txt is empty."


def test_view_of_a_directory_lists_two_levels_and_names_hidden_entries(root: Path) -> None:
    (root / "src" / "pkg" / "deep").mkdir(parents=True)
    (root / "src" / "pkg" / "deep" / "too_deep.py").write_text("")
    (root / "src" / "main.py").write_text("")
    (root / "src" / ".cache").mkdir()
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref")
    (root / "README.md").write_text("")
    result = run(make_editor(root), command="view", path=".")
    assert result.output.splitlines() == [
        "The workspace root (two levels deep):",
        "README.md",
        "src/",
        "src/main.py",
        "src/pkg/",
        "[hidden entries are not listed: .git/, src/.cache/; view one by its path]",
    ]
    sub = run(make_editor(root), command="view", path="src")
    assert "src/pkg/deep/" in sub.output.splitlines()


def test_view_of_a_missing_file_points_to_the_directory(root: Path) -> None:
    (root / "src").mkdir()
    result = run(make_editor(root), command="view", path="src/nope.py")
    assert result.is_error
    assert "src/nope.py does not exist; view src to see what is there" in result.output


def test_a_200_mb_file_window_is_read_without_reading_the_file(root: Path) -> None:
    path = root / "huge.log"
    with path.open("wb") as f:
        f.write(b"".join(b"log line %d\n" % i for i in range(1, 20_001)))
        f.truncate(200 * 2**20)  # the rest is a sparse hole: cheap to make, slow to read
    editor = make_editor(root)
    tracemalloc.start()
    started = time.perf_counter()
    first = run(editor, command="view", path="huge.log")
    later = run(editor, command="view", path="huge.log", view_range=[15_000, 15_002])
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 4_000_000
    assert first.output.splitlines()[0].startswith("huge.log: lines 1-100; the file is 200.0 MiB, so its lines "
                                                   "were not counted")
    assert "   100\tlog line 100" in first.output
    assert later.output.splitlines()[1:4] == numbered(
        15_000, "log line 15000", "log line 15001", "log line 15002").splitlines()
    refused = run(editor, command="str_replace", path="huge.log", old_str="log line 1\n", new_str="")
    assert refused.is_error and "more than the editor edits" in refused.output


def test_binary_files_are_refused_for_view_and_edit(root: Path) -> None:
    (root / "blob.bin").write_bytes(b"\x7fELF\0\0\1binary\n")
    editor = make_editor(root)
    viewed = run(editor, command="view", path="blob.bin")
    edited = run(editor, command="str_replace", path="blob.bin", old_str="binary", new_str="text")
    assert viewed.is_error and "blob.bin is a binary file" in viewed.output
    assert edited.is_error and "binary" in edited.output
    assert (root / "blob.bin").read_bytes() == b"\x7fELF\0\0\1binary\n"


# -- create -------------------------------------------------------------------------------------------


def test_create_makes_parents_refuses_to_overwrite_and_overwrites_on_request(root: Path) -> None:
    editor = make_editor(root)
    created = run(editor, command="create", path="a/b/new.py", file_text="x = 1\n")
    assert not created.is_error and (root / "a" / "b" / "new.py").read_text() == "x = 1\n"
    assert created.data["diff"] == "--- /dev/null\n+++ b/a/b/new.py\n@@ -0,0 +1 @@\n+x = 1\n"
    assert created.data["path"] == "a/b/new.py"
    refused = run(editor, command="create", path="a/b/new.py", file_text="x = 2\n")
    assert refused.is_error and "already exists" in refused.output and "overwrite: true" in refused.output
    assert (root / "a" / "b" / "new.py").read_text() == "x = 1\n"
    replaced = run(editor, command="create", path="a/b/new.py", file_text="x = 2\n", overwrite=True)
    assert not replaced.is_error and (root / "a" / "b" / "new.py").read_text() == "x = 2\n"
    assert "-x = 1\n+x = 2\n" in replaced.data["diff"]


def test_the_snippet_of_a_long_create_is_cut_at_one_window(root: Path) -> None:
    result = run(make_editor(root, view_window_lines=10), command="create", path="long.txt",
                 file_text="".join(f"{i}\n" for i in range(1, 31)))
    lines = result.output.splitlines()
    assert lines[0].startswith("Created long.txt (+30 -0 lines).")
    assert lines[1] == "     1\t1" and lines[10] == "    10\t10"
    assert lines[11] == "[snippet cut at 10 lines; view from line 11 for the rest]"


def test_create_on_a_directory_is_refused(root: Path) -> None:
    (root / "pkg").mkdir()
    result = run(make_editor(root), command="create", path="pkg", file_text="x")
    assert result.is_error and "pkg is a directory" in result.output


# -- str_replace --------------------------------------------------------------------------------------

SOURCE = textwrap.dedent("""\
    def area(w, h):
        return w * h


    def main():
        total = 0
        for w in range(3):
            total += area(w, 2)
        return total
    """)


def test_str_replace_of_a_unique_string_edits_and_shows_a_snippet_and_diff(root: Path) -> None:
    (root / "geo.py").write_text(SOURCE)
    result = run(make_editor(root, snippet_context_lines=1), command="str_replace", path="geo.py",
                 old_str="    return w * h\n", new_str="    if w < 0:\n        raise ValueError(w)\n    return w * h\n")
    assert not result.is_error
    assert (root / "geo.py").read_text() == SOURCE.replace(
        "    return w * h\n", "    if w < 0:\n        raise ValueError(w)\n    return w * h\n")
    assert result.output.splitlines()[0].startswith("Replaced the text at line 2 of geo.py (+2 -0 lines).")
    assert result.output.splitlines()[1:] == numbered(
        1, "def area(w, h):", "    if w < 0:", "        raise ValueError(w)", "    return w * h").splitlines()
    assert "+    if w < 0:\n+        raise ValueError(w)\n" in result.data["diff"]


def test_str_replace_with_no_match_hints_at_a_whitespace_difference(root: Path) -> None:
    (root / "geo.py").write_text(SOURCE)
    result = run(make_editor(root), command="str_replace", path="geo.py",
                 old_str="for w in range(3):\n  total += area(w, 2)", new_str="pass")
    assert result.is_error
    assert "old_str was not found in geo.py; nothing was changed" in result.output
    assert "matches if whitespace is ignored at line 7" in result.output
    assert (root / "geo.py").read_text() == SOURCE


def test_str_replace_with_no_match_spots_copied_line_numbers(root: Path) -> None:
    (root / "geo.py").write_text(SOURCE)
    result = run(make_editor(root), command="str_replace", path="geo.py",
                 old_str="     2\t    return w * h", new_str="")
    assert result.is_error and "line numbers that view shows" in result.output


def test_str_replace_with_two_matches_names_both_lines(root: Path) -> None:
    (root / "geo.py").write_text(SOURCE)
    result = run(make_editor(root), command="str_replace", path="geo.py", old_str="return", new_str="yield")
    assert result.is_error
    assert "old_str occurs 2 times in geo.py, at lines 2 and 9; nothing was changed" in result.output
    assert (root / "geo.py").read_text() == SOURCE


def test_str_replace_rejects_empty_and_identical_strings(root: Path) -> None:
    (root / "geo.py").write_text(SOURCE)
    editor = make_editor(root)
    assert "old_str is empty" in run(editor, command="str_replace", path="geo.py", old_str="").output
    same = run(editor, command="str_replace", path="geo.py", old_str="area", new_str="area")
    assert same.is_error and "the same" in same.output


def test_str_replace_deletes_when_new_str_is_omitted_and_keeps_tabs(root: Path) -> None:
    (root / "Makefile").write_text("all:\n\techo a\n\techo b\n")
    result = run(make_editor(root), command="str_replace", path="Makefile", old_str="\techo a\n")
    assert not result.is_error and (root / "Makefile").read_text() == "all:\n\techo b\n"


# -- insert -------------------------------------------------------------------------------------------


def test_insert_at_the_top_and_at_the_end(root: Path) -> None:
    (root / "f.txt").write_text("a\nb\n")
    editor = make_editor(root)
    assert not run(editor, command="insert", path="f.txt", insert_line=0, new_str="top").is_error
    assert not run(editor, command="insert", path="f.txt", insert_line=3, new_str="end1\nend2\n").is_error
    assert (root / "f.txt").read_text() == "top\na\nb\nend1\nend2\n"


def test_insert_keeps_a_missing_final_line_break_missing(root: Path) -> None:
    (root / "f.txt").write_text("a\nb")
    run(make_editor(root), command="insert", path="f.txt", insert_line=2, new_str="c\n")
    assert (root / "f.txt").read_text() == "a\nb\nc"


def test_insert_past_the_end_is_refused_with_the_valid_range(root: Path) -> None:
    (root / "f.txt").write_text("a\nb\n")
    result = run(make_editor(root), command="insert", path="f.txt", insert_line=5, new_str="x")
    assert result.is_error and "use 0 (top of the file) to 2" in result.output
    assert (root / "f.txt").read_text() == "a\nb\n"


# -- undo ---------------------------------------------------------------------------------------------


def test_undo_reverts_str_replace_and_insert_newest_first(root: Path) -> None:
    (root / "geo.py").write_text(SOURCE)
    editor = make_editor(root)
    run(editor, command="str_replace", path="geo.py", old_str="w * h", new_str="h * w")
    run(editor, command="insert", path="geo.py", insert_line=0, new_str="import math")
    undone = run(editor, command="undo_edit", path="geo.py")
    assert "1 earlier edit can still be undone" in undone.output
    assert (root / "geo.py").read_text() == SOURCE.replace("w * h", "h * w")
    run(editor, command="undo_edit", path="geo.py")
    assert (root / "geo.py").read_text() == SOURCE
    nothing = run(editor, command="undo_edit", path="geo.py")
    assert nothing.is_error and "There is no edit to geo.py to undo" in nothing.output


def test_undo_of_a_create_removes_the_file_and_the_directories_made_for_it(root: Path) -> None:
    (root / "kept").mkdir()
    editor = make_editor(root)
    run(editor, command="create", path="kept/new/deeper/f.txt", file_text="x\n")
    result = run(editor, command="undo_edit", path="kept/new/deeper/f.txt")
    assert not result.is_error and "the file is removed" in result.output
    assert sorted(p.name for p in root.rglob("*")) == ["kept"]


def test_undo_of_an_overwrite_restores_the_old_content(root: Path) -> None:
    (root / "f.txt").write_text("old\n")
    editor = make_editor(root)
    run(editor, command="create", path="f.txt", file_text="new\n", overwrite=True)
    run(editor, command="undo_edit", path="f.txt")
    assert (root / "f.txt").read_text() == "old\n"


def test_undo_refuses_when_the_file_changed_since_the_edit(root: Path) -> None:
    (root / "f.txt").write_text("a\n")
    editor = make_editor(root)
    run(editor, command="str_replace", path="f.txt", old_str="a", new_str="b")
    (root / "f.txt").write_text("b\nwork done in the shell\n")
    result = run(editor, command="undo_edit", path="f.txt")
    assert result.is_error and "would lose the later changes" in result.output
    assert (root / "f.txt").read_text() == "b\nwork done in the shell\n"


def test_the_history_forgets_the_oldest_edits_beyond_its_limits(tmp_path: Path) -> None:
    history = EditHistory(max_edits=2, max_bytes=10)
    a, b = tmp_path / "a", tmp_path / "b"
    first, second, third = Edit(a, b"1234", None, "x"), Edit(b, b"123456", None, "y"), Edit(a, b"1", None, "z")
    for edit in (first, second, third):
        history.record(edit)
    assert history.last(a) is third and history.count(a) == 1 and history.last(b) is second
    history.record(Edit(b, b"x" * 20, None, "w"))  # over max_bytes alone: kept, everything older dropped
    assert history.count(a) == 0 and history.count(b) == 1
    with pytest.raises(ValueError, match="max_edits must be at least 1"):
        EditHistory(max_edits=0)


# -- formats and modes --------------------------------------------------------------------------------


def test_a_crlf_file_stays_crlf_after_an_edit(root: Path) -> None:
    (root / "win.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    editor = make_editor(root)
    run(editor, command="str_replace", path="win.txt", old_str="one\ntwo\n", new_str="1\n2\n2.5\n")
    run(editor, command="insert", path="win.txt", insert_line=0, new_str="zero\r\n")
    assert (root / "win.txt").read_bytes() == b"zero\r\n1\r\n2\r\n2.5\r\nthree\r\n"
    view = run(editor, command="view", path="win.txt")
    assert "\r" not in view.output


def test_a_file_with_mixed_line_endings_keeps_them_on_untouched_lines(root: Path) -> None:
    (root / "mixed.txt").write_bytes(b"a\r\nb\nc\r\n")
    run(make_editor(root), command="str_replace", path="mixed.txt", old_str="b\n", new_str="B\nB2\n")
    assert (root / "mixed.txt").read_bytes() == b"a\r\nB\nB2\nc\r\n"


def test_a_utf8_bom_is_kept_and_never_shown(root: Path) -> None:
    (root / "bom.txt").write_bytes("\ufeffcaf\u00e9\n".encode())
    editor = make_editor(root)
    assert "     1\tcaf\u00e9\n" in run(editor, command="view", path="bom.txt").output
    run(editor, command="str_replace", path="bom.txt", old_str="caf\u00e9", new_str="th\u00e9")
    assert (root / "bom.txt").read_bytes() == "\ufeffth\u00e9\n".encode()


def test_a_latin1_file_round_trips_and_refuses_characters_it_cannot_store(root: Path) -> None:
    (root / "old.txt").write_bytes(b"na\xefve caf\xe9\nend\n")
    editor = make_editor(root)
    assert "na\u00efve caf\u00e9" in run(editor, command="view", path="old.txt").output
    run(editor, command="str_replace", path="old.txt", old_str="end", new_str="fin")
    assert (root / "old.txt").read_bytes() == b"na\xefve caf\xe9\nfin\n"
    refused = run(editor, command="str_replace", path="old.txt", old_str="fin", new_str="\u20ac")
    assert refused.is_error and "Latin-1" in refused.output
    assert (root / "old.txt").read_bytes() == b"na\xefve caf\xe9\nfin\n"


def test_the_file_mode_is_kept_through_edit_and_undo(root: Path) -> None:
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    editor = make_editor(root)
    run(editor, command="str_replace", path="run.sh", old_str="hi", new_str="hello")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    run(editor, command="undo_edit", path="run.sh")
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and script.read_text() == "#!/bin/sh\necho hi\n"
    assert no_temp_files(root)


def test_a_failed_write_leaves_the_file_whole_and_no_temporary_file(root: Path) -> None:
    """A real mid-write failure: a file-size limit makes the write of the temporary file fail."""
    (root / "f.txt").write_text("small\n")
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from pathlib import Path
        from tools.editor import EditorTool
        from tools.errors import ToolError
        from tools.settings import ToolSettings
        from tools.workspace import Workspace
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        editor = EditorTool(Workspace(Path({str(root)!r})), ToolSettings())
        try:
            editor.run({{"command": "str_replace", "path": "f.txt", "old_str": "small", "new_str": "big" * 5000}})
        except ToolError as exc:
            print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.stdout.startswith("Could not write f.txt: File too large; nothing was changed."), done.stderr
    assert (root / "f.txt").read_text() == "small\n"
    assert [p.name for p in root.iterdir()] == ["f.txt"]


# -- where the editor may reach -----------------------------------------------------------------------


def test_edits_through_dotdot_or_an_escaping_symlink_are_refused(root: Path) -> None:
    outside = root.parent / "outside.txt"
    outside.write_text("secret\n")
    (root / "link.txt").symlink_to(outside)
    editor = make_editor(root)
    for path in ("../outside.txt", "link.txt", str(outside)):
        for arguments in ({"command": "str_replace", "old_str": "secret", "new_str": "x"},
                          {"command": "create", "file_text": "x", "overwrite": True},
                          {"command": "view"}):
            result = run(editor, path=path, **arguments)
            assert result.is_error and "outside the workspace" in result.output
    assert outside.read_text() == "secret\n" and (root / "link.txt").is_symlink()


def test_outside_paths_are_allowed_when_the_workspace_allows_them(root: Path) -> None:
    outside = root.parent / "outside.txt"
    outside.write_text("a\n")
    editor = EditorTool(Workspace(root, allow_outside=True), ToolSettings())
    result = run(editor, command="str_replace", path="../outside.txt", old_str="a", new_str="b")
    assert not result.is_error and outside.read_text() == "b\n"


@pytest.mark.parametrize("name", ["~notes.txt", "~$x.docx"])
def test_a_file_whose_name_starts_with_a_tilde_is_viewed_and_edited(root: Path, name: str) -> None:
    (root / name).write_text("draft\n")
    editor = make_editor(root)
    viewed = run(editor, command="view", path=name)
    assert not viewed.is_error and "     1\tdraft" in viewed.output
    edited = run(editor, command="str_replace", path=name, old_str="draft", new_str="final")
    assert not edited.is_error and edited.data["path"] == name
    assert (root / name).read_text() == "final\n"
    created = run(editor, command="create", path=f"sub/{name}", file_text="new\n")
    assert not created.is_error and (root / "sub" / name).read_text() == "new\n"


def test_a_symlink_inside_the_workspace_is_edited_through(root: Path) -> None:
    (root / "real.txt").write_text("a\n")
    (root / "alias.txt").symlink_to("real.txt")
    result = run(make_editor(root), command="str_replace", path="alias.txt", old_str="a", new_str="b")
    assert not result.is_error and result.data["path"] == "real.txt"
    assert (root / "real.txt").read_text() == "b\n" and (root / "alias.txt").is_symlink()


def test_a_saved_output_can_be_viewed_but_not_edited(root: Path, tmp_path: Path) -> None:
    settings = ToolSettings()
    clamp = OutputClamp(settings, spill_dir=tmp_path / "outputs")
    clamp.text("".join(f"output line {i}\n" for i in range(5000)))
    saved = next((tmp_path / "outputs").iterdir())
    before = saved.read_bytes()
    editor = make_editor(root, readable=(tmp_path / "outputs",))
    viewed = run(editor, command="view", path=str(saved), view_range=[2500, 2501])
    assert not viewed.is_error and "  2500\toutput line 2499" in viewed.output
    edited = run(editor, command="str_replace", path=str(saved), old_str="output line 7\n", new_str="")
    assert edited.is_error and "can be viewed but not edited" in edited.output
    assert saved.read_bytes() == before


# -- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("arguments", "message"), [
    ({"command": "view"}, "missing required argument 'path'"),
    ({"command": "view", "path": "f.txt", "colour": "red"}, "unexpected argument 'colour'"),
    ({"command": "rename", "path": "f.txt"}, "must be one of"),
    ({"command": "str_replace", "path": "f.txt"}, "missing old_str"),
    ({"command": "create", "path": "f.txt", "file_text": "", "view_range": [1]}, "view_range is not used by create"),
    ({"command": "insert", "path": "f.txt", "new_str": "x"}, "missing insert_line"),
    ({"command": "insert", "path": "f.txt", "insert_line": "1", "new_str": "x"}, "must be integer"),
])
def test_bad_arguments_through_dispatch_are_error_results(root: Path, arguments: dict[str, Any],
                                                          message: str) -> None:
    (root / "f.txt").write_text("a\n")
    result = run(make_editor(root), **arguments)
    assert result.is_error and message in result.output
    assert (root / "f.txt").read_text() == "a\n"


def test_the_schema_declares_a_type_for_every_property(root: Path) -> None:
    editor = make_editor(root)
    assert editor.parameters["properties"]["command"]["enum"] == [
        "view", "create", "str_replace", "insert", "undo_edit"]
    assert all("type" in spec for spec in editor.parameters["properties"].values())
    assert MAX_EDIT_BYTES < 200 * 2**20
    assert os.sep not in editor.name


def test_a_fifo_or_symlink_swapped_in_after_the_check_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo, link = tmp_path / "pipe", tmp_path / "link"
    os.mkfifo(fifo)
    (tmp_path / "target").write_text("secret\n")
    link.symlink_to(tmp_path / "target")
    outcomes: list[str] = []

    def try_open(path: Path) -> None:
        try:
            open_regular_file(path, path.name).close()
            outcomes.append("opened")
        except ToolError as exc:
            outcomes.append(str(exc))

    for path in (fifo, link):
        thread = threading.Thread(target=try_open, args=(path,), daemon=True)
        thread.start()
        thread.join(timeout=5)
        assert not thread.is_alive(), f"opening {path.name} blocked"
    assert outcomes[0].startswith("pipe is a FIFO; the editor opens only regular files")
    assert outcomes[1].startswith("link is a symlink; the editor opens only regular files")
    with open_regular_file(tmp_path / "target", "target") as f:
        assert f.read() == b"secret\n"
