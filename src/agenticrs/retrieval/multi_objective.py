"""Multi-objective embedding-based retrieval: one user vector per cascade objective, one item space.

`MultiObjectiveRetriever` is the contract CSMF (`csmf.py`) and the shared-bottom multi-head
two-tower below share with the cascade task (`cascade_train.py`): `prepare_data` (log q per
objective, attribute bags), `user_vectors(batch, objective)`, `item_vectors()`, `loss(batch)`
for the objective(s) being trained, and the serving-time fusion `fused_user_vectors(batch,
weights)`: score(u, i) = sum_o w_o <u_o, i> = <sum_o w_o u_o, i>, one query vector of `out_dim`
against one item index, whatever the weights (set per scenario, no retraining).

The baseline, `multihead_two_tower`: the user tower is a shared bottom whose features feed one
linear head per objective; the item tower is shared; every step takes one batch of each
objective's positives and sums their in-batch softmax losses. Its vectors have CSMF's size.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from agenticrs.models.base import register
from agenticrs.retrieval.cascade import OBJECTIVES, CascadeData
from agenticrs.retrieval.towers import ItemTower, TowerConfig, UserTower
from agenticrs.retrieval.two_tower import in_batch_softmax_loss

Batch = dict[str, torch.Tensor]


class FusionConfig(TowerConfig):
    fusion: dict[str, list[float]] = Field(
        default_factory=lambda: {"default": [0.2, 0.3, 0.5]},
        description="serving-time weights of the exposure, click and conversion scores per scenario "
                    "('default' for any other scenario)",
    )  # fmt: skip

    @field_validator("fusion")
    @classmethod
    def _weights(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        if "default" not in value:
            raise ValueError("fusion needs a 'default' entry (the weights of any scenario not listed)")
        for scenario, weights in value.items():
            if len(weights) != len(OBJECTIVES) or any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"fusion[{scenario!r}] must be {len(OBJECTIVES)} non-negative weights "
                                 f"({', '.join(OBJECTIVES)}) with a positive sum, got {weights}")  # fmt: skip
        return value


class MultiObjectiveRetriever(nn.Module):
    """Base of the multi-objective retrievers (see the module docstring)."""

    name: ClassVar[str] = ""
    task: ClassVar[str] = "multi_objective_retrieval"
    paper: ClassVar[str] = ""
    needs: ClassVar[str] = "impressions with exposure / click / purchase levels and histories"
    train_defaults: ClassVar[dict] = {}  # the task's own defaults (`CascadeTrainConfig`) suit both models
    Config: ClassVar[type[FusionConfig]] = FusionConfig

    def __init__(self, num_items: int, config: FusionConfig) -> None:
        super().__init__()
        self.num_items, self.config = num_items, config
        self.item_tower = ItemTower(num_items, config)
        self.register_buffer("log_q", torch.zeros(len(OBJECTIVES), num_items + 1))

    # -- data the model is built around ---------------------------------------------------------
    def prepare_data(self, data: CascadeData) -> None:
        """log q of each objective's training positives; the catalogue's attribute bags."""
        counts = torch.from_numpy(data.positive_counts()).to(torch.float64).clamp_min(1.0)
        self.log_q.copy_(torch.log(counts / counts.sum(1, keepdim=True)).to(self.log_q.dtype))
        attrs = data.attribute_matrix(self.config.max_attributes, self.config.attribute_buckets)
        self.item_tower.set_attributes(torch.from_numpy(attrs).to(self.log_q.device))

    # -- vectors -----------------------------------------------------------------------------------
    def user_vectors(self, batch: Batch, objective: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    shared_item_space: bool = True  # one item vector per item for every objective (one index, exact fusion)

    def item_vectors(self, items: torch.Tensor | None = None, objective: int | None = None) -> torch.Tensor:
        """(N, out_dim) item vectors (every id 0..num_items by default). Every objective shares them
        unless `shared_item_space` is False (CSMF's staged item tower, a diagnostic)."""
        return self.item_tower(items)

    def fusion_weights(self, scenarios: list[str], scenario: torch.Tensor) -> torch.Tensor:
        """(B, objectives) the configured weights of each row's scenario (codes into `scenarios`)."""
        table = torch.tensor([self.config.fusion.get(s, self.config.fusion["default"]) for s in scenarios]
                             or [self.config.fusion["default"]], dtype=torch.float32)  # fmt: skip
        return table.to(scenario.device)[scenario]

    def fused_user_vectors(self, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
        """(B, out_dim) sum_o weights[:, o] * u_o: one query whose inner product with an item vector
        is the weighted sum of the objectives' scores."""
        if not self.shared_item_space:
            raise ValueError("the objectives have item spaces of their own: no single fused query vector exists")
        weights = weights.to(self.log_q.dtype)
        if weights.dim() == 1:
            weights = weights.expand(len(batch["user"]), -1)
        return sum(weights[:, o : o + 1] * self.user_vectors(batch, o) for o in range(len(OBJECTIVES)))  # type: ignore[return-value]

    def objective_loss(self, batch: Batch, objective: int, margin: torch.Tensor | None = None) -> torch.Tensor:
        """In-batch sampled softmax of the objective's positives with its own log-Q correction."""
        target = batch["target"]
        log_q = self.log_q[objective, target] if self.config.logq_correction else None
        return in_batch_softmax_loss(self.user_vectors(batch, objective), self.item_vectors(target, objective), target,
                                     self.config.temperature, log_q, margin)  # fmt: skip

    @torch.no_grad()
    def score_all(self, batch: Batch, objective: int | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(B, num_items + 1) scores of every item: one objective's, or the fusion with `weights`."""
        if objective is not None:
            scores = self.user_vectors(batch, objective) @ self.item_vectors(objective=objective).T
        elif self.shared_item_space:
            scores = self.fused_user_vectors(batch, weights) @ self.item_vectors().T
        else:  # sum_o w_o <u_o, i_o>: exact, but an index of every objective's item vectors
            w = weights.to(self.log_q.dtype).expand(len(batch["user"]), -1) if weights.dim() == 1 else weights
            scores = sum(w[:, o : o + 1] * (self.user_vectors(batch, o) @ self.item_vectors(objective=o).T)
                         for o in range(len(OBJECTIVES)))  # fmt: skip
        scores[:, 0] = float("-inf")
        return scores

    def loss(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MultiHeadConfig(FusionConfig):
    loss_weights: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0],
                                      description="weight of each objective's loss in the sum")  # fmt: skip


@register("multihead_two_tower")
class MultiHeadTwoTower(MultiObjectiveRetriever):
    """Shared-bottom user tower with one linear head per objective, shared item tower."""

    paper = "shared-bottom multi-objective EBR (the baseline of CSMF, arXiv:2504.12920)"
    Config = MultiHeadConfig
    streams = "every objective"  # each batch holds one batch of positives per objective

    def __init__(self, num_items: int, config: MultiHeadConfig) -> None:
        super().__init__(num_items, config)
        self.bottom = UserTower(num_items, config, config.hidden)
        self.heads = nn.ModuleList(nn.Linear(config.hidden, config.out_dim) for _ in OBJECTIVES)

    def user_vectors(self, batch: Batch, objective: int) -> torch.Tensor:
        features = torch.relu(self.bottom(batch["history"], batch["user"]))
        return F.normalize(self.heads[objective](features), dim=-1)

    def fused_user_vectors(self, batch: Batch, weights: torch.Tensor) -> torch.Tensor:
        """The shared bottom once, then every head."""
        weights = weights.to(self.log_q.dtype)
        if weights.dim() == 1:
            weights = weights.expand(len(batch["user"]), -1)
        features = torch.relu(self.bottom(batch["history"], batch["user"]))
        return sum(weights[:, o : o + 1] * F.normalize(head(features), dim=-1) for o, head in enumerate(self.heads))  # type: ignore[return-value]

    def loss(self, batch: Batch) -> torch.Tensor:
        """Sum over objectives of the loss on that objective's rows (`batch["objective"]`)."""
        total = torch.zeros((), device=self.log_q.device)
        for objective, weight in enumerate(self.config.loss_weights):
            rows = batch["objective"] == objective
            if weight and int(rows.sum()) > 1:
                sub = {k: v[rows] for k, v in batch.items()}
                total = total + weight * self.objective_loss(sub, objective)
        return total


class FusedQuery(nn.Module):
    """A multi-objective retriever as a single-vector retriever for one scenario's fusion weights:
    `user_vectors(batch)` is the fused query, `item_vectors()` the one item space, `recommend`
    their top k. What the retrieval pipeline, `VectorRetriever` and the ANN index take."""

    def __init__(self, model: MultiObjectiveRetriever, scenario: str = "default") -> None:
        super().__init__()
        self.model = model.eval()
        self.weights = torch.tensor(model.config.fusion.get(scenario, model.config.fusion["default"]))
        self.config = model.config
        # CSMF: one plain tower per objective with its masks applied once, not at every query
        towers = getattr(model, "objective_user_towers", None)
        self.towers = nn.ModuleList(towers()) if towers is not None and model.shared_item_space else None

    @torch.no_grad()
    def user_vectors(self, batch: Batch) -> torch.Tensor:
        if self.towers is None:
            return self.model.fused_user_vectors(batch, self.weights)
        return sum(w * F.normalize(tower(batch["history"], batch["user"]), dim=-1)
                   for w, tower in zip(self.weights.tolist(), self.towers, strict=True))  # type: ignore[return-value]

    @torch.no_grad()
    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.item_vectors(items)

    @torch.no_grad()
    def recommend(self, batch: Batch, k: int) -> torch.Tensor:
        scores = self.model.score_all(batch, weights=self.weights)
        return torch.topk(scores, min(k, scores.shape[1] - 1)).indices


def serving_cost(model: MultiObjectiveRetriever) -> dict[str, float]:
    """What serving the fused query costs: the index's vector size, the parameters, and the
    user-tower multiply-adds per query (every objective's vector is computed)."""
    params = sum(p.numel() for p in model.parameters())
    item_side = list(model.item_tower.modules())
    dense = [m for m in model.modules() if isinstance(m, nn.Linear) and m not in item_side]
    macs = float(np.sum([m.in_features * m.out_features for m in dense]))
    passes = getattr(model, "user_passes", 1)
    vector = model.config.out_dim * (1 if model.shared_item_space else len(OBJECTIVES))
    return {"vector_size": float(vector), "parameters": float(params),
            "user_tower_macs_per_query": macs * passes}  # fmt: skip
