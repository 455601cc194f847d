"""The embedded default data set ``synthetic``: seeded e-commerce impressions with a known truth.

Every impression's click probability comes from the documented ground-truth function below, so
the best achievable (oracle) AUC and logloss are known and written to ``meta.json``. The
generator is fully vectorised NumPy (no per-row Python loops): the ``tiny`` preset (20k
impressions) builds in about 0.3 s, the ``default`` preset (200k) in about 1.5 s (one core).
``docs/synthetic.md`` is the long form of this docstring.

World (all draws from ``numpy.random.Generator(PCG64)`` streams spawned from ``seed``)
-------------------------------------------------------------------------------------
* Categories ``c = 0..C-1`` have centroids ``m_c ~ N(0, I_d)`` (``d = latent_dim``), a price
  level ``mu_c ~ U(1.5, 6)`` and ``brands_per_category`` brands of their own.
* Items: item ``i`` has category ``c_i`` (every category gets at least one item), a brand of that
  category, price ``round(exp(mu_{c_i} + 0.5 eps), 2)``, a popularity weight
  ``w_i = rank_i^-popularity_exponent`` (``rank`` a random permutation of ``1..n_items``) and a
  latent ``v_i = sqrt(item_purity) m_{c_i} + sqrt(1 - item_purity) e_i``, ``e_i ~ N(0, I_d)``.
* Users: activity ``a_u ~ LogNormal(0, activity_sigma)``; 2-4 preferred categories ``P_u`` (drawn
  without replacement) with weights ``pi_u ~ Dirichlet(1)``; a latent
  ``u_u = sqrt(user_purity) sum_k pi_uk m_k / ||pi_u|| + sqrt(1 - user_purity) e_u``;
  an age bucket (7), a gender (2) and a main device (3).

Background stream (the source of histories; independent of the impression clicks)
-----------------------------------------------------------------------------------
User ``u`` has ``U{0..2K}`` warm-up events in the 30 days before the log starts and
``Poisson(stream_rate * n_impressions * a_u / sum a)`` events during it (``K = history_len``),
at integer-second times. Along each user's time-ordered stream a new category is drawn with
probability ``1 - stickiness`` (always for the first event), otherwise the previous event's
category is kept (sessions); a drawn category is uniform over all categories with probability
``explore``, else from ``P_u`` by ``pi_u``. The item is drawn within the category with probability
``proportional to w_i``. The history of an impression at time ``t`` is the user's last ``K``
stream items with time strictly before ``t``, oldest first (``hist_item_id``;
``hist_cate_id`` holds their categories); it may be shorter than ``K`` or empty.

Impressions
-----------
user ``u ~ a_u / sum a``; time = day ``U{0..n_days-1}`` + hour ``h`` drawn from
``p(h) ~ 1 + 0.6 cos(2 pi (h - 20) / 24)`` + second ``U{0..3599}``; candidate item: with
probability ``interest_mix`` a category from ``P_u`` by ``pi_u`` then an item within it
``~ w_i``, else an item from the whole catalogue ``~ w_i`` (power-law exposure); device = the
user's main device with probability 0.8, else uniform; position ``p ~ 0.85^p`` on ``0..n_positions-1``.

Ground truth
------------
    logit = base_logit + field_weight * F + interaction_weight * I + relevance_weight * R
    F = b_user[u] + b_item[i] + b_cate[c_i] + b_brand[brand_i] + b_age[age_u] + b_gender[gender_u]
        + b_hour[h] + b_device[dev] - position_decay * p + price_coef * z_i
    I = <u_u, v_i> / sqrt(d) + g_dev[dev, c_i] + g_daypart[h // 6, c_i]
    R = max_{j in history} 1{c_{h_j} = c_i} * ((1 + cos(v_i, v_{h_j})) / 2) ** relevance_power
        (0 if no history item shares the target's category)
    true_prob = sigmoid(logit);  click ~ Bernoulli(true_prob)

The bias tables are Gaussian with standard deviations b_user 0.4, b_item 0.4, b_cate 0.3,
b_brand 0.2, b_age 0.2, b_gender 0.1, b_hour 0.15, b_device 0.15, g_dev and g_daypart
``context_sigma``; ``z_i`` is ``log1p(price_i)`` standardised over the catalogue. ``R`` is a max
over history items of a target-aware pairwise similarity -- a non-linear function of the history
that target attention (DIN) can express and a mean-pooled history cannot. With the default
``relevance_power = 1`` the kernel is broad and ``R`` is largely recoverable from the share of the
history in the target's category; a large power (the ``relevance`` preset: 10, with
``item_purity = 0.3`` so that items of one category differ) makes ``R`` item-level: it is high
only when the history holds the target itself or a close twin of it.

Presets: ``tiny`` (20k impressions, for unit tests), ``default`` (the config defaults, 200k) and
``relevance`` (100k impressions, 1000 users, 2000 items, 40 categories, K = 30, a sharp kernel,
``relevance_weight = 6`` against ``field_weight = 0.4`` and ``interaction_weight = 0.2``): a world
where relevance to the single most similar history item drives the clicks, so target attention
(DIN) has something to gain over a mean-pooled history (DeepFM).

Files
-----
``train/valid/test.parquet`` (rows in time order; split by impression time by default, or a
seeded random split), ``meta.json`` (oracle AUC/logloss and positive rate per split, component
AUCs, the config), ``dataset.yaml`` (the spec with relative paths) and the marker
``_SYNTHETIC_OK.json`` written last. Ids of users, items, categories and brands start at 1; the
context fields start at 0. Besides the declared fields the files hold ``ts`` (seconds) and
``true_prob``, which is deliberately *not* a spec field: models must never see it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agenticrs.data.errors import DataError
from agenticrs.data.spec import DatasetSpec, FieldSpec, ReaderOptions
from agenticrs.runtime.files import atomic_write, atomic_write_text
from agenticrs.sampling import CategorySampler, cumulative_shares, draw_global

GENERATOR_VERSION = 1
MARKER_NAME = "_SYNTHETIC_OK.json"
META_NAME = "meta.json"
SPEC_NAME = "dataset.yaml"
SPLITS = ("train", "valid", "test")

_SECONDS_PER_DAY = 86_400
_WARMUP_DAYS = 30
_N_AGE = 7
_N_GENDER = 2
_N_DEVICE = 3
_AGE_P = np.array([0.05, 0.20, 0.25, 0.20, 0.15, 0.10, 0.05])
_DEVICE_P = np.array([0.6, 0.3, 0.1])
_MAIN_DEVICE_P = 0.8
_POSITION_RATIO = 0.85
_PRICE_SIGMA = 0.5
_PREF_MIN, _PREF_MAX = 2, 4
# standard deviations of the first-order effect tables
_SIGMA = {
    "user": 0.4,
    "item": 0.4,
    "cate": 0.3,
    "brand": 0.2,
    "age": 0.2,
    "gender": 0.1,
    "hour": 0.15,
    "device": 0.15,
}


class SyntheticConfig(BaseModel):
    """Everything that shapes the generated data; its hash keys the on-disk cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(default=2000, ge=1)
    n_items: int = Field(default=5000, ge=1)
    n_categories: int = Field(default=50, ge=1)
    n_impressions: int = Field(default=200_000, ge=10)
    history_len: int = Field(default=20, ge=1, description="K: max history length (spec max_len)")
    latent_dim: int = Field(default=8, ge=1)
    seed: int = Field(default=0, ge=0)
    # --- signal weights (see the module docstring for the equations) --------------------
    base_logit: float = -3.1
    field_weight: float = Field(default=1.0, description="scale of the first-order field effects F")
    interaction_weight: float = Field(default=0.6, description="scale of user x item and context x category I")
    relevance_weight: float = Field(default=2.0, description="scale of target-to-history relevance R")
    relevance_power: float = Field(
        default=1.0, ge=1.0, description="sharpness p of the relevance kernel ((1 + cos) / 2) ** p"
    )
    # --- world shape ---------------------------------------------------------------------
    brands_per_category: int = Field(default=10, ge=1)
    n_positions: int = Field(default=10, ge=1)
    n_days: int = Field(default=14, ge=1)
    popularity_exponent: float = Field(default=0.8, ge=0.0, description="Zipf exponent of item exposure")
    interest_mix: float = Field(default=0.5, ge=0.0, le=1.0, description="share of interest-driven candidates")
    item_purity: float = Field(default=0.6, ge=0.0, le=1.0, description="share of item latent variance from its category")
    user_purity: float = Field(default=0.7, ge=0.0, le=1.0, description="share of user latent variance from its interests")
    activity_sigma: float = Field(default=1.0, ge=0.0)
    stream_rate: float = Field(default=1.0, ge=0.0, description="background events per impression")
    stickiness: float = Field(default=0.5, ge=0.0, le=1.0, description="P(stream event keeps previous category)")
    explore: float = Field(default=0.3, ge=0.0, le=1.0, description="P(a drawn stream category is uniform)")
    context_sigma: float = Field(default=0.4, ge=0.0)
    position_decay: float = 0.1
    price_coef: float = -0.2
    # --- splits --------------------------------------------------------------------------
    split: Literal["time", "random"] = Field(
        default="time", description="'time': by impression time; 'random': seeded shuffle"
    )
    train_frac: float = Field(default=0.8, gt=0.0, lt=1.0)
    valid_frac: float = Field(default=0.1, gt=0.0, lt=1.0)
    test_frac: float = Field(default=0.1, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        total = self.train_frac + self.valid_frac + self.test_frac
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"split fractions must sum to 1; got {total}")
        if self.n_items < self.n_categories:
            raise ValueError(f"n_items ({self.n_items}) must be >= n_categories ({self.n_categories})")
        if self.n_categories < _PREF_MIN:
            raise ValueError(f"n_categories must be >= {_PREF_MIN}")
        return self

    def config_hash(self) -> str:
        payload = {"generator_version": GENERATOR_VERSION, "config": self.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_users": 300, "n_items": 1000, "n_categories": 20, "n_impressions": 20_000, "history_len": 10},
    "default": {},
    # relevance to the single most similar history item drives the clicks (DIN vs a pooled history)
    "relevance": {
        "n_users": 1000,
        "n_items": 2000,
        "n_categories": 40,
        "n_impressions": 100_000,
        "history_len": 30,
        "item_purity": 0.3,
        "relevance_power": 10.0,
        "relevance_weight": 6.0,
        "field_weight": 0.4,
        "interaction_weight": 0.2,
        "base_logit": -3.5,
    },
}


