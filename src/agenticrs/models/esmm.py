"""ESMM: the entire space multi-task model for post-click conversion rate (CVR).

Paper: Ma, Zhao, Huang, Wang, Hu, Zhu, Gai, "Entire Space Multi-Task Model: An Effective Approach
for Estimating Post-Click Conversion Rate", SIGIR 2018. The paper's: a CTR network and a CVR
network share the feature embeddings; each is embedding -> MLP -> probability; the model outputs
pCTR = P(click | impression), pCVR = P(conversion | click, impression) and
pCTCVR = pCTR x pCVR = P(click AND conversion | impression). It trains over the entire impression
space with two losses, BCE(click, pCTR) + BCE(click AND conversion, pCTCVR), never on pCVR
directly: the CVR tower learns only through the product, which removes the sample-selection bias
of training CVR on clicks and lets the abundant CTR data carry the shared embeddings. The paper
uses 18-wide embeddings and three-layer MLPs (360 x 200 x 80) with ReLU for both towers.

Ours:
- Both towers are MLPs on the concatenated field embeddings of the zoo's shared layer
  (`input_norm` honoured; sequences mean-pooled), where the paper sum-pools feature groups.
- The labels are settings: `click_label` and `conversion_label` (defaults `click`, `purchase`, the
  simulator's names); a data set without either is refused naming the setting.
- The output is a (B, 2) logit, one column per trained label (`output_labels` = [click label,
  conversion label]) as every multi-task model of the zoo: column 0 is the CTR logit, column 1
  the logit of pCTCVR, and `targets` turns the label columns into [click, click AND conversion]
  (0 on an unclicked impression whatever its conversion label; missing where a clicked row has
  no conversion label), so the CTR task's generic per-label BCE is exactly the paper's loss.
- logit(pCTR x pCVR) is computed in log space, stable for any logits a, b:
  log p = logsigmoid(a) + logsigmoid(b) and log(1 - p) = logaddexp(logsigmoid(-a),
  logsigmoid(a) + logsigmoid(-b)) (since 1 - s(a)s(b) = s(-a) + s(a)s(-b)); the BCE with logits
  of their difference is the BCE from these log-probabilities.
- `task_probabilities(batch)` returns pCTR, pCVR and pCTCVR; the run reports `ctr_auc`,
  `cvr_auc` (clicked rows only) and `ctcvr_auc` (`conversion_labels`) and monitors `ctcvr_auc`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agenticrs.features.schema import FeatureSchema
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    HiddenUnits,
    IncompatibleDataError,
    LabelName,
    Model,
    ModelConfig,
    ModelInputs,
    register,
)
from agenticrs.models.layers import MLP, FeatureEmbedding


class ESMMConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 18
    click_label: LabelName = "click"
    conversion_label: LabelName = "purchase"
    ctr_units: HiddenUnits = [360, 200, 80]
    cvr_units: HiddenUnits = [360, 200, 80]
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    batch_norm: bool = False


def ctcvr_logit(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(a) * sigmoid(b)) = log p - log(1 - p), finite for every finite a, b."""
    log_ctr, log_cvr = F.logsigmoid(ctr_logit), F.logsigmoid(cvr_logit)
    log_p = log_ctr + log_cvr
    log_not_p = torch.logaddexp(F.logsigmoid(-ctr_logit), log_ctr + F.logsigmoid(-cvr_logit))
    return log_p - log_not_p


@register("esmm")
class ESMM(Model):
    paper = (
        "Ma et al., Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click "
        "Conversion Rate, SIGIR 2018"
    )
    Config = ESMMConfig
    inputs = ModelInputs(min_categorical=1, multi_task=True, min_labels=2)
    smoke_overrides = {"embedding_dim": 4, "ctr_units": [16], "cvr_units": [16]}
    train_defaults = {"monitor": "ctcvr_auc"}

    def __init__(self, schema: FeatureSchema, config: ESMMConfig) -> None:
        super().__init__(schema, config)
        labels = list(schema.labels)
        for setting in ("click_label", "conversion_label"):
            name = getattr(config, setting)
            if name not in labels:
                raise IncompatibleDataError(
                    f"model 'esmm' cannot train on this data set: model_params.{setting} '{name}' is not a label "
                    f"of the data set (labels: {labels})"
                )
        if config.click_label == config.conversion_label:
            raise IncompatibleDataError(
                f"model 'esmm': model_params.click_label and conversion_label are both '{config.click_label}'"
            )
        self.output_labels = [config.click_label, config.conversion_label]
        self.conversion_labels = (config.click_label, config.conversion_label)
        self.embedding = FeatureEmbedding(schema, dim=config.embedding_dim, input_norm=config.input_norm)
        width = self.embedding.output_dim
        tower = lambda units: MLP(width, units, config.dropout, config.batch_norm, config.activation, output_dim=1)  # noqa: E731
        self.ctr_tower = tower(config.ctr_units)
        self.cvr_tower = tower(config.cvr_units)

    def tower_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(CTR logit, CVR logit), each (B,)."""
        x = self.embedding(batch).fields.flatten(1)
        return self.ctr_tower(x).squeeze(-1), self.cvr_tower(x).squeeze(-1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        ctr, cvr = self.tower_logits(batch)
        return {"logit": torch.stack([ctr, ctcvr_logit(ctr, cvr)], dim=1)}

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """[click, click AND conversion]: 0 where the click is 0, the conversion label where it is 1
        (NaN where that is missing, or the click is)."""
        if labels.dim() != 2 or labels.shape[1] != 2:
            raise ValueError(f"esmm trains on two label columns (click, conversion), got shape {tuple(labels.shape)}")
        click, conversion = labels[:, 0], labels[:, 1]
        ctcvr = torch.where(click == 0, torch.zeros_like(click), click * conversion)
        return torch.stack([click, ctcvr], dim=1)

    @torch.no_grad()
    def task_probabilities(self, batch: Batch) -> dict[str, torch.Tensor]:
        """pCTR, pCVR and pCTCVR = pCTR x pCVR of every row, each (B,)."""
        ctr, cvr = self.tower_logits(batch)
        p_ctr, p_cvr = torch.sigmoid(ctr), torch.sigmoid(cvr)
        return {"ctr": p_ctr, "cvr": p_cvr, "ctcvr": p_ctr * p_cvr}

    def extra_repr(self) -> str:
        return f"labels={self.output_labels}"

