"""bench/gr_methods_benchmark.py's GRC parts end to end on the tiny simulator: TIGER, GRC's SFT
run, its GRPO fine-tuning with decoding variants, then `--part grpo` with `--grpo-set` overrides
(a GRPO arm of the same SFT run) recorded with its drafts-only evaluation, and `--keep-tiger`
(GRC against the finished TIGER run, not retrained; refused for a run of other settings), and
`--resume` after a kill (records kept, a finished run read back, not retrained; nothing recorded twice)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from bench_modules import load_bench

pytestmark = pytest.mark.slow


def test_grc_part_then_a_grpo_arm_with_overrides(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    threads = torch.get_num_threads()
    bench = load_bench("gr_methods_benchmark")
    configs = tmp_path / "gr.yaml"
    configs.write_text(yaml.safe_dump({"defaults": {"tiger": {
        "model_params": {"d_model": 16, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                         "head_dim": 8, "ffn_dim": 32, "max_len": 10, "beam_size": 10},
        "tokenizer": {"levels": 2, "codebook_size": 8},
        "train": {"epochs": 1, "max_steps_per_epoch": 4, "batch_size": 64, "valid_users": 64,
                  "lr_schedule": "cosine", "warmup_steps": 500},  # as on Amazon: GRPO must not inherit it
    }}}))  # fmt: skip
    monkeypatch.setattr(bench.sys.modules["gr_benchmark"], "CONFIGS", configs)
    out, runs = tmp_path / "grc.json", tmp_path / "runs"
    common = ["--dataset", "sim-tiny", "--seeds", "1", "--runs-dir", str(runs), "--cache-dir", str(tiny_cache),
              "--threads", "1", "--grpo-steps", "2", "--grpo-batch", "8"]  # fmt: skip
    try:
        assert bench.main(["--part", "grc", *common, "--json", str(out)]) == 0
        rl_train = yaml.safe_load((runs / "grc-grpo-sim-tiny-seed1" / "config.yaml").read_text())["train"]
        assert (rl_train["lr_schedule"], rl_train["warmup_steps"], rl_train["learning_rate"]) == ("plateau", 0, 1e-5)
        arm = tmp_path / "arm.json"
        assert bench.main(["--part", "grpo", *common, "--grpo-set", "credit=segment", "--grpo-set", "rl_dropout=false",
                           "--grpo-set", "policy_segments=[draft, correction]",
                           "--grpo-suffix=-segment", "--grpo-schedule", "constant", "--json", str(arm)]) == 0  # fmt: skip
        probe = tmp_path / "probe.json"  # GRPO's sampled groups of every finished GRC run, train and valid
        (runs / "grc-grpo-unfinished-sim-tiny-seed1").mkdir()  # a run still training: left out
        assert bench.main(["--part", "probe", *common, "--probe-users", "40", "--json", str(probe)]) == 0
        probed = json.loads(probe.read_text())
        assert [(r["run"], r["split"]) for r in probed] == [
            (run, split) for run in ("grc-sft-sim-tiny-seed1", "grc-grpo-segment-sim-tiny-seed1", "grc-grpo-sim-tiny-seed1")
            for split in ("train", "valid")]  # fmt: skip
        assert all(r["users"] == 40 and 0 <= r["hit"] <= r["groups_with_a_hit"] <= 1 for r in probed)
        assert bench.main(["--part", "probe", *common, "--probe-users", "40", "--json", str(probe)]) == 0
        assert json.loads(probe.read_text()) == probed  # the same samples for every run, and again
        kept = tmp_path / "kept.json"  # GRC again against the TIGER run already there (not retrained)
        weights = (runs / "tiger-sim-tiny-seed1" / "weights.pt").stat().st_mtime_ns
        assert bench.main(["--part", "grc", "--keep-tiger", *common, "--json", str(kept)]) == 0
        assert (runs / "tiger-sim-tiny-seed1" / "weights.pt").stat().st_mtime_ns == weights
        resumed = tmp_path / "resumed.json"  # killed after TIGER's record: SFT finished, GRPO not recorded
        resumed.write_text(json.dumps(json.loads(out.read_text())[:1]))
        sft_weights = (runs / "grc-sft-sim-tiny-seed1" / "weights.pt").stat().st_mtime_ns
        assert bench.main(["--part", "grc", "--resume", *common, "--json", str(resumed)]) == 0
        assert (runs / "tiger-sim-tiny-seed1" / "weights.pt").stat().st_mtime_ns == weights
        assert (runs / "grc-sft-sim-tiny-seed1" / "weights.pt").stat().st_mtime_ns == sft_weights  # read back
        assert bench.main(["--part", "grc", "--resume", *common, "--json", str(resumed)]) == 0  # all recorded: no-op
        with pytest.raises(ValueError, match=r"differs from this benchmark's TIGER job in model_params.ffn_dim;"):
            bench.main(["--part", "grc", "--keep-tiger", *common, "--set", "tiger.model_params.ffn_dim=64",
                        "--json", str(tmp_path / "refused.json")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    first, again = json.loads(out.read_text())[0], json.loads(kept.read_text())[0]
    assert again["kept_run"] and not first["kept_run"]
    assert {k: again[k] for k in ("recall@10", "ndcg@10", "steps", "stopped_by", "epochs")} == \
        {k: first[k] for k in ("recall@10", "ndcg@10", "steps", "stopped_by", "epochs")}  # fmt: skip
    assert again["train_s_per_epoch"] == pytest.approx(first["train_s_per_epoch"])
    original, again = json.loads(out.read_text()), json.loads(resumed.read_text())
    assert [r["model_label"] for r in again] == [r["model_label"] for r in original]
    assert again[0] == original[0]
    same = ("recall@10", "ndcg@10", "steps", "stopped_by", "epochs", "same_ids_as_tiger")
    assert {k: again[1][k] for k in same} == {k: original[1][k] for k in same}
    labels = [r["model_label"] for r in json.loads(out.read_text())]
    assert labels[:2] == ["tiger", "grc (SFT template, EGRS 50%)"] and len(labels) == 5
    grpo, drafts = json.loads(arm.read_text())
    assert grpo["model_label"] == ("grc (SFT + GRPO lr 1e-05, credit=segment, rl_dropout=False, "
                                   "policy_segments=['draft', 'correction'], constant lr, 2 steps, EGRS 50%)")
    assert grpo["grpo_schedule"] == "constant" and [r["lr"] for r in grpo["rollouts"]] == [1e-5, 1e-5]
    assert {"reward", "hit", "draft_no_spread", "correction_no_spread"} <= set(grpo["rollouts"][-1])
    assert grpo["steps"] == 2 and grpo["grpo_set"] == {"credit": "segment", "rl_dropout": False,
                                                   "policy_segments": ["draft", "correction"]}
    assert "constant lr, 2 steps, drafts only (reflect 0%)" in drafts["model_label"] and drafts["reflect_share"] == 0.0
    cosine = bench.grpo_label(SimpleNamespace(grpo_lr=1e-4, grpo_set=["group=beam"],
                                          grpo_schedule="cosine", grpo_steps=600))  # fmt: skip
    assert cosine == "grc (SFT + GRPO lr 0.0001, group=beam, cosine lr, 600 steps, EGRS 50%)"
    control = bench.grpo_label(SimpleNamespace(grpo_lr=1e-5, grpo_set=["phase=sft"], grpo_schedule="constant",
                                               grpo_steps=600))  # fmt: skip
    assert control == "grc (SFT continued lr 1e-05, constant lr, 600 steps, EGRS 50%)"
    saved = yaml.safe_load((runs / "grc-grpo-segment-sim-tiny-seed1" / "config.yaml").read_text())
    assert saved["train"]["lr_schedule"] == "constant"
    assert saved["model_params"]["credit"] == "segment" and saved["model_params"]["rl_dropout"] is False
    assert saved["model_params"]["policy_segments"] == ["draft", "correction"]
    for record in (grpo, drafts):
        assert 0 <= record["ndcg@10"] <= record["recall@10"] <= 1


def test_a_grc_set_reaches_the_grc_job_only_and_an_unknown_model_is_refused() -> None:
    """`grc.train.patience=100` once changed nothing, silently: GRC's job is built from TIGER's
    settings and only `tiger.` items were read. Now `grc.` items reach GRC's job (after the shared
    `tiger.` ones) and not TIGER's, and a `--set` naming no model of the part stops the benchmark."""
    bench = load_bench("gr_methods_benchmark")
    items = ["tiger.train.valid_users=77", "grc.train.patience=100", "grc.train.valid_users=99"]
    assert bench.model_sets(items, "tiger") == ["tiger.train.valid_users=77"]
    assert bench.model_sets(items, "grc") == ["tiger.train.valid_users=77", "tiger.train.patience=100",
                                              "tiger.train.valid_users=99"]  # fmt: skip
    grc = bench.job_for("sim-tiny", "tiger", 1, bench.model_sets(items, "grc"))
    tiger = bench.job_for("sim-tiny", "tiger", 1, bench.model_sets(items, "tiger"))
    assert (grc.train.patience, grc.train.valid_users) == (100, 99)  # GRC's own item after the shared one
    assert tiger.train.valid_users == 77 and tiger.train.patience != 100
    with pytest.raises(SystemExit, match=r"--set gcr\.train\.patience=100: expected MODEL\.key=value with MODEL one of tiger, grc"):
        bench.main(["--part", "grc", "--set", "gcr.train.patience=100"])
    with pytest.raises(SystemExit, match="one of sasrec, tiger"):
        bench.main(["--part", "mmq", "--set", "grc.train.epochs=2"])
