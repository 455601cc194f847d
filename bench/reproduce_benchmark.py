"""Paper autotrain benchmark: every shipped method card reproduced, and the LLM path on scripted answers.

Part 1 (cards): one row per (card, data set) against the card's claim baseline: the claim, the
verdict (paired over seeds, 95 % t interval on the test split), the effect with its interval, what
the README's own tables say (`expected` in the card) and whether the two agree, the paper's figure
where known, and the training seconds the verdict rests on. Reproductions live in the knowledge
database (`--db`), so a second run (or a run after `agenticrs reproduce` with the same options)
reads finished runs back instead of retraining them, and a killed run resumes.

Part 2 (`--llm`): the LLM path against a fake OpenAI-compatible endpoint on 127.0.0.1 that answers
with scripted answers (a valid card and module, an invalid card, a module that fails the
contract, three malicious modules): how many drafts were ready, how many malicious modules were
stopped, and the time from the abstract to a verdict for the valid one (tiny settings).

    python bench/reproduce_benchmark.py --dataset frappe --json bench/results/reproduce_frappe.json
    python bench/reproduce_benchmark.py --cards cdnet --dataset sim-small --json out.json
    python bench/reproduce_benchmark.py --cards none --llm --json bench/results/reproduce_llm.json
    python bench/reproduce_benchmark.py --cards cdnet --dataset sim-small --executor ray --json out.json
    python bench/reproduce_benchmark.py --cards tiger --dataset amazon_beauty --adopt-runs bench/out/gr-runs-ids1024 \
        --json bench/results/reproduce_gr_beauty.json

`--adopt-runs DIR` reads back a finished sequential run in DIR (a `bench/gr_benchmark.py` run
folder) whose job is exactly the one an arm asks for, instead of training it again (hours on
Amazon); the record names the adopted folder. `--executor ray` trains the runs as Ray tasks
(`--ray-address`, `--cpus-per-training`), as `agenticrs reproduce` does; the verdicts are those of
the local executor.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.paper.card import CARDS, resolve_card
from agenticrs.agents.paper.reproduce import ReproduceOptions, reproduce
from agenticrs.runtime.files import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def card_rows(args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    names = CARDS.names() if args.cards == "all" else [n for n in args.cards.split(",") if n and n != "none"]
    rows = []
    from agenticrs.agents.executor import executor_factory

    make_executor = executor_factory(args.executor, args.ray_address, args.cpus_per_training)
    store = KnowledgeStore(str(args.db))
    try:
        for name in names:
            card = resolve_card(name)
            datasets = [d for d in args.datasets if any(t.dataset == d for t in card.datasets)] if args.datasets else None
            if args.datasets and not datasets:
                console.print(f"{name}: no trial on {args.datasets}; skipped")
                continue
            options = ReproduceOptions(seeds=args.seeds, step_budget=args.step_budget, datasets=datasets)
            started = time.perf_counter()
            result = reproduce(card, store, args.runs_dir, args.cache_dir, options, on_event=console.print,
                               executor=make_executor, adopt_runs=args.adopt_runs)
            for v in result.verdicts:
                if not v["claim"]:
                    continue
                rows.append({
                    "card": name, "claim": card.claim.statement, "metric": card.claim.metric, "dataset": v["dataset"],
                    "baseline": v["baseline"], "verdict": v["verdict"], "n": v.get("n", 0), "effect": v.get("mean"),
                    "low": v.get("low"), "high": v.get("high"), "method_mean": v.get("method_mean"),
                    "baseline_mean": v.get("baseline_mean"), "expected": v.get("expected"), "agrees": v.get("agrees"),
                    "reported_effect": card.claim.reported_effect, "reported_dataset": card.claim.reported_dataset,
                    "train_s": result.wall_s, "wall_s_this_call": time.perf_counter() - started,
                    "trained": result.trained, "reused": result.reused, "step_budget": args.step_budget,
                    "executor": args.executor, "seeds": v.get("seeds"),
                    "reason": v.get("reason"), "runs": trial_runs(store, result.reproduction_id, v["dataset"]),
                })  # fmt: skip
    finally:
        store.close()
    return rows


def trial_runs(store: KnowledgeStore, reproduction_id: int, dataset: str) -> list[dict[str, Any]]:
    """Every finished run of one trial with its test metrics (every arm, every seed), so that a
    record carries the per-seed figures its verdict rests on, not only their means."""
    with store.transaction() as tx:
        runs = [r for r in tx.reproduction_runs(reproduction_id) if r.dataset == dataset and r.status == "done"]
        return [{"arm": r.arm, "seed": r.seed, "cost_s": r.cost_s,
                 **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float, str)) or v is None}}
                for r in runs]  # fmt: skip


def card_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Method cards reproduced (paired over seeds, 95 % t interval, test split)")
    for c in ("card", "data set", "claim vs", "seeds", "method", "baseline", "effect [95% CI]", "verdict",
              "README says", "paper's figure", "train s"):  # fmt: skip
        table.add_column(c, justify="left" if c in ("card", "data set", "claim vs", "verdict", "README says") else "right")
    for r in rows:
        effect = (f"{r['effect']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]" if r.get("low") is not None
                  else (f"{r['effect']:+.4f}" if r.get("effect") is not None else r.get("reason") or ""))  # fmt: skip
        said = (r["expected"] or "") + ("" if r["agrees"] is None else " (agrees)" if r["agrees"] else " (differs)")
        figure = "" if r["reported_effect"] is None else f"{r['reported_effect']:+.4f} ({r['reported_dataset']})"
        table.add_row(r["card"], r["dataset"], f"{r['metric']} vs {r['baseline']}", str(r["n"]),
                      "" if r["method_mean"] is None else f"{r['method_mean']:.4f}",
                      "" if r["baseline_mean"] is None else f"{r['baseline_mean']:.4f}", effect, r["verdict"], said,
                      figure, f"{r['train_s']:,.0f}")  # fmt: skip
    return table


def llm_path(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """The drafting path on scripted answers; the valid draft reproduced at tiny settings."""
    sys.path[:0] = [str(ROOT / "tests" / "agents"), str(ROOT / "tests" / "agents" / "paper")]
    from fake_openai import FakeOpenAI
    from generated_modules import INVALID, VALID, open_socket, spawn_shell, write_outside

    from agenticrs.agents.paper.draft import draft_method, scripted_answer
    from agenticrs.agents.proposers.llm import LLMSettings

    card = {"name": "tinynet", "paper": "scripted", "claim": {"statement": "beats LR", "baseline": "lr"},
            "model": {"name": "tinynet", "params": {"hidden": 16}}, "baselines": [{"name": "lr"}],
            "datasets": [{"dataset": "synthetic-tiny", "protocol": {"step_budget": 40, "eval_every_steps": 10,
                                                                     "train": {"batch_size": 512, "num_threads": 1}}}],
            "seeds": [1, 2, 3]}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="agenticrs-llm-bench-"))
    bad_card = {**card, "name": "badcard", "model": {"name": "deepfm"}, "baselines": [{"name": "xgboost"}],
                "claim": {"statement": "x", "baseline": "xgboost"}}  # fmt: skip
    scripted = [
        ("valid card + module", scripted_answer(card, VALID), "ready"),
        ("invalid card", scripted_answer(bad_card), "invalid"),
        ("module failing the contract", scripted_answer(card, INVALID), "failed"),
        ("writes outside its folder", scripted_answer(card, write_outside(work / "pwned")), "blocked"),
        ("opens a socket", scripted_answer(card, open_socket(9)), "blocked"),
        ("spawns a shell", scripted_answer(card, spawn_shell(work / "shell")), "blocked"),
    ]
    store = KnowledgeStore(str(work / "k.db"))
    answers: list[dict[str, Any]] = []
    try:
        for label, answer, expected in scripted:
            with FakeOpenAI(responder=lambda _request, a=answer: a, api_key=None) as server:
                settings = LLMSettings(base_url=server.base_url, model="scripted")
                started = time.perf_counter()
                result = draft_method("scripted abstract", settings, work / label.replace(" ", "-"), store,
                                      cache_dir=args.cache_dir)  # fmt: skip
                record = {"answer": label, "expected": expected, "status": result.status, "reason": result.reason,
                          "draft_s": time.perf_counter() - started}  # fmt: skip
                if result.status == "ready" and result.card is not None:
                    reproduction = reproduce(result.card, store, work / "runs", args.cache_dir)
                    (verdict,) = reproduction.verdicts
                    record.update({"verdict": verdict["verdict"], "effect": verdict.get("mean"), "low": verdict.get("low"),
                                   "high": verdict.get("high")})  # fmt: skip
                    record["abstract_to_verdict_s"] = time.perf_counter() - started
                console.print(f"  {label}: {result.status} (expected {expected}) {result.reason[:120]}")
                answers.append(record)
        with store.transaction() as tx:
            lessons = len(tx.lessons())
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)  # drafts, sandboxes and runs of the scripted answers
    malicious = [a for a in answers if a["expected"] == "blocked"]
    return {"answers": answers, "as_expected": sum(a["status"] == a["expected"] for a in answers), "total": len(answers),
            "ready": sum(a["status"] == "ready" for a in answers),
            "malicious_stopped": sum(a["status"] == "blocked" for a in malicious), "malicious": len(malicious),
            "lessons": lessons}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cards", default="all", help="comma-separated card names, 'all' or 'none'")
    parser.add_argument("--dataset", dest="datasets", action="append", default=[],
                        help="only the cards' trials on this data set (repeatable)")
    parser.add_argument("--seeds", type=int, default=None, help="the cards' first N seeds (default: all)")
    parser.add_argument("--step-budget", type=int, default=None, help="replace the protocols' step budgets")
    parser.add_argument("--db", type=Path, default=Path("runs/reproduce.db"), help="knowledge database (resume)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/agenticrs"))
    parser.add_argument("--executor", default="local", choices=["local", "ray"],
                        help="where the cards' runs train: local (one at a time) | ray (Ray tasks, side by side)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: a private local instance)")
    parser.add_argument("--cpus-per-training", type=float, default=1.0, help="Ray: CPUs requested by each run")
    parser.add_argument("--adopt-runs", type=Path, action="append", default=[],
                        help="a folder of finished sequential runs (bench/gr_benchmark.py's --runs-dir; repeatable): "
                             "a run whose job is exactly an arm's is read back instead of retrained")
    parser.add_argument("--llm", action="store_true", help="also run the LLM path on the fake endpoint's scripted answers")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    console = Console(width=200)
    out: dict[str, Any] = {"cards": card_rows(args, console)}
    if out["cards"]:
        console.print(card_table(out["cards"]))
        judged = [r for r in out["cards"] if r["agrees"] is not None]
        console.print(f"verdicts agreeing with the README's tables: {sum(r['agrees'] for r in judged)} / {len(judged)}")
    if args.llm:
        out["llm"] = llm_path(args, console)
        llm = out["llm"]
        console.print(f"LLM path: {llm['as_expected']} / {llm['total']} scripted answers ended as expected; "
                      f"{llm['ready']} draft(s) ready, {llm['malicious_stopped']} / {llm['malicious']} malicious modules "
                      f"stopped, {llm['lessons']} lessons")  # fmt: skip
        for a in llm["answers"]:
            if "abstract_to_verdict_s" in a:
                console.print(f"abstract -> verdict: {a['abstract_to_verdict_s']:.1f} s "
                              f"({a['verdict']}, effect {a['effect']:+.4f})")
    atomic_write_json(args.json, out)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
