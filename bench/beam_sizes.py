"""Quality and latency of a trained generative run (TIGER, RCLRec, GRC, ...) against its beam size.

    python bench/beam_sizes.py --dataset amazon_beauty --run bench/out/gr-runs/tiger-amazon_beauty-seed1 \
        --beams 20,40,80 --json bench/results/gr_beauty_tiger_beam_sizes.json

The run is decoded again, on the test split of its own data set (leave-one-out, full ranking), at
every beam size: Recall/NDCG@{5,10,20} and decoding latency per user (one timed call on 512 test
users, one thread). Training is untouched: this separates what the beam costs from what the model
learned. A model's `recommend(batch, k)` searches with a beam of at least k, so beams below 20 (the
largest k) decode as 20 and are refused here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.train import decoding_latency_ms, evaluate_sequential, load_sequential_run

KS = (5, 10, 20)
KEYS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--run", type=Path, required=True, help="a finished sequential run with a beam_size setting")
    parser.add_argument("--beams", default="20,40,80")
    parser.add_argument("--users", type=int, default=None, help="test users (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_sequential_run(args.run)
    if "beam_size" not in type(model.config).model_fields:
        raise SystemExit(f"{args.run}: model '{model.name}' has no beam_size setting (not a decoding model)")
    test = leave_one_out(resolve_sequences(args.dataset, args.cache_dir)).test
    test = test.sample(args.users, 0) if args.users and args.users < len(test) else test
    trained_beam = model.config.beam_size
    beams = [int(b) for b in args.beams.split(",") if b.strip()]
    if min(beams) < max(KS):
        raise SystemExit(f"--beams {args.beams}: a beam below {max(KS)} decodes as {max(KS)} (recommend searches with a "
                         f"beam of at least k = {max(KS)})")  # fmt: skip
    rows = []
    for beam in beams:
        model.config = model.config.model_copy(update={"beam_size": beam})
        metrics = evaluate_sequential(model, test, KS, args.batch_size, model.config.max_len)
        row = {"beam_size": beam, **{k: metrics[k] for k in KEYS}, "latency_ms_per_user": decoding_latency_ms(model, test)}
        rows.append(row)
        print(f"beam {beam:3d}: recall@10 {row['recall@10']:.4f} ndcg@10 {row['ndcg@10']:.4f} "
              f"recall@20 {row['recall@20']:.4f} {row['latency_ms_per_user']:.2f} ms/user", flush=True)  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"dataset": args.dataset, "run": str(args.run), "model": model.name,
                                         "trained_beam_size": trained_beam, "users": len(test), "rows": rows},
                                        indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
