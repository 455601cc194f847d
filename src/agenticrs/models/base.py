"""Model base class, declared inputs and the registry of the model zoo.

A model states what it needs (`ModelInputs`); a data set that cannot satisfy it is refused with a
clear message before any training starts. The trainer never special-cases a model: it calls
`forward(batch)` and reads `{"logit": (B,), "aux_loss": optional scalar}`; a model whose own
loss term needs the labels defines `labelled_loss(output, labels) -> scalar` (see `train.ctr`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from agenticrs.data.cache import SplitArrays
from agenticrs.features.schema import FeatureSchema
from agenticrs.features.subset import FieldSubset, SubsetSplitView
from agenticrs.runtime.registry import Registry

Batch = dict[str, torch.Tensor]
_M = TypeVar("_M", bound=nn.Module)


# Bounds shared by every model's config. A value outside them is refused when the config is
# validated, naming the field, before anything is built: a width of 0 would train a degenerate
# model silently, a width of 1e9 would try to allocate hundreds of gigabytes. The upper bounds
# are far above any published setting; the parameter budget of a search is checked separately
# (`agenticrs.agents.space.check`, which counts parameters without allocating them).
MAX_EMBEDDING_DIM = 4096
MAX_UNITS = 16384  # width of one layer (hidden units, token / model / feed-forward widths)
MAX_LAYERS = 64  # layers of one MLP, one stack of blocks or cross layers
MAX_HEADS = 256  # attention heads, experts, views, prototypes
MAX_INIT_STD = 10.0
# the activations `agenticrs.models.layers.MLP` knows (`layers._activation`)
Activation = Literal["relu", "prelu", "sigmoid", "tanh", "gelu", "dice"]
EmbeddingDim = Annotated[int, Field(ge=1, le=MAX_EMBEDDING_DIM, description="embedding width per field")]
Units = Annotated[int, Field(ge=1, le=MAX_UNITS)]
HiddenUnits = Annotated[list[Units], Field(max_length=MAX_LAYERS, description="widths of the MLP's hidden layers")]
Layers = Annotated[int, Field(ge=1, le=MAX_LAYERS)]
Heads = Annotated[int, Field(ge=1, le=MAX_HEADS)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0, description="dropout rate in [0, 1)")]
InitStd = Annotated[float, Field(gt=0.0, le=MAX_INIT_STD)]
LossWeight = Annotated[float, Field(ge=0.0, le=1e6)]
# the name of a label field of the data set (checked against the data set when the model is built)
LABEL_NAME = "the name of a label of the data set"
LabelName = Annotated[str, Field(min_length=1, max_length=256, description=LABEL_NAME)]
# the name of a (categorical) field of the data set, checked by `ModelInputs.named_fields` at build
FIELD_NAME = "the name of a field of the data set"
FieldName = Annotated[str, Field(min_length=1, max_length=256, description=FIELD_NAME)]


class ModelConfig(BaseModel):
    """Base of every model's typed hyper-parameters; defaults are the paper's settings.

    Every field is bounded (the shared types above); infinite and NaN floats are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    embedding_dim: EmbeddingDim = 10
    input_fields: list[str] | None = None  # build on these fields only (feature subsets, bagging)
    # normalisation of the looked-up embeddings before the model reads them ("batch": batch norm
    # per embedding component, "layer": layer norm of every vector; see `FeatureEmbedding`)
    input_norm: Literal["none", "batch", "layer"] = "none"


