"""The HTML report as a browser sees it: real headless Chromium renders the page and dumps its DOM, whose
figures must match `kcode eval report --json`, and in which a model's `<script>` is only text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from swe_harness.html_report import write_html_report
from swe_harness.runs_report import compare_runs, load_runs
from tests.swe_harness.graded_runs import THREE_RUNS, write_graded_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL_PATCH = "--- a/calc.py\n+++ b/calc.py\n@@ -1 +1 @@\n-x = 1\n+x = '<script>alert(1)</script>'\n"
VOID = frozenset({"meta", "br", "img", "hr", "input", "link"})
"""HTML elements that never have an end tag."""
EVIL_OUTPUT = "collected 1 item </details><script>alert(2)</script> <img src=x onerror=alert(3)>"


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def walk(self) -> Iterator[Element]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str, cls: str | None = None) -> list[Element]:
        return [e for e in self.walk() if e.tag == tag and (cls is None or cls in e.attrs.get("class", "").split())]

    def by_id(self, element_id: str) -> Element:
        (found,) = [e for e in self.walk() if e.attrs.get("id") == element_id]
        return found

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)

    def ancestors(self) -> Iterator[Element]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class _TreeBuilder(HTMLParser):
    """The dumped DOM as a tree; Chromium's serialisation closes every element, so nesting is exact."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self._open = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, self._open)
        self._open.children.append(element)
        if tag not in VOID:
            self._open = element

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        node: Element | None = self._open
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self._open = node.parent

    def handle_data(self, data: str) -> None:
        self._open.text += data


def dump_dom(page: Path) -> tuple[str, Element]:
    assert CHROMIUM is not None
    try:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                               page.as_uri()], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:  # an alert() that ran waits for a click forever
        pytest.fail("chromium never finished rendering: did a script from the data run and open a dialog?")
    assert done.returncode == 0, done.stderr[-2000:]
    builder = _TreeBuilder()
    builder.feed(done.stdout)
    return done.stdout, builder.root


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_renders_the_figures_of_the_json_and_a_models_script_only_as_text(tmp_path: Path) -> None:
    runs = [write_graded_run(tmp_path / f"run-{n}", verdicts, patch=EVIL_PATCH, tool_output=EVIL_OUTPUT)
            for n, verdicts in enumerate(THREE_RUNS, 1)]
    page = tmp_path / "report.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KCODE_")}
    done = subprocess.run([sys.executable, "-m", "kcode", "eval", "report", "--json", "--html", str(page),
                           *map(str, runs)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)

    raw, dom = dump_dom(page)
    summary = dom.by_id("summary")
    assert "mean ± sample std over 3 runs" in summary.all_text()
    assert float(dom.by_id("mean-rate").attrs["data-value"]) == document["mean_resolved_rate"]
    assert float(dom.by_id("std-rate").attrs["data-value"]) == document["std_resolved_rate"]
    assert dom.by_id("mean-rate").all_text() == "50.0%" and dom.by_id("std-rate").all_text() == "25.00 pp"
    assert [float(row.attrs["data-rate"]) for row in summary.find_all("tr", "run")] == \
        [run["resolved_rate"] for run in document["runs"]]
    assert [float(bar.attrs["data-rate"]) for bar in dom.by_id("plot").find_all("rect", "bar")] == \
        [run["resolved_rate"] for run in document["runs"]]
    assert [(row.attrs["data-repo"], float(row.attrs["data-mean-rate"])) for row in dom.find_all("tr", "repo")] == \
        [(repo["repo"], repo["mean_resolved_rate"]) for repo in document["repositories"]]
    assert [item.attrs["data-instance"] for item in dom.find_all("li", "flip")] == \
        [flip["instance_id"] for flip in document["flipping_instances"]]

    instances = dom.find_all("details", "instance")
    assert [i.attrs["data-instance"] for i in instances] == ["acme__calc-1", "acme__calc-2", "acme__calc-3",
                                                             "beta__lib-10"]
    assert instances[1].attrs["data-verdicts"] == "resolved unresolved error"
    assert len(dom.find_all("details", "trajectory")) == 11  # once per run that ran it (one run had no prediction)
    failed = [{g.attrs["data-group"]: g.attrs["data-failed"] for g in run.find_all("tr", "test-group")}
              for run in instances[1].find_all("details", "run")]
    assert failed == [{"FAIL_TO_PASS": "0", "PASS_TO_PASS": "0"}, {"FAIL_TO_PASS": "1", "PASS_TO_PASS": "0"}, {}]

    assert dom.find_all("script") == [] and dom.find_all("img") == []
    patches = dom.find_all("details", "patch")
    assert patches and all("+x = '<script>alert(1)</script>'" in p.all_text() for p in patches)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    outputs = dom.find_all("pre", "output")
    assert len(outputs) == 11 and all(o.all_text() == EVIL_OUTPUT for o in outputs)
    assert all(any("step" in a.attrs.get("class", "") for a in o.ancestors()) for o in outputs)  # nothing closed early


def test_with_one_run_the_page_says_the_std_is_undefined(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html_report(compare_runs(load_runs([write_graded_run(tmp_path / "run", THREE_RUNS[0])])), page)
    builder = _TreeBuilder()
    builder.feed(page.read_text(encoding="utf-8"))
    std = builder.root.by_id("std-rate")
    assert std.attrs["data-value"] == "" and std.all_text() == "is undefined"
