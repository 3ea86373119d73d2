"""Log parsers of our own, for repositories SWE-bench does not know: `pytest` (the lines of `pytest -rA`) and
`junit` (JUnit XML that the test command wrote and the eval script printed into the log).

SWE-bench's grader looks a parser up by name in `PARSER_REGISTRY` and calls it on the test log; its parsers
are named after the repositories they were written for. Ours are added to that registry under names of their
own (`kcode:pytest`, `kcode:junit`), so a spec-file repository goes through the very same `get_eval_report`
(markers, error codes, exit-code cross-check) as a SWE-bench one. A status map is {test name: PASSED | FAILED
| ERROR | SKIPPED | XFAIL}, SWE-bench's statuses.

JUnit XML comes from a file the model's code could have written, so it is parsed only without a document type:
a DOCTYPE (and with it every entity declaration, external or expanding) is refused before expat sees it.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

GENERIC_PARSERS = ("pytest", "junit")
"""The parser names a spec may give besides SWE-bench's own `parse_log_*` ones."""
REGISTRY_PREFIX = "kcode:"
"""What our parsers' names start with in SWE-bench's registry, so they never shadow one of its own."""
JUNIT_START = ">>>>> JUnit XML"
JUNIT_END = ">>>>> End JUnit XML"
"""Lines the generated eval script prints around the JUnit file's contents, inside the test output."""

_SEVERITY = {"PASSED": 0, "XFAIL": 0, "SKIPPED": 1, "FAILED": 2, "ERROR": 3}
"""When a test is reported twice (a failure, then an error in its teardown), the worse status stands."""
_SUMMARY_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ([^\s\[]+(?:\[[^\]]*\])?)(?: - .*)?$")
_VERBOSE_LINE = re.compile(r"^([^\s\[]+(?:\[[^\]]*\])?) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)(?:\s.*)?$")
_JUNIT_BLOCK = re.compile(rf"^{re.escape(JUNIT_START)}$(.*?)^{re.escape(JUNIT_END)}$", re.M | re.S)
_ROOT_ELEMENT = re.compile(r"<(testsuites|testsuite)\b.*</\1\s*>", re.S)
_DOCUMENT_TYPE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.I)


def registry_name(log_parser: str) -> str:
    """The name SWE-bench's registry knows `log_parser` by: ours get the prefix, official ones stay as they are."""
    return f"{REGISTRY_PREFIX}{log_parser}" if log_parser in GENERIC_PARSERS else log_parser


def check_parser_name(log_parser: str) -> None:
    """ValueError unless `log_parser` is one of ours or has the shape of an official name (`parse_log_*`); whether
    an official one exists is only known once swebench is imported, at grading."""
    if log_parser not in GENERIC_PARSERS and not log_parser.startswith("parse_log_"):
        raise ValueError(f"log_parser {log_parser!r} is neither {' nor '.join(GENERIC_PARSERS)} nor the name of "
                         "one of SWE-bench's parsers (parse_log_pytest, parse_log_django, ...)")


def register_generic_parsers(registry: dict[str, Callable[..., dict[str, str]]]) -> None:
    """Add our parsers to SWE-bench's `PARSER_REGISTRY` (given, so this module never imports swebench)."""
    registry.setdefault(registry_name("pytest"), _ignoring_spec(parse_pytest_log))
    registry.setdefault(registry_name("junit"), _ignoring_spec(parse_junit_log))


def parse_pytest_log(log: str) -> dict[str, str]:
    """Statuses from `pytest -rA`'s short summary (`PASSED tests/x.py::test_a`, `FAILED ... - message`) and from
    `-v` lines (`tests/x.py::test_a PASSED [ 50%]`). XPASS counts as passed (a strict xfail fails by itself);
    summary lines of skips name a file and line, not a test, and are left out."""
    statuses: dict[str, str] = {}
    for line in log.splitlines():
        line = line.rstrip()
        summary = _SUMMARY_LINE.match(line)
        verbose = None if summary else _VERBOSE_LINE.match(line)
        if summary:
            status, test = summary.group(1), summary.group(2)
        elif verbose and "::" in verbose.group(1):
            test, status = verbose.group(1), verbose.group(2)
        else:
            continue
        _merge(statuses, test, "PASSED" if status == "XPASS" else status)
    return statuses


def parse_junit_log(log: str) -> dict[str, str]:
    """Statuses from the JUnit XML documents printed between JUNIT_START and JUNIT_END lines, each test named
    `<classname>::<name>` (just `<name>` when it has no class), e.g. `tests.test_calc::test_mul` for pytest's
    `--junitxml`. A `<failure>` is FAILED, an `<error>` ERROR, a `<skipped>` SKIPPED (XFAIL for pytest's xfail)."""
    statuses: dict[str, str] = {}
    for block in _JUNIT_BLOCK.findall(log):
        for case in _test_cases(block):
            classname, name = case.get("classname", ""), case.get("name", "")
            if name:
                _merge(statuses, f"{classname}::{name}" if classname else name, _case_status(case))
    return statuses


def _test_cases(block: str) -> list[ElementTree.Element]:
    """The test cases of the XML document in `block`, which may carry bash's `set -x` trace lines around it
    (`+ cat FILE` before, `+ echo` glued to the end when the file has no final newline)."""
    document = _ROOT_ELEMENT.search(block)
    if document is None or _DOCUMENT_TYPE.search(block):
        return []
    try:
        root = ElementTree.fromstring(document.group(0).encode("utf-8"))
    except ElementTree.ParseError:
        return []
    return list(root.iter("testcase"))


def _case_status(case: ElementTree.Element) -> str:
    if case.find("error") is not None:
        return "ERROR"
    if case.find("failure") is not None:
        return "FAILED"
    skipped = case.find("skipped")
    if skipped is not None:
        return "XFAIL" if skipped.get("type") == "pytest.xfail" else "SKIPPED"
    return "PASSED"


def _merge(statuses: dict[str, str], test: str, status: str) -> None:
    if test not in statuses or _SEVERITY[status] > _SEVERITY[statuses[test]]:
        statuses[test] = status


def _ignoring_spec(parser: Callable[[str], dict[str, str]]) -> Callable[[str, Any], dict[str, str]]:
    """SWE-bench calls a parser with the log and its TestSpec; ours need only the log."""

    def parse(log: str, _test_spec: Any) -> dict[str, str]:
        return parser(log)

    parse.__name__ = parser.__name__
    return parse

