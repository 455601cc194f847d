"""Pre-promotion conversion benchmark (CM-DCM) on the simulator's `promo` preset.

Train on the earlier promotions' pre-promotion clicks (plus the current promotion's first
pre-promotion day, without delayed labels) and evaluate on the held-out last promotion's later
pre-promotion clicks (`agenticrs.data.prepromo`): delayed-conversion AUC and calibration (ECE over
10 equal-mass bins, predicted / observed ratio), plus the AUC of the composed p_cvr on "bought by
the promotion day" (y_dir or y_del), the cart AUC of p_atc and the delayed AUC inside carted
clicks. Rows: each model of `--models` (CM-DCM; MMoE on the same inputs and labels; ESMM with the
cart as its click and the delayed purchase as its conversion; `es_dfm`: ES-DFM's streaming sampler,
weight model and importance-weighted loss applied at the training cut, where the current
promotion's delayed purchases are still unobserved, `agenticrs.train.streaming.at_cut`) and CM-DCM's ablations
(`--ablations`: no-gating, no-counterfactual, chain-only, no-history). One JSON record per row x
seed with its settings, `stopped_by` and best step.

Settings come from `--config` (default `bench/configs/cvr_prepromo.yaml`): one optimiser-step
budget, evaluation cadence and patience (in evaluations every `eval_every_steps` steps) for every
row, and each row's learning rate, batch size and model overrides, chosen on the valid split by
`--search` (the config's grid, seed 0; the search results go to `--json`). `--finetune` adds the
spec's two-stage row: CM-DCM trained on the historical promotions only, then fine-tuned on the
current promotion's observed days (y_dir, y_atc) with the delayed towers frozen.

    python bench/cvr_prepromo.py --search --json bench/results/cvr_prepromo_search.json
    python bench/cvr_prepromo.py --models cmdcm,mmoe,esmm --seeds 3 --finetune --online --json bench/results/cvr_prepromo.json
    python bench/cvr_prepromo.py --models cmdcm,esmm --ablations none --seeds 3 --online --online-control esmm \
        --json bench/results/cvr_prepromo_online_esmm.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from agenticrs.data.prepromo import write_prepromo_dataset
from agenticrs.data.simulated import write_simulation
from agenticrs.features.batching import iterate_batches
from agenticrs.features.pipeline import process_dataset
from agenticrs.sim import sim_preset
from agenticrs.train.config import RunConfig, TrainConfig
from agenticrs.train.metrics import auc, logloss, metric_spec
from agenticrs.train.trainer import Trainer
from agenticrs.train.workflow import train_run

ABLATIONS = {
    "no-gating": {"gating": False},
    "no-counterfactual": {"counterfactual": False},
    # neither gating nor the counterfactual term: MMoE's gates on every field with the chain
    # p_atc x p_del|atc in place of a direct y_del head (the chain alone against MMoE)
    "chain-only": {"gating": False, "counterfactual": False},
    "no-history": {},  # the data set changes, not the model
}
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "cmdcm": {"embedding_dim": 8, "num_experts": 4, "expert_units": [64, 32], "tower_units": [32], "dropout": 0.1},
    "mmoe": {"embedding_dim": 8, "num_experts": 4, "expert_units": [64, 32], "tower_units": [32], "dropout": 0.1,
             "tasks": ["y_dir", "y_atc", "y_del"]},
    # ESMM (Ma et al., SIGIR 2018) on the pre-promotion labels: its "click" is the cart (y_atc) and its
    # "conversion" the delayed purchase (y_del), so its CTCVR head p_atc x p_del|atc is trained on
    # "carted and bought on the promotion day" (it misses the few delayed purchases without a cart)
    # and read as p_del; it has no direct-conversion head (p_cvr = p_del). CM-DCM's chain without
    # the direct tower, the experts, the gating and the counterfactual term.
    "esmm": {"embedding_dim": 8, "ctr_units": [64, 32], "cvr_units": [64, 32], "dropout": 0.1,
             "click_label": "y_atc", "conversion_label": "y_del"},
}  # fmt: skip
# ES-DFM (Yang et al., AAAI 2021) on the delayed purchase: the streaming code's sampler, weight
# model and importance-weighted loss, applied at the training cut (agenticrs.train.streaming.at_cut;
# docs/conversion.md); its backbone is the streaming one (ESDFM_BACKBONE), one head p_del, no p_dir
ESDFM_SETTINGS = {"elapsed_cut_s": 900.0, "weight_model_epochs": 5}  # the spec's c and weight-model epochs
SMOKE_WORLD = {"n_users": 700, "n_items": 600, "new_items_per_day": 5, "requests_per_user_day": 1.0}
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "cvr_prepromo.yaml"
FROZEN = ("towers.del.", "towers.imp.")  # the delayed towers, frozen in the fine-tune stage


def load_settings(path: str | Path | None) -> dict[str, Any]:
    """The benchmark's settings: `budget` (shared), `grid` (the search) and `rows` (each row's choice)."""
    settings = yaml.safe_load(Path(path).read_text()) if path else {}
    settings = settings or {}
    return {"budget": settings.get("budget") or {}, "grid": settings.get("grid") or {},
            "rows": settings.get("rows") or {}, "finetune": settings.get("finetune") or {}}  # fmt: skip


def row_settings(settings: dict[str, Any], row: str) -> dict[str, Any]:
    """Budget, then the row's chosen values (an ablation falls back to its model's row)."""
    base = row.split("-")[0]
    chosen = settings["rows"].get(row, settings["rows"].get(base, {})) or {}
    return {**settings["budget"], **chosen}


def train_config(values: dict[str, Any], seed: int, threads: int, smoke: bool) -> TrainConfig:
    keys = ("learning_rate", "batch_size", "embedding_l2", "max_steps", "eval_every_steps", "patience", "monitor",
            "epochs", "lr_schedule", "min_lr", "warmup_steps")  # fmt: skip
    fields = {k: values[k] for k in keys if k in values}
    fields.setdefault("epochs", 1000)  # the step budget decides
    if smoke:
        fields.update(epochs=2, max_steps=4, eval_every_steps=2, batch_size=min(fields.get("batch_size", 512), 512))
        fields.pop("warmup_steps", None)
    return TrainConfig(**fields, metrics=["auc", "logloss", "calibration"], seed=seed, num_threads=threads,
                       log_every=1000)  # fmt: skip


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over `bins` equal-mass bins of the prediction."""
    order = np.argsort(probs, kind="stable")
    parts = np.array_split(order, bins)
    return float(sum(len(p) * abs(probs[p].mean() - labels[p].mean()) for p in parts if len(p)) / len(probs))


