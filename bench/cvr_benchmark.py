"""Conversion benchmarks. `--part streaming`: delayed feedback on the streaming protocol
(`agenticrs.train.streaming`): every method x seed on one simulator preset, plus the ceiling row
(the simulator's true probabilities on the same windows).

    python bench/cvr_benchmark.py --part streaming --data sim-small --seeds 3 --out bench/results/cvr_streaming.json

Writes one record per method x seed (overall and per-segment metrics, `stopped_by`, settings,
time per window, peak memory, and the extra samples each method's duplicates cost) and prints a
table of the means over seeds. Other parts (pre-promotion, CM-DCM) join as further `--part`s.
`--exclude` leaves feature columns out; three diagnostic samplers registered here only
(`oracle_at_conversion`, `es_unweighted`, `es_true_weights`) separate ES-DFM's timing from its
fake negatives, from its weights and from its weight model's errors (docs/conversion.md, "Where
ES-DFM loses" and "Why ES-DFM lost").

    python bench/cvr_benchmark.py --part streaming --data sim-delays --seeds 3 --model-params '{"batch_norm": false}' \
        --out bench/results/cvr_streaming_delays.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agenticrs.train.streaming import METHODS as STREAM_METHODS
from agenticrs.train.streaming import StreamConfig, StreamInput, StreamMethod, load_clicks, run_stream
from agenticrs.train.streaming.methods import ESDFM, ClickTimes, Samples
from agenticrs.train.streaming.protocol import stream_train_defaults

METHODS = ["vanilla", "oracle", "fnw", "fnc", "dfm", "es_dfm"]


@STREAM_METHODS.register("oracle_at_conversion")
class OracleAtConversion(StreamMethod):
    """A diagnostic, not a method of the literature (this benchmark only): every click with its
    eventual label, a non-converting one as a negative at click + c, a converting one as a positive
    at its conversion time. ES-DFM's timing of positives without its fake negatives or weights:
    what the time shift of the positives alone costs on a stream."""

    name = "oracle_at_conversion"

    def samples(self, log: ClickTimes) -> Samples:
        converted = ~np.isnan(log.conversion_ts)
        ts = np.where(converted, np.maximum(log.conversion_ts, log.click_ts + log.settings.elapsed_cut_s),
                      log.click_ts + log.settings.elapsed_cut_s)  # fmt: skip
        return Samples(row=log.rows, ts=ts.astype(np.float64), labels=converted.astype(np.float32)[:, None])


@STREAM_METHODS.register("es_unweighted")
class ESUnweighted(ESDFM):
    """A diagnostic (this benchmark only): ES-DFM's elapsed-time samples with unit weights and
    plain BCE (the ES-DFM paper's "Vanilla" baseline, c as ES-DFM's): what the weight model adds."""

    name = "es_unweighted"

    def samples(self, log: ClickTimes) -> Samples:
        n = len(log.click_ts)
        return super().samples(replace(log, f_dp=np.zeros(n), f_tn=np.ones(n)))


TRUE_PROBABILITY: dict[str, np.ndarray] = {}  # the log being streamed: its clicks' true p (the simulator's)


@STREAM_METHODS.register("es_true_weights")
class ESTrueWeights(ESDFM):
    """A diagnostic (this benchmark only, simulator data): ES-DFM with the weights its weight model
    should learn, from the world's true conversion probability p(x) of each click: f_dp = p (1 - s),
    f_tn = (1 - p) / (1 - p + f_dp), with s the log's share of conversions within c (the delay's
    dependence on x left out). What ES-DFM gives when its weights are (nearly) right."""

    name = "es_true_weights"

    def samples(self, log: ClickTimes) -> Samples:
        if "p" not in TRUE_PROBABILITY:
            raise ValueError("es_true_weights needs the simulator's true probabilities (a sim-<preset> data set)")
        p = TRUE_PROBABILITY["p"]
        delay = log.conversion_ts - log.click_ts
        within = float(np.mean(delay[~np.isnan(delay)] <= log.settings.elapsed_cut_s))
        f_dp = p * (1.0 - within)
        return super().samples(replace(log, f_dp=f_dp, f_tn=(1.0 - p) / (1.0 - p + f_dp)))


COLUMNS = ["auc", "logloss", "ece", "calibration"]


def streaming(args: argparse.Namespace) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    ceiling: dict[str, Any] | None = None
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        data = args.data.format(seed=seed)  # a file per seed: '...s{seed}.parquet'
        source = StreamInput(source=data, sim_seed=seed, exclude=args.exclude) if data.startswith("sim-") else StreamInput(
            source=data, segment=args.segment, oracle_prob=args.oracle_prob, exclude=args.exclude)  # fmt: skip
        log = load_clicks(source, args.pretrain_days)
        TRUE_PROBABILITY.clear()
        if log.oracle_prob is not None:
            TRUE_PROBABILITY["p"] = np.asarray(log.oracle_prob, dtype=np.float64)
        for name in args.methods:
            train = stream_train_defaults().model_copy(update={"seed": seed, "learning_rate": args.lr, "num_threads": 1})
            config = StreamConfig(input=source, method=name, window_s=args.window_s, pretrain_epochs=args.pretrain_epochs,
                                  pretrain_days=args.pretrain_days, elapsed_cut_s=args.c_s, weight_cap=args.weight_cap,
                                  weight_model_epochs=args.weight_model_epochs, dfm_late=args.dfm_late,
                                  stream_learning_rate=args.stream_lr, stream_batch_size=args.stream_batch_size,
                                  weight_model_holdout=args.weight_model_holdout,
                                  max_windows=args.max_windows, model_params=args.model_params, train=train)  # fmt: skip
            started = time.perf_counter()
            summary = run_stream(config, log=log)
            record = {
                "method": name, "seed": seed, "data": data, "stopped_by": summary["stopped_by"],
                "overall": summary["overall"], "segments": summary["segments"], "windows": summary["windows"],
                "samples": summary["samples"], "cost": summary["cost"], "settings": summary["settings"],
                "seconds": time.perf_counter() - started,
            }  # fmt: skip
            records.append(record)
            if seed == args.first_seed:
                ceiling = summary["ceiling"]
            shown = "  ".join(f"{k} {summary['overall'][k]:.4f}" for k in COLUMNS)
            print(f"seed {seed} {name:8s} {shown}  ({record['seconds']:.0f} s)", flush=True)
            if args.out:
                _write(args.out, records, ceiling, args)
    return {"records": records, "ceiling": ceiling}


def _write(out: Path, records: list[dict[str, Any]], ceiling: dict[str, Any] | None, args: argparse.Namespace) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    import sys

    payload = {"part": "streaming", "data": args.data, "seeds": args.seeds, "first_seed": args.first_seed,
               "command": " ".join(["python", *sys.argv]), "records": records, "ceiling": ceiling,
               "table": table(records, ceiling)}  # fmt: skip
    out.write_text(json.dumps(payload, indent=2, default=float) + "\n")


def merge(paths: list[Path], out: Path | None) -> None:
    """One result file from several runs of the same settings on disjoint seeds (e.g. a seed run as
    an ablation plus the others); the ceiling row is the first file's (its first seed's)."""
    payloads = [json.loads(p.read_text()) for p in paths]
    records = [r for p in payloads for r in p["records"]]
    seeds = sorted({r["seed"] for r in records})
    rows = table(records, payloads[0]["ceiling"])
    merged = {"part": "streaming", "data": payloads[0]["data"], "seeds": len(seeds), "seed_list": seeds,
              "command": " ; ".join(p.get("command", "") for p in payloads), "merged_from": [str(p) for p in paths],
              "records": records, "ceiling": payloads[0]["ceiling"], "table": rows}  # fmt: skip
    merged["es_dfm_paired"] = es_dfm_paired(records)
    if out:
        out.write_text(json.dumps(merged, indent=2, default=float) + "\n")
    print(render(rows))
    for line in merged["es_dfm_paired"]["lines"]:
        print(line)


def es_dfm_paired(records: list[dict[str, Any]]) -> dict[str, Any]:
    """ES-DFM against every other method, paired over the seeds they share (95 % t interval, the
    method cards' rule), on AUC (higher) and log loss (lower), and the share of the vanilla ->
    oracle AUC gap it closes on each seed."""
    from agenticrs.agents.paper.verdict import paired_effect

    by = {(r["method"], r["seed"]): r["overall"] for r in records}
    methods = list(dict.fromkeys(r["method"] for r in records))
    out: dict[str, Any] = {"against": {}, "gap_closed_per_seed": {}, "lines": []}
    if "es_dfm" not in methods:
        return out
    for other in [m for m in methods if m != "es_dfm"]:
        seeds = sorted(s for (m, s) in by if m == other and ("es_dfm", s) in by)
        if not seeds:
            continue
        row = {}
        for metric, direction in (("auc", "higher"), ("logloss", "lower")):
            effect = paired_effect([by[("es_dfm", s)][metric] for s in seeds], [by[(other, s)][metric] for s in seeds],
                                   direction=direction)  # fmt: skip
            row[metric] = effect.as_dict()
            out["lines"].append(f"es_dfm vs {other:8s} {metric:8s} {effect.interval()} {effect.verdict}")
        out["against"][other] = row
    for s in sorted(s for (m, s) in by if m == "es_dfm"):
        if ("vanilla", s) in by and ("oracle", s) in by:
            gap = by[("oracle", s)]["auc"] - by[("vanilla", s)]["auc"]
            closed = (by[("es_dfm", s)]["auc"] - by[("vanilla", s)]["auc"]) / gap if gap > 0 else float("nan")
            out["gap_closed_per_seed"][str(s)] = closed
            out["lines"].append(f"seed {s}: vanilla -> oracle gap {gap:+.4f}, ES-DFM closes {closed:+.0%}")
    return out


def table(records: list[dict[str, Any]], ceiling: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Mean (and std over seeds) of every method's overall metrics, plus the ceiling row."""
    rows = []
    for name in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == name]
        row: dict[str, Any] = {"method": name, "seeds": len(mine)}
        for column in COLUMNS:
            values = np.array([r["overall"][column] for r in mine], dtype=float)
            row[column], row[f"{column}_std"] = float(values.mean()), float(values.std())
        for segment in ("ordinary", "pre_promo", "promo"):
            values = [r["segments"][segment]["auc"] for r in mine if segment in r["segments"]]
            if values:
                row[f"{segment}/auc"] = float(np.mean(values))
        row["extra_samples"] = float(np.mean([r["samples"]["extra_samples"] for r in mine]))
        row["seconds_per_window"] = float(np.mean([r["cost"]["stream_seconds_per_window"] for r in mine]))
        rows.append(row)
    if ceiling is not None:
        row = {"method": "ceiling (true p)", "seeds": 1, **{c: ceiling["overall"][c] for c in COLUMNS}}
        row.update({f"{s}/auc": v["auc"] for s, v in ceiling["segments"].items()})
        rows.append(row)
    by = {r["method"]: r for r in rows}
    if {"vanilla", "oracle", "es_dfm"} <= set(by):
        gap = by["oracle"]["auc"] - by["vanilla"]["auc"]
        closed = (by["es_dfm"]["auc"] - by["vanilla"]["auc"]) / gap if gap > 0 else float("nan")
        by["es_dfm"]["auc_gap_closed"] = closed
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    head = (f"{'method':18s} {'AUC':>7s} {'logloss':>8s} {'ECE':>7s} {'pred/obs':>8s} {'ord AUC':>8s} {'pre AUC':>8s} "
            f"{'promo AUC':>9s} {'extra':>7s}")
    lines = [head]
    for r in rows:
        get = lambda k, r=r: r.get(k, float("nan"))  # noqa: E731
        lines.append(f"{r['method']:18s} {get('auc'):7.4f} {get('logloss'):8.4f} {get('ece'):7.4f} {get('calibration'):8.3f} "
                     f"{get('ordinary/auc'):8.4f} {get('pre_promo/auc'):8.4f} {get('promo/auc'):9.4f} "
                     f"{r.get('extra_samples', 0):7.0f}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["streaming"], default="streaming")
    parser.add_argument("--data", default="sim-small", help="sim-<preset> or a file ('{seed}' is replaced by the seed)")
    parser.add_argument("--segment", default=None, help="a file's segment column")
    parser.add_argument("--oracle-prob", default=None, help="a file's column of true probabilities")
    parser.add_argument("--exclude", type=lambda v: [c for c in v.split(",") if c], default=[],
                        help="feature columns left out, comma-separated (e.g. hist_item_id,hist_cate_l2,hist_type)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--window-s", type=float, default=3600.0)
    parser.add_argument("--pretrain-days", type=float, default=None)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--c-s", type=float, default=900.0, help="ES-DFM's elapsed time c (seconds)")
    parser.add_argument("--weight-cap", type=float, default=None)
    parser.add_argument("--weight-model-epochs", type=int, default=None, help="ES-DFM weight model (default: pretrain epochs)")
    parser.add_argument("--dfm-late", choices=["retract", "drop"], default="retract")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--stream-batch-size", type=int, default=None,
                        help="the stream's batch size (default: the pre-training batch, 1024)")
    parser.add_argument("--weight-model-holdout", type=float, default=0.1,
                        help="ES-DFM: the latest share of pre-training clicks held out for the weight model's epoch "
                        "(0: the spec's fixed epochs)")
    parser.add_argument("--stream-lr", type=float, default=None, help="the stream's learning rate (default: --lr)")
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model-params", type=json.loads, default={},
                        help='backbone settings over ES-DFM\'s DNN, JSON, e.g. \'{"hidden_units": [64], "batch_norm": false}\'')
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="no runs: merge the records of these result files (one data set, disjoint seeds) into --out")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    torch.set_num_threads(args.threads)
    result = streaming(args)
    print(render(table(result["records"], result["ceiling"])))


if __name__ == "__main__":
    main()
