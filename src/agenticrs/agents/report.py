"""A self-contained HTML report of one intent, read from the knowledge layer only.

One file, plotly.js inlined (it opens offline, no CDN), written atomically. Seven sections:
the intent and its outcome, the incumbent's trajectory, every candidate's accuracy and diversity
gains, the accepted lineage, the calibration audits, the final test-split comparison and the
full candidate table with the lessons. Everything that comes from the database (rationales
written by an LLM included) is HTML-escaped before it reaches the page or a hover label, and
no secret (an `api_key`, a password, a token) is shown, even from an older database.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import (
    Audit,
    CandidateRow,
    Champion,
    Decision,
    EnsNASComparison,
    Intent,
    Lesson,
    Training,
)
from agenticrs.runtime.files import atomic_write
from agenticrs.runtime.secrets import scrub_secrets

SECTION_TITLES = {
    "overview": "1. Overview",
    "trajectory": "2. Incumbent trajectory",
    "gains": "3. Accuracy vs diversity gain of every candidate",
    "lineage": "4. Accepted lineage",
    "audits": "5. Calibration audits",
    "final": "6. Final comparison on the test split",
    "candidates": "7. All candidates and lessons",
}

NO_AUDIT_NOTE = "No audit recorded yet (run `agenticrs audit`)."
NO_FINAL_NOTE = (
    "No test-split comparison recorded: the intent has not finished, or its data set has no test split."
)

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
}

# metric -> higher is better (the final table's "better" column)
_DIRECTIONS = {"auc": True, "gauc": True, "logloss": False, "brier": False}


# -- reading ----------------------------------------------------------------------------------
@dataclass
class _Data:
    intent: Intent
    candidates: list[CandidateRow]
    comparisons: list[EnsNASComparison]
    decisions: list[Decision]
    lineage: list[Champion]
    lessons: list[Lesson]
    audits: list[Audit]
    trainings: list[Training]
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


def _read(store: KnowledgeStore, intent_id: int) -> _Data:
    with store.transaction() as tx:
        return _Data(
            intent=tx.get(Intent, intent_id),
            candidates=tx.candidates(intent_id),
            comparisons=tx.comparisons(intent_id),
            decisions=tx.decisions(intent_id=intent_id),
            lineage=tx.lineage(intent_id),
            lessons=tx.lessons(intent_id),
            audits=tx.audits(intent_id),
            trainings=tx.trainings(intent_id=intent_id),
        )


def describe(config: dict[str, Any]) -> str:
    """The candidate's one-line description; a config that no longer parses is shown as such."""
    try:
        return Candidate.model_validate(config).describe()
    except (ValueError, KeyError, TypeError):
        return f"{config.get('model', '?')} (config does not parse)"


# -- formatting -------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _plot_time(moment: datetime | None) -> datetime | None:
    """Naive UTC for plotly (plotly.js does not take UTC offsets in dates)."""
    moment = _utc(moment)
    return None if moment is None else moment.replace(tzinfo=None)


def _when(moment: datetime | None) -> str:
    moment = _utc(moment)
    return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _metric(value: Any) -> str:
    return "—" if value is None else f"{float(value):.5f}"


def _gain(value: Any) -> str:
    return "—" if value is None else f"{float(value):+.3e}"


def _int(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Cells are HTML already (escape DB text before passing it)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _status(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#607d8b")
    return f'<span class="badge" style="background:{colour}">{_e(status)}</span>'


def _hover(*lines: str) -> str:
    """A plotly hover label: escaped lines (plotly.js decodes the entities), joined by <br>."""
    return "<br>".join(html.escape(line) for line in lines)


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(fig: Any, height: int) -> str:
    import plotly.io as pio

    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50}, template="plotly_white")
    return pio.to_html(
        fig, full_html=False, include_plotlyjs=False, default_width="100%", default_height=f"{height}px",
        config={"displaylogo": False, "responsive": True},
    )


