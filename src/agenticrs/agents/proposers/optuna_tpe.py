"""TPE (Optuna) over the continuous knobs of the incumbent's model family.

The proposer keeps no state: each call builds an in-memory study, replays the history entries of
the same model family that carry an ``improvement`` as completed trials (value = improvement,
maximised), asks the TPE sampler for one point and writes it into a copy of the incumbent. The
sampler's seed is drawn from (seed, round, the hashes of the history), so a killed and resumed
search asks the same question and gets the same answer.

Searched knobs: ``learning_rate`` (log-uniform in the space bounds), ``dropout`` (uniform in the
space bounds, when the model has it), ``embedding_l2`` (log-uniform in [1e-7, 1e-1]; a replayed
0 counts as 1e-7) and ``feature_bagging`` (uniform in [feature_bagging_min, 1]). The model
family, its architecture and the input fields stay those of the incumbent.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import numpy as np

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.proposers.base import (
    HistoryEntry,
    Proposal,
    ProposalContext,
    ProposalOutcome,
)
from agenticrs.agents.proposers.builtin import (
    candidate_problems,
    model_knob_names,
    seen_reason,
)

EMBEDDING_L2_RANGE = (1e-7, 1e-1)
MAX_ASKS = 32


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _clip(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


class OptunaProposer:
    """Stateless, resumable TPE over the continuous knobs of the incumbent's model family."""

    def __init__(self, name: str = "optuna", n_startup_trials: int = 10) -> None:
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials}")
        self.name = name
        self.n_startup_trials = int(n_startup_trials)

    # -- the search space -----------------------------------------------------------------------
    def distributions(self, context: ProposalContext) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        space = context.space
        dists: dict[str, Any] = {
            "learning_rate": FloatDistribution(space.learning_rate_min, space.learning_rate_max, log=True),
            "embedding_l2": FloatDistribution(*EMBEDDING_L2_RANGE, log=True),
        }
        if "dropout" in model_knob_names(context.incumbent.model) and space.dropout_max > space.dropout_min:
            dists["dropout"] = FloatDistribution(space.dropout_min, space.dropout_max)
        if space.feature_bagging_min < 1.0:
            dists["feature_bagging"] = FloatDistribution(space.feature_bagging_min, 1.0)
        return dists

    @staticmethod
    def params_of(candidate: Candidate, dists: dict[str, Any]) -> dict[str, float]:
        """A past candidate's values, clipped into the distributions (so it can be replayed)."""
        return {name: _clip(float(getattr(candidate, name)), d.low, d.high) for name, d in dists.items()}

    def replayable(self, context: ProposalContext) -> list[HistoryEntry]:
        return [
            e
            for e in context.history
            if e.candidate.model == context.incumbent.model
            and e.improvement is not None
            and math.isfinite(e.improvement)
        ]

    def sampler_seed(self, context: ProposalContext) -> int:
        digest = hashlib.sha256("|".join(e.config_hash for e in context.history).encode()).digest()
        history_word = int.from_bytes(digest[:4], "little")
        return int(np.random.SeedSequence([context.seed, context.round, history_word]).generate_state(1)[0])

    # -- the proposal ------------------------------------------------------------------------------
    def propose(self, context: ProposalContext) -> ProposalOutcome:
        optuna = _quiet_optuna()
        incumbent = context.incumbent
        dists = self.distributions(context)
        entries = self.replayable(context)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=self.sampler_seed(context), n_startup_trials=self.n_startup_trials)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            for entry in entries:
                study.add_trial(
                    optuna.trial.create_trial(
                        params=self.params_of(entry.candidate, dists),
                        distributions=dists,
                        value=float(entry.improvement),  # type: ignore[arg-type]
                    )
                )
            seen = context.seen_hashes
            problems: list[str] = []
            duplicates, last_hash = 0, ""

            for _ in range(MAX_ASKS):
                trial = study.ask(dists)
                values = self._values(trial.params, dists)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # not a result: keep it out of the model
                candidate = Candidate.model_validate({**incumbent.model_dump(), **values})
                config_hash = candidate.config_hash()
                if config_hash in seen:
                    duplicates, last_hash = duplicates + 1, config_hash
                    continue
                problems = candidate_problems(candidate, context.space, context.schema)
                if problems:
                    break  # the fixed part (model, architecture, fields) is out of the space: asking again won't help
                changes = ", ".join(
                    f"{k} {getattr(incumbent, k):.3g} -> {v:.3g}" for k, v in values.items() if getattr(incumbent, k) != v
                )
                rationale = (
                    f"optuna TPE on {incumbent.model} over {len(entries)} replayed trial(s): {changes or 'no change'}"
                )
                return ProposalOutcome(Proposal(candidate.canonical(), "optuna", rationale))
        if problems:
            return ProposalOutcome(
                None, [f"optuna proposer: the incumbent's fixed knobs are outside the search space: {'; '.join(problems)}"]
            )
        lesson = (
            f"optuna proposer: {duplicates} TPE draws for {incumbent.model} were all already tried "
            f"(e.g. {seen_reason(context, last_hash)})"
        )
        return ProposalOutcome(None, [lesson])

    @staticmethod
    def _values(params: dict[str, float], dists: dict[str, Any]) -> dict[str, float]:
        values = {}
        for name, value in params.items():
            d = dists[name]
            if name == "dropout" or name == "feature_bagging":
                value = round(value, 3)
            else:
                value = _sig(value)
            values[name] = _clip(value, d.low, d.high)
        return values


__all__ = ["EMBEDDING_L2_RANGE", "OptunaProposer"]
