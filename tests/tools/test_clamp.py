"""The one clamp: small outputs pass untouched; large ones keep head and tail and name the saved whole."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tools.clamp import OutputClamp
from tools.settings import ToolSettings

MARKER = re.compile(r"\[\.\.\. ([\d,]+) lines \(([\d,]+) characters\) left out of ([\d,]+) lines; "
                    r"the whole output is saved in (\S+) \.\.\.\]")


def _clamp(tmp_path: Path, max_chars: int = 1000) -> OutputClamp:
    return OutputClamp(ToolSettings(max_output_chars=max_chars), spill_dir=tmp_path / "spill")


def _marker(out: str) -> re.Match[str]:
    match = MARKER.search(out)
    assert match, out
    return match


def _numbers(line: str) -> list[int]:
    return [int(part.replace(",", "")) for part in _marker(line).groups()[:3]]


def test_output_that_fits_is_returned_unchanged_and_nothing_is_saved(tmp_path: Path) -> None:
    clamp = _clamp(tmp_path)
    text = "line\n" * 100
    assert clamp.text(text) == text
    assert list(clamp.spill_dir.iterdir()) == []


def test_large_text_keeps_head_and_tail_and_saves_the_whole(tmp_path: Path) -> None:
    clamp = _clamp(tmp_path)
    text = "".join(f"line {i}\n" for i in range(10_000))
    out = clamp.text(text)
    assert len(out) <= 1000
    assert out.startswith("line 0\nline 1\n")
    assert out.endswith("line 9999\n")
    match = MARKER.search(out)
    assert match, out
    saved = Path(match.group(4))
    assert saved.read_text() == text
    omitted_lines, omitted_chars, total_lines = _numbers(out)
    assert total_lines == 10_000
    kept = out.replace(match.group(0) + "\n", "", 1)
    assert omitted_chars == len(text) - len(kept)
    assert omitted_lines == 10_000 - kept.count("\n")
    assert text.startswith(kept[: kept.index("line 99")])


def test_head_and_tail_are_cut_at_line_boundaries(tmp_path: Path) -> None:
    out = _clamp(tmp_path).text("".join(f"{i:05d}\n" for i in range(5000)))
    head, _marker, tail = out.partition("[...")
    assert all(re.fullmatch(r"\d{5}", line) for line in head.splitlines())
    tail_lines = tail.split("\n", 1)[1].splitlines()
    assert all(re.fullmatch(r"\d{5}", line) for line in tail_lines)


def test_one_huge_line_is_still_clamped(tmp_path: Path) -> None:
    out = _clamp(tmp_path).text("x" * 50_000)
    assert len(out) <= 1000
    omitted_lines, omitted_chars, total_lines = _numbers(out)
    assert (omitted_lines, total_lines) == (0, 1)
    head, tail = out.split("\n" + _marker(out).group(0) + "\n")  # the line break is the clamp's own
    assert omitted_chars == 50_000 - len(head) - len(tail)


def test_file_clamp_reads_a_large_file_and_counts_it_exactly(tmp_path: Path) -> None:
    clamp = _clamp(tmp_path)
    path = clamp.new_spill_path()
    line = "é" * 99 + "\n"  # two bytes per character: counts are characters, not bytes
    path.write_text(line * 20_000, encoding="utf-8")
    out = clamp.file(path)
    assert len(out) <= 1000
    assert out.startswith(line)
    assert out.endswith(line)
    omitted_lines, omitted_chars, total_lines = _numbers(out)
    assert total_lines == 20_000
    kept = out.replace(_marker(out).group(0) + "\n", "", 1)
    assert omitted_lines == 20_000 - kept.count("\n")
    assert omitted_chars == 20_000 * 100 - len(kept)
    assert _marker(out).group(4) == str(path)


def test_file_clamp_decodes_invalid_utf8_with_replacement(tmp_path: Path) -> None:
    clamp = _clamp(tmp_path)
    path = clamp.new_spill_path()
    path.write_bytes(b"ok \xff\xfe bytes\n")
    assert clamp.file(path) == "ok \ufffd\ufffd bytes\n"


def test_spill_paths_are_unique_even_across_clamps_sharing_a_directory(tmp_path: Path) -> None:
    first, second = _clamp(tmp_path), _clamp(tmp_path)
    paths = {clamp.new_spill_path() for clamp in (first, second) for _ in range(50)}
    assert len(paths) == 100


@pytest.mark.parametrize("max_chars", [1_000, 1_500, 16_000])
@pytest.mark.parametrize("head_fraction", [0.05, 0.5, 0.95])
@pytest.mark.parametrize("shape", ["lines", "one_line", "wide_chars"])
def test_a_clamped_output_never_exceeds_the_limit(tmp_path: Path, max_chars: int, head_fraction: float,
                                                  shape: str) -> None:
    clamp = OutputClamp(ToolSettings(max_output_chars=max_chars, head_fraction=head_fraction),
                        spill_dir=tmp_path / "spill")
    text = {"lines": "".join(f"line {i}\n" for i in range(200_000)), "one_line": "x" * 2_000_000,
            "wide_chars": "é" * 99 + "\n" * 30_000}[shape]
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    for out in (clamp.text(text), clamp.file(path)):
        assert max_chars - 400 < len(out) <= max_chars
        assert MARKER.search(out)
        assert len(out) < len(text)


def test_the_reported_case_shrinks_instead_of_doubling(tmp_path: Path) -> None:
    text = "".join(f"{i:>8} some output\n" for i in range(18_890 // 22))
    out = _clamp(tmp_path, 1_000).text(text)
    assert len(out) <= 1_000
    assert out.startswith(text[:50]) and out.endswith(text[-50:])


def test_reserved_characters_stay_free_for_the_callers_line(tmp_path: Path) -> None:
    clamp = OutputClamp(ToolSettings(max_output_chars=1_000), tmp_path / "spill", reserve_chars=500)
    assert clamp.limit_chars == 500
    assert len(clamp.text("y\n" * 10_000)) <= 500
    assert clamp.text("z" * 500) == "z" * 500


@pytest.mark.parametrize("reserve", [-1, 501])
def test_a_reserve_beyond_half_the_limit_is_refused(tmp_path: Path, reserve: int) -> None:
    with pytest.raises(ValueError, match=f"reserve_chars must lie between 0 and half .*got {reserve}"):
        OutputClamp(ToolSettings(max_output_chars=1_000), tmp_path / "spill", reserve_chars=reserve)


def test_a_spill_directory_too_long_to_name_in_the_marker_is_refused(tmp_path: Path) -> None:
    long_dir = tmp_path / ("d" * 250) / ("e" * 250) / ("f" * 250)
    with pytest.raises(ValueError, match="too long to name in a clamped output of 1000 characters"):
        OutputClamp(ToolSettings(max_output_chars=1_000), long_dir)
    assert not long_dir.exists()


def test_close_removes_a_spill_directory_the_clamp_made(tmp_path: Path) -> None:
    clamp = OutputClamp(ToolSettings(max_output_chars=1_000))
    assert clamp.spill_dir.name.startswith("kcode-outputs-")
    out = clamp.text("w\n" * 5_000)
    assert Path(_marker(out).group(4)).is_file()
    clamp.close()
    assert not clamp.spill_dir.exists()
    clamp.close()  # twice is harmless


def test_close_leaves_a_spill_directory_it_was_given(tmp_path: Path) -> None:
    clamp = _clamp(tmp_path)
    saved = Path(_marker(clamp.text("w\n" * 5_000)).group(4))
    clamp.close()
    assert saved.read_text() == "w\n" * 5_000


@pytest.mark.parametrize("bad", [{"max_output_chars": 10}, {"max_output_chars": 999}, {"head_fraction": 1.0},
                                 {"bash_timeout_s": 0}])
def test_settings_reject_values_that_cannot_work(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ToolSettings(**bad)
