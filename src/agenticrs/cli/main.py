"""The `agenticrs` command line: thin; parses arguments, calls the layers, renders results."""

from __future__ import annotations

import typer

from agenticrs.cli.datasets import datasets
from agenticrs.cli.demo import demo
from agenticrs.cli.evolve import audit, evolve, history, report, show
from agenticrs.cli.export import export
from agenticrs.cli.models import models
from agenticrs.cli.pipeline import pipeline
from agenticrs.cli.profile import profile
from agenticrs.cli.reproduce import cards, draft, reproduce
from agenticrs.cli.serve import rollout, serve
from agenticrs.cli.simulate import simulate
from agenticrs.cli.stream import stream
from agenticrs.cli.train import evaluate, predict, recommend, train
from agenticrs.cli.ui import ui

app = typer.Typer(
    name="agenticrs",
    help="agenticrs: modern recommenders, and agents that evolve, verify and ship them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(datasets)
app.command()(models)
app.command()(train)
app.command()(evaluate)
app.command()(predict)
app.command()(recommend)
app.command()(demo)
app.command()(simulate)
app.command()(stream)
app.command()(evolve)
app.command()(history)
app.command()(show)
app.command()(report)
app.command()(audit)
app.command()(cards)
app.command()(reproduce)
app.command()(draft)
app.command()(export)
app.command()(serve)
app.command()(rollout)
app.command()(pipeline)
app.command()(profile)
app.command()(ui)

if __name__ == "__main__":
    app()
