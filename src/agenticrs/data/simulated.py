"""The simulator's offline logs as data sets: one dataset spec per task, loaded like real data.

`write_simulation(config, out_dir)` runs the simulator (`agenticrs.sim`), writes its tables, a
`meta.json` with the ground-truth (oracle) metrics of every split, and four specs:

* `ctr.yaml` — click prediction on every impression, with user, item, context, the behaviour
  history (items, subcategories, behaviour types) and the request structure;
* `cvr_delayed.yaml` — purchase given click on the clicked impressions, with the click and the
  (possibly much later) purchase timestamps, for delayed-feedback methods;
* `sequential.yaml` — next-item prediction from the click sequences (leave-one-out, S3-Rec format);
* `multi_scenario.yaml` — click and purchase labels on impressions of every scenario.

True-probability and outcome columns (`p_click`, `p_cart`, `p_purchase`, `cart`, `purchase`, ...)
stay in the files for evaluation but are never fields of a spec that feeds them to a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from agenticrs.data.adapters.s3rec import convert_s3rec
from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions
from agenticrs.runtime.files import atomic_write_text
from agenticrs.sim.config import GENERATOR_VERSION, PRESETS, SimConfig, sim_preset
from agenticrs.sim.logs import HIDDEN_COLUMNS, SPLITS, GenerationResult, generate_logs

TASKS = ("ctr", "cvr_delayed", "sequential", "multi_scenario")
MARKER = "_SIMULATION_OK.json"
REQUEST_FIELDS = ["user_id", "age", "gender", "city_tier", "scenario", "hour", "query_cate_l2",
                  "hist_item_id", "hist_cate_l2", "hist_type"]  # fmt: skip


def _fields(history_len: int, labels: list[str], config: SimConfig | None = None) -> list[FieldSpec]:
    cat = lambda name: FieldSpec(name=name, kind="categorical")  # noqa: E731
    seq = dict(kind="sequence", max_len=history_len)
    planted = config.planted if config is not None else None
    # the planted cross's two attributes and the leak: ordinary fields, for feature search to judge
    extra = [] if planted is None else [cat(n) for n in (*planted.cross_fields, planted.leak_column) if n]
    return [
        *(FieldSpec(name=label, kind="label") for label in labels),
        *(cat(n) for n in ("user_id", "age", "gender", "city_tier", "scenario", "hour", "query_cate_l2",
                           "position", "item_id", "cate_l1", "cate_l2", "brand")),
        FieldSpec(name="price", kind="numeric", transform="log1p"),
        FieldSpec(name="item_age_days", kind="numeric", transform="log1p"),
        FieldSpec(name="hist_item_id", share_vocab_with="item_id", **seq),
        FieldSpec(name="hist_cate_l2", share_vocab_with="cate_l2", parallel_to="hist_item_id", **seq),
        FieldSpec(name="hist_type", parallel_to="hist_item_id", **seq),
        *extra,
    ]  # fmt: skip


def _request_fields(config: SimConfig) -> list[str]:
    """The user / context fields shared by a request's rows (with the planted user attribute)."""
    return REQUEST_FIELDS + ([config.planted.cross_fields[0]] if config.planted is not None else [])


def task_spec(task: str, config: SimConfig, out_dir: Path, name: str) -> DatasetSpec:
    """The spec of one task over the files in `out_dir` (absolute paths)."""
    files = lambda prefix: {s: [str((out_dir / f"{prefix}_{s}.parquet").resolve())] for s in SPLITS}  # noqa: E731
    common = dict(reader=ReaderOptions(format="parquet"), group_key="user_id", request_key="request_id",
                  request_fields=_request_fields(config))  # fmt: skip
    about = f"simulator v{GENERATOR_VERSION}, config {config.config_hash()}, seed {config.seed}"
    if task == "ctr":
        return DatasetSpec(name=name, files=files("impressions"), fields=_fields(config.history_len, ["click"], config),
                           description=f"simulated impressions, click label ({about})", **common)  # fmt: skip
    if task == "multi_scenario":
        return DatasetSpec(
            name=name, files=files("impressions"), fields=_fields(config.history_len, ["click", "purchase"], config),
            description=f"simulated impressions of {len(config.scenarios)} scenarios (field 'scenario'), "
            f"click and click-and-purchase labels ({about})", **common,
        )  # fmt: skip
    if task == "cvr_delayed":
        fields = _fields(config.history_len, ["purchase", "cart"], config) + [
            FieldSpec(name="ts", kind="timestamp"),
            FieldSpec(name="purchase_ts", kind="timestamp"),
        ]
        return DatasetSpec(
            name=name, files=files("clicks"), fields=fields,
            description="simulated clicks; label 'purchase' = converted within the attribution window, which may "
            f"lie after the click's split (see 'purchase_ts'); pre-promotion purchases wait for the promotion ({about})",
            **common,
        )  # fmt: skip
    if task == "sequential":
        spec = convert_s3rec(out_dir / "sequences.txt", out_dir / "sequential", history_len=config.history_len,
                             negatives_per_positive=1, seed=config.seed, name=name)  # fmt: skip
        return spec.model_copy(update={"description": f"next clicked item, leave-one-out ({about})"})
    raise DataError(f"unknown simulator task '{task}'", expected=f"one of {', '.join(TASKS)}")


