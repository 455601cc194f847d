"""Retrieval benchmark: popularity, co-occurrence, SASRec and two-tower over the whole catalogue,
and the FAISS index's recall and latency.

    python bench/retrieval_benchmark.py --datasets amazon_beauty --seeds 3 --sasrec-budget-s 5400 \
        --no-ann --append --json bench/results/retrieval_beauty.json
    python bench/retrieval_benchmark.py --report bench/results/retrieval_beauty.json \
        bench/results/retrieval_sim_medium.json --json bench/results/retrieval_3seeds.json
    python bench/retrieval_benchmark.py --ann-only --json bench/results/retrieval_ann.json
    python bench/retrieval_benchmark.py --index-check runs/retrieval/sim-medium/seed1/two_tower --datasets sim-medium \
        --json bench/results/retrieval_index_check.json
    python bench/retrieval_benchmark.py --pipeline-ab --ranker runs/retrieval/deepfm-sim-small-pipeline --seeds 3 \
        --json bench/results/retrieval_pipeline_ab.json
    python bench/retrieval_benchmark.py --csmf --datasets sim-medium --seeds 3 --json bench/results/retrieval_csmf.json

Per data set and seed (leave-one-out, `agenticrs.gr.sequences.leave_one_out`): every retriever's
test Recall@50, Recall@200 and NDCG@50 against the held-out next click (full ranking over all
items). On a simulator data set also the recall of each user's 50 truly most likely clicks and
purchases (`agenticrs.retrieval.ground_truth.truth_metrics`, `set_recall@k`) on a fixed sample
of `--truth-users` test users. SASRec trains under `--sasrec-budget-s` seconds (the time budget
of the engine; its record says `stopped_by`) with the full softmax, or with `--sasrec-loss
sampled` against `--sasrec-negatives` shared uniform negatives (log-Q corrected; for catalogues
where the full softmax is most of the step's cost), the two-tower model until patience or
`--two-tower-epochs`; the two-tower's item vectors go into the run's index (IVF by default,
`--index-kind`) saved in its run directory, reloaded, and its retrieval through the index is scored
as `two_tower+ivf`. With `--append` a (data set, seed) already in `--json` is not rerun (resume;
seeds can also run in separate processes with `--first-seed`), and `--report FILES` prints the
mean ± sd over seeds with each retriever's paired difference from the two-tower (95% t interval).

ANN (`--ann-items` synthetic unit vectors, a mixture of 1,000 clusters, one thread): build time,
recall@100 of HNSW against exact search, and seconds per query for both from the same run, with
all queries in one call (batched) and one query per call (online serving).

Multi-objective retrieval (`--csmf`): on a simulator data set's impressions (exposure, click and
purchase positives, `agenticrs.retrieval.cascade`), CSMF against the shared-bottom multi-head
two-tower with the same vector size and the same optimiser-step budget (CSMF's stage budgets plus
its two accuracy-recovery phases), CSMF's ablations (per-layer fixed-share pruning instead of CPP,
`prune_rule=count`; no accuracy recovery; no adaptive margin) and a diagnostic (the item tower
pruned and fine-tuned like the user tower, `item_tower=staged`: every objective its own item
vectors, three times the index) and a schedule check (`csmf_later_lr`: the exposure stage at
CSMF's chosen rate, the click and conversion stages at a rate chosen from `--csmf-later-lrs`).
Each arm's learning rate is chosen on the validation split of seed 1 (`--csmf-lrs`; CSMF's choice
serves its ablations and the diagnostic). Reported per arm
and seed: test set-recall@50/@200 and NDCG@50 of each objective's own vector against the items
the user reached that level with on the test day, the per-scenario fusion against the click and
conversion sets, vector size, parameters, the user tower's multiply-adds per query, steps and
what stopped each phase. `--report FILES --query-cost` prints the table of several result files
and times each arm's served fused query (`FusedQuery`) in one process.

Pipeline A/B (`--pipeline-ab`): on the `--pipeline-preset` world, popularity + the ranker (A)
against two-tower (through its HNSW index) + the same ranker (B), top `--k` from the whole
catalogue per request, one simulated day per seed with common random numbers; lifts of clicks,
carts, purchases and GMV per user with delta-method 95% intervals (`Environment.ab_test`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.train import SequentialTrainConfig, evaluate_sequential, load_sequential_run, train_sequential
from agenticrs.gr.zoo import build_sequential
from agenticrs.retrieval.baselines import CoOccurrenceRetriever, IndexRetriever, PopularityRetriever, VectorRetriever
from agenticrs.retrieval.ground_truth import Truth, simulator_truth, truth_metrics
from agenticrs.retrieval.index import IndexConfig, VectorIndex, neighbour_recall, time_search
from agenticrs.retrieval.pipeline import INDEX_DIR, load_retriever, pipeline_ab_test, save_run_index
from agenticrs.retrieval.train import RetrievalTrainConfig, train_retrieval
from agenticrs.sim import build_world, sim_preset
from agenticrs.sim.environment import Environment
from agenticrs.train.policy import RunPolicy
from agenticrs.train.run import Run

console = Console(width=220)
KS = (50, 200)
SHOWN = ["recall@50", "recall@200", "ndcg@50"]


def _truth(retriever: Any, truths: dict[str, Truth]) -> dict[str, float]:
    out = {}
    for objective, truth in truths.items():
        got = truth_metrics(retriever, truth, ks=KS)
        out.update({f"truth_{objective}_{k.removeprefix('set_')}": v for k, v in got.items()})
    return out


def _resumable(run_dir: Path, args: argparse.Namespace) -> bool:
    """With --append, a run killed mid-training continues from its checkpoint."""
    return bool(args.append) and Run(run_dir).has_checkpoint()


def bench_dataset(name: str, seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    data = resolve_sequences(name)
    splits = leave_one_out(data)
    world = build_world(sim_preset(name.removeprefix("sim-"))) if name.startswith("sim-") else None
    records: list[dict[str, Any]] = []
    truths: dict[str, Truth] = {}
    if world is not None:
        started = time.perf_counter()
        day = world.config.n_days - 1  # the test day
        for objective in ("click", "purchase"):
            truths[objective] = simulator_truth(world, splits.test, day, 50, objective, args.truth_users, seed)  # type: ignore[arg-type]
        console.print(f"simulator truth of {args.truth_users} users: {time.perf_counter() - started:.1f} s")

    def record(retriever_name: str, retriever: Any, extra: dict[str, Any]) -> None:
        started = time.perf_counter()
        metrics = evaluate_sequential(retriever, splits.test, KS, batch_size=512, max_len=50)
        row = {"dataset": name, "seed": seed, "retriever": retriever_name,
               **{k: metrics[k] for k in SHOWN}, "eval_seconds": time.perf_counter() - started, **extra}  # fmt: skip
        if world is not None:
            row.update(_truth(retriever, truths))
        records.append(row)
        console.print(row)

    wanted = set(args.retrievers.split(","))
    if "popularity" in wanted:
        record("popularity", PopularityRetriever(splits.train), {"stopped_by": None})
    if "co-occurrence" in wanted:
        record("co-occurrence", CoOccurrenceRetriever(splits.train), {"stopped_by": None})
    runs = args.runs_dir / name / f"seed{seed}"
    if "sasrec" in wanted:
        _bench_sasrec(data, seed, runs, args, record)
    if "two_tower" in wanted:
        _bench_two_tower(data, splits, seed, runs, args, record)
    return records


def _bench_sasrec(data: Any, seed: int, runs: Path, args: argparse.Namespace, record: Any) -> None:
    # SASRec: the gr benchmark's settings (bench/configs/gr.yaml), under a time budget
    torch.manual_seed(seed)
    sasrec = build_sequential("sasrec", data.num_items, {"loss": args.sasrec_loss, "num_negatives": args.sasrec_negatives,
                                                           "max_len": 50, "dim": 64, "num_blocks": 2, "num_heads": 1,
                                                           "dropout": 0.2})  # fmt: skip
    sasrec_cfg = SequentialTrainConfig(epochs=200, batch_size=128, learning_rate=1e-3, patience=5, eval_every_epochs=2,
                                       eval_batch_size=2048, ks=[10, *KS], seed=seed, num_threads=1,
                                       time_budget_s=args.sasrec_budget_s)  # fmt: skip
    result = train_sequential(sasrec, data, sasrec_cfg, run_dir=runs / "sasrec", resume=_resumable(runs / "sasrec", args))
    negatives = args.sasrec_negatives if args.sasrec_loss == "sampled" else None
    record("sasrec", sasrec.eval(), {"stopped_by": result.stopped_by, "epochs": result.epochs_run,
                                     "best_epoch": result.best_epoch, "train_seconds": result.train_seconds,
                                     "loss": args.sasrec_loss, "num_negatives": negatives})  # fmt: skip



def _bench_two_tower(data: Any, splits: Any, seed: int, runs: Path, args: argparse.Namespace, record: Any) -> None:
    """The two-tower row (a non-default `--two-tower-lr` is part of its name) and its index row."""
    lr = args.two_tower_lr
    label = "two_tower" if lr == RetrievalTrainConfig().learning_rate else f"two_tower lr {lr:g}"
    folder = runs / label.replace(" ", "_")
    two_cfg = RetrievalTrainConfig(epochs=args.two_tower_epochs, seed=seed, num_threads=1, learning_rate=lr)
    model, result = train_retrieval(data, {}, two_cfg, run_dir=folder, resume=_resumable(folder, args))
    model.eval()
    record(label, model, {"stopped_by": result.stopped_by, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
                          "train_seconds": result.train_seconds, "learning_rate": lr,
                          "valid_recall@50": result.valid.get("recall@50")})  # fmt: skip
    vectors = VectorRetriever(model)
    items = vectors.item_vectors()
    index_config = IndexConfig(kind=args.index_kind) if args.index_kind else None  # None: the run's default (IVF)
    save_run_index(folder, index_config)
    index = VectorIndex.load(folder / INDEX_DIR)  # the run's artifact, reloaded
    exact = VectorIndex.build(items, np.arange(1, data.num_items + 1), IndexConfig(kind="exact"))
    queries = np.concatenate([vectors.user_vectors(b) for b in splits.test.sample(2000, seed).batches(50, 512)])
    _, exact_ids = exact.search(queries, 100)
    _, approx_ids = index.search(queries, 100)
    record(f"{label}+{index.config.kind}", IndexRetriever(vectors, index),
           {"stopped_by": result.stopped_by, "ann_recall@100": neighbour_recall(exact_ids, approx_ids),
            "index": index.config.model_dump()})  # fmt: skip


def bench_ann(args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    n, d = args.ann_items, 64
    centers = rng.normal(size=(1000, d))

    def draw(m: int) -> np.ndarray:
        x = centers[rng.integers(0, 1000, m)] + 0.7 * rng.normal(size=(m, d))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    items, queries = draw(n), draw(args.ann_queries)
    exact = VectorIndex.build(items, config=IndexConfig(kind="exact"))
    exact_batched, exact_ids = time_search(exact, queries, 100, repeats=3)
    single = queries[:200]
    started = time.perf_counter()
    for q in single:
        exact.search(q[None, :], 100)
    exact_single = (time.perf_counter() - started) / len(single)
    rows = []
    for kind, extra in (("hnsw", {}), ("ivf", {"nlist": 1024, "nprobe": 32})):
        built = VectorIndex.build(items, config=IndexConfig(kind=kind, **extra))
        for knob in ((64, 128, 256) if kind == "hnsw" else (16, 32, 64)):
            config = built.config.model_copy(update={"ef_search": knob} if kind == "hnsw" else {"nprobe": knob})
            built.config = config
            built._set_search_params()
            batched, ids = time_search(built, queries, 100, repeats=3)
            started = time.perf_counter()
            for q in single:
                built.search(q[None, :], 100)
            one = (time.perf_counter() - started) / len(single)
            row = {"ann_items": n, "dim": d, "kind": kind, "knob": "ef_search" if kind == "hnsw" else "nprobe",
                   "value": knob, "recall@100": neighbour_recall(exact_ids, ids), "build_seconds": built.build_seconds,
                   "ms_per_query_batched": 1e3 * batched, "ms_per_query_single": 1e3 * one,
                   "exact_ms_per_query_batched": 1e3 * exact_batched, "exact_ms_per_query_single": 1e3 * exact_single,
                   "speedup_single": exact_single / one, "threads": 1}  # fmt: skip
            rows.append(row)
            console.print(row)
    return rows


def bench_pipeline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Two-tower + ranker against popularity + ranker in the simulator, one A/B per seed (the
    environment's seed: other requests and outcome draws; the retrievers and the ranker fixed)."""
    preset = args.pipeline_preset
    data = resolve_sequences(f"sim-{preset}")
    run = args.runs_dir / "pipeline" / f"two_tower-sim-{preset}"
    if not (run / "index" / "index.faiss").is_file():
        train_retrieval(data, {}, RetrievalTrainConfig(epochs=args.two_tower_epochs, seed=1, num_threads=1), run_dir=run)
        save_run_index(run, IndexConfig(kind=args.index_kind) if args.index_kind else None)
    two_tower = load_retriever(run, data)
    popularity = load_retriever("popularity", data)
    ranker = RunPolicy(args.ranker)
    world = build_world(sim_preset(preset))
    rows = []
    for seed in range(1, args.seeds + 1):
        started = time.perf_counter()
        result = pipeline_ab_test(Environment(world, seed=seed), popularity, two_tower, ranker, k=args.k,
                                  days=args.days, names=("popularity+ranker", "two_tower+ranker"))  # fmt: skip
        for c in result.comparisons.values():
            rows.append({"preset": preset, "seed": seed, "k": args.k, "days": args.days, "ranker": str(args.ranker),
                         **c.__dict__, "wall_s": time.perf_counter() - started})  # fmt: skip
            console.print(rows[-1])
    return rows


