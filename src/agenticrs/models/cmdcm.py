"""CM-DCM: counterfactual multi-task delayed-conversion model for pre-promotion CVR.

Paper (abstract only): Song, Li, Hu, "Counterfactual Multi-task Learning for Delayed Conversion
Modeling in E-commerce Sales Pre-Promotion", arXiv:2604.21675 (2026). The paper's (abstract):
before a sales promotion users add to cart and wait, so many conversions are delayed to the
promotion day; CM-DCM learns from historical promotions' pre-promotion data with (i) a
multi-task architecture for direct and delayed conversion, (ii) a personalised user-behaviour
gating module against the sparsity of short pre-promotion windows and (iii) a counterfactual
component for the add-to-cart -> delayed-conversion transition.

Ours (the abstract gives no architecture; `/work/shared/specs/cm_dcm.md` §3-5):
- Shared field embeddings x (the zoo's `FeatureEmbedding`, `input_norm` honoured).
- Personalised user-behaviour gating (`gating=True`): a user-state vector u, the embeddings of
  `user_state_fields` (history length, carts, purchases, promotion-day purchases,
  days-to-promotion), scales every embedding PEPNet-style, x' = x * 2 sigma(W_s u) (Chang et al.,
  KDD 2023), and gives each task tower its own softmax gate over E shared experts,
  g_t = softmax(W_t u) (MMoE gates driven by the user state). `gating=False`: no scaling and
  MMoE gates on x (Ma et al., KDD 2018): the ablation.
- Towers: p_dir = P(direct conversion | click), p_atc = P(add to cart | click),
  p_del|atc = P(delayed conversion | click, cart). Delayed conversion over the click space is
  the chain p_atc * p_del|atc (ESMM-style, Ma et al., SIGIR 2018), computed in log space:
  log p_del = log sigma(a) + log sigma(d), returned as a logit (log p - log(1 - p)).
- Outputs `logit` (B, 3) for the labels (y_dir, y_atc, y_del) in that order, so the CTR task's
  multi-label BCE is BCE(p_dir, y_dir) + BCE(p_atc, y_atc) + BCE(p_atc p_del|atc, y_del), each
  over the rows that have the label (the current promotion's clicks have no y_del yet).
- Counterfactual term (`counterfactual=True`), `labelled_loss`, lambda = `cf_weight`: on the rows
  with y_del, with o = y_atc, p_hat = clip(stop_grad(p_atc), `propensity_clip`, 1),
  e = BCE(p_del|atc, y_del) (defined on carted rows), an imputation tower r (its own gate)
  giving imputed labels, e_hat = BCE(p_del|atc, stop_grad(r)):
      L_DR  = mean_i [ e_hat_i + o_i (e_i - e_hat_i) / p_hat_i ]
      L_imp = mean_i [ o_i (stop_grad(e_i) - BCE(stop_grad(p_del|atc_i), r_i))^2 / p_hat_i ]
  (doubly robust joint learning, Wang et al., ICML 2019, with imputed labels as in ESCM2,
  Wang et al., SIGIR 2022). `imputation=False` drops the imputed part: L_IPS = mean_i o_i e_i / p_hat_i.
- Score: `score="union"` (default) p_cvr = p_dir + (1 - p_dir) p_atc p_del|atc; `"sum"`:
  p_dir + delayed_weight * p_atc p_del|atc (when delayed GMV is valued differently). Returned as
  `score` in the output, with the components (`p_dir`, `p_atc`, `p_del_given_atc`, `p_del`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    Heads,
    HiddenUnits,
    Model,
    ModelConfig,
    ModelInputs,
    register,
)
from agenticrs.models.layers import MLP, FeatureEmbedding, product_logit

DEFAULT_LABELS = ("y_dir", "y_atc", "y_del")
DEFAULT_USER_STATE = ("hist_len", "hist_carts", "hist_purchases", "hist_promo_purchases", "days_to_promo")


class CMDCMConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 10
    labels: list[str] | None = Field(
        default=None, min_length=3, max_length=3,
        description=f"the (direct, cart, delayed) conversion labels; default {list(DEFAULT_LABELS)}",
    )
    user_state_fields: list[str] | None = Field(
        default=None, max_length=64,
        description="fields forming the user-state vector u of the gates; default: those of "
        f"{list(DEFAULT_USER_STATE)} the data set has",
    )
    num_experts: Heads = 4
    expert_units: HiddenUnits = [128, 64]
    tower_units: HiddenUnits = [64]
    gate_units: HiddenUnits = [64]
    activation: Activation = "relu"
    dropout: Dropout = 0.1
    batch_norm: bool = False
    gating: bool = Field(default=True, description="personalised user-behaviour gating (off: plain MMoE gates)")
    counterfactual: bool = Field(default=True, description="the IPS / doubly-robust ATC -> delayed-conversion term")
    imputation: bool = Field(default=True, description="doubly robust (an imputation tower) rather than IPS alone")
    cf_weight: Annotated[float, Field(ge=0.0, le=100.0, description="lambda of the counterfactual term")] = 1.0
    propensity_clip: Annotated[float, Field(gt=0.0, le=1.0, description="lower clip of p_atc in 1/p_atc")] = 0.05
    score: Literal["union", "sum"] = "union"
    delayed_weight: Annotated[float, Field(ge=0.0, le=100.0, description="weight of p_del in score='sum'")] = 1.0


def ips_dr_loss(
    p_del_logit: torch.Tensor, y_del: torch.Tensor, cart: torch.Tensor, propensity: torch.Tensor,
    imputed_logit: torch.Tensor | None, clip: float,
) -> torch.Tensor:  # fmt: skip
    """The counterfactual term (module docstring) over rows with y_del and y_atc (others: NaN).

    `propensity` is p_atc (detached and clipped here); `imputed_logit` None gives IPS alone."""
    present = ~(torch.isnan(y_del) | torch.isnan(cart))
    n = present.sum().clamp_min(1)
    o = torch.where(present, cart, torch.zeros_like(cart))
    y = torch.where(present, y_del, torch.zeros_like(y_del))
    p_hat = propensity.detach().clamp(min=clip, max=1.0)
    e = F.binary_cross_entropy_with_logits(p_del_logit, y, reduction="none")
    if imputed_logit is None:
        return (present * o * e / p_hat).sum() / n
    r = torch.sigmoid(imputed_logit)
    e_hat = F.binary_cross_entropy_with_logits(p_del_logit, r.detach(), reduction="none")
    dr = (present * (e_hat + o * (e - e_hat) / p_hat)).sum() / n
    e_hat_imp = F.binary_cross_entropy_with_logits(p_del_logit.detach(), r, reduction="none")
    imputation = (present * o * (e.detach() - e_hat_imp) ** 2 / p_hat).sum() / n
    return dr + imputation


@register("cmdcm")
class CMDCM(Model):
    paper = ("Song, Li, Hu, Counterfactual Multi-task Learning for Delayed Conversion Modeling in E-commerce "
             "Sales Pre-Promotion, arXiv:2604.21675, 2026 (abstract only; the architecture is ours)")  # fmt: skip
    Config = CMDCMConfig
    inputs = ModelInputs(min_categorical=1, multi_task=True, min_labels=3)
    smoke_overrides = {"embedding_dim": 4, "num_experts": 2, "expert_units": [16], "tower_units": [8],
                       "gate_units": [8], "dropout": 0.0}  # fmt: skip
    TOWERS = ("direct", "cart", "delayed", "imputed")  # (module names: `del` is a Python keyword)

    def __init__(self, schema: FeatureSchema, config: CMDCMConfig) -> None:
        super().__init__(schema, config)
        labels = list(schema.labels)
        wanted = list(config.labels or DEFAULT_LABELS)
        missing = [name for name in wanted if name not in labels]
        if missing:
            raise ValueError(
                f"cmdcm: label(s) {missing} are not labels of the data set (labels: {labels}); set "
                "labels (direct, cart, delayed), or use the pre-promotion clicks (agenticrs.data.prepromo)"
            )
        self.output_labels = wanted
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        width = self.embedding.output_dim
        d = config.embedding_dim
        self.state_index = self._state_index(schema, config)
        self.register_buffer("state_slots", torch.tensor(self.state_index, dtype=torch.long), persistent=False)
        state_width = len(self.state_index) * d
        gate_input = state_width if config.gating else width
        expert = lambda: MLP(width, config.expert_units, config.dropout, config.batch_norm, config.activation)  # noqa: E731
        self.experts = nn.ModuleList(expert() for _ in range(config.num_experts))
        self.gates = nn.Linear(gate_input, config.num_experts * len(self.TOWERS))
        self.scaling = (
            MLP(state_width, config.gate_units, 0.0, False, "relu", output_dim=width) if config.gating else None
        )
        expert_width = config.expert_units[-1] if config.expert_units else width
        tower = lambda: MLP(expert_width, config.tower_units, config.dropout, config.batch_norm, config.activation,  # noqa: E731
                            output_dim=1)  # fmt: skip
        self.towers = nn.ModuleDict({name: tower() for name in self.TOWERS})

    @staticmethod
    def _state_index(schema: FeatureSchema, config: CMDCMConfig) -> list[int]:
        """Positions of the user-state fields among the embedded fields (categorical, then numeric)."""
        order = [*schema.categorical_names, *schema.numeric]
        if config.user_state_fields is None:
            names = [n for n in DEFAULT_USER_STATE if n in order]
            if not names:
                raise ValueError(
                    f"cmdcm: the data set has none of the default user-state fields {list(DEFAULT_USER_STATE)}; "
                    f"set user_state_fields to some of its categorical or numeric fields ({order})"
                )
        else:
            names = list(config.user_state_fields)
            unknown = [n for n in names if n not in order]
            if unknown or not names:
                raise ValueError(f"cmdcm: user_state_fields {unknown or names} are not categorical or numeric "
                                 f"fields of the data set ({order})")  # fmt: skip
        return [order.index(n) for n in names]

    def components(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Tower logits (B,) by name, the gates (B, 4, E) and the embedding scale (B, F*d or 1)."""
        fields = self.embedding(batch).fields  # (B, F, d)
        x = fields.flatten(1)
        if self.scaling is not None:
            state = fields[:, self.state_slots].flatten(1)  # the user-state vector u
            scale = 2.0 * torch.sigmoid(self.scaling(state))  # PEPNet: x' = x * 2 sigma(W u)
            x = x * scale
            gate_input = state
        else:
            scale = x.new_ones(x.shape[0], 1)
            gate_input = x
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, h)
        gates = self.gates(gate_input).view(x.shape[0], len(self.TOWERS), -1).softmax(-1)  # (B, 4, E)
        mixed = torch.bmm(gates, experts)  # (B, 4, h)
        out = {name: self.towers[name](mixed[:, t]).squeeze(-1) for t, name in enumerate(self.TOWERS)}
        return {**out, "gates": gates, "scale": scale}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.components(batch)
        del_logit = product_logit(c["cart"], c["delayed"])
        p_dir, p_del = torch.sigmoid(c["direct"]), torch.sigmoid(del_logit)
        if self.config.score == "union":
            score = p_dir + (1.0 - p_dir) * p_del
        else:
            score = p_dir + self.config.delayed_weight * p_del
        return {
            "logit": torch.stack([c["direct"], c["cart"], del_logit], dim=1),
            "score": score,
            "p_dir": p_dir,
            "p_atc": torch.sigmoid(c["cart"]),
            "p_del_given_atc": torch.sigmoid(c["delayed"]),
            "p_del": p_del,
            "del_given_atc_logit": c["delayed"],
            "imputed_logit": c["imputed"],
            "gates": c["gates"],
        }

    def labelled_loss(self, output: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """lambda x the counterfactual term; `labels` (B, 3) in `output_labels` order (NaN: missing)."""
        if not self.config.counterfactual or self.config.cf_weight == 0.0 or labels.shape[1] != 3:
            return output["logit"].new_zeros(())
        loss = ips_dr_loss(
            output["del_given_atc_logit"], labels[:, 2], labels[:, 1], output["p_atc"],
            output["imputed_logit"] if self.config.imputation else None, self.config.propensity_clip,
        )  # fmt: skip
        return self.config.cf_weight * loss
