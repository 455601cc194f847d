"""A scoring request encoded straight from its Python values, with the run's own encoder.

Why: a served request is small (one user context, ~100 candidates), and on the Arrow path
(`request_table` then `FeatureEncoder.transform`) the fixed cost of each Arrow call, a few per
field and request, adds up to ~2.5 ms, more than the model takes. Here:

- categorical values (fields and sequence elements) are looked up in a memo of raw value -> id per
  vocabulary; a value not yet in it is encoded by the run's encoder (`encode_values`, in one call
  per request for all new values), so every id is the encoder's by construction;
- numeric fields go through the encoder's own transform (`numeric_values`, `bucketize`) on a
  NumPy array, and sequences through its padding (`pad_sequences`);
- the context is encoded once and repeated for every candidate, as the Arrow path does.

Anything this path does not cover returns None, and the request takes the Arrow path, which also
names a bad value in its 4xx: a field given twice, missing or unknown; a value of a type other
than the field's (booleans, floats as ids, non-finite numbers, huge integers); text or timestamp
fields. A test checks that both paths give the same arrays, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agenticrs.data.spec import FieldSpec
from agenticrs.features.encoder import FeatureEncoder, pad_sequences
from agenticrs.features.hashing import fnv1a_64_text
from agenticrs.serve.payload import ScoreRequest, values_column

# ids (ints, strings) and missing values: floats as ids keep the Arrow path's text rules
_ID_TYPES = frozenset({int, str, type(None)})
_NUMBER_TYPES = frozenset({int, float, type(None)})
_EXACT_FLOAT = 2.0**53  # integers beyond this are not exact as float64: the Arrow path decides
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class RequestEncoder:
    """The model inputs of one run for a `ScoreRequest`, or None where the Arrow path must decide.

    `memo_limit` bounds each vocabulary's memo (it starts over when full): the values a service
    sees repeat (items, categories, users), so nearly every lookup is a hit after warm-up."""

    def __init__(self, encoder: FeatureEncoder, model_inputs: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                 memo_limit: int = 200_000) -> None:  # fmt: skip
        """`model_inputs`: what the run does after its encoder (`Scorer.model_inputs`: its feature
        actions, then the arrays the model reads)."""
        self.encoder = encoder
        self.model_inputs = model_inputs
        spec = self.encoder.spec
        self.memo_limit = memo_limit
        self.memo: dict[str, dict[Any, int]] = {}
        self.categorical = self.encoder.categorical_fields
        self.sequences = self.encoder.sequence_fields
        columns = self.encoder.numeric_columns()
        self.numeric_width = len(columns)
        # (field, its column, whether a missing-indicator column follows it): fixed for the run
        self.numeric = [(f, columns.index(f.name), self.encoder.numeric[f.name].has_missing)
                        for f in self.encoder.dense_numeric_fields]  # fmt: skip
        self.request_key = spec.request_key
        self.sources = {f.name: f.source for f in spec.fields}
        self.inputs = {f.source for f in spec.fields if f.kind != "label"}
        unsupported = [f.name for f in spec.fields if f.kind in ("text", "timestamp")]
        # the request key's column must be the one `request_table` fills with the request id
        key_ok = self.request_key is None or spec.key_column(self.request_key) == self.request_key
        # (a group key is no model input: `model_inputs` drops it, so it is not computed here)
        self.supported = not unsupported and key_ok

    # -- values -------------------------------------------------------------------------
    def ids(self, owner: str, values: list[Any]) -> np.ndarray | None:
        """Ids of `values` under vocabulary `owner` (the encoder's ids), or None for a value the
        memo does not take (a float, a boolean, a list)."""
        if not {type(v) for v in values} <= _ID_TYPES:
            return None
        memo = self.memo.setdefault(owner, {})
        get = memo.get
        found = [get(v, -1) for v in values]
        if -1 in found:
            learned = self._learn(owner, list(dict.fromkeys(v for v, i in zip(values, found, strict=True) if i == -1)))
            found = [learned[v] if i == -1 else i for v, i in zip(values, found, strict=True)]
        return np.array(found, dtype=np.int32)

    def _learn(self, owner: str, values: list[Any]) -> dict[Any, int]:
        """Encode values the memo lacks with the run's encoder (one call per value type), and
        remember them."""
        learned: dict[Any, int] = {}
        for kind in (int, str, type(None)):
            group = [v for v in values if type(v) is kind]
            if group:
                column = values_column(group, "categorical")  # as `request_table` builds a column of them
                learned.update(zip(group, self.encoder.encode_values(column, owner).tolist(), strict=True))
        memo = self.memo[owner]
        if len(memo) + len(learned) > self.memo_limit:
            memo.clear()
        memo.update(learned)
        return learned

    @staticmethod
    def numbers(values: list[Any]) -> np.ndarray | None:
        """Raw numeric values as float64 (None -> NaN), or None if one is not a plain finite number."""
        if not {type(v) for v in values} <= _NUMBER_TYPES:
            return None
        try:
            raw = np.array(values, dtype=np.float64)
        except (OverflowError, TypeError, ValueError):
            return None
        missing = int(np.isnan(raw).sum())
        if missing != sum(v is None for v in values) or not np.all(np.abs(raw[~np.isnan(raw)]) <= _EXACT_FLOAT):
            return None
        return raw

    # -- one request --------------------------------------------------------------------
    def encode(self, request: ScoreRequest, request_id: int) -> dict[str, np.ndarray] | None:
        """The run's model inputs for `request` (the same arrays as `Scorer.encode` of its
        `request_table`), or None when the Arrow path must take it."""
        if not self.supported:
            return None
        context, candidates = request.context, request.candidates
        n = len(candidates)
        names = candidates[0].keys()
        if any(c.keys() != names for c in candidates) or names & context.keys():
            return None
        given = names | context.keys()
        if given != self.inputs:  # unknown, missing, or the request key given by the client
            return None

        def values(f: FieldSpec) -> tuple[list[Any], bool]:
            """The field's values and whether they are the context's one value for every row."""
            source = self.sources[f.name]  # (`FieldSpec.source` is a property: not once per value)
            if source in context:
                return [context[source]], True
            return [c[source] for c in candidates], False

        out: dict[str, np.ndarray] = {}
        categorical = np.empty((n, len(self.categorical)), dtype=np.int32)
        for j, f in enumerate(self.categorical):
            raw, _ = values(f)
            if f.kind == "numeric":  # quantile buckets
                numbers = self.numbers(raw)
                if numbers is None:
                    return None
                categorical[:, j] = self.encoder.bucketize(numbers, f)
            else:
                ids = self.ids(f.name, raw)
                if ids is None:
                    return None
                categorical[:, j] = ids
        numeric = np.zeros((n, self.numeric_width), dtype=np.float32)
        for f, column, has_missing in self.numeric:
            raw, _ = values(f)
            numbers = self.numbers(raw)
            if numbers is None:
                return None
            value, is_missing = self.encoder.numeric_values(numbers, f)
            if np.any(np.abs(value) > _FLOAT32_MAX):  # the Arrow path names the value
                return None
            numeric[:, column] = value
            if has_missing:
                numeric[:, column + 1] = is_missing
        for f in self.sequences:
            lists, shared = values(f)
            sequence = self._sequence(f, lists)
            if sequence is None:
                return None
            padded, kept = sequence
            if shared and n > 1:
                padded, kept = np.repeat(padded, n, axis=0), np.repeat(kept, n)
            out[f"seq/{f.name}"], out[f"seqlen/{f.name}"] = padded, kept
        out["categorical"], out["numeric"] = categorical, numeric
        if self.request_key is not None:
            key = np.array([fnv1a_64_text(str(request_id))], np.uint64).view(np.int64)[0]  # the id's decimal text
            out["request"] = np.full(n, key, dtype=np.int64)
        return self.model_inputs({k: out[k] for k in sorted(out)})

    def _sequence(self, f: FieldSpec, lists: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """Padded values and kept lengths of one sequence field's lists (None: an empty history)."""
        if not all(type(v) is list or v is None for v in lists):
            return None
        rows = [v or [] for v in lists]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat_values = [e for row in rows for e in row]
        if f.element == "numeric":
            flat = self.numbers(flat_values) if flat_values else np.zeros(0)
            if flat is None or np.any(np.abs(np.nan_to_num(flat)) > _FLOAT32_MAX):
                return None
            flat = np.nan_to_num(flat, nan=0.0).astype(np.float32)
        else:
            ids = self.ids(self.encoder.vocab_owner(f), flat_values)
            if ids is None:
                return None
            flat = ids
        return pad_sequences(lengths, flat, f.max_len)
