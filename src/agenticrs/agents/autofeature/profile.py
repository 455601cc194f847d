"""Profiling a processed data set, field by field, and the leakage check (AutoFeature's eyes).

For every input field (categorical, numeric, sequence) the profile says how many values it takes,
how often it is present, how much it tells about the label (mutual information, single-field AUC),
how its distribution drifts from train to later data (PSI), and whether it looks like a leak.

Everything is computed on encoded arrays with numpy, never row by row:

- a categorical field is its encoder ids; for MI and PSI its `TOP_VALUES` most frequent train ids
  keep their own bin and the rest share one ("other"), so a high-cardinality id cannot look
  informative by memorising singletons (the plug-in MI's bias grows with the number of bins);
- a numeric field is cut into `NUMERIC_BINS` quantile bins fitted on train (plus one bin for
  missing values);
- a sequence field is profiled through its length (an empty sequence counts as missing).

MI is counted with `np.bincount` on the joint bin index; AUC uses the metrics registry's
rank-based `auc`. Each split is subsampled to `max_rows` rows (seeded) before anything is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agenticrs.features.pipeline import ProcessedDataset
from agenticrs.features.schema import MISSING_INDEX, NUM_RESERVED
from agenticrs.train.metrics import auc as roc_auc

if TYPE_CHECKING:
    from agenticrs.agents.knowledge import KnowledgeStore

FieldKind = Literal["categorical", "numeric", "sequence"]

TOP_VALUES = 255  # categorical ids kept as their own bin for MI and PSI (the rest: one "other" bin)
NUMERIC_BINS = 16  # quantile bins of a numeric field (or a sequence length), fitted on train
PSI_FLOOR = 1e-4  # a bin's share is floored here so that an empty bin does not make PSI infinite
CROSS_TOP = 64  # bins per field in `cross_information` (the joint has up to 65^2 cells)


# -- the estimators, on integer codes -----------------------------------------------------------------
def _compact(codes: np.ndarray) -> np.ndarray:
    """Codes renumbered 0..k-1 (so that bincount stays small whatever the ids are)."""
    return np.unique(np.asarray(codes), return_inverse=True)[1].reshape(-1).astype(np.int64)


def entropy(codes: np.ndarray) -> float:
    """Plug-in Shannon entropy of discrete codes, in nats."""
    codes = _compact(codes)
    if len(codes) == 0:
        return 0.0
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(x: np.ndarray, y: np.ndarray, corrected: bool = False) -> float:
    """I(X; Y) in nats from the joint counts of two discrete code arrays (`np.bincount`).

    `corrected` subtracts the Miller-Madow bias of the plug-in estimate,
    ((K_x - 1) + (K_y - 1) - (K_xy - 1)) / 2N with K the observed cells: an independent pair then
    scores about 0 however many cells it has (the plain estimate is about (K_x - 1)(K_y - 1) / 2N)."""
    x, y = _compact(x), _compact(y)
    if len(x) != len(y):
        raise ValueError(f"mutual_information: x has {len(x)} values but y has {len(y)}")
    n = len(x)
    if n == 0:
        return 0.0
    ky = int(y.max()) + 1
    joint = np.bincount(x * ky + y)
    px, py = np.bincount(x), np.bincount(y)
    cells = np.flatnonzero(joint)
    counts = joint[cells].astype(np.float64)
    mi = float((counts / n * np.log(counts * n / (px[cells // ky] * py[cells % ky]))).sum())
    if corrected:
        return mi + ((np.count_nonzero(px) - 1) + (np.count_nonzero(py) - 1) - (len(cells) - 1)) / (2.0 * n)
    return max(mi, 0.0)  # rounding can leave -1e-17 for independent codes


def psi(reference: np.ndarray, window: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """Population stability index of `window` against `reference` over the same bins:
    sum over bins of (q - p) * ln(q / p), each share floored at `floor`. Rule of thumb: < 0.1
    stable, 0.1-0.25 a moderate shift, > 0.25 a major one."""
    reference, window = np.asarray(reference, np.int64), np.asarray(window, np.int64)
    if len(reference) == 0 or len(window) == 0:
        raise ValueError("psi: both the reference and the window need at least one row")
    k = int(max(reference.max(), window.max())) + 1
    p = np.maximum(np.bincount(reference, minlength=k) / len(reference), floor)
    q = np.maximum(np.bincount(window, minlength=k) / len(window), floor)
    return float(((q - p) * np.log(q / p)).sum())


def quantile_edges(values: np.ndarray, bins: int = NUMERIC_BINS) -> np.ndarray:
    """Inner edges of `bins` equal-frequency bins (duplicates merged: a discrete value gets one bin)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return np.zeros(0)
    return np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


