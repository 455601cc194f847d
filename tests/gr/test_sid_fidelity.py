"""bench/sid_fidelity.py on the tiny simulator: a SASRec run scored with its own table reproduces its
benchmark record exactly; scored with the vectors its items' semantic IDs rebuild, it reads the TIGER
run's codes (refusing another table's), the reconstruction error falls with every level and ends at
the tokenizer's own statistic, and a fresh fit with the run's settings gives the same rows; a product
quantiser (with an OPQ rotation) is scored on all its codes together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bench_modules import load_bench

pytestmark = pytest.mark.slow

TIGER = {
    "model_params": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "head_dim": 8,
                     "ffn_dim": 32, "max_len": 10, "beam_size": 10, "attention_dropout": 0.0},
    "tokenizer": {"levels": 2, "codebook_size": 8, "source": "collaborative",
                  "collaborative_run": "{runs_dir}/sasrec-{dataset}-seed{seed}"},
    "train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 64, "length_pool": 4},
}  # fmt: skip


def test_fidelity_rows(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    bench = load_bench("gr_benchmark")
    configs = tmp_path / "gr.yaml"
    configs.write_text(yaml.safe_dump({"defaults": {
        "sasrec": {"model_params": {"dim": 16, "max_len": 10}, "train": {"epochs": 2}}, "tiger": TIGER}}))
    monkeypatch.setattr(bench, "CONFIGS", configs)
    runs, out = tmp_path / "runs", tmp_path / "gr.json"
    common = ["--dataset", "sim-tiny", "--seeds", "1", "--runs-dir", str(runs), "--cache-dir", str(tiny_cache),
              "--threads", "1"]  # fmt: skip
    fidelity = load_bench("sid_fidelity")
    try:
        assert bench.main([*common, "--models", "sasrec,tiger", "--json", str(out)]) == 0
        assert bench.main([*common, "--models", "sasrec", "--first-seed", "2", "--json", str(tmp_path / "s2.json")]) == 0
        sasrec, tiger = runs / "sasrec-sim-tiny-seed1", runs / "tiger-sim-tiny-seed1"
        base = ["--dataset", "sim-tiny", "--sasrec", str(sasrec), "--cache-dir", str(tiny_cache)]
        assert fidelity.main([*base, "--tiger", str(tiger), "--json", str(tmp_path / "run.json")]) == 0
        assert fidelity.main([*base, "--levels", "2", "--codebook-size", "8", "--json", str(tmp_path / "fit.json")]) == 0
        assert fidelity.main([*base, "--levels", "2", "--codebook-size", "8", "--method", "pq", "--opq-iters", "2",
                              "--json", str(tmp_path / "pq.json")]) == 0  # fmt: skip
        with pytest.raises(SystemExit, match="not the codes of"):
            fidelity.main(["--dataset", "sim-tiny", "--sasrec", str(runs / "sasrec-sim-tiny-seed2"), "--tiger", str(tiger),
                          "--cache-dir", str(tiny_cache), "--json", str(tmp_path / "bad.json")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())[0]
    rows = json.loads((tmp_path / "run.json").read_text())["rows"]
    assert [r["scored_with"] for r in rows] == ["item table", "first 1 codes", "first 2 codes"]
    keys = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    assert {k: rows[0][k] for k in keys} == {k: record[k] for k in keys}  # its own table: the benchmark's figures
    assert {k: rows[1][k] for k in keys} != {k: rows[0][k] for k in keys}  # 8 vectors rank differently
    errors = [r["relative_error"] for r in rows]
    assert errors[0] == 0.0 and 1.0 > errors[1] > errors[2] > 0.0
    stats = json.loads((tiger / "tokenizer.json").read_text())["stats"]
    assert errors[2] == pytest.approx(stats["relative_error"], rel=1e-4)
    assert json.loads((tmp_path / "fit.json").read_text())["rows"] == rows  # same settings, same fit
    pq = json.loads((tmp_path / "pq.json").read_text())  # the product quantiser: one row, all codes
    assert [r["scored_with"] for r in pq["rows"]] == ["item table", "all 2 codes"] and pq["rows"][0] == rows[0]
    assert 0.0 < pq["rows"][1]["relative_error"] < 1.0 and "pq 2x8, OPQ 2 rounds" in pq["ids"]
    assert 0.0 <= pq["collision_rate"] <= 1.0 and len(pq["perplexity"]) == 2
