"""`agenticrs evolve | history | show | report | audit`: the agentic loop and its records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import DEFAULT_DB, KnowledgeStore
from agenticrs.agents.knowledge.schema import CandidateRow, Intent
from agenticrs.agents.settings import EvolveSettings, build_evolve_settings, override_key, parse_duration
from agenticrs.cli.common import console, err_console, executor_options, friendly_errors, reporter, styled
from agenticrs.config import apply_overrides, dump_yaml

DB_OPTION = typer.Option(DEFAULT_DB, "--db", help="knowledge database: a SQLite path/URL or postgresql://...")

EXECUTOR_OPTIONS = executor_options("learners")


class LiveView:
    """The evolve screen: incumbent, candidate in training, counts and the last verdict."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.incumbent = "-"
        self.incumbent_metrics = ""
        self.current = "-"
        self.activity = "starting"
        self.last = ""
        self.counts: dict[str, int] = {}
        self.round = 0
        self.intent = 0
        self.executor = "local"
        self.running: dict[str, float] = {}  # label of a training in flight -> when it was submitted
        self.live: Live | None = None

    def render(self) -> Panel:
        """The panel; every value is a plain `Text` (candidates, rationales and reasons may come
        from an LLM and are never parsed as markup), whatever console renders it."""
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan")
        table.add_column()
        counts = "  ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "-"
        rows = [
            ("intent", f"{self.intent}   round {self.round}   {time.perf_counter() - self.started:,.0f} s"),
            ("incumbent", f"{self.incumbent}  {self.incumbent_metrics}"),
            ("candidate", self.current),
            ("now", self.activity),
            ("running", self._running()),
            ("verdicts", counts),
            ("last", self.last),
        ]
        for name, value in rows:
            table.add_row(Text(name), Text(str(value)))
        return Panel(table, title="agenticrs evolve", border_style="cyan")

    def _running(self) -> str:
        if not self.running:
            return "-"
        now = time.perf_counter()
        shown = [f"{label} ({now - since:,.0f} s)" for label, since in sorted(self.running.items())]
        return f"{len(shown)} on {self.executor}: " + ", ".join(shown)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "start":
            self.intent = info["intent"]
        elif event == "round":
            self.round = info["round"]
            agent = f"[{info['agent']}] " if info.get("agent") else ""
            self.current = f"{agent}#{info['id']} {info['candidate']}"
            self.activity = info.get("rationale") or "training the starting incumbent"
        elif event == "agent":
            self.activity = f"round {info['round']}: the {info['agent']} agent proposes"
        elif event in ("outer", "measured", "leak"):
            self.activity = {"outer": "outer A/B test in the simulator", "measured": "AutoPerf measured the candidate",
                             "leak": f"leak flagged and dropped: {info.get('field')}"}[event]
        elif event == "training":
            self.activity = f"training learner {info['index'] + 1}/{info['of']} (seed {info['seed']})"
            if "label" in info:
                self.running[info["label"]] = time.perf_counter()
        elif event == "trained":
            self.running.pop(info.get("label", ""), None)
        elif event in ("promoted", "held"):
            if event == "promoted":
                self.incumbent = info["candidate"]
                valid = info["metrics"].get("valid", {})
                auc, brier = valid.get("auc", float("nan")), valid.get("brier", float("nan"))
                self.incumbent_metrics = f"valid auc {auc:.4f}  brier {brier:.5f}"
            if info.get("round", 0) > 0:
                self.counts[event] = self.counts.get(event, 0) + 1
                self.last = info.get("reason", "")
        elif event == "ensnas":
            if not info["accepted"]:
                self.counts["rejected"] = self.counts.get("rejected", 0) + 1
            self.last = info["reason"]
        elif event == "decided":
            status = info["status"]
            if status in ("invalid", "failed"):
                self.counts[status] = self.counts.get(status, 0) + 1
        if self.live is not None:
            self.live.update(self.render())


