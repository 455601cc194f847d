"""CSMF: Cascaded Selective Mask Fine-Tuning for multi-objective embedding-based retrieval.

Paper: Deng et al., "CSMF: Cascaded Selective Mask Fine-Tuning for Multi-Objective
Embedding-Based Retrieval", SIGIR 2025 (arXiv:2504.12920); our notes: `shared/specs/csmf.md`.

The paper's: one two-tower network trained along the cascade exposure -> click -> conversion;
after each objective, Cumulative Percentile-based Pruning (CPP) frees, in every layer, the
smallest weights that together hold a share `prune_ratio` of the layer's L1 mass; Accuracy
Recovery (AR) retrains the kept weights on a small subset of the objective's data; they are then
frozen, and the next objective trains only the freed weights (the frozen ones still in its
forward pass). No parameter growth, no larger vector; serving fuses the objectives' scores
linearly with weights set per scenario; a cross-stage adaptive margin loss (AML) in fine-tuning.

Ours (the spec marks these as not in the sources we had):
- Ownership masks: every user-tower weight has an owner objective (or is free). The forward
  pass for objective o uses the weights owned by objectives <= o; training objective s updates
  only the weights it owns: the effective weight is `frozen * (owner < s) + weight * (owner == s)`
  with the frozen values in a buffer the optimiser never sees, so "frozen weights do not change"
  holds whatever the optimiser's weight decay does.
- CPP acts per parameter tensor (a "layer"; embedding tables and biases included) on the weights
  the finished objective owns; freed weights restart at zero (`freed_init`), so the next
  objective starts from the previous objective's model.
- The item tower (item id, attributes) is trained on exposures and then shared by every
  objective: the spec's option that keeps one item index for every objective and any fusion
  (`<sum_o w_o u_o, i>`). Only the user tower gets objective-specific capacity.
- AML: margin m(u, i) = `margin` * (1 - p_prev) where p_prev is the previous objective's in-batch
  softmax probability of the positive ("hard": a positive the upstream model finds unlikely must
  win by more), or `margin` * p_prev ("easy"), or none ("off"); in cosine units, before the
  temperature.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from agenticrs.models.base import register
from agenticrs.retrieval.cascade import OBJECTIVES
from agenticrs.retrieval.multi_objective import Batch, FusionConfig, MultiObjectiveRetriever
from agenticrs.retrieval.towers import UserTower

FREE = 127  # owner code of a freed weight not yet given to an objective


class CSMFConfig(FusionConfig):
    prune_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="CPP: share of each layer's L1 mass freed per objective")
    margin: float = Field(0.2, ge=0.0, le=2.0, description="AML's alpha (cosine units)")
    margin_mode: Literal["hard", "easy", "off"] = Field("hard", description="AML: which positives get the larger margin")
    prune_rule: Literal["cpp", "count"] = Field(
        "cpp", description="cpp: the smallest weights holding prune_ratio of each layer's L1 mass; count (ablation): "
                           "the prune_ratio share of each layer's weights by count, smallest first")
    item_tower: Literal["shared", "staged"] = Field(
        "shared", description="shared: trained on exposures, then every objective's (one index, exact fusion); "
                              "staged (a diagnostic): the item tower is pruned and fine-tuned like the user tower, "
                              "each objective has its own item vectors")
    freed_init: Literal["zero", "normal"] = Field("zero", description="freed weights restart at zero or N(0, 0.01^2)")


def cpp_mask(values: torch.Tensor, ratio: float, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Cumulative Percentile-based Pruning of one layer: True where a weight is pruned.

    Sort the eligible |w| ascending, take cumulative sums c_1..c_n (c_n the layer's total L1 mass)
    and prune w_j iff c_j <= ratio * c_n: the smallest weights that together hold at most `ratio`
    of the mass (the next one would exceed it). Ties break by position (a stable sort)."""
    flat = values.detach().abs().flatten().to(torch.float64)
    keep_in = torch.ones_like(flat, dtype=torch.bool) if eligible is None else eligible.flatten()
    index = torch.nonzero(keep_in).squeeze(1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if len(index) == 0:
        return mask.view_as(values)
    magnitude = flat[index]
    order = torch.sort(magnitude, stable=True).indices
    cumulative = torch.cumsum(magnitude[order], 0)
    chosen = order[cumulative <= ratio * cumulative[-1]]
    mask[index[chosen]] = True
    return mask.view_as(values)


def count_mask(values: torch.Tensor, ratio: float, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """Fixed-share magnitude pruning (CPP's ablation): the round(ratio * n) smallest eligible |w|."""
    flat = values.detach().abs().flatten()
    keep_in = torch.ones_like(flat, dtype=torch.bool) if eligible is None else eligible.flatten()
    index = torch.nonzero(keep_in).squeeze(1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    order = torch.sort(flat[index], stable=True).indices
    mask[index[order[: int(round(ratio * len(index)))]]] = True
    return mask.view_as(values)


def _key(name: str) -> str:
    return name.replace(".", "__")


def _name_user_tower_buffers(state_dict: dict, prefix: str, *_: object) -> None:
    """Runs written before the item tower could be staged named the user tower's ownership buffers
    without their tower (`owner__history__weight`); they load under today's names."""
    for key in [k for k in state_dict if k.startswith((f"{prefix}owner__", f"{prefix}frozen__"))]:
        kind, _, rest = key[len(prefix) :].partition("__")
        if not rest.startswith(("user_tower__", "item_tower__")):
            state_dict[f"{prefix}{kind}__user_tower__{rest}"] = state_dict.pop(key)


@register("csmf")
class CSMF(MultiObjectiveRetriever):
    """One two-tower network; each cascade objective owns a share of the user tower's weights."""

    paper = "Deng et al., CSMF: Cascaded Selective Mask Fine-Tuning for Multi-Objective EBR, SIGIR 2025"
    Config = CSMFConfig
    streams = "one objective"  # each stage trains on one objective's positives
    user_passes = len(OBJECTIVES)  # the fused query needs every objective's user vector

    def __init__(self, num_items: int, config: CSMFConfig) -> None:
        super().__init__(num_items, config)
        self.user_tower = UserTower(num_items, config, config.out_dim)
        self.shared_item_space = config.item_tower == "shared"
        staged = ["user_tower"] + ([] if self.shared_item_space else ["item_tower"])
        self._names = [f"{tower}.{name}" for tower in staged for name, _ in getattr(self, tower).named_parameters()]
        for name in self._names:
            param = self.get_parameter(name)
            self.register_buffer(f"owner__{_key(name)}", torch.zeros_like(param, dtype=torch.int8))
            self.register_buffer(f"frozen__{_key(name)}", torch.zeros_like(param))
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))
        self._load_hook = self.register_load_state_dict_post_hook(lambda module, _: module._sync_item_tower())
        self._register_load_state_dict_pre_hook(_name_user_tower_buffers)

    # -- ownership ---------------------------------------------------------------------------------
    def owner(self, name: str) -> torch.Tensor:
        return getattr(self, f"owner__{_key(name)}")

    def frozen(self, name: str) -> torch.Tensor:
        return getattr(self, f"frozen__{_key(name)}")

    @property
    def current(self) -> int:
        return int(self.stage)

    def _sync_item_tower(self) -> None:
        """The item tower learns on exposures only; later objectives share it as it is."""
        self.item_tower.requires_grad_(self.current == 0 or not self.shared_item_space)

    def _effective(self, name: str, objective: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One user-tower tensor (or its `rows`) as objective `objective` sees it: the weights
        owned by objectives <= it (an objective not trained yet reads the current one's)."""
        param, owner, frozen = self.get_parameter(name), self.owner(name), self.frozen(name)
        if rows is not None:
            param, owner, frozen = param[rows], owner[rows], frozen[rows]
        s = self.current
        if objective < s:
            return frozen * (owner <= objective)
        return frozen * (owner < s) + param * (owner == s)

    def effective_weights(self, objective: int) -> dict[str, torch.Tensor]:
        """Every user-tower tensor as `objective` sees it."""
        return {name: self._effective(name, objective) for name in self._names}

    def _masked_mlp(self, tower: str, objective: int) -> Callable[[torch.Tensor], torch.Tensor]:
        mlp = getattr(self, tower).mlp
        weights = {name.removeprefix(f"{tower}.mlp."): self._effective(name, objective)
                   for name in self._names if name.startswith(f"{tower}.mlp.")}  # fmt: skip
        return lambda x: functional_call(mlp, weights, (x,))

    def user_vectors(self, batch: Batch, objective: int) -> torch.Tensor:
        """The user tower with the objective's weights; embedding rows are masked after the
        lookup (only the rows a batch reads), the MLP's weights whole."""
        tower = self.user_tower
        history = batch["history"][:, -tower.max_len :]
        history_emb = self._effective("user_tower.history.weight", objective, history)
        user_emb = self._effective("user_tower.user.weight", objective, batch["user"].remainder(tower.buckets))
        out = tower.combine(history, history_emb, user_emb, mlp=self._masked_mlp("user_tower", objective))
        return F.normalize(out, dim=-1)

    @torch.no_grad()
    def objective_user_towers(self) -> list[UserTower]:
        """One plain user tower per objective holding that objective's effective weights: what
        serving runs (the masks are applied once here, not at every query)."""
        towers = []
        for objective in range(len(OBJECTIVES)):
            tower = copy.deepcopy(self.user_tower).eval()
            for name in self._names:
                if name.startswith("user_tower."):
                    tower.get_parameter(name.removeprefix("user_tower.")).copy_(self._effective(name, objective))
            towers.append(tower)
        return towers

    def item_vectors(self, items: torch.Tensor | None = None, objective: int | None = None) -> torch.Tensor:
        if self.shared_item_space:
            return self.item_tower(items)
        tower = self.item_tower
        if items is None:
            items = torch.arange(self.num_items + 1, device=tower.item.weight.device)
        o = self.current if objective is None else objective
        attrs = tower.attributes[items]
        item_emb = self._effective("item_tower.item.weight", o, items)
        attr_emb = self._effective("item_tower.attribute.weight", o, attrs)
        return tower.combine(attrs, item_emb, attr_emb, mlp=self._masked_mlp("item_tower", o))

    # -- the cascade's steps (called between engine runs by `cascade_train.train_csmf`) --------
    @torch.no_grad()
    def prune(self, ratio: float | None = None) -> dict[str, dict[str, float]]:
        """CPP on the weights the current objective owns: pruned ones become free and zero.
        Returns per layer the pruned count, the count it owned and the share of L1 mass freed."""
        ratio = self.config.prune_ratio if ratio is None else ratio
        s, report = self.current, {}
        for name in self._names:
            param, owner = self.get_parameter(name), self.owner(name)
            mine = owner == s
            pruned = (cpp_mask if self.config.prune_rule == "cpp" else count_mask)(param, ratio, mine)
            total = float(param.abs()[mine].sum())
            report[name] = {"pruned": int(pruned.sum()), "owned": int(mine.sum()),
                            "mass_share": float(param.abs()[pruned].sum()) / total if total else 0.0}  # fmt: skip
            owner[pruned] = FREE
            param[pruned] = 0.0
        return report

    @torch.no_grad()
    def advance(self) -> int:
        """Freeze the current objective's weights and give the free ones to the next objective."""
        s = self.current
        if s + 1 >= len(OBJECTIVES):
            raise ValueError(f"objective {OBJECTIVES[s]} is the cascade's last")
        for name in self._names:
            param, owner, frozen = self.get_parameter(name), self.owner(name), self.frozen(name)
            mine = owner == s
            frozen[mine] = param[mine]
            free = owner == FREE
            owner[free] = s + 1
            param.zero_()
            if self.config.freed_init == "normal":
                param[free] = torch.randn(int(free.sum()), dtype=param.dtype, device=param.device) * 0.01
        self.user_tower.history.weight[0].zero_()  # the padding rows stay zero
        self.item_tower.item.weight[0].zero_()
        self.item_tower.attribute.weight[0].zero_()
        self.stage.fill_(s + 1)
        self._sync_item_tower()
        return s + 1

    def ownership(self) -> dict[str, list[int]]:
        """Per objective (and free), how many user-tower weights it owns."""
        counts = np.zeros(len(OBJECTIVES) + 1, np.int64)
        for name in self._names:
            owner = self.owner(name).flatten().to(torch.int64)
            counts[: len(OBJECTIVES)] += np.bincount(owner[owner != FREE].numpy(), minlength=len(OBJECTIVES))[: len(OBJECTIVES)]
            counts[-1] += int((owner == FREE).sum())
        return {**{o: int(c) for o, c in zip(OBJECTIVES, counts, strict=False)}, "free": int(counts[-1])}

    # -- training --------------------------------------------------------------------------------
    def margin_of(self, batch: Batch, objective: int) -> torch.Tensor | None:
        """AML's margin per row from the previous objective's model (no gradient)."""
        if objective == 0 or self.config.margin_mode == "off" or self.config.margin == 0:
            return None
        with torch.no_grad():
            target = batch["target"]
            user = self.user_vectors(batch, objective - 1)
            logits = user @ self.item_vectors(target, objective - 1).T / self.config.temperature
            if self.config.logq_correction:
                logits = logits - self.log_q[objective - 1, target][None, :]
            same = target[:, None] == target[None, :]
            same.fill_diagonal_(False)
            p_prev = torch.softmax(logits.masked_fill(same, float("-inf")), dim=1).diagonal()
            share = 1.0 - p_prev if self.config.margin_mode == "hard" else p_prev
            return self.config.margin * share

    def loss(self, batch: Batch) -> torch.Tensor:
        s = self.current
        return self.objective_loss(batch, s, self.margin_of(batch, s))
