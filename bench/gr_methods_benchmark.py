"""GRC against TIGER on the same semantic IDs, and TIGER on MMQ IDs against RQ-KMeans / RQ-VAE IDs.

    python bench/gr_methods_benchmark.py --part grc --dataset sim-small --seeds 1 --json bench/results/gr_grc_sim-small.json
    python bench/gr_methods_benchmark.py --part mmq --dataset sim-small --seeds 1 --json bench/results/gr_mmq_sim-small.json

Both parts run every model through `agenticrs.gr.workflow.run_sequential_job` (the path of
`agenticrs train --task sequential`) with the settings of bench/configs/gr.yaml (TIGER's for GRC),
then `--set` overrides (MODEL.key=value; `tiger.` settings apply to GRC too, so both get the same
budget; `grc.` settings to GRC alone). Leave-one-out, full ranking, test split at the best validation checkpoint.

- `grc`: TIGER; GRC trained with the supervised template (same IDs: RQ-KMeans of the items' text,
  seeded, so identical codes, checked); a short GRPO fine-tuning run of that GRC model through the
  engine (`--grpo-steps`, lr `--grpo-lr`); then the GRPO model decoded with reflection on 0 %
  (its drafts only), 50 % (EGRS default) and 100 % (no EGRS) of the beams. Decoding latency per user
  on 512 test users (k = 10, beam 20) beside each. `grc_decoding` (after `grc`): the SFT model's
  drafts only, and the `keep_drafts` merge on both models, appended to the same JSON. `grpo`
  (after `grc`): another GRPO fine-tuning of the SFT run (another `--grpo-lr`, `--grpo-steps`,
  `--grpo-schedule constant` or `cosine` instead of the plateau cut, or GRC settings of
  the GRPO run only: `--grpo-set credit=trajectory`, `--grpo-set "policy_segments=[reflection]"`),
  recorded with its drafts alone. `probe` (after `grc` / `grpo`): GRPO's sampled groups (reward,
  hit shares, groups without reward spread) of the SFT and every GRPO run, on validation users and
  on training examples, the same samples for each. `--keep-tiger` compares GRC with the finished TIGER run already in
  --runs-dir (gr_benchmark.py's `tiger-DATASET-seedS`, e.g. on Amazon, where TIGER takes hours)
  instead of training it again; a run of other settings is refused. `--resume` (grc part, after a
  kill) keeps the records already in --json, reuses runs that finished, continues a killed run from
  its checkpoint and redoes only the short GRPO fine-tuning when it was not recorded.
- `mmq`: a SASRec run first (its item table is the collaborative modality); then TIGER on IDs
  from RQ-KMeans (text), RQ-VAE (text), RQ-KMeans of the concatenated text + collaborative
  vectors (concat-then-quantise), and MMQ (text + collaborative: shared-specific experts,
  orthogonality penalty, behaviour-aware fine-tuning), all with 3 code levels + the collision digit,
  with each tokenizer's statistics (usage, perplexity, collision rate) in the record; MMQ with the
  usage term in its fine-tuning (`--mmq-usage-weight`, ours: against the code collapse the
  fine-tuning causes), and MMQ without the behaviour-aware fine-tuning, the spec's "no stage 2"
  ablation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.train import (
    SeqTrainResult,
    SequentialTrainConfig,
    config_semantic_ids,
    evaluate_sequential,
    load_sequential_run,
    train_sequential,
)
from agenticrs.gr.workflow import (
    JOB_FILE,
    SequentialJob,
    finished_sequential_result,
    job_differences,
    read_job,
    run_or_resume_sequential_job,
)
from agenticrs.progress import RichReporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gr_benchmark import METRIC_KEYS, job_for

console = Console()


def latency_ms(model: torch.nn.Module, data, users: int = 512, k: int = 10) -> float:
    """Decoding milliseconds per user of `model.recommend` on the first `users` test users."""
    batch = next(iter(leave_one_out(data).test.batches(model.config.max_len, users)))
    batch = {name: value for name, value in batch.items() if name in ("history", "user")}
    model.eval()
    model.recommend(batch, k)  # warm-up
    start = time.perf_counter()
    model.recommend(batch, k)
    return 1000 * (time.perf_counter() - start) / len(batch["history"])


def record(label: str, model_name: str, dataset: str, seed: int, result, folder: Path, data, **extra: Any) -> dict:
    model, _ = load_sequential_run(folder)
    tokenizer = folder / "tokenizer.json"
    return {
        "model": model_name, "model_label": label, "dataset": dataset, "seed": seed,
        **{k: result.test.get(k) for k in METRIC_KEYS},
        "valid_ndcg@10": result.valid.get("ndcg@10"),
        "train_s_per_epoch": result.seconds_per_epoch,
        "epochs": result.epochs_run, "steps": result.steps, "best_epoch": result.best_epoch,
        "stopped_by": result.stopped_by, "beam_latency_ms_per_user": latency_ms(model, data),
        "tokenizer": json.loads(tokenizer.read_text()) if tokenizer.exists() else None, "run": str(folder), **extra,
    }  # fmt: skip


def run_job(args, model: str, seed: int, name: str, extra_sets: list[str]) -> tuple[Path, Any]:
    """One job: gr.yaml settings of `model` (TIGER's for GRC), then `--set`, then `extra_sets`.
    With `--resume` a run of the same job that finished is read back and a killed one continues
    from its checkpoint."""
    base = "tiger" if model == "grc" else model
    job = job_for(args.dataset, base, seed, model_sets(args.set, model) + extra_sets, args.runs_dir)
    job = job.model_copy(update={"model": model, "name": f"{name}-{args.dataset}-seed{seed}"})
    folder = args.runs_dir / job.name
    if not args.resume and folder.exists():
        shutil.rmtree(folder)
    return run_or_resume_sequential_job(job, folder, args.cache_dir, RichReporter(console))


# the models each part trains, so a `--set` for any other model is refused instead of ignored
PART_MODELS = {"grc": ("tiger", "grc"), "grc_decoding": ("tiger", "grc"), "grpo": ("tiger", "grc"),
               "probe": ("tiger", "grc"), "mmq": ("sasrec", "tiger")}  # fmt: skip


def model_sets(items: list[str], model: str) -> list[str]:
    """The `--set` items of `model`'s job, with the prefix of the job's base model: GRC's job starts
    from TIGER's settings, so `tiger.` items apply to it (the same budget for both), then its own
    `grc.` items (e.g. `grc.train.patience=100`: GRC alone, TIGER's run unchanged)."""
    if model != "grc":
        return [s for s in items if s.startswith(model + ".")]
    return [s for s in items if s.startswith("tiger.")] + ["tiger." + s[len("grc."):] for s in items if s.startswith("grc.")]


def check_set_prefixes(items: list[str], part: str) -> None:
    """Refuse a `--set` item that names no model of `part` (it would change nothing, silently)."""
    models = PART_MODELS[part]
    for item in items:
        if item.split(".", 1)[0] not in models or "=" not in item:
            raise SystemExit(f"--set {item}: expected MODEL.key=value with MODEL one of {', '.join(models)} "
                             f"(the models --part {part} trains)")  # fmt: skip


def check_same_job(folder: Path, job: SequentialJob, option: str) -> None:
    """Refuse to reuse a run whose job.yaml differs from `job` (the comparison would mix settings),
    naming the differing settings."""
    differing = job_differences(job, read_job(folder))
    if differing:
        raise ValueError(f"{option}: {folder}/{JOB_FILE} differs from this benchmark's {job.model.upper()} job in "
                         f"{', '.join(differing)}; rerun without {option} or with the run's settings (--set)")  # fmt: skip


def grpo_overrides(args) -> dict[str, Any]:
    """`--grpo-set KEY=VALUE` items as settings (YAML values)."""
    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.grpo_set)}


