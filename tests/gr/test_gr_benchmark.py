"""bench/gr_benchmark.py end to end on the tiny simulator: SASRec, then TIGER on the item table of
the SASRec run of the same seed (the {runs_dir}/{dataset}/{seed} placeholders), one JSON record per
model and seed with the keys the issue fixes, and --resume skipping what is done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bench_modules import load_bench

pytestmark = pytest.mark.slow

KEYS = {"model", "dataset", "seed", "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
        "train_s_per_epoch", "beam_latency_ms_per_user"}  # fmt: skip


def test_benchmark_trains_sasrec_then_tiger_on_its_item_table(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    bench = load_bench("gr_benchmark")
    configs = tmp_path / "gr.yaml"
    configs.write_text(yaml.safe_dump({
        "defaults": {
            "sasrec": {"model_params": {"dim": 16, "max_len": 10}, "train": {"epochs": 1}},
            "tiger": {
                "model_params": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                                 "head_dim": 8, "ffn_dim": 32, "max_len": 10, "beam_size": 10,
                                 "attention_dropout": 0.0},
                "tokenizer": {"levels": 2, "codebook_size": 8},
                "train": {"epochs": 1, "max_steps_per_epoch": 5, "batch_size": 64, "length_pool": 4},
            },
        },
        "sim-tiny": {"tiger": {"tokenizer": {"source": "collaborative",
                                             "collaborative_run": "{runs_dir}/sasrec-{dataset}-seed{seed}"}}},
    }))  # fmt: skip
    monkeypatch.setattr(bench, "CONFIGS", configs)
    out, runs = tmp_path / "gr.json", tmp_path / "runs"
    args = ["--dataset", "sim-tiny", "--models", "sasrec,tiger", "--seeds", "1", "--first-seed", "7",
            "--runs-dir", str(runs), "--cache-dir", str(tiny_cache), "--json", str(out), "--threads", "1"]
    try:
        assert bench.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    records = json.loads(out.read_text())
    assert [(r["model"], r["seed"]) for r in records] == [("sasrec", 7), ("tiger", 7)]
    for record in records:
        assert KEYS <= set(record) and 0 <= record["ndcg@10"] <= record["recall@10"] <= record["recall@20"] <= 1
        assert record["train_s_per_epoch"] > 0
    sasrec, tiger = records
    assert sasrec["beam_latency_ms_per_user"] is None and tiger["beam_latency_ms_per_user"] > 0
    assert tiger["model_label"] == "tiger (collaborative IDs)" and tiger["tokenizer"]["source"] == "collaborative"
    assert tiger["config"]["tokenizer"]["collaborative_run"] == str(runs / "sasrec-sim-tiny-seed7")
    assert tiger["config"]["train"]["length_pool"] == 4
    # killed while TIGER's record was evaluated: --resume reads the finished run back, never retrains it
    weights = runs / "tiger-sim-tiny-seed7" / "weights.pt"
    trained_at = weights.stat().st_mtime_ns
    out.write_text(json.dumps(records[:1]))
    assert bench.main([*args, "--resume"]) == 0
    (again,) = json.loads(out.read_text())[1:]
    assert weights.stat().st_mtime_ns == trained_at
    metrics = [k for k in KEYS if k.startswith(("recall", "ndcg"))] + ["valid_ndcg@10", "steps", "stopped_by"]
    assert {k: again[k] for k in metrics} == {k: tiger[k] for k in metrics} and again["train_s_per_epoch"] > 0
    out.write_text(json.dumps(records))
    # --resume keeps the records and trains nothing again
    (runs / "tiger-sim-tiny-seed7" / "weights.pt").unlink()
    assert bench.main([*args, "--resume"]) == 0
    assert json.loads(out.read_text()) == records and not (runs / "tiger-sim-tiny-seed7" / "weights.pt").exists()
    # an ablation arm: TIGER alone in its own runs folder, on the same SASRec table, with its own row label
    arm_out, arm_runs = tmp_path / "arm.json", tmp_path / "arm-runs"
    arm = ["--dataset", "sim-tiny", "--models", "tiger", "--seeds", "1", "--first-seed", "7", "--threads", "1",
           "--runs-dir", str(arm_runs), "--cache-dir", str(tiny_cache), "--json", str(arm_out), "--label", "d32",
           "--set", f"tiger.tokenizer.collaborative_run={runs / 'sasrec-sim-tiny-seed7'}",
           "--set", "tiger.model_params.d_model=32"]  # fmt: skip
    try:
        assert bench.main(arm) == 0
    finally:
        torch.set_num_threads(threads)
    (record,) = json.loads(arm_out.read_text())
    assert record["model_label"] == "tiger (collaborative IDs) [d32]"
    assert record["config"]["model_params"]["d_model"] == 32 and (arm_runs / "tiger-sim-tiny-seed7").is_dir()
