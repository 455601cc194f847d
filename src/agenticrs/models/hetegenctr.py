"""HeteGenCTR: one learnable difficulty per field balances the reconstruction loss and the attention.

Paper: Zhang et al., "Self-Balancing Gradient Allocation for Heterogeneity-Aware Feature
Generation in Click-Through Rate Prediction", arXiv:2605.24986 (read: the abstract only). The
paper's: a learnable difficulty per field, trained with the denoiser, drives (a) a self-balancing
reconstruction loss that moves gradient toward hard fields with a stable equilibrium and (b)
difficulty-guided attention; on the DGenCTR backbone.
Ours (every formula; the spec's): s in R^K (init 0), d_k = exp(s_k). The network minimises
L_bal = (1/K) sum_k w_k L_k with w_k = K softmax(s)_k ("proportional": harder fields weigh more) or
K softmax(-s)_k ("inverse", the other reading of the abstract), detached; s minimises
L_s = (1/K) sum_k [exp(-s_k) sg(L_k) + s_k], whose unique stationary point is s_k = log E[L_k].
L_k is field k's mean sampled-softmax loss over its masked tokens (no ELBO weight), fields with no
masked token in the batch left out. Attention: key j's logits get log d^_j, d^ = d / mean(d)
(detached), and the attention output into query i is scaled by d^_i^(1/2); the label token has
d^ = 1. (The 1/K keeps L_bal on the scale of a plain mean: uniform difficulties give exactly it.)
Training as DGenCTR (pre-training, then fine-tuning of every parameter); `pretrain_steps=0` with
`generative_weight=1` is the spec's `joint=True` (BCE + L_bal + L_s from the start).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import LossWeight, register
from agenticrs.models.gen_backbone import GenerativeCTR, GenerativeCTRConfig


def difficulty_loss(log_difficulty: torch.Tensor, field_loss: torch.Tensor) -> torch.Tensor:
    """L_s = mean_k [exp(-s_k) sg(L_k) + s_k]: convex in s_k, minimised at s_k = log L_k."""
    return (torch.exp(-log_difficulty) * field_loss.detach() + log_difficulty).mean()


def balance_weights(log_difficulty: torch.Tensor, weighting: Literal["proportional", "inverse"]) -> torch.Tensor:
    """w_k = K softmax(+-s)_k, detached (the network cannot lower its loss by moving the weights)."""
    signed = log_difficulty if weighting == "proportional" else -log_difficulty
    return (len(signed) * torch.softmax(signed, 0)).detach()


class HeteGenCTRConfig(GenerativeCTRConfig):
    generative_weight: LossWeight = Field(default=0.1, description="weight of the reconstruction loss in fine-tuning")
    pretrain_steps: int = Field(
        default=300, ge=0, le=10_000_000,
        description="optimiser steps of generative pre-training before CTR fine-tuning (part of train.max_steps)",
    )  # fmt: skip
    weighting: Literal["proportional", "inverse"] = "proportional"
    difficulty_attention: bool = Field(default=True, description="the difficulty-guided attention bias and scale")


@register("hetegenctr")
class HeteGenCTR(GenerativeCTR):
    paper = (
        "Zhang et al., Self-Balancing Gradient Allocation for Heterogeneity-Aware Feature Generation in CTR Prediction, "
        "arXiv:2605.24986"
    )
    Config = HeteGenCTRConfig
    smoke_overrides: ClassVar[dict[str, Any]] = {**GenerativeCTR.smoke_overrides, "pretrain_steps": 5}
    # the difficulties enter inference as a detached attention bias: only L_s trains them
    training_only: ClassVar[tuple[str, ...]] = (*GenerativeCTR.training_only, "log_difficulty")

    def __init__(self, schema: FeatureSchema, config: HeteGenCTRConfig) -> None:
        super().__init__(schema, config)
        self.config: HeteGenCTRConfig = config
        self.log_difficulty = nn.Parameter(torch.zeros(self.backbone.num_fields))

    def attention_terms(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.config.difficulty_attention:
            return None, None
        s = self.log_difficulty.detach()
        relative = s - torch.logsumexp(s, 0) + torch.log(torch.tensor(float(len(s)), device=s.device))  # log d^
        per_token = torch.cat([relative[self.backbone.token_field], relative.new_zeros(1)])  # label: d^ = 1
        return per_token, torch.exp(0.5 * per_token)

    def generative_loss(self, per_token: torch.Tensor, masked: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        field_loss, counts = self.backbone.field_losses(per_token, masked)
        present = counts > 0
        if not bool(present.any()):
            return per_token.sum() * 0.0
        s = self.log_difficulty[present]
        losses = field_loss[present]
        weights = balance_weights(s, self.config.weighting)
        self.last_stats = {"weights": weights.tolist(), "field_loss": losses.detach().tolist()}
        return (weights * losses).mean() + difficulty_loss(s, losses)

    def difficulties(self) -> dict[str, float]:
        """exp(s_k) per field: the learned reconstruction difficulty (tracks each field's loss)."""
        return dict(zip(self.backbone.field_names, torch.exp(self.log_difficulty.detach()).tolist(), strict=True))
