"""Typed settings of an evolution (stored with the intent, so `--resume` needs no flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agenticrs.agents.autoperf import PerfBudgets
from agenticrs.agents.candidate import Candidate
from agenticrs.agents.outer import OuterSettings
from agenticrs.agents.space import SearchSpace
from agenticrs.config import apply_overrides, deep_merge, load_yaml
from agenticrs.train.config import TrainConfig

Objective = Literal["auc", "logloss", "brier"]


def default_start() -> Candidate:
    """The seed incumbent: logistic regression, the production baseline every team starts from."""
    return Candidate(model="lr", learning_rate=1e-2, epochs=10)


def default_train() -> TrainConfig:
    """Learners stop early on the stop slice's AUC (FuxiCTR's monitor: on small data a logloss
    monitor stops DeepFM-like models at an uncalibrated epoch 2), under the candidate's epoch cap."""
    return TrainConfig(
        batch_size=2048, epochs=10, patience=2, lr_decay_patience=1, monitor="auc", metrics=["auc", "logloss"]
    )


class LLMOptions(BaseModel):
    """The LLM proposer's settings (`--set llm.base_url=...`); what is not set comes from the environment.

    The API key is a `SecretStr` excluded from every dump: it is never printed with the settings,
    stored with the intent or written into a report. The recommended route is the environment
    (`AGENTICRS_LLM_API_KEY`, or `OPENAI_API_KEY`); a key given here lasts for one process, so a
    `--resume` needs it again (from the environment or `--set llm.api_key=...`)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, description="OpenAI-compatible API root (or AGENTICRS_LLM_BASE_URL)")
    model: str | None = Field(default=None, description="model name (or AGENTICRS_LLM_MODEL)")
    api_key: SecretStr | None = Field(
        default=None, exclude=True, description="prefer AGENTICRS_LLM_API_KEY; never printed, stored or reported"
    )
    timeout_s: float = Field(default=60.0, gt=0)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @field_validator("api_key", mode="before")
    @classmethod
    def _key_text(cls, value: Any) -> Any:
        """A key that YAML or `--set` read as a number is still text."""
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


class EvolveSettings(BaseModel):
    """Everything that defines an evolution; printed at start and stored in the knowledge layer."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    objective: Objective = Field(default="auc", description="the gate's metric on held-out users")
    proposer: Literal["builtin", "optuna", "llm"] = "builtin"
    candidates: int | None = Field(default=None, ge=1, description="rounds to run (each proposes one candidate)")
    budget_s: float | None = Field(default=None, gt=0, description="stop starting rounds after this many seconds")
    seed: int = 0
    ensemble_size: int = Field(default=8, ge=2, description="M: the deployed ensemble the decision predicts")
    bootstrap: int = Field(default=500, ge=0, description="paired bootstrap resamples of the decision")
    level: float = Field(default=0.9, ge=0.5, lt=1.0, description="one-sided confidence of the EnsNAS decision")
    margin: float = Field(default=0.0, ge=0.0, description="required Brier improvement of the M-ensemble")
    gate_level: float = Field(default=0.8, ge=0.5, lt=1.0, description="one-sided confidence of the gate")
    gate_share: float = Field(default=0.5, gt=0, lt=1, description="share of validation users held out as the gate")
    stop_share: float = Field(default=0.1, gt=0, lt=1, description="share of train requests for early stopping")
    audit_every: int = Field(default=0, ge=0, description="calibration audit after every K promotions (0: off)")
    audit_size: int = Field(default=8, ge=2)
    start: Candidate = Field(default_factory=default_start)
    train: TrainConfig = Field(default_factory=default_train)
    space: SearchSpace = Field(default_factory=SearchSpace)
    llm: LLMOptions = Field(default_factory=LLMOptions, description="LLM proposer settings (base_url, model, ...)")
    agents: list[str] | None = Field(default=None, description="agents that act (train, feature, perf); None: all registered")
    agent_budget_s: dict[str, float] = Field(default_factory=dict, description="seconds each agent may spend (ledger)")
    agent_exploration: float = Field(default=1.0, ge=0, description="UCB1 exploration of the bandit over agents")
    beta: float = Field(default=0.5, ge=0, le=1, description="weight of the outer reward in the agents' reward")
    promote_every: int = Field(default=1, ge=1, description="rounds between promotions: accepted changes wait, and "
                               "changes of different agents accepted against one incumbent are re-checked together")
    perf_tolerance: float = Field(default=2e-4, ge=0, description="AutoPerf: Brier loss tolerated (non-inferiority)")
    measure_perf: bool = Field(default=True, description="measure latency, size and memory of every candidate")
    perf_export: bool | None = Field(default=None, description="also export every candidate to ONNX for its file size "
                                     "(seconds each); None: only when `budgets.max_export_mb` is set")
    budgets: PerfBudgets = Field(default_factory=PerfBudgets, description="guardrails that block a promotion")
    outer_every: int = Field(default=1, ge=0, description="outer A/B test every K promotions and before the champion "
                             "becomes final (0: off; only on simulator data)")
    outer: OuterSettings = Field(default_factory=OuterSettings, description="the outer A/B test in the simulator")
    exclude_leaks: bool = Field(default=True, description="drop fields the profile's leakage check flags")
    artifacts: Path = Field(default=Path("runs/evolve"), description="where learners' runs are written")
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _bounded(self) -> EvolveSettings:
        if self.candidates is None and self.budget_s is None:
            self.candidates = 10
        return self

    def member_seeds(self) -> tuple[int, int]:
        """The dual learners' seeds: the same pair for every candidate (paired comparisons)."""
        return (1000 * self.seed + 11, 1000 * self.seed + 12)

    def audit_seeds(self, m: int) -> list[int]:
        return [*self.member_seeds(), *(1000 * self.seed + 13 + k for k in range(m - 2))]


