"""Proposers: the built-in mutator, Optuna TPE and an LLM, behind one interface (`base.Proposer`).

They are registered by name in `PROPOSERS` (an `agenticrs.runtime.Registry`), so a new proposer is
one `PROPOSERS.register("name", factory)` away from `--proposer name`."""

from __future__ import annotations

from collections.abc import Callable
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
from agenticrs.runtime.registry import Registry

# name -> factory taking the proposer's settings as keyword arguments
PROPOSERS: Registry[Callable[..., Proposer]] = Registry("proposer")
PROPOSERS.register("builtin", BuiltinProposer)
PROPOSERS.register("optuna", OptunaProposer)
PROPOSERS.register("llm", LLMProposer)

# the built-in proposers, in the order they are offered (the default first)
PROPOSER_NAMES = ("builtin", "optuna", "llm")


def make_proposer(name: str, **settings: Any) -> Proposer:
    """A registered proposer by name ("builtin" | "optuna" | "llm" | ...) with its settings as keyword arguments."""
    if name not in PROPOSERS:  # a ValueError, like bad settings: both are bad user input
        known = [*PROPOSER_NAMES, *(n for n in PROPOSERS.names() if n not in PROPOSER_NAMES)]
        raise ValueError(f"unknown proposer '{name}'; known proposers: {', '.join(known)}")
    factory = PROPOSERS[name]
    try:
        return factory(**settings)
    except TypeError as exc:
        raise ValueError(f"invalid settings for proposer '{name}' ({sorted(settings)}): {exc}") from None


__all__ = [
    "PROPOSERS",
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