class FallbackNotice:
    """Passes events on to the live view, and says on the console, once, when the chosen proposer
    gave no candidate and the built-in one stood in (with the LLM's URL and the reason)."""

    def __init__(self, settings: EvolveSettings, view: LiveView | None) -> None:
        self.settings = settings
        self.view = view
        self.warned = False

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "fallback" and not self.warned and not info.get("strict"):
            self.warned = True
            where = ""
            if self.settings.proposer == "llm":
                import os

                url = self.settings.llm.base_url or os.environ.get("AGENTICRS_LLM_BASE_URL") or "(no base_url set)"
                where = f" at {url}"
            err_console.print(styled(
                ("warning:", "bold yellow"),
                f" the {info['proposer']} proposer{where} gave no usable candidate in round {info['round']} "
                f"({info['reason']}); the built-in proposer stands in whenever that happens (use --strict to stop "
                "instead)",
            ), soft_wrap=True)
        if self.view is not None:
            self.view(event, info)


@friendly_errors
def evolve(
    dataset: str = typer.Option(None, "--dataset", "-d", help="registered data set or dataset-spec YAML"),
    objective: str = typer.Option(None, "--objective", help="gate metric: auc | logloss | brier (default auc)"),
    budget: str = typer.Option(None, "--budget", help="wall-clock budget, e.g. 3m, 20m, 1h"),
    candidates: int = typer.Option(None, "--candidates", "-n", help="number of rounds (one candidate each)"),
    proposer: str = typer.Option(None, "--proposer", help="builtin | optuna | llm"),
    agents: str = typer.Option(None, "--agents", help="agents that act, e.g. train,feature,perf (default: all "
                               "registered); the coordinator's bandit picks which acts each round"),
    db: str = DB_OPTION,
    resume: bool = typer.Option(False, "--resume", help="continue the newest unfinished intent (or --intent)"),
    intent: int = typer.Option(None, "--intent", help="the intent to resume"),
    seed: int = typer.Option(None, "--seed", "-s"),
    ensemble_size: int = typer.Option(None, "--ensemble-size", "-M", help="deployed ensemble size M (default 8)"),
    config: Path = typer.Option(None, "--config", "-c", help="EvolveSettings YAML"),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a setting, e.g. start.model=deepfm or start.epochs=3 (the starting candidate's "
        "epochs, learning_rate, batch_size, optimizer, embedding_l2 are start.*, not train.*)"),
    report: Path = typer.Option(None, "--report", help="write the HTML report here at the end"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no live view"),
    strict: bool = typer.Option(
        False, "--strict", help="stop (exit 2) when the llm/optuna proposer gives no candidate, e.g. an unreachable "
        "LLM server, instead of letting the built-in proposer stand in"),
    executor: str = EXECUTOR_OPTIONS[0],
    ray_address: str = EXECUTOR_OPTIONS[1],
    cpus_per_training: float = EXECUTOR_OPTIONS[2],
) -> None:
    """Evolve models: propose, train dual learners, decide with EnsNAS, check the gate, promote."""
    from agenticrs.agents.coordinator import Coordinator
    from agenticrs.agents.executor import executor_factory

    make_executor = executor_factory(executor, ray_address, cpus_per_training)  # a bad flag fails first

    resume_id = None
    budget_s = parse_duration(budget) if budget else None
    if resume or intent is not None:
        given = {"--dataset": dataset, "--objective": objective, "--proposer": proposer, "--seed": seed, "--agents": agents,
                 "--ensemble-size": ensemble_size, "--config": config}
        ignored = [flag for flag, value in given.items() if value is not None]
        if ignored:
            raise ValueError(f"{ignored[0]} has no effect with --resume: the intent continues with its stored settings "
                             "(only --candidates, --budget and llm.* keys apply)")
        store = KnowledgeStore(db, create=False)  # nothing to resume in a database that does not exist
        with store.transaction() as tx:
            row = tx.get(Intent, intent) if intent is not None else tx.latest_intent(status=("running", "failed"))
            if row is None:
                raise ValueError(f"no unfinished intent in {store.display} to resume")
            resume_id, stored = row.id, dict(row.settings)
        if candidates is not None:
            stored["candidates"] = candidates
        if budget_s is not None:
            stored["budget_s"] = budget_s
        # the stored settings hold no secret: an API key given by --set is given again on resume
        fixed = [o for o in overrides if not o.strip().startswith("llm.")]
        if fixed:
            raise ValueError(
                f"--set {'.'.join(override_key(fixed[0]))} has no effect with --resume: "
                f"intent {resume_id} continues with its stored settings (only llm.* keys, --candidates and --budget "
                "apply); start a new evolution to change it"
            )
        stored = apply_overrides(stored, overrides)
        settings = EvolveSettings.model_validate(stored)
        err_console.print(f"resuming intent {resume_id}")
    else:
        settings = build_evolve_settings(
            config, overrides, dataset=dataset, objective=objective, budget_s=budget_s, candidates=candidates,
            proposer=proposer, seed=seed, ensemble_size=ensemble_size,
            agents=[a.strip() for a in agents.split(",") if a.strip()] if agents else None,
        )
        store = KnowledgeStore(db)  # after the settings: a bad --set creates no database
        if store.created:
            err_console.print(f"new knowledge database: {store.display}")
    # secrets (llm.api_key) are excluded from every dump: not printed, not stored, not reported
    console.print(Syntax(dump_yaml(settings.model_dump(mode="json", exclude={"space"})), "yaml", theme="ansi_dark"))
    if settings.llm.api_key is not None:
        err_console.print("llm.api_key is used by this process only (never printed or stored); the recommended route "
                          "is the AGENTICRS_LLM_API_KEY environment variable, which `--resume` also reads")
    view = LiveView()
    observer = FallbackNotice(settings, None if quiet else view)
    coordinator = Coordinator(store, settings, observer=observer, strict_proposer=strict, executor=make_executor)
    view.executor = f"{coordinator.executor.name} (capacity {coordinator.executor.capacity()})"
    try:
        if quiet:
            summary = coordinator.run(resume_id)
        else:
            with Live(view.render(), console=err_console, refresh_per_second=4, transient=False) as live:
                view.live = live
                summary = coordinator.run(resume_id)
    finally:
        coordinator.executor.close()
    _print_history(store, summary.intent_id)
    _print_final(summary)
    if report is not None:
        from agenticrs.agents.report import write_report

        path = write_report(store, summary.intent_id, report)
        console.print(styled("report: ", (str(path), "bold")))
    store.close()


def _print_final(summary: Any) -> None:
    console.print(f"champion of intent {summary.intent_id}: #{summary.champion_id} {summary.champion}")
    console.print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())))
    if summary.agents:
        table = Table(title="agents (the coordinator's ledger)")
        for column in ("agent", "actions", "accepted", "spent s", "budget s"):
            table.add_column(column, justify="left" if column == "agent" else "right")
        for name, book in summary.agents.items():
            budget = "-" if book.get("budget_s") is None else f"{book['budget_s']:,.0f}"
            table.add_row(name, str(book["actions"]), str(book["accepted"]), f"{book['spent_s']:,.1f}", budget)
        console.print(table)
    if summary.final:
        table = Table(title="test split (never used for a decision): 2-learner ensembles")
        table.add_column("model")
        for metric in ("auc", "logloss", "brier"):
            table.add_column(metric, justify="right")
        for name, metrics in summary.final.items():
            table.add_row(name, *(f"{metrics[m]:.5f}" for m in ("auc", "logloss", "brier")))
        console.print(table)


