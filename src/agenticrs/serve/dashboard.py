"""The live dashboard (`agenticrs ui`): a read-only web page over the knowledge layer.

For the people who run `agenticrs evolve`: the champion and its result in one line at the top,
then the intents, the trajectory, every candidate with its evidence, the lineage, audits,
reproductions, deployments and rollouts. The page polls `GET /api/state?since=VERSION` every
two seconds; the version is a digest of the whole view model, so it changes whenever anything is
recorded, and only then does the server send the re-rendered sections, which the page swaps in
place (no reload, the reader keeps their scroll position). The HTML comes from the same components
as the static report (`agents/views.py`), so both read alike on a laptop and on a phone.

The store is opened `readonly=True`: the dashboard never migrates, locks or creates a database,
so it can watch one that `evolve` is writing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse

from agenticrs.agents import views
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.schema import Deployment, Intent, Rollout, RolloutStep

POLL_MS = 2000

SECTION_TITLES = {
    "intents": "Intents",
    "trajectory": "Trajectory",
    "gains": "Accuracy vs diversity gain",
    "candidates": "Candidates and their evidence",
    "lineage": "Accepted lineage",
    "audits": "Calibration audits",
    "final": "Final comparison on the test split",
    "reproductions": "Reproductions",
    "deployments": "Deployments",
    "rollouts": "Rollouts",
}


@dataclass
class Snapshot:
    """One consistent read of everything the page shows."""

    intents: list[Intent]
    data: views.IntentData | None
    deployments: list[Deployment]
    rollouts: list[Rollout]
    steps: dict[int, list[RolloutStep]]


class UnknownIntent(LookupError):
    """The `intent` asked for is not in the database."""


def read_snapshot(store: KnowledgeStore, intent_id: int | None) -> Snapshot:
    """Everything in one transaction; `intent_id` None means the newest intent (a new `evolve`
    run shows up by itself)."""
    with store.transaction() as tx:
        intents = tx.intents()
        if intent_id is not None and all(i.id != intent_id for i in intents):
            raise UnknownIntent(f"no intent #{intent_id} in the knowledge database")
        chosen = intent_id if intent_id is not None else (intents[-1].id if intents else None)
        data = views.read_intent(tx, chosen) if chosen is not None else None
        rollouts = tx.rollouts()
        return Snapshot(intents=intents, data=data, deployments=tx.deployments(), rollouts=rollouts,
                        steps={r.id: tx.rollout_steps(r.id) for r in rollouts})


def view_model(snap: Snapshot) -> dict[str, Any]:
    """The page's data as plain JSON-ready dicts (what `/api/state` serves as `state`)."""
    d = snap.data
    return {
        "headline": views.headline_model(d),
        "intents": [views.row_dict(i) for i in snap.intents],
        "intent_id": d.intent.id if d else None,
        "candidates": [{**views.row_dict(r), "description": d.description[r.id]} for r in d.candidates] if d else [],
        "trainings": [views.row_dict(r) for r in d.trainings] if d else [],
        "comparisons": [views.row_dict(r) for r in d.comparisons] if d else [],
        "decisions": [views.row_dict(r) for r in d.decisions] if d else [],
        "lineage": [views.row_dict(r) for r in d.lineage] if d else [],
        "audits": [views.row_dict(r) for r in d.audits] if d else [],
        "lessons": [views.row_dict(r) for r in d.lessons] if d else [],
        "reproductions": [],  # no table yet: another issue records them
        "deployments": [views.row_dict(r) for r in snap.deployments],
        "rollouts": [{**views.row_dict(r), "steps": [views.row_dict(s) for s in snap.steps.get(r.id, [])]}
                     for r in snap.rollouts],
    }