def _oracle(files: list[Path], label: str, prob: str, rows_filter: str | None = None) -> dict[str, Any]:
    from agenticrs.train.metrics import auc, logloss  # the project's metric functions

    columns = [label, prob] + ([rows_filter] if rows_filter else [])
    table = pq.read_table(str(files[0]), columns=columns)
    y = table[label].to_numpy().astype(np.int8)
    p = table[prob].to_numpy().astype(np.float64)
    if rows_filter:
        keep = table[rows_filter].to_numpy().astype(bool)
        y, p = y[keep], p[keep]
    both = 0 < y.sum() < len(y)
    return {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "mean_true_prob": float(p.mean()) if len(y) else float("nan"),
        "oracle_auc": float(auc(y, p)) if both else float("nan"),
        "oracle_logloss": float(logloss(y, p)) if len(y) else float("nan"),
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _finished(out_dir: Path, key: str) -> bool:
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("key") == key and all((out_dir / f"{t}.yaml").exists() for t in TASKS)


def write_simulation(config: SimConfig, out_dir: str | Path, name: str = "sim", progress=None,
                     force: bool = False) -> dict[str, DatasetSpec]:  # fmt: skip
    """Generate (unless `out_dir` already holds this config's finished output) and return the task specs.

    The marker is written last, so an interrupted generation is redone rather than half-used."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = config.config_hash()
    names = {task: name if task == "ctr" else f"{name}-{task}" for task in TASKS}
    if not force and _finished(out_dir, key):
        return {task: task_spec(task, config, out_dir, names[task]) for task in TASKS}
    (out_dir / MARKER).unlink(missing_ok=True)
    result: GenerationResult = generate_logs(config, out_dir, progress)
    specs = {task: task_spec(task, config, out_dir, names[task]) for task in TASKS}
    for task, spec in specs.items():  # portable copies: paths relative to the folder
        relative = {s: [os.path.relpath(p, out_dir) for p in paths] for s, paths in spec.files.items()}
        atomic_write_text(out_dir / f"{task}.yaml", spec.model_copy(update={"files": relative}).to_yaml())
    meta = {
        "generator_version": GENERATOR_VERSION,
        "config_hash": key,
        "config": config.model_dump(mode="json"),
        "requests": result.requests,
        "generation_seconds": round(result.seconds, 3),
        "splits": {
            **{f"impressions_{s}": _oracle([out_dir / f"impressions_{s}.parquet"], "click", "p_click") for s in SPLITS},
            **{f"clicks_{s}": _oracle([out_dir / f"clicks_{s}.parquet"], "purchase", "p_purchase") for s in SPLITS},
        },
        "hidden_columns": list(HIDDEN_COLUMNS),
    }
    _write_json(out_dir / "meta.json", meta)
    _write_json(out_dir / MARKER, {"key": key, "config": config.model_dump(mode="json")})
    return specs


def simulated_dataset(preset: str, task: str, cache_root: Path, seed: int = 0) -> DatasetSpec:
    """`sim-<preset>[-<task>]`: generated once into the cache, then reused."""
    if preset not in PRESETS:
        raise DataError(f"unknown simulator preset '{preset}'", expected=f"one of {', '.join(PRESETS)}")
    config = sim_preset(preset, seed=seed)
    return write_simulation(config, simulation_dir(preset, cache_root, seed), name=f"sim-{preset}")[task]


def simulation_dir(preset: str, cache_root: Path, seed: int = 0) -> Path:
    """Where `sim-<preset>` (seed `seed`) is generated in the cache."""
    return cache_root / "generated" / f"sim-{preset}-seed{seed}"
