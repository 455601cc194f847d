"""What the service serves: one or more saved CTR runs behind one name and version.

An EnsNAS champion is an ensemble of member runs (the evolution judged the M-ensemble), so a
served model averages its runs' probabilities. The runs of a knowledge-layer candidate are found
through its `run` artifacts.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from agenticrs.serve.payload import FieldKinds, ScoreRequest, check_size, request_table
from agenticrs.serve.request_encoder import RequestEncoder
from agenticrs.train.scoring import Scorer, concat_encoded

Encoded = dict[str, np.ndarray]

BACKENDS = ("torch", "onnx", "onnx-int8")
_versions = itertools.count(1)


def load_scorer(run_dir: str | Path, backend: str = "torch", threads: int | None = None) -> Scorer:
    if backend not in BACKENDS:
        raise ValueError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}")
    return Scorer(run_dir, backend=backend, threads=threads)


@dataclass
class ServedModel:
    """A named, versioned scorer: the mean probability of its runs. `version` increases with every
    model the process loads, so a response says exactly which model scored it."""

    name: str
    runs: list[Path]
    scorers: list[Scorer]
    backend: str = "torch"
    candidate_id: int | None = None
    version: int = field(default_factory=lambda: next(_versions))

    @classmethod
    def load(cls, runs: list[str | Path], backend: str = "torch", name: str | None = None,
             candidate_id: int | None = None, threads: int | None = None) -> ServedModel:  # fmt: skip
        if not runs:
            raise ValueError("a served model needs at least one run directory")
        paths = [Path(r) for r in runs]
        scorers = [load_scorer(p, backend, threads) for p in paths]
        fields = [s.encoder.spec.model_dump(include={"fields"}) for s in scorers]
        if any(f != fields[0] for f in fields[1:]):
            raise ValueError(f"the runs of one served model must read the same fields: {', '.join(map(str, paths))}")
        label = name or (f"candidate-{candidate_id}" if candidate_id is not None else paths[0].name)
        return cls(label, paths, scorers, backend, candidate_id)

    @property
    def encoder(self):
        return self.scorers[0].encoder

    @cached_property
    def fields(self) -> FieldKinds:
        """The input fields a request must carry, by kind (read once, not per request)."""
        return FieldKinds.of(self.encoder)

    def encode(self, table: pa.Table, shared: Collection[str] = (), source: str = "<request>") -> list[Encoded]:
        """One request's input arrays, per run (runs may hold different vocabularies). `shared`:
        the request's context columns, encoded once rather than once per candidate."""
        return [s.encode(table, source, shared) for s in self.scorers]

    @cached_property
    def request_encoders(self) -> list[RequestEncoder]:
        return [RequestEncoder(s.encoder, s.model_inputs) for s in self.scorers]

    def encode_request(self, request: ScoreRequest, request_id: int = 0, max_candidates: int = 2_000) -> list[Encoded]:
        """One scoring request's inputs, per run: straight from its values where it is plain (the
        fast path, `RequestEncoder`), else through its table, which names a bad value in its error."""
        check_size(request, max_candidates)
        fast = [e.encode(request, request_id) for e in self.request_encoders]
        if all(f is not None for f in fast):
            return fast  # type: ignore[return-value]
        table = request_table(request, self.fields, max_candidates, request_id)
        return self.encode(table, frozenset(request.context))

    def score_encoded(self, requests: list[list[Encoded]]) -> np.ndarray:
        """The mean probability of the runs for several encoded requests, scored in one call per run."""
        scores = [np.asarray(s.score_encoded(concat_encoded([r[i] for r in requests])), dtype=np.float64)
                  for i, s in enumerate(self.scorers)]  # fmt: skip
        return np.mean(scores, axis=0).astype(np.float32)

    def score(self, table: pa.Table, source: str = "<request>", shared: Collection[str] = ()) -> np.ndarray:
        return self.score_encoded([self.encode(table, shared, source)])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "backend": self.backend, "candidate": self.candidate_id,
                "runs": [str(p) for p in self.runs]}  # fmt: skip


def candidate_runs(store: Any, candidate_id: int) -> list[Path]:
    """The member run directories of a knowledge-layer candidate (its `run` artifacts that exist)."""
    with store.transaction() as tx:
        from agenticrs.agents.knowledge.schema import Training

        runs = []
        for artifact in tx.artifacts(candidate_id=candidate_id, kind="run"):
            training = tx.get(Training, artifact.training_id) if artifact.training_id else None
            if training is not None and training.role != "member":
                continue
            runs.append(Path(artifact.path))
    existing = [p for p in runs if (p / "weights.pt").is_file()]
    if not existing:
        raise FileNotFoundError(
            f"candidate {candidate_id} has no member run on this machine"
            + (f" (recorded: {', '.join(map(str, runs))})" if runs else " (no run artifact is recorded for it)")
        )
    return existing
