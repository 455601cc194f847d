"""The live dashboard and the static report, in a real browser (headless Debian chromium).

The knowledge database is written by hand (a seed, a promotion, a rejection, an audit, a
deployment and a rollout), the dashboard runs under uvicorn on a free loopback port, and
chromium (through selenium and chromedriver) checks what a reader sees: no console errors, the
charts drawn with a label at each point, the champion in the headline at the top, the page
updating by itself when a candidate is recorded, and on a phone-sized screen no sideways page
scroll, wide tables scrolling in their own box and numbers on one line. `make test` installs
chromium and chromium-driver with apt-get (`make browser`); where they are absent the browser
tests skip with the reason. The API tests below them need no browser.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agenticrs.agents.candidate import Candidate
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.agents.knowledge.store import KnowledgeStoreError
from agenticrs.agents.report import write_report
from agenticrs.serve.dashboard import create_dashboard
from knowledge_rows import comparison

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LONG_RATIONALE = "raise the learning rate because the loss curve was still falling steadily at the last epoch " * 3
CONFIGS = {
    "seed": Candidate(model="lr", learning_rate=0.003),
    "promoted": Candidate(model="lr", learning_rate=0.006),
    "rejected": Candidate(model="lr", learning_rate=0.003, feature_bagging=0.9),
}


def metrics(auc: float, brier: float) -> dict[str, dict[str, float]]:
    return {split: {"auc": auc, "logloss": 0.23, "brier": brier} for split in ("valid", "gate")}




def build_db(url: str) -> tuple[int, dict[str, int]]:
    """One intent: seed -> promoted, one rejected, an audit, a final summary, a deployment, a rollout."""
    store = KnowledgeStore(url)
    try:
        with store.transaction() as tx:
            snapshot = tx.snapshot("sim-tiny", "fp-dash", {"train": 100, "valid": 20, "gate": 20, "test": 20})
            intent_id = tx.create_intent(snapshot_id=snapshot.id, text="improve auc on sim-tiny", objective="auc",
                                         proposer="builtin", seed=1, ensemble_size=8,
                                         settings={"dataset": "sim-tiny", "llm": {"api_key": "sk-secret"}}).id
            ids: dict[str, int] = {}
            for round_, (name, rationale, status) in enumerate((
                ("seed", "the starting incumbent", "promoted"),
                ("promoted", LONG_RATIONALE, "promoted"),
                ("rejected", "bag the fields for diversity", "rejected"),
            )):
                candidate = CONFIGS[name]
                row, _ = tx.add_candidate(intent_id, candidate.config_hash(), round=round_,
                                          config=candidate.canonical().model_dump(mode="json"), proposer="builtin",
                                          mutation=None if round_ == 0 else "learning_rate", rationale=rationale,
                                          status=status, parameters=1_234_567, latency_ms=0.5)
                ids[name] = row.id
                for seed, auc in ((11, 0.62 + 0.01 * round_), (12, 0.63 + 0.01 * round_)):
                    training = tx.start_training(row.id, "member", seed)
                    tx.finish_training(training.id, metrics(auc, 0.058), cost_s=1.5, epochs=3)
            tx.record_decision(ids["seed"], "seed", True, "starting incumbent")
            tx.promote(intent_id, ids["seed"], 0, metrics(0.626, 0.0583))
            tx.record_comparison(ids["promoted"], "valid", **comparison(ids["seed"], 0.0011, 0.00004, 0.05712, 0.05826))
            tx.record_decision(ids["promoted"], "gate", True, "promoted: gate auc gain +0.03450",
                               {"objective": "auc", "gain": 0.0345, "bound": 0.0297, "level": 0.8})
            tx.promote(intent_id, ids["promoted"], 1, metrics(0.657, 0.0571))
            tx.record_comparison(ids["rejected"], "valid", **comparison(ids["promoted"], -0.0012, 0.00025, 0.0582, 0.05712))
            tx.record_decision(ids["rejected"], "ensnas", False, "rejected: accuracy loss too large")
            for role, cid, predicted, measured in (("candidate", ids["promoted"], 0.05712, 0.05699),
                                                   ("incumbent", ids["seed"], 0.05826, 0.05804)):
                tx.add_audit(intent_id=intent_id, candidate_id=cid, split="valid", ensemble_size=8, predicted=predicted,
                             measured=measured, details={"role": role, "verdict_agrees": True})
            tx.finish_intent(intent_id, {"champion_id": ids["promoted"], "final": {
                "seed": {"auc": 0.61, "brier": 0.0502}, "champion": {"auc": 0.63, "brier": 0.0483}}})
            tx.add_deployment("runs/champion", "onnx", candidate_id=ids["promoted"], endpoint="http://127.0.0.1:8080")
            rollout = tx.start_rollout(ids["promoted"], 0.05, intent_id=intent_id, incumbent_id=ids["seed"])
            for step, part in enumerate((0.05, 0.25, 0.5)):
                tx.record_rollout_step(rollout.id, step, share=part, metrics={"ctr_gain": 0.0012 * (step + 1)},
                                       verdict="continue", reason="within guardrails")
    finally:
        store.close()
    return intent_id, ids


def add_candidate(url: str, intent_id: int) -> int:
    """What `evolve` does when it proposes: one new candidate row."""
    store = KnowledgeStore(url)
    try:
        with store.transaction() as tx:
            candidate = Candidate(model="fm", embedding_dim=16, learning_rate=0.002)
            row, _ = tx.add_candidate(intent_id, candidate.config_hash(), round=3,
                                      config=candidate.canonical().model_dump(mode="json"), proposer="builtin",
                                      mutation="model_family", rationale="try a factorisation machine", status="proposed")
            return row.id
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, int, dict[str, int]]:
    url = f"sqlite:///{tmp_path / 'knowledge.db'}"
    intent_id, ids = build_db(url)
    return url, intent_id, ids


# -- the API, without a browser ----------------------------------------------------------------
def test_api_state_versions_and_errors(db: tuple[str, int, dict[str, int]], tmp_path: Path) -> None:
    url, intent_id, ids = db
    with TestClient(create_dashboard(url)) as client:
        page = client.get("/")
        assert page.status_code == 200 and f"Champion #{ids['promoted']}</b>" in page.text
        assert "sk-secret" not in page.text and "<script src" not in page.text
        first = client.get("/api/state").json()
        assert first["state"]["headline"]["champion_id"] == ids["promoted"]
        assert first["state"]["reproductions"] == [] and len(first["state"]["rollouts"][0]["steps"]) == 3
        assert "sk-secret" not in str(first)
        assert set(first["html"]) >= {"headline", "candidates", "trajectory", "rollouts", "reproductions"}
        assert client.get("/api/state", params={"since": first["version"]}).json() == {
            "version": first["version"], "unchanged": True}
        new_id = add_candidate(url, intent_id)
        second = client.get("/api/state", params={"since": first["version"]}).json()
        assert second["version"] != first["version"] and f"#{new_id}" in second["html"]["candidates"]
        missing = client.get("/api/state", params={"intent": 999})
        assert missing.status_code == 404 and "no intent #999" in missing.json()["error"]
    with pytest.raises(KnowledgeStoreError, match="nope.db"):
        create_dashboard(str(tmp_path / "nope.db"))


def test_ui_command_names_a_database_it_cannot_open(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agenticrs.cli.main import app

    result = CliRunner().invoke(app, ["ui", "--db", str(tmp_path / "missing.db"), "--port", "1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.db" in lines[0]


# -- in a real browser -----------------------------------------------------------------------------
def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists() and shutil.which(Path(path).name) is None:
            return f"{path} is not installed (make browser installs chromium and chromium-driver with apt-get as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chromedriver = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else str(shutil.which("chromedriver"))
    try:
        browser = webdriver.Chrome(options=options, service=Service(chromedriver))
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start is a skip with its reason
        pytest.skip(f"chromium could not be started: {str(exc).splitlines()[0]}")
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def server(db: tuple[str, int, dict[str, int]]) -> Iterator[str]:
    """The dashboard under uvicorn in a thread on a free 127.0.0.1 port; stopped afterwards."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_dashboard(db[0], poll_ms=500)
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not instance.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        instance.should_exit = True
        thread.join(10)