def bench_index_check(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ANN recall@100 and latency on a trained run's own item vectors, queried by its user vectors
    (1,000 test users of `--datasets`' first entry): learned queries are not distributed like the
    items, which graph indexes feel more than synthetic benchmarks show."""
    data = resolve_sequences(args.datasets.split(",")[0])
    model, _ = load_sequential_run(args.index_check)
    vectors = VectorRetriever(model)
    items = vectors.item_vectors()
    queries = np.concatenate([vectors.user_vectors(b) for b in leave_one_out(data).test.sample(1000, 1).batches(50, 512)])
    exact = VectorIndex.build(items, config=IndexConfig(kind="exact"))
    exact_s, exact_ids = time_search(exact, queries, 100)
    rows = []
    for config in (IndexConfig(kind="hnsw"), IndexConfig(kind="hnsw", ef_search=512),
                   IndexConfig(kind="hnsw", hnsw_m=32, ef_construction=200, ef_search=256),
                   IndexConfig(kind="ivf", nlist=256, nprobe=16), IndexConfig(kind="ivf", nlist=256, nprobe=32)):  # fmt: skip
        index = VectorIndex.build(items, config=config)
        seconds, ids = time_search(index, queries, 100)
        rows.append({"run": str(args.index_check), "items": len(items), **config.model_dump(),
                     "recall@100": neighbour_recall(exact_ids, ids), "ms_per_query_batched": 1e3 * seconds,
                     "exact_ms_per_query_batched": 1e3 * exact_s, "build_seconds": index.build_seconds})  # fmt: skip
        console.print(rows[-1])
    return rows


CSMF_ARMS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # arm: (model, model params, train settings)
    "csmf": ("csmf", {}, {}),
    "multihead_two_tower": ("multihead_two_tower", {}, {}),
    "csmf_count_pruning": ("csmf", {"prune_rule": "count"}, {}),
    "csmf_no_recovery": ("csmf", {}, {"accuracy_recovery": False}),
    "csmf_no_margin": ("csmf", {"margin_mode": "off"}, {}),
    # a diagnostic, not an ablation of the paper: each objective also gets its own item vectors
    "csmf_staged_items": ("csmf", {"item_tower": "staged"}, {}),
    # a schedule check: the exposure stage at CSMF's chosen rate, the click and conversion stages
    # (and their recovery) at their own rate, chosen on seed 1's validation from --csmf-later-lrs
    "csmf_later_lr": ("csmf", {}, {}),
}
CSMF_SHOWN = ["exposure/set_recall@50", "click/set_recall@50", "conversion/set_recall@50", "conversion/set_recall@200",
              "click/set_ndcg@50", "conversion/set_ndcg@50", "fused_click/set_recall@50",
              "fused_conversion/set_recall@50"]  # fmt: skip


def _csmf_run(arm: str, data: Any, seed: int, lr: float, args: argparse.Namespace,
              first_lr: float | None = None) -> dict[str, Any]:  # fmt: skip
    """One arm's run at learning rate `lr`; with `first_lr` the exposure stage trains at `first_lr`
    and the later stages at `lr` (`csmf_later_lr`)."""
    from agenticrs.retrieval.cascade_train import CascadeTrainConfig, train_csmf, train_multi_objective

    model_name, params, settings = CSMF_ARMS[arm]
    if first_lr is not None:
        settings = {**settings, "stage_learning_rates": [first_lr, lr, lr]}
    stages = [int(s) for s in args.csmf_stage_steps.split(",")]
    budget = sum(stages) + 2 * args.csmf_recovery_steps
    config = CascadeTrainConfig(seed=seed, learning_rate=lr, stage_steps=stages, recovery_steps=args.csmf_recovery_steps,
                                max_steps=budget, eval_every_steps=args.csmf_eval_every, valid_users=args.valid_users,
                                num_threads=1, **settings)  # fmt: skip
    run_dir = args.runs_dir / f"{data.name}-csmf" / f"seed{seed}" / f"{arm}-lr{lr:g}"
    started = time.perf_counter()
    if model_name == "csmf":
        _, result = train_csmf(data, params, config, run_dir=run_dir)
    else:
        _, result = train_multi_objective(data, model_name, params, config, run_dir=run_dir)
    return {"dataset": data.name, "seed": seed, "arm": arm, "model": model_name, "params": params, "run_dir": str(run_dir),
            "settings": settings, "learning_rate": lr, "budget": budget, "steps": result.steps,
            "stopped_by": result.stopped_by, "seconds": time.perf_counter() - started, "valid": result.valid,
            "test": result.test, "serving": result.serving, "ownership": result.ownership,
            "phases": [{"name": p.name, "steps": p.steps, "stopped_by": p.stopped_by, "best_step": p.best_step}
                       for p in result.phases]}  # fmt: skip


def bench_csmf(args: argparse.Namespace, out: dict[str, Any]) -> list[dict[str, Any]]:
    """CSMF against the multi-head two-tower and CSMF's ablations (see the module docstring)."""
    from agenticrs.retrieval.cascade import resolve_cascade

    records: list[dict[str, Any]] = out.setdefault("csmf", [])
    done = {(r["dataset"], r["seed"], r["arm"], r["learning_rate"]) for r in records}
    arms = [a for a in args.csmf_arms.split(",") if a]
    lrs = [float(v) for v in args.csmf_lrs.split(",")]
    for name in [n for n in args.datasets.split(",") if n]:
        data = resolve_cascade(name)

        def run(arm: str, seed: int, lr: float, data: Any = data, first_lr: float | None = None) -> dict[str, Any]:
            key = (data.name, seed, arm, lr)
            if key not in done:
                record = _csmf_run(arm, data, seed, lr, args, first_lr)
                records.append(record)
                done.add(key)
                args.json.write_text(json.dumps(out, indent=1))
                console.print(f"{data.name} seed {seed} {arm} lr {lr:g}: valid all/set_recall@50 "
                              f"{record['valid']['all/set_recall@50']:.4f} ({record['seconds']:.0f} s; {record['stopped_by']})")
            return next(r for r in records if (r["dataset"], r["seed"], r["arm"], r["learning_rate"]) == key)

        chosen: dict[str, float] = {}
        for arm in ("csmf", "multihead_two_tower"):
            if arm in arms:
                grid = [run(arm, 1, lr) for lr in lrs]
                chosen[arm] = max(grid, key=lambda r: r["valid"]["all/set_recall@50"])["learning_rate"]
        first = chosen.get("csmf", lrs[0])
        if "csmf_later_lr" in arms:
            grid = [run("csmf_later_lr", 1, lr, first_lr=first) for lr in [float(v) for v in args.csmf_later_lrs.split(",")]]
            chosen["csmf_later_lr"] = max(grid, key=lambda r: r["valid"]["all/set_recall@50"])["learning_rate"]
        out.setdefault("chosen_lr", {})[data.name] = chosen
        for seed in range(1, args.seeds + 1):
            for arm in arms:
                lr = chosen.get(arm, first)
                record = run(arm, seed, lr, first_lr=first if arm == "csmf_later_lr" else None)
                record["chosen"] = True
        args.json.write_text(json.dumps(out, indent=1))
    return records


def csmf_query_cost(records: list[dict[str, Any]], runs_dir: Path, queries: int = 2000,
                    repeats: int = 5) -> list[dict[str, Any]]:  # fmt: skip
    """Seconds per fused query as served (`FusedQuery`: every objective's user vector summed with
    the default weights; CSMF's masks applied once beforehand; batches of 256, one thread) of each
    arm's seed-1 run, all timed in this process."""
    from agenticrs.retrieval.cascade import cascade_queries, resolve_cascade
    from agenticrs.retrieval.cascade_train import load_multi_objective_run
    from agenticrs.retrieval.multi_objective import FusedQuery

    out = []
    shared = [r for r in records if r.get("chosen") and r["seed"] == 1 and r["params"].get("item_tower") != "staged"]
    for record in shared:  # a staged item tower has no single fused query vector
        folder = Path(record.get("run_dir") or runs_dir / f"{record['dataset']}-csmf" / "seed1"
                      / f"{record['arm']}-lr{record['learning_rate']:g}")  # fmt: skip
        model, config = load_multi_objective_run(folder)
        data = resolve_cascade(record["dataset"])
        batches = list(cascade_queries(data.test, model.config.max_len).sample(queries, 0).batches(256))
        served = FusedQuery(model)
        best = float("inf")
        with torch.no_grad():
            for _ in range(repeats):
                started = time.perf_counter()
                for batch in batches:
                    served.user_vectors(batch)
                best = min(best, (time.perf_counter() - started) / queries)
        out.append({"dataset": record["dataset"], "arm": record["arm"], "ms_per_query": best * 1e3})
    base = {r["dataset"]: r["ms_per_query"] for r in out if r["arm"] == "multihead_two_tower"}
    for r in out:
        r["ratio_to_multihead"] = r["ms_per_query"] / base[r["dataset"]] if r["dataset"] in base else None
    return out


def print_csmf(records: list[dict[str, Any]]) -> None:
    table = Table(title="multi-objective retrieval (test; chosen learning rates; mean ± sd over seeds)")
    for column in ["dataset", "arm", "seeds", *CSMF_SHOWN, "vector", "params", "user MACs/query", "steps"]:
        table.add_column(column)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("chosen"):
            groups.setdefault((r["dataset"], r["arm"]), []).append(r)
    for (dataset, arm), rows in groups.items():
        cells = []
        for metric in CSMF_SHOWN:
            values = np.array([r["test"][metric] for r in rows])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}")
        serving = rows[0]["serving"]
        table.add_row(dataset, arm, str(len(rows)), *cells, f"{serving['vector_size']:.0f}",
                      f"{serving['parameters'] / 1e6:.2f}M", f"{serving['user_tower_macs_per_query'] / 1e3:.0f}k",
                      f"{np.mean([r['steps'] for r in rows]):.0f}")  # fmt: skip
    console.print(table)


RETRIEVAL_SHOWN = [*SHOWN, "truth_click_recall@50", "truth_click_recall@200", "truth_purchase_recall@200"]


def summarise_retrieval(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds of every shown metric, per data set and
    retriever, with each retriever's paired difference from the two-tower model (95% t interval
    over seeds) on Recall@50 and Recall@200."""
    from agenticrs.agents.paper.verdict import paired_effect

    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["retriever"]), {})[r["seed"]] = r
    rows = []
    for (dataset, retriever), by_seed in groups.items():
        row: dict[str, Any] = {"dataset": dataset, "retriever": retriever, "seeds": sorted(by_seed)}
        for metric in RETRIEVAL_SHOWN:
            values = np.array([r[metric] for r in by_seed.values() if r.get(metric) is not None], dtype=float)
            if len(values):
                row[metric] = float(values.mean())
                row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        stops = sorted({str(r.get("stopped_by")) for r in by_seed.values() if r.get("stopped_by")})
        row["stopped_by"] = ", ".join(stops) or None
        if "epochs" in next(iter(by_seed.values())):
            row["epochs"] = [by_seed[s].get("epochs") for s in sorted(by_seed)]
        base = groups.get((dataset, "two_tower"), {})
        common = sorted(set(by_seed) & set(base))
        if retriever != "two_tower" and len(common) >= 2:
            for metric in ("recall@50", "recall@200"):
                effect = paired_effect([by_seed[s][metric] for s in common], [base[s][metric] for s in common])
                row[f"vs_two_tower_{metric}"] = {"mean": effect.mean, "low": effect.low, "high": effect.high}
        rows.append(row)
    return rows


def print_retrieval(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = summarise_retrieval(records)
    table = Table(title="retrieval (test, leave-one-out; truth: the simulator's 50 most likely clicks; mean ± sd over seeds)")
    for column in ["dataset", "retriever", "seeds", *RETRIEVAL_SHOWN, "R@50 − two-tower (95% CI)", "stopped_by"]:
        table.add_column(column)
    for row in summary:
        cells = [f"{row[m]:.4f} ± {row[m + '_std']:.4f}" if m in row else "" for m in RETRIEVAL_SHOWN]
        effect = row.get("vs_two_tower_recall@50")
        diff = f"{effect['mean']:+.4f} [{effect['low']:+.4f}, {effect['high']:+.4f}]" if effect else ""
        table.add_row(row["dataset"], row["retriever"], str(len(row["seeds"])), *cells, diff, str(row["stopped_by"]))
    console.print(table)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="sim-medium,amazon_beauty")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--sasrec-budget-s", type=float, default=600.0)
    parser.add_argument("--sasrec-loss", default="ce", choices=["ce", "bce", "sampled"])
    parser.add_argument("--sasrec-negatives", type=int, default=1024, help='--sasrec-loss sampled: shared negatives')
    parser.add_argument("--index-kind", choices=["hnsw", "ivf"], help="the two-tower run's index (default: the run's "
                        "default, IVF with about sqrt(items) cells, 16 probed)")
    parser.add_argument("--two-tower-epochs", type=int, default=30)
    parser.add_argument("--two-tower-lr", type=float, default=1e-3, help="a non-default rate is part of the row's name")
    parser.add_argument("--retrievers", default="popularity,co-occurrence,sasrec,two_tower",
                        help="which rows to run (two_tower includes its index row)")
    parser.add_argument("--truth-users", type=int, default=1000)
    parser.add_argument("--ann-items", type=int, default=100_000)
    parser.add_argument("--ann-queries", type=int, default=2000)
    parser.add_argument("--ann-only", action="store_true")
    parser.add_argument("--no-ann", action="store_true")
    parser.add_argument("--index-check", type=Path, help="only: ANN indexes on this run's own item and user vectors")
    parser.add_argument("--pipeline-ab", action="store_true", help="only the pipeline A/B (needs --ranker)")
    parser.add_argument("--pipeline-preset", default="small")
    parser.add_argument("--ranker", type=Path, help="the ranking stage: a CTR run trained on the preset's logs")
    parser.add_argument("--k", type=int, default=200, help="items retrieved per request")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/retrieval"))
    parser.add_argument("--csmf", action="store_true", help="only: CSMF against the multi-head two-tower, ablations")
    parser.add_argument("--csmf-arms", default=",".join(CSMF_ARMS))
    parser.add_argument("--csmf-lrs", default="1e-3,3e-3", help="learning rates tried on seed 1 (validation)")
    parser.add_argument("--csmf-later-lrs", default="3e-4,1e-3", help="csmf_later_lr: the click and conversion "
                        "stages' rates tried on seed 1 (validation)")
    parser.add_argument("--csmf-stage-steps", default="1000,600,400", help="CSMF's exposure, click, conversion budgets")
    parser.add_argument("--csmf-recovery-steps", type=int, default=100)
    parser.add_argument("--csmf-eval-every", type=int, default=200)
    parser.add_argument("--valid-users", type=int, default=3000, help="validation queries sampled for early stopping")
    parser.add_argument("--append", action="store_true", help="keep the records already in --json (resume)")
    parser.add_argument("--report", type=Path, nargs="+", help="only: print the retrieval and CSMF tables of these "
                        "JSON files (with --json: merged into it)")
    parser.add_argument("--query-cost", action="store_true", help="with --report: time each arm's fused query "
                        "(seed 1's run) in this process and write the merged records and the timings to --json")
    parser.add_argument("--json", type=Path, default=Path("bench/out/retrieval.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    out: dict[str, Any] = {"command": "python bench/retrieval_benchmark.py " + " ".join(__import__("sys").argv[1:]),
                           "retrieval": [], "ann": []}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.index_check is not None:
        out["index_check"] = bench_index_check(args)
        args.json.write_text(json.dumps(out, indent=1))
        return
    if args.report:
        files = [json.loads(path.read_text()) for path in args.report]
        retrieval = [r for f in files for r in f.get("retrieval", [])]
        if retrieval:
            out["retrieval"] = retrieval
            out["summary"] = print_retrieval(retrieval)
            args.json.write_text(json.dumps(out, indent=1))
        records = [r for f in files for r in f.get("csmf", [])]
        if not records:
            return
        print_csmf(records)
        if args.query_cost:
            cost = csmf_query_cost(records, args.runs_dir)
            for row in cost:
                console.print(f"{row['dataset']} {row['arm']}: {row['ms_per_query']:.4f} ms per fused query "
                              f"({row['ratio_to_multihead']:.2f}x the multi-head two-tower's)")
            out["csmf_query_cost"] = cost
            out["csmf"] = records
            args.json.write_text(json.dumps(out, indent=1))
        return
    if args.csmf:
        if args.append and args.json.is_file():
            out = {**json.loads(args.json.read_text()), "command": out["command"]}
        bench_csmf(args, out)
        args.json.write_text(json.dumps(out, indent=1))
        print_csmf(out["csmf"])
        return
    if args.pipeline_ab:
        if args.ranker is None:
            parser.error("--pipeline-ab needs --ranker RUN (e.g. a deepfm run on the preset)")
        out["pipeline_ab"] = bench_pipeline(args)
        args.json.write_text(json.dumps(out, indent=1))
        table = Table(title=f"pipeline A/B on sim-{args.pipeline_preset}: popularity+ranker (A) vs two_tower+ranker (B)")
        for column in ("seed", "metric", "mean_a", "mean_b", "lift", "95% CI", "p_value"):
            table.add_column(column)
        for r in out["pipeline_ab"]:
            table.add_row(str(r["seed"]), r["metric"], f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}", f"{r['lift']:+.2%}",
                          f"[{r['ci_low']:+.2%}, {r['ci_high']:+.2%}]", f"{r['p_value']:.3g}")  # fmt: skip
        console.print(table)
        return
    if not args.ann_only:
        if args.append and args.json.is_file():  # resume: a (data set, seed) already recorded is not rerun
            out = {**json.loads(args.json.read_text()), "command": out["command"]}
        done = {(r["dataset"], r["seed"]) for r in out["retrieval"]}  # one file per set of --retrievers
        for name in [n for n in args.datasets.split(",") if n]:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                if (name, seed) not in done:
                    out["retrieval"] += bench_dataset(name, seed, args)
                    args.json.write_text(json.dumps(out, indent=1))
    if not args.no_ann:
        out["ann"] = bench_ann(args)
        args.json.write_text(json.dumps(out, indent=1))
    if out["retrieval"]:
        out["summary"] = print_retrieval(out["retrieval"])
        args.json.write_text(json.dumps(out, indent=1))
    if out["ann"]:
        ann = Table(title=f"ANN, {args.ann_items:,} items, one thread")
        for column in ("kind", "knob", "value", "recall@100", "ms_per_query_single", "exact_ms_per_query_single",
                       "ms_per_query_batched", "exact_ms_per_query_batched", "build_seconds"):  # fmt: skip
            ann.add_column(column)
        for row in out["ann"]:
            ann.add_row(row["kind"], row["knob"], str(row["value"]), f"{row['recall@100']:.4f}",
                        f"{row['ms_per_query_single']:.3f}", f"{row['exact_ms_per_query_single']:.3f}",
                        f"{row['ms_per_query_batched']:.3f}", f"{row['exact_ms_per_query_batched']:.3f}",
                        f"{row['build_seconds']:.1f}")  # fmt: skip
        console.print(ann)


if __name__ == "__main__":
    main()
