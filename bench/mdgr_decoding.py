"""MDGR decoding against TIGER's beam search on the same test users (trained runs of gr_benchmark).

    python bench/mdgr_decoding.py --dataset sim-small --tiger RUN --mdgr RUN --users 1000 --json OUT

For TIGER and for MDGR at every (schedule, steps): test Recall/NDCG@{5,10,20} on the same sample
of test users and decoding latency per user (512 users, one thread); for MDGR also which slot its
first pass unmasks (confidence order), e.g. whether it spends the warm-up on the collision digit.
`--likelihood` separates fit from decoding: on the same users, each slot's log-likelihood and top-1
accuracy of the true code given the true slots before it (TIGER teacher-forced, MDGR's denoiser with
the later slots masked: both exact joint likelihoods of the target's ID), and MDGR's all-[MASK] ones.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.train import decoding_latency_ms, evaluate_sequential, load_sequential_run


@torch.no_grad()
def slot_fit(model: torch.nn.Module, logits_of: str, test, batch_size: int = 256) -> dict:
    """Mean negative log-likelihood (nats) and top-1 accuracy of each slot's true code under
    `model.<logits_of>(batch)`, over the test examples, and the ID's total NLL (their sum)."""
    model.eval()
    nll, hits, n = 0.0, 0.0, 0
    for batch in test.batches(model.config.max_len, batch_size):
        log_probs = torch.log_softmax(getattr(model, logits_of)(batch), -1)  # (B, L, V)
        codes = model.sid_codes[batch["target"]]  # (B, L)
        nll = nll - log_probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(0)
        hits = hits + (log_probs.argmax(-1) == codes).float().sum(0)
        n += len(codes)
    return {"slot_nll": (nll / n).tolist(), "slot_top1": (hits / n).tolist(), "id_nll": float(nll.sum() / n)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--tiger", type=Path, required=True)
    parser.add_argument("--mdgr", type=Path, required=True)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--schedules", default="warmup,linear,cosine")
    parser.add_argument("--digit-last", action="store_true",
                        help="also decode every (schedule, steps) with digit_last (the collision digit unmasked last)")
    parser.add_argument("--likelihood", action="store_true",
                        help="also each slot's fit (NLL, top-1) given the true slots before it, both models")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test = leave_one_out(resolve_sequences(args.dataset)).test
    test = test.sample(args.users, 0) if args.users < len(test) else test
    keys = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]
    rows = []
    tiger, _ = load_sequential_run(args.tiger)
    timing = {k: v for k, v in next(iter(test.batches(tiger.config.max_len, 512))).items() if k in ("history", "user")}
    metrics = evaluate_sequential(tiger, test, (5, 10, 20), 256, tiger.config.max_len)
    rows.append({"model": "tiger", "steps": tiger.levels, "schedule": "left_to_right (autoregressive)",
                 **{k: metrics[k] for k in keys}, "latency_ms_per_user": decoding_latency_ms(tiger, test)})  # fmt: skip
    mdgr, _ = load_sequential_run(args.mdgr)
    trace: list[torch.Tensor] = []
    mdgr.beam_search(timing, trace=trace)
    first = (trace[0][:, 0] >= 0).float().argmax(-1)
    first_slot = torch.bincount(first, minlength=mdgr.levels).tolist()
    for digit_last in (False, True) if args.digit_last else (mdgr.config.digit_last,):
        for schedule in [s for s in args.schedules.split(",") if s]:  # "": TIGER's row and the fit only
            for steps in range(1, mdgr.levels + 1):
                if schedule != "warmup" and steps in (1, mdgr.levels) or digit_last and steps == 1:
                    continue  # identical to warmup at 1 and L passes (digit_last at 1 pass: to plain)
                update = {"steps": steps, "schedule": schedule, "digit_last": digit_last}
                mdgr.config = mdgr.config.model_copy(update=update)
                metrics = evaluate_sequential(mdgr, test, (5, 10, 20), 128, mdgr.config.max_len)
                rows.append({"model": "mdgr", "steps": steps, "schedule": schedule + (", digit last" if digit_last else ""),
                             "digit_last": digit_last, **{k: metrics[k] for k in keys},
                             "latency_ms_per_user": decoding_latency_ms(mdgr, test)})  # fmt: skip
    for row in rows:
        print(f"{row['model']:6s} {row['schedule']:32s} steps={row['steps']} recall@10 {row['recall@10']:.4f} "
              f"ndcg@10 {row['ndcg@10']:.4f} {row['latency_ms_per_user']:.2f} ms/user")  # fmt: skip
    print("MDGR first pass unmasks slot (count over 512 users):", first_slot)
    fit = {}
    if args.likelihood:
        fit = {"tiger (teacher-forced)": slot_fit(tiger, "token_logits", test),
               "mdgr (true slots before, later masked)": slot_fit(mdgr, "prefix_logits", test),
               "mdgr (all slots masked)": slot_fit(mdgr, "token_logits", test)}  # fmt: skip
        for name, row in fit.items():
            print(f"{name:40s} ID NLL {row['id_nll']:.3f}  slot NLL {[round(v, 3) for v in row['slot_nll']]}  "
                  f"top-1 {[round(v, 3) for v in row['slot_top1']]}")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"dataset": args.dataset, "users": len(test), "rows": rows,
                                     "mdgr_first_slot_counts": first_slot, "slot_fit": fit,
                                     "runs": {"tiger": str(args.tiger), "mdgr": str(args.mdgr)}}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
