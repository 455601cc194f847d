"""`agenticrs reproduce` (check a method card's claim) and `agenticrs cards` (list the shipped cards)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from agenticrs.agents.knowledge import DEFAULT_DB, KnowledgeStore
from agenticrs.agents.paper.card import CARDS, resolve_card
from agenticrs.agents.paper.reproduce import ReproduceOptions, ReproductionResult
from agenticrs.agents.paper.reproduce import reproduce as run_reproduction
from agenticrs.cli.common import console, err_console, executor_options, friendly_errors
from agenticrs.runtime.files import atomic_write_json

EXECUTOR_OPTIONS = executor_options("runs")


def _num(value: Any, fmt: str = "+.4f") -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def reproduction_table(results: list[ReproductionResult]) -> Table:
    """One row per (card, data set, baseline): the claim, the paired effect with its interval, the
    verdict, what the README's tables say (expected), the paper's figure and the training time."""
    table = Table(title="Reproductions (paired over seeds, test split)")
    for column in ("card", "data set", "claim", "seeds", "method", "baseline", "effect [CI]", "verdict",
                   "README says", "paper's figure", "train s"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("card", "data set", "claim", "verdict") else "right")
    for result in results:
        claim = result.card.claim
        for v in result.verdicts:
            if v.get("n"):
                effect = f"{v['mean']:+.4f}" + (f" [{v['low']:+.4f}, {v['high']:+.4f}]" if v.get("low") is not None else "")
                means = (_num(v["method_mean"], ".4f"), _num(v["baseline_mean"], ".4f"))
            else:
                effect, means = v.get("reason", ""), ("", "")
            figure = _num(claim.reported_effect) + (f" ({claim.reported_dataset})" if claim.reported_dataset else "")
            expected = v.get("expected") or ""
            if v.get("agrees") is not None:
                expected += " (agrees)" if v["agrees"] else " (differs)"
            against = f"{claim.metric} {claim.direction} vs {v['baseline']}" + ("" if v["claim"] else " (extra)")
            table.add_row(
                result.card.name, v["dataset"], against,
                str(v.get("n", 0)), means[0], means[1], effect, v["verdict"], expected, figure, f"{result.wall_s:,.0f}",
            )  # fmt: skip
    return table


@friendly_errors
def reproduce(
    card: str = typer.Argument(None, help="a shipped card's name (see `agenticrs cards`) or a card YAML file"),
    every: bool = typer.Option(False, "--all", help="reproduce every shipped card"),
    db: str = typer.Option(DEFAULT_DB, "--db", help="knowledge database: a SQLite path/URL or postgresql://..."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="run directories go under RUNS/reproduce/CARD"),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="processed-data cache (default .cache/agenticrs)"),
    seeds: int = typer.Option(None, "--seeds", help="the card's first N seeds (default: all of them)"),
    step_budget: int = typer.Option(None, "--step-budget", help="replace every protocol's optimiser-step budget"),
    datasets: list[str] = typer.Option(None, "--dataset", "-d",
                                       help="only this data set (repeatable); one the card lacks runs under --protocol-of; "
                                            "with --all, only the cards with a trial there"),
    protocol_of: str = typer.Option(None, "--protocol-of", help="the card data set whose protocol a new data set uses"),
    level: float = typer.Option(0.95, "--level", help="confidence level of the paired interval"),
    json_out: Path = typer.Option(None, "--json", help="also write the verdicts as JSON"),
    executor: str = EXECUTOR_OPTIONS[0],
    ray_address: str = EXECUTOR_OPTIONS[1],
    cpus_per_training: float = EXECUTOR_OPTIONS[2],
    adopt_runs: list[Path] = typer.Option(None, "--adopt-runs",
                                          help="a folder of finished sequential runs (e.g. bench/gr_benchmark.py's "
                                               "--runs-dir; repeatable): a run whose job is exactly an arm's is read "
                                               "back instead of retrained"),
) -> None:
    """Check a method card's claim: train its method and baselines over its seeds and data sets, verdict from the
    paired difference (holds / not shown / contradicted), everything recorded in the knowledge layer. Run again to
    resume: finished runs are not retrained."""
    from agenticrs.agents.executor import executor_factory

    make_executor = executor_factory(executor, ray_address, cpus_per_training)  # a bad flag fails first
    if every == (card is not None):
        raise ValueError("give a card (name or YAML file) or --all, not both and not neither")
    names = CARDS.names() if every else [card]
    cards = [resolve_card(name) for name in names]  # every card validated before anything trains
    if every and datasets:  # --all on a data set: the cards that have a trial there
        cards = [c for c in cards if any(t.dataset in datasets for t in c.datasets)]
        if not cards:
            raise ValueError(f"no shipped card has a trial on {', '.join(datasets)}")
    options = ReproduceOptions(seeds=seeds, step_budget=step_budget, datasets=datasets or None,
                               protocol_of=protocol_of, level=level)  # fmt: skip
    store = KnowledgeStore(db)
    results = []
    try:
        for method_card in cards:
            results.append(run_reproduction(method_card, store, runs_dir, cache_dir, options,
                                             on_event=lambda line: err_console.print(line),
                                             executor=make_executor, adopt_runs=adopt_runs or None))  # fmt: skip
    finally:
        store.close()
    console.print(reproduction_table(results))
    for result in results:
        for lesson in result.lessons:
            console.print(f"lesson: {lesson}")
    if json_out is not None:
        atomic_write_json(json_out, [{"card": r.card.name, "reproduction": r.reproduction_id, "wall_s": r.wall_s,
                                      "claim": r.card.claim.model_dump(mode="json"), "verdicts": r.verdicts}
                                     for r in results])  # fmt: skip
        console.print(f"wrote {json_out}")


@friendly_errors
def cards() -> None:
    """The shipped method cards: the claim, the data sets and what the README's tables say."""
    table = Table(title="Method cards")
    for column in ("card", "paper", "claim", "baselines", "data sets (README says)", "seeds"):
        table.add_column(column)
    for name in CARDS.names():
        card = resolve_card(name)
        table.add_row(name, card.paper, card.claim.statement, ", ".join(b.name for b in card.baselines),
                      ", ".join(f"{t.dataset} ({t.expected or '?'})" for t in card.datasets),
                      ",".join(map(str, card.seeds)))  # fmt: skip
    console.print(table)