@torch.no_grad()
def predict_components(model: torch.nn.Module, split, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """p_dir, p_del (delayed conversion over the click space) and the composed score of a model on a split.

    A model that returns `p_del` / `score` (CM-DCM) is read as it is; any other multi-task model
    gives its `y_del` (and `y_dir`) head, composed as p_dir + (1 - p_dir) p_del."""
    model.eval()
    labels = list(getattr(model, "output_labels", None) or [])
    if "y_del" not in labels:
        raise ValueError(f"model '{getattr(model, 'name', '?')}' has no y_del head (its labels: {labels}); "
                         "give it tasks/labels including y_del")  # fmt: skip
    parts: dict[str, list[np.ndarray]] = {"p_dir": [], "p_del": [], "score": [], "p_atc": []}
    for batch in iterate_batches(split, batch_size, label_index=None):
        out = model(batch)
        probs = torch.sigmoid(out["logit"].float())
        p_del = out.get("p_del", probs[:, labels.index("y_del")])
        p_dir = out.get("p_dir", probs[:, labels.index("y_dir")] if "y_dir" in labels else torch.zeros_like(p_del))
        p_atc = out.get("p_atc", probs[:, labels.index("y_atc")] if "y_atc" in labels else torch.full_like(p_del, float("nan")))
        score = out.get("score", p_dir + (1 - p_dir) * p_del)
        for key, value in (("p_dir", p_dir), ("p_del", p_del), ("score", score), ("p_atc", p_atc)):
            parts[key].append(value.float().cpu().numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in parts.items()}


def score_record(schema_labels: list[str], split, pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Delayed-conversion AUC / log loss / ECE / ratio, p_cvr AUC, and where the ranking comes
    from: the cart AUC of p_atc and the delayed AUC inside carted and uncarted clicks."""
    y = np.asarray(split["labels"], dtype=np.float64)
    y_dir, y_atc, y_del = (y[:, schema_labels.index(n)] for n in ("y_dir", "y_atc", "y_del"))
    bought = np.maximum(y_dir, y_del)
    p = pred["p_del"]
    carted = y_atc == 1
    return {
        "del_auc": auc(y_del, p), "del_logloss": logloss(y_del, p), "del_ece": ece(y_del, p),
        "del_ratio": float(p.mean() / max(y_del.mean(), 1e-12)),
        "cvr_auc": auc(bought, pred["score"]), "cvr_ratio": float(pred["score"].mean() / max(bought.mean(), 1e-12)),
        "atc_auc": auc(y_atc, pred["p_atc"]) if not np.isnan(pred["p_atc"]).any() else float("nan"),
        "del_auc_carted": auc(y_del[carted], p[carted]), "del_auc_uncarted": auc(y_del[~carted], p[~carted]),
        "test_rows": int(len(y_del)), "test_del_rate": float(y_del.mean()),
        "test_del_uncarted_share": float(y_del[~carted].sum() / max(y_del.sum(), 1.0)),
    }  # fmt: skip


def variants(models: list[str], ablations: list[str]) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(row name, model, model params, history) of every row of the table."""
    rows = [(m.replace("_", "-"), m, dict(MODEL_PARAMS.get(m, {})), True) for m in models]
    if "cmdcm" in models:
        for ablation in ablations:
            params = {**MODEL_PARAMS["cmdcm"], **ABLATIONS[ablation]}
            rows.append((f"cmdcm-{ablation}", "cmdcm", params, ablation != "no-history"))
    return rows


def freeze_delayed(model: torch.nn.Module) -> list[str]:
    """Freeze CM-DCM's delayed towers (p_del|atc and the imputation tower); the names frozen."""
    frozen = []
    for name, param in model.named_parameters():
        if name.startswith(FROZEN):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="promo", help="simulator preset with several promotions")
    parser.add_argument("--sim-seed", type=int, default=0)
    parser.add_argument("--models", default="cmdcm,mmoe,esmm", help="registered multi-task models with a y_del head")
    parser.add_argument("--ablations", default="no-gating,no-counterfactual,chain-only,no-history",
                        help=f"CM-DCM ablations among {','.join(ABLATIONS)} ('none': no ablation rows)")
    parser.add_argument("--rows", default=None, help="run only these rows of the table (comma-separated names)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="the budget, grid and each row's chosen settings (YAML; 'none': the engine's defaults)")
    parser.add_argument("--search", action="store_true",
                        help="try the config's grid on every row (seed 0), pick each row's best valid monitor value")
    parser.add_argument("--finetune", action="store_true",
                        help="add the two-stage row: history only, then the current days with the delayed towers frozen")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--observed-days", type=int, default=1, help="current pre-promotion days seen in training")
    parser.add_argument("--work", default=None, help="folder for the simulation, data and runs (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the records here")
    parser.add_argument("--smoke", action="store_true", help="a shrunken world and a few steps (the docs' test)")
    parser.add_argument("--online", action="store_true",
                        help="A/B-test pCTR x pCVR x price with CM-DCM (B) against --online-control (A) in the "
                        "simulator over the last promotion's pre-promotion days and promotion day (one test per seed, "
                        "with that seed's runs)")
    parser.add_argument("--online-control", default=None,
                        help="the control arm (A) of --online: a model of --models or one to add to them "
                        "(e.g. esmm, mmoe; default: the first model other than cmdcm)")
    parser.add_argument("--ctr-steps", type=int, default=400, help="optimiser steps of the pCTR run (--online)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = load_settings(None if args.config == "none" else args.config)
    models = [m for m in args.models.split(",") if m]
    if args.online_control and args.online_control == "cmdcm":
        parser.error("--online-control is the baseline CM-DCM is tested against: name another model")
    if args.online and args.online_control and args.online_control not in models:
        models.append(args.online_control)  # the control arm needs its own runs
    ablations = [] if args.ablations == "none" else [a for a in args.ablations.split(",") if a]
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        parser.error(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="cvr-prepromo-"))
    config = sim_preset(args.preset, seed=args.sim_seed, **(SMOKE_WORLD if args.smoke else {}))
    if len(config.promotions) < 2:
        parser.error(f"preset '{args.preset}' has {len(config.promotions)} promotion(s); CM-DCM learns from earlier "
                     "ones (use --preset promo)")  # fmt: skip
    started = time.perf_counter()
    sim_dir = work / f"sim-{args.preset}-{args.sim_seed}{'-smoke' if args.smoke else ''}"
    write_simulation(config, sim_dir, name=f"sim-{args.preset}")
    print(f"simulated {args.preset} (promotions on days {list(config.promotions)}) in {time.perf_counter() - started:.0f}s")
    # "history": earlier promotions + the current observed days; "current": the current days only;
    # "past": earlier promotions only (the fine-tune row's first stage)
    kinds = {"history": {"history": True}, "current": {"history": False},
             "past": {"history": True, "include_current": False}}  # fmt: skip
    datasets, specs = {}, {}
    for kind, flags in kinds.items():
        if kind == "past" and not args.finetune:
            continue
        spec = write_prepromo_dataset(sim_dir, config, work / f"prepromo-{kind}", observed_days=args.observed_days,
                                      **flags)  # fmt: skip
        datasets[kind] = process_dataset(spec, work / "cache")
        specs[kind] = work / f"prepromo-{kind}" / "prepromo.yaml"
    if args.finetune:  # the fine-tune data in the first stage's vocabulary
        spec = write_prepromo_dataset(sim_dir, config, work / "prepromo-current", observed_days=args.observed_days,
                                      history=False)  # fmt: skip
        datasets["current-in-past"] = process_dataset(spec, work / "cache-finetune", encoder=datasets["past"].encoder)
    for data in datasets.values():
        for split in data.splits.values():
            split.load_in_memory()
    rows = variants(models, ablations)
    if args.rows:
        rows = [r for r in rows if r[0] in args.rows.split(",")]
    context = {"preset": args.preset, "sim_seed": args.sim_seed, "smoke": args.smoke,
               "promotions": list(config.promotions), "observed_days": args.observed_days}  # fmt: skip
    esdfm_inputs = (es_dfm_inputs(datasets["history"], specs["history"].parent, config, args.observed_days)
                    if any(r[1] == "es_dfm" for r in rows) else None)  # fmt: skip

    def fit(row: str, model: str, params: dict[str, Any], history: bool, seed: int,
            values: dict[str, Any]) -> tuple[dict[str, Any], Any]:  # fmt: skip
        kind = "history" if history else "current"
        data = datasets[kind]
        params = {**params, **(values.get("model_params") or {})}
        train = train_config(values, seed, args.threads, args.smoke)
        if model == "es_dfm":
            return fit_es_dfm(row, params, seed, values, train, data, esdfm_inputs, context, work)
        run = RunConfig(dataset=str(specs[kind]), model=model, model_params=params, train=train, name=f"{row}-seed{seed}")
        t0 = time.perf_counter()
        trained = train_run(run, runs_dir=work / "runs", data=data)
        record = {"row": row, "model": model, "seed": seed, "history": history, "model_params": params,
                  "train": {k: getattr(train, k) for k in ("max_steps", "eval_every_steps", "patience", "monitor",
                                                           "batch_size", "learning_rate", "embedding_l2", "lr_schedule")},
                  **context, "train_rows": data.split("train").rows, **run_summary(trained.result),
                  "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        return record, trained

    if args.search:
        return search(args, settings, rows, fit)
    records: list[dict[str, Any]] = []
    runs: dict[tuple[str, int], Path] = {}
    for seed in range(args.seeds):
        for row, model, params, history in rows:
            record, trained = fit(row, model, params, history, seed, row_settings(settings, row))
            test = datasets["history" if history else "current"].split("test")
            labels = list(datasets["history"].schema.labels)
            pred = (trained.predict(test) if model == "es_dfm" else predict_components(trained.model, test))
            record.update(score_record(labels, test, pred))
            records.append(record)
            runs[(row, seed)] = trained.run.folder
            report_line(record)
        if args.finetune and "cmdcm" in models:
            record = finetune(args, settings, datasets, specs, context, work, seed)
            records.append(record)
            report_line(record)
    print_table(records)
    output: Any = records
    if args.online:
        output = {"offline": records, "online": online(args, config, sim_dir, work, models, runs)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(output, indent=2) + "\n")
    return 0


def es_dfm_inputs(data, folder: Path, config, observed_days: int) -> dict[str, Any]:
    """What ES-DFM's sampler needs besides the features, for the history data set's train, valid
    and test rows stacked in that order: model inputs, click and delayed-conversion times (the
    purchase time of a y_del click, its eventual one even for the current promotion, whose y_del
    is missing: the sampler keeps only what has happened by the cut), the eventual y_del, and the
    cut (the first test day: the end of the current promotion's observed days)."""
    import pyarrow.parquet as pq

    from agenticrs.features.batching import model_input_keys

    splits = [data.split(name) for name in ("train", "valid", "test")]
    keys = model_input_keys(splits[0])
    arrays = {k: np.concatenate([np.asarray(split[k]) for split in splits]) for k in keys}
    tables = [pq.read_table(str(folder / f"prepromo_{name}.parquet"), columns=["ts", "purchase_ts", "day", "y_del"])
              for name in ("train", "valid", "test")]  # fmt: skip
    click = np.concatenate([t["ts"].to_numpy().astype(np.float64) for t in tables])
    purchase = np.concatenate([t["purchase_ts"].to_numpy().astype(np.float64) for t in tables])
    day = np.concatenate([t["day"].to_numpy() for t in tables])
    known = np.concatenate([t["y_del"].to_numpy(zero_copy_only=False).astype(np.float64) for t in tables])
    # y_del: bought on the click's promotion day (agenticrs.sim.promo)
    promo_day = config.next_promo(day)
    delayed = (purchase >= 0) & (np.floor(purchase / 86_400.0) == promo_day)
    labelled = ~np.isnan(known)
    if not np.array_equal(delayed[labelled], known[labelled] > 0.5) or len(click) != len(arrays[keys[0]]):
        raise RuntimeError("the pre-promotion files and the processed splits disagree (row order or y_del)")
    sizes = np.cumsum([0] + [split.rows for split in splits])
    promo = config.promotions[-1]
    return {"arrays": arrays, "schema": data.schema, "click_ts": click,
            "conversion_ts": np.where(delayed, purchase, np.nan), "y_del": delayed.astype(np.float64),
            "labelled": labelled, "offsets": sizes,
            "cut": float((promo - config.pre_promo_days + observed_days) * 86_400.0)}  # fmt: skip


class _EsDfmTrained:
    """What the benchmark reads of a trained row: the engine result, the model, p_del on a split."""

    def __init__(self, fit, inputs: dict[str, Any], folder: Path) -> None:
        self.model, self.result, self.inputs = fit.model, fit.result, inputs
        self.run = type("RunFolder", (), {"folder": folder})()

    def predict(self, split) -> dict[str, np.ndarray]:
        from agenticrs.features.batching import model_input_keys
        from agenticrs.train.streaming.task import RowsView, predict

        arrays = {k: np.asarray(split[k]) for k in model_input_keys(split)}
        p = predict(self.model, RowsView(arrays, np.arange(split.rows)), torch.sigmoid, 8192, torch.device("cpu"))
        return {"p_del": p, "p_dir": np.zeros_like(p), "score": p, "p_atc": np.full_like(p, np.nan)}


def fit_es_dfm(row: str, params: dict[str, Any], seed: int, values: dict[str, Any], train: TrainConfig, data,
               inputs: dict[str, Any], context: dict[str, Any], work: Path) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """ES-DFM's row: the weight model on the clicks whose y_del is known (the historical
    promotions), its samples of every training click as the stream holds them at the cut, the
    importance-weighted loss under the row's budget, monitored on the valid clicks' y_del."""
    from agenticrs.train.streaming.at_cut import es_dfm_at_cut

    lo, mid, hi = inputs["offsets"][:3]
    train_rows, valid_rows = np.arange(lo, mid), np.arange(mid, hi)
    valid_rows = valid_rows[inputs["labelled"][valid_rows]]  # the valid y_del the other rows monitor
    weight_rows = train_rows[inputs["labelled"][train_rows]]
    settings = {**ESDFM_SETTINGS, **{k: values[k] for k in ESDFM_SETTINGS if k in values}}
    if train.monitor.startswith("y_del/"):
        train = train.model_copy(update={"monitor": train.monitor.split("/", 1)[1]})  # one head: y_del is its label
    folder = work / "runs" / f"{row}-seed{seed}"
    t0 = time.perf_counter()
    fit = es_dfm_at_cut(inputs["arrays"], inputs["schema"], inputs["click_ts"], inputs["conversion_ts"], inputs["cut"],
                        train_rows, weight_rows, valid_rows, inputs["y_del"], train, model_params=params,
                        elapsed_cut_s=settings["elapsed_cut_s"], weight_model_epochs=int(settings["weight_model_epochs"]),
                        folder=folder)  # fmt: skip
    record = {"row": row, "model": "es_dfm", "seed": seed, "history": True, "model_params": params,
              "es_dfm": {**settings, **fit.samples, "weight_model_steps": fit.weight_result.steps},
              "train": {k: getattr(train, k) for k in ("max_steps", "eval_every_steps", "patience", "monitor",
                                                       "batch_size", "learning_rate", "embedding_l2", "lr_schedule")},
              **context, "train_rows": int(len(train_rows)), **run_summary(fit.result),
              "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return record, _EsDfmTrained(fit, inputs, folder)


def run_summary(result) -> dict[str, Any]:
    """What stopped the run, where its best evaluation was and the valid metrics there."""
    return {"stopped_by": result.stopped_by, "best_step": result.best_step, "steps": result.steps,
            "best_epoch": result.best_epoch, "monitor": result.monitor,
            "valid": {k: v for k, v in result.valid.items() if k.startswith("y_del/") or "/" not in k}}  # fmt: skip


def report_line(record: dict[str, Any]) -> None:
    print(f"{record['row']:<26} seed {record['seed']}  del AUC {record['del_auc']:.4f}  ECE {record['del_ece']:.4f}  "
          f"pred/obs {record['del_ratio']:.3f}  cvr AUC {record['cvr_auc']:.4f}  ({record['stopped_by']} at step "
          f"{record['steps']}, best {record['best_step']}, {record['seconds']}s)", flush=True)  # fmt: skip


def search(args: argparse.Namespace, settings: dict[str, Any], rows, fit) -> int:
    """Every row x every grid point, seed 0; each row's best valid monitor value is its choice."""
    grid = settings["grid"]
    names = sorted(grid)
    points = [dict(zip(names, combo, strict=True)) for combo in _product([grid[n] for n in names])] or [{}]
    results, chosen = [], {}
    for row, model, params, history in rows:
        base = {**settings["budget"], **(settings["rows"].get(row, {}) or {})}
        base = {k: v for k, v in base.items() if k not in names}
        best = None
        for point in points:
            values = {**base, **point}
            record, trained = fit(row, model, params, history, 0, values)
            metric, _ = metric_spec(record["monitor"])
            value = trained.result.valid.get(record["monitor"], float("nan"))
            record.update(point=point, valid_monitor=value)
            results.append(record)
            print(f"{row:<26} {point}  valid {record['monitor']} {value:.4f}  ({record['stopped_by']} at step "
                  f"{record['steps']}, best {record['best_step']}, {record['seconds']}s)", flush=True)  # fmt: skip
            better = best is None or (value > best[0] if metric.higher_is_better else value < best[0])
            if not np.isnan(value) and better:
                best = (value, point)
        chosen[row] = best[1] if best else None
        print(f"{row}: chose {chosen[row]}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"budget": settings["budget"], "grid": grid, "chosen": chosen, "results": results}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _product(lists: list[list[Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [()]
    for values in lists:
        out = [(*head, v) for head in out for v in values]
    return out if lists else []


def finetune(args: argparse.Namespace, settings: dict[str, Any], datasets, specs, context, work: Path,
             seed: int) -> dict[str, Any]:  # fmt: skip
    """The spec's section 5: CM-DCM on the historical promotions only, then a fine-tune on the
    current promotion's observed days (y_dir, y_atc; y_del is unknown) with the delayed towers
    (p_del|atc, imputation) frozen, at `finetune.learning_rate_scale` x the row's learning rate."""
    values = row_settings(settings, "cmdcm")
    params = {**MODEL_PARAMS["cmdcm"], **(values.get("model_params") or {})}
    stage = settings["finetune"]
    train = train_config(values, seed, args.threads, args.smoke)
    t0 = time.perf_counter()
    run = RunConfig(dataset=str(specs["past"]), model="cmdcm", model_params=params, train=train,
                    name=f"cmdcm-finetune-seed{seed}")  # fmt: skip
    first = train_run(run, runs_dir=work / "runs", data=datasets["past"])
    test = datasets["past"].split("test")
    labels = list(datasets["past"].schema.labels)
    before = score_record(labels, test, predict_components(first.model, test))  # stage 1 alone
    frozen = freeze_delayed(first.model)
    second_values = {**values, "learning_rate": values.get("learning_rate", 1e-3) * stage.get("learning_rate_scale", 1.0),
                     "monitor": stage.get("monitor", "logloss"),
                     **{k: stage[k] for k in ("max_steps", "eval_every_steps", "patience", "batch_size") if k in stage}}
    second_cfg = train_config(second_values, seed, args.threads, args.smoke)
    second = Trainer(second_cfg).fit(first.model, datasets["current-in-past"])
    record = {"row": "cmdcm-finetune", "model": "cmdcm", "seed": seed, "history": True, "model_params": params,
              "train": {k: getattr(train, k) for k in ("max_steps", "eval_every_steps", "patience", "monitor",
                                                       "batch_size", "learning_rate", "embedding_l2")},
              "finetune": {k: getattr(second_cfg, k) for k in ("max_steps", "eval_every_steps", "patience", "monitor",
                                                               "batch_size", "learning_rate")},
              "frozen": sorted({n.split(".")[1] for n in frozen}), **context,
              "train_rows": datasets["past"].split("train").rows,
              "finetune_rows": datasets["current-in-past"].split("train").rows,
              **run_summary(first.result), "finetune_stopped_by": second.stopped_by,
              "finetune_steps": second.steps, "finetune_best_step": second.best_step,
              "seconds": round(time.perf_counter() - t0, 1),
              "stage1": {k: before[k] for k in ("del_auc", "del_ece", "del_ratio", "cvr_auc", "atc_auc")},
              **score_record(labels, test, predict_components(first.model, test))}  # fmt: skip
    return record


def online(args: argparse.Namespace, config, sim_dir: Path, work: Path, models: list[str],
           runs: dict[tuple[str, int], Path]) -> dict[str, Any]:  # fmt: skip
    """CM-DCM's pCVR against the control's (`--online-control`, default the first other model) in
    pCTR x pCVR x price, in the simulator."""
    from agenticrs.sim import build_world
    from agenticrs.train.promo_online import ValuePolicy, promo_ab_test

    others = [m for m in models if m != "cmdcm"]
    if "cmdcm" not in models:
        raise SystemExit("--online compares CM-DCM with a baseline: --models must include cmdcm")
    train = TrainConfig(epochs=1, max_steps=4 if args.smoke else args.ctr_steps, batch_size=2048,
                        eval_every_steps=4 if args.smoke else args.ctr_steps, seed=0, num_threads=args.threads,
                        metrics=["auc", "logloss"], log_every=1000)  # fmt: skip
    ctr = train_run(RunConfig(dataset=str(sim_dir / "ctr.yaml"), model="dnn", train=train, name="ctr-dnn"),
                    runs_dir=work / "runs", cache_dir=work / "cache")  # fmt: skip
    baseline = args.online_control or (others[0] if others else None)
    world = build_world(config)
    names = (f"pCTR x pCVR({baseline}) x price" if baseline else "pCTR x price", "pCTR x pCVR(cmdcm) x price")
    reports = []
    for seed in range(args.seeds):  # each seed: that seed's conversion runs and its own traffic draws
        policy_a = ValuePolicy(ctr.run.folder, runs[(baseline, seed)] if baseline else None, config)
        policy_b = ValuePolicy(ctr.run.folder, runs[("cmdcm", seed)], config)
        report = promo_ab_test(world, sim_dir / "events.parquet", policy_a, policy_b, seed=seed, names=names)
        report["seed"] = seed
        reports.append(report)
    pooled = pool_lifts(reports)
    print(f"\nonline, promotion on day {reports[0]['promotion_day']}: B = {names[1]} vs A = {names[0]}, "
          f"{len(reports)} seed(s)")
    for period, metrics in pooled.items():
        for metric, c in metrics.items():
            print(f"  {period:<14} {metric:<10} lift {c['lift']:+.4f}  95% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
                  f"  per seed {', '.join(f'{v:+.4f}' for v in c['per_seed'])}")
    return {"arms": list(names), "control": baseline, "ctr_run_valid_auc": ctr.result.valid.get("auc"), "pooled": pooled,
            "seeds": reports}


def pool_lifts(reports: list[dict[str, Any]], metrics: tuple[str, ...] = ("purchases", "gmv")) -> dict[str, Any]:
    """Per period and metric, the mean of the seeds' lifts with a 95% interval from their own
    standard errors (independent seeds: se = sqrt(sum se_i^2) / n, se_i from each interval)."""
    out: dict[str, Any] = {}
    for period in reports[0]["periods"]:
        out[period] = {}
        for metric in metrics:
            cs = [r["periods"][period]["comparisons"][metric] for r in reports]
            lifts = np.array([c["lift"] for c in cs])
            se = np.sqrt(sum(((c["ci_high"] - c["ci_low"]) / (2 * 1.959964)) ** 2 for c in cs)) / len(cs)
            mean = float(lifts.mean())
            spread = float(lifts.std(ddof=1)) if len(cs) > 1 else None
            out[period][metric] = {"lift": mean, "ci_low": mean - 1.959964 * se, "ci_high": mean + 1.959964 * se,
                                   "per_seed": lifts.tolist(), "seed_sd": spread}  # fmt: skip
    return out


def print_table(records: list[dict[str, Any]]) -> None:
    rows = list(dict.fromkeys(r["row"] for r in records))
    keys = ("del_auc", "del_ece", "del_ratio", "cvr_auc", "atc_auc", "del_auc_carted")
    print(f"\n{'model':<26} {'seeds':>5} " + " ".join(f"{k:>17}" for k in keys))
    for row in rows:
        mine = [r for r in records if r["row"] == row]
        cells = []
        for k in keys:
            values = np.array([r[k] for r in mine], dtype=np.float64)
            spread = f" ± {values.std(ddof=1):.4f}" if len(values) > 1 else " " * 9
            cells.append(f"{values.mean():8.4f}{spread}")
        print(f"{row:<26} {len(mine):>5} " + " ".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