def preset(name: str, **overrides: Any) -> SyntheticConfig:
    """The config of a named preset ('tiny' for unit tests, 'default', 'relevance'), with overrides."""
    if name not in PRESETS:
        raise DataError(f"unknown synthetic preset '{name}'", expected=f"one of {sorted(PRESETS)}")
    return SyntheticConfig(**{**PRESETS[name], **overrides})


# ----------------------------------------------------------------------------- world ---------


@dataclass(frozen=True)
class SyntheticWorld:
    """Latent truth behind the data (0-based indices; files add 1 to entity ids)."""

    config: SyntheticConfig
    item_cate: np.ndarray  # (n_items,) category index
    item_brand: np.ndarray  # (n_items,) brand index
    item_price: np.ndarray  # (n_items,) float64
    item_pop: np.ndarray  # (n_items,) popularity weight w_i
    item_latent: np.ndarray  # (n_items, d)
    user_latent: np.ndarray  # (n_users, d)
    user_pref: np.ndarray  # (n_users, 4) preferred categories, -1 padded
    user_pref_cum: np.ndarray  # (n_users, 4) cumulative preference weights, 2.0 padded
    user_activity: np.ndarray  # (n_users,)
    user_age: np.ndarray
    user_gender: np.ndarray
    user_device: np.ndarray
    effects: dict[str, np.ndarray]  # bias / interaction tables
    # background stream, sorted by (user, time)
    ev_user: np.ndarray
    ev_time: np.ndarray
    ev_item: np.ndarray
    item_unit: np.ndarray = field(repr=False)  # item_latent rows scaled to unit norm

    @property
    def n_events(self) -> int:
        return int(self.ev_user.size)

    def user_history(self, user: int, t: int) -> np.ndarray:
        """Reference (slow) history: item indices of `user`'s last K events strictly before `t`."""
        lo, hi = np.searchsorted(self.ev_user, [user, user + 1])
        times = self.ev_time[lo:hi]
        items = self.ev_item[lo:hi]
        before = items[times < t]
        return before[-self.config.history_len :]


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(n)]