@friendly_errors
def draft(
    abstract: Path = typer.Argument(..., help="a text file with the paper's abstract"),
    out: Path = typer.Option(Path("drafts"), "--out", "-o", help="where the card (and the module) are written"),
    code: bool = typer.Option(True, "--code/--no-code", help="also ask for a model module (vetted in the sandbox)"),
    then_reproduce: bool = typer.Option(False, "--reproduce", help="reproduce the drafted card when it is ready"),
    llm_url: str = typer.Option(None, "--llm-url", help="OpenAI-compatible API root (or AGENTICRS_LLM_BASE_URL)"),
    llm_model: str = typer.Option(None, "--llm-model", help="the endpoint's model name (or AGENTICRS_LLM_MODEL)"),
    db: str = typer.Option(DEFAULT_DB, "--db", help="knowledge database: a SQLite path/URL or postgresql://..."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir"),
    cache_dir: Path = typer.Option(None, "--cache-dir"),
    step_budget: int = typer.Option(None, "--step-budget", help="with --reproduce: replace the protocol's step budget"),
    seeds: int = typer.Option(None, "--seeds", help="with --reproduce: the card's first N seeds"),
) -> None:
    """Draft a method card (and a model module) from a paper's abstract with an LLM; the card is validated, the
    module only ever runs in the sandbox and must pass the model contract. The API key comes from the environment
    (AGENTICRS_LLM_API_KEY or OPENAI_API_KEY)."""
    from agenticrs.agents.paper.draft import draft_method
    from agenticrs.agents.proposers.llm import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, LLMSettings

    if not abstract.is_file():
        raise FileNotFoundError(f"no abstract file at {abstract}")
    if not (llm_url or os.environ.get(ENV_BASE_URL)) or not (llm_model or os.environ.get(ENV_MODEL)):
        raise ValueError(f"draft needs an endpoint: --llm-url (or {ENV_BASE_URL}) and --llm-model (or {ENV_MODEL}); "
                         f"the API key is read from {ENV_API_KEY} or OPENAI_API_KEY")  # fmt: skip
    settings = LLMSettings.resolve(base_url=llm_url, model=llm_model)
    store = KnowledgeStore(db)
    try:
        result = draft_method(abstract.read_text(), settings, out, store, with_code=code, cache_dir=cache_dir)
        console.print(f"draft: {result.status} ({result.reason}) in {result.seconds:.1f} s")
        if result.card_path is not None:
            console.print(f"card: {result.card_path}" + (f"  module: {result.code_path}" if result.code_path else ""))
        for lesson in result.lessons:
            console.print(f"lesson: {lesson}")
        if result.status != "ready" or result.card is None:
            raise typer.Exit(code=2 if result.status != "ready" else 0)
        if then_reproduce:
            options = ReproduceOptions(seeds=seeds, step_budget=step_budget)
            reproduction = run_reproduction(result.card, store, runs_dir, cache_dir, options,
                                            on_event=lambda line: err_console.print(line))  # fmt: skip
            console.print(reproduction_table([reproduction]))
    finally:
        store.close()
