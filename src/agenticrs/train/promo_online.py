"""Online test of pre-promotion conversion models in the simulator (CM-DCM's A/B test).

`ValuePolicy(ctr_run, cvr_run, config)` ranks candidates by pCTR x pCVR x price: pCTR from a
CTR run, pCVR = p_dir + (1 - p_dir) p_del from a conversion run trained on the pre-promotion
clicks (`agenticrs.data.prepromo`: CM-DCM, MMoE, ... with y_dir and y_del heads; a run with a y_del
head only, such as ESMM on cart -> delayed purchase, has p_dir = 0), reading the
candidates' promotion features (`agenticrs.sim.promo.promotion_features`) as the logs had them.
`promo_ab_test` serves a promotion's pre-promotion days and then its promotion day to two
policies in the `Environment` (common random numbers), starting from the behaviour histories as
they stood when the window opened (rebuilt from `events.parquet`), and reports the per-user
GMV and purchase lifts with confidence intervals of each period. GMV counts a purchase on the
day of its click (a deferred purchase at the promotion price).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from agenticrs.sim.config import SimConfig
from agenticrs.sim.environment import Environment, Policy, RequestBatch
from agenticrs.sim.promo import promotion_features
from agenticrs.sim.world import SECONDS_PER_DAY, History, World
from agenticrs.train.scoring import Scorer


class ValuePolicy:
    """pCTR x pCVR x price (`cvr_run` None: pCTR x price)."""

    def __init__(self, ctr_run: str | Path, cvr_run: str | Path | None, config: SimConfig) -> None:
        self.ctr = Scorer(ctr_run, device="cpu")
        self.cvr = Scorer(cvr_run, device="cpu") if cvr_run is not None else None
        self.config = config
        if self.cvr is not None:
            labels = list(getattr(self.cvr.model, "output_labels", None) or [])
            if "y_del" not in labels:
                raise ValueError(f"the conversion run {cvr_run} has no head for y_del (its heads: {labels}); "
                                 "train it on the pre-promotion clicks (agenticrs.data.prepromo)")  # fmt: skip
            # a run without a y_dir head (ESMM: cart -> delayed purchase) has p_dir = 0, so pCVR = p_del
            self.heads = labels.index("y_dir") if "y_dir" in labels else None, labels.index("y_del")

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        table = batch.table
        source = f"<environment requests of day {int(batch.requests.day[0])}>" if batch.num_rows else "<empty>"
        p_ctr = np.asarray(self.ctr.score(table, source=source), dtype=np.float64)
        value = p_ctr * batch.world.item_price[batch.item]
        if self.cvr is None:
            return value
        probs = np.asarray(self.cvr.score(promotion_features(table, self.config), source=source), dtype=np.float64)
        p_del = probs[:, self.heads[1]]
        p_dir = probs[:, self.heads[0]] if self.heads[0] is not None else np.zeros_like(p_del)
        return value * (p_dir + (1.0 - p_dir) * p_del)


def history_at(world: World, events_file: str | Path, day: int) -> History:
    """Every user's last K behaviours before `day` began, from the simulation's `events.parquet`."""
    events = pq.read_table(str(events_file))
    ts = events["ts"].to_numpy()
    keep = ts < day * SECONDS_PER_DAY
    history = History.empty(world.n_users, world.config.history_len)
    history.append((events["user_id"].to_numpy()[keep] - 1).astype(np.int64),
                   (events["item_id"].to_numpy()[keep] - 1).astype(np.int32),
                   events["behaviour"].to_numpy()[keep].astype(np.int8), ts[keep])  # fmt: skip
    return history


def promo_ab_test(world: World, events_file: str | Path, policy_a: Policy, policy_b: Policy, promo_index: int = -1,
                  seed: int = 0, rate_scale: float = 1.0, names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:  # fmt: skip
    """A/B test over a promotion's pre-promotion days, then its promotion day: per period, the
    lift of B over A in per-user purchases and GMV (and clicks, carts) with 95% intervals."""
    config = world.config
    promotions = config.promotions
    k = promo_index if promo_index >= 0 else len(promotions) + promo_index
    if not 0 <= k < len(promotions):
        raise ValueError(f"promo_index {promo_index} is not a promotion of the world (it has {len(promotions)})")
    promo = promotions[k]
    start = promo - config.pre_promo_days
    history = history_at(world, events_file, start)
    periods = {"pre_promotion": (start, config.pre_promo_days), "promotion_day": (promo, 1)}
    report: dict[str, Any] = {"promotion_day": promo, "arms": list(names), "periods": {}}
    for period, (first, days) in periods.items():
        if days == 0:
            continue
        env = Environment(world, history, start_day=first, seed=seed, rate_scale=rate_scale)
        result = env.ab_test(policy_a, policy_b, days=days, names=names)
        report["periods"][period] = {
            "days": list(range(first, first + days)),
            "totals": {names[0]: result.arm_a.totals, names[1]: result.arm_b.totals},
            "comparisons": {m: c.__dict__ for m, c in result.comparisons.items()},
        }
    return report
