"""Sequential jobs end to end on the tiny simulator: the CLI's train --task sequential and
recommend, semantic IDs built from item text, and runs that reload exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agenticrs.cli.main import app
from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.train import load_sequential_run
from agenticrs.gr.workflow import (
    SequentialJob,
    TokenizerSettings,
    build_semantic_ids,
    embedding_source,
    recommend_for_user,
    run_sequential_job,
)

pytestmark = pytest.mark.slow

TINY_TIGER = {"d_model": 32, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "head_dim": 16,
              "ffn_dim": 64, "max_len": 10, "beam_size": 10}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_attribute_ids_make_unique_semantic_ids_and_are_saved(tiny_cache: Path, tmp_path: Path) -> None:
    data = resolve_sequences("sim-tiny", tiny_cache)
    settings = TokenizerSettings(source="attributes", levels=2, codebook_size=8)
    sids, stats, source = build_semantic_ids(data, settings, tiny_cache, tmp_path)
    assert source == "attributes" and sids.num_items == data.num_items
    tuples = {tuple(row) for row in sids.codes[1:].tolist()}
    assert len(tuples) == data.num_items  # the collision digit makes every item unique
    assert len(stats.usage) == 2 and 0 < stats.collision_rate <= 1
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["vocab_sizes"] == list(sids.vocab_sizes) and (tmp_path / "tokenizer.pt").exists()


def test_auto_source_prefers_text_then_attributes(tiny_cache: Path) -> None:
    data = resolve_sequences("sim-tiny", tiny_cache)
    assert embedding_source(data, TokenizerSettings()) == "text"
    no_text = type(data)(**{**data.__dict__, "item_text": {}})
    assert embedding_source(no_text, TokenizerSettings()) == "attributes"
    bare = type(data)(**{**data.__dict__, "item_text": {}, "attributes": None, "attribute_offsets": None})
    with pytest.raises(ValueError, match="collaborative"):
        embedding_source(bare, TokenizerSettings())


def test_tiger_job_trains_reloads_and_recommends(tiny_cache: Path, tmp_path: Path) -> None:
    job = SequentialJob(
        dataset="sim-tiny", model="tiger", model_params=TINY_TIGER,
        train={"epochs": 1, "max_steps_per_epoch": 20, "batch_size": 256, "seed": 3},
        tokenizer={"source": "attributes", "levels": 2, "codebook_size": 8},
    )
    folder, result = run_sequential_job(job, tmp_path, tiny_cache)
    assert set(result.test) >= {"recall@10", "ndcg@10"} and (folder / "semantic_ids.npz").exists()
    _, config = load_sequential_run(folder)
    assert config.model == "tiger"
    items, texts, history = recommend_for_user(folder, user=int(resolve_sequences("sim-tiny", tiny_cache).users[0]),
                                               k=5, cache_dir=tiny_cache)
    assert len(items) == len(set(items)) == 5 and all(1 <= i <= config.num_items for i in items)
    assert all(texts) and len(history) >= 3
    # the reloaded model ranks exactly like the one that was trained
    again, _, _ = recommend_for_user(folder, user=int(resolve_sequences("sim-tiny", tiny_cache).users[0]),
                                     k=5, cache_dir=tiny_cache)
    assert again == items


def test_cli_sequential_train_and_recommend(tiny_cache: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, [
        "train", "--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--set", "train.epochs=2",
        "--set", "model_params.dim=16", "--runs-dir", str(tmp_path), "--cache-dir", str(tiny_cache), "-q",
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "recall@10" in result.output and "s per training epoch" in result.output
    run = next(tmp_path.iterdir())
    data = resolve_sequences("sim-tiny", tiny_cache)
    user = int(leave_one_out(data).test.users[0])
    result = runner.invoke(app, ["recommend", "--run", str(run), "--user", str(user), "--k", "3",
                                 "--cache-dir", str(tiny_cache)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "top 3" in result.output
    result = runner.invoke(app, ["recommend", "--run", str(run), "--user", "999999", "--cache-dir", str(tiny_cache)])
    assert result.exit_code == 2 and "not in data set" in result.output
    result = runner.invoke(app, ["train", "--task", "ranking", "-d", "sim-tiny", "-m", "sasrec"])
    assert result.exit_code == 2 and "unknown task" in result.output
    assert np.isfinite(json.loads((run / "summary.json").read_text())["test"]["ndcg@10"])


TINY_GRC = {**TINY_TIGER, "dropout": 0.0, "group_size": 2, "beam_size": 8}


def test_cli_starts_grc_grpo_from_its_sft_run(tiny_cache: Path, tmp_path: Path) -> None:
    """GRC's two phases from the command line: SFT, then GRPO with --init-from the SFT run."""
    runner = CliRunner()
    common = ["--runs-dir", str(tmp_path), "--cache-dir", str(tiny_cache), "-q"]
    params = [arg for key, value in TINY_GRC.items() for arg in ("--set", f"model_params.{key}={value}")]
    sft = runner.invoke(app, [
        "train", "--task", "sequential", "-d", "sim-tiny", "-m", "grc", *params, "--set", "train.epochs=1",
        "--set", "train.max_steps_per_epoch=6", "--set", "train.valid_users=64", "--set", "tokenizer.source=attributes",
        "--set", "tokenizer.levels=2", "--set", "tokenizer.codebook_size=8", "--set", "name=sft", *common,
    ], env={"COLUMNS": "200"})  # fmt: skip
    assert sft.exit_code == 0, sft.output
    sft_run = next(tmp_path.glob("sft-*"))
    grpo = runner.invoke(app, [
        "train", "--task", "sequential", "-d", "sim-tiny", "-m", "grc", "--init-from", str(sft_run),
        "--set", "model_params.phase=grpo", "--set", "train.epochs=1", "--set", "train.max_steps=2",
        "--set", "train.eval_every_steps=1", "--set", "train.eval_at_start=true", "--set", "train.valid_users=64",
        "--set", "train.learning_rate=1e-4", "--set", "name=grpo", *common,
    ], env={"COLUMNS": "200"})  # fmt: skip
    assert grpo.exit_code == 0, grpo.output
    grpo_run = next(tmp_path.glob("grpo-*"))
    loaded, config = load_sequential_run(grpo_run)
    assert config.model == "grc" and loaded.config.phase == "grpo" and loaded.config.d_model == TINY_GRC["d_model"]
    with np.load(sft_run / "semantic_ids.npz") as a, np.load(grpo_run / "semantic_ids.npz") as b:
        assert np.array_equal(a["codes"], b["codes"])  # the SFT run's IDs, no new tokenizer fit
    # the GRPO run starts from the SFT weights: its evaluation at step 0 is the SFT run's best
    start = json.loads((grpo_run / "metrics.jsonl").read_text().splitlines()[0])
    sft_valid = json.loads((sft_run / "summary.json").read_text())["valid"]
    assert start["step"] == 0 and start["valid_recall@10"] == pytest.approx(sft_valid["recall@10"])
    bad = runner.invoke(app, ["train", "--task", "sequential", "-d", "sim-tiny", "-m", "sasrec", "--init-from",
                              str(sft_run), *common])  # fmt: skip
    assert bad.exit_code == 2 and "same model and catalogue" in bad.output
    bad = runner.invoke(app, ["train", "-d", "sim-tiny", "-m", "deepfm", "--init-from", str(sft_run), *common])
    assert bad.exit_code == 2 and "--init-from starts a sequential run" in bad.output
