"""Contracts of the generative-recommendation layer (`agenticrs.gr`).

- **Items** are integers 1..num_items; 0 is padding everywhere.
- **Sequences** (`SequenceData`) are users' chronological item lists in CSR form (`offsets`,
  `items`), with optional item text and attribute bags. Leave-one-out: the last item of a user is
  the test target, the second-to-last the validation target, the rest trains.
- **Batches** for sequential models are plain dicts of tensors: `history` (B, L) item ids,
  right-aligned (the most recent item last, zeros on the left), `user` (B,) user ids, and for
  training `target` (B,) (the next item) or `targets` (B, L) (next item at every position, 0 =
  no loss).
- A **sequential model** (`SequentialModel`) returns a scalar training loss from a batch and a
  ranked top-k item list (B, k) from a history; full-ranking models score every item, generative
  models decode semantic IDs with a prefix trie. Evaluation never special-cases a model.
- **Behaviours** (optional, `SequenceData.behaviours`, parallel to `items`): the type of each event,
  `CLICK`, `CART`, `FAV` or `PURCHASE` (0 = unknown). Multi-behaviour data (the simulator's events,
  Taobao UserBehavior) carries them; batches then hold `history_behaviour` (B, L) beside `history`
  and `target_behaviour` (B,) beside `target`. Models that ignore behaviours never read them.
- **Timestamps** (optional, `SequenceData.timestamps`, parallel to `items`): each event's time in
  seconds (the simulator's events, Taobao UserBehavior; the Amazon and Yelp sets are order-only).
  Batches then hold `timestamps` (B, L) aligned with `history` (0 under padding) and
  `target_timestamp` (B,); HSTU's relative time bias reads them.
- **Semantic IDs** (`SemanticIds`): codes (num_items + 1, levels) int64, row 0 unused; every item's
  code tuple is unique (the last level is the collision digit when one is needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

PAD = 0
# behaviour types of multi-behaviour sequences (0: unknown / padding)
CLICK, CART, FAV, PURCHASE = 1, 2, 3, 4
BEHAVIOURS = {"click": CLICK, "cart": CART, "fav": FAV, "purchase": PURCHASE}
NUM_BEHAVIOURS = 5  # including 0
SeqBatch = dict[str, torch.Tensor]


@dataclass
class SequenceData:
    """Users' item sequences (CSR) and what we know about the items."""

    name: str
    num_items: int
    users: np.ndarray  # (U,) int64 user ids
    offsets: np.ndarray  # (U + 1,) int64
    items: np.ndarray  # (offsets[-1],) int64 in 1..num_items
    item_text: dict[int, str] = field(default_factory=dict)  # item id -> title/genres/brand text
    attribute_offsets: np.ndarray | None = None  # (num_items + 2,) CSR over item ids 0..num_items
    attributes: np.ndarray | None = None  # attribute ids per item
    behaviours: np.ndarray | None = None  # (offsets[-1],) int64 event types (CLICK..PURCHASE), parallel to items
    timestamps: np.ndarray | None = None  # (offsets[-1],) int64 event times in seconds, parallel to items

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


# per-event arrays that travel with the items: SequenceData / EvalExamples attribute -> the batch
# keys of the history's values (B, L) and of the target's (B,)
EVENT_FIELDS: dict[str, tuple[str, str]] = {
    "behaviours": ("history_behaviour", "target_behaviour"),
    "timestamps": ("timestamps", "target_timestamp"),
}


@dataclass(frozen=True)
class SemanticIds:
    """Every item's code tuple (unique) and the size of each level's vocabulary."""

    codes: np.ndarray  # (num_items + 1, levels) int64; row 0 (padding) is all zeros and unused
    vocab_sizes: tuple[int, ...]  # per level

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1


class SequentialConfig(BaseModel):
    """Base of every sequential model's typed hyper-parameters."""

    model_config = ConfigDict(extra="forbid")

    max_len: int = 50


class SequentialModel(nn.Module):
    name: ClassVar[str] = ""
    task: ClassVar[str] = "sequential"
    train_defaults: ClassVar[dict] = {}
    paper: ClassVar[str] = ""
    Config: ClassVar[type[SequentialConfig]] = SequentialConfig
    # training examples the trainer builds (`agenticrs.gr.sequences.next_item_batches`): "sequence" =
    # one shifted window per user (SASRec-style, `targets` at every position); "prefixes" = one
    # example per (user, position), for models that only read `target` (e.g. TIGER)
    train_examples: ClassVar[Literal["sequence", "prefixes"]] = "sequence"

    def loss(self, batch: SeqBatch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def start_fine_tuning(self) -> None:
        """Called once the weights of the run a fine-tuning run starts from (`init_from`) are
        loaded, before any checkpoint of the new run: state that must be the starting weights'
        (GRC's frozen GRPO reference policy) is made here, so a resumed run keeps it. Default: none."""

    def prepare_data(self, train: SequenceData, data: SequenceData) -> None:
        """Statistics of the training part the model is built around (the two-tower's item
        frequencies and attribute bags), called once by the sequential task before the first
        step; store them in buffers so that they are saved with the weights. Default: none."""

    @torch.no_grad()
    def score_all(self, batch: SeqBatch) -> torch.Tensor:  # pragma: no cover - abstract
        """(B, num_items + 1) scores of every item, padding column 0 at -inf (models that score)."""
        raise NotImplementedError

    @torch.no_grad()
    def recommend(self, batch: SeqBatch, k: int) -> torch.Tensor:
        """(B, k) item ids, best first, no padding id, no duplicates. Default: the top k of
        `score_all`; a model that decodes instead of scoring (TIGER) overrides it."""
        scores = self.score_all(batch)
        if not 1 <= k <= scores.shape[1] - 1:
            raise ValueError(f"k must lie in 1..{scores.shape[1] - 1} (the number of items), got {k}")
        return scores.topk(k, dim=1).indices
