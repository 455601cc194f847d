"""Two-tower retrieval with in-batch sampled softmax and log-Q correction.

Papers: Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016 (the
two towers, a user vector from the watch history, retrieval as nearest-neighbour search); Yi et
al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations", RecSys 2019
(in-batch softmax over the other positives of the batch, each logit corrected by - log q(item),
q the probability the item is drawn into a batch, estimated from the training stream).

The papers': a user tower and an item tower meet only in a dot product (so the catalogue is
embedded once and searched with an ANN index), L2-normalised outputs with a temperature, in-batch
negatives and the log-Q correction. Ours:
- user tower: the mean of the history's item embeddings, the most recent item's embedding and a
  hashed user-id embedding (the profile the sequence data have) through a two-layer MLP;
- item tower: the item-id embedding and the mean of its attribute bag (categories, brand) through
  a two-layer MLP; the id table is shared with the user tower's history embeddings;
- q(item) is the item's share of the training targets (exact counts of the finite training
  stream, computed once in `prepare_data` before the first step, instead of the paper's
  streaming estimate); attribute ids are hashed into `attribute_buckets` rows;
- a batch that holds the same item twice masks the duplicate off the diagonal (it is a positive
  of that row, not a negative).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.gr.base import PAD, SeqBatch, SequenceData, SequentialConfig, SequentialModel
from agenticrs.gr.zoo import register_sequential


class TwoTowerConfig(SequentialConfig):
    max_len: int = Field(50, ge=1, description="history items the user tower reads")
    dim: int = Field(64, ge=1, le=4096, description="width of the shared item-id embedding")
    hidden: int = Field(128, ge=1, le=16384)
    out_dim: int = Field(64, ge=1, le=4096, description="width of the user and item vectors (the ANN index's)")
    temperature: float = Field(0.05, gt=0.0, le=10.0, description="cosine similarity / temperature = logit")
    logq_correction: bool = Field(True, description="subtract log q(item) from in-batch logits (Yi et al. 2019)")
    user_buckets: int = Field(50_000, ge=1, description="hashed user-id embedding rows (the profile)")
    attribute_buckets: int = Field(4096, ge=1, le=10_000_000, description="attribute ids are hashed (mod) into these rows")
    max_attributes: int = Field(8, ge=1, le=256, description="attributes kept per item")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


def in_batch_softmax_loss(
    user: torch.Tensor, item: torch.Tensor, item_ids: torch.Tensor, temperature: float,
    log_q: torch.Tensor | None = None, margin: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of each row's own item against the batch's other items.

    logit[i, j] = <user_i, item_j> / temperature - log q(item_j) (without `log_q`: no correction);
    an item that is row i's own positive elsewhere in the batch (j != i, same id) is masked out.
    `margin` (B,) is subtracted from each row's own similarity before the temperature (an
    additive-margin softmax: the positive must beat the negatives by that much; CSMF's AML).
    Popular items appear in many batches as negatives and are pushed down too often; subtracting
    log q makes the sampled softmax an unbiased estimate of the full softmax's gradient."""
    logits = user @ item.T
    if margin is not None:
        logits = logits - torch.diag_embed(margin)
    logits = logits / temperature
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = item_ids[:, None] == item_ids[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(item_ids), device=logits.device))


def target_counts(train: SequenceData) -> np.ndarray:
    """(num_items + 1,) how often each item is a training target of the "prefixes" examples (every
    item of a training sequence but its first): the sampling distribution of in-batch negatives."""
    offsets = np.asarray(train.offsets, np.int64)
    items = np.asarray(train.items, np.int64)
    first = np.zeros(len(items), bool)
    first[offsets[:-1][np.diff(offsets) > 0]] = True
    return np.bincount(items[~first], minlength=train.num_items + 1)


def attribute_matrix(data: SequenceData, max_attributes: int, buckets: int) -> np.ndarray:
    """(num_items + 1, max_attributes) attribute rows: (attribute id mod `buckets`) + 1, 0 = none.
    Items with more attributes keep their first `max_attributes`. Hashing keeps the model's shape
    independent of the data's vocabulary, so a run rebuilds from its config alone."""
    out = np.zeros((data.num_items + 1, max_attributes), np.int64)
    if data.attribute_offsets is None or data.attributes is None or len(data.attributes) == 0:
        return out
    offsets = np.asarray(data.attribute_offsets, np.int64)
    lengths = np.diff(offsets)
    item_of = np.repeat(np.arange(len(lengths)), lengths)
    slot = np.arange(len(item_of)) - offsets[:-1][item_of]
    keep = (slot < max_attributes) & (item_of <= data.num_items)
    attrs = np.asarray(data.attributes, np.int64)
    out[item_of[keep], slot[keep]] = attrs[keep] % buckets + 1
    return out


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