def _draw_pref(world_pref: np.ndarray, pref_cum: np.ndarray, users: np.ndarray, r: np.ndarray) -> np.ndarray:
    slot = (r[:, None] >= pref_cum[users]).sum(axis=1)
    return world_pref[users, slot]


def build_world(config: SyntheticConfig) -> SyntheticWorld:
    """Entities, effect tables and the background interaction stream for `config`."""
    cfg = config
    r_item, r_user, r_eff, r_stream = _rngs(cfg.seed, 5)[:4]
    d, C, n_items, n_users = cfg.latent_dim, cfg.n_categories, cfg.n_items, cfg.n_users

    # --- categories and items ---
    centroids = r_item.standard_normal((C, d))
    price_level = r_item.uniform(1.5, 6.0, C)
    item_cate = np.concatenate([np.arange(C), r_item.integers(0, C, n_items - C)])
    item_cate = item_cate[r_item.permutation(n_items)]
    item_brand = item_cate * cfg.brands_per_category + r_item.integers(0, cfg.brands_per_category, n_items)
    item_price = np.maximum(
        np.round(np.exp(price_level[item_cate] + _PRICE_SIGMA * r_item.standard_normal(n_items)), 2), 0.01
    )
    rank = r_item.permutation(n_items) + 1
    item_pop = rank.astype(np.float64) ** (-cfg.popularity_exponent)
    item_latent = math.sqrt(cfg.item_purity) * centroids[item_cate] + math.sqrt(
        1.0 - cfg.item_purity
    ) * r_item.standard_normal((n_items, d))
    norms = np.linalg.norm(item_latent, axis=1, keepdims=True)
    item_unit = item_latent / np.maximum(norms, 1e-12)

    # --- users ---
    activity = r_user.lognormal(0.0, cfg.activity_sigma, n_users)
    n_pref = np.minimum(r_user.integers(_PREF_MIN, _PREF_MAX + 1, n_users), C)
    width = min(_PREF_MAX, C)
    pref = np.zeros((n_users, _PREF_MAX), dtype=np.int64)
    block = 65_536
    for lo in range(0, n_users, block):  # blocks keep the (users x categories) keys small
        keys = r_user.random((min(block, n_users - lo), C))
        pref[lo : lo + keys.shape[0], :width] = np.argsort(keys, axis=1, kind="stable")[:, :width]
    valid = np.arange(_PREF_MAX)[None, :] < n_pref[:, None]
    pref = np.where(valid, pref, -1)
    gam = r_user.standard_gamma(1.0, (n_users, _PREF_MAX)) * valid
    pi = gam / gam.sum(axis=1, keepdims=True)
    pref_cum = np.where(valid, np.cumsum(pi, axis=1), 2.0)
    last_valid = valid.sum(axis=1) - 1
    pref_cum[np.arange(n_users), last_valid] = 1.0
    interest = (pi[:, :, None] * centroids[np.maximum(pref, 0)]).sum(axis=1) / np.linalg.norm(
        pi, axis=1, keepdims=True
    )
    user_latent = math.sqrt(cfg.user_purity) * interest + math.sqrt(1.0 - cfg.user_purity) * r_user.standard_normal(
        (n_users, d)
    )
    user_age = r_user.choice(_N_AGE, n_users, p=_AGE_P)
    user_gender = r_user.integers(0, _N_GENDER, n_users)
    user_device = r_user.choice(_N_DEVICE, n_users, p=_DEVICE_P)

    # --- effect tables ---
    n_brands = C * cfg.brands_per_category
    effects = {
        "user": r_eff.normal(0, _SIGMA["user"], n_users),
        "item": r_eff.normal(0, _SIGMA["item"], n_items),
        "cate": r_eff.normal(0, _SIGMA["cate"], C),
        "brand": r_eff.normal(0, _SIGMA["brand"], n_brands),
        "age": r_eff.normal(0, _SIGMA["age"], _N_AGE),
        "gender": r_eff.normal(0, _SIGMA["gender"], _N_GENDER),
        "hour": r_eff.normal(0, _SIGMA["hour"], 24),
        "device": r_eff.normal(0, _SIGMA["device"], _N_DEVICE),
        "device_x_cate": r_eff.normal(0, cfg.context_sigma, (_N_DEVICE, C)),
        "daypart_x_cate": r_eff.normal(0, cfg.context_sigma, (4, C)),
    }
    log_price = np.log1p(item_price)
    effects["price_z"] = (log_price - log_price.mean()) / max(float(log_price.std()), 1e-12)

    # --- background stream ---
    K = cfg.history_len
    n_warm = r_stream.integers(0, 2 * K + 1, n_users)
    lam = cfg.stream_rate * cfg.n_impressions * activity / activity.sum()
    n_live = r_stream.poisson(lam)
    ev_user = np.concatenate([np.repeat(np.arange(n_users), n_warm), np.repeat(np.arange(n_users), n_live)])
    warm_span = _WARMUP_DAYS * _SECONDS_PER_DAY
    live_span = cfg.n_days * _SECONDS_PER_DAY
    ev_time = np.concatenate(
        [r_stream.integers(-warm_span, 0, int(n_warm.sum())), r_stream.integers(0, live_span, int(n_live.sum()))]
    )
    order = np.lexsort((ev_time, ev_user))
    ev_user, ev_time = ev_user[order], ev_time[order]
    n_ev = ev_user.size
    first = np.r_[True, ev_user[1:] != ev_user[:-1]] if n_ev else np.zeros(0, bool)
    new_draw = first | (r_stream.random(n_ev) >= cfg.stickiness)
    explore = r_stream.random(n_ev) < cfg.explore
    cate_uniform = r_stream.integers(0, C, n_ev)
    cate_pref = _draw_pref(pref, pref_cum, ev_user, r_stream.random(n_ev))
    drawn = np.where(explore, cate_uniform, cate_pref)
    carrier = np.maximum.accumulate(np.where(new_draw, np.arange(n_ev), 0)) if n_ev else np.zeros(0, np.int64)
    ev_cate = drawn[carrier]
    sampler = CategorySampler.build(item_cate, item_pop, C)
    ev_item = sampler.draw(ev_cate, r_stream.random(n_ev))

    return SyntheticWorld(
        config=cfg,
        item_cate=item_cate,
        item_brand=item_brand,
        item_price=item_price,
        item_pop=item_pop,
        item_latent=item_latent,
        user_latent=user_latent,
        user_pref=pref,
        user_pref_cum=pref_cum,
        user_activity=activity,
        user_age=user_age,
        user_gender=user_gender,
        user_device=user_device,
        effects=effects,
        ev_user=ev_user,
        ev_time=ev_time,
        ev_item=ev_item,
        item_unit=item_unit,
    )