def render_sections(snap: Snapshot) -> dict[str, str]:
    """Each section's inner HTML, keyed as in `SECTION_TITLES` (plus `headline`)."""
    d = snap.data
    waiting = views.note("No intent recorded yet (run `agenticrs evolve`).")
    champions = {}
    if d is not None and d.lineage:
        champions[d.intent.id] = f"#{d.lineage[-1].candidate_id} {d.description.get(d.lineage[-1].candidate_id, '?')}"
    for intent in snap.intents:
        summary = intent.summary or {}
        if intent.id not in champions and summary.get("champion_id") is not None:
            champions[intent.id] = f"#{summary['champion_id']} {summary.get('champion', '')}"
    return {
        "headline": views.headline(views.headline_model(d)),
        "intents": views.intents_table(snap.intents, champions, d.intent.id if d else None, link=True),
        "trajectory": views.trajectory(d) if d else waiting,
        "gains": views.gains(d) if d else waiting,
        "candidates": views.candidates(d) if d else waiting,
        "lineage": views.lineage(d) if d else waiting,
        "audits": views.audits(d) if d else waiting,
        "final": views.final(d) if d else waiting,
        "reproductions": views.reproductions(),
        "deployments": views.deployments(snap.deployments),
        "rollouts": views.rollouts(snap.rollouts, snap.steps),
    }


_SCRIPT = """<script>
(() => {
  const intent = new URLSearchParams(location.search).get("intent");
  const live = document.getElementById("live");
  let version = document.body.dataset.version;
  const shown = {};
  async function tick() {
    try {
      let url = "api/state?since=" + encodeURIComponent(version);
      if (intent) url += "&intent=" + encodeURIComponent(intent);
      const response = await fetch(url, {cache: "no-store"});
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || ("HTTP " + response.status));
      if (!answer.unchanged) {
        for (const [key, markup] of Object.entries(answer.html)) {
          const box = document.getElementById("body-" + key);
          if (box && shown[key] !== markup) { box.innerHTML = markup; shown[key] = markup; }
        }
        version = answer.version;
        document.body.dataset.version = version;
      }
      live.textContent = "live, checked " + new Date().toLocaleTimeString();
      live.className = "live";
    } catch (error) {
      live.textContent = "not updating: " + error.message + " (retrying)";
      live.className = "live bad";
    }
    setTimeout(tick, POLL_MS);
  }
  setTimeout(tick, POLL_MS);
})();
</script>"""


def render_page(snap: Snapshot, version: str, poll_ms: int = POLL_MS) -> str:
    sections = render_sections(snap)
    title = "agenticrs — knowledge dashboard"
    return views.page(
        title, sections.pop("headline"), [(key, SECTION_TITLES[key], sections[key]) for key in SECTION_TITLES],
        status_line='<span id="live" class="live">live</span>',
        script=_SCRIPT.replace("POLL_MS", str(int(poll_ms))),
        body_attrs=f' data-version="{views.e(version)}"',
    )


def create_dashboard(db_url: str, poll_ms: int = POLL_MS) -> FastAPI:
    """The dashboard app over the knowledge database at `db_url`, opened read-only now (a database
    that cannot be opened raises `KnowledgeStoreError` with one line naming it)."""
    store = KnowledgeStore(db_url, readonly=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = FastAPI(title="agenticrs dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store = store

    def snapshot(intent: int | None) -> tuple[Snapshot, dict[str, Any], str]:
        snap = read_snapshot(store, intent)
        state = view_model(snap)
        return snap, state, views.version_of(state)

    @app.get("/", response_class=HTMLResponse)
    def index(intent: int | None = Query(None, description="intent id (default: the newest)")) -> HTMLResponse:
        try:
            snap, _state, version = snapshot(intent)
        except UnknownIntent as exc:
            return HTMLResponse(views.note(views.e(exc)), status_code=404)
        return HTMLResponse(render_page(snap, version, poll_ms), headers={"Cache-Control": "no-store"})

    @app.get("/api/state")
    def api_state(intent: int | None = Query(None), since: str | None = Query(None)) -> JSONResponse:
        """The view model, its version, and the sections' HTML; just `unchanged` when `since` is
        the current version (the page's poll costs one small answer while nothing happens)."""
        try:
            snap, state, version = snapshot(intent)
        except UnknownIntent as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        headers = {"ETag": f'"{version}"', "Cache-Control": "no-store"}
        if since == version:
            return JSONResponse({"version": version, "unchanged": True}, headers=headers)
        return JSONResponse({"version": version, "unchanged": False, "state": state, "html": render_sections(snap)},
                            headers=headers)

    return app
