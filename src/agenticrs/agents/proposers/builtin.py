"""The built-in proposer: typed neighbourhood mutations of the incumbent, picked by a UCB1 bandit.

Each proposal changes the incumbent by one *kind* of mutation:

- ``model_family``: another model of the space that can train on the data set (and on the
  incumbent's input fields), carrying the shared knobs (embedding size, widths, dropout) and
  dropping the model-specific ``model_params``;
- ``width``: one hidden layer, or all of them, to the neighbouring allowed width;
- ``depth``: one hidden layer more (a copy of the last) or less, within the depth bounds;
- ``embedding_dim``: the neighbouring allowed embedding size;
- ``dropout``: +-0.1, clipped to the bounds and rounded to 0.05;
- ``learning_rate``: x2 or /2, clipped to the bounds;
- ``feature_subset``: drop one droppable field, or re-add a dropped one (never below
  ``space.min_fields``, never dropping a protected field; a sequence and the sequences that run
  parallel to it move together);
- ``feature_bagging``: set or move the bagging rate by +-0.1 within ``[feature_bagging_min, 1]``.

Kinds that do not apply to the incumbent's model (no such knob in its ``Config``) are skipped.
The kind is chosen by UCB1 over the kinds that apply: untried kinds first (in an order drawn from
the seed), then by ``mean reward + exploration * sqrt(2 ln N / n_kind)``.

Reward of a past entry (one whose ``mutation`` is that kind): its ``improvement`` (predicted
M-ensemble Brier gain), divided by the standard deviation of all known improvements of the history
so the scale of Brier gains does not matter. An ``invalid`` or ``failed`` entry scores
``INVALID_REWARD`` (-0.5 in those standardised units): worse than a neutral outcome, because such
kinds waste a round, but less bad than a typical clear loss. An entry without an improvement
(proposed or still training) scores 0.

All the neighbours of a kind are enumerated, shuffled with
``np.random.default_rng([seed, round, attempt])`` and the first that is new (hash not in
``context.seen_hashes``) and within the space wins; when a kind has nothing new the next kind
is tried. The proposer is deterministic for (seed, round, history).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from agenticrs.agents.candidate import Candidate, active_knobs
from agenticrs.agents.proposers.base import (
    HistoryEntry,
    Proposal,
    ProposalContext,
    ProposalOutcome,
)
from agenticrs.agents.space import SearchSpace, bounds_problems
from agenticrs.features.schema import FeatureSchema
from agenticrs.features.subset import FieldSubset, field_names, protected_fields
from agenticrs.models.base import make_config, model_class

KINDS = (
    "model_family",
    "width",
    "depth",
    "embedding_dim",
    "dropout",
    "learning_rate",
    "feature_subset",
    "feature_bagging",
)
INVALID_REWARD = -0.5  # standardised reward of an invalid or failed entry
MAX_ATTEMPTS = 64  # kinds tried per proposal (each enumerates its whole neighbourhood)

Change = tuple[Candidate, str]  # a neighbour and a description of the change


# ---------------------------------------------------------------------------------------------
# shared checks


def model_knob_names(model: str) -> set[str]:
    """The knobs the model really has (its Config fields, less the inert ones)."""
    return active_knobs(model)


def input_problems(candidate: Candidate, schema: FeatureSchema) -> list[str]:
    """Whether the model can train on the candidate's input fields (no model is built)."""
    try:
        narrowed = (
            FieldSubset.select(schema, candidate.input_fields).schema if candidate.input_fields is not None else schema
        )
    except ValueError as exc:
        return [str(exc)]
    cls = model_class(candidate.model)
    try:  # the needs of this config (a composition needs what its blocks need)
        needs = cls.inputs_for(make_config(candidate.model, candidate.model_knobs()))
    except (ValueError, KeyError):  # an invalid config is the bounds check's to report
        needs = cls.inputs
    problems = needs.problems(narrowed)
    scope = "on the selected input fields" if candidate.input_fields is not None else "on this data set"
    return [f"model '{candidate.model}' cannot train {scope}: {p}" for p in problems]


