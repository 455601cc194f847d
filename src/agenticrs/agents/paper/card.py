"""Method cards: a published method's claim and how to check it, as validated YAML data.

Why a card: moving a paper into the system (the AutoModel paper's *paper_auto_train* loop,
`../shared/specs/agenticrs_architecture.md` §3) needs one description that a person, a rule or an
LLM can write and that the machinery can run without further decisions: which model with which
settings, against which baselines, on which data sets, under which protocol (step budget,
evaluation cadence, patience, seeds) and what the paper says should come out (the claim). A card
is data, never code: the model is a registered zoo model, a composition of registered building
blocks (`Arm.compose`: the `composed` model's blocks and settings, `models/blocks.py`), or (for an
LLM-drafted method) a generated module that only ever runs in the sandbox
(`agents/paper/sandbox.py`).

Validation is complete before anything trains: an unknown model, data set, model setting,
building block, block setting or training setting is refused with the card's file and the field
named (`CardError`), and so is a block that a (public, present) data set cannot feed. The cards
of the zoo's methods ship in `cards/` next to this module and are listed by `CARDS`, a
`runtime.registry.Registry` like every other named thing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agenticrs.runtime.registry import Registry

if TYPE_CHECKING:
    from agenticrs.features.schema import FeatureSchema

CARD_DIR = Path(__file__).with_name("cards")
Name = str
COMPOSED = "composed"  # the zoo model a composition arm trains (`agenticrs.models.composed`)


class CardError(ValueError):
    """A card that cannot be used; the message names the card (file) and the field."""


class Claim(BaseModel):
    """What the paper says the method achieves, as a comparison we can test."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(min_length=1, description="the claim in words, with its source")
    metric: str = Field(
        default="auc",
        description="a test-split metric of the reproduction, by its name in the metrics registry "
        "(auc, logloss, ctcvr_auc, cvr_auc, ndcg@10, recall@10, ...); the task says which ones it reports",
    )
    direction: Literal["higher", "lower"] | None = Field(
        default=None, description="which way of the metric is better (default: the metric's own; a contrary value is refused)"
    )
    baseline: str = Field(min_length=1, description="the baseline (one of the card's baselines) the claim is against")
    margin: float = Field(default=0.0, ge=0.0, le=1.0, description="the effect must exceed this (metric units)")
    reported_effect: float | None = Field(default=None, description="the paper's figure for the effect, where known")
    reported_dataset: str | None = Field(default=None, description="the data set of the paper's figure")
    reported_note: str = Field(default="", description="where the figure comes from, how reliable it is")

    @model_validator(mode="after")
    def _known_metric(self) -> Claim:
        from agenticrs.train.metrics import metric_spec

        try:
            metric, _ = metric_spec(self.metric)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"metric: {exc.args[0] if exc.args else exc}") from None
        own = "higher" if metric.higher_is_better else "lower"
        if self.direction is None:
            self.direction = own
        elif self.direction != own:
            raise ValueError(f"direction: '{self.metric}' is better {own}, not {self.direction}")
        return self


class Arm(BaseModel):
    """A model with its settings: the method itself or a baseline.

    `name` names the arm in the card and in every record; the arm trains `model` (default: its
    name), a registered zoo model, or for a `streaming` card a streaming method. Naming the model
    separately lets one model be two arms with different settings (MMoE with one expert is the
    shared-bottom baseline). `code` (a generated module, a file path relative to the card) makes
    it a sandboxed model whose name is checked by the sandbox's contract run. `compose` (a
    composition of building blocks, CTR cards) makes it the zoo model `composed` with these
    settings, `params` laid over them."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(min_length=1, max_length=80)
    model: Name | None = Field(default=None, min_length=1, max_length=80, description="the model it trains (default: name)")
    params: dict[str, Any] = Field(default_factory=dict, description="model hyper-parameters (the model's config)")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings of this arm (TrainConfig)")
    tokenizer: dict[str, Any] = Field(
        default_factory=dict,
        description="sequential cards: semantic-ID settings of a model that decodes them; "
        "`collaborative_arm: NAME` builds them on the item table of that arm's run of the same seed",
    )
    code: str | None = Field(default=None, description="a generated model module (runs in the sandbox only)")
    compose: dict[str, Any] | None = Field(
        default=None,
        description="a composition: the `composed` model's config ({blocks: [{block: cross, num_layers: 2}, ...]} "
        "and its shared settings); `params` are laid over it",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Arm:
        if self.compose is not None and self.code is not None:
            raise ValueError("an arm is a generated module (code) or a composition (compose), not both")
        if self.compose is not None and self.model not in (None, COMPOSED):
            raise ValueError(f"a composition trains the model '{COMPOSED}', not '{self.model}'")
        return self

    @property
    def model_name(self) -> str:
        """The registered model (or streaming method) this arm trains (`composed` for a composition)."""
        return COMPOSED if self.compose is not None else self.model or self.name

    def model_params(self) -> dict[str, Any]:
        """The model's settings as data: a composition's with `params` laid over, else `params`."""
        return {**(self.compose or {}), **self.params}

    def merged(self, other: ArmSettings | None) -> Arm:
        """This arm with a data set's settings for it laid over (params and train, key by key)."""
        if other is None:
            return self
        return self.model_copy(update={"params": {**self.params, **other.params}, "train": {**self.train, **other.train},
                                       "tokenizer": {**self.tokenizer, **other.tokenizer}})  # fmt: skip