# -- sections ---------------------------------------------------------------------------------
def _overview(d: _Data) -> str:
    intent = d.intent
    settings = scrub_secrets(intent.settings or {})  # a database written before secrets were dropped
    summary = intent.summary or {}
    counts: dict[str, int] = {}
    for row in d.candidates:
        if row.round > 0:
            counts[row.status] = counts.get(row.status, 0) + 1
    start, end = _utc(intent.created_at), _utc(intent.finished_at)
    wall = (end - start).total_seconds() if start and end else None
    done = [t for t in d.trainings if t.status == "done" and t.cost_s is not None]
    compute = sum(t.cost_s for t in done) if done else None  # type: ignore[misc]
    if d.lineage:
        champion_id = d.lineage[-1].candidate_id
        champion = f"#{champion_id} {_e(d.description.get(champion_id, '?'))}"
    elif summary.get("champion"):
        champion = _e(summary["champion"])
    else:
        champion = "none yet"
    rounds = max((row.round for row in d.candidates), default=0)
    verdicts = " ".join(f"{_status(status)} {n}" for status, n in sorted(counts.items())) or "no candidates yet"
    facts = [
        ("objective", _e(intent.objective)),
        ("ensemble size M", _e(intent.ensemble_size)),
        ("proposer", _e(intent.proposer)),
        ("seed", _e(intent.seed)),
        ("data set", _e(settings.get("dataset", "—"))),
        ("status", _status(intent.status)),
        ("started", _when(intent.created_at)),
        ("finished", _when(intent.finished_at)),
        ("wall time", _duration(wall)),
        ("training compute", f"{_duration(compute)} over {len(done)} trainings"),
        ("rounds", _e(rounds)),
        ("verdicts (rounds ≥ 1)", verdicts),
        ("champion", champion),
        ("promotions", _e(max(len(d.lineage) - 1, 0))),
    ]
    for key in ("level", "margin", "gate_level", "bootstrap", "budget_s", "candidates"):
        if key in settings:
            facts.append((key, "none" if settings[key] is None else _e(settings[key])))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    dump = _e(json.dumps(settings, indent=2, sort_keys=True, default=str))
    return (
        f'<p class="intent-text">{_e(intent.text)}</p>'
        f'<table class="facts">{rows}</table>'
        f"<details><summary>all settings</summary><pre>{dump}</pre></details>"
    )


def _predicted_brier(d: _Data) -> dict[int, float]:
    """Each candidate's predicted M-ensemble valid Brier (EnsNAS, from its two learners)."""
    out: dict[int, float] = {}
    for comp in d.comparisons:
        if comp.split != "valid":
            continue
        out.setdefault(comp.incumbent_id, comp.predicted_incumbent)
        out[comp.candidate_id] = comp.predicted_candidate
    return out


def _member_auc(d: _Data) -> dict[int, float]:
    """Mean valid AUC of each candidate's dual learners (not the ensemble's AUC)."""
    values: dict[int, list[float]] = {}
    for t in d.trainings:
        auc = (t.metrics or {}).get("valid", {}).get("auc")
        if t.role == "member" and t.status == "done" and auc is not None:
            values.setdefault(t.candidate_id, []).append(float(auc))
    return {cid: sum(v) / len(v) for cid, v in values.items()}


