"""bench/gr_benchmark.py with HSTU and MDGR on the tiny simulator: both selectable, MDGR's record
carries its decoding latency and a quality-steps curve over 1..L passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bench_modules import load_bench

pytestmark = pytest.mark.slow



def test_hstu_and_mdgr_records_with_a_steps_curve(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    bench = load_bench("gr_benchmark")
    configs = tmp_path / "gr.yaml"
    configs.write_text(yaml.safe_dump({"defaults": {
        "hstu": {"model_params": {"dim": 16, "max_len": 10}, "train": {"epochs": 1}},
        "mdgr": {
            "model_params": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                             "head_dim": 8, "ffn_dim": 32, "max_len": 10, "beam_size": 10},
            "tokenizer": {"source": "attributes", "levels": 2, "codebook_size": 8},
            "train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 64},
        },
    }}))  # fmt: skip
    monkeypatch.setattr(bench, "CONFIGS", configs)
    out = tmp_path / "gr.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--dataset", "sim-tiny", "--models", "hstu,mdgr", "--seeds", "1", "--runs-dir",
                           str(tmp_path / "runs"), "--cache-dir", str(tiny_cache), "--json", str(out),
                           "--threads", "1", "--curve-users", "100"]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    hstu, mdgr = json.loads(out.read_text())
    assert hstu["model"] == "hstu" and hstu["steps_curve"] is None and hstu["beam_latency_ms_per_user"] is None
    assert mdgr["beam_latency_ms_per_user"] > 0 and mdgr["steps"] == 3
    levels = len(mdgr["tokenizer"]["vocab_sizes"])
    assert [point["steps"] for point in mdgr["steps_curve"]] == list(range(1, levels + 1))
    for point in mdgr["steps_curve"]:
        assert point["users"] == 100 and point["latency_ms_per_user"] > 0
        assert 0 <= point["ndcg@10"] <= point["recall@10"] <= point["recall@20"] <= 1