class ArmSettings(BaseModel):
    """One data set's settings for an arm (e.g. the CPU-sized MGDIN chosen on Frappe's validation)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    tokenizer: dict[str, Any] = Field(default_factory=dict)


class Protocol(BaseModel):
    """How every arm trains on one data set: the same budget, cadence and patience for all."""

    model_config = ConfigDict(extra="forbid")

    step_budget: int | None = Field(
        default=1000, ge=1, le=10_000_000,
        description="optimiser steps (train.max_steps); null: no step cap (a sequential card's arms then need an "
        "epoch cap, train.epochs). A streaming card's budget is the stream itself and ignores it",
    )
    eval_every_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    patience: int = Field(default=4, ge=1, le=1000, description="evaluations without improvement before stopping")
    split: Literal["canonical"] = Field(
        default="canonical", description="the data set's own train / valid / test split, the incumbent's too"
    )
    train: dict[str, Any] = Field(default_factory=dict, description="training settings shared by every arm")

    def train_settings(self) -> dict[str, Any]:
        out = {"patience": self.patience, **self.train}
        if self.step_budget is not None:
            out["max_steps"] = self.step_budget
        if self.eval_every_steps is not None:
            out["eval_every_steps"] = self.eval_every_steps
        return out


class Trial(BaseModel):
    """One data set of a card, with its protocol and per-arm settings."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, description="a registered data set")
    protocol: Protocol = Field(default_factory=Protocol)
    settings: dict[str, ArmSettings] = Field(default_factory=dict, description="arm name -> its settings here")
    arms: list[Name] | None = Field(
        default=None,
        description="the arms that train on this data set (default: every arm): the method, the claim's baseline "
        "and any arm whose run another one's semantic IDs come from must be among them (on the simulator, whose "
        "items have text, the SASRec that gives Amazon its collaborative IDs is not needed)",
    )
    expected: Literal["holds", "not shown", "contradicted"] | None = Field(
        default=None, description="the verdict our own benchmark tables give (README), where known"
    )