# ----------------------------------------------------------------------- impressions ---------


def _hour_profile() -> np.ndarray:
    h = np.arange(24)
    w = 1.0 + 0.6 * np.cos(2 * np.pi * (h - 20) / 24)
    return w / w.sum()


def relevance_matrix(world: SyntheticWorld, target: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """R for 0-based `target` items (N,) and a (N, K) matrix of 0-based history items, -1 = padding."""
    cfg = world.config
    R = np.zeros(target.shape[0], dtype=np.float64)
    if hist.size == 0:
        return R
    match = (hist >= 0) & (world.item_cate[np.maximum(hist, 0)] == world.item_cate[target][:, None])
    rows, cols = np.nonzero(match)
    if rows.size == 0:
        return R
    sim = np.zeros(hist.shape, dtype=np.float64)
    cos = np.einsum("ij,ij->i", world.item_unit[target[rows]], world.item_unit[hist[rows, cols]])
    kernel = (1.0 + cos) / 2.0
    if cfg.relevance_power != 1.0:
        kernel = np.clip(kernel, 0.0, 1.0) ** cfg.relevance_power
    sim[rows, cols] = kernel
    return sim.max(axis=1)


def relevance_score(world: SyntheticWorld, item_id: Any, hist_item_id: Any) -> np.ndarray:
    """R from file columns: 1-based `item_id` and the `hist_item_id` list column (Arrow or lists)."""
    target = np.asarray(item_id, dtype=np.int64) - 1
    if isinstance(hist_item_id, pa.ChunkedArray):
        hist_item_id = hist_item_id.combine_chunks()
    if isinstance(hist_item_id, pa.ListArray | pa.LargeListArray):
        offsets = hist_item_id.offsets.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
        values = hist_item_id.flatten().to_numpy().astype(np.int64)
    else:
        lists = [np.asarray(v, dtype=np.int64) for v in hist_item_id]
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in lists])]).astype(np.int64)
        values = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    lengths = np.diff(offsets)
    width = max(int(lengths.max(initial=0)), 1)
    col = np.arange(width)[None, :]
    valid = col >= (width - lengths)[:, None]
    idx = offsets[:-1, None] + col - (width - lengths)[:, None]
    if values.size == 0:
        return np.zeros(target.shape[0], dtype=np.float64)
    hist = np.where(valid, values[np.clip(idx, 0, values.size - 1)] - 1, -1)
    return relevance_matrix(world, target, hist)