def _severe(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


CHART_INFO = """
return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const box = svg.getBoundingClientRect();
  return {w: box.width, h: box.height, points: svg.querySelectorAll('circle').length,
          labels: Array.from(svg.querySelectorAll('text.pl')).filter(t => t.getBBox().width > 0).length};
});
"""

LAYOUT_INFO = """
const wide = document.querySelector('#candidates .scroll');
const numeric = /^[#+\\-\\u2212]?[0-9][0-9.,]*(e[+-][0-9]+)?( ?%| s| UTC)?$/;
const cells = Array.from(document.querySelectorAll('td')).filter(td => numeric.test(td.textContent.trim()));
const lines = el => {  // line boxes the content spans: rect tops more than half a line apart
  const r = document.createRange(); r.selectNodeContents(el);
  const tops = Array.from(r.getClientRects()).filter(x => x.width > 0).map(x => x.top).sort((a, b) => a - b);
  return tops.filter((top, i) => i === 0 || top - tops[i - 1] > 8).length; };
return {
  pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth,
  boxScroll: wide.scrollWidth, boxWidth: wide.clientWidth, boxOverflow: getComputedStyle(wide).overflowX,
  numberCells: cells.length, wrappedCells: cells.filter(td => lines(td) > 1).map(td => td.textContent),
  wrappedValues: Array.from(document.querySelectorAll('.headline .n')).filter(n => lines(n) > 1).map(n => n.textContent),
  headlineTop: document.querySelector('.headline').getBoundingClientRect().top,
};
"""


def _check_page(driver: Any, champion: int, charts: int) -> None:
    """Loaded without console errors, charts drawn and labelled, the champion in the headline at the top."""
    assert _severe(driver) == []
    drawn = driver.execute_script(CHART_INFO)
    assert len(drawn) >= charts, drawn
    for chart in drawn:
        assert chart["w"] > 100 and chart["h"] > 50, chart
        assert chart["points"] > 0 and chart["labels"] == chart["points"], chart  # a label at each point
    headline = driver.find_element("css selector", "header .headline")
    assert f"Champion #{champion}" in headline.text and "valid auc 0.65700" in headline.text
    assert driver.execute_script(LAYOUT_INFO)["headlineTop"] < 100


def _check_phone(driver: Any) -> None:
    """On a 390 x 844 phone screen: no sideways page scroll, the wide table scrolls in its box,
    numbers on one line."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True})
    try:
        driver.refresh()
        layout = driver.execute_script(LAYOUT_INFO)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert layout["viewport"] <= 400 and layout["pageWidth"] <= layout["viewport"], layout
    assert layout["boxOverflow"] == "auto" and layout["boxScroll"] > layout["boxWidth"], layout
    assert layout["numberCells"] > 20 and layout["wrappedCells"] == [], layout
    assert layout["wrappedValues"] == [], layout
    assert _severe(driver) == []


@pytest.mark.browser
def test_dashboard_in_a_browser(driver: Any, server: str, db: tuple[str, int, dict[str, int]]) -> None:
    url, intent_id, ids = db
    driver.get(server)
    _check_page(driver, ids["promoted"], charts=5)  # trajectory (2), gains, audits, rollout share
    assert "No reproductions recorded yet" in driver.find_element("id", "reproductions").text
    assert "onnx" in driver.find_element("id", "deployments").text
    version = driver.execute_script("return document.body.dataset.version")

    new_id = add_candidate(url, intent_id)  # as `evolve` would, while the page is open
    deadline = time.monotonic() + 10
    while f"#{new_id}" not in driver.find_element("id", "body-candidates").text:
        assert time.monotonic() < deadline, "the page did not show the new candidate within 10 s"
        time.sleep(0.2)
    assert driver.execute_script("return document.body.dataset.version") != version
    assert "live, checked" in driver.find_element("id", "live").text
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1  # no reload
    _check_page(driver, ids["promoted"], charts=5)
    _check_phone(driver)


@pytest.mark.browser
def test_static_report_in_a_browser(driver: Any, db: tuple[str, int, dict[str, int]], tmp_path: Path) -> None:
    url, intent_id, ids = db
    store = KnowledgeStore(url, readonly=True)
    try:
        path = write_report(store, intent_id, tmp_path / "report.html")
    finally:
        store.close()
    assert path.stat().st_size < 100_000  # the old report inlined 4.7 MB of plotly.js
    driver.get("about:blank")
    driver.get_log("browser")  # drop what an earlier test's page logged (its server has stopped)
    driver.get(path.as_uri())
    _check_page(driver, ids["promoted"], charts=4)  # trajectory (2), gains, audits
    _check_phone(driver)
