"""GateSID against DIN / DeepFM on the simulator's CTR task, overall and on cold items.

    python bench/gatesid_benchmark.py --dataset sim-small --seeds 1 --json bench/results/gatesid_sim_small.json
    python bench/gatesid_benchmark.py --sim-preset small --sim-set new_items_per_day=150 \
        --sim-set launch_ramp_days=1 --sim-set test_days=2 --json bench/results/gatesid_sim_coldheavy.json

Variants (same data, same training settings and step budget, early stopping on validation AUC):
- `din`, `deepfm`: every field, item IDs included (the ID-only baselines of the issue: the item is
  known by its ID; its category and brand fields are there too, as in any CTR data set);
- `din-noid`, `deepfm-noid`: the same models without the item-ID fields (item_id, hist_item_id):
  the item is known only by its content fields (cate_l1, cate_l2, brand) - the information the
  semantic IDs are built from (the "semantic side" of DIN / DeepFM; the CTR data carries no SID
  columns, so SID fields proper exist only inside GateSID);
- `din-sid`, `deepfm-sid`: the item known by its semantic IDs only: the `semantic_id` feature
  action with `content` (GateSID's recipe: seeded random vectors of cate_l1, cate_l2 and brand,
  residual k-means, GateSID's 3 levels of 32 codes unless `--sid-levels` / `--sid-codebook` say
  otherwise, fitted on the training items) gives the candidate's codes
  (from its own content, so an unseen item has its real SID) and the history's
  (`hist_item_id__sid*`, DIN's target attention compares SIDs with SIDs); the item ids and the
  content fields themselves are left out;
- `gatesid`: the learned maturity gate (statistics: impressions and item_age_days);
- `gatesid-id` / `gatesid-sid`: the same network with the gate fixed to 1 / 0 (item-ID attention
  only / semantic-ID attention only).

Cold items are those launched in the test window (`items.parquet` launch_day >= the test day);
"unseen" items are those launched after the last training day (the valid day included): their
ids are out of the training vocabulary. AUC is reported overall and on the test impressions of
cold, unseen and warm items, with each GateSID run's mean gate on them; a -sid variant's record
also says how many training items its codes cover and how many distinct tuples (and level-0 codes)
they form.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from rich.console import Console
from rich.table import Table

from agenticrs.models.gatesid import GateSIDConfig
from agenticrs.train.config import RunConfig
from agenticrs.train.metrics import auc, logloss
from agenticrs.train.trainer import predict_probs
from agenticrs.train.workflow import load_data, train_run

console = Console()
ID_FIELDS = ("item_id", "hist_item_id")
CONTENT_FIELDS = ("cate_l1", "cate_l2", "brand", "hist_cate_l2")
_GATESID = GateSIDConfig()  # the SID-only baselines get GateSID's SID sizes unless told otherwise


def sid_action(levels: int = _GATESID.sid_levels, codebook: int = _GATESID.sid_codebook_size) -> dict[str, Any]:
    """The `semantic_id` feature action of the SID-only variants (GateSID's content recipe)."""
    return {"kind": "semantic_id", "field": "item_id", "levels": levels, "codebook": codebook,
            "content_dim": _GATESID.content_dim, "content": ["cate_l1", "cate_l2", "brand"], "sequences": True}  # fmt: skip


def variants(schema, sid: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """name -> (model, model_params, feature actions); `sid` is the SID-only variants' action."""
    fields = [*schema.categorical_names, *dict.fromkeys(n.split("__")[0] for n in schema.numeric),
              *(s.name for s in schema.sequences)]  # fmt: skip
    no_id = [f for f in fields if f not in ID_FIELDS]
    sid_only = [f for f in no_id if f not in CONTENT_FIELDS] + [f"{base}__sid{level}" for base in ID_FIELDS
                                                                for level in range(sid["levels"])]  # fmt: skip
    gatesid = {"age_field": "item_age_days"}
    return {
        "din": ("din", {}, []),
        "deepfm": ("deepfm", {}, []),
        "din-noid": ("din", {"input_fields": no_id}, []),
        "deepfm-noid": ("deepfm", {"input_fields": no_id}, []),
        "din-sid": ("din", {"input_fields": sid_only}, [sid]),
        "deepfm-sid": ("deepfm", {"input_fields": sid_only}, [sid]),
        "gatesid": ("gatesid", gatesid, []),
        "gatesid-id": ("gatesid", {**gatesid, "gate": "id"}, []),
        "gatesid-sid": ("gatesid", {**gatesid, "gate": "sid"}, []),
    }


def sid_statistics(codes: list[int], levels: int) -> dict[str, int]:
    """How finely a fitted `semantic_id` action's code table (`state["codes"]`, one row of `levels`
    codes per item id; the OOV code where the action saw no item) tells the training items apart."""
    from agenticrs.features.actions import OOV_INDEX

    table = np.asarray(codes, dtype=np.int64).reshape(-1, levels)
    table = table[(table != OOV_INDEX).all(axis=1)]
    return {"sid_items": len(table), "sid_distinct_tuples": len(np.unique(table, axis=0)),
            "sid_distinct_level0": len(np.unique(table[:, 0]))}  # fmt: skip


def simulate(preset: str, overrides: list[str]) -> str:
    """Generate (once, cached) a simulator world with overrides; the path of its CTR spec."""
    from agenticrs.data.cache import default_cache_root
    from agenticrs.data.simulated import write_simulation
    from agenticrs.sim.config import sim_preset

    values = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}
    config = sim_preset(preset, **values)
    out_dir = default_cache_root() / "generated" / f"sim-{preset}-{config.config_hash()}"
    write_simulation(config, out_dir, name=f"sim-{preset}-custom")
    return str(out_dir / "ctr.yaml")


def item_buckets(data) -> dict[str, np.ndarray]:
    """Masks over the test rows: cold (launched on a test day), unseen (after the last training
    day) and warm (the rest)."""
    folder = Path(data.spec.files["test"][0]).parent
    test = pq.read_table(data.spec.files["test"][0], columns=["item_id", "day"])
    train_days = pq.read_table(data.spec.files["train"][0], columns=["day"]).column("day").to_numpy()
    items = pq.read_table(str(folder / "items.parquet"), columns=["item_id", "launch_day"])
    launch = np.zeros(int(items.column("item_id").to_numpy().max()) + 1, dtype=np.int64)
    launch[items.column("item_id").to_numpy()] = items.column("launch_day").to_numpy()
    row_launch = launch[test.column("item_id").to_numpy()]
    cold = row_launch >= int(test.column("day").to_numpy().min())
    unseen = row_launch > int(train_days.max())
    return {"cold": cold, "unseen": unseen, "warm": ~unseen}


def gates(model, split) -> np.ndarray | None:
    from agenticrs.features.batching import iterate_batches

    if getattr(model, "name", "") != "gatesid":
        return None
    model.eval()
    out = []
    with torch.no_grad():
        for batch in iterate_batches(split, 16384, label_index=None):
            out.append(model(batch)["gate"].numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sim-small")
    parser.add_argument("--sim-preset", default=None, help="generate a simulator world from this preset instead")
    parser.add_argument("--sim-set", action="append", default=[], help="SimConfig override key=value (with --sim-preset)")
    parser.add_argument("--variants", default="din,deepfm,din-noid,deepfm-noid,gatesid,gatesid-id,gatesid-sid")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sid-levels", type=int, default=_GATESID.sid_levels, help="levels of the -sid variants' IDs")
    parser.add_argument("--sid-codebook", type=int, default=_GATESID.sid_codebook_size,
                        help="codes per level of the -sid variants' IDs (GateSID's own stay at its config)")
    parser.add_argument("--runs-dir", type=Path, default=Path("bench/out/gatesid-runs"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/gatesid_sim_small.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sim_preset:
        args.dataset = simulate(args.sim_preset, args.sim_set)
    data = load_data(args.dataset)
    buckets = item_buckets(data)
    labels = np.asarray(data.split("test")["labels"][:, 0], dtype=np.float64)
    table_of = variants(data.schema, sid_action(args.sid_levels, args.sid_codebook))
    records: list[dict[str, Any]] = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        model_name, params, features = table_of[name]
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            config = RunConfig.model_validate({
                "dataset": args.dataset, "model": model_name, "model_params": params, "name": f"{name}-seed{seed}",
                "features": features,
                "train": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
                          "patience": 2, "monitor": "auc", "seed": seed, "num_threads": args.threads},
            })  # fmt: skip
            started = time.perf_counter()
            trained = train_run(config, args.runs_dir, data=data)
            wall = time.perf_counter() - started
            test = trained.data.split("test")  # through the run's feature actions, if any
            probs = predict_probs(trained.model, test)
            gate = gates(trained.model, test)
            record: dict[str, Any] = {
                "variant": name, "model": model_name, "params": params, "features": features, "dataset": args.dataset,
                "seed": seed,
                "auc": float(auc(labels, probs)), "logloss": float(logloss(labels, probs)),
                "stopped_by": trained.result.stopped_by, "steps": trained.result.steps,
                "best_step": trained.result.best_step, "valid_auc": trained.result.valid.get("auc"),
                "wall_s": wall,
            }  # fmt: skip
            fitted = trained.run.features
            for action, state in zip(fitted.actions, fitted.state) if fitted else ():
                if action.kind == "semantic_id":
                    record.update(sid_statistics(state["codes"], action.levels))
            for bucket, mask in buckets.items():
                record[f"{bucket}_rows"] = int(mask.sum())
                both = 0 < labels[mask].sum() < mask.sum()
                record[f"{bucket}_auc"] = float(auc(labels[mask], probs[mask])) if both else None
                if gate is not None:
                    record[f"{bucket}_gate"] = float(gate[mask].mean())
            records.append(record)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))
            console.print(record)
    table = Table(title=f"GateSID vs DIN / DeepFM, {args.dataset} CTR, test split")
    for col in ["variant", "seed", "auc", "logloss", "cold auc", "unseen auc", "warm auc", "gate cold/warm", "SID tuples",
                "steps", "stopped_by"]:  # fmt: skip
        table.add_column(col)
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    for r in records:
        gate = f"{r['cold_gate']:.2f}/{r['warm_gate']:.2f}" if "cold_gate" in r else ""
        sid = next((f for f in r["features"] if f["kind"] == "semantic_id"), None)
        label = f"{r['variant']} ({sid['levels']}x{sid['codebook']})" if sid else r["variant"]
        table.add_row(label, str(r["seed"]), fmt(r["auc"]), fmt(r["logloss"]), fmt(r["cold_auc"]),
                      fmt(r["unseen_auc"]), fmt(r["warm_auc"]), gate,
                      f"{r['sid_distinct_tuples']}/{r['sid_items']}" if "sid_items" in r else "",
                      str(r["steps"]), r["stopped_by"])  # fmt: skip
    console.print(table)
    console.print(f"test rows: {len(labels)}; cold {int(buckets['cold'].sum())}, unseen {int(buckets['unseen'].sum())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
