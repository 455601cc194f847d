"""Where the delayed-conversion signal of the `promo` preset lies: AUCs of the world's own probabilities.

On the pre-promotion benchmark's test clicks (the last promotion's later pre-promotion days, as
`bench/cvr_prepromo.py` writes them under `--work`), the true P(y_del | click) of the simulator
is split into its parts and each part's AUC against y_del is measured (without `--work`, or when
the folder has no pre-promotion data yet, the simulation and the data are written first):

    P(y_del | click) = p_cart P(buy | cart) d_u(cart) + (1 - p_cart) P(buy | no cart) d_u(no cart)

with d_u the user's own deferral probability (sigma(logit(0.9 or 0.3) + 1.5 z_u)). It tells how
much of the rankable signal is the chain's first factor (the cart), how much the item-level
purchase intent and how much the per-user deferral latent z_u that no logged column shows.

    python bench/cvr_prepromo_oracle.py --json bench/results/cvr_prepromo_oracle.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from agenticrs.data.prepromo import write_prepromo_dataset
from agenticrs.data.simulated import write_simulation
from agenticrs.sim import build_world, sim_preset
from agenticrs.train.metrics import auc


def parts(table, world) -> dict[str, np.ndarray]:
    users = table["user_id"].to_numpy().astype(np.int64) - 1
    items = table["item_id"].to_numpy().astype(np.int64) - 1
    day = table["day"].to_numpy().astype(np.int64)
    p_cart, b_cart, b_direct = world.conversion_probabilities(users, items, day)
    d_cart = world.defer_probability(users, np.ones(len(users), bool))
    d_direct = world.defer_probability(users, np.zeros(len(users), bool))
    cart_path = p_cart * b_cart * d_cart
    direct_path = (1 - p_cart) * b_direct * d_direct
    return {
        "true P(y_del | click)": cart_path + direct_path,
        "cart path p_cart P(buy|cart) d_u": cart_path,
        "p_cart (the chain's first factor)": p_cart,
        "P(y_del | click, cart) = P(buy|cart) d_u": b_cart * d_cart,
        "P(buy | click) (no deferral)": p_cart * b_cart + (1 - p_cart) * b_direct,
        "d_u (the user's deferral latent alone)": d_cart,
        "P(buy | click) x mean deferral": (p_cart * b_cart * d_cart.mean() + (1 - p_cart) * b_direct * d_direct.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=None, help="the --work folder of a bench/cvr_prepromo.py run")
    parser.add_argument("--preset", default="promo")
    parser.add_argument("--sim-seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="a shrunken world (the docs' test)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    smoke = {"n_users": 700, "n_items": 600, "new_items_per_day": 5, "requests_per_user_day": 1.0}
    config = sim_preset(args.preset, seed=args.sim_seed, **(smoke if args.smoke else {}))
    work = Path(args.work or tempfile.mkdtemp(prefix="cvr-prepromo-oracle-"))
    if not (work / "prepromo-history" / "prepromo_test.parquet").is_file():
        sim_dir = work / f"sim-{args.preset}-{args.sim_seed}{'-smoke' if args.smoke else ''}"
        write_simulation(config, sim_dir, name=f"sim-{args.preset}")
        write_prepromo_dataset(sim_dir, config, work / "prepromo-history")
    world = build_world(config)
    out: dict[str, dict] = {}
    for split in ("train", "test"):
        table = pq.read_table(str(work / "prepromo-history" / f"prepromo_{split}.parquet"))
        y_del = table["y_del"].to_numpy(zero_copy_only=False).astype(np.float64)
        y_atc = table["y_atc"].to_numpy().astype(np.float64)
        known = ~np.isnan(y_del)
        y_del, y_atc = y_del[known], y_atc[known]
        carted = y_atc == 1
        columns = {name: values[known] for name, values in parts(table, world).items()}
        rows = {name: {"auc": auc(y_del, p), "auc_carted": auc(y_del[carted], p[carted])} for name, p in columns.items()}
        cart_auc = auc(y_atc, columns["p_cart (the chain's first factor)"])  # how learnable the first factor is
        out[split] = {"rows": int(len(y_del)), "del_rate": float(y_del.mean()), "atc_rate": float(y_atc.mean()),
                      "del_uncarted_share": float(y_del[~carted].sum() / max(y_del.sum(), 1)),
                      "p_del_given_atc_observed": float(y_del[carted].mean()), "p_cart_auc_on_y_atc": cart_auc,
                      "auc": rows}  # fmt: skip
        print(f"{split}: {len(y_del)} clicks with y_del, delayed rate {y_del.mean():.3f}, carted {y_atc.mean():.3f}, "
              f"delayed without a cart {out[split]['del_uncarted_share']:.3f} of delayed; true p_cart's AUC on y_atc "
              f"{cart_auc:.4f}")  # fmt: skip
        for name, r in rows.items():
            print(f"  {name:<44} AUC {r['auc']:.4f}   inside carted clicks {r['auc_carted']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