@dataclass(frozen=True)
class ModelInputs:
    """What a model needs from a data set."""

    min_categorical: int = 1
    needs_target_sequence: bool = False  # a sequence paired with a candidate field (target attention)
    min_fields_for_interaction: int = 1  # e.g. FM needs at least two fields to interact
    request_centric: bool = False  # trains on whole requests (candidates of one request in one batch)
    multi_task: bool = False  # one head per label (`output_labels`); trains several labels at once
    min_labels: int = 1  # label fields the model trains on at once (ESMM: click and conversion; CM-DCM: direct, cart, delayed)
    # categorical fields the model reads by name (GSVR: the scenario, user and item fields)
    named_fields: tuple[str, ...] = ()

    def union(self, *others: ModelInputs) -> ModelInputs:
        """What a model made of parts needs: every part's needs at once (a composition's blocks)."""
        every = (self, *others)
        return ModelInputs(
            min_categorical=max(i.min_categorical for i in every),
            needs_target_sequence=any(i.needs_target_sequence for i in every),
            min_fields_for_interaction=max(i.min_fields_for_interaction for i in every),
            request_centric=any(i.request_centric for i in every),
            multi_task=any(i.multi_task for i in every),
            min_labels=max(i.min_labels for i in every),
            named_fields=tuple(dict.fromkeys(n for i in every for n in i.named_fields)),
        )

    def problems(self, schema: FeatureSchema) -> list[str]:
        found: list[str] = []
        if len(schema.categorical) < self.min_categorical:
            found.append(
                f"needs at least {self.min_categorical} categorical field(s); the data set has {len(schema.categorical)}"
            )
        n_fields = len(schema.categorical) + len(schema.numeric) + len(schema.id_sequences)
        if n_fields < self.min_fields_for_interaction:
            found.append(f"needs at least {self.min_fields_for_interaction} fields; the data set has {n_fields}")
        if self.needs_target_sequence and not any(
            s.target in schema.categorical_names for s in schema.id_sequences
        ):
            found.append(
                "needs a behaviour sequence paired with a candidate field (a sequence field with "
                "`share_vocab_with`/`target`, e.g. hist_item_id -> item_id); the data set has none"
            )
        missing = [n for n in self.named_fields if n not in schema.categorical_names]
        if missing:
            found.append(
                f"needs the categorical field(s) {', '.join(map(repr, missing))}; the data set's categorical "
                f"fields are {', '.join(schema.categorical_names) or 'none'}"
            )
        if not schema.labels:
            found.append("needs a binary label")
        elif len(schema.labels) < self.min_labels:
            found.append(f"needs at least {self.min_labels} label fields; the data set has {len(schema.labels)}")
        return found


class Model(nn.Module):
    """A CTR model over the shared feature layer."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    task: ClassVar[str] = "ctr"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    inputs: ClassVar[ModelInputs] = ModelInputs()
    # a small configuration for smoke tests and quick demos
    smoke_overrides: ClassVar[dict[str, Any]] = {}
    # Config fields the network ignores (search must not treat them as real knobs)
    inert_config: ClassVar[frozenset[str]] = frozenset()
    # training settings the model wants unless the user says otherwise (e.g. transformers want
    # warm-up and more patience): keys of `agenticrs.train.config.TrainConfig`
    train_defaults: ClassVar[dict[str, Any]] = {}
    # prefixes of parameter names that only a training loss uses, never the inference pass (the
    # generator heads and [MASK] vectors of the generative CTR models): inference gives them no gradient
    training_only: ClassVar[tuple[str, ...]] = ()
    # A multi-task model sets `self.output_labels` (the data set's labels it trains, one head each,
    # in column order of its (B, T) logit). A conversion model also sets `conversion_labels`:
    # (click label, conversion label) of the funnel its runs are scored on (`ctr_auc`, `cvr_auc`,
    # `ctcvr_auc`; `agenticrs.train.ctr`).
    conversion_labels: tuple[str, str] | None = None

    def __init__(self, schema: FeatureSchema, config: ModelConfig) -> None:
        super().__init__()
        self.schema = schema
        self.config = config

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The training target of each head from the trained labels' columns: (B, L) -> (B, T),
        NaN where a row has no target (it leaves that head's loss and metrics). The trainer and
        the evaluation apply it to `output_labels`' columns. Default: the labels themselves (head
        t predicts label t); ESMM trains its second head on click AND conversion."""
        return labels

    def prepare(self, train: SplitArrays, label_index: int = 0) -> None:
        """Statistics of the training split the model is built around (e.g. MGDIN's field
        information density). Called by the trainer before the first step; store the result in
        buffers so that it is saved with the run's weights. Default: nothing to prepare."""

    def begin_step(self, step: int) -> None:
        """Called by the engine before optimiser step `step` (1-based, the run's global step): a model
        with training phases switches here (generative pre-training, then fine-tuning). Default: none."""

    def evaluation_counts(self, step: int) -> bool:
        """Whether an evaluation after `step` may become the best checkpoint and use up patience (not
        during a pre-training phase, whose label head is not yet the model being selected)."""
        return True

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Every embedding-like parameter, for the trainer's separate L2 on embeddings.

        That is the weight of every `nn.Embedding`, plus the parameters a module declares in its
        class attribute `embedding_like: ClassVar[tuple[str, ...]]`, a tuple of attribute names
        (a `Parameter` or a `ParameterList`, `None` allowed): vectors that stand for a feature or
        are added to feature embeddings, such as `FeatureEmbedding.numeric_weight` and the
        type / field / segment / position vectors, special tokens and prototypes of SORT, MGDIN
        and CDNet. Declaring them keeps a regulariser from shrinking the feature embeddings while
        the vectors added to them grow unchecked. Normalisation gains and biases are not
        embedding-like. Each parameter appears once, in module order.
        """
        found: dict[int, nn.Parameter] = {}
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                found.setdefault(id(module.weight), module.weight)
            for attribute in getattr(type(module), "embedding_like", ()):
                value = getattr(module, attribute, None)
                params = list(value) if isinstance(value, nn.ParameterList) else [value]
                for p in params:
                    if isinstance(p, nn.Parameter):
                        found.setdefault(id(p), p)
        return list(found.values())

    def mlp_ceiling_spec(self) -> tuple[int, list[int]] | None:
        """(input width, hidden units) of the model's main MLP, for the throughput ceiling."""
        return None

    @classmethod
    def inputs_for(cls, config: ModelConfig) -> ModelInputs:
        """What the model built with `config` needs; `inputs` unless the needs depend on the config
        (a composition needs what its blocks need). `build_model` checks the data set against it."""
        return cls.inputs

    @classmethod
    def default_config(cls) -> ModelConfig:
        return cls.Config()

    @classmethod
    def smoke_config(cls) -> ModelConfig:
        return cls.Config(**cls.smoke_overrides)


