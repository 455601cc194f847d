"""Agents as a contract (the promotion criteria at registration), the bandit over agents and the
budget ledger."""

from __future__ import annotations

import math

import pytest

from agenticrs.agents.bandit import LedgerEntry, choose_agent, ledger, rewards, ucb
from agenticrs.agents.contract import (
    AGENTS,
    Agent,
    AgentRegistrationError,
    DecisionSpace,
    Outcome,
    agent_names,
    check_agent,
    register_agent,
)
from agenticrs.agents.proposers.base import ProposalOutcome


class _Complete(Agent):
    name = "probe"
    kind = "probe"
    action_kinds = ("nudge",)

    def decision_space(self, context):
        return DecisionSpace({"nudge": (1, 2)})

    def propose(self, context):
        return ProposalOutcome(None)

    def evaluate(self, outcome: Outcome) -> float:
        return 1.0


def test_builtin_agents_are_registered_in_order():
    assert agent_names()[:3] == ["train", "feature", "perf"]
    for name in ("train", "feature", "perf"):
        check_agent(AGENTS[name])  # the shipped agents pass their own criteria


def test_an_agent_without_an_evaluator_is_refused():
    class NoEvaluator(Agent):
        name, kind, action_kinds = "noeval", "x", ("a",)

        def decision_space(self, context):
            return DecisionSpace({"a": (1,)})

        def propose(self, context):
            return ProposalOutcome(None)

    with pytest.raises(AgentRegistrationError, match="evaluator"):
        register_agent(NoEvaluator)
    assert "noeval" not in AGENTS


def test_an_agent_with_an_empty_decision_space_is_refused():
    class Empty(_Complete):
        name = "empty"
        action_kinds = ()

    with pytest.raises(AgentRegistrationError, match="decision space is empty"):
        register_agent(Empty)


def test_an_agent_that_does_not_act_is_refused():
    class Passive(Agent):
        name, kind, action_kinds = "passive", "x", ("a",)

        def decision_space(self, context):
            return DecisionSpace({"a": (1,)})

        def evaluate(self, outcome):
            return 0.0

    with pytest.raises(AgentRegistrationError, match="closed loop"):
        register_agent(Passive)


def test_a_complete_agent_registers_and_a_non_agent_does_not():
    try:
        register_agent(_Complete)
        assert AGENTS["probe"] is _Complete
        assert "probe" in agent_names()
    finally:
        AGENTS.unregister("probe")
    with pytest.raises(AgentRegistrationError, match="not an Agent"):
        register_agent(object)  # type: ignore[arg-type]


def test_decision_space_size_counts_options():
    assert DecisionSpace({"a": (1, 2), "b": ()}).size == 2
    assert DecisionSpace().size == 0


# -- the bandit and the ledger --------------------------------------------------------------------


def test_rewards_standardise_inner_and_outer():
    entries = [LedgerEntry("train", 1.0, True, 2.0, 0.1), LedgerEntry("feature", 1.0, False, 0.0, -0.1)]
    # inner std = 1.0, outer std = 0.1: z(inner) + 0.5 z(outer)
    assert rewards(entries, beta=0.5) == pytest.approx([2.0 + 0.5, 0.0 - 0.5])
    # an action without an outer reading contributes 0 for it
    assert rewards([LedgerEntry("train", 1.0, True, 3.0)], beta=0.5) == pytest.approx([1.0])


def test_untried_agents_go_first_in_order_then_ucb():
    agents = ["train", "feature", "perf"]
    assert choose_agent(agents, []) == "train"
    assert choose_agent(agents, [LedgerEntry("train", 1, False, 0.0)]) == "feature"
    entries = [LedgerEntry("train", 1, False, -1.0), LedgerEntry("feature", 1, True, 1.0),
               LedgerEntry("perf", 1, False, -1.0)]
    assert choose_agent(agents, entries) == "feature"
    books = ledger(agents, entries)
    scores = ucb(books, exploration=1.0)
    bonus = math.sqrt(2 * math.log(3))
    std = math.sqrt(8 / 9)  # population std of (-1, 1, -1): rewards are standardised
    assert scores["feature"] == pytest.approx(1.0 / std + bonus)
    assert scores["train"] == pytest.approx(-1.0 / std + bonus)


def test_budget_ledger_counts_and_excludes_spent_agents():
    entries = [LedgerEntry("train", 30.0, True, 1.0), LedgerEntry("train", 40.0, False, 0.5),
               LedgerEntry("feature", 5.0, True, 2.0)]
    books = ledger(["train", "feature"], entries, {"train": 60.0})
    assert books["train"].spent_s == 70.0 and books["train"].actions == 2 and books["train"].accepted == 1
    assert books["train"].exhausted and not books["feature"].exhausted
    assert choose_agent(["train", "feature"], entries, {"train": 60.0}) == "feature"
    assert choose_agent(["train", "feature"], entries, {"train": 60.0, "feature": 5.0}) is None
    assert choose_agent(["train", "feature"], entries, exclude=["feature"]) == "train"
    with pytest.raises(ValueError, match="not running"):
        ledger(["train"], entries, {"perf": 1.0})