def _trajectory(d: _Data) -> str:
    if not d.lineage:
        return _note("No incumbent recorded yet.")
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    predicted = _predicted_brier(d)
    member_auc = _member_auc(d)
    last_round = max((row.round for row in d.candidates), default=0)
    times = [_utc(d.decided_at.get(row.id, row.created_at)) for row in d.candidates]
    end_time = _utc(d.intent.finished_at) or max((t for t in times if t), default=_utc(d.lineage[-1].since))

    champ_rounds = [c.round for c in d.lineage] + [max(last_round, d.lineage[-1].round)]
    champ_times = [_plot_time(c.since) for c in d.lineage] + [_plot_time(max(end_time, _utc(d.lineage[-1].since)))]  # type: ignore[type-var]
    champ_marker = [9] * len(d.lineage) + [0]  # the last point only carries the step to the end

    def extend(values: list[Any]) -> list[Any]:
        return [*values, values[-1]]

    measured_brier = extend([(c.metrics or {}).get("valid", {}).get("brier") for c in d.lineage])
    measured_auc = extend([(c.metrics or {}).get("valid", {}).get("auc") for c in d.lineage])
    predicted_line = extend([predicted.get(c.candidate_id) for c in d.lineage])
    champ_hover = extend([
        _hover(f"champion #{c.candidate_id} (since round {c.round})", d.description.get(c.candidate_id, ""))
        for c in d.lineage
    ])

    others = [row for row in d.candidates if row.round > 0]
    cand_rounds = [row.round for row in others]
    cand_times = [_plot_time(d.decided_at.get(row.id, row.created_at)) for row in others]
    cand_hover = [
        _hover(f"#{row.id} round {row.round}: {row.status}", d.description[row.id],
               _shorten(d.reason.get(row.id, "")))
        for row in others
    ]
    cand_brier = [predicted.get(row.id) for row in others]
    cand_auc = [member_auc.get(row.id) for row in others]

    fig = make_subplots(
        rows=2, cols=2, shared_xaxes="columns", vertical_spacing=0.1, horizontal_spacing=0.08,
        subplot_titles=("valid Brier by round", "valid Brier over time", "valid AUC by round", "valid AUC over time"),
    )
    for col, xs, cand_xs in ((1, champ_rounds, cand_rounds), (2, champ_times, cand_times)):
        legend = col == 1
        traces = [
            (1, go.Scatter(x=cand_xs, y=cand_brier, mode="markers", name="candidate: predicted M-ensemble Brier",
                           legendgroup="cb", showlegend=legend, text=cand_hover, hoverinfo="text+y",
                           marker={"color": "#90a4ae", "size": 8, "opacity": 0.45})),
            (1, go.Scatter(x=xs, y=measured_brier, mode="lines+markers", line_shape="hv",
                           name="incumbent: measured 2-ensemble Brier", legendgroup="mb", showlegend=legend,
                           text=champ_hover, hoverinfo="text+y", line={"color": "#2e7d32", "width": 3},
                           marker={"size": champ_marker})),
            (1, go.Scatter(x=xs, y=predicted_line, mode="lines+markers", line_shape="hv",
                           name=f"incumbent: predicted M={d.intent.ensemble_size} ensemble Brier (EnsNAS)",
                           legendgroup="pb", showlegend=legend, text=champ_hover, hoverinfo="text+y",
                           line={"color": "#1565c0", "width": 2, "dash": "dash"},
                           marker={"size": champ_marker})),
            (2, go.Scatter(x=cand_xs, y=cand_auc, mode="markers", name="candidate: mean member AUC (2 learners)",
                           legendgroup="ca", showlegend=legend, text=cand_hover, hoverinfo="text+y",
                           marker={"color": "#bcaaa4", "size": 8, "opacity": 0.5})),
            (2, go.Scatter(x=xs, y=measured_auc, mode="lines+markers", line_shape="hv",
                           name="incumbent: measured 2-ensemble AUC", legendgroup="ma", showlegend=legend,
                           text=champ_hover, hoverinfo="text+y", line={"color": "#6a1b9a", "width": 3},
                           marker={"size": champ_marker})),
        ]
        for row, trace in traces:
            fig.add_trace(trace, row=row, col=col)
    fig.update_xaxes(title_text="round", dtick=1, row=2, col=1)
    fig.update_xaxes(title_text="time (UTC)", row=2, col=2)
    fig.update_yaxes(title_text="Brier (lower is better)", row=1, col=1)
    fig.update_yaxes(title_text="AUC (higher is better)", row=2, col=1)
    fig.update_layout(legend={"orientation": "h", "y": -0.12})
    caption = (
        "Solid step lines: the incumbent's measured valid metrics (its two dual learners averaged) from each "
        "promotion on. Dashed: the EnsNAS prediction of the M-ensemble's valid Brier. Faint points: every "
        "trained candidate, at the round (left) or the time of its last verdict (right): in the Brier panels its "
        "predicted M-ensemble Brier, in the AUC panels the mean valid AUC of its two learners (a per-learner "
        "AUC, not an ensemble's)."
    )
    return _figure(fig, 720) + _note(caption)


