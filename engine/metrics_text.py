"""`EngineMetrics` in Prometheus' text exposition format, for `GET /metrics`.

Names follow Prometheus' conventions (a `kcode_engine_` prefix, `_total` on counters, base units) and carry
the served model's name as a label, as vLLM's do, so one Prometheus can scrape several servers. Rates that
Prometheus would derive from counters (the prefix cache's hit rate, cache use) are exported too, for people
reading the page with curl.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from engine.service import EngineMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_Kind = Literal["gauge", "counter"]


def prometheus_text(metrics: EngineMetrics, *, model_name: str) -> str:
    """Every metric as `# HELP`, `# TYPE` and one sample line, ending with a newline."""
    cache_use = metrics.cache_blocks_used / metrics.cache_blocks_total if metrics.cache_blocks_total else 0.0
    queried = metrics.prefix_cache_queried_tokens
    hit_rate = metrics.prefix_cache_hit_tokens / queried if queried else 0.0
    samples: list[tuple[str, _Kind, str, float]] = [
        ("num_requests_running", "gauge", "Requests in the running batch.", metrics.running),
        ("num_requests_waiting", "gauge", "Requests queued for a place in the batch.", metrics.waiting),
        ("cache_blocks_used", "gauge", "Latent cache blocks holding tokens.", metrics.cache_blocks_used),
        ("cache_blocks_total", "gauge", "Latent cache blocks in all.", metrics.cache_blocks_total),
        ("cache_usage_ratio", "gauge", "Fraction of the latent cache in use (0 to 1).", cache_use),
        ("prefix_cache_queried_tokens_total", "counter", "Prompt tokens looked up in the prefix cache.", queried),
        ("prefix_cache_hit_tokens_total", "counter", "Prompt tokens found in the prefix cache (prefill skipped).",
         metrics.prefix_cache_hit_tokens),
        ("prefix_cache_hit_ratio", "gauge", "Hit tokens over queried tokens since start (0 to 1).", hit_rate),
        ("prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", metrics.prompt_tokens_total),
        ("generation_tokens_total", "counter", "Tokens generated.", metrics.generation_tokens_total),
        ("requests_finished_total", "counter", "Requests finished, cancelled ones included.",
         metrics.requests_finished_total),
        ("preemptions_total", "counter", "Sequences preempted for want of cache, to be recomputed.",
         metrics.preemptions_total),
        ("generation_tokens_per_second", "gauge", "Recent generation throughput.", metrics.generation_tokens_per_s),
    ]
    label = f'{{model_name="{_escaped(model_name)}"}}'
    lines: list[str] = []
    for name, kind, help_text, value in samples:
        full = f"kcode_engine_{name}"
        lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full}{label} {_number(value)}"]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _escaped(label_value: str) -> str:
    """A label value as the format requires: backslash, double quote and newline escaped."""
    return label_value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
