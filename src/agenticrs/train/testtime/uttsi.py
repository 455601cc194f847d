"""UTTSI: uncertainty-triggered selective test-time inference around any trained CTR model
(arXiv:2605.24989, the successor of MATT-CTR).

Paper (abstract only, `../shared/specs/uttsi.md`): uncertainty combines a data-level frequency
prior (epistemic: sparse training coverage) with the model's logit confidence (aleatoric: near
the decision boundary); every row gets adaptive feature filtering (embeddings with too little
training support are dropped); only uncertain rows get stochastic feature-path exploration with
consistency-weighted ensembling; about 2.8x the base model's compute on average, the worst-case
latency unchanged.

Our design (spec section 3; every knob is a setting):
1. n_k = the count lower bound of field k's value (first order of `HierarchicalHashing`),
   φ_k = min(1, log(1 + n_k) / log(1 + κ)), κ the median first-order heavy-hitter count;
   u_e = 1 - mean_k φ_k.
2. Filtering (every row): fields with n_k < n_min get the model's OOV id; s_0 = f(x_filtered).
3. u_a = exp(-|s_0| / T_c); U = u_e · (0.5 + 0.5 u_a).
4. Explore iff U > τ; τ is the (1 - share) quantile of U on the validation split (`calibrate`),
   saved with the run. M(x) = ceil(M_max · U) paths (or M_max with `adaptive_paths` off).
5. Path m drops field k (on top of the filter) with probability q_0 · (1 - φ_k).
6. p̄ = mean_m σ(s_m); w_m = exp(-|σ(s_m) - p̄| / T_w); ŷ = (σ(s_0) + Σ w_m σ(s_m)) / (1 + Σ w_m).
Two forward passes: the filtered rows (the trigger needs s_0), then the explored rows' paths
stacked and padded to M_max in one pass. With every confidence 1 (all φ = 1 and no count below
n_min) nothing is filtered or explored: UTTSI is the base model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from agenticrs.train.testtime.paths import MASK_IDS, MaskValue, confidence, row_uniforms, sigmoid, stacked_logits
from agenticrs.train.testtime.sketch import HierarchicalHashing


class UttsiConfig(BaseModel):
    """UTTSI's settings (defaults: the spec's n_min = 5, q_0 = 0.5, T_w = 0.05, 20 % explored, M_max = 10)."""

    model_config = ConfigDict(extra="forbid")
    explore_share: float = Field(0.2, ge=0.0, le=1.0, description="target share of validation rows explored")
    threshold: float | None = Field(None, ge=0.0, description="τ; None: chosen on validation for explore_share")
    max_paths: int = Field(10, ge=1, le=256, description="M_max")
    adaptive_paths: bool = True
    min_count: int = Field(5, ge=0, description="n_min: fields with fewer training occurrences are filtered")
    drop_rate: float = Field(0.5, ge=0.0, le=1.0, description="q_0")
    logit_temperature: float = Field(1.0, gt=0, description="T_c")
    consistency_temperature: float = Field(0.05, gt=0, description="T_w")
    saturation: float | None = Field(None, gt=0, description="κ; None: the median first-order heavy-hitter count")
    mask_value: MaskValue = "oov"
    seed: int = 0


class Uttsi:
    method = "uttsi"

    def __init__(self, hashing: HierarchicalHashing, config: UttsiConfig | None = None) -> None:
        self.hashing = hashing
        self.config = config or UttsiConfig()
        self.kappa = self.config.saturation or hashing.saturation(1)
        self.threshold = self.config.threshold

    def support(self, categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n (B, F) count lower bounds, φ (B, F) frequency prior per field)."""
        counts = self.hashing.bounds(categorical, 1).lower
        return counts, confidence(counts, self.kappa)

    def base(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(filtered logit s_0 (B,), uncertainty U (B,), φ (B, F)); the filter mask is recomputed where needed."""
        categorical = batch["categorical"].cpu().numpy()
        counts, phi = self.support(categorical)
        filtered = counts >= self.config.min_count
        s0 = stacked_logits(model, batch, filtered[:, None, :], MASK_IDS[self.config.mask_value])[:, 0]
        epistemic = 1.0 - phi.mean(1)
        aleatoric = np.exp(-np.abs(s0) / self.config.logit_temperature)
        return s0, epistemic * (0.5 + 0.5 * aleatoric), phi

    def calibrate(self, uncertainty: np.ndarray) -> float:
        """τ such that about `explore_share` of these rows (validation) have U > τ."""
        if len(uncertainty) == 0:
            raise ValueError("UTTSI needs validation rows to choose its threshold (or set threshold=...)")
        share = self.config.explore_share
        self.threshold = float(np.quantile(uncertainty, 1.0 - share, method="higher")) if share < 1 else -1.0
        if share == 0:
            self.threshold = float(np.max(uncertainty))
        return self.threshold

    def score(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[np.ndarray, dict[str, float]]:
        if self.threshold is None:
            raise ValueError("UTTSI has no threshold yet: calibrate it on validation rows or set threshold=...")
        cfg = self.config
        categorical = batch["categorical"].cpu().numpy()
        s0, uncertainty, phi = self.base(model, batch)
        p0 = sigmoid(s0)
        explore = np.flatnonzero(uncertainty > self.threshold)
        rows = len(categorical)
        stats = {"rows": rows, "forward_rows": rows, "explored": len(explore), "effective_forward_rows": rows}
        if len(explore) == 0:
            return p0, stats
        counts = self.hashing.bounds(categorical[explore], 1).lower
        filtered = counts >= cfg.min_count
        n_paths = np.ones(len(explore), dtype=np.int64) * cfg.max_paths
        if cfg.adaptive_paths:
            n_paths = np.clip(np.ceil(cfg.max_paths * uncertainty[explore] - 1e-12).astype(np.int64), 1, cfg.max_paths)
        uniforms = row_uniforms(categorical[explore], cfg.seed, cfg.max_paths)
        drop = uniforms < (cfg.drop_rate * (1.0 - phi[explore]))[:, None, :]
        keep = filtered[:, None, :] & ~drop
        sub = {k: v[torch.from_numpy(explore).to(v.device)] for k, v in batch.items()}
        probs = sigmoid(stacked_logits(model, sub, keep, MASK_IDS[cfg.mask_value]))  # (E, M_max) one padded pass
        valid = np.arange(cfg.max_paths)[None, :] < n_paths[:, None]
        mean = (probs * valid).sum(1) / n_paths
        weight = np.exp(-np.abs(probs - mean[:, None]) / cfg.consistency_temperature) * valid
        out = p0.copy()
        out[explore] = (p0[explore] + (weight * probs).sum(1)) / (1.0 + weight.sum(1))
        stats["forward_rows"] = rows + len(explore) * cfg.max_paths
        stats["effective_forward_rows"] = rows + int(n_paths.sum())
        return out, stats


def explored_share(uncertainty: np.ndarray, threshold: float) -> float:
    return float(np.mean(uncertainty > threshold)) if len(uncertainty) else math.nan
