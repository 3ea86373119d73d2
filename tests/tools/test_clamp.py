"""The one clamp: small outputs pass untouched; large ones keep head and tail and name the saved whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.clamp import OutputClamp
from tools.settings import ToolSettings

MARKER = re.compile(r"\[\.\.\. ([\d,]+) lines \(([\d,]+) characters\) left out of ([\d,]+) lines; "
                    r"the whole output is saved in (\S+) \.\.\.\]")


def _clamp(tmp_path: Path, max_chars: int = 1000) -> OutputClamp:
    return OutputClamp(ToolSettings(max_output_chars=max_chars), spill_dir=tmp_path / "spill")


def _numbers(line: str) -> list[int]:
    return [int(part.replace(",", "")) for part in MARKER.search(line).groups()[:3]]


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
    head, tail = out.split("\n" + MARKER.search(out).group(0) + "\n")  # the line break is the clamp's own
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
    kept = out.replace(MARKER.search(out).group(0) + "\n", "", 1)
    assert omitted_lines == 20_000 - kept.count("\n")
    assert omitted_chars == 20_000 * 100 - len(kept)
    assert MARKER.search(out).group(4) == str(path)


def test_file_clamp_decodes_invalid_utf8_with_replacement(tmp_path: Path) -> None:
    clamp = _clamp(tmp_path)
    path = clamp.new_spill_path()
    path.write_bytes(b"ok \xff\xfe bytes\n")
    assert clamp.file(path) == "ok \ufffd\ufffd bytes\n"


def test_spill_paths_are_unique_even_across_clamps_sharing_a_directory(tmp_path: Path) -> None:
    first, second = _clamp(tmp_path), _clamp(tmp_path)
    paths = {clamp.new_spill_path() for clamp in (first, second) for _ in range(50)}
    assert len(paths) == 100


@pytest.mark.parametrize("bad", [{"max_output_chars": 10}, {"head_fraction": 1.0}, {"bash_timeout_s": 0}])
def test_settings_reject_values_that_cannot_work(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ToolSettings(**bad)