def candidate_problems(candidate: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[str]:
    """The cheap static checks a proposal must pass: space bounds and the model's declared inputs.

    (The coordinator's `space.check` adds the parameter and latency budgets.)"""
    problems = bounds_problems(candidate, space, schema)
    if candidate.model in space.models:
        problems += input_problems(candidate, schema)
    return problems


def seen_reason(context: ProposalContext, config_hash: str) -> str:
    """Why a hash counts as seen (for lessons)."""
    if config_hash == context.incumbent_hash:
        return "it is the incumbent"
    for entry in reversed(context.history):
        if entry.config_hash == config_hash:
            why = f": {entry.reason}" if entry.reason else ""
            return f"it was already tried ({entry.status}{why})"
    return "it was already tried"


# ---------------------------------------------------------------------------------------------
# field units (a sequence moves with the sequences parallel to it)


def field_units(schema: FeatureSchema) -> list[tuple[str, ...]]:
    """Selectable fields grouped into the units a subset adds or drops together."""
    names = field_names(schema)
    parallels: dict[str, list[str]] = {}
    for seq in schema.sequences:
        if seq.parallel_to:
            parallels.setdefault(seq.parallel_to, []).append(seq.name)
    attached = {n for group in parallels.values() for n in group}
    return [(name, *parallels.get(name, [])) for name in names if name not in attached]


def _subset(schema: FeatureSchema, keep: set[str]) -> list[str] | None:
    names = field_names(schema)
    chosen = [n for n in names if n in keep]
    return None if len(chosen) == len(names) else chosen


def _fmt_list(values: list[Any]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def _neighbours_in(values: list[Any], current: Any) -> list[Any]:
    """The values next to `current` in the sorted list (nearest ones when it is not in it)."""
    ordered = sorted(set(values))
    if current in ordered:
        i = ordered.index(current)
        return [ordered[j] for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
    lower = [v for v in ordered if v < current]
    upper = [v for v in ordered if v > current]
    return ([lower[-1]] if lower else []) + ([upper[0]] if upper else [])


def _round_to(value: float, step: float) -> float:
    return round(round(value / step) * step, 10)


# ---------------------------------------------------------------------------------------------
# mutations: each returns every neighbour of its kind (may be empty)


def _model_family(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    out = []
    for name in space.compatible_models(schema):
        if name == base.model:
            continue
        moved = base.model_copy(update={"model": name, "model_params": {}})
        moved = snap_to_space(moved, space)
        note = " (model_params reset)" if base.model_params else ""
        out.append((moved, f"model {base.model} -> {name}{note}"))
    return out


def _width(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    units = list(base.hidden_units)
    out = []
    for direction in (-1, 1):
        # all layers one step
        moved_all = [_step(w, space.widths, direction) for w in units]
        if None not in moved_all and moved_all != units:
            out.append((base.model_copy(update={"hidden_units": moved_all}), moved_all))
        # one layer one step
        for i, w in enumerate(units):
            new = _step(w, space.widths, direction)
            if new is not None and new != w:
                changed = units[:i] + [new] + units[i + 1 :]
                out.append((base.model_copy(update={"hidden_units": changed}), changed))
    seen, result = set(), []
    for cand, changed in out:
        key = tuple(changed)
        if key not in seen:
            seen.add(key)
            result.append((cand, f"hidden_units {_fmt_list(units)} -> {_fmt_list(changed)}"))
    return result


def _step(value: int, allowed: list[int], direction: int) -> int | None:
    ordered = sorted(set(allowed))
    if value in ordered:
        j = ordered.index(value) + direction
        return ordered[j] if 0 <= j < len(ordered) else None
    side = [v for v in ordered if (v < value if direction < 0 else v > value)]
    if not side:
        return None
    return side[-1] if direction < 0 else side[0]


def _depth(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    units = list(base.hidden_units)
    out = []
    if len(units) < min(space.depth_max, 8):
        grown = units + [units[-1]]
        out.append((base.model_copy(update={"hidden_units": grown}), grown))
    if len(units) > space.depth_min:
        for i in range(len(units)):
            shrunk = units[:i] + units[i + 1 :]
            out.append((base.model_copy(update={"hidden_units": shrunk}), shrunk))
    seen, result = set(), []
    for cand, changed in out:
        if tuple(changed) not in seen:
            seen.add(tuple(changed))
            result.append((cand, f"hidden_units {_fmt_list(units)} -> {_fmt_list(changed)}"))
    return result


def _embedding_dim(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    return [
        (base.model_copy(update={"embedding_dim": d}), f"embedding_dim {base.embedding_dim} -> {d}")
        for d in _neighbours_in(space.embedding_dims, base.embedding_dim)
    ]


def _dropout(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    out = []
    for delta in (-0.1, 0.1):
        value = _round_to(base.dropout + delta, 0.05)
        value = float(min(max(value, space.dropout_min), space.dropout_max))
        if value != base.dropout:
            out.append((base.model_copy(update={"dropout": value}), f"dropout {base.dropout:g} -> {value:g}"))
    return out


def _learning_rate(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    out = []
    for factor in (0.5, 2.0):
        value = float(min(max(base.learning_rate * factor, space.learning_rate_min), space.learning_rate_max))
        value = float(f"{value:.6g}")
        if value != base.learning_rate:
            out.append(
                (
                    base.model_copy(update={"learning_rate": value}),
                    f"learning_rate {base.learning_rate:g} -> {value:g}",
                )
            )
    return out


def _feature_subset(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    units = field_units(schema)
    protected = protected_fields(schema)
    kept = set(base.input_fields) if base.input_fields is not None else set(field_names(schema))
    out = []
    for unit in units:
        present = [f for f in unit if f in kept]
        if present and not protected & set(unit):
            remaining = kept - set(unit)
            if len(remaining) >= space.min_fields:
                fields = _subset(schema, remaining)
                out.append((base.model_copy(update={"input_fields": fields}), f"drop {'+'.join(present)}"))
        missing = [f for f in unit if f not in kept]
        if missing:
            fields = _subset(schema, kept | set(unit))
            out.append((base.model_copy(update={"input_fields": fields}), f"re-add {'+'.join(missing)}"))
    result = []
    for cand, what in out:
        count = len(cand.input_fields) if cand.input_fields is not None else len(field_names(schema))
        result.append((cand, f"input_fields {what} ({count} fields)"))
    return result


def _feature_bagging(base: Candidate, space: SearchSpace, schema: FeatureSchema) -> list[Change]:
    out = []
    for delta in (-0.1, 0.1):
        value = _round_to(base.feature_bagging + delta, 0.05)
        value = float(min(max(value, space.feature_bagging_min), 1.0))
        if value != base.feature_bagging:
            out.append(
                (
                    base.model_copy(update={"feature_bagging": value}),
                    f"feature_bagging {base.feature_bagging:g} -> {value:g}",
                )
            )
    return out


MUTATIONS: dict[str, Callable[[Candidate, SearchSpace, FeatureSchema], list[Change]]] = {
    "model_family": _model_family,
    "width": _width,
    "depth": _depth,
    "embedding_dim": _embedding_dim,
    "dropout": _dropout,
    "learning_rate": _learning_rate,
    "feature_subset": _feature_subset,
    "feature_bagging": _feature_bagging,
}
# the knob a kind needs the incumbent's model to have (None: every model)
KIND_KNOB = {
    "model_family": None,
    "width": "hidden_units",
    "depth": "hidden_units",
    "embedding_dim": "embedding_dim",
    "dropout": "dropout",
    "learning_rate": None,
    "feature_subset": None,
    "feature_bagging": None,
}


def applicable_kinds(model: str) -> list[str]:
    knobs = model_knob_names(model)
    return [k for k in KINDS if KIND_KNOB[k] is None or KIND_KNOB[k] in knobs]


def snap_to_space(candidate: Candidate, space: SearchSpace) -> Candidate:
    """The candidate with the knobs its model has moved to the nearest allowed values."""
    knobs = model_knob_names(candidate.model)
    update: dict[str, Any] = {}
    if "embedding_dim" in knobs and candidate.embedding_dim not in space.embedding_dims and space.embedding_dims:
        update["embedding_dim"] = min(space.embedding_dims, key=lambda d: (abs(d - candidate.embedding_dim), d))
    if "hidden_units" in knobs and space.widths:
        units = [min(space.widths, key=lambda w, u=u: (abs(w - u), w)) for u in candidate.hidden_units]
        units = units[: space.depth_max]
        while len(units) < space.depth_min:
            units.append(units[-1])
        if units != candidate.hidden_units:
            update["hidden_units"] = units
    if "dropout" in knobs:
        value = float(min(max(candidate.dropout, space.dropout_min), space.dropout_max))
        if value != candidate.dropout:
            update["dropout"] = value
    return candidate.model_copy(update=update) if update else candidate


# ---------------------------------------------------------------------------------------------
# the bandit


def entry_reward(entry: HistoryEntry, scale: float) -> float:
    """Standardised reward of one past entry (see the module docstring)."""
    if entry.status in ("invalid", "failed"):
        return INVALID_REWARD
    if entry.improvement is None or not math.isfinite(entry.improvement):
        return 0.0
    return entry.improvement / scale


def spread(values: list[float]) -> float:
    """The scale rewards are divided by: their standard deviation, else the largest magnitude, else 1."""
    if len(values) >= 2:
        std = float(np.std(values))
        if std > 0:
            return std
    peak = max((abs(v) for v in values), default=0.0)
    return peak if peak > 0 else 1.0


def reward_scale(history: tuple[HistoryEntry, ...]) -> float:
    return spread([
        e.improvement
        for e in history
        if e.improvement is not None and math.isfinite(e.improvement) and e.status not in ("invalid", "failed")
    ])


def ucb_scores(kinds: list[str], history: tuple[HistoryEntry, ...], exploration: float) -> dict[str, float | None]:
    """UCB1 score per kind; None for a kind never tried."""
    scale = reward_scale(history)
    rewards: dict[str, list[float]] = {k: [] for k in kinds}
    for entry in history:
        if entry.mutation in rewards:
            rewards[entry.mutation].append(entry_reward(entry, scale))
    total = sum(len(r) for r in rewards.values())
    scores: dict[str, float | None] = {}
    for kind, values in rewards.items():
        if not values:
            scores[kind] = None
        else:
            bonus = exploration * math.sqrt(2.0 * math.log(max(total, 1)) / len(values))
            scores[kind] = float(np.mean(values)) + bonus
    return scores


class BuiltinProposer:
    """Deterministic typed mutations of the incumbent, the kind picked by UCB1 over past rewards."""

    def __init__(self, name: str = "builtin", exploration: float = 1.0) -> None:
        if exploration < 0:
            raise ValueError(f"exploration must be >= 0, got {exploration}")
        self.name = name
        self.exploration = float(exploration)

    def kind_order(self, context: ProposalContext) -> tuple[list[str], dict[str, float | None]]:
        """The kinds to try, best first: untried kinds (seeded order), then by UCB score."""
        kinds = applicable_kinds(context.incumbent.model)
        scores = ucb_scores(kinds, context.history, self.exploration)
        untried = [k for k in kinds if scores[k] is None]
        rng = np.random.default_rng([context.seed, context.round, 0])
        untried = [untried[i] for i in rng.permutation(len(untried))]
        tried = sorted((k for k in kinds if scores[k] is not None), key=lambda k: (-scores[k], KINDS.index(k)))  # type: ignore[operator]
        return untried + tried, scores

    def propose(self, context: ProposalContext) -> ProposalOutcome:
        base = snap_to_space(context.incumbent, context.space)
        snapped = base != context.incumbent
        order, scores = self.kind_order(context)
        seen = context.seen_hashes
        skipped = [k for k in KINDS if k not in order]
        for attempt, kind in enumerate(order[:MAX_ATTEMPTS], start=1):
            neighbours = MUTATIONS[kind](base, context.space, context.schema)
            rng = np.random.default_rng([context.seed, context.round, attempt])
            for i in rng.permutation(len(neighbours)):
                candidate, change = neighbours[int(i)]
                try:
                    candidate = Candidate.model_validate(candidate.model_dump())
                except ValueError:
                    continue
                if candidate.config_hash() in seen:
                    continue
                if candidate_problems(candidate, context.space, context.schema):
                    continue
                score = scores[kind]
                why = "untried kind" if score is None else f"UCB {score:.3f}"
                note = " (incumbent snapped to the space first)" if snapped else ""
                rationale = f"{kind}: {change}{note} [{why}]"
                return ProposalOutcome(Proposal(candidate.canonical(), kind, rationale))
        detail = f"; kinds skipped for model '{context.incumbent.model}': {skipped}" if skipped else ""
        lesson = (
            f"builtin proposer: every neighbour of the incumbent ({context.incumbent.describe()}) was "
            f"already tried or is outside the search space (kinds tried: {order}){detail}"
        )
        return ProposalOutcome(None, [lesson])


__all__ = [
    "INVALID_REWARD",
    "KINDS",
    "BuiltinProposer",
    "applicable_kinds",
    "candidate_problems",
    "field_units",
    "input_problems",
    "snap_to_space",
    "ucb_scores",
]
