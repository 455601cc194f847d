"""`agenticrs pipeline`: A/B-test two retrieval -> ranking pipelines in the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from agenticrs.cli.common import console, friendly_errors


def _ranker(spec: str):  # noqa: ANN202 - a policy callable
    from agenticrs.sim.environment import OraclePolicy, PopularityPolicy, RandomPolicy
    from agenticrs.train.policy import RunPolicy

    named = {"oracle": OraclePolicy, "popularity": PopularityPolicy, "random": RandomPolicy}
    if spec in named:
        return named[spec]()
    if not Path(spec).is_dir():
        raise FileNotFoundError(f"ranker '{spec}' is neither one of {', '.join(named)} nor a run directory")
    return RunPolicy(spec)


@friendly_errors
def pipeline(
    retriever_a: str = typer.Option("popularity", "--retriever-a", help="popularity, co-occurrence or a two_tower / sasrec run"),
    retriever_b: str = typer.Option(..., "--retriever-b", help="popularity, co-occurrence or a two_tower / sasrec run"),
    ranker: str = typer.Option(..., "--ranker", help="a CTR run directory (or oracle, popularity, random)"),
    preset: str = typer.Option("small", "--preset", "-p", help="the simulator world (the retrievers' training data)"),
    seed: int = typer.Option(0, "--seed", "-s", help="the environment's requests and outcome draws"),
    k: int = typer.Option(200, "--k", help="items retrieved from the whole catalogue per request"),
    days: int = typer.Option(1, "--days"),
    no_index: bool = typer.Option(False, "--no-index", help="score every item exactly instead of the run's ANN index"),
    out: Path | None = typer.Option(None, "--json", help="write the comparison here"),
) -> None:
    """Serve two pipelines (retrieval top-K from the whole catalogue -> ranking -> the slate) to the
    same simulated requests and compare clicks, carts, purchases and GMV (lift, 95% CI)."""
    from agenticrs.gr.sequences import resolve_sequences
    from agenticrs.retrieval.pipeline import load_retriever, pipeline_ab_test
    from agenticrs.sim.config import sim_preset
    from agenticrs.sim.environment import Environment
    from agenticrs.sim.world import build_world

    world = build_world(sim_preset(preset))
    clicks = resolve_sequences(f"sim-{preset}")  # the logged click sequences the retrievers learn from
    arms = [load_retriever(spec, clicks, use_index=not no_index) for spec in (retriever_a, retriever_b)]
    names = (f"{Path(retriever_a).name}", f"{Path(retriever_b).name}")
    result = pipeline_ab_test(Environment(world, seed=seed), arms[0], arms[1], _ranker(ranker), k=k, days=days,
                              names=names)  # fmt: skip
    table = Table(title=f"pipelines on sim-{preset} (seed {seed}, {days} day(s), top {k} -> {Path(ranker).name})")
    for column in ("metric", f"A: {names[0]}", f"B: {names[1]}", "lift", "95% CI", "p"):
        table.add_column(column)
    for c in result.comparisons.values():
        table.add_row(c.metric, f"{c.mean_a:.4f}", f"{c.mean_b:.4f}", f"{c.lift:+.2%}",
                      f"[{c.ci_low:+.2%}, {c.ci_high:+.2%}]", f"{c.p_value:.3g}")  # fmt: skip
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"arms": names, "ranker": ranker, "k": k, "days": days, "seed": seed,
                                   "comparisons": result.rows()}, indent=1))  # fmt: skip