def simulate(config: SyntheticConfig, world: SyntheticWorld | None = None) -> tuple[SyntheticWorld, dict[str, Any]]:
    """The world and all impressions in time order, as NumPy columns (0-based indices).

    Returned columns: user, item, cate, brand, age, gender, hour, device, position, price, ts,
    hist_offsets (N+1), hist_values (0-based items, oldest first), F, I, R, logit, true_prob, click.
    """
    cfg = config
    world = world or build_world(cfg)
    r_imp, r_click = _rngs(cfg.seed, 5)[4].spawn(2)
    N, K, C = cfg.n_impressions, cfg.history_len, cfg.n_categories

    user = r_imp.choice(cfg.n_users, N, p=world.user_activity / world.user_activity.sum())
    day = r_imp.integers(0, cfg.n_days, N)
    hour = r_imp.choice(24, N, p=_hour_profile())
    ts = day * _SECONDS_PER_DAY + hour * 3600 + r_imp.integers(0, 3600, N)
    order = np.lexsort((user, ts))  # time order; ties broken by user for determinism
    user, hour, ts = user[order], hour[order], ts[order]

    interest = r_imp.random(N) < cfg.interest_mix
    cate_pref = _draw_pref(world.user_pref, world.user_pref_cum, user, r_imp.random(N))
    sampler = CategorySampler.build(world.item_cate, world.item_pop, C)
    item_interest = sampler.draw(cate_pref, r_imp.random(N))
    item_popular = draw_global(cumulative_shares(world.item_pop), r_imp.random(N))
    item = np.where(interest, item_interest, item_popular)
    device = np.where(
        r_imp.random(N) < _MAIN_DEVICE_P, world.user_device[user], r_imp.integers(0, _N_DEVICE, N)
    )
    pos_p = _POSITION_RATIO ** np.arange(cfg.n_positions)
    position = r_imp.choice(cfg.n_positions, N, p=pos_p / pos_p.sum())

    # --- history: last K stream events of the user strictly before ts ---
    ev_key = (world.ev_user << 32) | (world.ev_time + _WARMUP_DAYS * _SECONDS_PER_DAY)
    imp_key = (user << 32) | (ts + _WARMUP_DAYS * _SECONDS_PER_DAY)
    end = np.searchsorted(ev_key, imp_key, side="left")
    user_start = np.searchsorted(world.ev_user, user, side="left")
    start = np.maximum(user_start, end - K)
    idx = end[:, None] - K + np.arange(K)[None, :]
    valid = idx >= start[:, None]
    hist = np.where(valid, world.ev_item[np.clip(idx, 0, max(world.n_events - 1, 0))] if world.n_events else -1, -1)
    lengths = valid.sum(axis=1)
    hist_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    hist_values = hist[valid]

    # --- ground truth ---
    e = world.effects
    cate = world.item_cate[item]
    brand = world.item_brand[item]
    F = (
        e["user"][user]
        + e["item"][item]
        + e["cate"][cate]
        + e["brand"][brand]
        + e["age"][world.user_age[user]]
        + e["gender"][world.user_gender[user]]
        + e["hour"][hour]
        + e["device"][device]
        - cfg.position_decay * position
        + cfg.price_coef * e["price_z"][item]
    )
    I = (  # noqa: E741 - the component is called I in the documented click function
        np.einsum("ij,ij->i", world.user_latent[user], world.item_latent[item]) / math.sqrt(cfg.latent_dim)
        + e["device_x_cate"][device, cate]
        + e["daypart_x_cate"][hour // 6, cate]
    )
    R = relevance_matrix(world, item, hist)
    logit = cfg.base_logit + cfg.field_weight * F + cfg.interaction_weight * I + cfg.relevance_weight * R
    true_prob = 1.0 / (1.0 + np.exp(-logit))
    click = (r_click.random(N) < true_prob).astype(np.int64)

    cols = {
        "user": user,
        "item": item,
        "cate": cate,
        "brand": brand,
        "age": world.user_age[user],
        "gender": world.user_gender[user],
        "hour": hour,
        "device": device,
        "position": position,
        "price": world.item_price[item],
        "ts": ts,
        "hist_offsets": hist_offsets,
        "hist_values": hist_values,
        "F": F,
        "I": I,
        "R": R,
        "logit": logit,
        "true_prob": true_prob,
        "click": click,
    }
    return world, cols


# --------------------------------------------------------------------------- metrics ---------


def rank_auc(labels: Any, scores: Any) -> float:
    """Exact ROC AUC (ties count one half); NaN if only one class is present."""
    from agenticrs.train.metrics import auc  # the project's one AUC (imported late: a pure function)

    if np.size(labels) == 0:
        return float("nan")
    return auc(np.asarray(labels).astype(np.int8).ravel(), np.asarray(scores, dtype=np.float64).ravel())


def log_loss(labels: Any, probs: Any, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of the true probabilities."""
    from agenticrs.train.metrics import logloss

    return logloss(np.asarray(labels).ravel(), np.asarray(probs, dtype=np.float64).ravel(), eps=eps)


def oracle_auc(files: str | Path | list[str | Path]) -> float:
    """AUC of the stored `true_prob` against `click` over the given Parquet file(s)."""
    paths = [files] if isinstance(files, str | Path) else list(files)
    tables = [pq.read_table(str(p), columns=["click", "true_prob"]) for p in paths]
    table = pa.concat_tables(tables)
    return rank_auc(table["click"].to_numpy(), table["true_prob"].to_numpy())


# ----------------------------------------------------------------------------- files ---------


def synthetic_spec(config: SyntheticConfig, files: dict[str, list[str]]) -> DatasetSpec:
    """The DatasetSpec of the synthetic data set (true_prob and ts are deliberately not fields)."""
    K = config.history_len
    cat = lambda name: FieldSpec(name=name, kind="categorical")  # noqa: E731
    fields = [
        cat("user_id"),
        cat("item_id"),
        cat("cate_id"),
        cat("brand_id"),
        cat("user_age_bucket"),
        cat("user_gender"),
        cat("hour"),
        cat("device"),
        cat("position"),
        FieldSpec(name="price", kind="numeric", transform="log1p"),
        FieldSpec(name="hist_item_id", kind="sequence", max_len=K, share_vocab_with="item_id"),
        FieldSpec(
            name="hist_cate_id", kind="sequence", max_len=K, share_vocab_with="cate_id", parallel_to="hist_item_id"
        ),
        FieldSpec(name="click", kind="label"),
    ]
    return DatasetSpec(
        name="synthetic",
        files=files,
        reader=ReaderOptions(format="parquet"),
        fields=fields,
        group_key="user_id",
        description=(
            "Seeded synthetic e-commerce impressions with a known click probability "
            f"(agenticrs.data.synthetic v{GENERATOR_VERSION}, config {config.config_hash()}). "
            "The files also hold 'ts' and 'true_prob', which are not model inputs."
        ),
    )


def _table(cols: dict[str, Any], rows: np.ndarray, world: SyntheticWorld) -> pa.Table:
    offsets = cols["hist_offsets"]
    lo, hi = offsets[rows], offsets[rows + 1]
    lengths = hi - lo
    # gather the history values of the selected rows (rows are contiguous or arbitrary)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    take = np.repeat(lo - new_offsets[:-1], lengths) + np.arange(int(new_offsets[-1]))
    hist_items = cols["hist_values"][take]
    off = pa.array(new_offsets, type=pa.int32())
    hist_item_col = pa.ListArray.from_arrays(off, pa.array(hist_items + 1, type=pa.int64()))
    hist_cate_col = pa.ListArray.from_arrays(off, pa.array(world.item_cate[hist_items] + 1, type=pa.int64()))
    i64 = lambda a: pa.array(np.ascontiguousarray(a[rows]), type=pa.int64())  # noqa: E731
    return pa.table(
        {
            "user_id": pa.array(cols["user"][rows] + 1, type=pa.int64()),
            "item_id": pa.array(cols["item"][rows] + 1, type=pa.int64()),
            "cate_id": pa.array(cols["cate"][rows] + 1, type=pa.int64()),
            "brand_id": pa.array(cols["brand"][rows] + 1, type=pa.int64()),
            "user_age_bucket": i64(cols["age"]),
            "user_gender": i64(cols["gender"]),
            "hour": i64(cols["hour"]),
            "device": i64(cols["device"]),
            "position": i64(cols["position"]),
            "price": pa.array(cols["price"][rows], type=pa.float64()),
            "hist_item_id": hist_item_col,
            "hist_cate_id": hist_cate_col,
            "click": i64(cols["click"]),
            "ts": i64(cols["ts"]),
            "true_prob": pa.array(cols["true_prob"][rows], type=pa.float64()),
        }
    )


def split_rows(config: SyntheticConfig, n: int) -> dict[str, np.ndarray]:
    """Row indices (into the time-ordered impressions) of each split, each in time order."""
    n_train = int(round(config.train_frac * n))
    n_valid = int(round(config.valid_frac * n))
    if config.split == "time":
        perm = np.arange(n)
    else:
        perm = np.random.Generator(np.random.PCG64(np.random.SeedSequence(config.seed).spawn(6)[5])).permutation(n)
    parts = {"train": perm[:n_train], "valid": perm[n_train : n_train + n_valid], "test": perm[n_train + n_valid :]}
    return {k: np.sort(v) for k, v in parts.items()}


def _split_meta(cols: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    y = cols["click"][rows]
    p = cols["true_prob"][rows]
    return {
        "rows": int(rows.size),
        "positive_rate": float(y.mean()) if rows.size else float("nan"),
        "mean_true_prob": float(p.mean()) if rows.size else float("nan"),
        "oracle_auc": rank_auc(y, p),
        "oracle_logloss": log_loss(y, p) if rows.size else float("nan"),
        "component_auc": {k: rank_auc(y, cols[k][rows]) for k in ("F", "I", "R")},
        "mean_history_len": float(np.diff(cols["hist_offsets"])[rows].mean()) if rows.size else 0.0,
    }


def _marker_ok(out_dir: Path, key: str) -> bool:
    marker = out_dir / MARKER_NAME
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("key") != key:
        return False
    needed = [out_dir / f"{s}.parquet" for s in SPLITS] + [out_dir / META_NAME]
    return all(p.exists() for p in needed)


def generate_synthetic(config: SyntheticConfig | str | None, out_dir: str | Path) -> DatasetSpec:
    """Write train/valid/test Parquet, meta.json and dataset.yaml into `out_dir`; return the spec.

    `config` may be a SyntheticConfig, a preset name ('tiny', 'default', 'relevance') or None (the
    default).
    Generation is skipped when `out_dir` already holds a marker for the same config hash; the
    marker is written last, so an interrupted run regenerates.
    """
    if config is None:
        config = SyntheticConfig()
    elif isinstance(config, str):
        config = preset(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = config.config_hash()
    files = {s: [str((out_dir / f"{s}.parquet").resolve())] for s in SPLITS}
    spec = synthetic_spec(config, files)
    if _marker_ok(out_dir, key):
        return spec

    (out_dir / MARKER_NAME).unlink(missing_ok=True)
    started = time.perf_counter()
    world, cols = simulate(config)
    splits = split_rows(config, config.n_impressions)
    for name, rows in splits.items():
        table = _table(cols, rows, world)
        path = out_dir / f"{name}.parquet"
        with atomic_write(path) as handle:
            pq.write_table(table, handle, compression="zstd")
    all_rows = np.arange(config.n_impressions)
    meta = {
        "name": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "config_hash": key,
        "config": config.model_dump(mode="json"),
        "splits": {name: _split_meta(cols, rows) for name, rows in splits.items()},
        "all": _split_meta(cols, all_rows),
        "n_stream_events": world.n_events,
        "generation_seconds": round(time.perf_counter() - started, 3),
        "hidden_columns": ["ts", "true_prob"],
    }
    atomic_write_text(out_dir / META_NAME, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    rel_spec = synthetic_spec(config, {s: [f"{s}.parquet"] for s in SPLITS})
    atomic_write_text(out_dir / SPEC_NAME, rel_spec.to_yaml())
    marker = {"key": key, "generator_version": GENERATOR_VERSION, "config": config.model_dump(mode="json")}
    atomic_write_text(out_dir / MARKER_NAME, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return spec


__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SyntheticConfig",
    "SyntheticWorld",
    "build_world",
    "generate_synthetic",
    "log_loss",
    "oracle_auc",
    "preset",
    "rank_auc",
    "relevance_matrix",
    "relevance_score",
    "simulate",
    "split_rows",
    "synthetic_spec",
]
