"""A self-contained HTML report of one intent, read from the knowledge layer only.

One small file, no JavaScript at all: the charts are inline SVG with a label at each point (the
report used to inline the 4.7 MB plotly.js bundle), so it opens offline and on a phone. It is
built from the components the live dashboard uses (`agents/views.py`): the champion and its
result in one line at the top, sections whose tables scroll inside their own box, numbers that
never wrap mid-value. Ten sections: the intent and its outcome, the incumbent's trajectory,
every candidate's accuracy and diversity gains, the accepted lineage, the calibration audits, the
final test-split comparison, the full candidate table with the lessons, AutoPerf's serving cost
(quality vs p99 latency with the Pareto front), the agents (ledger, budgets, outer A/B tests) and
the champion's feature lineage. Everything that comes
from the database (rationales written by an LLM included) is HTML-escaped, and no secret (an
`api_key`, a password, a token) is shown, even from an older database.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from agenticrs.agents import views
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.views import NO_AUDIT_NOTE, NO_FINAL_NOTE, STATUS_COLOURS, IntentData, describe
from agenticrs.runtime.files import atomic_write

__all__ = ["NO_AUDIT_NOTE", "NO_FINAL_NOTE", "SECTION_TITLES", "STATUS_COLOURS", "describe", "render", "write_report"]

SECTION_TITLES = {
    "overview": "1. Overview",
    "trajectory": "2. Incumbent trajectory",
    "gains": "3. Accuracy vs diversity gain of every candidate",
    "lineage": "4. Accepted lineage",
    "audits": "5. Calibration audits",
    "final": "6. Final comparison on the test split",
    "candidates": "7. All candidates and lessons",
    "perf": "8. Serving cost: quality vs latency (AutoPerf)",
    "agents": "9. Agents: proposals, acceptances, budget, outer A/B tests",
    "features": "10. Feature lineage of the champion",
}

_SECTIONS = {
    "overview": views.overview,
    "trajectory": views.trajectory,
    "gains": views.gains,
    "lineage": views.lineage,
    "audits": views.audits,
    "final": views.final,
    "candidates": views.candidates,
    "perf": views.perf,
    "agents": views.agents,
    "features": views.feature_lineage,
}


def render(d: IntentData) -> str:
    """The report page of one intent's records."""
    sections = [(key, SECTION_TITLES[key], build(d)) for key, build in _SECTIONS.items()]
    generated = f'<span class="n">generated {views.when(datetime.now(UTC))}</span> from the knowledge layer'
    return views.page(f"Evolution report — intent #{d.intent.id}", views.headline(views.headline_model(d)), sections,
                      status_line=generated)


def write_report(store: KnowledgeStore, intent_id: int, out: str | Path) -> Path:
    """Write the intent's report to `out` (one self-contained HTML file, replaced atomically)."""
    page = render(views.read_store_intent(store, intent_id))
    path = Path(out)
    with atomic_write(path, "wb") as handle:
        os.fchmod(handle.fileno(), 0o644)  # the temp file is private (0600); a report is for reading
        handle.write(page.encode("utf-8"))
    return path
