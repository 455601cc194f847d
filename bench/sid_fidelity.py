"""How much of a trained SASRec's ranking its items' semantic IDs keep (the IDs' fidelity).

    python bench/sid_fidelity.py --dataset amazon_beauty --sasrec bench/out/gr-runs/sasrec-amazon_beauty-seed1 \
        --tiger bench/out/gr-runs/tiger-amazon_beauty-seed1 --json bench/results/gr_beauty_sid_fidelity.json

TIGER's collaborative IDs are residual k-means codes of the SASRec item table of the same seed (each
row L2-normalised first). Here the SASRec model keeps its user states and scores every item with
the vector the item's first 1..L codes reconstruct (times the row's norm, which the normalisation
set aside) instead of its own table; the test split is ranked in full as in the benchmark. This is
not a bound on TIGER, which learns its own embeddings of the codes, but it says how much of the
table's geometry the codes carry, and it compares ID settings (levels, codebook size, the table
they encode) without training a TIGER on each. (Items that share a whole tuple tie; TIGER tells
them apart by its collision digit, which carries no content.) No training: one scoring pass per
level count. Without `--tiger`, an RQ-KMeans of `--levels` x `--codebook-size` is fitted on the table
here (the same fit as a TIGER run's with those settings), so ID settings can be compared on the
validation split (`--split valid`) before any TIGER is trained on them. `--method pq` fits a product
quantiser instead (MDGR's parallel codebook: one k-means per sub-vector, `--opq-iters` > 0 learns
a rotation first); its codes rebuild the row only together, so it gets one row, all L codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from agenticrs.gr.embeddings import collaborative_embeddings
from agenticrs.gr.sequences import leave_one_out, resolve_sequences
from agenticrs.gr.tokenizers import (
    ProductQuantizer,
    RQKMeans,
    Tokenizer,
    code_stats,
    decode_with_codebooks,
    load_tokenizer,
)
from agenticrs.gr.train import config_semantic_ids, evaluate_sequential, load_sequential_run
from agenticrs.gr.workflow import TOKENIZER_FILE

KS = (5, 10, 20)
KEYS = ["recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20"]


class ScoredWith:
    """A SASRec-family model that ranks with another item table (what `evaluate_sequential` calls)."""

    def __init__(self, model: torch.nn.Module, items: torch.Tensor) -> None:
        self.model, self.items, self.config = model, items, model.config

    def eval(self) -> ScoredWith:
        self.model.eval()
        return self

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        return self.model.score_all(batch, self.items).topk(k, dim=1).indices


def rebuilt_units(tokenizer: Tokenizer, codes: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, the L2-normalised item rows as the codes rebuild them): residual codes for their first
    1..L codes (sum_{l<=n} C_l[c_il]); a product quantiser's for all L together (its sub-vectors)."""
    if not isinstance(tokenizer, RQKMeans):
        return [(f"all {codes.shape[1]} codes", tokenizer.decode(codes))]
    books = [b.numpy() for b in tokenizer.codebooks]
    return [(f"first {n} codes", decode_with_codebooks(codes[:, :n], books[:n])) for n in range(1, codes.shape[1] + 1)]


def tokenizer_and_codes(args: argparse.Namespace, unit: np.ndarray) -> tuple[Tokenizer, np.ndarray, str]:
    """The IDs to test: a TIGER run's (checked to be this table's codes) or a fresh RQ-KMeans / PQ fit."""
    if args.tiger is None:
        settings = {"levels": args.levels, "codebook_size": args.codebook_size, "seed": args.tokenizer_seed}
        if args.method == "pq":
            fresh: Tokenizer = ProductQuantizer(**settings, opq_iters=args.opq_iters)
        else:
            fresh = RQKMeans(**settings)
        fresh.fit(unit[1:])
        rotation = f", OPQ {args.opq_iters} rounds" if args.method == "pq" and args.opq_iters else ""
        return fresh, fresh.encode(unit), f"{args.method} {args.levels}x{args.codebook_size}{rotation} (fitted here)"
    tokenizer = load_tokenizer(args.tiger / TOKENIZER_FILE)
    sids = config_semantic_ids(args.tiger)
    if not isinstance(tokenizer, RQKMeans) or sids is None:
        raise SystemExit(f"{args.tiger}: expected a TIGER run with an rq_kmeans tokenizer and semantic_ids.npz")
    codes = tokenizer.encode(unit)
    if not np.array_equal(codes[1:], sids.codes[1:, : tokenizer.levels]):
        raise SystemExit(f"{args.tiger}'s semantic IDs are not the codes of {args.sasrec}'s item table: "
                         "pass the SASRec run its tokenizer was fitted on")  # fmt: skip
    return tokenizer, codes, f"{args.tiger}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--sasrec", type=Path, required=True, help="the SASRec (or HSTU) run whose table the IDs encode")
    parser.add_argument("--tiger", type=Path, default=None,
                        help="a TIGER run on that table's IDs (its tokenizer); without it, fit RQ-KMeans here")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--tokenizer-seed", type=int, default=0)
    parser.add_argument("--method", choices=["rq_kmeans", "pq"], default="rq_kmeans", help="the fresh fit's quantiser")
    parser.add_argument("--opq-iters", type=int, default=0, help="pq: rounds of the OPQ rotation (0: none)")
    parser.add_argument("--split", choices=["valid", "test"], default="test",
                        help="valid to choose ID settings, test to report")
    parser.add_argument("--users", type=int, default=None, help="users of the split (default: all)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_sequential_run(args.sasrec)
    if not hasattr(model, "item_embeddings"):
        raise SystemExit(f"{args.sasrec}: model '{model.name}' has no item table")
    table = model.item_embeddings()
    unit = collaborative_embeddings(table)  # what the tokenizer encodes; row 0 (padding) is zero
    tokenizer, codes, ids = tokenizer_and_codes(args, unit)
    examples = getattr(leave_one_out(resolve_sequences(args.dataset, args.cache_dir)), args.split)
    examples = examples.sample(args.users, 0) if args.users and args.users < len(examples) else examples
    stats = code_stats(codes[1:], [tokenizer.config.codebook_size] * codes.shape[1])  # before any collision digit
    print(f"{ids}: collision rate {stats.collision_rate:.3f}, {stats.unique_tuples} distinct tuples")
    norms = table.norm(dim=1, keepdim=True)
    arms = [("item table", table, 0.0)]
    for name, rebuilt in rebuilt_units(tokenizer, codes):
        rebuilt[0] = 0.0
        error = float(np.sum((unit[1:] - rebuilt[1:]) ** 2) / np.sum(unit[1:] ** 2))
        arms.append((name, torch.as_tensor(rebuilt, dtype=table.dtype) * norms, error))
    rows = []
    for name, items, error in arms:
        metrics = evaluate_sequential(ScoredWith(model, items), examples, KS, args.batch_size, model.config.max_len)
        rows.append({"scored_with": name, **{k: metrics[k] for k in KEYS}, "relative_error": error})
        print(f"{name:16s} recall@10 {metrics['recall@10']:.4f} ndcg@10 {metrics['ndcg@10']:.4f} "
              f"(relative reconstruction error {error:.3f})", flush=True)  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"dataset": args.dataset, "split": args.split, "sasrec_run": str(args.sasrec),
                                     "ids": ids, "levels": int(codes.shape[1]), "codebook_size": tokenizer.config.codebook_size,
                                     "users": len(examples), "rows": rows,
                                     "collision_rate": stats.collision_rate, "unique_tuples": stats.unique_tuples,
                                     "perplexity": stats.perplexity}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