@register_sequential("two_tower")
class TwoTower(SequentialModel):
    """User tower (history, user id) x item tower (id, attributes), trained on next items."""

    paper = "Yi et al., Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations, RecSys 2019"
    task = "retrieval"
    Config = TwoTowerConfig
    train_examples = "prefixes"  # one example per (user, position): every training click is a positive

    def __init__(self, num_items: int, config: TwoTowerConfig) -> None:
        super().__init__()
        self.num_items, self.config = num_items, config
        d = config.dim
        self.item = nn.Embedding(num_items + 1, d, padding_idx=PAD)
        self.user = nn.Embedding(config.user_buckets, d)
        self.attribute = nn.Embedding(config.attribute_buckets + 1, d, padding_idx=0)
        self.user_mlp = _mlp(3 * d, config.hidden, config.out_dim, config.dropout)
        self.item_mlp = _mlp(2 * d, config.hidden, config.out_dim, config.dropout)
        for table in (self.item, self.user, self.attribute):
            nn.init.normal_(table.weight, std=d**-0.5)
        with torch.no_grad():
            self.item.weight[PAD].zero_()
            self.attribute.weight[0].zero_()
        # filled by the task's `prepare` from the training data, saved with the weights
        self.register_buffer("log_q", torch.zeros(num_items + 1))
        self.register_buffer("item_attributes", torch.zeros(num_items + 1, config.max_attributes, dtype=torch.long))

    # -- data the model is built around ---------------------------------------------------------
    def prepare_data(self, train: SequenceData, data: SequenceData) -> None:
        """log q from the training part's targets, the attribute bags from the catalogue."""
        self.set_item_frequencies(torch.from_numpy(target_counts(train)))
        attrs = attribute_matrix(data, self.config.max_attributes, self.config.attribute_buckets)
        self.set_item_attributes(torch.from_numpy(attrs).to(self.item_attributes.device))

    def set_item_frequencies(self, counts: torch.Tensor) -> None:
        """log q(item) from the items' counts as training targets; unseen items get the log share
        of one occurrence (they never enter a batch, the value only keeps the buffer finite)."""
        counts = counts.to(torch.float64).clamp_min(1.0)
        self.log_q.copy_(torch.log(counts / counts.sum()).to(self.log_q.dtype))

    def set_item_attributes(self, attributes: torch.Tensor) -> None:
        """(num_items + 1, max_attributes) attribute ids + 1 (0 = none)."""
        if attributes.shape != self.item_attributes.shape:
            raise ValueError(f"item attributes have shape {tuple(attributes.shape)}; the model expects "
                             f"{tuple(self.item_attributes.shape)}")  # fmt: skip
        self.item_attributes.copy_(attributes)

    # -- towers ----------------------------------------------------------------------------------
    def user_vectors(self, batch: SeqBatch) -> torch.Tensor:
        """(B, out_dim) unit vectors from `history` (B, L) right-aligned and `user` (B,)."""
        history = batch["history"][:, -self.config.max_len :]
        emb = self.item(history)
        keep = (history != PAD).unsqueeze(-1).float()
        mean = (emb * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        user = self.user(batch["user"].remainder(self.config.user_buckets))
        return F.normalize(self.user_mlp(torch.cat([mean, emb[:, -1], user], dim=1)), dim=-1)

    def item_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """(N, out_dim) unit vectors of `items` (default: every item 0..num_items; row 0 is padding)."""
        if items is None:
            items = torch.arange(self.num_items + 1, device=self.item.weight.device)
        attrs = self.item_attributes[items]
        attr_emb = self.attribute(attrs)
        n_attr = (attrs != 0).sum(-1, keepdim=True).clamp_min(1).float()
        x = torch.cat([self.item(items), attr_emb.sum(1) / n_attr], dim=1)
        return F.normalize(self.item_mlp(x), dim=-1)

    # -- the sequential contract -------------------------------------------------------------------
    def loss(self, batch: SeqBatch) -> torch.Tensor:
        target = batch["target"]
        log_q = self.log_q[target] if self.config.logq_correction else None
        return in_batch_softmax_loss(self.user_vectors(batch), self.item_vectors(target), target,
                                     self.config.temperature, log_q)  # fmt: skip

    @torch.no_grad()
    def score_all(self, batch: SeqBatch) -> torch.Tensor:
        scores = self.user_vectors(batch) @ self.item_vectors().T
        scores[:, PAD] = float("-inf")
        return scores