# -- reading a field ----------------------------------------------------------------------------------
class _Sample:
    """Up to `max_rows` rows of a split (a seeded sorted draw), read once per array."""

    def __init__(self, split: Any, max_rows: int, seed: int) -> None:
        self.split = split
        total = int(split.rows)
        if total <= max_rows:
            self.index: np.ndarray | None = None
            self.rows = total
        else:
            self.index = np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))
            self.rows = max_rows
        self._arrays: dict[str, np.ndarray] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.split

    def get(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            value = self.split[key]
            self._arrays[key] = np.asarray(value if self.index is None else value[self.index])
        return self._arrays[key]


@dataclass
class _Values:
    """One field on one sample: the value per row (an id, a number or a length), and masks."""

    value: np.ndarray
    missing: np.ndarray  # bool
    in_vocab: np.ndarray  # bool: present and not out of vocabulary
    elements: np.ndarray | None = None  # a sequence's elements (for its cardinality)

    def take(self, rows: np.ndarray) -> _Values:
        return _Values(self.value[rows], self.missing[rows], self.in_vocab[rows])


@dataclass(frozen=True)
class _Field:
    name: str
    kind: FieldKind
    source: Literal["categorical", "numeric", "sequence"]  # the array it is read from
    column: int = -1  # its column in `categorical` / `numeric`
    missing_column: int | None = None  # the numeric `__missing` flag column, when train had missing values
    element: str = "categorical"  # of a sequence

    def read(self, sample: _Sample) -> _Values:
        if self.source == "categorical":
            ids = sample.get("categorical")[:, self.column].astype(np.int64)
            return _Values(ids, ids == MISSING_INDEX, ids >= NUM_RESERVED)
        if self.source == "numeric":
            numeric = sample.get("numeric")
            value = numeric[:, self.column].astype(np.float64)
            missing = (numeric[:, self.missing_column] > 0.5 if self.missing_column is not None
                       else np.zeros(len(value), bool))  # fmt: skip
            return _Values(value, missing, ~missing)
        lengths = sample.get(f"seqlen/{self.name}").astype(np.int64)
        seq = sample.get(f"seq/{self.name}")
        mask = np.arange(seq.shape[1])[None, :] < lengths[:, None]  # left-aligned, padded after
        if self.element == "categorical":
            in_vocab = ((seq >= NUM_RESERVED) & mask).any(axis=1)
            elements = seq[mask & (seq >= NUM_RESERVED)]
        else:
            in_vocab, elements = lengths > 0, seq[mask]
        return _Values(lengths.astype(np.float64), lengths == 0, in_vocab, elements)

    def cardinality(self, values: _Values) -> int:
        if self.source == "categorical":
            return int(np.unique(values.value[values.value >= NUM_RESERVED]).size)
        if self.source == "numeric":
            return int(np.unique(values.value[~values.missing]).size)
        return int(np.unique(values.elements).size)


def profiled_fields(data: ProcessedDataset) -> list[_Field]:
    """The fields a profile covers, in the spec's order (labels, text and timestamps are not inputs
    that can be profiled this way)."""
    schema = data.schema
    categorical = schema.categorical_names
    out: list[_Field] = []
    for f in data.spec.fields:
        if f.name in categorical:
            out.append(_Field(f.name, "numeric" if f.kind == "numeric" else "categorical", "categorical",
                              categorical.index(f.name)))  # fmt: skip
        elif f.kind == "numeric" and f.name in schema.numeric:
            column = schema.numeric.index(f.name)
            flag = f"{f.name}__missing"
            out.append(_Field(f.name, "numeric", "numeric", column,
                              schema.numeric.index(flag) if flag in schema.numeric else None))  # fmt: skip
        elif f.kind == "sequence":
            out.append(_Field(f.name, "sequence", "sequence", element=f.element))
    return out


class _Binner:
    """Train-fitted bins of one field: top ids (+ other) for ids, quantile bins (+ missing) otherwise."""

    def __init__(self, field: _Field, train: _Values, top: int) -> None:
        self.ids = field.source == "categorical"
        if self.ids:
            counts = np.bincount(train.value) if len(train.value) else np.zeros(0, np.int64)
            keep = np.argsort(-counts, kind="stable")[:top]
            keep = keep[counts[keep] > 0]
            self.lookup = np.full(len(counts), len(keep), np.int64)  # ids not kept: the "other" bin
            self.lookup[keep] = np.arange(len(keep))
            self.other = len(keep)
        else:
            self.edges = quantile_edges(train.value[~train.missing])

    def __call__(self, values: _Values) -> np.ndarray:
        if self.ids:
            out = np.full(len(values.value), self.other, np.int64)
            known = values.value < len(self.lookup)
            out[known] = self.lookup[values.value[known]]
            return out
        out = np.searchsorted(self.edges, values.value, side="right").astype(np.int64)
        out[values.missing] = len(self.edges) + 1
        return out


def _positive_rate(train_codes: np.ndarray, train_y: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each code's positive rate on train (a code unseen on train: the overall rate)."""
    size = int(max(train_codes.max(initial=0), codes.max(initial=0))) + 1
    seen = np.bincount(train_codes, minlength=size)
    positives = np.bincount(train_codes, weights=train_y, minlength=size)
    overall = float(train_y.mean()) if len(train_y) else 0.5
    rate = np.where(seen > 0, positives / np.maximum(seen, 1), overall)
    return rate[codes]


# -- the profile --------------------------------------------------------------------------------------
@dataclass
class FieldProfile:
    """One field's statistics. Cardinality, coverage, missing rate and MI are on train; AUC on
    valid (else test, else train); PSI of every later window against train."""

    name: str
    kind: FieldKind
    cardinality: int  # distinct values seen in train (ids: not counting OOV / missing; a quantile-encoded
    # numeric field: its buckets, the only values the encoder keeps)
    coverage: float  # share of train rows with an in-vocabulary value (not missing, not OOV)
    missing_rate: float  # share of train rows where it is missing (a sequence: empty)
    mutual_information: float  # nats, with the label, on train (binned as the module says)
    normalised_mi: float  # MI / H(label)
    auc: float  # single-field AUC, max(auc, 1 - auc); nan when the split has one class
    psi: dict[str, float]  # window -> PSI against train
    leak: str | None = None  # why the leakage check flagged it

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["auc"] = None if math.isnan(self.auc) else self.auc  # JSON (and PostgreSQL) have no NaN
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FieldProfile:
        values = dict(raw)
        values["auc"] = float("nan") if values.get("auc") is None else float(values["auc"])
        values["psi"] = {k: float(v) for k, v in (values.get("psi") or {}).items()}
        return cls(**values)


@dataclass
class DatasetProfile:
    """A data set's profile: one `FieldProfile` per input field. `rows`: the train rows profiled."""

    dataset: str
    label: str
    rows: int
    fields: list[FieldProfile]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def leaks(self) -> list[FieldProfile]:
        return [f for f in self.fields if f.leak is not None]

    def field(self, name: str) -> FieldProfile:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"field '{name}' is not in the profile of {self.dataset} "
                       f"(has {', '.join(f.name for f in self.fields)})")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "label": self.label, "rows": self.rows,
                "fields": [f.to_dict() for f in self.fields], "settings": dict(self.settings)}  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetProfile:
        return cls(dataset=raw["dataset"], label=raw["label"], rows=int(raw["rows"]),
                   fields=[FieldProfile.from_dict(f) for f in raw["fields"]],
                   settings=dict(raw.get("settings") or {}))  # fmt: skip


