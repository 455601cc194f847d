"""Agents as a contract: what may act in an evolution, checked when it is registered.

The AgenticRS promotion criteria (a module becomes an agent only if it qualifies) are checked by
`register_agent`, so a module that does not qualify is refused with the reason, not discovered
half-way through an evolution:

- **closed loop** — the agent acts: `propose(context)` answers with a candidate (data, never code)
  and it observes what became of its earlier actions through the history in the context;
- **independent evaluation** — `evaluate(outcome)` turns the measured outcome of one of its actions
  (the EnsNAS comparison on the valid split, the AutoPerf profile) into its own scalar metric: its
  inner reward, computed without running the rest of the system;
- **an evolvable decision space** — `decision_space(context)` is typed (`DecisionSpace`: named
  dimensions of options) and `action_kinds` is non-empty; at the start of an evolution the space on
  the actual data is checked again (an agent with nothing to change there is not run).

Every agent reads the knowledge layer through the context the coordinator builds and writes
nothing itself: its proposals are recorded, trained and judged by the coordinator (the same store,
the same gate for every agent).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agenticrs.agents.proposers.base import ProposalContext, ProposalOutcome
from agenticrs.runtime.registry import Registry


class AgentRegistrationError(ValueError):
    """An agent that fails the promotion criteria; the message names the criterion."""


@dataclass(frozen=True)
class DecisionSpace:
    """An agent's typed decision space: dimension -> the options it may choose from."""

    dimensions: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Options summed over dimensions (0: nothing to change)."""
        return sum(len(options) for options in self.dimensions.values())


@dataclass(frozen=True)
class Outcome:
    """What the coordinator measured for one action of an agent (the agent's evaluator reads it)."""

    status: str  # invalid | failed | rejected | accepted | promoted | gate_failed | ...
    improvement: float | None = None  # EnsNAS: predicted M-ensemble Brier gain on valid
    ci_low: float | None = None
    latency_p99_ms: float | None = None  # the candidate's, per 1,000 candidates
    incumbent_latency_p99_ms: float | None = None


class Agent(ABC):
    """One agent of the evolution. Subclasses set `name`, `kind`, `action_kinds`, `acceptance`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # the task kind its rounds are recorded under
    action_kinds: ClassVar[tuple[str, ...]] = ()  # the kinds of change it makes (typed mutations)
    # improve: EnsNAS must show a significant gain; non_inferior: no significant loss (AutoPerf's
    # cheaper models are worth having when they are as good)
    acceptance: ClassVar[Literal["improve", "non_inferior"]] = "improve"

    @abstractmethod
    def decision_space(self, context: ProposalContext) -> DecisionSpace:
        """The options it has around `context.incumbent` on this data (typed, possibly empty)."""

    @abstractmethod
    def propose(self, context: ProposalContext) -> ProposalOutcome:
        """One new candidate (or none, with lessons): the agent's action."""

    @abstractmethod
    def evaluate(self, outcome: Outcome) -> float:
        """Its inner reward for one action, from its own metric."""


def check_agent(cls: type[Agent]) -> None:
    """The promotion criteria; an `AgentRegistrationError` naming the first one that fails."""
    if not isinstance(cls, type) or not issubclass(cls, Agent):
        raise AgentRegistrationError(f"{cls!r} is not an Agent subclass")
    if not cls.name or not cls.kind:
        raise AgentRegistrationError(f"agent {cls.__name__} needs a name and a task kind")
    for method, criterion in (("propose", "a closed loop: it must act (propose)"),
                              ("evaluate", "an evaluator returning its own metric (evaluate)"),
                              ("decision_space", "a typed decision space (decision_space)")):  # fmt: skip
        fn = getattr(cls, method, None)
        if fn is None or getattr(fn, "__isabstractmethod__", False) or not callable(fn):
            raise AgentRegistrationError(f"agent '{cls.name}' is refused: it has no {criterion}")
    if not cls.action_kinds:
        raise AgentRegistrationError(f"agent '{cls.name}' is refused: its decision space is empty (no action_kinds)")
    if cls.acceptance not in ("improve", "non_inferior"):
        raise AgentRegistrationError(f"agent '{cls.name}': acceptance must be 'improve' or 'non_inferior'")
    if inspect.isabstract(cls):
        raise AgentRegistrationError(f"agent '{cls.name}' is abstract: {sorted(cls.__abstractmethods__)}")


def _load_agents() -> None:
    from agenticrs.agents import team  # noqa: F401 - registers the built-in agents


AGENTS: Registry[type[Agent]] = Registry("agent", loader=_load_agents)

# the built-in agents in the order they are offered and first tried
AGENT_ORDER = ("train", "feature", "perf")


def register_agent(cls: type[Agent]) -> type[Agent]:
    """Register an agent class (as a decorator too) after checking the promotion criteria."""
    check_agent(cls)
    AGENTS.register(cls.name, cls)
    return cls


def agent_names() -> list[str]:
    """Registered agents, the built-in ones first in their order."""
    names = AGENTS.names()
    return [n for n in AGENT_ORDER if n in names] + [n for n in names if n not in AGENT_ORDER]
