"""The report of several graded runs as one self-contained HTML file, for reading why instances failed.

No network and no script: inline CSS, an inline SVG plot, and `<details>` for everything long (each
instance, and under it each run's tests, patch and trajectory, each step of which folds too). Each run's
evidence appears once, under that run, and the page is written instance by instance, so 500 instances × 5
runs never sit in memory at once. The key figures carry stable ids and data attributes (`#mean-rate`,
`#std-rate`, `tr.run[data-rate]`, `tr.repo`, `li.flip`, `details.instance[data-instance]`) holding the same
numbers as `kcode eval report --json`, so a test (or a script) can read them from the DOM.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from swe_harness.html_evidence import esc, run_evidence
from swe_harness.predictions import load_predictions
from swe_harness.report import INSTANCES_DIR
from swe_harness.run import PREDICTIONS_FILE
from swe_harness.runs_report import GradedRun, RunsReport, percent, repository_of

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .6em;text-align:left}
td.num{text-align:right}pre{background:#f6f6f6;padding:.5em;overflow-x:auto;white-space:pre-wrap;margin:.3em 0}
details{margin:.2em 0 .2em 1em}summary{cursor:pointer}details.instance>summary{font-family:monospace}
.v{display:inline-block;min-width:1.4em;text-align:center;border-radius:3px;margin-left:.3em;color:#fff}
.resolved{background:#2a7d2a}.unresolved{background:#b33}.empty,.missing{background:#888}.error{background:#c80}
pre .a{color:#1a6b1a}pre .d{color:#a11}pre .h{color:#3355aa}pre .f{font-weight:bold}
pre.output.error,pre.error-log{background:#fbeeee}li.fail{color:#a11}li.pass{color:#1a6b1a}.note{color:#666}
"""
_MARKS = {"resolved": "✓", "unresolved": "✗", "empty": "∅", "error": "!", "missing": "–"}


def write_html_report(report: RunsReport, path: Path) -> None:
    """Write the page for `report` to `path` (replaced if it exists)."""
    with path.open("w", encoding="utf-8") as page:
        for chunk in _page(report):
            page.write(chunk)


def _page(report: RunsReport) -> Iterator[str]:
    yield (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>kcode eval report</title>'
           f'<style>{_STYLE}</style></head><body><h1>kcode eval report</h1>')
    yield _summary(report)
    yield _plot(report)
    yield _repositories(report)
    yield _flips(report)
    yield f'<section id="instances"><h2>Instances ({len(report.instance_ids)})</h2>'
    fallbacks = [_predicted_patches(run) for run in report.runs]
    for instance_id in report.instance_ids:
        yield _instance(report, instance_id, fallbacks)
    yield "</section></body></html>\n"


def _summary(report: RunsReport) -> str:
    std = report.std_resolved_rate
    mean = (f'<span id="mean-rate" data-value="{esc(repr(report.mean_resolved_rate))}">'
            f'{esc(percent(report.mean_resolved_rate))}</span>')
    figures = (f'{mean} (one run: the sample std <span id="std-rate" data-value="">is undefined</span>)'
               if std is None else
               f'{mean} ± <span id="std-rate" data-value="{esc(repr(std))}">{esc(f"{100 * std:.2f}")} pp</span> '
               f'(mean ± sample std over {len(report.runs)} runs)')
    rows = "".join(
        f'<tr class="run" data-run="{esc(run.label)}" data-rate="{esc(repr(run.resolved_rate))}"><td>{number}</td>'
        f'<td>{esc(run.label)}</td><td class="num">{esc(run.summary["resolved_instances"])}</td>'
        f'<td class="num">{esc(run.summary["total_instances"])}</td>'
        f'<td class="num">{esc(percent(run.resolved_rate))}</td></tr>'
        for number, run in enumerate(report.runs, 1))
    return (f'<section id="summary"><h2>Summary</h2><p><span id="run-count" data-value="{len(report.runs)}">'
            f'{len(report.runs)}</span> run(s) of {len(report.instance_ids)} instances; resolved rate: '
            f'<strong>{figures}</strong></p><table id="runs"><tr><th>#</th><th>run</th><th>resolved</th>'
            f'<th>instances</th><th>rate</th></tr>{rows}</table></section>')