def _resolve_intent(tx: Any, intent: int | None) -> Intent:
    row = tx.get(Intent, intent) if intent is not None else tx.latest_intent()
    if row is None:
        raise ValueError("the knowledge database holds no intent yet (run `agenticrs evolve` first)")
    return row


def _print_history(store: KnowledgeStore, intent_id: int | None) -> None:
    with store.transaction() as tx:
        intent = _resolve_intent(tx, intent_id)
        rows = tx.candidates(intent.id)
        comparisons = {c.candidate_id: c for c in tx.comparisons(intent.id) if c.split == "valid"}
        decisions: dict[int, str] = {}
        for decision in tx.decisions(intent_id=intent.id):
            decisions[decision.candidate_id] = decision.reason
        champions = {c.candidate_id for c in tx.lineage(intent.id)}
    table = Table(title=f"intent {intent.id}: {intent.text} [{intent.status}]")
    for name, justify in [("round", "right"), ("id", "right"), ("proposer", "left"), ("candidate", "left"),
                          ("status", "left"), ("G_acc", "right"), ("G_div", "right"), ("gain (CI low)", "right"),
                          ("reason", "left")]:
        table.add_column(name, justify=justify, overflow="fold")
    for row in rows:
        comp = comparisons.get(row.id)
        gains = (f"{comp.gain_accuracy:+.2e}", f"{comp.gain_diversity:+.2e}",
                 f"{comp.improvement:+.2e} ({comp.ci_low:+.1e})") if comp else ("", "", "")
        status = row.status + (" ★" if row.id in champions else "")
        reason = decisions.get(row.id, "")
        table.add_row(str(row.round), str(row.id), row.proposer, Candidate.model_validate(row.config).describe(),
                      status, *gains, reason[:90])
    console.print(table)


