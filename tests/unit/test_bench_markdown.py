"""The committed benchmark summary is what the committed results render to, and it shows every
target of the performance issue beside its verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.__main__ import markdown

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def _newest_suite() -> Path:
    suites = sorted(p for p in RESULTS.glob("*.json") if re.fullmatch(r"\d{4}-\d{2}-\d{2}\.json", p.name))
    assert suites, "no committed suite results (python -m bench)"
    return suites[-1]


def test_the_committed_summary_renders_from_the_committed_results() -> None:
    suite = _newest_suite()
    rendered = markdown(json.loads(suite.read_text()))
    assert suite.with_suffix(".md").read_text() == rendered


def test_the_summary_gives_every_target_a_figure_and_a_verdict() -> None:
    rendered = markdown(json.loads(_newest_suite().read_text()))
    targets = rendered.split("## Targets", 1)[1].split("## Other figures", 1)[0]
    rows = [line for line in targets.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    assert len(rows) == 9  # sustained rate, latency, 2 peers, floor, rehydration, 2 projections, scaling
    assert all(row.rstrip(" |").endswith(("yes", "**no**")) for row in rows), rows