def resolve_label(data: ProcessedDataset, label: str | None) -> tuple[str, int]:
    """(name, column) of the label to profile against: `label`, or the data set's first label."""
    labels = list(data.schema.labels)
    if not labels:
        raise ValueError(f"data set '{data.spec.name}' has no label to profile against")
    if label is None:
        return labels[0], 0
    if label not in labels:
        raise ValueError(f"label '{label}' is not a label of '{data.spec.name}' (labels: {', '.join(labels)})")
    return label, labels.index(label)


def _labels(sample: _Sample, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(known, y): rows whose label is known (an optional label may be NaN) and the 0/1 label."""
    raw = sample.get("labels")[:, index].astype(np.float64)
    known = ~np.isnan(raw)
    return known, (np.nan_to_num(raw) > 0.5).astype(np.int64)


def _time_halves(train: _Sample, timestamps: tuple[str, ...]) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(timestamp field, earlier half, later half) of the train rows by time; None without a
    timestamp or when every row has the same time."""
    for name in timestamps:
        key = f"ts/{name}"
        if key in train and train.rows >= 2:
            ts = train.get(key)
            if ts.min() == ts.max():
                continue
            order = np.argsort(ts, kind="stable")
            half = train.rows // 2
            return name, order[:half], order[half:]
    return None


def profile_dataset(
    data: ProcessedDataset,
    label: str | None = None,
    max_rows: int = 200_000,
    leak_auc: float = 0.95,
    leak_nmi: float = 0.5,
    post_present: float = 0.9,
    post_absent: float = 0.1,
    seed: int = 0,
) -> DatasetProfile:
    """Profile every input field of `data` against `label` (default: its first label).

    Drift (PSI, over the field's train-fitted bins) compares train with every later window:
    `valid` and `test` (every split other than train), and, when the data has a timestamp field,
    `train_late`: the later half of the train rows by time against the earlier half (a drift
    inside the training period, which a random split would hide).

    The leakage check flags a field that
    1. predicts the label too well: single-field AUC >= `leak_auc` on valid (else test, else a
       held-out half of train), or normalised MI >= `leak_nmi` on train; or
    2. only exists after the outcome: present (not missing) for >= `post_present` of the positives
       and <= `post_absent` of the negatives of train, or the other way round.
    Each flagged field's `leak` gives the rule and the numbers.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1 (got {max_rows})")
    label_name, label_index = resolve_label(data, label)
    train = _Sample(data.split("train"), max_rows, seed)
    later = sorted((name for name in data.splits if name != "train"), key=lambda n: (n != "valid", n != "test", n))
    windows = {name: _Sample(data.splits[name], max_rows, seed) for name in later if data.splits[name].rows > 0}
    known, y = _labels(train, label_index)
    if not known.any():
        raise ValueError(f"label '{label_name}' is missing on every train row of '{data.spec.name}'")
    h_label = entropy(y[known])
    auc_split = next((w for w in ("valid", "test") if w in windows), "train")
    scored_known, scored_y = _labels(windows[auc_split], label_index) if auc_split in windows else (known, y)
    fit_rows = scored_rows = np.arange(train.rows)
    if auc_split == "train":  # no later split: rates from one random half of train, AUC on the other
        order = np.random.default_rng(seed).permutation(train.rows)
        fit_rows, scored_rows = order[: train.rows // 2], order[train.rows // 2 :]
        scored_known, scored_y = known[scored_rows], y[scored_rows]
        auc_split = "a held-out half of train"
    halves = _time_halves(train, data.schema.timestamps)
    fields = []
    for spec in profiled_fields(data):
        values = spec.read(train)
        binner = _Binner(spec, values, TOP_VALUES)
        bins = binner(values)
        mi = mutual_information(bins[known], y[known])
        nmi = mi / h_label if h_label > 0 else 0.0
        scored = spec.read(windows[auc_split]) if auc_split in windows else values.take(scored_rows)
        auc = _field_auc(spec, values.take(fit_rows), bins[fit_rows], binner, known[fit_rows], y[fit_rows],
                         scored, scored_known, scored_y)  # fmt: skip
        drift = {name: psi(bins, binner(spec.read(window))) for name, window in windows.items()}
        if halves is not None:
            drift["train_late"] = psi(bins[halves[1]], bins[halves[2]])
        reasons = _too_predictive(auc, nmi, auc_split, leak_auc, leak_nmi)
        reasons += _post_outcome(values.missing[known], y[known], post_present, post_absent)
        fields.append(FieldProfile(
            name=spec.name, kind=spec.kind, cardinality=spec.cardinality(values),
            coverage=float(values.in_vocab.mean()) if train.rows else 0.0,
            missing_rate=float(values.missing.mean()) if train.rows else 0.0,
            mutual_information=mi, normalised_mi=nmi, auc=auc, psi=drift,
            leak="; ".join(reasons) or None,
        ))  # fmt: skip
    settings = {"max_rows": max_rows, "leak_auc": leak_auc, "leak_nmi": leak_nmi, "post_present": post_present,
                "post_absent": post_absent, "seed": seed, "auc_split": auc_split, "windows": list(windows),
                "label_entropy": h_label, "time_field": halves[0] if halves else None,
                "top_values": TOP_VALUES, "numeric_bins": NUMERIC_BINS}  # fmt: skip
    return DatasetProfile(dataset=data.spec.name, label=label_name, rows=train.rows, fields=fields, settings=settings)


def _field_auc(spec: _Field, train: _Values, train_bins: np.ndarray, binner: _Binner, known: np.ndarray,
               y: np.ndarray, scored: _Values, scored_known: np.ndarray, scored_y: np.ndarray) -> float:
    """Single-field AUC on the scored rows: an id scores its positive rate on the fitted rows; a
    number (or a length) scores itself, unless it can be missing, then its bin's positive rate.
    The scored rows are never the fitted ones: a rate fitted and scored on the same rows would
    give a high-cardinality id (one user, one click) a near-perfect AUC."""
    if spec.source == "categorical":
        score = _positive_rate(train.value[known], y[known], scored.value)
    elif spec.source == "numeric" and train.missing.any():
        score = _positive_rate(train_bins[known], y[known], binner(scored))
    else:
        score = scored.value
    if not scored_known.any():
        return float("nan")
    value = roc_auc(scored_y[scored_known], score[scored_known])
    return value if math.isnan(value) else max(value, 1.0 - value)


def _too_predictive(auc: float, nmi: float, split: str, leak_auc: float, leak_nmi: float) -> list[str]:
    reasons = []
    if not math.isnan(auc) and auc >= leak_auc:
        reasons.append(f"predicts the label too well: single-field AUC {auc:.3f} on {split} >= {leak_auc:g}")
    if nmi >= leak_nmi:
        reasons.append(f"predicts the label too well: normalised MI {nmi:.3f} on train >= {leak_nmi:g}")
    return reasons


def _post_outcome(missing: np.ndarray, y: np.ndarray, present: float, absent: float) -> list[str]:
    positive, negative = y == 1, y == 0
    if not positive.any() or not negative.any():
        return []
    pos, neg = float((~missing[positive]).mean()), float((~missing[negative]).mean())
    if (pos >= present and neg <= absent) or (neg >= present and pos <= absent):
        return [f"exists only after the outcome: present for {pos:.1%} of positives and {neg:.1%} of negatives "
                f"on train"]  # fmt: skip
    return []


def cross_information(
    data: ProcessedDataset,
    a: str,
    b: str,
    label: str | None = None,
    max_rows: int = 200_000,
    top: int = CROSS_TOP,
    seed: int = 0,
) -> float:
    """Interaction information of two fields with the label, in nats, on train:
    MI((a, b); y) - MI(a; y) - MI(b; y), each term Miller-Madow corrected (so that two independent
    fields score about 0 however many value pairs they have). Large when the pair carries signal
    that neither field carries alone (an XOR): what a hashed cross adds beyond the two fields.
    Fields are binned as in the profile, with `top` bins per categorical field."""
    if a == b:
        raise ValueError(f"cross_information needs two different fields (got '{a}' twice)")
    fields = {f.name: f for f in profiled_fields(data)}
    for name in (a, b):
        if name not in fields:
            raise ValueError(f"field '{name}' is not a profiled field of '{data.spec.name}' "
                             f"(fields: {', '.join(fields)})")  # fmt: skip
    _, label_index = resolve_label(data, label)
    train = _Sample(data.split("train"), max_rows, seed)
    known, y = _labels(train, label_index)
    codes = []
    for name in (a, b):
        values = fields[name].read(train)
        codes.append(_Binner(fields[name], values, top)(values)[known])
    ca, cb = codes
    joint = ca * (int(cb.max(initial=0)) + 1) + cb
    y = y[known]
    return (mutual_information(joint, y, corrected=True) - mutual_information(ca, y, corrected=True)
            - mutual_information(cb, y, corrected=True))  # fmt: skip


# -- the knowledge layer ------------------------------------------------------------------------------
def data_fingerprint(data: ProcessedDataset) -> str:
    """The data snapshot's key: the processed cache's key (spec, files, encoder) and the split sizes."""
    key = {"dataset": data.spec.name, "cache": data.folder.name,
           "rows": {name: int(split.rows) for name, split in sorted(data.splits.items())}}  # fmt: skip
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def record_profile(store: KnowledgeStore, profile: DatasetProfile, fingerprint: str) -> int:
    """Store the profile (one row per data fingerprint and label) and return the row's id; a
    profile already stored for them is kept and its id returned."""
    with store.transaction() as tx:
        row, _ = tx.save_profile(
            profile.dataset, fingerprint, profile.label, rows=profile.rows,
            fields=[f.to_dict() for f in profile.fields],
            leaks=[{"field": f.name, "reason": f.leak} for f in profile.leaks],
            settings=dict(profile.settings),
        )  # fmt: skip
        return row.id


def stored_profile(store: KnowledgeStore, fingerprint: str, label: str,
                   dataset: str | None = None) -> tuple[int, DatasetProfile] | None:  # fmt: skip
    """The stored profile of this data fingerprint and label, with its row id, or None."""
    with store.transaction() as tx:
        for row in tx.profiles(dataset):
            if row.fingerprint == fingerprint and row.label == label:
                return row.id, DatasetProfile.from_dict(
                    {"dataset": row.dataset, "label": row.label, "rows": row.rows, "fields": row.fields,
                     "settings": row.settings})  # fmt: skip
    return None