def _gains(d: _Data) -> str:
    import plotly.graph_objects as go

    rows = [row for row in d.candidates if row.id in d.valid]
    missing = [row for row in d.candidates if row.id not in d.valid and row.round > 0]
    parts = []
    if rows:
        fig = go.Figure()
        for status in sorted({row.status for row in rows}):
            group = [row for row in rows if row.status == status]
            fig.add_trace(go.Scatter(
                x=[d.valid[row.id].gain_accuracy for row in group],
                y=[d.valid[row.id].gain_diversity for row in group],
                mode="markers", name=status,
                marker={"color": STATUS_COLOURS.get(status, "#607d8b"), "size": 11, "line": {"width": 1, "color": "#fff"}},
                text=[
                    _hover(f"#{row.id} round {row.round}: {row.status}", d.description[row.id],
                           f"improvement {d.valid[row.id].improvement:+.3e}", _shorten(d.reason.get(row.id, "")))
                    for row in group
                ],
                hoverinfo="text",
            ))
        xs = [d.valid[row.id].gain_accuracy for row in rows] + [-d.valid[row.id].gain_diversity for row in rows]
        span = max(max(abs(x) for x in xs), 1e-12) * 1.15
        fig.add_trace(go.Scatter(x=[-span, span], y=[span, -span], mode="lines", name="G_acc + G_div = 0",
                                 line={"color": "#424242", "dash": "dot"}, hoverinfo="skip"))
        fig.update_xaxes(title_text="accuracy gain G_acc (valid)", zeroline=True)
        fig.update_yaxes(title_text="diversity gain G_div (valid)", zeroline=True)
        parts.append(_figure(fig, 520))
        parts.append(_note(
            "EnsNAS on the valid split against the incumbent of the candidate's round. Above and right of the "
            "dotted line the predicted M-ensemble Brier improves (G_acc + G_div > 0); acceptance also needs the "
            "bootstrap lower bound above the margin."
        ))
    else:
        parts.append(_note("No candidate has an EnsNAS comparison yet."))
    if missing:
        listed = ", ".join(f"#{row.id} ({_e(row.status)})" for row in missing)
        parts.append(_note(f"Without a comparison (never trained or not trained yet): {listed}."))
    return "".join(parts)


def _lineage(d: _Data) -> str:
    if not d.lineage:
        return _note("No incumbent recorded yet.")
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
        gain = "starting incumbent" if comp is None else f"predicted gain {comp.improvement:+.2e}"
        boxes.append(
            f'<div class="node"><b>{label}: #{champ.candidate_id}</b><br>round {champ.round}<br>'
            f"{_e(d.description.get(champ.candidate_id, '?'))}<br><small>{_e(gain)}</small></div>"
        )
        gate_text = "—"
        if gate is not None:
            details = gate.details or {}
            gate_text = (
                f"{_e(details.get('objective', ''))} {_gain(details.get('gain'))} "
                f"(bound {_gain(details.get('bound'))})"
            )
        rows.append([
            _e(champ.sequence),
            _e(champ.round),
            f"#{champ.candidate_id}",
            _e(d.description.get(champ.candidate_id, "?")),
            _e(row.mutation if row else None) or "—",
            _e(row.rationale if row else ""),
            _gain(comp.improvement) if comp else "—",
            f"{_gain(comp.ci_low)} … {_gain(comp.ci_high)}" if comp else "—",
            _gain(comp.gain_accuracy) if comp else "—",
            _gain(comp.gain_diversity) if comp else "—",
            gate_text,
            f"{_metric(valid_now.get('brier'))} ({_gain(brier_change)})" if brier_change is not None
            else _metric(valid_now.get("brier")),
            f"{_metric(valid_now.get('auc'))} ({_gain(auc_change)})" if auc_change is not None
            else _metric(valid_now.get("auc")),
            _when(champ.since),
        ])
        previous = champ
    chain = '<div class="chain">' + '<span class="arrow">→</span>'.join(boxes) + "</div>"
    headers = ["#", "round", "candidate", "description", "mutation", "rationale", "predicted M-ens gain (valid)",
               "CI", "G_acc", "G_div", "gate gain (2-ens)", "valid Brier (Δ)", "valid AUC (Δ)", "since"]
    return chain + _table(headers, rows, "wide")


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


