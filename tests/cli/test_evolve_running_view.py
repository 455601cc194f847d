"""The evolve live view lists the trainings in flight (several at once on the Ray executor)."""

from __future__ import annotations

from rich.console import Console

from agenticrs.cli.evolve import LiveView


def shown(view: LiveView) -> str:
    console = Console(width=160, record=True)
    console.print(view.render())
    return console.export_text()


def test_the_live_view_lists_running_trainings() -> None:
    view = LiveView()
    view.executor = "ray (capacity 2)"
    assert "running    -" in shown(view)
    for seed in (11, 12):
        view("training", {"candidate_id": 3, "seed": seed, "index": seed - 11, "of": 2, "label": f"#3 member seed {seed}"})
    text = shown(view)
    assert "2 on ray (capacity 2): #3 member seed 11" in text and "#3 member seed 12" in text
    view("trained", {"candidate_id": 3, "seed": 11, "cached": False, "label": "#3 member seed 11"})
    text = shown(view)
    assert "1 on ray (capacity 2): #3 member seed 12" in text and "seed 11" not in text.split("running")[1]
