"""`agenticrs models`: the model zoo of every task (CTR, sequential) with papers, needs and defaults."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from agenticrs.cli.common import console, friendly_errors, styled
from agenticrs.models.base import MODELS, Model, list_models

# the config field that says how wide a model is, per task (CTR: embeddings; SASRec: dim; TIGER: d_model)
_WIDTH_FIELDS = ("embedding_dim", "dim", "d_model")


def _needs(cls: type[Any]) -> str:
    """What the model reads, in words: CTR fields / behaviour sequences, or item sequences (+ semantic IDs)."""
    if isinstance(cls, type) and issubclass(cls, Model):
        needs = "behaviour sequence + target" if cls.inputs.needs_target_sequence else "fields"
        if cls.inputs.named_fields:
            needs += f" incl. {', '.join(cls.inputs.named_fields)}"
        if cls.inputs.request_centric:
            needs += " (request-centric: uses request ids when the data has them)"
        if cls.inputs.multi_task and cls.inputs.min_labels > 1:
            needs += f" + {cls.inputs.min_labels} labels (multi-task: a click -> conversion funnel)"
        elif cls.inputs.multi_task:
            needs += " + one or more labels (multi-task: one head each)"
        return needs
    from agenticrs.gr.base import SequentialModel
    from agenticrs.gr.zoo import needs_semantic_ids

    if isinstance(cls, type) and issubclass(cls, SequentialModel):
        return "item sequences + semantic IDs (tokenizer)" if needs_semantic_ids(cls) else "item sequences"
    return getattr(cls, "needs", "?")


def _defaults(cls: type[Any]) -> dict[str, Any]:
    """The model's default hyper-parameters (a CTR model's may differ from its bare Config)."""
    config = cls.default_config() if issubclass(cls, Model) else cls.Config()
    return config.model_dump()


def _compact(value: Any) -> str:
    """A default as one unbreakable word (`[400,400]`), so a wrapped line never splits a setting."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)


def _print_verbose(names: list[str]) -> None:
    """One block per model: name, task and paper, what it needs, then every default setting as
    `key=value` words (wrapped between settings, never inside one: readable at 80 columns)."""
    for name in names:
        cls = MODELS[name]
        console.print(styled((name, "bold"), f"  [{cls.task}]"))
        defaults = "  ".join(f"{k}={_compact(v)}" for k, v in _defaults(cls).items())
        lines = [f"paper: {cls.paper}", f"needs: {_needs(cls)}", f"defaults: {defaults}"]
        if cls.train_defaults:
            lines.append("train defaults: " + "  ".join(f"train.{k}={_compact(v)}" for k, v in cls.train_defaults.items()))
        for line in lines:  # indented, wrapped lines included
            console.print(Padding(Text(line), (0, 0, 0, 2)))


@friendly_errors
def models(verbose: bool = typer.Option(False, "--verbose", "-v", help="show every default hyper-parameter")) -> None:
    """List the registered models of every task (ctr, sequential, retrieval, multi-objective retrieval)."""
    names = sorted(list_models(None), key=lambda n: (MODELS[n].task != "ctr", MODELS[n].task, n))
    if verbose:
        _print_verbose(names)
        return
    table = Table(title="model zoo")
    # names (what one types) and the width setting are never cut or folded; the paper and needs wrap
    table.add_column("name", no_wrap=True, min_width=max(len(n) for n in names))
    table.add_column("task", no_wrap=True)
    table.add_column("paper", overflow="fold", ratio=3)
    table.add_column("needs", overflow="fold", ratio=2)
    table.add_column("width", no_wrap=True)
    for name in names:
        cls = MODELS[name]
        defaults = _defaults(cls)
        shown = next((f"{f}={defaults[f]}" for f in _WIDTH_FIELDS if f in defaults), "")
        table.add_row(name, cls.task, cls.paper, _needs(cls), shown)
    console.print(table)