def _audits(d: _Data) -> str:
    if not d.audits:
        return _note(_e(NO_AUDIT_NOTE))
    import plotly.graph_objects as go

    fig = go.Figure()
    symbols = {"valid": "circle", "gate": "diamond"}
    roles = sorted({(a.details or {}).get("role", "candidate") for a in d.audits})
    for role in roles:
        for split in sorted({a.split for a in d.audits}):
            group = [a for a in d.audits if (a.details or {}).get("role", "candidate") == role and a.split == split]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[a.predicted for a in group], y=[a.measured for a in group], mode="markers",
                name=f"{role}, {split}",
                marker={"size": 11, "symbol": symbols.get(split, "square"),
                        "color": "#2e7d32" if role == "candidate" else "#1565c0"},
                text=[_hover(f"#{a.candidate_id} ({role}) {split}, M={a.ensemble_size}",
                             d.description.get(a.candidate_id, "")) for a in group],
                hoverinfo="text+x+y",
            ))
    values = [a.predicted for a in d.audits] + [a.measured for a in d.audits]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.01 or 1e-6
    fig.add_trace(go.Scatter(x=[low - pad, high + pad], y=[low - pad, high + pad], mode="lines", name="y = x",
                             line={"color": "#424242", "dash": "dot"}, hoverinfo="skip"))
    fig.update_xaxes(title_text="predicted M-ensemble Brier (EnsNAS, 2 learners)")
    fig.update_yaxes(title_text="measured Brier of the real M-ensemble")

    records = _audit_records(d.audits)
    rows = []
    agree = known = 0
    for rec in records:
        cand: Audit | None = rec.get("candidate")
        inc: Audit | None = rec.get("incumbent")
        verdict = rec["details"].get("verdict_agrees")
        if verdict is not None:
            known += 1
            agree += bool(verdict)
        rows.append([
            _e(rec["split"]), _e(rec["m"]),
            f"#{cand.candidate_id}" if cand else "—", f"#{inc.candidate_id}" if inc else "—",
            _metric(cand.predicted if cand else None), _metric(cand.measured if cand else None),
            _metric(inc.predicted if inc else None), _metric(inc.measured if inc else None),
            _gain(rec["details"].get("predicted_improvement")), _gain(rec["details"].get("measured_improvement")),
            "—" if verdict is None else ('<span class="yes">✓ agrees</span>' if verdict
                                        else '<span class="no">✗ disagrees</span>'),
            _when(rec["when"]),
        ])
    errors = [abs(a.predicted - a.measured) for a in d.audits]
    relative = [abs(a.predicted - a.measured) / abs(a.measured) for a in d.audits if a.measured]
    summary = (
        f"The predicted verdict (candidate better than incumbent or not) agrees with the measured one in "
        f"<b>{agree} of {known}</b> audit records. Mean |predicted − measured| Brier: "
        f"{sum(errors) / len(errors):.2e}"
        + (f" ({100 * sum(relative) / len(relative):.2f}% of the measured)." if relative else ".")
    )
    headers = ["split", "M", "candidate", "incumbent", "cand predicted", "cand measured", "inc predicted",
               "inc measured", "predicted gain", "measured gain", "verdict", "when"]
    return _figure(fig, 480) + f"<p>{summary}</p>" + _table(headers, rows)


def _final(d: _Data) -> str:
    final = (d.intent.summary or {}).get("final") or {}
    seed, champion = final.get("seed") or {}, final.get("champion") or {}
    if not seed and not champion:
        return _note(_e(NO_FINAL_NOTE))
    metrics = [m for m in ("auc", "logloss", "brier") if m in seed or m in champion]
    metrics += sorted(k for k in {*seed, *champion} if k not in metrics)
    rows = []
    for name in metrics:
        a, b = seed.get(name), champion.get(name)
        delta = b - a if a is not None and b is not None else None
        relative = f"{100 * delta / abs(a):+.2f}%" if delta is not None and a else "—"
        higher = _DIRECTIONS.get(name)
        if delta is None or higher is None or delta == 0:
            verdict = "—"
        elif (delta > 0) == higher:
            verdict = '<span class="yes">better</span>'
        else:
            verdict = '<span class="no">worse</span>'
        rows.append([_e(name), _metric(a), _metric(b), _gain(delta), relative, verdict])
    caption = (
        "Test-split metrics of the 2-learner ensembles (the dual learners averaged) of the seed incumbent and "
        "the final champion; the test split was read by nothing else."
    )
    headers = ["metric", "seed", "champion", "Δ (champion − seed)", "relative", "champion is"]
    return _table(headers, rows, "final") + _note(caption)


