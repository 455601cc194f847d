"""A what-if click log for the streaming benchmark: the simulator's clicks with purchase delays that
depend on a feature (the item's top category), written as a file the stream reads.

The simulator draws every purchase delay independently of the features (log-normal, median 8 h;
pre-promotion purchases wait for the promotion day). Then a click's chance of being observed as
converted after e seconds is p(x) F(e), a monotone function of p(x): fake negatives do not change
the ranking, only the calibration. This file multiplies each delay by `--slow` for half the top
categories (even `cate_l1`) and by `--fast` for the other half, so F depends on x and the labels
a stream observes rank clicks differently from their eventual labels. Whether a click converts,
its features and its true probability are unchanged; the deferred pre-promotion purchases keep
their time. `--slow 1 --fast 1` writes the control: the same file with the simulator's delays.

    python bench/stream_feature_delays.py --preset medium --seed 0 --slow 4 --fast 0.25 --out bench/out/medium_catdelay_s0.parquet

Columns: click_ts, conversion_ts (NaN: none), the categorical and numeric features of the
simulator's cvr task (no behaviour sequences), `segment` (ordinary / pre_promo / promo) and
`oracle_prob` (the simulator's p_purchase).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from agenticrs.data.cache import default_cache_root
from agenticrs.data.simulated import simulated_dataset
from agenticrs.sim.config import sim_preset

CATEGORICAL = ["user_id", "age", "gender", "city_tier", "scenario", "hour", "query_cate_l2", "position", "item_id",
               "cate_l1", "cate_l2", "brand"]  # fmt: skip
DAY_S = 86_400.0


def write(preset: str, seed: int, slow: float, fast: float, out: Path) -> dict[str, float]:
    spec = simulated_dataset(preset, "cvr_delayed", default_cache_root(), seed=seed)
    sim = sim_preset(preset, seed=seed)
    files = [f for split in ("train", "valid", "test") for f in spec.files.get(split, [])]
    table = pa.concat_tables([pq.read_table(f, columns=[*CATEGORICAL, "ts", "purchase_ts", "price", "item_age_days",
                                                        "p_purchase"]) for f in files])  # fmt: skip
    click = table.column("ts").to_numpy().astype(np.float64)
    purchase = table.column("purchase_ts").to_numpy(zero_copy_only=False)
    conversion = np.where(table.column("purchase_ts").is_null().to_numpy(zero_copy_only=False), np.nan,
                          np.nan_to_num(purchase.astype(np.float64)))  # fmt: skip
    day = np.floor(click / DAY_S).astype(np.int64)
    deferred = sim.is_pre_promo(day) & (np.floor(conversion / DAY_S) == sim.promo_day)
    factor = np.where(table.column("cate_l1").to_numpy() % 2 == 0, slow, fast)
    cap = sim.attribution_days * DAY_S - 1.0
    delay = np.minimum((conversion - click) * factor, cap)
    conversion = np.where(deferred, conversion, click + np.round(delay))
    segment = np.where(day == sim.promo_day, "promo", np.where(sim.is_pre_promo(day), "pre_promo", "ordinary"))
    columns = {"click_ts": click, "conversion_ts": conversion}
    columns.update({name: pa.compute.cast(table.column(name), pa.string()) for name in CATEGORICAL})
    columns.update({"price": table.column("price").cast(pa.float64()),
                    "item_age_days": table.column("item_age_days").cast(pa.float64()),
                    "segment": pa.array(segment), "oracle_prob": table.column("p_purchase").cast(pa.float64())})  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out)
    converted = ~np.isnan(conversion)
    d = (conversion - click)[converted & ~deferred] / 3600.0
    slow_rows = (factor == slow)[converted & ~deferred]
    return {"clicks": float(len(click)), "converted": float(converted.mean()),
            "median_delay_h_slow": float(np.median(d[slow_rows])) if slow_rows.any() else float("nan"),
            "median_delay_h_fast": float(np.median(d[~slow_rows])) if (~slow_rows).any() else float("nan")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow", type=float, default=4.0, help="delay factor of the even top categories")
    parser.add_argument("--fast", type=float, default=0.25, help="delay factor of the odd top categories")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(write(args.preset, args.seed, args.slow, args.fast, args.out))


if __name__ == "__main__":
    main()
