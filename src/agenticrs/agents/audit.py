"""Calibration audit: does the two-learner prediction of the M-ensemble error hold up?

Trains a real M-ensemble of the incumbent and of a candidate (the two dual learners are its
first members, so an audit costs M − 2 trainings per side), and records, per split, the error
EnsNAS predicted from two learners beside the Brier of the real ensemble, and whether the
predicted verdict (candidate better or not) matches the measured one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from agenticrs.agents import ensnas
from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge.schema import CandidateRow

if TYPE_CHECKING:
    from agenticrs.agents.coordinator import Coordinator


def ensemble_predictions(coordinator: Coordinator, candidate_id: int, m: int) -> dict[str, np.ndarray]:
    """(m, rows) predictions per split: the dual learners plus m − 2 audit learners."""
    with coordinator.store.transaction() as tx:
        candidate = Candidate.model_validate(tx.get(CandidateRow, candidate_id).config)
    members = coordinator._train_members(candidate_id, candidate)
    extra_seeds = coordinator.settings.audit_seeds(m)[2:]
    audit = coordinator._train_members(candidate_id, candidate, extra_seeds, role="audit") if extra_seeds else None
    if members is None or (extra_seeds and audit is None):
        raise RuntimeError(f"candidate {candidate_id} failed to train during the audit; see its lessons")
    if audit is None:
        return members
    return {split: np.concatenate([members[split], audit[split]]) for split in members}


def run_audit(coordinator: Coordinator, candidate_id: int, incumbent_id: int, m: int = 8) -> list[dict[str, Any]]:
    """Audit one candidate against one incumbent; returns (and records) one record per split."""
    candidate = ensemble_predictions(coordinator, candidate_id, m)
    incumbent = ensemble_predictions(coordinator, incumbent_id, m)
    records = []
    for split in ("valid", "gate"):
        labels = coordinator.labels[split]
        pred_cand = ensnas.member_stats(candidate[split][:2], labels).ensemble_error(m)
        pred_inc = ensnas.member_stats(incumbent[split][:2], labels).ensemble_error(m)
        meas_cand = ensnas.measured_ensemble_error(candidate[split], labels)
        meas_inc = ensnas.measured_ensemble_error(incumbent[split], labels)
        record = {
            "split": split,
            "m": m,
            "candidate_predicted": pred_cand,
            "candidate_measured": meas_cand,
            "incumbent_predicted": pred_inc,
            "incumbent_measured": meas_inc,
            "predicted_improvement": pred_inc - pred_cand,
            "measured_improvement": meas_inc - meas_cand,
            "verdict_agrees": bool((pred_inc > pred_cand) == (meas_inc > meas_cand)),
        }
        with coordinator.store.transaction() as tx:
            for role, cid, predicted, measured in (
                ("candidate", candidate_id, pred_cand, meas_cand),
                ("incumbent", incumbent_id, pred_inc, meas_inc),
            ):
                tx.add_audit(intent_id=coordinator.intent_id, candidate_id=cid, split=split, ensemble_size=m,
                             predicted=predicted, measured=measured, details={**record, "role": role})
        records.append(record)
    return records
