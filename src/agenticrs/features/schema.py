"""What a processed data set offers a model: the contract between `features` and `models`.

The encoder produces a `FeatureSchema`; a model reads it to size its embedding tables and
checks it against the inputs the model declares it needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

PAD_INDEX = 0  # sequence padding; never a real value
OOV_INDEX = 1  # seen at transform time but not in the training vocab (or rarer than min_count)
MISSING_INDEX = 2  # the value was missing
NUM_RESERVED = 3


@dataclass(frozen=True)
class CategoricalInput:
    name: str
    vocab_size: int  # including the reserved indices


@dataclass(frozen=True)
class SequenceInput:
    name: str
    max_len: int
    table: str | None  # categorical field whose embedding table it shares; None: its own table
    target: str | None  # candidate field it is compared with in target attention
    vocab_size: int  # 0 for numeric sequences
    element: str = "categorical"
    parallel_to: str | None = None  # the main sequence it runs alongside (same positions, same length)


@dataclass(frozen=True)
class FeatureSchema:
    categorical: tuple[CategoricalInput, ...]
    numeric: tuple[str, ...]  # columns of the numeric matrix (including `__missing` flags)
    sequences: tuple[SequenceInput, ...]
    labels: tuple[str, ...]
    has_group: bool
    text: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    has_request: bool = False  # batches carry `request` ids; a request's candidates are contiguous rows
    request_fields: tuple[str, ...] = ()  # fields constant within a request (user / context)

    @property
    def categorical_names(self) -> list[str]:
        return [c.name for c in self.categorical]

    def categorical_index(self, name: str) -> int:
        return self.categorical_names.index(name)

    def sequence(self, name: str) -> SequenceInput:
        for s in self.sequences:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def id_sequences(self) -> tuple[SequenceInput, ...]:
        return tuple(s for s in self.sequences if s.element == "categorical")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureSchema:
        return cls(
            categorical=tuple(CategoricalInput(**c) for c in raw["categorical"]),
            numeric=tuple(raw["numeric"]),
            sequences=tuple(SequenceInput(**s) for s in raw["sequences"]),
            labels=tuple(raw["labels"]),
            has_group=raw["has_group"],
            text=tuple(raw.get("text", ())),
            timestamps=tuple(raw.get("timestamps", ())),
            extra=raw.get("extra", {}),
            has_request=raw.get("has_request", False),
            request_fields=tuple(raw.get("request_fields", ())),
        )
