"""Calibration audit: does the two-learner prediction of the M-ensemble error hold up?

Trains a real M-ensemble of the incumbent and of a candidate (the two dual learners are its
first members, so an audit costs M − 2 trainings per side), and records, per split, the error
EnsNAS predicted from two learners beside the Brier of the real ensemble, and whether the
predicted verdict (candidate better or not) matches the measured one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agenticrs.agents import ensnas

SPLITS = ("valid", "gate")


def audit_records(
    candidate: dict[str, np.ndarray], incumbent: dict[str, np.ndarray], labels: dict[str, np.ndarray], m: int
) -> list[dict[str, Any]]:
    """One record per split: the error EnsNAS predicts for each side's M-ensemble from its first
    two learners, the Brier of the real M-ensemble, and whether the predicted verdict matches.

    `candidate` / `incumbent`: (learners, rows) predictions per split, the two dual learners first.
    Pure arithmetic: the coordinator trains the learners and records the outcome."""
    records = []
    for split in SPLITS:
        truth = labels[split]
        pred_cand = ensnas.member_stats(candidate[split][:2], truth).ensemble_error(m)
        pred_inc = ensnas.member_stats(incumbent[split][:2], truth).ensemble_error(m)
        meas_cand = ensnas.measured_ensemble_error(candidate[split], truth)
        meas_inc = ensnas.measured_ensemble_error(incumbent[split], truth)
        records.append({
            "split": split,
            "m": m,
            "candidate_predicted": pred_cand,
            "candidate_measured": meas_cand,
            "incumbent_predicted": pred_inc,
            "incumbent_measured": meas_inc,
            "predicted_improvement": pred_inc - pred_cand,
            "measured_improvement": meas_inc - meas_cand,
            "verdict_agrees": bool((pred_inc > pred_cand) == (meas_inc > meas_cand)),
        })  # fmt: skip
    return records
