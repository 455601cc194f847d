"""Page components shared by the static HTML report and the live dashboard (`agenticrs ui`).

Both pages are built from the same pieces so they read the same way: the headline (the champion
and its result in one line, first thing on the page), sections whose tables scroll inside their
own box (`.scroll`, `overflow-x:auto`) while the page itself never scrolls sideways, numbers that
never wrap mid-value (cells are `white-space:nowrap`; only free-text cells wrap), and charts drawn
here as small inline SVG with a label at each point, so no multi-megabyte JavaScript bundle is
needed (the report opens offline, the dashboard loads instantly on a phone).

The module lives in the agents layer (beside `report.py`) because imports point left
(`docs/architecture.md`): the serving layer's dashboard imports it, the agents' report may too.
Everything that comes from the database (rationales written by an LLM included) is HTML-escaped
before it reaches a page, and no secret (an `api_key`, a password, a token) is shown.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import (
    AgentAction,
    Audit,
    Base,
    CandidateRow,
    Champion,
    Decision,
    Deployment,
    EnsNASComparison,
    Intent,
    Lesson,
    OuterTest,
    PerfProfile,
    Rollout,
    RolloutStep,
    Task,
    Training,
)
from agenticrs.runtime.secrets import scrub_secrets

NO_AUDIT_NOTE = "No audit recorded yet (run `agenticrs audit`)."
NO_FINAL_NOTE = (
    "No test-split comparison recorded: the intent has not finished, or its data set has no test split."
)
NO_REPRODUCTION_NOTE = "No reproductions recorded yet: the knowledge layer has no table for them so far."

STATUS_COLOURS = {
    "seed": "#1b5e20",
    "promoted": "#2e7d32",
    "accepted": "#81c784",
    "gate_failed": "#ef6c00",
    "rejected": "#c62828",
    "invalid": "#9e9e9e",
    "failed": "#212121",
    "proposed": "#1565c0",
    "trained": "#5c6bc0",
    "running": "#1565c0",
    "finished": "#2e7d32",
    "serving": "#2e7d32",
    "retired": "#9e9e9e",
    "rolled_back": "#c62828",
}

# metric -> higher is better (the final table's "better" column)
DIRECTIONS = {"auc": True, "gauc": True, "logloss": False, "brier": False}


# -- reading ----------------------------------------------------------------------------------
@dataclass
class IntentData:
    """Everything recorded about one intent (detached ORM rows), with the lookups pages need."""

    intent: Intent
    candidates: list[CandidateRow]
    comparisons: list[EnsNASComparison]
    decisions: list[Decision]
    lineage: list[Champion]
    lessons: list[Lesson]
    audits: list[Audit]
    trainings: list[Training]
    actions: list[AgentAction] = field(default_factory=list)  # the coordinator's ledger
    tasks: list[Task] = field(default_factory=list)
    perf: list[PerfProfile] = field(default_factory=list)  # AutoPerf's measurements, per (candidate, device)
    outer: list[OuterTest] = field(default_factory=list)
    by_id: dict[int, CandidateRow] = field(default_factory=dict)
    valid: dict[int, EnsNASComparison] = field(default_factory=dict)  # candidate -> valid comparison
    reason: dict[int, str] = field(default_factory=dict)  # candidate -> its last decision's reason
    decided_at: dict[int, datetime] = field(default_factory=dict)
    gate: dict[int, Decision] = field(default_factory=dict)
    description: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {row.id: row for row in self.candidates}
        self.valid = {c.candidate_id: c for c in self.comparisons if c.split == "valid"}
        for decision in self.decisions:  # ordered by id: the last word on a candidate wins
            self.reason[decision.candidate_id] = decision.reason
            self.decided_at[decision.candidate_id] = decision.decided_at
            if decision.gate == "gate":
                self.gate[decision.candidate_id] = decision
        self.description = {row.id: describe(row.config) for row in self.candidates}


def read_intent(tx: Any, intent_id: int) -> IntentData:
    """One intent's records, read inside the caller's transaction (one consistent snapshot)."""
    return IntentData(
        intent=tx.get(Intent, intent_id),
        candidates=tx.candidates(intent_id),
        comparisons=tx.comparisons(intent_id),
        decisions=tx.decisions(intent_id=intent_id),
        lineage=tx.lineage(intent_id),
        lessons=tx.lessons(intent_id),
        audits=tx.audits(intent_id),
        trainings=tx.trainings(intent_id=intent_id),
        actions=tx.agent_actions(intent_id),
        tasks=tx.tasks(intent_id),
        perf=tx.perf_profiles(intent_id=intent_id),
        outer=tx.outer_tests(intent_id=intent_id),
    )


def read_store_intent(store: KnowledgeStore, intent_id: int) -> IntentData:
    with store.transaction() as tx:
        return read_intent(tx, intent_id)


def describe(config: dict[str, Any]) -> str:
    """The candidate's one-line description; a config that no longer parses is shown as such."""
    try:
        return Candidate.model_validate(config).describe()
    except (ValueError, KeyError, TypeError):
        return f"{config.get('model', '?')} (config does not parse)"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in scrub_secrets(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def row_dict(row: Base) -> dict[str, Any]:
    """A table row as a JSON-ready dict (UTC ISO times, secrets dropped from JSON columns)."""
    return {column.name: _plain(getattr(row, column.key)) for column in row.__table__.columns}


def version_of(state: dict[str, Any]) -> str:
    """A short digest of a view model: it changes whenever anything shown was recorded or changed."""
    text = json.dumps(state, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# -- formatting -------------------------------------------------------------------------------
def e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def when(moment: datetime | None) -> str:
    moment = utc(moment)
    return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def metric(value: Any) -> str:
    return "—" if value is None else f"{float(value):.5f}"


def gain(value: Any) -> str:
    return "—" if value is None else f"{float(value):+.3e}"


def integer(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def share(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", text_columns: Iterable[int] = ()) -> str:
    """A table in its own horizontally scrolling box. Cells are HTML already (escape DB text before
    passing it); every cell stays on one line except the `text_columns` (descriptions, reasons)."""
    wrap = set(text_columns)
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="txt">{c}</td>' if i in wrap else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#607d8b")
    return f'<span class="badge" style="background:{colour}">{e(status)}</span>'


def num(text: str) -> str:
    """A value that must not break across lines, inside running text."""
    return f'<span class="n">{text}</span>'


# -- charts: inline SVG, a label at each point ------------------------------------------------
@dataclass
class Series:
    """Points (x, y, label, hover) drawn as labelled dots, optionally joined (a step line for
    incumbents); a point with an empty label is a line vertex only."""

    name: str
    colour: str
    points: list[tuple[float, float, str, str]]
    join: str = ""  # "" (dots only) | "line" | "step"
    dashed: bool = False
    radius: float = 4.0
    below: bool = False  # labels under the dots (a series that shadows another one's points)


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_text(value: float, integers: bool) -> str:
    if integers:
        return f"{value:.0f}"
    return f"{value:.4g}" if value else "0"


def svg_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    lines: Sequence[tuple[tuple[float, float], tuple[float, float], str]] = (),
    integer_x: bool = False,
    width: int = 560,
    height: int = 300,
) -> str:
    """A scatter/line chart as an `<svg>` figure that scales to its box; every point carries its
    label (text beside the dot) and a hover title. `lines` are reference lines (dotted)."""
    points = [(x, y) for s in series for x, y, *_ in s.points if x is not None and y is not None]
    if not points:
        return note(f"{e(title)}: nothing to plot yet.")
    xs = [x for x, _ in points] + [x for line in lines for x in (line[0][0], line[1][0])]
    ys = [y for _, y in points] + [y for line in lines for y in (line[0][1], line[1][1])]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    xpad = (x1 - x0) * 0.06 or max(abs(x0) * 0.05, 0.5 if integer_x else 1e-6)
    ypad = (y1 - y0) * 0.12 or max(abs(y0) * 0.02, 1e-6)
    x0, x1, y0, y1 = x0 - xpad, x1 + xpad, y0 - ypad, y1 + ypad
    left, right, top, bottom = 62, 14, 26, 42
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<text class="ct" x="{left}" y="16">{e(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for value in _ticks(y0, y1):
        y = py(value)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text class="tick" x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_tick_text(value, False)}</text>')
    x_ticks = [v for v in _ticks(x0, x1, 6) if not integer_x or float(v).is_integer()]
    for value in x_ticks:
        x = px(value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" class="grid"/>'
                     f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 13}" text-anchor="middle">'
                     f"{_tick_text(value, integer_x)}</text>")
    parts.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{e(x_label)}</text>')
    parts.append(f'<text class="axis" transform="translate(12 {top + plot_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{e(y_label)}</text>')
    for (ax, ay), (bx, by), _name in lines:
        parts.append(f'<line x1="{px(ax):.1f}" y1="{py(ay):.1f}" x2="{px(bx):.1f}" y2="{py(by):.1f}" class="ref"/>')
    for s in series:
        pts = [(x, y, label, hover) for x, y, label, hover in s.points if x is not None and y is not None]
        if s.join and len(pts) > 1:
            coords: list[str] = []
            for i, (x, y, *_rest) in enumerate(pts):
                if s.join == "step" and i:
                    coords.append(f"{px(x):.1f},{py(pts[i - 1][1]):.1f}")
                coords.append(f"{px(x):.1f},{py(y):.1f}")
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            parts.append(f'<polyline points="{" ".join(coords)}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
        for x, y, label, hover in pts:
            if not label:  # a line vertex only (a step carried on to the last round), not a data point
                continue
            cx, cy = px(x), py(y)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{s.radius}" fill="{s.colour}">'
                         f"<title>{e(hover)}</title></circle>")
            anchor = "end" if cx > left + plot_w - 30 else "start" if cx < left + 30 else "middle"
            ly = cy + s.radius + 11 if s.below else cy - s.radius - 3
            parts.append(f'<text class="pl" x="{cx:.1f}" y="{ly:.1f}" '
                         f'text-anchor="{anchor}">{e(label)}</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{s.colour}"></i>{e(s.name)}</span>' for s in series if s.points
    ) + "".join(f'<span class="key"><i class="dot"></i>{e(name)}</span>' for *_xy, name in lines)
    return f'<figure class="fig">{"".join(parts)}<figcaption class="legend">{legend}</figcaption></figure>'


# -- the headline -----------------------------------------------------------------------------
def headline_model(d: IntentData | None) -> dict[str, Any]:
    """The champion and its result, as plain data (the dashboard's API serves it too)."""
    if d is None:
        return {"intent_id": None, "text": "no intent recorded yet (run `agenticrs evolve`)"}
    intent = d.intent
    out: dict[str, Any] = {
        "intent_id": intent.id, "intent_status": intent.status, "objective": intent.objective,
        "candidates": sum(1 for row in d.candidates if row.round > 0),
        "promotions": max(len(d.lineage) - 1, 0),
    }
    if d.lineage:
        champ = d.lineage[-1]
        out.update(champion_id=champ.candidate_id, description=d.description.get(champ.candidate_id, "?"),
                   since_round=champ.round, valid=(champ.metrics or {}).get("valid", {}))
    final = (intent.summary or {}).get("final") or {}
    if final.get("champion"):
        out["test"] = final["champion"]
        out["test_seed"] = final.get("seed") or {}
    done = [t for t in d.trainings if t.status == "done" and t.cost_s is not None]
    out["cost"] = {"trainings": len(done), "compute_s": float(sum(t.cost_s for t in done))}  # type: ignore[misc]
    if d.lineage:
        perf = {p.candidate_id: p for p in d.perf}
        champ_perf = perf.get(d.lineage[-1].candidate_id)
        if champ_perf is not None:
            out["cost"].update(p99_ms=champ_perf.latency_p99_ms, parameters=champ_perf.parameters)
    return out


def headline(model: dict[str, Any]) -> str:
    """One line: champion #id, description, its objective on valid (and test when measured), then
    the intent's progress. Values are no-wrap spans, so a narrow screen breaks between them only."""
    if model.get("intent_id") is None:
        return f'<p class="headline">{e(model.get("text"))}</p>'
    objective = str(model.get("objective") or "auc")
    parts: list[str] = []
    if model.get("champion_id") is not None:
        parts.append(f'<b class="champ">Champion #{model["champion_id"]}</b> {e(model["description"])}')
        valid = model.get("valid") or {}
        shown = [objective] + [m for m in ("auc", "brier") if m != objective]
        values = [num(f"valid {e(m)} {metric(valid[m])}") for m in shown if valid.get(m) is not None]
        test = model.get("test") or {}
        if test.get(objective) is not None:
            seed = (model.get("test_seed") or {}).get(objective)
            delta = f" ({gain(test[objective] - seed)} vs seed)" if seed is not None else ""
            values.append(num(f"test {e(objective)} {metric(test[objective])}{delta}"))
        parts.extend(values)
        parts.append(num(f"since round {model['since_round']}"))
        cost = model.get("cost") or {}
        if cost.get("trainings"):
            text = f"cost {cost['trainings']} trainings, {duration(cost['compute_s'])}"
            if cost.get("p99_ms") is not None:
                text += f"; serves 1,000 candidates in {cost['p99_ms']:.1f} ms p99, {cost['parameters']:,} parameters"
            parts.append(num(e(text)))
    else:
        parts.append("<b>No champion yet</b>")
    parts.append(num(f"intent #{model['intent_id']} {status_badge(str(model['intent_status']))}"))
    parts.append(num(f"{model['candidates']} candidates, {model['promotions']} promotions"))
    return '<p class="headline">' + ' <span class="sep">·</span> '.join(parts) + "</p>"


# -- sections ---------------------------------------------------------------------------------
def overview(d: IntentData) -> str:
    intent = d.intent
    settings = scrub_secrets(intent.settings or {})  # a database written before secrets were dropped
    summary = intent.summary or {}
    counts: dict[str, int] = {}
    for row in d.candidates:
        if row.round > 0:
            counts[row.status] = counts.get(row.status, 0) + 1
    start, end = utc(intent.created_at), utc(intent.finished_at)
    wall = (end - start).total_seconds() if start and end else None
    done = [t for t in d.trainings if t.status == "done" and t.cost_s is not None]
    compute = sum(t.cost_s for t in done) if done else None  # type: ignore[misc]
    if d.lineage:
        champion_id = d.lineage[-1].candidate_id
        champion = f"#{champion_id} {e(d.description.get(champion_id, '?'))}"
    elif summary.get("champion"):
        champion = e(summary["champion"])
    else:
        champion = "none yet"
    rounds = max((row.round for row in d.candidates), default=0)
    verdicts = " ".join(f"{status_badge(status)} {n}" for status, n in sorted(counts.items())) or "no candidates yet"
    facts = [
        ("objective", e(intent.objective)),
        ("ensemble size M", e(intent.ensemble_size)),
        ("proposer", e(intent.proposer)),
        ("seed", e(intent.seed)),
        ("data set", e(settings.get("dataset", "—"))),
        ("status", status_badge(intent.status)),
        ("started", when(intent.created_at)),
        ("finished", when(intent.finished_at)),
        ("wall time", duration(wall)),
        ("training compute", f"{duration(compute)} over {len(done)} trainings"),
        ("rounds", e(rounds)),
        ("verdicts (rounds ≥ 1)", verdicts),
        ("champion", champion),
        ("promotions", e(max(len(d.lineage) - 1, 0))),
    ]
    for key in ("level", "margin", "gate_level", "bootstrap", "budget_s", "candidates"):
        if key in settings:
            facts.append((key, "none" if settings[key] is None else e(settings[key])))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    dump = e(json.dumps(settings, indent=2, sort_keys=True, default=str))
    return (
        f'<p class="intent-text">{e(intent.text)}</p>'
        f'<div class="scroll"><table class="facts">{rows}</table></div>'
        f"<details><summary>all settings</summary><pre>{dump}</pre></details>"
    )


def _predicted_brier(d: IntentData) -> dict[int, float]:
    """Each candidate's predicted M-ensemble valid Brier (EnsNAS, from its two learners)."""
    out: dict[int, float] = {}
    for comp in d.comparisons:
        if comp.split != "valid":
            continue
        out.setdefault(comp.incumbent_id, comp.predicted_incumbent)
        out[comp.candidate_id] = comp.predicted_candidate
    return out


def _member_auc(d: IntentData) -> dict[int, float]:
    """Mean valid AUC of each candidate's dual learners (not the ensemble's AUC)."""
    values: dict[int, list[float]] = {}
    for t in d.trainings:
        auc = (t.metrics or {}).get("valid", {}).get("auc")
        if t.role == "member" and t.status == "done" and auc is not None:
            values.setdefault(t.candidate_id, []).append(float(auc))
    return {cid: sum(v) / len(v) for cid, v in values.items()}


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trajectory(d: IntentData) -> str:
    if not d.lineage:
        return note("No incumbent recorded yet.")
    predicted = _predicted_brier(d)
    member_auc = _member_auc(d)
    last_round = max([row.round for row in d.candidates] + [d.lineage[-1].round])
    others = [row for row in d.candidates if row.round > 0]

    def hover(row: CandidateRow) -> str:
        return f"#{row.id} round {row.round}: {row.status} — {d.description[row.id]} — {_shorten(d.reason.get(row.id, ''))}"

    def incumbent(key: str, values: dict[int, float] | None = None) -> list[tuple[float, float, str, str]]:
        points = []
        for champ in d.lineage:
            value = values.get(champ.candidate_id) if values is not None else (
                (champ.metrics or {}).get("valid", {}).get(key))
            if value is not None:
                text = f"champion #{champ.candidate_id} since round {champ.round}: {d.description.get(champ.candidate_id, '')}"
                points.append((float(champ.round), float(value), f"{float(value):.4f}", text))
        if points and points[-1][0] < last_round:  # the step runs on to the last round, unlabelled
            points.append((float(last_round), points[-1][1], "", points[-1][3]))
        return points

    brier = svg_chart([
        Series("candidate: predicted M-ensemble Brier", "#90a4ae",
               [(float(r.round), predicted[r.id], f"#{r.id}", hover(r)) for r in others if r.id in predicted]),
        Series("incumbent: measured 2-ensemble Brier", "#2e7d32", incumbent("brier"), join="step", radius=5),
        Series(f"incumbent: predicted M={d.intent.ensemble_size} ensemble Brier (EnsNAS)", "#1565c0",
               incumbent("", predicted), join="step", dashed=True, radius=3, below=True),
    ], title="valid Brier by round (lower is better)", x_label="round", y_label="Brier", integer_x=True)
    auc = svg_chart([
        Series("candidate: mean member AUC (2 learners)", "#bcaaa4",
               [(float(r.round), member_auc[r.id], f"#{r.id}", hover(r)) for r in others if r.id in member_auc]),
        Series("incumbent: measured 2-ensemble AUC", "#6a1b9a", incumbent("auc"), join="step", radius=5),
    ], title="valid AUC by round (higher is better)", x_label="round", y_label="AUC", integer_x=True)
    caption = (
        "Step lines: the incumbent's measured valid metrics (its two dual learners averaged) from each promotion "
        "on, labelled with their values, and in the Brier chart EnsNAS's predicted M-ensemble Brier. Grey dots: "
        "each candidate, labelled with its id (hover for its verdict)."
    )
    return f'<div class="charts">{brier}{auc}</div>' + note(caption)


def gains(d: IntentData) -> str:
    rows = [row for row in d.candidates if row.id in d.valid]
    missing = [row for row in d.candidates if row.id not in d.valid and row.round > 0]
    parts = []
    if rows:
        series = []
        for status in sorted({row.status for row in rows}):
            group = [row for row in rows if row.status == status]
            series.append(Series(status, STATUS_COLOURS.get(status, "#607d8b"), [
                (d.valid[row.id].gain_accuracy, d.valid[row.id].gain_diversity, f"#{row.id}",
                 f"#{row.id} round {row.round}: {row.status} — {d.description[row.id]} — improvement "
                 f"{d.valid[row.id].improvement:+.3e} — {_shorten(d.reason.get(row.id, ''))}")
                for row in group
            ], radius=5))
        xs = [d.valid[row.id].gain_accuracy for row in rows] + [-d.valid[row.id].gain_diversity for row in rows]
        span = max(max(abs(x) for x in xs), 1e-12) * 1.15
        parts.append(svg_chart(series, title="accuracy vs diversity gain (valid)", x_label="accuracy gain G_acc",
                               y_label="diversity gain G_div", lines=[((-span, span), (span, -span), "G_acc + G_div = 0")],
                               height=340))
        parts.append(note(
            "EnsNAS on the valid split against the incumbent of the candidate's round. Above and right of the "
            "dotted line the predicted M-ensemble Brier improves (G_acc + G_div &gt; 0); acceptance also needs the "
            "bootstrap lower bound above the margin."
        ))
    else:
        parts.append(note("No candidate has an EnsNAS comparison yet."))
    if missing:
        listed = ", ".join(f"#{row.id} ({e(row.status)})" for row in missing)
        parts.append(note(f"Without a comparison (never trained or not trained yet): {listed}."))
    return "".join(parts)


def lineage(d: IntentData) -> str:
    if not d.lineage:
        return note("No incumbent recorded yet.")
    boxes = []
    rows = []
    previous: Champion | None = None
    for champ in d.lineage:
        row = d.by_id.get(champ.candidate_id)
        comp = d.valid.get(champ.candidate_id)
        gate = d.gate.get(champ.candidate_id)
        valid_now = (champ.metrics or {}).get("valid", {})
        valid_before = (previous.metrics or {}).get("valid", {}) if previous else {}
        brier_change = (
            valid_now["brier"] - valid_before["brier"] if "brier" in valid_now and "brier" in valid_before else None
        )
        auc_change = valid_now["auc"] - valid_before["auc"] if "auc" in valid_now and "auc" in valid_before else None
        label = "seed" if champ.sequence == 0 else f"step {champ.sequence}"
        predicted_gain = "starting incumbent" if comp is None else f"predicted gain {comp.improvement:+.2e}"
        boxes.append(
            f'<div class="node"><b>{label}: #{champ.candidate_id}</b><br>round {champ.round}<br>'
            f"{e(d.description.get(champ.candidate_id, '?'))}<br><small>{e(predicted_gain)}</small></div>"
        )
        gate_text = "—"
        if gate is not None:
            details = gate.details or {}
            gate_text = f"{e(details.get('objective', ''))} {gain(details.get('gain'))} (bound {gain(details.get('bound'))})"
        rows.append([
            e(champ.sequence), e(champ.round), f"#{champ.candidate_id}", e(d.description.get(champ.candidate_id, "?")),
            e(row.mutation if row else None) or "—", e(row.rationale if row else ""),
            gain(comp.improvement) if comp else "—",
            f"{gain(comp.ci_low)} … {gain(comp.ci_high)}" if comp else "—",
            gain(comp.gain_accuracy) if comp else "—", gain(comp.gain_diversity) if comp else "—", gate_text,
            f"{metric(valid_now.get('brier'))} ({gain(brier_change)})" if brier_change is not None
            else metric(valid_now.get("brier")),
            f"{metric(valid_now.get('auc'))} ({gain(auc_change)})" if auc_change is not None else metric(valid_now.get("auc")),
            when(champ.since),
        ])
        previous = champ
    chain = '<div class="chain">' + '<span class="arrow">→</span>'.join(boxes) + "</div>"
    headers = ["#", "round", "candidate", "description", "mutation", "rationale", "predicted M-ens gain (valid)",
               "CI", "G_acc", "G_div", "gate gain (2-ens)", "valid Brier (Δ)", "valid AUC (Δ)", "since"]
    return chain + table(headers, rows, "wide", text_columns=(3, 5))


def _audit_records(audits: list[Audit]) -> list[dict[str, Any]]:
    """One record per audited (candidate, incumbent, split): the two role rows paired up."""
    groups: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for a in audits:
        details = dict(a.details or {})
        role = details.pop("role", None)
        key = json.dumps([a.split, a.ensemble_size, details], sort_keys=True, default=str)
        if role not in ("candidate", "incumbent"):
            key, role = f"{key}|{a.id}", "candidate"
        if key not in groups:
            groups[key] = {"split": a.split, "m": a.ensemble_size, "details": details, "when": a.created_at}
            order.append(key)
        groups[key][role] = a
    return [groups[key] for key in order]


def audits(d: IntentData) -> str:
    if not d.audits:
        return note(e(NO_AUDIT_NOTE))
    series = []
    for role in sorted({(a.details or {}).get("role", "candidate") for a in d.audits}):
        for split in sorted({a.split for a in d.audits}):
            group = [a for a in d.audits if (a.details or {}).get("role", "candidate") == role and a.split == split]
            if group:
                series.append(Series(f"{role}, {split}", "#2e7d32" if role == "candidate" else "#1565c0", [
                    (a.predicted, a.measured, f"#{a.candidate_id}",
                     f"#{a.candidate_id} ({role}) {split}, M={a.ensemble_size}: {d.description.get(a.candidate_id, '')}")
                    for a in group
                ], radius=5 if split == "valid" else 4))
    values = [a.predicted for a in d.audits] + [a.measured for a in d.audits]
    low, high = min(values), max(values)
    chart = svg_chart(series, title="calibration: predicted vs measured M-ensemble Brier",
                      x_label="predicted (EnsNAS, 2 learners)", y_label="measured (real M-ensemble)",
                      lines=[((low, low), (high, high), "y = x")])
    rows = []
    agree = known = 0
    for rec in _audit_records(d.audits):
        cand: Audit | None = rec.get("candidate")
        inc: Audit | None = rec.get("incumbent")
        verdict = rec["details"].get("verdict_agrees")
        if verdict is not None:
            known += 1
            agree += bool(verdict)
        rows.append([
            e(rec["split"]), e(rec["m"]),
            f"#{cand.candidate_id}" if cand else "—", f"#{inc.candidate_id}" if inc else "—",
            metric(cand.predicted if cand else None), metric(cand.measured if cand else None),
            metric(inc.predicted if inc else None), metric(inc.measured if inc else None),
            gain(rec["details"].get("predicted_improvement")), gain(rec["details"].get("measured_improvement")),
            "—" if verdict is None else ('<span class="yes">✓ agrees</span>' if verdict
                                        else '<span class="no">✗ disagrees</span>'),
            when(rec["when"]),
        ])
    errors = [abs(a.predicted - a.measured) for a in d.audits]
    relative = [abs(a.predicted - a.measured) / abs(a.measured) for a in d.audits if a.measured]
    summary = (
        f"The predicted verdict (candidate better than incumbent or not) agrees with the measured one in "
        f"<b>{agree} of {known}</b> audit records. Mean |predicted − measured| Brier: "
        f"{num(f'{sum(errors) / len(errors):.2e}')}"
        + (f" ({num(f'{100 * sum(relative) / len(relative):.2f}%')} of the measured)." if relative else ".")
    )
    headers = ["split", "M", "candidate", "incumbent", "cand predicted", "cand measured", "inc predicted",
               "inc measured", "predicted gain", "measured gain", "verdict", "when"]
    return chart + f"<p>{summary}</p>" + table(headers, rows)


def final(d: IntentData) -> str:
    result = (d.intent.summary or {}).get("final") or {}
    seed, champion = result.get("seed") or {}, result.get("champion") or {}
    if not seed and not champion:
        return note(e(NO_FINAL_NOTE))
    metrics = [m for m in ("auc", "logloss", "brier") if m in seed or m in champion]
    metrics += sorted(k for k in {*seed, *champion} if k not in metrics)
    rows = []
    for name in metrics:
        a, b = seed.get(name), champion.get(name)
        delta = b - a if a is not None and b is not None else None
        relative = f"{100 * delta / abs(a):+.2f}%" if delta is not None and a else "—"
        higher = DIRECTIONS.get(name)
        if delta is None or higher is None or delta == 0:
            verdict = "—"
        elif (delta > 0) == higher:
            verdict = '<span class="yes">better</span>'
        else:
            verdict = '<span class="no">worse</span>'
        rows.append([e(name), metric(a), metric(b), gain(delta), relative, verdict])
    caption = (
        "Test-split metrics of the 2-learner ensembles (the dual learners averaged) of the seed incumbent and "
        "the final champion; the test split was read by nothing else."
    )
    headers = ["metric", "seed", "champion", "Δ (champion − seed)", "relative", "champion is"]
    return table(headers, rows, "final") + note(caption)


NO_PERF_NOTE = "No serving-cost measurement recorded yet (AutoPerf measures each trained candidate)."


def perf_quality(d: IntentData, profile: PerfProfile | None = None) -> dict[int, tuple[float, str]]:
    """Each candidate's quality for the Pareto view: (valid AUC, where it comes from). The valid AUC
    of its 2-ensemble where one was recorded (a measurement's `details["valid_auc"]`, or the
    champion record of a promoted candidate), else the mean valid AUC of its two learners."""
    out: dict[int, tuple[float, str]] = {cid: (auc, "member mean") for cid, auc in _member_auc(d).items()}
    for champ in d.lineage:
        auc = (champ.metrics or {}).get("valid", {}).get("auc")
        if auc is not None:
            out[champ.candidate_id] = (float(auc), "2-ensemble")
    for row in d.perf:
        auc = (row.details or {}).get("valid_auc")
        if auc is not None:
            out[row.candidate_id] = (float(auc), "2-ensemble")
    return out


def perf(d: IntentData) -> str:
    """AutoPerf's view: every measured candidate's quality against its p99 latency per 1,000
    candidates, the Pareto front highlighted (one chart per device), and the table of figures."""
    if not d.perf:
        return note(e(NO_PERF_NOTE))
    from agenticrs.agents.autoperf import pareto_front  # pure Python; the module's torch parts stay unused here

    quality = perf_quality(d)
    charts, rows = [], []
    for device in sorted({row.device for row in d.perf}):
        group = [row for row in d.perf if row.device == device]
        plotted = [row for row in group if row.candidate_id in quality]
        front = {plotted[i].candidate_id for i in pareto_front(
            [(quality[row.candidate_id][0], row.latency_p99_ms) for row in plotted])}

        def point(row: PerfProfile) -> tuple[float, float, str, str]:
            auc, source = quality[row.candidate_id]
            status = d.by_id[row.candidate_id].status if row.candidate_id in d.by_id else "?"
            return (row.latency_p99_ms, auc, f"#{row.candidate_id}",
                    f"#{row.candidate_id} ({status}): valid AUC {auc:.5f} ({source}), p99 {row.latency_p99_ms:.2f} ms "
                    f"per 1,000, {row.parameters:,} parameters — {d.description.get(row.candidate_id, '')}")

        on_front = sorted((point(row) for row in plotted if row.candidate_id in front), key=lambda p: (p[0], -p[1]))
        charts.append(svg_chart([
            Series("dominated", "#90a4ae", [point(row) for row in plotted if row.candidate_id not in front]),
            Series("Pareto front", "#2e7d32", on_front, join="step", radius=5),
        ], title=f"quality vs p99 latency ({device})", x_label="p99 latency, ms per 1,000 candidates",
            y_label="valid AUC", height=320))
        for row in sorted(group, key=lambda r: r.candidate_id):
            auc, source = quality.get(row.candidate_id, (None, ""))
            candidate = d.by_id.get(row.candidate_id)
            export = "—" if row.export_bytes is None else f"{row.export_bytes / 1024 / 1024:.3f} MB ({e(row.export_format)})"
            rows.append([
                f"#{row.candidate_id}", e(d.description.get(row.candidate_id, "?")),
                status_badge(candidate.status) if candidate else "—",
                metric(auc) + (f" <small>{e(source)}</small>" if source else ""),
                f"{row.latency_p50_ms:.3f}", f"{row.latency_p99_ms:.3f}", integer(row.parameters),
                f"{row.memory_mb:.3f}", export, e(row.device),
                '<span class="yes">✓</span>' if row.candidate_id in front else "",
            ])
    headers = ["candidate", "description", "status", "valid AUC", "p50 ms/1k", "p99 ms/1k", "parameters",
               "memory MB", "export", "device", "Pareto"]
    caption = (
        "AutoPerf's measurement of each candidate as it would be served (its member runs averaged): forward time per "
        "1,000 candidates after a warm-up (p50, p99), parameters, memory (weights, buffers and the peak activations of "
        "a 1,000-row forward) and the ONNX export size (the state dict where the model cannot be exported). On the "
        "Pareto front: no other candidate has a higher valid AUC at a p99 latency as low. Valid AUC: of the "
        "2-ensemble where recorded, else the mean of the two learners (marked)."
    )
    return f'<div class="charts">{"".join(charts)}</div>' + table(headers, rows, "wide", text_columns=(1,)) + note(caption)


def perf_section(store: KnowledgeStore, intent_id: int) -> str:
    """The AutoPerf section of one intent, read from the knowledge layer (HTML)."""
    return perf(read_store_intent(store, intent_id))


def candidates(d: IntentData) -> str:
    """Every candidate with its evidence (gains, CI, verdict reason), then the lessons."""
    rows = []
    for row in d.candidates:
        comp = d.valid.get(row.id)
        rows.append([
            e(row.round), f"#{row.id}", e(row.proposer), e(row.mutation) or "—",
            e(d.description[row.id]), status_badge(row.status),
            gain(comp.gain_accuracy) if comp else "—", gain(comp.gain_diversity) if comp else "—",
            gain(comp.improvement) if comp else "—", gain(comp.ci_low) if comp else "—",
            integer(row.parameters), "—" if row.latency_ms is None else f"{row.latency_ms:.2f}",
            e(d.reason.get(row.id, "")), e(row.rationale),
        ])
    headers = ["round", "id", "proposer", "mutation", "description", "status", "G_acc", "G_div", "improvement",
               "CI low", "parameters", "latency ms/1000 rows", "reason", "rationale"]
    body = table(headers, rows, "wide", text_columns=(4, 12, 13)) if rows else note("No candidates recorded.")
    if d.lessons:
        items = "".join(
            f'<li><span class="scope">{e(lesson.scope)}</span>'
            + (f" #{lesson.candidate_id}" if lesson.candidate_id is not None else "")
            + f" {e(lesson.text)}</li>"
            for lesson in d.lessons
        )
        lessons = f'<h3>Lessons ({len(d.lessons)})</h3><ol class="lessons">{items}</ol>'
    else:
        lessons = "<h3>Lessons</h3>" + note("No lessons recorded.")
    return body + lessons


def intents_table(intents: Sequence[Intent], champions: dict[int, str], selected: int | None, link: bool) -> str:
    """Every intent, newest first; the shown one marked. `link`: ids link to `?intent=N`."""
    if not intents:
        return note("No intent recorded yet (run `agenticrs evolve`).")
    rows = []
    for intent in reversed(intents):
        ident = f'<a href="?intent={intent.id}">#{intent.id}</a>' if link else f"#{intent.id}"
        if intent.id == selected:
            ident = f"<b>{ident} (shown)</b>"
        rows.append([ident, e(intent.text), status_badge(intent.status), e(intent.objective), e(intent.proposer),
                     e(intent.ensemble_size), e(champions.get(intent.id, "—")), when(intent.created_at)])
    return table(["intent", "text", "status", "objective", "proposer", "M", "champion", "started"], rows,
                 text_columns=(1, 6))


def reproductions() -> str:
    return note(e(NO_REPRODUCTION_NOTE))


def deployments(rows: Sequence[Deployment]) -> str:
    if not rows:
        return note("No deployment recorded yet.")
    body = []
    for row in reversed(rows):
        details = scrub_secrets(row.details or {})
        latency = details.get("latency_ms") or details.get("p50_ms")
        body.append([f"#{row.id}", status_badge(row.status), f"#{row.candidate_id}" if row.candidate_id else "—",
                     e(row.backend), e(row.endpoint) or "—", "—" if latency is None else e(latency),
                     e(row.run_path), when(row.started_at), when(row.ended_at)])
    return table(["deployment", "status", "candidate", "backend", "endpoint", "latency", "run", "started", "ended"],
                 body, text_columns=(6,))


def rollouts(rows: Sequence[Rollout], steps: dict[int, list[RolloutStep]]) -> str:
    if not rows:
        return note("No rollout recorded yet.")
    body, charts = [], []
    for row in reversed(rows):
        its = steps.get(row.id, [])
        body.append([f"#{row.id}", status_badge(row.status), f"#{row.candidate_id}",
                     f"#{row.incumbent_id}" if row.incumbent_id else "—", share(row.share),
                     e(len(its)), e(its[-1].verdict) if its else "—", e(row.reason) or "—",
                     when(row.started_at), when(row.finished_at)])
        if its:
            charts.append(svg_chart([Series("traffic share", "#1565c0", [
                (float(s.step), 100 * s.share, f"{100 * s.share:.0f}%", f"step {s.step}: {s.verdict} — {s.reason}")
                for s in its], join="line")], title=f"rollout #{row.id}: candidate share by step",
                x_label="step", y_label="share %", integer_x=True, height=220))
    steps_rows = [
        [f"#{s.rollout_id}", e(s.step), share(s.share), e(s.verdict),
         e(", ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in (s.metrics or {}).items())),
         e(s.reason), when(s.created_at)]
        for row in reversed(rows) for s in steps.get(row.id, [])
    ]
    out = table(["rollout", "status", "candidate", "incumbent", "share", "steps", "last verdict", "reason", "started",
                 "finished"], body, text_columns=(7,))
    if steps_rows:
        out += "<h3>Steps</h3>" + table(["rollout", "step", "share", "verdict", "metrics", "reason", "at"], steps_rows,
                                        text_columns=(4, 5))
    return out + (f'<div class="charts">{"".join(charts[:4])}</div>' if charts else "")


# -- the page shell ---------------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1500px;padding:0 16px 60px;
color:#212121;line-height:1.45;overflow-wrap:break-word}
header.top{position:sticky;top:0;z-index:2;background:#fff;border-bottom:2px solid #e0e0e0;padding:8px 0 6px}
.headline{margin:0;font-size:17px}.headline .sep{color:#9e9e9e}.headline .champ{color:#1b5e20}
.title{margin:4px 0 0;font-size:13px;color:#616161}
h1{font-size:20px;margin:0}h2{border-bottom:1px solid #e0e0e0;padding-bottom:4px;margin-top:32px;font-size:19px}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:14px;margin:6px 0}
.scroll{overflow-x:auto;max-width:100%;-webkit-overflow-scrolling:touch;margin:10px 0;border:1px solid #eeeeee}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top;white-space:nowrap}
td.txt{white-space:normal;min-width:14em;max-width:32em;overflow-wrap:anywhere}
thead th{background:#f5f5f5}
table.facts th{background:#fafafa}
.n{white-space:nowrap}
.badge{color:#fff;border-radius:4px;padding:1px 6px;font-size:12px;white-space:nowrap}
.note{color:#616161;font-size:13px;font-style:italic}
.intent-text{font-size:17px}
.chain{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin:12px 0}
.chain .node{border:2px solid #2e7d32;border-radius:8px;padding:6px 10px;font-size:13px;background:#f1f8e9;max-width:260px}
.chain .arrow{font-size:24px;color:#2e7d32}
.yes{color:#2e7d32;font-weight:600}.no{color:#c62828;font-weight:600}
.scope{background:#eceff1;border-radius:4px;padding:0 5px;font-size:12px}
pre{background:#fafafa;padding:8px;font-size:12px;overflow:auto;max-width:100%}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.fig{margin:8px 0;flex:1 1 420px;max-width:720px;min-width:0}
svg.chart{width:100%;height:auto;display:block;font-family:inherit}
svg .ct{font-size:13px;font-weight:600;fill:#212121}svg .tick{font-size:10px;fill:#616161}
svg .axis{font-size:11px;fill:#424242}svg .pl{font-size:10px;fill:#212121}
svg .frame{fill:none;stroke:#bdbdbd}svg .grid{stroke:#eeeeee}svg .ref{stroke:#424242;stroke-dasharray:2 3}
.legend{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:12px;color:#424242}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
.legend i.dot{border-radius:0;height:0;border-top:2px dotted #424242}
.live{font-size:12px;color:#616161}.live.bad{color:#c62828}
@media (max-width:600px){body{padding:0 10px 40px}header.top{position:static}.headline{font-size:15px}h2{font-size:17px}
svg .pl,svg .tick{font-size:12px}svg .axis{font-size:13px}}
"""


def page(title: str, headline_html: str, sections: Sequence[tuple[str, str, str]], *, extra_head: str = "",
         status_line: str = "", script: str = "", body_attrs: str = "") -> str:
    """The whole page: the headline first (sticky), a short section index, the sections. Each
    section's content sits in `<div id="body-KEY">` so the dashboard can replace it in place."""
    nav = "".join(f'<a href="#{key}">{e(name)}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{e(name)}</h2><div id="body-{key}">{content}</div></section>'
        for key, name, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(title)}</title><style>{CSS}</style>{extra_head}</head><body{body_attrs}>"
        f'<header class="top"><div id="body-headline">{headline_html}</div>'
        f'<p class="title"><b>{e(title)}</b> {status_line}</p></header>'
        f"<nav>{nav}</nav>{body}{script}</body></html>\n"
    )


# -- the agents (issue: agentic system II) ---------------------------------------------------------
def agents(d: IntentData) -> str:
    """Per agent: rounds it acted in, acceptances, promotions, budget spent and mean rewards."""
    if not d.actions:
        return note("No agent ledger recorded (an evolution from before the agents).")
    budgets = (scrub_secrets(d.intent.settings or {}) or {}).get("agent_budget_s") or {}
    promoted = {c.candidate_id for c in d.lineage[1:]}
    rows = []
    for name in sorted({a.agent for a in d.actions}):
        acts = [a for a in d.actions if a.agent == name]
        inner = [a.inner_reward for a in acts if a.inner_reward is not None]
        outer = [a.outer_reward for a in acts if a.outer_reward is not None]
        rows.append([
            e(name), e(len(acts)), e(sum(1 for a in acts if a.candidate_id is not None)),
            e(sum(1 for a in acts if a.accepted)), e(sum(1 for a in acts if a.candidate_id in promoted)),
            duration(sum(a.cost_s for a in acts)), duration(budgets.get(name)) if budgets.get(name) else "—",
            gain(sum(inner) / len(inner)) if inner else "—", gain(sum(outer) / len(outer)) if outer else "—",
        ])
    headers = ["agent", "rounds", "proposals", "accepted (valid)", "promoted", "spent", "budget",
               "mean inner reward", "mean outer reward (lift)"]
    timeline = " ".join(f'<span class="key">{e(a.round)}: {e(a.agent)}{" ✓" if a.accepted else ""}</span>'
                        for a in d.actions)  # fmt: skip
    outer_rows = [[f"#{t.id}", f"#{t.candidate_id} vs #{t.incumbent_id}", status_badge(t.status), e(t.reason)]
                  for t in d.outer]  # fmt: skip
    outer = table(["test", "arms", "status", "reason"], outer_rows, text_columns=(3,)) if outer_rows else note(
        "No outer A/B test was run (outer_every 0, or the data is not from the simulator).")
    return (table(headers, rows) + f"<p>Which agent acted in each round (✓ accepted): {timeline}</p>"
            + "<h3>Outer reward: simulated A/B tests against the previous champion</h3>" + outer)


def feature_lineage(d: IntentData) -> str:
    """The champion's features, step by step: which feature actions each promotion added or removed."""
    if not d.lineage:
        return note("No incumbent recorded yet.")
    rows, before = [], []
    for champ in d.lineage:
        row = d.by_id.get(champ.candidate_id)
        now = list((row.config if row else {}).get("features") or [])
        added = [f for f in now if f not in before]
        removed = [f for f in before if f not in now]
        rows.append([
            e(champ.sequence), f"#{champ.candidate_id}", e(row.proposer if row else "?"),
            e(", ".join(_action_text(f) for f in added)) or "—", e(", ".join(_action_text(f) for f in removed)) or "—",
            e(len(now)),
        ])
        before = now
    return table(["step", "candidate", "by", "feature actions added", "removed", "feature actions in force"], rows,
                 text_columns=(3, 4))


def _action_text(action: dict[str, Any]) -> str:
    body = ", ".join(f"{k}={v}" for k, v in action.items() if k != "kind")
    return f"{action.get('kind', '?')}({body})"
