"""Which agent acts next: a UCB1 bandit over agents, and the budget ledger that bounds each.

The ledger is the knowledge layer's `agent_actions` table (one row per round: the agent, what its
action cost, whether it was accepted, its inner reward and, once measured, the outer reward), so a
resumed evolution continues with the statistics it had.

Reward of one finished action: ``z(inner) + beta * z(outer)`` (agentic_system.md §2), where ``z``
divides by the standard deviation of all finished actions' values of that reward (across agents:
one scale, so agents compare), and an action without an outer reading contributes 0 for it.
Untried agents go first, in the given order; then ``mean + c * sqrt(2 ln N / n)``. An agent
whose budget (seconds, from the ledger) is spent is not chosen; none left: the evolution stops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agenticrs.agents.proposers.builtin import spread


@dataclass(frozen=True)
class LedgerEntry:
    """One finished agent action as the bandit sees it."""

    agent: str
    cost_s: float
    accepted: bool
    inner: float | None
    outer: float | None = None


@dataclass
class AgentBudget:
    """What one agent has spent and may spend (None: unbounded)."""

    agent: str
    limit_s: float | None
    spent_s: float = 0.0
    actions: int = 0
    accepted: int = 0
    rewards: list[float] = field(default_factory=list)

    @property
    def exhausted(self) -> bool:
        return self.limit_s is not None and self.spent_s >= self.limit_s


def rewards(entries: Sequence[LedgerEntry], beta: float = 0.5) -> list[float]:
    """The standardised reward of each entry (`z(inner) + beta * z(outer)`)."""
    inner = [e.inner for e in entries if e.inner is not None and math.isfinite(e.inner)]
    outer = [e.outer for e in entries if e.outer is not None and math.isfinite(e.outer)]
    s_in, s_out = spread(inner), spread(outer)
    out = []
    for e in entries:
        r = (e.inner / s_in) if e.inner is not None and math.isfinite(e.inner) else 0.0
        if e.outer is not None and math.isfinite(e.outer):
            r += beta * e.outer / s_out
        out.append(r)
    return out


def ledger(agents: Sequence[str], entries: Sequence[LedgerEntry], limits: dict[str, float] | None = None,
           beta: float = 0.5) -> dict[str, AgentBudget]:  # fmt: skip
    """Per agent: spent seconds, actions, acceptances and rewards so far."""
    limits = limits or {}
    unknown = sorted(set(limits) - set(agents))
    if unknown:
        raise ValueError(f"agent budgets name agents that are not running: {unknown} (running: {list(agents)})")
    books = {a: AgentBudget(a, limits.get(a)) for a in agents}
    for entry, reward in zip(entries, rewards(entries, beta)):
        book = books.get(entry.agent)
        if book is None:  # an agent of an earlier run of this intent that is not enabled now
            continue
        book.spent_s += entry.cost_s
        book.actions += 1
        book.accepted += int(entry.accepted)
        book.rewards.append(reward)
    return books


def ucb(books: dict[str, AgentBudget], exploration: float = 1.0) -> dict[str, float | None]:
    """UCB1 score per agent; None for an agent that has not acted yet."""
    total = sum(b.actions for b in books.values())
    scores: dict[str, float | None] = {}
    for name, book in books.items():
        if not book.rewards:
            scores[name] = None
            continue
        bonus = exploration * math.sqrt(2.0 * math.log(max(total, 1)) / len(book.rewards))
        scores[name] = float(np.mean(book.rewards)) + bonus
    return scores


def choose_agent(agents: Sequence[str], entries: Sequence[LedgerEntry], limits: dict[str, float] | None = None,
                 exploration: float = 1.0, beta: float = 0.5, exclude: Sequence[str] = ()) -> str | None:  # fmt: skip
    """The agent that acts next (None: every agent's budget is spent or excluded)."""
    books = ledger(agents, entries, limits, beta)
    open_ = [a for a in agents if not books[a].exhausted and a not in exclude]
    if not open_:
        return None
    scores = ucb({a: books[a] for a in open_}, exploration)
    untried = [a for a in open_ if scores[a] is None]
    if untried:
        return untried[0]
    return max(open_, key=lambda a: (scores[a], -open_.index(a)))  # type: ignore[arg-type]
