"""Input-field subsets: a model that sees only some of a data set's fields.

Feature selection and feature bagging (each ensemble member keeps a random share of the fields,
EnsNAS's diversity lever) need models built on fewer fields than the data set offers, without
re-processing the data. A `FieldSubset` narrows the schema the model is built on and slices each
batch to match (one column gather per matrix, no per-row work). Numeric columns belong to the
field they were derived from (`price` and `price__missing`); a sequence may stay only with the
field whose embedding table it shares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from agenticrs.features.schema import FeatureSchema

SEQ_PREFIXES = ("seq/", "seqlen/")


def numeric_base(column: str) -> str:
    return column.split("__", 1)[0]


def field_names(schema: FeatureSchema) -> list[str]:
    """Every selectable field: categorical fields, numeric base fields and id/numeric sequences."""
    names = list(schema.categorical_names)
    for column in schema.numeric:
        base = numeric_base(column)
        if base not in names:
            names.append(base)
    names += [s.name for s in schema.sequences if s.name not in names]
    return names


def protected_fields(schema: FeatureSchema) -> set[str]:
    """Fields a subset should not drop: the tables and targets that sequences are paired with."""
    keep: set[str] = set()
    for seq in schema.sequences:
        keep.update(x for x in (seq.table, seq.target) if x)
    return keep


@dataclass(frozen=True)
class FieldSubset:
    schema: FeatureSchema  # the narrowed schema the model is built on
    categorical_index: tuple[int, ...]
    numeric_index: tuple[int, ...]
    dropped_sequences: tuple[str, ...]

    @classmethod
    def select(cls, schema: FeatureSchema, keep: list[str]) -> FieldSubset:
        known = field_names(schema)
        unknown = [f for f in keep if f not in known]
        if unknown:
            raise ValueError(f"input_fields {unknown} are not fields of the data set (fields: {known})")
        wanted = set(keep)
        if not wanted:
            raise ValueError("input_fields is empty: a model needs at least one field")
        cat_index = [i for i, c in enumerate(schema.categorical) if c.name in wanted]
        num_index = [i for i, c in enumerate(schema.numeric) if numeric_base(c) in wanted]
        kept_cats = {schema.categorical[i].name for i in cat_index}
        sequences, dropped = [], []
        for seq in schema.sequences:
            main = seq.parallel_to or seq.name
            if seq.name in wanted or (seq.parallel_to and main in wanted):
                if seq.table is not None and seq.table not in kept_cats:
                    raise ValueError(
                        f"input_fields keeps sequence '{seq.name}' but drops '{seq.table}', whose embedding "
                        "table it shares; keep both or drop both"
                    )
                sequences.append(seq if seq.target is None or seq.target in kept_cats else replace(seq, target=None))
            else:
                dropped.append(seq.name)
        narrowed = replace(
            schema,
            categorical=tuple(schema.categorical[i] for i in cat_index),
            numeric=tuple(schema.numeric[i] for i in num_index),
            sequences=tuple(sequences),
            request_fields=tuple(f for f in schema.request_fields if f in kept_cats),
        )
        return cls(narrowed, tuple(cat_index), tuple(num_index), tuple(dropped))

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(batch)
        if "categorical" in batch:
            out["categorical"] = batch["categorical"][:, list(self.categorical_index)]
        if "numeric" in batch:
            out["numeric"] = batch["numeric"][:, list(self.numeric_index)]
        for name in self.dropped_sequences:
            for prefix in SEQ_PREFIXES:
                out.pop(prefix + name, None)
        return out


class SubsetSplitView:
    """A split seen through a field subset (for `Model.prepare`, which reads training arrays)."""

    def __init__(self, split, subset: FieldSubset) -> None:
        self._split, self._subset = split, subset
        self.rows = split.rows

    def keys(self) -> list[str]:
        dropped = {p + n for n in self._subset.dropped_sequences for p in SEQ_PREFIXES}
        return [k for k in self._split.keys() if k not in dropped]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> np.ndarray:
        value = self._split[key]
        if key == "categorical":
            return np.asarray(value)[:, list(self._subset.categorical_index)]
        if key == "numeric":
            return np.asarray(value)[:, list(self._subset.numeric_index)]
        if key not in self:
            raise KeyError(key)
        return value


def bag_fields(fields: list[str], rate: float, seed: int, protected: set[str] | None = None) -> list[str]:
    """Feature bagging: keep ceil(rate * F) of the droppable fields, drawn with `seed`.

    Protected fields (sequence tables and targets) are always kept; the order of `fields` is kept.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"feature bagging rate must be in (0, 1], got {rate}")
    protected = protected or set()
    droppable = [f for f in fields if f not in protected]
    if rate >= 1 or not droppable:
        return list(fields)
    keep_n = max(1, int(np.ceil(rate * len(droppable))))
    chosen = set(np.random.default_rng(seed).choice(len(droppable), size=keep_n, replace=False).tolist())
    kept = {droppable[i] for i in chosen} | (set(fields) & protected)
    return [f for f in fields if f in kept]


__all__ = ["FieldSubset", "bag_fields", "field_names", "protected_fields"]
