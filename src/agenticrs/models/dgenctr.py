"""DGenCTR: discrete-diffusion generative pre-training, then CTR fine-tuning of every parameter.

Paper: Zhang et al., "DGenCTR: Towards a Universal Generative Paradigm for Click-Through Rate
Prediction via Discrete Diffusion", arXiv:2508.14500. The paper's: a sample is a set of feature
tokens plus its label token; stage 1 corrupts tokens (absorbing [MASK]) and learns to restore
them, the label included; stage 2 initialises from *all* stage-1 parameters and trains BCE on the
label token with the label masked and every feature visible; inference is that one pass.
Ours: the backbone's choices (`agenticrs.models.gen_backbone`); both stages run in one engine run,
the first `pretrain_steps` optimiser steps pre-training (counted in `train.max_steps`, so every arm
of a comparison has the same budget; evaluations during pre-training do not count for early
stopping), one learning rate for both stages (the spec's 1e-3 / 1e-4 split is not applied), and
in pre-training the label's loss is the BCE over the rows whose label token was masked.

The paper's ablation controls are settings: `pretrain_steps=0` is the same transformer trained
only discriminatively, `transfer="embeddings"` re-initialises everything but the value embeddings
at the switch (the optimiser's moments are kept: the engine owns them); fine-tuning keeps the
reconstruction loss at weight `generative_weight` = 0.1 (the spec's option; 0 for the pure control).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from agenticrs.models.base import LossWeight, register
from agenticrs.models.gen_backbone import GenerativeCTR, GenerativeCTRConfig


class DGenCTRConfig(GenerativeCTRConfig):
    generative_weight: LossWeight = Field(default=0.1, description="weight of the reconstruction loss in fine-tuning")
    pretrain_steps: int = Field(
        default=300, ge=0, le=10_000_000,
        description="optimiser steps of generative pre-training before CTR fine-tuning (part of train.max_steps)",
    )  # fmt: skip


@register("dgenctr")
class DGenCTR(GenerativeCTR):
    paper = (
        "Zhang et al., DGenCTR: Towards a Universal Generative Paradigm for CTR Prediction via Discrete Diffusion, "
        "arXiv:2508.14500"
    )
    Config = DGenCTRConfig
    smoke_overrides: ClassVar[dict[str, Any]] = {**GenerativeCTR.smoke_overrides, "pretrain_steps": 5}
