"""Proposers: the built-in mutator, Optuna TPE and an LLM, behind one interface (`base.Proposer`)."""

from __future__ import annotations

from typing import Any

from agenticrs.agents.proposers.base import (
    HistoryEntry,
    Proposal,
    ProposalContext,
    ProposalOutcome,
    Proposer,
)
from agenticrs.agents.proposers.builtin import BuiltinProposer, candidate_problems
from agenticrs.agents.proposers.llm import LLMProposer, LLMSettings
from agenticrs.agents.proposers.optuna_tpe import (
    OptunaProposer,  # imports optuna only when proposing
)

PROPOSER_NAMES = ("builtin", "optuna", "llm")


def make_proposer(name: str, **settings: Any) -> Proposer:
    """A proposer by name ("builtin" | "optuna" | "llm") with its settings as keyword arguments."""
    if name == "builtin":
        factory: Any = BuiltinProposer
    elif name == "optuna":
        factory = OptunaProposer
    elif name == "llm":
        factory = LLMProposer
    else:
        raise ValueError(f"unknown proposer '{name}'; known proposers: {', '.join(PROPOSER_NAMES)}")
    try:
        return factory(**settings)
    except TypeError as exc:
        raise ValueError(f"invalid settings for proposer '{name}' ({sorted(settings)}): {exc}") from None


__all__ = [
    "PROPOSER_NAMES",
    "BuiltinProposer",
    "HistoryEntry",
    "LLMProposer",
    "LLMSettings",
    "OptunaProposer",
    "Proposal",
    "ProposalContext",
    "ProposalOutcome",
    "Proposer",
    "candidate_problems",
    "make_proposer",
]
