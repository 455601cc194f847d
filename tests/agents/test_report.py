"""The HTML report: one self-contained file from a hand-made knowledge database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import CandidateRow
from agenticrs.agents.report import (
    NO_AUDIT_NOTE,
    NO_FINAL_NOTE,
    SECTION_TITLES,
    write_report,
)
from knowledge_rows import comparison

MALICIOUS = '<script>alert("pwned")</script>'
MALICIOUS_LESSON = "<img src=x onerror=alert(1)>"

CONFIGS = {
    "seed": Candidate(model="lr", learning_rate=0.003),
    "promoted": Candidate(model="lr", learning_rate=0.006),
    "rejected": Candidate(model="lr", learning_rate=0.003, feature_bagging=0.9),
    "invalid": Candidate(model="dnn", hidden_units=[4096, 4096]),
    "gate_failed": Candidate(model="fm", embedding_dim=16, learning_rate=0.002),
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KnowledgeStore]:
    store = KnowledgeStore(f"sqlite:///{tmp_path / 'knowledge.db'}")
    try:
        yield store
    finally:
        store.close()




def metrics(auc: float, brier: float) -> dict[str, dict[str, float]]:
    return {split: {"auc": auc, "logloss": 0.23, "brier": brier} for split in ("valid", "gate")}


def build_intent(store: KnowledgeStore, complete: bool = True) -> tuple[int, dict[str, int]]:
    """seed + promoted + rejected + invalid + gate_failed; with audits and a final summary if `complete`."""
    with store.transaction() as tx:
        snapshot = tx.snapshot("sim-tiny", f"fp-{complete}", {"train": 100, "valid": 20, "gate": 20, "test": 20})
        intent = tx.create_intent(
            snapshot_id=snapshot.id, text="improve auc on sim-tiny (M=8 ensemble)", objective="auc",
            proposer="llm", seed=3, ensemble_size=8,
            settings={"dataset": "sim-tiny", "level": 0.9, "margin": 0.0, "gate_level": 0.8, "budget_s": None},
        )
        intent_id = intent.id
        ids: dict[str, int] = {}
        spec = {
            "seed": (0, "seed", None, "the starting incumbent", "promoted"),
            "promoted": (1, "llm", "learning_rate", f"raise the learning rate {MALICIOUS}", "promoted"),
            "rejected": (2, "llm", "feature_bagging", "bag the fields for diversity", "rejected"),
            "invalid": (3, "llm", "model_family", "a much wider net", "invalid"),
            "gate_failed": (4, "builtin (fallback)", "model_family", "try a factorisation machine", "gate_failed"),
        }
        for name, (round_, proposer, mutation, rationale, status) in spec.items():
            candidate = CONFIGS[name]
            row, _ = tx.add_candidate(
                intent_id, candidate.config_hash(), round=round_, config=candidate.canonical().model_dump(mode="json"),
                proposer=proposer, mutation=mutation, rationale=rationale, status=status,
                parent_id=ids.get("seed") if round_ == 1 else ids.get("promoted"),
                parameters=1715 * (round_ + 1), latency_ms=0.5 + round_,
            )
            ids[name] = row.id
            if name != "invalid":
                for seed, auc in ((11, 0.62 + 0.01 * round_), (12, 0.63 + 0.01 * round_)):
                    training = tx.start_training(row.id, "member", seed)
                    tx.finish_training(training.id, metrics(auc, 0.058), cost_s=1.5, epochs=3)

        seed_id, promoted_id = ids["seed"], ids["promoted"]
        tx.record_decision(seed_id, "seed", True, "starting incumbent")
        tx.promote(intent_id, seed_id, 0, metrics(0.626, 0.0583))

        tx.record_comparison(promoted_id, "valid", **comparison(seed_id, 0.0011, 0.00004, 0.05712, 0.05826))
        tx.record_comparison(promoted_id, "gate", **comparison(seed_id, 0.0010, 0.00004, 0.05770, 0.05876))
        tx.record_decision(promoted_id, "ensnas", True, "accepted: accuracy gain 0.0011 and diversity gain 4e-05")
        tx.record_decision(promoted_id, "gate", True, "promoted: gate auc gain +0.03450",
                           {"objective": "auc", "gain": 0.0345, "bound": 0.0297, "level": 0.8})
        tx.promote(intent_id, promoted_id, 1, metrics(0.657, 0.0571))

        rejected_id = ids["rejected"]
        tx.record_comparison(rejected_id, "valid", **comparison(promoted_id, -0.00126, 0.00025, 0.0582, 0.05712))
        tx.record_decision(rejected_id, "ensnas", False, "rejected: accuracy loss too large for the diversity gained")
        tx.add_lesson("acceptance", "feature bagging at 0.9 loses accuracy", intent_id, rejected_id)

        tx.record_decision(ids["invalid"], "validation", False, "too many parameters (33,000,000 > 20,000,000)")
        tx.add_lesson("validation", f"wide nets are too big {MALICIOUS_LESSON}", intent_id, ids["invalid"])

        gate_failed_id = ids["gate_failed"]
        tx.record_comparison(gate_failed_id, "valid", **comparison(promoted_id, 0.0003, 0.0002, 0.0566, 0.05712))
        tx.record_comparison(gate_failed_id, "gate", **comparison(promoted_id, -0.0001, 0.0001, 0.0578, 0.05770))
        tx.record_decision(gate_failed_id, "ensnas", True, "accepted: accuracy gain 0.0003 and diversity gain 0.0002")
        tx.record_decision(gate_failed_id, "gate", False, "held back: gate auc gain -0.00100",
                           {"objective": "auc", "gain": -0.001, "bound": -0.004, "level": 0.8})
        tx.add_lesson("gate", "the factorisation machine did not hold on the gate", intent_id, gate_failed_id)

        if complete:
            record = {
                "split": "valid", "m": 8, "candidate_predicted": 0.0571234, "candidate_measured": 0.0569876,
                "incumbent_predicted": 0.0582611, "incumbent_measured": 0.0580432,
                "predicted_improvement": 0.0011377, "measured_improvement": 0.0010556, "verdict_agrees": True,
            }
            for role, cid, predicted, measured in (
                ("candidate", promoted_id, 0.0571234, 0.0569876),
                ("incumbent", seed_id, 0.0582611, 0.0580432),
            ):
                tx.add_audit(intent_id=intent_id, candidate_id=cid, split="valid", ensemble_size=8,
                             predicted=predicted, measured=measured, details={**record, "role": role})
            final = {"seed": {"auc": 0.61, "logloss": 0.2123, "brier": 0.0502},
                     "champion": {"auc": 0.63, "logloss": 0.1987, "brier": 0.0483}}
            tx.finish_intent(intent_id, {
                "intent_id": intent_id, "rounds": 4, "champion_id": promoted_id,
                "champion": CONFIGS["promoted"].describe(),
                "counts": {"promoted": 1, "rejected": 1, "invalid": 1, "gate_failed": 1}, "final": final,
            })
    return intent_id, ids


def test_report_renders_every_section(store: KnowledgeStore, tmp_path: Path) -> None:
    intent_id, ids = build_intent(store)
    out = tmp_path / "reports" / "nested" / "report.html"
    path = write_report(store, intent_id, out)
    assert path == out and path.is_file()
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # one file, no temporary left behind

    text = path.read_text(encoding="utf-8")
    assert re.search(r"<script[^>]*\ssrc\s*=", text, re.IGNORECASE) is None  # self-contained: nothing fetched
    assert re.search(r"<link[^>]*https?://", text, re.IGNORECASE) is None
    assert "<script" not in text and len(text) < 200_000  # inline SVG charts, no multi-MB plotly bundle
    assert text.count('<svg class="chart"') == 4  # trajectory (Brier, AUC), gains, audits
    assert '<meta name="viewport"' in text
    # the headline (champion and its result in one line) comes before every section
    top = text.split("<section", 1)[0]
    assert f"Champion #{ids['promoted']}</b> {CONFIGS['promoted'].describe()}" in top
    assert "valid auc 0.65700" in top and "test auc 0.63000 (+2.000e-02 vs seed)" in top
    for title in SECTION_TITLES.values():
        assert f"<h2>{title}</h2>" in text

    # header
    assert "improve auc on sim-tiny (M=8 ensemble)" in text
    assert "<th>ensemble size M</th><td>8</td>" in text
    assert "<th>proposer</th><td>llm</td>" in text
    assert f"#{ids['promoted']} {CONFIGS['promoted'].describe()}" in text  # the champion
    # every candidate with its description and status
    for name, cid in ids.items():
        assert f"<td>#{cid}</td>" in text
        assert CONFIGS[name].describe() in text
    for status in ("promoted", "rejected", "invalid", "gate_failed"):
        assert f">{status}</span>" in text
    assert "G_acc + G_div = 0" in text
    assert "too many parameters (33,000,000 &gt; 20,000,000)" in text  # the invalid one's reason

    # DB text is escaped: the LLM's script and the lesson's img tag never appear raw
    assert MALICIOUS not in text
    assert MALICIOUS_LESSON not in text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text

    # lineage: seed -> promoted, with the mutation and the gate gain
    assert "learning_rate" in text and "auc +3.450e-02 (bound +2.970e-02)" in text
    # the audit's numbers and its verdict
    for number in ("0.05712", "0.05699", "0.05826", "0.05804", "+1.138e-03", "+1.056e-03"):
        assert number in text
    assert "<b>1 of 1</b>" in text and "✓ agrees" in text
    assert NO_AUDIT_NOTE not in text
    # the test-split table: seed vs champion with deltas
    final = text.split('<table class="final">', 1)[1].split("</table>", 1)[0]
    assert "<td>auc</td><td>0.61000</td><td>0.63000</td><td>+2.000e-02</td>" in final
    assert "<td>brier</td><td>0.05020</td><td>0.04830</td><td>-1.900e-03</td>" in final
    assert final.count("better") == 3
    # lessons
    assert "feature bagging at 0.9 loses accuracy" in text
    assert "the factorisation machine did not hold on the gate" in text

    # rewriting replaces the file atomically
    write_report(store, intent_id, out)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def test_report_without_audits_or_final(store: KnowledgeStore, tmp_path: Path) -> None:
    intent_id, ids = build_intent(store, complete=False)
    text = write_report(store, intent_id, tmp_path / "partial.html").read_text(encoding="utf-8")
    assert NO_AUDIT_NOTE in text  # html.escape leaves the backticks alone
    assert "run `agenticrs audit`" in text
    assert NO_FINAL_NOTE in text
    assert '<table class="final">' not in text
    for title in SECTION_TITLES.values():
        assert f"<h2>{title}</h2>" in text
    assert f"#{ids['gate_failed']}" in text

    # an intent that has nothing yet (no incumbent, no candidates) still renders
    with store.transaction() as tx:
        snapshot = tx.snapshot("sim-tiny", "fp-empty", {"train": 1})
        empty = tx.create_intent(snapshot_id=snapshot.id, text="fresh", objective="auc", proposer="builtin",
                                 seed=0, ensemble_size=4).id
        assert tx.candidates(empty) == []
        assert tx.get(CandidateRow, ids["seed"]).intent_id == intent_id
    text = write_report(store, empty, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "No incumbent recorded yet." in text
    assert "No candidates recorded." in text
    assert NO_AUDIT_NOTE in text and NO_FINAL_NOTE in text