class MethodCard(BaseModel):
    """A method, its claim, and the protocol that checks it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    title: str = ""
    paper: str = Field(default="", description="citation (arXiv id)")
    source: str = Field(default="", description="where the claim was read (a spec file, an abstract)")
    task: Literal["ctr", "sequential", "streaming", "multi_objective_retrieval"] = Field(
        default="ctr",
        description="ctr: click / multi-task models on a CTR data set (auc, logloss, ctcvr_auc, ...); sequential: "
        "next-item models on a sequence data set (recall@K, ndcg@K); streaming: delayed-feedback methods on a "
        "click stream (auc, logloss over the stream's windows); multi_objective_retrieval: retrievers of the "
        "exposure -> click -> conversion cascade on a simulator's impressions (click/set_recall@K, ...)",
    )
    claim: Claim
    model: Arm
    baselines: list[Arm] = Field(min_length=1)
    datasets: list[Trial] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1, max_length=100)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or any(s < 0 or s >= 2**32 for s in seeds):
            raise ValueError(f"seeds must be distinct integers in [0, 2^32), got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> MethodCard:
        names = [a.name for a in self.arms()]
        if len(set(names)) != len(names):
            raise ValueError(f"model and baselines must be distinct arms (names), got {names}")
        if self.claim.baseline not in names[1:]:
            raise ValueError(f"claim.baseline '{self.claim.baseline}' is not one of the baselines {names[1:]}")
        for i, trial in enumerate(self.datasets):
            unknown = sorted(set(trial.settings) - set(names))
            if unknown:
                raise ValueError(f"datasets.{i}.settings names {unknown}, which are not arms of the card ({names})")
            if trial.arms is not None:
                self._check_trial_arms(i, trial, names)
        return self

    def _check_trial_arms(self, i: int, trial: Trial, names: list[str]) -> None:
        listed = set(trial.arms or [])
        unknown = sorted(listed - set(names))
        if unknown:
            raise ValueError(f"datasets.{i}.arms names {unknown}, which are not arms of the card ({names})")
        for needed, why in [(self.model.name, "the method"), (self.claim.baseline, "the claim's baseline")]:
            if needed not in listed:
                raise ValueError(f"datasets.{i}.arms must include {why} '{needed}'")
        for arm in self.trial_arms(trial):
            source = arm.tokenizer.get("collaborative_arm")
            if source is not None and source not in listed:
                raise ValueError(f"datasets.{i}.arms: {arm.name} builds its semantic IDs on {source}'s run, "
                                 f"so {source} must train there too")  # fmt: skip

    def arms(self) -> list[Arm]:
        """The method first, then the baselines."""
        return [self.model, *self.baselines]

    def trial_arms(self, trial: Trial) -> list[Arm]:
        """The arms that train on a data set (the trial's `arms`, default every arm), with the
        trial's settings laid over, the method first."""
        names = [a.name for a in self.arms()] if trial.arms is None else trial.arms
        return [self.arm(a.name, trial) for a in self.arms() if a.name in names]

    def arm(self, name: str, trial: Trial) -> Arm:
        base = next(a for a in self.arms() if a.name == name)
        return base.merged(trial.settings.get(name))

    def train_settings(self, trial: Trial, arm: Arm) -> dict[str, Any]:
        """The training settings of an arm (with the trial's settings laid over) under the trial's
        protocol. A streaming run's budget is the stream (its pre-training epochs and one pass per
        window), so only the protocol's `train` settings apply there."""
        if self.task == "streaming":
            return {**trial.protocol.train, **arm.train}
        settings = {**trial.protocol.train_settings(), **arm.train}
        if trial.protocol.step_budget is not None:  # one budget for every arm: an arm's own cap never wins
            settings["max_steps"] = trial.protocol.step_budget
        return settings

    def trial(self, dataset: str) -> Trial:
        for trial in self.datasets:
            if trial.dataset == dataset:
                return trial
        raise CardError(f"card '{self.name}' has no data set '{dataset}'; it has {[t.dataset for t in self.datasets]}")

    def content_hash(self) -> str:
        """SHA-256 of the card's canonical JSON (what a reproduction is keyed by)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def protocol_hash(self) -> str:
        """SHA-256 of what decides the trainings (name, arms, data sets with protocols and settings,
        seeds), not of the claim or the README's expectation: editing those re-judges the same runs."""
        data = self.model_dump(mode="json", include={"name", "model", "baselines", "datasets", "seeds"})
        for trial in data["datasets"]:
            trial.pop("expected", None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


# -- validation against the zoo and the data registry -------------------------------------------------


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"]))
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    got = f" (got {first['input']!r:.60})" if first["type"] != "missing" and first["loc"] else ""
    return f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}{got}{more}"


def check_card(card: MethodCard, where: str, base_dir: Path | None = None) -> MethodCard:
    """Refuse (CardError naming `where` and the field) what the zoo or the data registry cannot run:
    an unknown model, an invalid model setting, an unknown training setting, an unknown data set,
    a metric the task does not report. What is known depends on the card's task (`TASKS`)."""
    task = TASKS[card.task]
    composed = [(f, a) for f, a in [("model", card.model)] + [(f"baselines.{i}", a) for i, a in enumerate(card.baselines)]
                if a.compose is not None]  # fmt: skip
    if composed and card.task != "ctr":
        raise CardError(f"{where}: {composed[0][0]}.compose: compositions of building blocks are CTR models; "
                        f"this card's task is {card.task}")  # fmt: skip
    for field, arm in composed:
        _check_composition(arm, field, where)
    if not task.reports(card.claim.metric):
        raise CardError(f"{where}: claim.metric: a {card.task} reproduction does not report '{card.claim.metric}'; "
                        f"it reports {task.metrics_text}")  # fmt: skip
    arm_names = [a.name for a in card.arms()]
    fields = [("model", card.model)] + [(f"baselines.{i}", a) for i, a in enumerate(card.baselines)]
    for field, arm in fields:
        if arm.code is not None:
            if card.task != "ctr":
                raise CardError(f"{where}: {field}.code: generated modules are CTR models; this card's task is {card.task}")
            path = (base_dir or Path.cwd()) / arm.code
            if not path.is_file():
                raise CardError(f"{where}: {field}.code: no generated module at {path}")
            continue
        known = task.models()
        if arm.model_name not in known:
            key = "model" if arm.model else "name"
            noun = task.model_kind.rsplit(" ", 1)[-1]
            raise CardError(f"{where}: {field}.{key}: unknown {noun} '{arm.model_name}'; "
                            f"known {task.model_kind}s: {', '.join(known)}")  # fmt: skip
        if arm.tokenizer and card.task != "sequential":
            raise CardError(f"{where}: {field}.tokenizer: only sequential cards have semantic-ID settings")
        source = arm.tokenizer.get("collaborative_arm")
        if source is not None and (source not in arm_names or source == arm.name):
            raise CardError(f"{where}: {field}.tokenizer.collaborative_arm: '{source}' is not another arm of the card "
                            f"({arm_names})")  # fmt: skip
    for i, trial in enumerate(card.datasets):
        known_data = task.datasets()
        if trial.dataset not in known_data:
            raise CardError(
                f"{where}: datasets.{i}.dataset: unknown data set '{trial.dataset}'; "
                f"known {card.task} data sets: {', '.join(known_data)}"
            )
        schema = declared_schema(trial.dataset) if composed else None
        training = {a.name for a in card.trial_arms(trial)}
        for field, arm in fields:
            if arm.name not in training:
                continue  # it does not train on this data set
            merged = card.arm(arm.name, trial)
            train = card.train_settings(trial, merged)
            try:
                task.check_train(train)
            except ValidationError as exc:
                raise CardError(f"{where}: datasets.{i} ({trial.dataset}), arm {arm.name}: train.{_first_error(exc)}") from None
            if merged.code is None:
                try:
                    task.check_params(merged)
                except ValidationError as exc:
                    raise CardError(f"{where}: datasets.{i} ({trial.dataset}), arm {arm.name}: "
                                    f"params.{_first_error(exc)}") from None  # fmt: skip
                except ValueError as exc:
                    raise CardError(f"{where}: datasets.{i} ({trial.dataset}), arm {arm.name}: params: {exc}") from None
            if merged.compose is not None and schema is not None:
                _check_feeds(_ctr_params(merged), schema, f"{where}: {field}.compose", f"datasets.{i} ({trial.dataset})")
    return card


def _check_composition(arm: Arm, field: str, where: str) -> None:
    """A composition's blocks and settings, named under `{field}.compose`; its name is its own."""
    from agenticrs.models.base import list_models
    from agenticrs.models.composed import ComposedConfig

    if arm.model is None and arm.name in list_models():
        raise CardError(f"{where}: {field}.name: '{arm.name}' is a zoo model; a composition arm needs a name of its own")
    try:
        ComposedConfig.model_validate(arm.compose)
    except ValidationError as exc:
        raise CardError(f"{where}: {field}.compose.{_first_error(exc)}") from None


def _check_feeds(config: Any, schema: FeatureSchema, field: str, trial: str) -> None:
    """Refuse the first block of the composition that the data set's inputs cannot feed."""
    from agenticrs.models.blocks import BLOCKS

    for j, block in enumerate(config.blocks):
        problems = BLOCKS[block.block].inputs.problems(schema)
        if problems:
            raise CardError(f"{field}.blocks.{j}: block '{block.block}' cannot be fed by {trial}: {'; '.join(problems)}")


def declared_schema(dataset: str) -> FeatureSchema | None:
    """The inputs a registered CTR data set declares (fields, sequences and their targets, labels;
    no vocabulary sizes), when knowing them costs no data generation: a public data set present
    here, whose spec reads only its files' headers. None otherwise: a generated data set is checked
    when its run is built (`build_model` refuses a model the data set cannot feed, naming what it lacks)."""
    from agenticrs.data.cache import default_cache_root
    from agenticrs.data.errors import DataError
    from agenticrs.data.registry import DATASETS
    from agenticrs.features.schema import CategoricalInput, FeatureSchema, SequenceInput

    entry = DATASETS[dataset]
    if entry.requires is None or not entry.available():
        return None
    try:
        spec = entry.build(default_cache_root())
    except DataError:  # a broken data folder: its run reports the data's own error
        return None
    categorical = [f for f in spec.fields if f.kind == "categorical" or (f.kind == "numeric" and f.transform == "quantile")]
    numeric = [f.name for f in spec.fields if f.kind == "numeric" and f.transform != "quantile"]
    sequences = [
        SequenceInput(f.name, f.max_len, f.share_vocab_with, f.paired_target, 0, f.element, f.parallel_to)
        for f in spec.of_kind("sequence")
    ]
    return FeatureSchema(
        categorical=tuple(CategoricalInput(f.name, 0) for f in categorical),
        numeric=tuple(numeric),
        sequences=tuple(sequences),
        labels=tuple(f.name for f in spec.labels),
        has_group=spec.group_key is not None,
    )


@dataclass(frozen=True)
class CardTask:
    """What a card of one task may name: its models, data sets, settings and test metrics."""

    model_kind: str
    models: Callable[[], list[str]]
    datasets: Callable[[], list[str]]
    check_train: Callable[[dict[str, Any]], Any]
    check_params: Callable[[Arm], Any]
    metrics: tuple[str, ...]  # metric names (a trailing '@' takes any cut-off: 'ndcg@' -> ndcg@10)
    per_label: tuple[str, ...] = ()  # metrics a multi-task run also reports per label: '<label>/auc'

    def reports(self, metric: str) -> bool:
        label, _, name = metric.rpartition("/")
        if label and name in self.per_label:
            return True
        return metric in self.metrics or any(m.endswith("@") and metric.startswith(m) for m in self.metrics)

    @property
    def metrics_text(self) -> str:
        named = [m + "K" if m.endswith("@") else m for m in self.metrics]
        return ", ".join(named + [f"<label>/{m}" for m in self.per_label])


def _ctr_models() -> list[str]:
    from agenticrs.models.base import list_models

    return list_models()


def _ctr_datasets() -> list[str]:
    from agenticrs.data.registry import DATASETS

    return DATASETS.names()


def _ctr_train(train: dict[str, Any]) -> Any:
    from agenticrs.train.config import TrainConfig

    return TrainConfig.model_validate(train)


def _ctr_params(arm: Arm) -> Any:
    from agenticrs.models.base import make_config

    return make_config(arm.model_name, arm.model_params())


def _seq_models() -> list[str]:
    from agenticrs.gr.zoo import list_sequential_models

    return list_sequential_models()


def _seq_datasets() -> list[str]:
    from agenticrs.gr.sequences import SEQUENCE_DATASETS

    return SEQUENCE_DATASETS.names()


def _seq_train(train: dict[str, Any]) -> Any:
    from agenticrs.gr.train import SequentialTrainConfig

    return SequentialTrainConfig.model_validate(train)


def _seq_params(arm: Arm) -> Any:
    from agenticrs.gr.workflow import TokenizerSettings
    from agenticrs.gr.zoo import make_sequential_config

    tokenizer = {k: v for k, v in arm.tokenizer.items() if k != "collaborative_arm"}
    if "collaborative_arm" in arm.tokenizer:  # the arm's run is only known when it has trained
        tokenizer["source"] = "collaborative"
    TokenizerSettings.model_validate(tokenizer)
    return make_sequential_config(arm.model_name, arm.params)


def _stream_models() -> list[str]:
    from agenticrs.train.streaming.methods import METHODS

    return METHODS.names()


def _stream_datasets() -> list[str]:
    from agenticrs.gr.sequences import SEQUENCE_DATASETS

    return [name for name in SEQUENCE_DATASETS.names() if name.startswith("sim-")]


def _stream_train(train: dict[str, Any]) -> Any:
    from agenticrs.train.streaming.protocol import stream_train_defaults

    return stream_train_defaults().model_validate({**stream_train_defaults().model_dump(), **train})


def _stream_params(arm: Arm) -> Any:
    from agenticrs.train.streaming import StreamConfig

    return StreamConfig.model_validate({"input": {"source": "sim-tiny"}, **arm.params, "method": arm.model_name})


def _cascade_models() -> list[str]:
    from agenticrs.models.base import list_models
    from agenticrs.retrieval.cascade_train import TASK

    return list_models(TASK)


def _cascade_datasets() -> list[str]:
    from agenticrs.sim.config import PRESETS

    return [f"sim-{preset}" for preset in PRESETS]


def _cascade_train(train: dict[str, Any]) -> Any:
    from agenticrs.retrieval.cascade_train import CascadeTrainConfig

    return CascadeTrainConfig.model_validate(train)


def _cascade_params(arm: Arm) -> Any:
    from agenticrs.retrieval.cascade_train import build_multi_objective

    return build_multi_objective(arm.model_name, 1, arm.params).config


_CASCADE_METRICS = tuple(f"{objective}/{metric}@" for objective in ("exposure", "click", "conversion", "all",
                         "fused_click", "fused_conversion") for metric in ("set_recall", "set_ndcg"))  # fmt: skip

# The tasks a card can have: what `check_card` validates a card of that task against.
TASKS: dict[str, CardTask] = {
    "ctr": CardTask("CTR model", _ctr_models, _ctr_datasets, _ctr_train, _ctr_params,
                    ("auc", "logloss", "ctr_auc", "cvr_auc", "ctcvr_auc"), per_label=("auc", "logloss")),
    "sequential": CardTask("sequential model", _seq_models, _seq_datasets, _seq_train, _seq_params, ("recall@", "ndcg@")),
    "streaming": CardTask("streaming method", _stream_models, _stream_datasets, _stream_train, _stream_params,
                          ("auc", "logloss", "ece", "calibration")),
    "multi_objective_retrieval": CardTask("multi-objective retriever", _cascade_models, _cascade_datasets,
                                          _cascade_train, _cascade_params, _CASCADE_METRICS),
}  # fmt: skip


def parse_card(raw: Any, where: str = "card", base_dir: Path | None = None) -> MethodCard:
    """A validated card from parsed YAML/JSON data (a proposal from anywhere: a file, an LLM)."""
    if not isinstance(raw, dict):
        raise CardError(f"{where}: a method card is a mapping, got {type(raw).__name__}")
    try:
        card = MethodCard.model_validate(raw)
    except ValidationError as exc:
        raise CardError(f"{where}: {_first_error(exc)}") from None
    card = check_card(card, where, base_dir)
    return _with_absolute_code(card, base_dir or Path.cwd())


def _with_absolute_code(card: MethodCard, base_dir: Path) -> MethodCard:
    """Generated modules located relative to the card's folder, so the card runs from anywhere."""

    def fix(arm: Arm) -> Arm:
        return arm if arm.code is None else arm.model_copy(update={"code": str((base_dir / arm.code).resolve())})

    return card.model_copy(update={"model": fix(card.model), "baselines": [fix(b) for b in card.baselines]})


def load_card(path: str | Path) -> MethodCard:
    """Read and validate a card file; errors name the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CardError(f"cannot read the card {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_card(raw, str(path), path.parent)


def _load_shipped() -> None:
    for path in sorted(CARD_DIR.glob("*.yaml")):
        CARDS.register(path.stem, path)


# The cards that ship with the package, by name -> file (validated when loaded: `resolve_card`).
CARDS: Registry[Path] = Registry("method card", loader=_load_shipped)


def resolve_card(name_or_path: str | Path) -> MethodCard:
    """A shipped card by name, or a card file by path."""
    text = str(name_or_path)
    if text in CARDS:
        return load_card(CARDS[text])
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_card(path)
    raise CardError(f"no method card '{text}': not a file, and not a shipped card ({', '.join(CARDS.names())})")
