"""The proposer interface: context in, a candidate out.

A proposer sees the incumbent, the typed search space, the history of this intent (every
candidate with its gains and verdict) and the lessons recorded so far; it answers with one new
candidate (data, validated against the space by the coordinator) or with nothing, plus lessons
about what went wrong (an LLM answer that did not parse, a space with nothing left to try).
Proposers are deterministic for a seed and the history they are given, which is what makes a
killed `evolve` resume to the same champion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.space import SearchSpace
from agenticrs.features.schema import FeatureSchema


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier candidate of the intent and what became of it."""

    candidate: Candidate
    config_hash: str
    proposer: str
    mutation: str | None
    status: str  # invalid | failed | rejected | accepted | promoted | trained | proposed
    improvement: float | None = None  # predicted M-ensemble Brier gain vs its incumbent (G_acc+G_div+shift)
    gain_accuracy: float | None = None
    gain_diversity: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class ProposalContext:
    incumbent: Candidate
    incumbent_hash: str
    space: SearchSpace
    schema: FeatureSchema
    history: tuple[HistoryEntry, ...]
    lessons: tuple[str, ...]
    round: int
    seed: int

    @property
    def seen_hashes(self) -> set[str]:
        return {h.config_hash for h in self.history} | {self.incumbent_hash}

    @property
    def rejected_hashes(self) -> set[str]:
        return {h.config_hash for h in self.history if h.status in ("rejected", "invalid", "failed")}


@dataclass(frozen=True)
class Proposal:
    candidate: Candidate
    mutation: str  # the kind of change (model_family, width, ..., llm, optuna)
    rationale: str


@dataclass
class ProposalOutcome:
    proposal: Proposal | None
    lessons: list[str] = field(default_factory=list)


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext) -> ProposalOutcome: ...
