"""The built-in agents: AutoTrain, AutoFeature and AutoPerf (registered in `AGENTS`).

- **AutoTrain** (`train`): architecture and training changes of the incumbent through the intent's
  proposer (built-in mutations, Optuna or an LLM); inner reward: the EnsNAS predicted gain.
- **AutoFeature** (`feature`): one typed feature action added to the incumbent with its model
  fixed (a cross of two categorical fields, a bucketised numeric field, a sequence aggregate or
  length, a text embedding, semantic-ID codes, dropping a field), chosen from the data profile;
  judged by EnsNAS exactly like an architecture change; inner reward: the EnsNAS predicted gain.
- **AutoPerf** (`perf`): a cheaper neighbour of the incumbent (narrower, shallower, smaller
  embeddings, a lighter model family), accepted when EnsNAS shows no significant loss; inner
  reward: the measured p99 latency saved, relative to the incumbent's.

Within an agent, the kind of change is picked by the same UCB1 over past rewards the built-in
proposer uses (`ucb_scores`), so each agent learns from its own history which changes pay.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.contract import Agent, DecisionSpace, Outcome, register_agent
from agenticrs.agents.proposers.base import Proposal, ProposalContext, ProposalOutcome, Proposer
from agenticrs.agents.proposers.builtin import KINDS, MUTATIONS, applicable_kinds, candidate_problems, ucb_scores
from agenticrs.agents.space import check

FAILED_REWARD = -0.5  # an invalid or failed action: worse than neutral, in standardised units


def _improvement_reward(outcome: Outcome) -> float:
    if outcome.status in ("invalid", "failed"):
        return FAILED_REWARD
    value = outcome.improvement
    return float(value) if value is not None and math.isfinite(value) else 0.0


@register_agent
class TrainAgent(Agent):
    """AutoTrain: the architecture and training search (EnsNAS acceptance)."""

    name = "train"
    kind = "arch"
    action_kinds = KINDS

    def __init__(self, proposer: Proposer) -> None:
        self.proposer = proposer

    def decision_space(self, context: ProposalContext) -> DecisionSpace:
        described = context.space.describe(context.schema)
        dims = {kind: (kind,) for kind in applicable_kinds(context.incumbent.model)}
        dims["model_family"] = tuple(described["models"])
        return DecisionSpace({k: v for k, v in dims.items() if v})

    def propose(self, context: ProposalContext) -> ProposalOutcome:
        return self.proposer.propose(context)

    def evaluate(self, outcome: Outcome) -> float:
        return _improvement_reward(outcome)


# ---------------------------------------------------------------------------------------------
# AutoFeature


FEATURE_KINDS = ("cross", "bucketize", "sequence_aggregate", "sequence_length", "text_embedding", "semantic_id", "drop")


@register_agent
class FeatureAgent(Agent):
    """AutoFeature: typed feature actions on a fixed model, chosen from the data profile."""

    name = "feature"
    kind = "feature"
    action_kinds = FEATURE_KINDS

    def __init__(self, options: dict[str, list[Any]], exploration: float = 1.0) -> None:
        """`options`: action kind -> its typed actions, best first (`feature_options`)."""
        self.options = options
        self.exploration = exploration

    def decision_space(self, context: ProposalContext) -> DecisionSpace:
        return DecisionSpace({k: tuple(v) for k, v in self.options.items() if v})

    def propose(self, context: ProposalContext) -> ProposalOutcome:
        kinds = [k for k in FEATURE_KINDS if self.options.get(k)]
        scores = ucb_scores(kinds, context.history, self.exploration)
        order = [k for k in kinds if scores[k] is None] + sorted(
            (k for k in kinds if scores[k] is not None), key=lambda k: -scores[k])  # type: ignore[operator]
        seen = context.seen_hashes
        have = [a.model_dump(mode="json") for a in context.incumbent.features]
        for kind in order:
            for action in self.options[kind]:
                if action.model_dump(mode="json") in have:
                    continue
                candidate = context.incumbent.model_copy(update={"features": [*context.incumbent.features, action]})
                candidate = Candidate.model_validate(candidate.model_dump())
                if candidate.config_hash(strict=False) in seen:
                    continue
                score = scores[kind]
                why = "untried kind" if score is None else f"UCB {score:.3f}"
                return ProposalOutcome(Proposal(candidate, kind, f"{kind}: {describe_action(action)} [{why}]"))
        return ProposalOutcome(None, ["feature agent: every feature action of the profile was already tried"])

    def evaluate(self, outcome: Outcome) -> float:
        return _improvement_reward(outcome)


def describe_action(action: Any) -> str:
    fields = {k: v for k, v in action.model_dump(mode="json").items() if k != "kind"}
    return f"{action.kind}(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def feature_options(data: Any, profile: Any, label: str | None = None, max_crosses: int = 8,
                    max_fields: int = 24) -> dict[str, list[Any]]:  # fmt: skip
    """The typed actions AutoFeature may take on this data, best first per kind.

    Crosses: pairs of (up to `max_fields`) categorical fields, ranked by their interaction
    information with the label (what the pair says beyond each field alone), the top `max_crosses`
    with a positive value. Bucketisation: numeric fields by mutual information.
    Drops: the least informative fields first (never a flagged leak: leaks are dropped up front).
    Sequences: length and aggregates of each id sequence. Text fields: an embedding and semantic IDs."""
    from agenticrs.agents.autofeature.profile import cross_information
    from agenticrs.features import actions as fa

    schema = data.schema
    leaks = {f.name for f in profile.leaks}
    by_mi = sorted((f for f in profile.fields if f.name not in leaks), key=lambda f: -f.mutual_information)
    # every categorical field is a cross candidate, not only the informative ones: a pure interaction
    # (each field alone says nothing) is exactly what a cross is for
    categorical = [f.name for f in profile.fields
                   if f.kind == "categorical" and f.name in schema.categorical_names and f.name not in leaks][:max_fields]
    scored = []
    for i, a in enumerate(categorical):
        for b in categorical[i + 1:]:
            gain = cross_information(data, a, b, label)
            if gain > 0:
                scored.append((gain, a, b))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    options: dict[str, list[Any]] = {k: [] for k in FEATURE_KINDS}
    options["cross"] = [fa.Cross(fields=(a, b)) for _, a, b in scored[:max_crosses]]
    options["bucketize"] = [fa.Bucketize(field=f.name, method="quantile") for f in by_mi if f.kind == "numeric"]
    for seq in schema.id_sequences:
        if seq.max_len > 4:
            options["sequence_length"].append(fa.SequenceLength(sequence=seq.name, max_len=max(2, seq.max_len // 2)))
        options["sequence_aggregate"].append(fa.SequenceAggregate(sequence=seq.name, stat="recency"))
    for text in schema.text:
        options["text_embedding"].append(fa.TextEmbedding(field=text))
        options["semantic_id"].append(fa.SemanticId(field=text))
    options["drop"] = [fa.DropField(field=f.name) for f in reversed(by_mi)
                       if f.kind in ("categorical", "numeric")][:3]  # fmt: skip
    # only what the feature layer accepts on this schema (a parallel sequence is shortened with its
    # main one; an aggregate needs a sequence that has a target or shares a table)
    return {kind: [a for a in actions if not fa.validate_actions([a], schema)] for kind, actions in options.items()}


# ---------------------------------------------------------------------------------------------
# AutoPerf

PERF_KINDS = ("width", "depth", "embedding_dim", "model_family")


@register_agent
class PerfAgent(Agent):
    """AutoPerf: a cheaper incumbent that is as good (EnsNAS non-inferiority)."""

    name = "perf"
    kind = "perf"
    action_kinds = PERF_KINDS
    acceptance = "non_inferior"

    def __init__(self, exploration: float = 1.0) -> None:
        self.exploration = exploration

    def cheaper(self, context: ProposalContext) -> dict[str, list[tuple[int, Candidate, str]]]:
        """Per kind, the neighbours of the incumbent with fewer parameters, fewest first."""
        base = check(context.incumbent, context.space, context.schema)
        limit = base.parameters if base.parameters is not None else math.inf
        found: dict[str, list[tuple[int, Candidate, str]]] = {}
        kinds = [k for k in PERF_KINDS if k in applicable_kinds(context.incumbent.model)]
        for kind in kinds:
            rows = []
            for candidate, change in MUTATIONS[kind](context.incumbent, context.space, context.schema):
                try:
                    candidate = Candidate.model_validate(candidate.model_dump())
                except ValueError:
                    continue
                if candidate_problems(candidate, context.space, context.schema):
                    continue
                report = check(candidate, context.space, context.schema)
                if report.ok and report.parameters is not None and report.parameters < limit:
                    rows.append((report.parameters, candidate, change))
            rows.sort(key=lambda r: (r[0], r[2]))
            found[kind] = rows
        return found

    def decision_space(self, context: ProposalContext) -> DecisionSpace:
        return DecisionSpace({k: tuple(c for _, _, c in rows) for k, rows in self.cheaper(context).items() if rows})

    def propose(self, context: ProposalContext) -> ProposalOutcome:
        options = self.cheaper(context)
        kinds = [k for k in PERF_KINDS if options.get(k)]
        scores = ucb_scores(kinds, context.history, self.exploration)
        rng = np.random.default_rng([context.seed, context.round, 7])
        untried = [kinds[i] for i in rng.permutation(len(kinds)) if scores[kinds[i]] is None]
        order = untried + sorted((k for k in kinds if scores[k] is not None), key=lambda k: -scores[k])  # type: ignore[operator]
        seen = context.seen_hashes
        for kind in order:
            for parameters, candidate, change in options[kind]:
                if candidate.config_hash() in seen:
                    continue
                why = "untried kind" if scores[kind] is None else f"UCB {scores[kind]:.3f}"
                return ProposalOutcome(Proposal(candidate.canonical(), kind,
                                                f"{kind}: {change} ({parameters:,} parameters) [{why}]"))  # fmt: skip
        return ProposalOutcome(None, [f"perf agent: no cheaper neighbour of {context.incumbent.describe()} is left"])

    def evaluate(self, outcome: Outcome) -> float:
        if outcome.status in ("invalid", "failed"):
            return FAILED_REWARD
        if outcome.status in ("rejected", "gate_failed"):
            return 0.0
        new, old = outcome.latency_p99_ms, outcome.incumbent_latency_p99_ms
        if new is None or old is None or old <= 0:
            return 0.0
        return float(1.0 - new / old)
