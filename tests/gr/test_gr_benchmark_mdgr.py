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
    # the decoding study against TIGER's beam search (trained here on the same kind of IDs)
    monkeypatch.setattr(bench, "CONFIGS", tiny_tiger_configs(tmp_path))
    decoding = tmp_path / "decoding.json"
    try:
        assert bench.main(["--dataset", "sim-tiny", "--models", "tiger", "--seeds", "1", "--runs-dir",
                           str(tmp_path / "runs"), "--cache-dir", str(tiny_cache), "--json", str(tmp_path / "t.json"),
                           "--threads", "1"]) == 0  # fmt: skip
        assert load_bench("mdgr_decoding").main([
            "--dataset", "sim-tiny", "--tiger", str(tmp_path / "runs" / "tiger-sim-tiny-seed1"), "--mdgr",
            str(tmp_path / "runs" / "mdgr-sim-tiny-seed1"), "--users", "100", "--schedules", "warmup,linear",
            "--digit-last", "--likelihood", "--json", str(decoding)]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(decoding.read_text())["rows"]
    fit = json.loads(decoding.read_text())["slot_fit"]
    assert set(fit) == {"tiger (teacher-forced)", "mdgr (true slots before, later masked)", "mdgr (all slots masked)"}
    for row in fit.values():  # one entry per slot; the ID's NLL is their sum
        assert len(row["slot_nll"]) == len(row["slot_top1"]) == 3 and all(0 <= a <= 1 for a in row["slot_top1"])
        assert row["id_nll"] == pytest.approx(sum(row["slot_nll"])) and min(row["slot_nll"]) > 0
    first = fit["mdgr (true slots before, later masked)"], fit["mdgr (all slots masked)"]  # slot 0: both all-masked
    assert first[0]["slot_nll"][0] == pytest.approx(first[1]["slot_nll"][0])
    assert rows[0]["model"] == "tiger" and {r["model"] for r in rows[1:]} == {"mdgr"}
    assert all(r["latency_ms_per_user"] > 0 and 0 <= r["ndcg@10"] <= r["recall@10"] <= 1 for r in rows)
    last = [(r["schedule"], r["steps"]) for r in rows if r.get("digit_last")]  # every arm but 1 pass, digit last
    assert last and all(s.endswith(", digit last") and steps > 1 for s, steps in last)
    assert hstu["model"] == "hstu" and hstu["steps_curve"] is None and hstu["beam_latency_ms_per_user"] is None
    assert mdgr["beam_latency_ms_per_user"] > 0 and mdgr["steps"] == 3
    levels = len(mdgr["tokenizer"]["vocab_sizes"])
    assert [point["steps"] for point in mdgr["steps_curve"]] == list(range(1, levels + 1))
    for point in mdgr["steps_curve"]:
        assert point["users"] == 100 and point["latency_ms_per_user"] > 0
        assert 0 <= point["ndcg@10"] <= point["recall@10"] <= point["recall@20"] <= 1


def tiny_tiger_configs(folder: Path) -> Path:
    configs = folder / "gr-tiger.yaml"
    configs.write_text(yaml.safe_dump({"defaults": {"tiger": {
        "model_params": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                         "head_dim": 8, "ffn_dim": 32, "max_len": 10, "beam_size": 10},
        "tokenizer": {"source": "attributes", "levels": 2, "codebook_size": 8},
        "train": {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 64},
    }}}))  # fmt: skip
    return configs


def test_beam_sizes_decodes_a_trained_tiger_again_at_every_beam(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    bench = load_bench("gr_benchmark")
    monkeypatch.setattr(bench, "CONFIGS", tiny_tiger_configs(tmp_path))
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--dataset", "sim-tiny", "--models", "tiger", "--seeds", "1", "--runs-dir",
                           str(tmp_path / "runs"), "--cache-dir", str(tiny_cache), "--json", str(tmp_path / "gr.json"),
                           "--threads", "1"]) == 0  # fmt: skip
        (record,) = json.loads((tmp_path / "gr.json").read_text())
        out = tmp_path / "beams.json"
        beams = load_bench("beam_sizes")
        assert beams.main(["--dataset", "sim-tiny", "--run", str(tmp_path / "runs" / "tiger-sim-tiny-seed1"),
                           "--beams", "20,30", "--cache-dir", str(tiny_cache), "--json", str(out)]) == 0  # fmt: skip
        with pytest.raises(SystemExit, match="decodes as 20"):
            beams.main(["--dataset", "sim-tiny", "--run", str(tmp_path / "runs" / "tiger-sim-tiny-seed1"),
                        "--beams", "10,20", "--cache-dir", str(tiny_cache), "--json", str(out)])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["trained_beam_size"] == 10 and [r["beam_size"] for r in result["rows"]] == [20, 30]
    at_trained = result["rows"][0]  # the run was evaluated with a beam of max(k = 20, 10)
    for key in ("recall@5", "recall@10", "recall@20", "ndcg@10"):  # which reproduces the run's figures
        assert at_trained[key] == pytest.approx(record[key], abs=1e-12)
    assert all(r["latency_ms_per_user"] > 0 and 0 <= r["ndcg@10"] <= r["recall@10"] <= 1 for r in result["rows"])
