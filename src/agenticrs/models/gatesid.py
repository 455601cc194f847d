"""GateSID: an item-maturity gate between semantic-ID and item-ID attention, for cold-start items.

Paper: Zhu et al., "GateSID: Adaptive Gating for Semantic-Collaborative Alignment in Cold-Start
Recommendation", arXiv 2603.22916 (2026); our spec `gatesid.md` (abstract + summaries; the formulas
are ours). The paper's: items carry hierarchical semantic IDs (RQ codes of their content); a gate
g_i = sigma(MLP([e_id(i); e_sid(i); s_i])) from the item's ID and SID embeddings and its
statistics s_i (exposure, age) weighs the attention distributions computed in the ID space and in
the SID space ("gating-fused shared attention": a = g a_id + (1 - g) a_sid over shared values),
and a gate-regulated contrastive loss aligns e_id and e_sid, strongly for cold items (weight
1 - sg(g)), weakly for mature ones.

Ours (how a CTR data set maps onto it):
- **Item field and history**: the main behaviour sequence (an id sequence whose `target` is a
  categorical field, e.g. hist_item_id -> item_id; `history_field` picks one) and its target.
- **Semantic IDs** come from a tokenizer built on the training split in `prepare`: each item's
  content vector is the concatenation of fixed seeded random vectors of its content-field values
  (a random projection of their one-hot codes), and residual k-means (`gr.tokenizers`, the
  project's RQ-KMeans; the paper uses RQ-VAE) of the distinct training items' vectors gives
  `sid_levels` codebooks of `sid_codebook_size`. Content fields: `content_fields`, or by default
  every categorical field outside the request (user/context) fields that the item determines on
  the training split (>= 99 % of an item's rows share one value; in the simulator: cate_l1,
  cate_l2, brand). The candidate's SID is computed from its row's content values at every call,
  so an item never seen in training (an out-of-vocabulary item id) still gets its real SID; a
  history item's SID is looked up from the table of training items (unknown items: an "unknown"
  code per level).
- **Statistics** s_i (per item id, from the training split): log(1 + impressions) scaled to [0, 1]
  by the largest count, and the row's item age (`age_field`, a numeric column, e.g.
  item_age_days) when given. Click counts and CTR are left out: counted on the training split
  they include the row's own label (leakage for rare items). Reserved ids (padding, OOV,
  missing) have zero impressions: an unseen item is the coldest item.
- Attention: scaled dot products of linear query/key maps of the ID (resp. SID) embeddings,
  softmax over the real history positions; the shared values W_v[e_id(h); e_sid(h)]; the
  candidate's gate mixes the two distributions (spec §3's default; no per-behaviour gate).
- Tower: [u, r_v = g e_id(v) + (1 - g) e_sid(v), the other fields' embeddings, the other id
  sequences mean-pooled] -> MLP -> logit. The item field itself enters only through r_v;
  `content_in_tower=False` keeps the content fields out too (they then reach the tower only
  through the SIDs, i.e. through the gate).
- Losses (`aux_loss`, training mode): `align_weight` (0.1) x mean over the batch of
  (1 - sg(g_i)) InfoNCE(e_id(i), e_sid(i); in-batch negatives, tau 0.1) + `gate_supervision`
  (0.01) x BCE(g_i, 1[impressions_i > mature_impressions]).
- `gate` = "id" / "sid" fixes g to 1 / 0 (the ablations: item-ID attention only / semantic-ID
  attention only, in the same architecture).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.features import content_sids
from agenticrs.features.schema import NUM_RESERVED, FeatureSchema, SequenceInput
from agenticrs.models.base import (
    Activation,
    Batch,
    Dropout,
    EmbeddingDim,
    FieldName,
    HiddenUnits,
    LossWeight,
    Model,
    ModelConfig,
    ModelInputs,
    register,
)
from agenticrs.models.layers import MLP, FeatureEmbedding, batch_key_seq, masked_mean

_DETERMINED = 0.99  # share of an item's rows that must agree for a field to count as item content


class GateSIDConfig(ModelConfig):
    embedding_dim: EmbeddingDim = 16
    history_field: FieldName | None = None  # default: the first id sequence with a categorical target
    content_fields: list[FieldName] | None = None  # default: item-determined non-request fields
    age_field: FieldName | None = None  # a numeric column with the row's item age (e.g. item_age_days)
    sid_levels: int = Field(3, ge=1, le=8)
    sid_codebook_size: int = Field(32, ge=2, le=4096)
    content_dim: int = Field(8, ge=1, le=256, description="random-projection width per content field")
    sid_seed: int = Field(0, ge=0, lt=2**31)
    gate: Literal["learned", "id", "sid"] = "learned"
    gate_hidden_units: HiddenUnits = [32]
    align_weight: LossWeight = 0.1
    align_temperature: float = Field(0.1, gt=0.0, le=10.0)
    gate_supervision: LossWeight = 0.01
    mature_impressions: int = Field(50, ge=1, le=10**9, description="impressions above which an item counts as mature")
    # False: the content fields reach the tower only through the SIDs (and so through the gate)
    content_in_tower: bool = True
    hidden_units: HiddenUnits = [200, 80]
    activation: Activation = "relu"
    dropout: Dropout = 0.0
    batch_norm: bool = False


def _main_history(schema: FeatureSchema, name: str | None) -> SequenceInput:
    candidates = [s for s in schema.id_sequences if s.target in schema.categorical_names]
    if name is not None:
        found = [s for s in candidates if s.name == name]
        if not found:
            raise ValueError(f"history_field '{name}' is not an id sequence with a categorical target; "
                             f"candidates: {[s.name for s in candidates]}")  # fmt: skip
        return found[0]
    main = [s for s in candidates if s.parallel_to is None] or candidates
    if not main:
        raise ValueError("GateSID needs a behaviour sequence whose `target` is a categorical field")
    return main[0]


@register("gatesid")
class GateSID(Model):
    paper = (
        "Zhu et al., GateSID: Adaptive Gating for Semantic-Collaborative Alignment in Cold-Start Recommendation, arXiv 2603.22916"
    )
    Config = GateSIDConfig
    inputs = ModelInputs(min_categorical=2, needs_target_sequence=True)
    smoke_overrides = {"embedding_dim": 4, "sid_levels": 2, "sid_codebook_size": 4, "content_dim": 2,
                       "gate_hidden_units": [4], "hidden_units": [8]}  # fmt: skip

    @classmethod
    def inputs_for(cls, config: GateSIDConfig) -> ModelInputs:  # type: ignore[override]
        named = tuple(config.content_fields or ())
        return ModelInputs(min_categorical=2, needs_target_sequence=True, named_fields=named)

    def __init__(self, schema: FeatureSchema, config: GateSIDConfig) -> None:
        super().__init__(schema, config)
        names = schema.categorical_names
        self.history = _main_history(schema, config.history_field)
        item_field = self.history.target
        assert item_field is not None
        self.item_index = names.index(item_field)
        if config.content_fields is not None:
            bad = [f for f in config.content_fields if f not in names or f == item_field]
            if bad:
                raise ValueError(f"content_fields: {bad[0]!r} is not a categorical field other than the item field")
            candidates = list(config.content_fields)
        else:
            request = set(schema.request_fields)
            candidates = [n for n in names if n != item_field and n not in request]
        if not candidates:
            raise ValueError("GateSID needs at least one item content field (content_fields)")
        if config.age_field is not None and config.age_field not in schema.numeric:
            raise ValueError(f"age_field {config.age_field!r} is not a numeric column; numeric: {list(schema.numeric)}")
        self.age_column = schema.numeric.index(config.age_field) if config.age_field is not None else None
        d, levels, k = config.embedding_dim, config.sid_levels, config.sid_codebook_size
        vocab = {c.name: c.vocab_size for c in schema.categorical}
        item_vocab = vocab[item_field]
        self.register_buffer("content_columns", torch.tensor([names.index(n) for n in candidates]))
        # which candidate content fields are used (all until `prepare` keeps the item-determined ones)
        self.register_buffer("content_used", torch.ones(len(candidates)))
        gen = torch.Generator().manual_seed(config.sid_seed)
        table, offsets = content_sids.value_tables([vocab[n] for n in candidates], config.content_dim, gen)
        self.register_buffer("content_offsets", offsets)
        self.register_buffer("content_table", table)
        width = len(candidates) * config.content_dim
        self.register_buffer("codebooks", torch.randn(levels, k, width, generator=gen) / width**0.5)
        # the SID of every item id seen in training (k = unknown) and its impressions
        self.register_buffer("item_codes", torch.full((item_vocab, levels), k, dtype=torch.long))
        self.register_buffer("item_impressions", torch.zeros(item_vocab))
        self.register_buffer("impression_scale", torch.ones(()))

        self.embedding = FeatureEmbedding(schema, dim=d, pool_sequences=False, input_norm=config.input_norm)
        self.sid_embedding = nn.Embedding(levels * (k + 1), d)
        nn.init.normal_(self.sid_embedding.weight, std=0.05)
        self.register_buffer("sid_offsets", torch.arange(levels) * (k + 1), persistent=False)
        n_stats = 1 + (self.age_column is not None)
        self.gate_mlp = MLP(2 * d + n_stats, config.gate_hidden_units, output_dim=1) if config.gate == "learned" else None
        self.query_id, self.key_id = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.query_sid, self.key_sid = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.value = nn.Linear(2 * d, d)
        self.other_sequences = [s for s in schema.id_sequences if s.name != self.history.name]
        content_index = {names.index(n) for n in candidates}
        self.other_fields = [
            i for i in range(len(names)) if i != self.item_index and (config.content_in_tower or i not in content_index)
        ]
        self.register_buffer("other_index", torch.tensor(self.other_fields, dtype=torch.long), persistent=False)
        n_other = len(self.other_fields) + len(schema.numeric) + len(self.other_sequences)
        self.mlp_input = d * (2 + n_other)
        self.mlp = MLP.from_config(self.mlp_input, config, output_dim=1)

    # ------------------------------------------------------------------------ semantic IDs
    def content_vectors(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) content-field value indices -> (N, C * content_dim) vectors (unused fields zero)."""
        return content_sids.content_vectors(values, self.content_table, self.content_offsets, self.content_used)

    def encode_sids(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) content values -> (N, levels) codes under the fitted codebooks."""
        return content_sids.encode(self.content_vectors(values), self.codebooks.unbind(0))

    @torch.no_grad()
    def prepare(self, train: SplitArrays, label_index: int = 0) -> None:
        """Fit the SID tokenizer on the training split's items and count their impressions."""
        cfg = self.config
        categorical = np.asarray(train["categorical"])
        items = categorical[:, self.item_index].astype(np.int64)
        content = categorical[:, self.content_columns.numpy()].astype(np.int64)
        item_vocab = self.item_codes.shape[0]
        counts = np.bincount(items, minlength=item_vocab).astype(np.float64)
        counts[:NUM_RESERVED] = 0.0  # padding / OOV / missing: an unknown item is a cold one
        self.item_impressions.copy_(torch.as_tensor(counts, dtype=torch.float32))
        self.impression_scale.fill_(float(np.log1p(counts.max())) or 1.0)
        # one content row per item: its most frequent value of each field; a field is item content
        # when that value covers >= 99 % of the rows
        rows, agree, distinct = content_sids.item_content(items, content, item_vocab)
        used = np.ones(content.shape[1], np.float32) if cfg.content_fields is not None else (agree >= _DETERMINED)
        if used.sum() == 0:
            raise ValueError("GateSID found no item content field: no categorical field is determined by the item "
                             "on the training split; set content_fields")  # fmt: skip
        self.content_used.copy_(torch.as_tensor(used, dtype=torch.float32))
        if len(distinct) == 0:
            return
        x = self.content_vectors(torch.as_tensor(rows[distinct]))
        books = content_sids.fit_codebooks(x, cfg.sid_levels, cfg.sid_codebook_size, cfg.sid_seed)
        self.codebooks.copy_(torch.stack(books))
        codes = content_sids.encode(x, books)
        self.item_codes.fill_(cfg.sid_codebook_size)
        self.item_codes[torch.as_tensor(distinct)] = codes

    def sid_embed(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., levels) codes -> (..., d): the sum of the levels' code embeddings."""
        return self.sid_embedding(codes + self.sid_offsets).sum(-2)

    # ------------------------------------------------------------------------------ forward
    def gate_of(self, e_id: torch.Tensor, e_sid: torch.Tensor, item: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) gate in (0, 1): 1 = trust the item ID (mature), 0 = trust the semantic ID (cold)."""
        if self.config.gate != "learned":
            return e_id.new_full((e_id.shape[0],), 1.0 if self.config.gate == "id" else 0.0)
        stats = [torch.log1p(self.item_impressions[item]) / self.impression_scale]
        if self.age_column is not None:
            stats.append(batch["numeric"][:, self.age_column].to(e_id.dtype))
        assert self.gate_mlp is not None
        return torch.sigmoid(self.gate_mlp(torch.cat([e_id, e_sid, torch.stack(stats, 1)], 1)).squeeze(-1))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        embedded = self.embedding(batch)
        categorical = batch["categorical"].long()
        item = categorical[:, self.item_index]
        e_id = embedded.categorical[:, self.item_index]
        e_sid = self.sid_embed(self.encode_sids(categorical[:, self.content_columns]))
        gate = self.gate_of(e_id, e_sid, item, batch)
        hist = self.history.name
        h_id, mask = embedded.sequences[hist], embedded.masks[hist]
        hist_items = batch[batch_key_seq(hist)].long()
        h_sid = self.sid_embed(self.item_codes[hist_items]) * mask.unsqueeze(-1).to(h_id.dtype)
        scale = cfg.embedding_dim**-0.5
        a_id = self._attention(self.query_id(e_id), self.key_id(h_id), mask, scale)
        a_sid = self._attention(self.query_sid(e_sid), self.key_sid(h_sid), mask, scale)
        weights = gate[:, None] * a_id + (1.0 - gate[:, None]) * a_sid  # (B, L)
        interest = torch.einsum("bl,bld->bd", weights, self.value(torch.cat([h_id, h_sid], -1)))
        represent = gate[:, None] * e_id + (1.0 - gate[:, None]) * e_sid
        parts = [interest, represent, embedded.fields.index_select(1, self.other_index).flatten(1)]
        if embedded.fields.shape[1] > len(self.schema.categorical):
            parts.append(embedded.fields[:, len(self.schema.categorical) :].flatten(1))
        for seq in self.other_sequences:
            parts.append(masked_mean(embedded.sequences[seq.name], embedded.masks[seq.name]))
        out = {"logit": self.mlp(torch.cat(parts, 1)).squeeze(-1), "gate": gate}
        if self.training:
            out["aux_loss"] = self._aux_loss(e_id, e_sid, gate, item)
        return out

    @staticmethod
    def _attention(query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        """softmax over real positions of <q, k_t> * scale; an empty history gives all zeros."""
        scores = torch.einsum("bd,bld->bl", query, keys) * scale
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return torch.nan_to_num(weights, nan=0.0)

    def _aux_loss(self, e_id: torch.Tensor, e_sid: torch.Tensor, gate: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        loss = e_id.new_zeros(())
        if cfg.align_weight > 0 and len(e_id) > 1:
            logits = F.normalize(e_id, dim=1) @ F.normalize(e_sid, dim=1).T / cfg.align_temperature
            per_item = F.cross_entropy(logits, torch.arange(len(e_id), device=e_id.device), reduction="none")
            loss = loss + cfg.align_weight * ((1.0 - gate.detach()) * per_item).mean()
        if cfg.gate_supervision > 0 and self.gate_mlp is not None:
            mature = (self.item_impressions[item] > cfg.mature_impressions).to(gate.dtype)
            loss = loss + cfg.gate_supervision * F.binary_cross_entropy(gate.clamp(1e-6, 1 - 1e-6), mature)
        return loss

    def mlp_ceiling_spec(self) -> tuple[int, list[int]]:
        return self.mlp_input, list(self.config.hidden_units)