def parse_duration(text: str) -> float:
    """'20m', '90s', '1.5h' or a number of seconds."""
    text = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise ValueError(f"budget '{text}' is not a duration (use e.g. 90s, 20m, 1.5h)") from None


def build_evolve_settings(
    config: Path | None, overrides: list[str], **flags: Any
) -> EvolveSettings:
    """Defaults, then the YAML file `config`, then flags, then `overrides` (`a.b=c`): a nested
    override (train.patience=3) keeps the other defaults of its section (the learners'
    early-stopping monitor, say). A key that would be accepted and then ignored is a ValueError
    naming the key that works (`check_effective_overrides`). The CLI and `agenticrs.api.evolve`
    both build their settings here."""
    nested = EvolveSettings.model_fields
    raw: dict[str, Any] = {
        key: nested[key].get_default(call_default_factory=True).model_dump(mode="json")
        for key in ("start", "train", "space")
    }
    from_file = load_yaml(config) if config else {}
    raw = deep_merge(raw, from_file)
    for key, value in flags.items():
        if value is not None:
            raw[key] = value
    settings = EvolveSettings.model_validate(apply_overrides(raw, overrides))
    check_effective_overrides(overrides, settings)
    train_in_file = from_file.get("train") if isinstance(from_file, dict) else None
    if isinstance(train_in_file, dict):  # the config file's train section is held to the same rule as --set
        check_effective_overrides([f"train.{key}" for key in train_in_file], settings, source=f"{config}:")
    return settings


# `train.X` keys that every candidate sets itself (`Candidate.run_config`), and the key that works
CANDIDATE_TRAIN_KEYS = {
    "optimizer": "start.optimizer", "learning_rate": "start.learning_rate", "batch_size": "start.batch_size",
    "embedding_l2": "start.embedding_l2", "epochs": "start.epochs", "seed": "seed",
}


def override_key(item: str) -> list[str]:
    return [p for p in item.split("=", 1)[0].strip().split(".") if p]


def check_effective_overrides(overrides: list[str], settings: EvolveSettings, source: str = "--set") -> None:
    """A ValueError for a `--set` key that would be accepted and then have no effect, naming the key
    that would: `train.epochs` (each candidate's own epochs win: `start.epochs`), `train.seed`
    (`seed`: the learners' seeds derive from it), or a `start.` knob the starting model does not use.
    `source` names where the keys came from (`--set`, or the `--config` file)."""
    from agenticrs.agents.candidate import SHARED_KNOBS, active_knobs

    for item in overrides:
        parts = override_key(item)
        key = ".".join(parts)
        if len(parts) == 2 and parts[0] == "train" and parts[1] in CANDIDATE_TRAIN_KEYS:
            works = CANDIDATE_TRAIN_KEYS[parts[1]]
            why = "the learners' seeds derive from the evolution's seed" if parts[1] == "seed" else \
                f"every candidate sets its own {parts[1]} (the starting one: {works})"
            raise ValueError(f"{source} {key} has no effect in evolve: {why}; use {works} instead")
        if len(parts) >= 2 and parts[0] == "start" and parts[1] in SHARED_KNOBS:
            model = settings.start.model
            if parts[1] not in active_knobs(model):
                raise ValueError(f"{source} {key} has no effect: the starting model '{model}' has no {parts[1]} "
                                 "(set start.model to a model that uses it)")