def _load_zoo() -> None:
    import agenticrs.gr.models  # noqa: F401  (registers the sequential / generative models)
    import agenticrs.models.zoo  # noqa: F401  (registers the built-in CTR models)
    import agenticrs.retrieval.csmf  # noqa: F401  (and the multi-objective ones)
    import agenticrs.retrieval.two_tower  # noqa: F401  (registers the retrieval models)


# One registry for the models of every task (CTR, multi-task, sequential, generative); a model
# class says its task in `task` and `build_model` / `agenticrs.gr.zoo.build_sequential` build it.
MODELS: Registry[type[nn.Module]] = Registry("model", loader=_load_zoo)


def register(name: str) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: `@register("deepfm")` makes a model of any task available by name."""

    def wrap(cls: type[_M]) -> type[_M]:
        MODELS.register(name, cls)
        cls.name = name
        return cls

    return wrap


def model_class(name: str) -> type[Model]:
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; known models: {', '.join(list_models(None))}")
    cls = MODELS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        task = getattr(cls, "task", "?")
        raise KeyError(f"model '{name}' is a {task} model, not a CTR model; known CTR models: {', '.join(list_models())}")
    return cls


def list_models(task: str | None = "ctr") -> list[str]:
    """Registered model names of one task (`None`: every task)."""
    return [n for n, cls in MODELS.items() if task is None or getattr(cls, "task", None) == task]


class IncompatibleDataError(ValueError):
    """The data set lacks inputs the model declares it needs."""


def make_config(name: str, overrides: dict[str, Any] | None = None, smoke: bool = False) -> ModelConfig:
    cls = model_class(name)
    base = cls.smoke_overrides if smoke else {}
    try:
        return cls.Config(**{**base, **(overrides or {})})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(map(str, first["loc"]))
        got = f" (got {_short(first['input'])})" if first["loc"] and first["type"] != "missing" else ""
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"invalid config for model '{name}': {where + ': ' if where else ''}{message}{got}{more}") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_model(
    name: str, schema: FeatureSchema, config: ModelConfig | dict[str, Any] | None = None, smoke: bool = False
) -> Model:
    """Check the data set against the model's needs, then build it."""
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = make_config(name, config, smoke=smoke)
    subset = FieldSubset.select(schema, config.input_fields) if config.input_fields is not None else None
    problems = cls.inputs_for(config).problems(subset.schema if subset else schema)
    if problems:
        scope = "on the selected input fields" if subset else "on this data set"
        raise IncompatibleDataError(f"model '{name}' cannot train {scope}: " + "; ".join(problems))
    if subset is None:
        return cls(schema, config)
    model = cls(subset.schema, config)
    model.register_forward_pre_hook(lambda _module, args: (subset(args[0]), *args[1:]))
    prepare = model.prepare
    model.prepare = lambda train, label_index=0: prepare(SubsetSplitView(train, subset), label_index)  # type: ignore[method-assign]
    return model
