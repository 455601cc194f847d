"""The online environment: serve days of requests to a policy and A/B-test policies on them.

A policy is anything that scores the candidates of a `RequestBatch` (`policy(batch) -> scores`):
a Python callable, the oracle, a trained run (`agenticrs.train.policy.RunPolicy`) or later a
served model. For every request the environment draws a candidate pool from the scenario's
source, the policy ranks it, the top `slate_size` are shown at positions 0, 1, ..., and clicks,
carts, purchases and GMV are drawn from the ground truth.

A/B tests use common random numbers (`crn="full"`): both arms see the same users, the same requests
and candidate pools, and the same uniform draw per (request, candidate) for click, cart and
purchase, so an item shown at the same position has the same outcome in both arms and the
comparison is paired by user. `crn="requests"` keeps the requests but draws outcomes
independently per arm; `crn="none"` is the classic design (users split in half). The report is the
relative lift of each per-user metric with a delta-method confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist
from typing import Literal

import numpy as np
import pyarrow as pa

from agenticrs.sim.logs import Outcomes, Requests, Slates, draw_requests, draw_slates, impression_table, realise
from agenticrs.sim.world import History, World, _rng, sigmoid

METRICS = ("clicks", "carts", "purchases", "gmv")
CRN = Literal["full", "requests", "none"]


@dataclass
class RequestBatch:
    """The candidate pool of a set of requests, as a policy sees it (one row per candidate)."""

    world: World
    requests: Requests
    slates: Slates
    history: History

    @property
    def user(self) -> np.ndarray:
        return self.requests.user[self.slates.request_index]

    @property
    def item(self) -> np.ndarray:
        return self.slates.item

    @property
    def scenario(self) -> np.ndarray:
        return self.requests.scenario[self.slates.request_index]

    @property
    def num_rows(self) -> int:
        return len(self.slates.item)

    @cached_property
    def table(self) -> pa.Table:
        """The candidates in the offline impressions layout (position 0, no outcome columns), so a
        model trained on the logs can score them with its saved encoder."""
        position = np.zeros(self.num_rows, np.int64)
        return impression_table(self.world, self.requests, self.slates, position, self.history, None)


Policy = Callable[[RequestBatch], np.ndarray]
# A retrieval stage: (world, users (R,), history, day) -> (R, K) item indices, each row distinct
# items the user can be shown that day; it replaces the scenario's pool of `pool_size` candidates.
CandidateSource = Callable[[World, np.ndarray, History, int], np.ndarray]


@dataclass
class Pipeline:
    """Retrieval from the whole catalogue, then a ranking policy over what was retrieved: served
    by `Environment.serve` / `ab_test` wherever a policy is, so two pipelines compare end to end."""

    candidates: CandidateSource
    ranker: Policy
    name: str = "pipeline"


class OraclePolicy:
    """Ranks by the true click probability at the top position (`objective="ctr"`) or by the true
    expected GMV of an impression there (`"gmv"`): the best a policy can do."""

    def __init__(self, objective: Literal["ctr", "gmv"] = "ctr") -> None:
        self.objective = objective

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        w = batch.world
        r = batch.slates.request_index
        req = batch.requests
        relevance = w.relevance(batch.item, batch.history.items[batch.user], batch.history.length[batch.user])
        p_click = sigmoid(w.click_logit(batch.user, batch.item, req.scenario[r], np.zeros(len(r)), req.hour[r],
                                        req.day[r], relevance))  # fmt: skip
        if self.objective == "ctr":
            return p_click
        p_cart, p_buy_cart, p_buy_direct = w.conversion_probabilities(batch.user, batch.item, req.day[r])
        return p_click * (p_cart * p_buy_cart + (1 - p_cart) * p_buy_direct) * w.item_price[batch.item]


class RandomPolicy:
    """Uniformly random ranking (seeded by the batch's first request id: reproducible)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        first = int(batch.requests.request_id[0]) if len(batch.requests.request_id) else 0
        return np.random.default_rng([self.seed, first]).random(batch.num_rows)


class PopularityPolicy:
    """Ranks by the item's exposure weight on the day: the usual non-personalised baseline."""

    def __call__(self, batch: RequestBatch) -> np.ndarray:
        day = int(batch.requests.day[0]) if len(batch.requests.day) else 0
        return batch.world.exposure_weights(day)[batch.item]


@dataclass
class ArmResult:
    """Realised behaviour of one arm: per-user totals (over `users`) and overall totals."""

    name: str
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    impressions: int
    requests: int

    @property
    def totals(self) -> dict[str, float]:
        return {m: float(v.sum()) for m, v in self.per_user.items()}


@dataclass
class Comparison:
    metric: str
    mean_a: float
    mean_b: float
    lift: float  # relative: mean_b / mean_a - 1
    ci_low: float
    ci_high: float
    p_value: float
    significant: bool


@dataclass
class ABResult:
    arm_a: ArmResult
    arm_b: ArmResult
    comparisons: dict[str, Comparison]
    crn: str
    alpha: float

    def rows(self) -> list[dict[str, float | str | bool]]:
        return [c.__dict__ for c in self.comparisons.values()]


_NORMAL = NormalDist()


def relative_lift(a: np.ndarray, b: np.ndarray, paired: bool, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """(lift, ci_low, ci_high, p_value) of mean(b) / mean(a) - 1 by the delta method.

    Paired (the same units in both arms): Var(my/mx) ~ [s_y^2/mx^2 - 2 my s_xy/mx^3 + my^2 s_x^2/mx^4] / n.
    Unpaired: the covariance term drops and each arm has its own n."""
    mx, my = float(a.mean()), float(b.mean())
    if mx <= 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    ratio = my / mx
    if paired:
        n = len(a)
        cov = np.cov(a, b, ddof=1) if n > 1 else np.zeros((2, 2))
        var = (cov[1, 1] / mx**2 - 2 * my * cov[0, 1] / mx**3 + my**2 * cov[0, 0] / mx**4) / max(n, 1)
    else:
        var = b.var(ddof=1) / (len(b) * mx**2) + my**2 * a.var(ddof=1) / (len(a) * mx**4)
    se = math.sqrt(max(var, 0.0))
    lift = ratio - 1.0
    if se == 0.0:
        return lift, lift, lift, 1.0 if lift == 0 else 0.0
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    p_value = 2 * (1 - _NORMAL.cdf(abs(lift) / se))
    return lift, lift - z * se, lift + z * se, p_value


class Environment:
    """Days of requests from the world's users, served to policies.

    `history` is the behaviour state the environment starts from (by default each user's warm-up
    history; after `generate_logs`, pass its end state). It stays frozen during an experiment, so
    that arms differ only by what they show. Days continue the log's calendar: `start_day`
    defaults to the first day after it, where interests have drifted on and new items launched.
    """

    def __init__(self, world: World, history: History | None = None, start_day: int | None = None, seed: int = 0,
                 pool_size: int = 30, rate_scale: float = 1.0) -> None:  # fmt: skip
        self.world = world
        self.history = history if history is not None else world.warmup_history()
        self.start_day = world.config.n_days if start_day is None else start_day
        self.seed = seed
        self.pool_size = pool_size
        self.rate_scale = rate_scale
        if pool_size < max(s.slate_size for s in world.config.scenarios):
            raise ValueError(f"pool_size {pool_size} is smaller than a slate")

    def requests(self, day_offset: int = 0, candidates: CandidateSource | None = None) -> RequestBatch:
        """The requests and candidate pools of one day (deterministic for (seed, day)). With
        `candidates` (a retrieval stage) the same requests get its items instead of the scenario's
        pool."""
        day = self.start_day + day_offset
        rng = _rng(self.seed, 1000 + day)
        requests = draw_requests(self.world, day, rng, first_id=day * 10_000_000 + 1, rate_scale=self.rate_scale)
        if candidates is None:
            slates = draw_slates(self.world, requests, self.history, rng, lambda s: self.pool_size)
        else:
            slates = self._retrieved_slates(requests, candidates, day)
        return RequestBatch(self.world, requests, slates, self.history)

    def _retrieved_slates(self, requests: Requests, candidates: CandidateSource, day: int) -> Slates:
        items = np.asarray(candidates(self.world, requests.user, self.history, day), dtype=np.int64)
        n, k = len(requests.user), items.shape[1] if items.ndim == 2 else -1
        if items.shape != (n, k) or k < max(s.slate_size for s in self.world.config.scenarios):
            raise ValueError(f"the retrieval stage returned shape {items.shape}; expected ({n}, K) with K >= the largest slate")
        if items.size and (items.min() < 0 or items.max() >= self.world.n_items):
            raise ValueError(f"the retrieval stage returned items outside 0..{self.world.n_items - 1}")
        if items.size and (self.world.item_launch_day[items] > day).any():
            raise ValueError(f"the retrieval stage returned items not launched by day {day}: they cannot be shown")
        ordered = np.sort(items, axis=1)
        if (ordered[:, 1:] == ordered[:, :-1]).any():
            raise ValueError("the retrieval stage returned an item twice for one request")
        return Slates(np.repeat(np.arange(n), k), items.ravel(), np.tile(np.arange(k), n), np.full(n * k, -1, np.int64))

    def serve(self, policy: Policy, day_offset: int = 0, outcome_seed: int | None = None, name: str = "arm",
              users: np.ndarray | None = None, batch: RequestBatch | None = None) -> tuple[ArmResult, Outcomes]:  # fmt: skip
        """Show each request the policy's top slate and draw the outcomes. `users` restricts the
        served requests (the classic split design); `outcome_seed` picks the outcome draws."""
        batch = batch if batch is not None else self.requests(day_offset)
        day = self.start_day + day_offset
        rows = batch.slates.request_index
        if users is not None:
            keep_request = np.isin(batch.requests.user, users)
            batch = RequestBatch(self.world, batch.requests, _filter(batch.slates, keep_request[rows]), self.history)
            rows = batch.slates.request_index
        scores = np.asarray(policy(batch), dtype=np.float64)
        if scores.shape != (batch.num_rows,):
            raise ValueError(f"policy returned scores of shape {scores.shape}; expected ({batch.num_rows},), one per candidate")
        shown, position = self._top_slates(batch, scores)
        seed = self.seed if outcome_seed is None else outcome_seed
        rng = _rng(seed, 2000 + day)
        uniforms = rng.random((len(batch.slates.item), 3))[shown]  # one draw per candidate: common random numbers
        req = batch.requests
        r = rows[shown]
        outcomes = realise(self.world, req.user[r], batch.item[shown], req.scenario[r], position, req.hour[r],
                           req.day[r], req.ts[r], self.history, uniforms, _rng(seed, 3000 + day))  # fmt: skip
        population = np.arange(self.world.n_users) if users is None else np.asarray(users)
        per_user = {}
        for metric, values in zip(METRICS, (outcomes.click, outcomes.cart, outcomes.purchase, outcomes.gmv)):
            totals = np.bincount(req.user[r], weights=values.astype(np.float64), minlength=self.world.n_users)
            per_user[metric] = totals[population]
        result = ArmResult(name, population, per_user, impressions=len(shown), requests=len(np.unique(r)))
        return result, outcomes

    def _top_slates(self, batch: RequestBatch, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row indices shown and their positions: per request the top `slate_size` by score."""
        rows = batch.slates.request_index
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
        sizes = np.diff(np.r_[starts, len(rows)])
        slate_of = np.array([s.slate_size for s in self.world.config.scenarios])[batch.requests.scenario[rows[starts]]]
        shown, positions = [], []
        for pool, slate in {(int(p), int(s)) for p, s in zip(sizes, slate_of)}:
            group = np.flatnonzero((sizes == pool) & (slate_of == slate))
            index = starts[group][:, None] + np.arange(pool)[None, :]
            order = np.argsort(-scores[index], axis=1, kind="stable")[:, :slate]
            shown.append(np.take_along_axis(index, order, axis=1).ravel())
            positions.append(np.tile(np.arange(slate), len(group)))
        if not shown:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        shown_rows, position = np.concatenate(shown), np.concatenate(positions)
        order = np.argsort(shown_rows, kind="stable")
        return shown_rows[order], position[order]

    def ab_test(self, policy_a: Policy | Pipeline, policy_b: Policy | Pipeline, days: int = 1, crn: CRN = "full",
                alpha: float = 0.05, names: tuple[str, str] = ("A", "B")) -> ABResult:  # fmt: skip
        """Serve `days` days to both arms and compare per-user clicks, carts, purchases and GMV.
        An arm may be a `Pipeline`: the same requests, its retrieval stage's candidates, its ranker."""
        per_day = [self.ab_day(policy_a, policy_b, d, crn=crn, names=names) for d in range(days)]
        arm_a, arm_b = sum_days([a for a, _ in per_day]), sum_days([b for _, b in per_day])
        return ABResult(arm_a, arm_b, compare_arms(arm_a, arm_b, paired=crn != "none", alpha=alpha), crn, alpha)

    def ab_day(self, policy_a: Policy | Pipeline, policy_b: Policy | Pipeline, day_offset: int = 0, crn: CRN = "full",
               names: tuple[str, str] = ("A", "B")) -> tuple[ArmResult, ArmResult]:  # fmt: skip
        """One day of an A/B test: both arms served that day's requests under the design `crn`.
        The outcome draws depend on (seed, day, arm) only, so a test served day by day (and
        resumed after a kill: `agents/outer.py`) equals `ab_test` over the same days."""
        if crn not in ("full", "requests", "none"):
            raise ValueError(f"crn must be 'full', 'requests' or 'none'; got {crn!r}")
        users: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if crn == "none":
            permutation = _rng(self.seed, 4000).permutation(self.world.n_users)
            users = (np.sort(permutation[::2]), np.sort(permutation[1::2]))
        shared: RequestBatch | None = None  # both plain arms rank the same pools: encoded once
        arms = []
        for arm, policy in enumerate((policy_a, policy_b)):
            outcome_seed = self.seed if crn == "full" else self.seed * 7919 + 104_729 * (arm + 1)
            if isinstance(policy, Pipeline):  # its own candidates for the same requests, then its ranker
                ranker, batch = policy.ranker, self.requests(day_offset, policy.candidates)
            else:
                shared = shared if shared is not None else self.requests(day_offset)
                ranker, batch = policy, shared
            arms.append(self.serve(ranker, day_offset, outcome_seed=outcome_seed, name=names[arm], users=users[arm],
                                   batch=batch)[0])  # fmt: skip
        return arms[0], arms[1]


def compare_arms(arm_a: ArmResult, arm_b: ArmResult, paired: bool, alpha: float = 0.05,
                 metrics: tuple[str, ...] = METRICS) -> dict[str, Comparison]:  # fmt: skip
    """The relative lift of B over A of each per-user metric (`relative_lift`); `paired` when both
    arms are the same users (common random numbers)."""
    comparisons = {}
    for metric in metrics:
        a, b = arm_a.per_user[metric], arm_b.per_user[metric]
        lift, low, high, p = relative_lift(a, b, paired=paired, alpha=alpha)
        comparisons[metric] = Comparison(metric, float(a.mean()), float(b.mean()), lift, low, high, p, bool(p < alpha))
    return comparisons


def _filter(slates: Slates, keep: np.ndarray) -> Slates:
    return Slates(slates.request_index[keep], slates.item[keep], slates.slot[keep], slates.query_sub[keep])


def sum_days(results: list[ArmResult]) -> ArmResult:
    """The arm over several days: per-user totals and counts summed."""
    first = results[0]
    per_user = {m: np.sum([r.per_user[m] for r in results], axis=0) for m in METRICS}
    return ArmResult(first.name, first.users, per_user, sum(r.impressions for r in results), sum(r.requests for r in results))
