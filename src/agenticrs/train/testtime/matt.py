"""MATT-CTR: confidence-guided inference paths around any trained CTR model (arXiv:2510.08932).

Paper (abstract-level, `../shared/specs/matt_ctr.md`): training-free and model-agnostic; the
training frequency of a row's feature combinations (hierarchical probabilistic hashing,
`sketch.py`) is a confidence; confidences are sampling probabilities that build several
instance-specific inference paths (low-confidence features tend to be dropped); the model scores
every path and the scores are aggregated.

Our design (spec sections 3-4; every knob below is a setting):
- combination confidence conf = min(1, log(1 + ĉ_low) / log(1 + κ_o)), ĉ_low the count lower bound
  of `HierarchicalHashing.bounds`, κ_o the median heavy-hitter count of order o (or `saturation`);
- feature confidence conf_k = the mean (or min) over every combination containing field k, all orders;
- path p keeps field k with probability clip(conf_k, π_min, 1); a field with conf_k >= `always_keep`
  is always kept. With `iterative`, fields are decided in descending confidence and each field's
  confidence is re-queried from the combinations among the fields still kept (dropped partners
  no longer count);
- a dropped field gets the model's OOV (or missing) id;
- ŷ = (σ(s_full) + Σ_p α_p σ(s_p)) / (1 + Σ_p α_p), α_p = the mean confidence of the path's kept
  combinations ("confidence_weighted"), or the plain mean over the P + 1 paths ("mean").
A row whose P paths all keep every field is scored σ(s_full): with every confidence 1, MATT is the
base model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.train.testtime.paths import MASK_IDS, MaskValue, confidence, row_uniforms, sigmoid, stacked_logits
from agenticrs.train.testtime.sketch import HierarchicalHashing


class MattConfig(BaseModel):
    """MATT's settings (defaults: the spec's P = 8, π_min = 0.3, always keep conf >= 0.95)."""

    model_config = ConfigDict(extra="forbid")
    paths: int = Field(8, ge=1, le=256, description="sampled inference paths P per row (plus the full row)")
    min_keep: float = Field(0.3, ge=0.0, le=1.0, description="π_min: the smallest keep probability")
    always_keep: float = Field(0.95, ge=0.0, le=1.0, description="fields at least this confident are always kept")
    feature_reduce: Literal["mean", "min"] = "mean"
    iterative: bool = True
    aggregation: Literal["confidence_weighted", "mean"] = "confidence_weighted"
    saturation: float | None = Field(None, gt=0, description="κ; None: the median heavy-hitter count per order")
    mask_value: MaskValue = "oov"
    guidance: Literal["confidence", "uniform"] = Field(
        "confidence", description="uniform (an ablation): every field of a row gets the row's mean confidence, so "
        "paths drop as many fields but not the low-confidence ones")
    seed: int = 0


class Matt:
    """Scores blocks of rows with a trained model through confidence-guided inference paths."""

    method = "matt"

    def __init__(self, hashing: HierarchicalHashing, config: MattConfig | None = None) -> None:
        self.hashing = hashing
        self.config = config or MattConfig()
        self.incidence = {o: hashing.incidence(o) for o in hashing.orders}
        self.kappa = {o: self.config.saturation or hashing.saturation(o) for o in hashing.orders}

    # -- confidences -------------------------------------------------------------------------------
    def combination_confidences(self, categorical: np.ndarray) -> dict[int, np.ndarray]:
        """{order: (B, C_o)} confidence of each combination of each row."""
        return {o: confidence(self.hashing.bounds(categorical, o).lower, self.kappa[o]) for o in self.hashing.orders}

    def feature_confidences(self, combos: dict[int, np.ndarray]) -> np.ndarray:
        """(B, F): mean (or min) confidence of the combinations containing each field."""
        if self.config.feature_reduce == "mean":
            total = sum(conf @ self.incidence[o] for o, conf in combos.items())
            return total / sum(self.incidence[o].sum(0) for o in combos)
        out = np.ones((next(iter(combos.values())).shape[0], len(self.hashing.fields)))
        for o, conf in combos.items():
            member = self.incidence[o].T.astype(bool)  # (F, C)
            out = np.minimum(out, np.where(member[None], conf[:, None, :], 1.0).min(-1))
        return out

    # -- paths -------------------------------------------------------------------------------------
    def sample_paths(self, categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keep (B, P, F) bool, α (B, P)) for a block of rows."""
        cfg = self.config
        combos = self.combination_confidences(categorical)
        feature = self.feature_confidences(combos)
        rows, fields = feature.shape
        uniforms = row_uniforms(categorical, cfg.seed, cfg.paths)
        if cfg.guidance == "uniform":
            feature = np.repeat(feature.mean(1, keepdims=True), fields, axis=1)
        if not cfg.iterative or 2 not in combos or cfg.guidance == "uniform":
            prob = np.clip(feature, cfg.min_keep, 1.0)[:, None, :]
            keep = (uniforms < prob) | (feature >= cfg.always_keep)[:, None, :]
        else:
            keep = self._iterative(combos, feature, uniforms)
        return keep, self._path_weights(combos, keep)

    def _iterative(self, combos: dict[int, np.ndarray], feature: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Fields decided in descending confidence; a field's confidence re-queried over the
        first-order and pair combinations with the partners not dropped so far (vectorised over
        rows and paths, one step per field)."""
        cfg = self.config
        rows, fields = feature.shape
        pair = np.zeros((rows, fields, fields))
        index = np.asarray(self.hashing.combos[2])
        pair[:, index[:, 0], index[:, 1]] = combos[2]
        pair[:, index[:, 1], index[:, 0]] = combos[2]
        first = combos[1]
        alive = np.ones((rows, cfg.paths, fields))  # 1.0 = kept or not decided yet
        order = np.argsort(-feature, axis=1, kind="stable")
        row_index = np.arange(rows)
        for step in range(fields):
            k = order[:, step]  # (B,)
            weight = pair[row_index, k][:, :, None]  # (B, F, 1); the pair (k, k) is 0
            partners = alive.sum(-1) - alive[row_index, :, k]  # (B, P): partners not dropped, k excluded
            requeried = (first[row_index, k][:, None] + (alive @ weight)[..., 0]) / (1.0 + partners)
            keep_k = (uniforms[row_index, :, k] < np.clip(requeried, cfg.min_keep, 1.0)) | (requeried >= cfg.always_keep)
            alive[row_index, :, k] = keep_k
        return alive > 0.5

    def _path_weights(self, combos: dict[int, np.ndarray], keep: np.ndarray) -> np.ndarray:
        """α_p: the mean confidence of the combinations whose fields a path keeps."""
        numerator = np.zeros(keep.shape[:2])
        denominator = np.zeros(keep.shape[:2])
        keep_f = keep.astype(np.float64)
        for o, conf in combos.items():
            kept = (keep_f @ self.incidence[o].T) >= o - 0.5  # (B, P, C): every field of the combination kept
            numerator += (kept * conf[:, None, :]).sum(-1)
            denominator += kept.sum(-1)
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 0.0)

    # -- scoring -----------------------------------------------------------------------------------
    def score(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, dict[str, float]]:
        """Probabilities (B,) of a block and its counters (rows, forward rows, rows with a masked path)."""
        categorical = batch["categorical"].cpu().numpy()
        keep, alpha = self.sample_paths(categorical)
        rows = len(categorical)
        full = np.ones((rows, 1, keep.shape[2]), dtype=bool)
        logits = stacked_logits(model, batch, np.concatenate([full, keep], axis=1), MASK_IDS[self.config.mask_value])
        probs = sigmoid(logits)
        base, paths = probs[:, 0], probs[:, 1:]
        if self.config.aggregation == "mean":
            out = (base + paths.sum(1)) / (1 + paths.shape[1])
        else:
            out = (base + (alpha * paths).sum(1)) / (1.0 + alpha.sum(1))
        changed = ~keep.all(axis=(1, 2))
        out = np.where(changed, out, base)
        return out, {"rows": rows, "forward_rows": rows * (1 + keep.shape[1]), "explored": int(changed.sum()),
                     "masked_fields": float((~keep).sum())}