def grpo_label(args) -> str:
    """The arm's row label; `--grpo-set phase=sft` is the control arm: the same fine-tuning run
    continuing the supervised template instead of GRPO."""
    overrides = grpo_overrides(args)
    control = overrides.pop("phase", "grpo") == "sft"
    arm = "".join(f", {k}={v}" for k, v in overrides.items())
    arm += f", {args.grpo_schedule} lr, {args.grpo_steps} steps" if args.grpo_schedule != "plateau" else ""
    stage = "SFT continued" if control else "SFT + GRPO"
    return f"grc ({stage} lr {args.grpo_lr:g}{arm}, EGRS 50%)"


def rollout_stats(history: list[dict]) -> list[dict]:
    """Per evaluation of a GRPO run: the step, lr and what its sampled groups looked like since the
    previous evaluation (GRC's `training_stats`: reward, hit shares, groups with no reward spread)."""
    return [{"step": rec["step"], "lr": rec["lr"], **{k[len("train_grpo_"):]: v for k, v in rec.items()
             if k.startswith("train_grpo_")}} for rec in history]  # fmt: skip


def grpo_finetune(args, seed: int, data, grc_folder: Path, out: list[dict]) -> Path:
    """A short GRPO fine-tuning run of the SFT model through the engine; its record appended to `out`."""
    model, config = load_sequential_run(grc_folder)
    model.config.phase = "grpo"
    overrides = grpo_overrides(args)
    validated = type(model.config).model_validate({**model.config.model_dump(), **overrides})  # e.g. credit=segment
    for key in overrides:
        setattr(model.config, key, getattr(validated, key))
    model.train()
    # GRPO's own schedule, not the SFT run's: the spec's lr from the first step (a warm-up carried
    # over from an Amazon SFT run, 500 steps, would keep 150 GRPO steps below 3e-6), cut on a plateau
    rl = SequentialTrainConfig.model_validate({
        **config.train.model_dump(), "epochs": 1, "max_steps": args.grpo_steps, "learning_rate": args.grpo_lr,
        "eval_every_steps": max(1, args.grpo_steps // 3), "time_budget_s": None, "batch_size": args.grpo_batch,
        "lr_schedule": args.grpo_schedule, "warmup_steps": 0,
    })  # fmt: skip
    rl_folder = args.runs_dir / f"grc-grpo{args.grpo_suffix}-{args.dataset}-seed{seed}"
    if rl_folder.exists():
        shutil.rmtree(rl_folder)
    rl_result = train_sequential(model, data, rl, rl_folder, RichReporter(console), semantic_ids=config_semantic_ids(grc_folder))
    out.append(record(grpo_label(args), "grc", args.dataset, seed, rl_result, rl_folder, data,
                      grpo_steps=args.grpo_steps, grpo_lr=args.grpo_lr, grpo_schedule=args.grpo_schedule,
                      grpo_set=overrides, rollouts=rollout_stats(rl_result.history)))  # fmt: skip
    save(args, out)
    return rl_folder


def part_grpo(args, seed: int, data, out: list[dict]) -> None:
    """Only the GRPO fine-tuning of the SFT run `--part grc` trained (another lr or `--grpo-set`,
    `--grpo-suffix`), and its drafts alone (what GRPO did to the beam search's ranking)."""
    rl_folder = grpo_finetune(args, seed, data, args.runs_dir / f"grc-sft-{args.dataset}-seed{seed}", out)
    label = out[-1]["model_label"].replace("EGRS 50%", "drafts only (reflect 0%)")
    out.append(evaluate_variant(args, seed, data, rl_folder, label, reflect_share=0.0))
    save(args, out)


def finished_tiger(args, seed: int) -> tuple[Path, SeqTrainResult] | None:
    """`--keep-tiger`: the finished TIGER run in --runs-dir (`tiger-DATASET-seedS`, the folder
    gr_benchmark.py writes) and its result from summary.json, when its job is the one this
    benchmark would train; None when there is no finished run. A run of other settings is refused
    with the differing fields named (GRC would be compared with another TIGER)."""
    folder = args.runs_dir / f"tiger-{args.dataset}-seed{seed}"
    result = finished_sequential_result(folder)
    if result is None:
        return None
    check_same_job(folder, job_for(args.dataset, "tiger", seed, model_sets(args.set, "tiger"), args.runs_dir),
                   "--keep-tiger")
    return folder, result


def recorded(args, out: list[dict], seed: int, label: str) -> Path | None:
    """The run folder of the record `label` already in `out` for this data set and seed (`--resume`)."""
    found = [r for r in out if (r["model_label"], r["seed"], r["dataset"]) == (label, seed, args.dataset)]
    return Path(found[0]["run"]) if found else None


def part_grc(args, seed: int, data, out: list[dict]) -> None:
    """TIGER, GRC's SFT run, its GRPO fine-tuning and two reflection budgets; each record saved as
    it ends, so `--resume` goes on from the first one missing."""
    if (tiger_folder := recorded(args, out, seed, "tiger")) is None:
        kept = finished_tiger(args, seed) if args.keep_tiger else None
        tiger_folder, tiger = kept or run_job(args, "tiger", seed, "tiger", [])
        out.append(record("tiger", "tiger", args.dataset, seed, tiger, tiger_folder, data, kept_run=kept is not None))
        save(args, out)
    sft_label = "grc (SFT template, EGRS 50%)"
    if (grc_folder := recorded(args, out, seed, sft_label)) is None:
        grc_folder, grc = run_job(args, "grc", seed, "grc-sft", [])
        same = np.array_equal(config_semantic_ids(tiger_folder).codes, config_semantic_ids(grc_folder).codes)
        out.append(record(sft_label, "grc", args.dataset, seed, grc, grc_folder, data, same_ids_as_tiger=same))
        save(args, out)
    if (rl_folder := recorded(args, out, seed, grpo_label(args))) is None:
        rl_folder = grpo_finetune(args, seed, data, grc_folder, out)
    # reflection budget: 0 (drafts only), 1.0 (every beam: no EGRS) on the GRPO model, test split
    for label, share in [("grc (SFT + GRPO), drafts only (reflect 0%)", 0.0),
                         ("grc (SFT + GRPO), reflect 100% (no EGRS)", 1.0)]:  # fmt: skip
        if recorded(args, out, seed, label) is None:
            out.append(evaluate_variant(args, seed, data, rl_folder, label, reflect_share=share))
            save(args, out)


def evaluate_variant(args, seed: int, data, folder: Path, label: str, **settings: Any) -> dict:
    """Test metrics and latency of a trained GRC run decoded with other settings (no training)."""
    model, _ = load_sequential_run(folder)
    for key, value in settings.items():
        setattr(model.config, key, value)
    metrics = evaluate_sequential(model, leave_one_out(data).test, (5, 10, 20), 512, model.config.max_len)
    return {"model": "grc", "model_label": label, "dataset": args.dataset, "seed": seed,
            **{k: metrics[k] for k in METRIC_KEYS}, "valid_ndcg@10": None, "train_s_per_epoch": None,
            "epochs": None, "steps": None, "best_epoch": None, "stopped_by": "evaluation only",
            "beam_latency_ms_per_user": latency_ms(model, data), "tokenizer": None, "run": str(folder), **settings}


def part_grc_decoding(args, seed: int, data, out: list[dict]) -> None:
    """Decoding variants of the runs `--part grc` trained (read from --runs-dir), appended to --json."""
    sft = args.runs_dir / f"grc-sft-{args.dataset}-seed{seed}"
    rl = args.runs_dir / f"grc-grpo-{args.dataset}-seed{seed}"
    for folder, name, settings in [
        (sft, "grc (SFT), drafts only (reflect 0%)", {"reflect_share": 0.0}),
        (sft, "grc (SFT), EGRS 50%, keep_drafts merge", {"reflect_share": 0.5, "merge": "keep_drafts"}),
        (rl, "grc (SFT + GRPO), EGRS 50%, keep_drafts merge", {"reflect_share": 0.5, "merge": "keep_drafts"}),
    ]:
        out.append(evaluate_variant(args, seed, data, folder, name, **settings))
        save(args, out)


PROBE_KEYS = ("reward", "hit", "draft_hit", "groups_with_a_hit", "draft_no_spread", "correction_no_spread")


def part_probe(args, seed: int, data, out: list[dict]) -> None:
    """GRC's sampled-group statistics (`training_stats`) of the seed's SFT run and every finished
    GRPO run in --runs-dir, on `--probe-users` validation users and as many training examples (a user's last
    training item given the earlier ones), with the same sampling seed for every run: does a rise
    of the reward GRPO trains on carry over to held-out users?"""
    splits = leave_one_out(data)
    examples = {"train": leave_one_out(splits.train).test.sample(args.probe_users, seed),
                "valid": splits.valid.sample(args.probe_users, seed)}  # fmt: skip
    sft = args.runs_dir / f"grc-sft-{args.dataset}-seed{seed}"
    for folder in [sft, *sorted(args.runs_dir.glob(f"grc-grpo*-{args.dataset}-seed{seed}"))]:
        if finished_sequential_result(folder) is None:  # a run still training (or killed) has no best weights yet
            console.print(f"probe: {folder} has not finished, left out")
            continue
        model, _ = load_sequential_run(folder)
        model.eval()
        for split, chosen in examples.items():
            torch.manual_seed(seed)
            for batch in chosen.batches(model.config.max_len, 256):
                model.probe_rollouts(batch)
            stats = {key.removeprefix("grpo_"): value for key, value in model.training_stats().items()}
            out.append({"model": "grc", "run": folder.name, "dataset": args.dataset, "seed": seed, "split": split,
                        "users": len(chosen), "group_size": model.config.group_size, **stats})  # fmt: skip
            save(args, out)


def part_mmq(args, seed: int, data, out: list[dict]) -> None:
    sasrec_folder = args.runs_dir / f"sasrec-{args.dataset}-seed{seed}"
    if not (args.only and (sasrec_folder / "weights.pt").is_file()):  # --only reuses a finished SASRec run
        sasrec_folder, sasrec = run_job(args, "sasrec", seed, "sasrec", [])
        out.append(record("sasrec (collaborative table)", "sasrec", args.dataset, seed, sasrec, sasrec_folder, data))
        save(args, out)
    collab = f"tiger.tokenizer.collaborative_run={sasrec_folder}"
    variants = [
        ("tiger (rq_kmeans, text)", ["tiger.tokenizer.method=rq_kmeans", "tiger.tokenizer.source=text"]),
        ("tiger (mmq, text+collaborative)", ["tiger.tokenizer.method=mmq", "tiger.tokenizer.source=text+collaborative",
                                             collab, "tiger.tokenizer.params.shared_levels=1",
                                             f"tiger.tokenizer.params.epochs={args.mmq_epochs}"]),
        ("tiger (rq_vae, text)", ["tiger.tokenizer.method=rq_vae", "tiger.tokenizer.source=text",
                                  f"tiger.tokenizer.params.epochs={args.rqvae_epochs}"]),
        ("tiger (rq_kmeans, text+collaborative concat)", ["tiger.tokenizer.method=rq_kmeans",
                                                          "tiger.tokenizer.source=text+collaborative", collab]),
        ("tiger (mmq, text+collaborative, usage term)", ["tiger.tokenizer.method=mmq",
                                                         "tiger.tokenizer.source=text+collaborative", collab,
                                                         "tiger.tokenizer.params.shared_levels=1",
                                                         f"tiger.tokenizer.params.epochs={args.mmq_epochs}",
                                                         f"tiger.tokenizer.params.usage_weight={args.mmq_usage_weight}"]),
        ("tiger (mmq without behaviour fine-tuning)", ["tiger.tokenizer.method=mmq",
                                                       "tiger.tokenizer.source=text+collaborative", collab,
                                                       "tiger.tokenizer.params.shared_levels=1",
                                                       f"tiger.tokenizer.params.epochs={args.mmq_epochs}",
                                                       "tiger.tokenizer.params.behaviour_epochs=0"]),
    ]  # fmt: skip
    if args.only:
        variants = [v for v in variants if any(o in v[0] for o in args.only)]
    reused = [r for r in (json.loads(args.reuse_tiger.read_text()) if args.reuse_tiger else [])
              if r["model_label"] == "tiger" and r["seed"] == seed and r["dataset"] == args.dataset]  # fmt: skip
    for label, sets in variants:
        if reused and label == "tiger (rq_kmeans, text)":  # the same job as the grc part's TIGER: its record
            out.append({**reused[0], "model_label": label, "reused_from": str(args.reuse_tiger)})
            continue
        name = "tiger-" + label.split("(")[1].rstrip(")").replace(", ", "-").replace("+", "").replace(" ", "_")
        folder, result = run_job(args, "tiger", seed, name, sets)
        out.append(record(label, "tiger", args.dataset, seed, result, folder, data))
        save(args, out)


def save(args, out: list[dict]) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["grc", "grc_decoding", "grpo", "mmq", "probe"], required=True)
    parser.add_argument("--probe-users", type=int, default=4096, help="probe: validation users (and training examples)")
    parser.add_argument("--dataset", default="sim-small")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[],
                        help="MODEL.key=value (tiger.* also applies to grc; grc.* to grc alone)")
    parser.add_argument("--grpo-steps", type=int, default=150)
    parser.add_argument("--grpo-lr", type=float, default=1e-5, help="the spec's range is 1e-5 to 1e-6")
    parser.add_argument("--grpo-suffix", default="", help="run-folder suffix of the GRPO run (grc-grpo<suffix>-...)")
    parser.add_argument("--grpo-set", action="append", default=[],
                        help="KEY=VALUE (YAML value): a GRC setting of the GRPO run only (e.g. credit=segment, "
                             "policy_segments=[draft,correction])")
    parser.add_argument("--grpo-schedule", choices=["plateau", "constant", "cosine"], default="plateau",
                        help="plateau: lr x0.1 after an evaluation without improvement (patience 1); constant; "
                             "cosine: annealed to the engine's min_lr at --grpo-steps")
    parser.add_argument("--grpo-batch", type=int, default=64, help="histories per GRPO step (x group_size trajectories)")
    parser.add_argument("--rqvae-epochs", type=int, default=200)
    parser.add_argument("--mmq-epochs", type=int, default=150)
    parser.add_argument("--mmq-usage-weight", type=float, default=1.0, help="the usage-term arm's usage_weight")
    parser.add_argument("--only", action="append", default=[],
                        help="mmq part: only the variants whose label contains this (repeatable)")
    parser.add_argument("--reuse-tiger", type=Path, default=None,
                        help="a --part grc JSON whose TIGER record (same settings) stands for TIGER on RQ-KMeans text IDs")
    parser.add_argument("--keep-tiger", action="store_true",
                        help="grc part: reuse the finished TIGER run of --runs-dir (e.g. gr_benchmark.py's, same job)")
    parser.add_argument("--resume", action="store_true",
                        help="grc part: keep --json's records, reuse finished runs, continue a killed one")
    parser.add_argument("--runs-dir", type=Path, default=Path("bench/out/gr-methods-runs"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/out/gr_methods.json"))
    args = parser.parse_args(argv)
    check_set_prefixes(args.set, args.part)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = resolve_sequences(args.dataset, args.cache_dir)
    keep = (args.resume or args.part == "grc_decoding") and args.json.exists()  # grc_decoding appends
    out: list[dict] = json.loads(args.json.read_text()) if keep else []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        parts = {"grc": part_grc, "grc_decoding": part_grc_decoding, "grpo": part_grpo, "mmq": part_mmq, "probe": part_probe}
        parts[args.part](args, seed, data, out)
    if args.part == "probe":
        table = Table(title=f"GRC's sampled groups (GRPO's reward): {args.dataset}")
        for col in ["run", "seed", "split", *PROBE_KEYS]:
            table.add_column(col, justify="left" if col == "run" else "right")
        for r in out:
            table.add_row(r["run"], str(r["seed"]), r["split"], *(f"{r[k]:.4f}" for k in PROBE_KEYS))
        console.print(table)
        return 0
    table = Table(title=f"leave-one-out, full ranking, test split: {args.dataset} ({args.part})")
    for col in ["model", "seed", *METRIC_KEYS, "steps", "ms/user"]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in out:
        table.add_row(r["model_label"], str(r["seed"]), *(f"{r[k]:.4f}" for k in METRIC_KEYS), str(r["steps"]),
                      f"{r['beam_latency_ms_per_user']:.2f}")  # fmt: skip
    console.print(table)
    for r in out:
        if r.get("tokenizer"):
            s = r["tokenizer"]["stats"]
            console.print(f"{r['model_label']}: usage {s['usage']}, perplexity {[round(p, 1) for p in s['perplexity']]}, "
                          f"collision rate {s['collision_rate']:.3f}, unique tuples {s['unique_tuples']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
