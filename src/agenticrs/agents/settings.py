"""Typed settings of an evolution (stored with the intent, so `--resume` needs no flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.space import SearchSpace
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