def _plot(report: RunsReport) -> str:
    """Bars of each run's resolved rate on a 0–100% axis, with the mean as a dashed line."""
    left, top, height, step = 60, 20, 180, 70
    width = left + 20 + step * len(report.runs)

    def y(rate: float) -> float:
        return top + height * (1 - rate)

    grid = "".join(f'<line x1="{left}" x2="{width}" y1="{y(t / 100):.1f}" y2="{y(t / 100):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y(t / 100) + 4:.1f}" text-anchor="end">{t}%</text>'
                   for t in (0, 25, 50, 75, 100))
    bars = "".join(
        f'<rect class="bar" data-run="{esc(run.label)}" data-rate="{esc(repr(run.resolved_rate))}" '
        f'x="{left + 20 + i * step}" y="{y(run.resolved_rate):.1f}" width="40" '
        f'height="{height * run.resolved_rate:.1f}" fill="#4a7bbf"><title>{esc(run.label)}: '
        f'{esc(percent(run.resolved_rate))}</title></rect><text x="{left + 40 + i * step}" y="{top + height + 16}" '
        f'text-anchor="middle">{i + 1}</text>' for i, run in enumerate(report.runs))
    mean_y = y(report.mean_resolved_rate)
    return (f'<section id="plot"><h2>Resolved rate per run</h2><svg xmlns="http://www.w3.org/2000/svg" '
            f'width="{width + 10}" height="{top + height + 50}" font-size="12" role="img" '
            f'aria-label="resolved rate per run">{grid}{bars}'
            f'<line x1="{left}" x2="{width}" y1="{mean_y:.1f}" y2="{mean_y:.1f}" stroke="#c33" '
            f'stroke-dasharray="6 4"><title>mean {esc(percent(report.mean_resolved_rate))}</title></line>'
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + height}" stroke="#333"/>'
            f'<text x="{(left + width) / 2:.0f}" y="{top + height + 40}" text-anchor="middle">run</text>'
            f'<text transform="translate(14 {top + height / 2:.0f}) rotate(-90)" text-anchor="middle">'
            f'resolved rate (%)</text></svg></section>')


def _repositories(report: RunsReport) -> str:
    heads = "".join(f"<th>run {i}</th>" for i in range(1, len(report.runs) + 1))
    rows = "".join(
        f'<tr class="repo" data-repo="{esc(r.repo)}" data-mean-rate="{esc(repr(r.mean_resolved_rate))}">'
        f'<td>{esc(r.repo)}</td><td class="num">{r.instances}</td>'
        + "".join(f'<td class="num" data-rate="{esc(repr(rate))}">{esc(percent(rate))}</td>'
                  for rate in r.resolved_rates)
        + f'<td class="num">{esc(percent(r.mean_resolved_rate))}</td></tr>' for r in report.repositories)
    return (f'<section id="repositories"><h2>Per repository</h2><table><tr><th>repository</th><th>instances</th>'
            f'{heads}<th>mean</th></tr>{rows}</table></section>')


def _flips(report: RunsReport) -> str:
    items = "".join(f'<li class="flip" data-instance="{esc(i)}"><a href="#{esc(_anchor(i))}">{esc(i)}</a>'
                    f'{_marks(report.runs, i)}</li>' for i in report.flipping)
    body = f"<ul>{items}</ul>" if items else "<p>No instance flips between runs.</p>"
    return f'<section id="flips"><h2>Instances that flip between runs ({len(report.flipping)})</h2>{body}</section>'


def _instance(report: RunsReport, instance_id: str, fallbacks: Sequence[Mapping[str, str]]) -> str:
    verdicts = [run.verdicts[instance_id] for run in report.runs]
    runs = "".join(
        f'<details class="run" data-run="{esc(run.label)}" data-verdict="{esc(verdict)}"><summary>run {number} '
        f'({esc(run.label)}): <span class="v {esc(verdict)}">{esc(_MARKS[verdict])}</span> {esc(verdict)}</summary>'
        f'{run_evidence(run.path / INSTANCES_DIR / instance_id, instance_id, patches.get(instance_id))}</details>'
        for number, (run, verdict, patches) in enumerate(zip(report.runs, verdicts, fallbacks, strict=True), 1))
    return (f'<details class="instance" id="{esc(_anchor(instance_id))}" data-instance="{esc(instance_id)}" '
            f'data-verdicts="{esc(" ".join(verdicts))}"><summary>{esc(instance_id)}'
            f'{_marks(report.runs, instance_id)} <small>{esc(repository_of(instance_id))}</small></summary>'
            f'{runs}</details>')


def _marks(runs: tuple[GradedRun, ...], instance_id: str) -> str:
    return "".join(f'<span class="v {esc(run.verdicts[instance_id])}" title="{esc(run.label)}: '
                   f'{esc(run.verdicts[instance_id])}">{esc(_MARKS[run.verdicts[instance_id]])}</span>'
                   for run in runs)


def _anchor(instance_id: str) -> str:
    return f"instance-{instance_id}"


def _predicted_patches(run: GradedRun) -> dict[str, str]:
    """The run's own predictions by instance, for instances graded without a `patch.diff` (an empty patch)."""
    file = run.path / PREDICTIONS_FILE
    if not file.is_file():
        return {}
    return {i: p.model_patch for i, p in load_predictions(file).items() if p.model_patch}
