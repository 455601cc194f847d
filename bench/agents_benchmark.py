"""The agentic system II benchmark: AutoFeature on a world with known answers, and every agent
against AutoTrain alone at the same wall-clock budget.

Part `planted` (one world per seed: `small-planted`, a cross of user_segment x item_style in the
click function and a post-outcome `dwell_bucket` column): does the profile's leakage check flag
the leak, where does the planted cross rank among AutoFeature's cross options, and does an
evolution with AutoFeature alone (the model fixed: the seed LR) propose, accept and promote it
within its budget of rounds? Reported with the test AUC of the seed and of the champion and the
outer A/B lift of the champion against the seed.

Part `compare` (sim-small, evolution seeds 0, 1, 2): `evolve` with every agent against AutoTrain
alone, each under the same wall-clock budget: the final champions' test AUC and their outer A/B
lift against the seed incumbent (2 simulated days, common random numbers).

    python bench/agents_benchmark.py --part planted --seeds 0,1,2 --rounds 4 --json bench/results/agents_planted.json
    python bench/agents_benchmark.py --part compare --seeds 0,1,2 --budget-s 240 --json bench/results/agents_compare.json

Each evolution writes its own knowledge database under --out, so a killed benchmark resumes: a
finished evolution is read back instead of run again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agenticrs import api
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import CandidateRow, Intent
from agenticrs.agents.outer import OuterSettings, run_outer_test

console = Console()
PLANTED_CROSS = ("user_segment", "item_style")
LEAK = "dwell_bucket"


def member_runs(store: KnowledgeStore, candidate_id: int) -> list[Path]:
    with store.transaction() as tx:
        return sorted({Path(a.path) for a in tx.artifacts(candidate_id, kind="run") if "member" in Path(a.path).name})


def finished_intent(db: Path) -> dict[str, Any] | None:
    if not db.exists():
        return None
    store = KnowledgeStore(f"sqlite:///{db}")
    try:
        with store.transaction() as tx:
            row = tx.latest_intent()
            return dict(id=row.id, summary=row.summary) if row is not None and row.status == "finished" else None
    finally:
        store.close()


def evolve(dataset: str, db: Path, artifacts: Path, seed: int, agents: list[str], rounds: int | None,
           budget_s: float | None) -> dict[str, Any]:  # fmt: skip
    """One evolution (or its record, when it already finished); its champion, test AUCs and ledger."""
    started = time.perf_counter()
    done = finished_intent(db)
    if done is None:
        settings = {"artifacts": str(artifacts), "outer": {"days": 2}, "start": {"epochs": 4},
                    "train": {"time_budget_s": 60}}  # fmt: skip
        api.evolve(dataset, candidates=rounds, budget_s=budget_s, seed=seed, db=f"sqlite:///{db}",
                   settings=settings, agents=agents)  # fmt: skip
        done = finished_intent(db)
    assert done is not None
    wall = time.perf_counter() - started
    store = KnowledgeStore(f"sqlite:///{db}")
    try:
        with store.transaction() as tx:
            intent = tx.get(Intent, done["id"])
            lineage = tx.lineage(intent.id)
            rows = tx.candidates(intent.id)
            decisions = tx.decisions(intent_id=intent.id)
            actions = [dict(round=a.round, agent=a.agent, accepted=a.accepted, cost_s=a.cost_s,
                            inner=a.inner_reward, outer=a.outer_reward) for a in tx.agent_actions(intent.id)]  # fmt: skip
            profiles = tx.profiles()
            seed_id, champion_id = lineage[0].candidate_id, lineage[-1].candidate_id
            described = {r.id: dict(round=r.round, proposer=r.proposer, status=r.status, mutation=r.mutation,
                                    rationale=r.rationale, features=r.config.get("features", [])) for r in rows}  # fmt: skip
            champion_config = tx.get(CandidateRow, champion_id).config
        outer = None
        if champion_id != seed_id:  # the champion's outer lift against the seed incumbent
            result = run_outer_test(store, champion_id, seed_id, member_runs(store, champion_id),
                                    member_runs(store, seed_id), OuterSettings(days=2), artifacts / "outer-final")  # fmt: skip
            outer = {"passed": result.passed, "lifts": result.lifts}
        final = (intent.summary or {}).get("final", {})
        return {
            "intent": intent.id, "agents": agents, "seed": seed, "wall_s": round(wall, 1),
            "champion_id": champion_id, "champion": champion_config, "promotions": len(lineage) - 1,
            "test_auc_seed": final.get("seed", {}).get("auc"), "test_auc_champion": final.get("champion", {}).get("auc"),
            "ledger": actions, "candidates": described,
            "gates": [dict(candidate=d.candidate_id, gate=d.gate, accepted=d.accepted, reason=d.reason) for d in decisions],
            "leaks": [leak for p in profiles for leak in p.leaks], "outer_vs_seed": outer,
            "summary_agents": (intent.summary or {}).get("agents", {}),
        }
    finally:
        store.close()


def _is_cross(action: dict[str, Any]) -> bool:
    return action.get("kind") == "cross" and set(action.get("fields", [])) == set(PLANTED_CROSS)


def _lift(lifts: dict[str, Any], metric: str) -> str:
    value = lifts.get(metric, {}).get("lift")
    return "-" if value is None else f"{value:+.1%}"


def planted(seeds: list[int], rounds: int, out: Path, preset: str = "small-planted") -> list[dict[str, Any]]:
    from agenticrs.agents.autofeature.profile import cross_information, profile_dataset
    from agenticrs.data.simulated import write_simulation
    from agenticrs.sim.config import sim_preset
    from agenticrs.train.workflow import load_data

    records = []
    for seed in seeds:
        world = out / f"{preset}-world-{seed}"
        write_simulation(sim_preset(preset, seed=seed), world, name=f"sim-{preset}-s{seed}")
        dataset = str(world / "ctr.yaml")
        data = load_data(dataset, out / "cache")
        started = time.perf_counter()
        profile = profile_dataset(data)
        profile_s = time.perf_counter() - started
        fields = [f.name for f in profile.fields if f.kind == "categorical" and f.leak is None]
        scores = sorted(((cross_information(data, a, b), a, b) for i, a in enumerate(fields) for b in fields[i + 1:]),
                        reverse=True)  # fmt: skip
        rank = next(i + 1 for i, (_, a, b) in enumerate(scores) if {a, b} == set(PLANTED_CROSS))
        run = evolve(dataset, out / f"planted-{seed}.db", out / f"planted-{seed}", seed, ["feature"], rounds, None)
        found = [(cid, c) for cid, c in run["candidates"].items() if any(_is_cross(f) for f in c["features"])]
        first = min(found, key=lambda t: t[1]["round"]) if found else None
        records.append({
            **{k: v for k, v in run.items() if k not in ("candidates",)},
            "world_seed": seed, "profile_s": round(profile_s, 2),
            "leak_flagged": any(f.name == LEAK for f in profile.leaks),
            "leaks": [(f.name, f.leak) for f in profile.leaks],
            "cross_rank": rank, "cross_information": scores[rank - 1][0], "next_best": scores[1 if rank == 1 else 0][:],
            "cross_round": first[1]["round"] if first else None,
            "cross_status": first[1]["status"] if first else None,
            "cross_in_champion": any(_is_cross(f) for f in run["champion"].get("features", [])),
            "leak_dropped_at_start": any(f.get("kind") == "drop" and f.get("field") == LEAK
                                         for f in run["champion"].get("features", [])),  # fmt: skip
        })
        r = records[-1]
        console.print(f"seed {seed}: leak flagged {r['leak_flagged']}, cross rank {rank}, proposed in round "
                      f"{r['cross_round']} ({r['cross_status']}), in champion {r['cross_in_champion']}, test AUC "
                      f"{r['test_auc_seed']:.4f} -> {r['test_auc_champion']:.4f}")  # fmt: skip
    table = Table(title=f"AutoFeature on {preset} (model fixed: LR)")
    for column in ("seed", "leak flagged", "cross rank", "round proposed", "decision", "in champion",
                   "test AUC seed", "test AUC champion", "outer clicks lift"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in records:
        lift = (r["outer_vs_seed"] or {}).get("lifts", {}).get("clicks", {}).get("lift")
        table.add_row(str(r["world_seed"]), str(r["leak_flagged"]), str(r["cross_rank"]), str(r["cross_round"]),
                      str(r["cross_status"]), str(r["cross_in_champion"]), f"{r['test_auc_seed']:.4f}",
                      f"{r['test_auc_champion']:.4f}", "-" if lift is None else f"{lift:+.1%}")  # fmt: skip
    console.print(table)
    return records


def compare(seeds: list[int], budget_s: float, out: Path, dataset: str = "sim-small") -> list[dict[str, Any]]:
    records = []
    for seed in seeds:
        for name, agents in (("all", ["train", "feature", "perf"]), ("train", ["train"])):
            run = evolve(dataset, out / f"compare-{name}-{seed}.db", out / f"compare-{name}-{seed}", seed, agents,
                         None, budget_s)  # fmt: skip
            run.pop("candidates")
            records.append({"arm": name, **run})
            console.print(f"seed {seed} {name}: test AUC {run['test_auc_seed']:.4f} -> {run['test_auc_champion']:.4f} "
                          f"({run['promotions']} promotions, {run['wall_s']:.0f} s)")  # fmt: skip
    table = Table(title=f"{dataset}: every agent vs AutoTrain alone, {budget_s:.0f} s each")
    for column in ("seed", "arm", "rounds", "promotions", "test AUC seed", "test AUC champion", "outer clicks lift",
                   "outer gmv lift", "wall s"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in records:
        lifts = (r["outer_vs_seed"] or {}).get("lifts", {})
        table.add_row(str(r["seed"]), r["arm"], str(len(r["ledger"])), str(r["promotions"]),
                      f"{r['test_auc_seed']:.4f}", f"{r['test_auc_champion']:.4f}", _lift(lifts, "clicks"),
                      _lift(lifts, "gmv"), f"{r['wall_s']:.0f}")
    console.print(table)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["planted", "compare"], required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=4, help="planted: AutoFeature's budget of rounds")
    parser.add_argument("--budget-s", type=float, default=240.0, help="compare: wall-clock seconds per evolution")
    parser.add_argument("--preset", default="small-planted", help="planted: the simulator preset")
    parser.add_argument("--dataset", default="sim-small", help="compare: the data set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/agents_benchmark"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "planted":
        records = planted(seeds, args.rounds, args.out, args.preset)
    else:
        records = compare(seeds, args.budget_s, args.out, args.dataset)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"part": args.part, "preset": args.preset, "dataset": args.dataset, "seeds": seeds,
                   "threads": args.threads, "rounds": args.rounds,
                   "budget_s": args.budget_s, "records": records}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1, default=str))


if __name__ == "__main__":
    main()
