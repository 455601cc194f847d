"""Hand-built knowledge-layer rows shared by the report and dashboard tests."""

from __future__ import annotations

from typing import Any


def comparison(incumbent_id: int, g_acc: float, g_div: float, predicted: float, inc_predicted: float) -> dict[str, Any]:
    """The fields of an EnsNAS comparison row with the given gains and predictions."""
    improvement = g_acc + g_div
    return {
        "incumbent_id": incumbent_id, "ensemble_size": 8, "error": predicted + 0.001, "bias": 0.05,
        "variance": 0.004, "covariance": 0.003, "correlation": 0.7, "delta_error": -g_acc,
        "gain_accuracy": g_acc, "gain_diversity": g_div, "gain_variance_shift": 0.0,
        "predicted_candidate": predicted, "predicted_incumbent": inc_predicted, "improvement": improvement,
        "ci_low": improvement - 0.0004, "ci_high": improvement + 0.0004,
        "paper_condition": improvement > 0, "exact_condition": improvement > 0,
    }