@friendly_errors
def history(
    db: str = DB_OPTION,
    intent: int = typer.Option(None, "--intent", help="intent id (default: the newest)"),
) -> None:
    """Every candidate of an intent with its gains and verdict."""
    store = KnowledgeStore(db, readonly=True)
    _print_history(store, intent)
    with store.transaction() as tx:
        intents = tx.intents()
    if len(intents) > 1:
        console.print("intents: " + ", ".join(f"{i.id} [{i.status}] {i.text}" for i in intents))


@friendly_errors
def show(
    candidate: int = typer.Argument(..., help="candidate id (see `agenticrs history`)"),
    db: str = DB_OPTION,
) -> None:
    """One candidate: its config, why it was proposed, its learners, statistics and decisions."""
    store = KnowledgeStore(db, readonly=True)
    with store.transaction() as tx:
        row = tx.get(CandidateRow, candidate)
        trainings = tx.trainings(candidate_id=candidate)
        decisions = tx.decisions(candidate_id=candidate)
        comparisons = [c for c in tx.comparisons(row.intent_id) if c.candidate_id == candidate]
        lessons = [lesson for lesson in tx.lessons(row.intent_id) if lesson.candidate_id == candidate]
        artifacts = tx.artifacts(candidate_id=candidate)
    console.print(styled((f"candidate {row.id}", "bold"), f" (intent {row.intent_id}, round {row.round}) - {row.status}"))
    console.print(f"proposer: {row.proposer}  mutation: {row.mutation}  parent: {row.parent_id}")
    console.print(f"rationale: {row.rationale}")
    console.print(f"hash {row.config_hash}  parameters {row.parameters}  latency {row.latency_ms or 0:.1f} ms/1k rows")
    console.print(Syntax(dump_yaml(row.config), "yaml", theme="ansi_dark"))
    if trainings:
        table = Table(title="learners")
        for col in ("role", "seed", "status", "epochs", "cost s", "valid auc", "valid brier", "gate auc"):
            table.add_column(col)
        for t in trainings:
            valid, gate = t.metrics.get("valid", {}), t.metrics.get("gate", {})
            table.add_row(t.role, str(t.seed), t.status, str(t.epochs or ""), f"{t.cost_s or 0:.1f}",
                          f"{valid.get('auc', float('nan')):.5f}", f"{valid.get('brier', float('nan')):.5f}",
                          f"{gate.get('auc', float('nan')):.5f}")
        console.print(table)
    for comp in comparisons:
        table = Table(title=f"EnsNAS on {comp.split} (M={comp.ensemble_size}) vs incumbent #{comp.incumbent_id}")
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for name in ("error", "bias", "variance", "covariance", "correlation", "delta_error", "gain_accuracy",
                     "gain_diversity", "gain_variance_shift", "predicted_candidate", "predicted_incumbent",
                     "improvement", "ci_low", "ci_high", "exact_condition", "paper_condition"):
            value = getattr(comp, name)
            table.add_row(name, f"{value:.6g}" if isinstance(value, float) else str(value))
        console.print(table)
    for d in decisions:
        console.print(styled((d.gate, "bold"), f": {'accepted' if d.accepted else 'rejected'} - {d.reason}"))
    for lesson in lessons:
        console.print(f"lesson ({lesson.scope}): {lesson.text}")
    for a in artifacts:
        console.print(f"artifact {a.kind}: {a.path}")


