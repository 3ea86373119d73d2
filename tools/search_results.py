"""What the two search backends hand the search tools: the results of each file, tallied the same way.

A backend yields `Hits` per file in path order; `tally` keeps the first `max_search_matches` for display
and counts the rest, up to `COUNT_LIMIT`, against a `Deadline`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

COUNT_LIMIT = 10_000
"""Past this many results a search stops and reports the count as a lower bound."""
_NARROW = "narrow the search with a more specific pattern, a `path` or a `glob`"


class TimedOut(Exception):
    """The search ran past its deadline."""


@dataclass(frozen=True)
class Deadline:
    at: float
    clock: Callable[[], float]

    def remaining_s(self) -> float:
        return self.at - self.clock()

    def check(self) -> None:
        if self.remaining_s() <= 0:
            raise TimedOut


@dataclass(frozen=True)
class Line:
    number: int
    text: str
    is_match: bool
    column: int = 0
    """Character offset of the first match: a clipped long line keeps the match in view."""


@dataclass(frozen=True)
class Hits:
    """One file's results; `lines` is parsed only for the files that are shown."""

    path: Path
    count: int
    lines: Callable[[], list[Line]] = list


@dataclass
class Tally:
    """What a search found: the results to show, and counts of all of them."""

    shown: list[tuple[Path, list[Line]]] = field(default_factory=list)
    shown_count: int = 0
    total: int = 0
    files: int = 0
    complete: bool = True
    timed_out: bool = False
    secret_files: int = 0
    """Files with results that look like secrets (`secret_files`), left out."""
    secret_count: int = 0
    """Results in those files."""


def tally(hits: Iterator[Hits], limit: int, context: int, is_secret: Callable[[Path], bool]) -> Tally:
    """The first `limit` results and a count of all of them (a lower bound past COUNT_LIMIT); results in files
    that `is_secret` are only counted, apart."""
    counted = Tally()
    try:
        for hit in hits:
            if is_secret(hit.path):
                counted.secret_files += 1
                counted.secret_count += hit.count
                continue
            room = limit - counted.shown_count
            if room > 0:
                counted.shown.append((hit.path, _first_matches(hit.lines(), room, context)))
                counted.shown_count += min(room, hit.count)
            counted.total += hit.count
            counted.files += 1
            if counted.total >= max(COUNT_LIMIT, limit + 1):
                counted.complete = False
                break
    except TimedOut:
        counted.complete, counted.timed_out = False, True
    return counted


def _first_matches(lines: list[Line], room: int, context: int) -> list[Line]:
    """`lines` up to the `room`-th match, with that match's trailing context."""
    kept: list[Line] = []
    matches = 0
    for line in lines:
        if matches == room and (line.is_match or line.number > kept[-1].number + context):
            break
        kept.append(line)
        matches += line.is_match
    return kept


def summary(tally: Tally, noun: str, timeout_s: float) -> tuple[str, str]:
    """The header and footer around the results."""
    found = f"{tally.total:,} {noun}{'' if tally.total == 1 else 's'}"
    if noun != "file":
        found += f" in {tally.files:,} file{'' if tally.files == 1 else 's'}"
    if tally.timed_out:
        header = (f"The search stopped at its {timeout_s:g} s time limit; {found} were found before that. "
                  "Search a smaller `path` or add a `glob`.")
    else:
        header = f"{found}:" if tally.complete else f"At least {found} (counting stopped there):"
    if tally.shown_count == tally.total and tally.complete:
        return header, ""
    more = f"{tally.total - tally.shown_count:,}" + ("" if tally.complete else "+")
    return header, f"[{more} more {noun}s not shown; {_NARROW} to see them.]"




def secret_note(counted: Tally, noun: str) -> str:
    """The line saying what was left out because it looks like a secret file."""
    files = f"{counted.secret_files:,} file{'' if counted.secret_files == 1 else 's'}"
    what = files if noun == "file" else (f"{counted.secret_count:,} {noun}{'' if counted.secret_count == 1 else 's'}"
                                         f" in {files}")
    return (f"[{what} that look like secret files (.env, keys, credentials) left out: kcode does not read them. "
            "The user can change `secret_files` in config.toml.]")
