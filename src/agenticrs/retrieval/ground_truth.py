"""The simulator's ground truth for retrieval: which items a user would click or buy.

A retriever on logged data is usually scored against the next logged click, which only says what
the logging policy happened to show. The simulator knows the truth (`docs/simulator.md`): the
click probability of *every* catalogue item for a user,

    P(click) = σ(base + a_i + q_brand + e_user + w_int cos(u(d), v_i) − w_price s_u z_i + w_rel R(i, H)),

at the top position of the home feed (the scenario that recommends from the whole catalogue),
the hour effect averaged out. `relevant_items` ranks the launched items by that probability
(`objective="click"`) or by the probability of a click followed by a purchase
(`objective="purchase"`) and keeps each user's top `top_n`: recall@K is then the share of them a
retriever's top K holds (`set_recall@K`, `agenticrs.train.metrics`). Items not launched on the day
have probability 0 and are never relevant. Vectorised over a block of users x the whole
catalogue (the relevance term is a max over the history, computed as one batched product).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agenticrs.gr.sequences import EvalExamples
from agenticrs.sim.world import World, sigmoid
from agenticrs.train.metrics import Hits, set_metrics

Objective = Literal["click", "purchase"]


def true_scores(world: World, users: np.ndarray, history: np.ndarray, day: int, objective: Objective = "click",
                scenario: int = 0) -> np.ndarray:  # fmt: skip
    """(U, n_items) true P(click) (or P(click and purchase)) of every item for each user at
    position 0 of `scenario` on `day`; `history` (U, K) 0-based item indices, -1 padded, oldest
    first. Items not launched by `day` score 0."""
    users = np.asarray(users, np.int64)
    history = np.asarray(history, np.int64)
    if history.ndim != 2 or len(history) != len(users):
        raise ValueError(f"history must be (U, K) with U = {len(users)} users; got shape {history.shape}")
    n_items = world.n_items
    if history.size and (history.max() >= n_items or history.min() < -1):
        raise ValueError(f"history holds item indices outside 0..{n_items - 1} (and -1 for padding)")
    interest = world.interest(users, day)  # (U, d)
    latent = world.item_latent  # (I, d)
    cos = interest @ latent.T
    valid = history >= 0
    safe = np.where(valid, history, 0)
    # relevance R = max over history items of the same subcategory of (1 + cos(v_i, v_h)) / 2
    hist_cos = np.einsum("ukd,id->uki", latent[safe], latent, optimize=True)
    same_sub = valid[:, :, None] & (world.item_sub[safe][:, :, None] == world.item_sub[None, None, :])
    relevance = np.where(same_sub, (1.0 + hist_cos) / 2.0, 0.0).max(axis=1, initial=0.0)
    s = scenario
    logit = (
        world.scenario_array("base_logit")[s] + world.item_appeal[None, :] + world.brand_quality[world.item_brand][None, :]
        + (world.age_effect[world.user_age[users]] + world.gender_effect[world.user_gender[users]]
           + world.city_effect[world.user_city[users]])[:, None]
        + float(np.mean(world.hour_effect))
        + world.scenario_array("interest_weight")[s] * cos
        - world.scenario_array("price_weight")[s] * world.user_price_sensitivity[users][:, None] * world.item_price_z[None, :]
        + world.scenario_array("relevance_weight")[s] * relevance
    )  # fmt: skip
    p = sigmoid(logit)
    if objective == "purchase":
        flat_users = np.repeat(users, n_items)
        flat_items = np.tile(np.arange(n_items), len(users))
        p_cart, p_buy_cart, p_buy_direct = world.conversion_probabilities(flat_users, flat_items, np.full(len(flat_users), day))
        p = p * (p_cart * p_buy_cart + (1 - p_cart) * p_buy_direct).reshape(len(users), n_items)
    elif objective != "click":
        raise ValueError(f"objective must be 'click' or 'purchase'; got {objective!r}")
    launched = world.item_launch_day <= day
    return np.where(launched[None, :], p, 0.0)


def relevant_items(world: World, users: np.ndarray, history: np.ndarray, day: int, top_n: int = 50,
                   objective: Objective = "click", block: int = 64) -> np.ndarray:  # fmt: skip
    """(U, top_n) 0-based item indices: each user's `top_n` launched items by true probability,
    most likely first (computed in blocks of `block` users to bound memory)."""
    launched = int((world.item_launch_day <= day).sum())
    if not 1 <= top_n <= launched:
        raise ValueError(f"top_n must lie in 1..{launched} (the items launched by day {day}); got {top_n}")
    out = np.empty((len(users), top_n), np.int64)
    for start in range(0, len(users), block):
        scores = true_scores(world, users[start : start + block], history[start : start + block], day, objective)
        top = np.argpartition(-scores, top_n - 1, axis=1)[:, :top_n]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(top, order, axis=1)
    return out


def set_hits(ranked: np.ndarray, relevant: np.ndarray | Sequence[np.ndarray]) -> Hits:
    """`Hits` of ranked lists (U, K) against each query's relevant ids (a (U, N) array, -1
    padded, or a list of arrays). Ids must be >= 0; a list's duplicate ids count once."""
    ranked = np.asarray(ranked, np.int64)
    if isinstance(relevant, np.ndarray) and relevant.ndim == 2:
        rel_rows = np.repeat(np.arange(len(relevant)), relevant.shape[1])
        rel_ids = relevant.ravel()
    else:
        rel_rows = np.repeat(np.arange(len(relevant)), [len(r) for r in relevant])
        rel_ids = np.concatenate([np.asarray(r, np.int64) for r in relevant]) if len(relevant) else np.zeros(0, np.int64)
    keep = rel_ids >= 0
    rel_rows, rel_ids = rel_rows[keep], rel_ids[keep]
    if ranked.ndim != 2 or rel_rows.size and rel_rows.max() >= len(ranked):
        raise ValueError(f"ranked must be (U, K) with one row per query; got shape {ranked.shape}")
    span = int(max(ranked.max(initial=0), rel_ids.max(initial=0))) + 2
    rel_keys = np.unique(rel_rows * span + rel_ids)
    keys = np.arange(len(ranked))[:, None] * span + ranked
    hits = np.isin(keys, rel_keys) & (ranked >= 0)
    # a repeated id in one list counts once
    first = np.ones_like(hits)
    order = np.argsort(keys, axis=1, kind="stable")
    sorted_keys = np.take_along_axis(keys, order, axis=1)
    repeat = np.zeros_like(hits)
    repeat[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    np.put_along_axis(first, order, ~repeat, axis=1)
    relevant_count = np.bincount(rel_keys // span, minlength=len(ranked))
    return Hits(hits & first, relevant_count)



@dataclass
class Truth:
    """Evaluation examples and each one's relevant items (0-based world indices, (U, top_n))."""

    examples: EvalExamples
    relevant: np.ndarray


def simulator_truth(world: World, examples: EvalExamples, day: int, top_n: int = 50, objective: Objective = "click",
                    users: int | None = 1000, seed: int = 0, batch_size: int = 256) -> Truth:  # fmt: skip
    """Each example user's `top_n` truly most likely items on `day` (`relevant_items`).

    `examples` are leave-one-out examples of the simulator's click sequences (ids are the world's
    indices + 1); the relevance term reads the same click history the retriever sees (its last
    `world.config.history_len` items). `users`: a fixed, seeded sample of that many examples (the
    truth costs users x catalogue x history), None for all. Computed once, shared by every
    retriever scored against it."""
    if users is not None:
        examples = examples.sample(users, seed)
    hist_len = world.config.history_len
    relevant = []
    for batch in examples.batches(hist_len, batch_size):
        history = batch["history"].numpy() - 1  # right-aligned, padding -> -1 (order does not matter to R)
        relevant.append(relevant_items(world, batch["user"].numpy() - 1, history, day, top_n, objective))
    return Truth(examples, np.concatenate(relevant))


def truth_metrics(retriever: object, truth: Truth, ks: Sequence[int] = (50, 200), max_len: int = 50,
                  batch_size: int = 512) -> dict[str, float]:  # fmt: skip
    """`set_recall@k` and `set_ndcg@k` of a retriever's top max(ks) (`recommend(batch, k)`, item
    ids = world indices + 1) against the truth's relevant sets."""
    k = max(ks)
    lists = [np.asarray(retriever.recommend(batch, k)) - 1  # type: ignore[attr-defined]
             for batch in truth.examples.batches(max_len, batch_size)]  # fmt: skip
    hits = set_hits(np.concatenate(lists), truth.relevant)
    return set_metrics([f"set_{m}@{c}" for c in ks for m in ("recall", "ndcg")], hits)