@friendly_errors
def report(
    db: str = DB_OPTION,
    intent: int = typer.Option(None, "--intent", help="intent id (default: the newest)"),
    out: Path = typer.Option(Path("runs/evolve-report.html"), "--out", "-o", help="the HTML file to write"),
) -> None:
    """A self-contained HTML report of an intent."""
    from agenticrs.agents.report import write_report

    store = KnowledgeStore(db, readonly=True)
    with store.transaction() as tx:
        intent_id = _resolve_intent(tx, intent).id
    path = write_report(store, intent_id, out)
    console.print(styled("report: ", (str(path), "bold")))


@friendly_errors
def audit(
    db: str = DB_OPTION,
    intent: int = typer.Option(None, "--intent", help="intent id (default: the newest)"),
    candidate: int = typer.Option(None, "--candidate", help="candidate to audit (default: the newest trained one)"),
    ensemble_size: int = typer.Option(8, "--ensemble-size", "-M", help="size of the real ensembles"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Train real M-ensembles of the incumbent and a candidate; record predicted vs measured error
    (2 x M learners; the dual learners of each side are reused, so 2 x (M - 2) are trained)."""
    from agenticrs.agents.coordinator import Coordinator

    store = KnowledgeStore(db, create=False)
    with store.transaction() as tx:
        row = _resolve_intent(tx, intent)
        settings = EvolveSettings.model_validate(row.settings)
        intent_id = row.id
        rows = tx.candidates(intent_id)
        lineage = tx.lineage(intent_id)
    if candidate is None:
        trained = [r for r in rows if r.round > 0 and r.status in ("accepted", "rejected", "gate_failed", "promoted")]
        if not trained:
            raise ValueError(f"intent {intent_id} has no trained candidate to audit")
        candidate = trained[-1].id
    target = next((r for r in rows if r.id == candidate), None)
    if target is None:
        raise ValueError(f"candidate {candidate} is not part of intent {intent_id}")
    incumbent = target.parent_id or lineage[0].candidate_id
    progress = reporter(quiet)
    coordinator = Coordinator(store, settings, reporter=progress)
    coordinator.open_intent(intent_id)
    total = 2 * ensemble_size
    with progress.task(f"audit: {total} learners of #{candidate} and #{incumbent}", total=total) as task:

        def advance(event: str, info: dict[str, Any]) -> None:
            if event == "trained":
                task.advance(1, learner=f"#{info['candidate_id']} seed {info['seed']}"
                             + (" (stored)" if info.get("cached") else ""))

        coordinator.observer = advance
        records = coordinator.run_audit(candidate, incumbent, ensemble_size)
    table = Table(title=f"calibration audit: candidate #{candidate} vs incumbent #{incumbent}, M={ensemble_size}")
    for col in ("split", "cand predicted", "cand measured", "inc predicted", "inc measured", "pred gain", "meas gain", "agree"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(r["split"], *(f"{r[k]:.6f}" for k in ("candidate_predicted", "candidate_measured",
                                                            "incumbent_predicted", "incumbent_measured")),
                      f"{r['predicted_improvement']:+.2e}", f"{r['measured_improvement']:+.2e}", str(r["verdict_agrees"]))
    console.print(table)