def _candidates(d: _Data) -> str:
    rows = []
    for row in d.candidates:
        comp = d.valid.get(row.id)
        rows.append([
            _e(row.round), f"#{row.id}", _e(row.proposer), _e(row.mutation) or "—",
            _e(d.description[row.id]), _status(row.status),
            _gain(comp.gain_accuracy) if comp else "—", _gain(comp.gain_diversity) if comp else "—",
            _gain(comp.improvement) if comp else "—", _gain(comp.ci_low) if comp else "—",
            _int(row.parameters), "—" if row.latency_ms is None else f"{row.latency_ms:.2f}",
            _e(d.reason.get(row.id, "")), _e(row.rationale),
        ])
    headers = ["round", "id", "proposer", "mutation", "description", "status", "G_acc", "G_div", "improvement",
               "CI low", "parameters", "latency ms/1000 rows", "reason", "rationale"]
    table = _table(headers, rows, "wide") if rows else _note("No candidates recorded.")
    if d.lessons:
        items = "".join(
            f'<li><span class="scope">{_e(lesson.scope)}</span>'
            + (f" #{lesson.candidate_id}" if lesson.candidate_id is not None else "")
            + f" {_e(lesson.text)}</li>"
            for lesson in d.lessons
        )
        lessons = f"<h3>Lessons ({len(d.lessons)})</h3><ol class=\"lessons\">{items}</ol>"
    else:
        lessons = "<h3>Lessons</h3>" + _note("No lessons recorded.")
    return table + lessons


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1500px;padding:0 24px 60px;
color:#212121;line-height:1.45}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #e0e0e0;padding-bottom:4px;margin-top:40px}
nav a{margin-right:14px;font-size:14px}
table{border-collapse:collapse;margin:12px 0;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f5f5f5;position:sticky;top:0}
table.facts th{background:#fafafa;width:180px}
table.wide td{max-width:420px;overflow-wrap:anywhere}
.badge{color:#fff;border-radius:4px;padding:1px 6px;font-size:12px;white-space:nowrap}
.note{color:#616161;font-size:13px;font-style:italic}
.intent-text{font-size:18px}
.chain{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin:12px 0}
.chain .node{border:2px solid #2e7d32;border-radius:8px;padding:6px 10px;font-size:13px;background:#f1f8e9;max-width:260px}
.chain .arrow{font-size:24px;color:#2e7d32}
.yes{color:#2e7d32;font-weight:600}.no{color:#c62828;font-weight:600}
.scope{background:#eceff1;border-radius:4px;padding:0 5px;font-size:12px}
pre{background:#fafafa;padding:8px;font-size:12px;overflow:auto}
"""


def render(d: _Data) -> str:
    import plotly.offline

    sections = {
        "overview": _overview(d),
        "trajectory": _trajectory(d),
        "gains": _gains(d),
        "lineage": _lineage(d),
        "audits": _audits(d),
        "final": _final(d),
        "candidates": _candidates(d),
    }
    nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in SECTION_TITLES.items())
    body = "".join(
        f'<section id="{key}"><h2>{_e(SECTION_TITLES[key])}</h2>{content}</section>' for key, content in sections.items()
    )
    title = f"Evolution report — intent #{d.intent.id}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>'
        f"<h1>{_e(title)}</h1><p class=\"note\">generated {_when(datetime.now(UTC))} from the knowledge "
        f"layer</p><nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(store: KnowledgeStore, intent_id: int, out: str | Path) -> Path:
    """Write the intent's report to `out` (one self-contained HTML file, replaced atomically)."""
    page = render(_read(store, intent_id))
    path = Path(out)
    with atomic_write(path, "wb") as handle:
        os.fchmod(handle.fileno(), 0o644)  # the temp file is private (0600); a report is for reading
        handle.write(page.encode("utf-8"))
    return path
