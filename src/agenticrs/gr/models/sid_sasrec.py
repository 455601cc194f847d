"""SID-SASRec: SASRec whose items are known only through their semantic IDs (a diagnostic model).

Not one paper's model: the unigram semantic-ID embedding of Singh et al., "Better Generalization
with Semantic IDs: A Case Study in Ranking for Recommendations" (RecSys 2024; an item's embedding
is built from the embeddings of its codes instead of a per-item row), put into SASRec. Why it is in
the zoo: TIGER both reads and generates items as their semantic IDs. SID-SASRec reads and scores
them through the same IDs but keeps SASRec's encoder, full-softmax training and full ranking, so
on one data set and seed SASRec -> SID-SASRec is what the IDs cost a model that only knows items by
them, and SID-SASRec -> TIGER what generative decoding (and TIGER's encoder-decoder) costs.

Ours:
- Item vector = sum over every ID level of one code-embedding table's rows (level l's code c is row
  ``sum(V_<l) + c``, so the same code at two levels is two rows), the collision digit included: items
  that share a code tuple still differ, by a digit that carries no content, as in TIGER. Row 0
  (padding) is zero. The vectors enter the sequence and score the items exactly where SASRec uses
  its item table (`item_vectors` / `embed_items`); everything else is SASRec's (`loss`, dropout,
  positions, blocks, `score_all`).
- `item_id_embedding=True` adds SASRec's own per-item row to that sum (IDs and SIDs together).
- Code embeddings start at N(0, 1 / (d * levels)) so that their sum has the scale of SASRec's
  item rows (N(0, 1 / d)).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from agenticrs.gr.base import PAD, SemanticIds
from agenticrs.gr.models.sasrec import SASRec, SASRecConfig
from agenticrs.gr.zoo import register_sequential


class SIDSASRecConfig(SASRecConfig):
    item_id_embedding: bool = False  # also a per-item row (IDs + SIDs); off = items only through their codes


@register_sequential("sid_sasrec")
class SIDSASRec(SASRec):
    paper: ClassVar[str] = (
        "SASRec (Kang & McAuley, ICDM 2018) with the semantic-ID item embeddings of Singh et al., RecSys 2024"
    )
    Config = SIDSASRecConfig

    def __init__(self, num_items: int, config: SIDSASRecConfig, semantic_ids: SemanticIds) -> None:
        super().__init__(num_items, config)
        if semantic_ids.num_items != num_items:
            raise ValueError(f"semantic IDs cover {semantic_ids.num_items} items, the data set has {num_items}")
        if not config.item_id_embedding:
            del self.item  # items exist only through their codes
        vocab = torch.tensor([int(v) for v in semantic_ids.vocab_sizes], dtype=torch.long)
        self.register_buffer("sid_codes", torch.as_tensor(semantic_ids.codes, dtype=torch.long).clone())
        self.register_buffer("code_offsets", torch.cumsum(vocab, 0) - vocab, persistent=False)
        self.code = nn.Embedding(int(vocab.sum()), config.dim)
        nn.init.normal_(self.code.weight, std=(config.dim * len(vocab)) ** -0.5)

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., d) the sum of each item's code embeddings (zero for padding), plus its own row if kept."""
        vectors = self.code(self.sid_codes[ids] + self.code_offsets).sum(-2) * (ids != PAD).unsqueeze(-1)
        return vectors + self.item(ids) if self.config.item_id_embedding else vectors

    def item_vectors(self) -> torch.Tensor:
        return self.embed_items(torch.arange(self.num_items + 1, device=self.sid_codes.device))
