"""The scoring service: HTTP scores equal the run's own, micro-batching, bad payloads as named
4xx (a hypothesis fuzz over the request schema), hot swap under concurrent load, the champion
follower over the knowledge layer, health / readiness / Prometheus metrics, and the simulator's
environment scoring through the endpoint. Every server listens on 127.0.0.1 and stops itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticrs import api
from agenticrs.agents.knowledge import KnowledgeStore
from agenticrs.serve.app import Router, ServiceLimits, create_app
from agenticrs.serve.client import HttpPolicy, request_payloads
from agenticrs.serve.models import ServedModel
from agenticrs.serve.payload import FieldKinds
from agenticrs.serve.server import champion_app, free_port, run_app, running
from agenticrs.train.scoring import Scorer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> dict:
    folder = tmp_path_factory.mktemp("serve")
    sim = api.simulate("tiny", seed=5, out=folder / "sim5")
    runs = {
        name: api.train(sim["ctr"], model, params={"embedding_dim": 4}, train={"max_steps": 6}, seed=seed,
                        runs_dir=folder / "runs", cache_dir=tiny_cache).run_dir  # fmt: skip
        for name, model, seed in (("deepfm", "deepfm", 1), ("lr", "lr", 2), ("deepfm2", "deepfm", 3))
    }
    test = pq.read_table(sim.folder / "impressions_test.parquet")
    encoder = Scorer(runs["deepfm"]).encoder
    fields = FieldKinds.of(encoder)
    payloads = request_payloads(test.slice(0, 3000), fields, list(encoder.spec.request_fields), encoder.spec.request_key)
    return {"folder": folder, "sim": sim, "runs": runs, "test": test, "payloads": payloads, "fields": fields,
            "context": list(encoder.spec.request_fields)}  # fmt: skip


def _valid(world: dict, i: int = 0) -> dict:
    return json.loads(json.dumps(world["payloads"][i][2]))


def test_http_scores_equal_the_runs_own_and_requests_are_micro_batched(world: dict) -> None:
    app = run_app([world["runs"]["deepfm"]], limits=ServiceLimits(max_wait_ms=20))
    scorer = Scorer(world["runs"]["deepfm"])
    payloads = world["payloads"][:40]
    with running(app) as url:
        def post(p):
            return httpx.post(url + "/score", json=p[2], timeout=30)

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(post, payloads))
        metrics = httpx.get(url + "/metrics").text
    for (start, stop, _), response in zip(payloads, responses):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["arm"] == "champion" and body["version"] >= 1
        expected = scorer.score(world["test"].slice(start, stop - start))
        np.testing.assert_allclose(body["scores"], expected, rtol=1e-5, atol=1e-6)
    calls = float(metrics.split("agenticrs_batch_rows_count ")[1].split()[0])
    assert calls < len(payloads)  # concurrent requests shared scoring calls
    assert 'agenticrs_requests_total{arm="champion",status="200"} 40.0' in metrics


@pytest.fixture(scope="module")
def client(world: dict):
    limits = ServiceLimits(max_body_bytes=1_000_000, max_candidates=2_000)
    with TestClient(run_app([world["runs"]["deepfm"]], limits=limits)) as client:
        yield client


def test_health_readiness_and_the_openapi_schema(world: dict, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["champion"]["runs"] == [str(world["runs"]["deepfm"])]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"context", "candidates"}
    with TestClient(create_app(Router())) as empty:
        assert empty.get("/readyz").status_code == 503
        assert empty.post("/score", json=_valid(world)).status_code == 503


@pytest.mark.parametrize(("mutate", "status", "names"), [
    (lambda p: p["context"].pop("user_id"), 422, "user_id: missing field"),
    (lambda p: p["candidates"][1].pop("price"), 422, "candidates[1].price: missing field"),
    (lambda p: p["candidates"][0].__setitem__("price", "cheap"), 422, "candidates[0].price: expected a number"),
    (lambda p: p["candidates"][0].__setitem__("colour", 3), 422, "candidates[0].colour: unknown field"),
    (lambda p: p["context"].__setitem__("hist_item_id", 7), 422, "context.hist_item_id: expected a list"),
    (lambda p: p["context"].__setitem__("age", {"a": 1}), 422, "context.age"),
    (lambda p: p.__setitem__("candidates", []), 422, "candidates"),
    (lambda p: p.__setitem__("extra", 1), 422, "extra"),
    (lambda p: p["candidates"][0].__setitem__("item_id", [1, 2]), 422, "candidates[0].item_id: expected a single value"),
])  # fmt: skip
def test_bad_payloads_are_4xx_that_name_the_field(world: dict, client: TestClient, mutate, status: int, names: str) -> None:
    payload = _valid(world)
    mutate(payload)
    response = client.post("/score", json=payload)
    assert response.status_code == status and names in response.json()["detail"], response.text
    assert client.post("/score", json=_valid(world)).status_code == 200  # and it keeps serving


def test_nan_huge_bodies_and_too_many_candidates_are_refused(world: dict, client: TestClient) -> None:
    text = json.dumps(_valid(world)).replace('"price": ', '"price": NaN, "x": ', 1)
    response = client.post("/score", content=text.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422 and "NaN is not a JSON value" in response.json()["detail"]
    big = b'{"context": {}, "candidates": [' + b'{"a": 1},' * 1_200_000 + b'{"a": 1}]}'  # ~10 MB
    response = client.post("/score", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "body" in response.json()["detail"]
    many = _valid(world)
    many["candidates"] = many["candidates"][:1] * 100_000
    response = client.post("/score", content=json.dumps(many).encode()[:999_000] + b"]}")
    assert response.status_code in (413, 422)
    limited = _valid(world)
    limited["candidates"] = limited["candidates"][:1] * 2_001
    response = client.post("/score", json=limited)
    assert response.status_code == 413 and "at most 2000" in response.json()["detail"]
    response = client.post("/score", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]
    assert client.post("/score", json=_valid(world)).status_code == 200


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_no_payload_gets_a_500(world: dict, client: TestClient, data: st.DataObject) -> None:
    """Mutations of a valid request (a field dropped, replaced by any JSON value, a candidate
    replaced) and arbitrary JSON documents: every answer is 200 or a 4xx with a message."""
    payload = _valid(world, data.draw(st.integers(0, 20)))
    kind = data.draw(st.sampled_from(["context", "candidate", "replace_candidate", "anything", "top"]))
    if kind == "context":
        name = data.draw(st.sampled_from(sorted(payload["context"]) + ["unknown"]))
        if data.draw(st.booleans()):
            payload["context"].pop(name, None)
        else:
            payload["context"][name] = data.draw(_json)
    elif kind == "candidate":
        i = data.draw(st.integers(0, len(payload["candidates"]) - 1))
        name = data.draw(st.sampled_from(sorted(payload["candidates"][i]) + ["unknown"]))
        payload["candidates"][i][name] = data.draw(_json)
    elif kind == "replace_candidate":
        payload["candidates"][0] = data.draw(_json)
    elif kind == "top":
        payload[data.draw(st.sampled_from(["context", "candidates"]))] = data.draw(_json)
    else:
        payload = data.draw(_json)
    body = json.dumps(payload, allow_nan=True).encode()
    response = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["detail"]


def test_hot_swap_under_concurrent_requests_loses_no_request(world: dict) -> None:
    models = [ServedModel.load([world["runs"][name]]) for name in ("deepfm", "lr", "deepfm2")]
    router = Router(champion=models[0])
    payload = world["payloads"][3]
    expected = {m.version: m.score(world["test"].slice(payload[0], payload[1] - payload[0])) for m in models}
    results: list[httpx.Response] = []
    stop = threading.Event()
    with running(create_app(router)) as url:
        def hammer() -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set():
                    results.append(c.post("/score", json=payload[2]))

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        def traffic(requests: int) -> None:
            # wait for a number of requests, not a time: a loaded machine serves fewer per second
            goal, deadline = len(results) + requests, time.monotonic() + 60
            while len(results) < goal and time.monotonic() < deadline:
                time.sleep(0.01)

        for model in [*models[1:], models[0], models[2]]:
            traffic(12)
            router.swap(model)
        traffic(12)
        stop.set()
        for t in threads:
            t.join()
    assert len(results) > 50 and all(r.status_code == 200 for r in results)
    versions = {r.json()["version"] for r in results}
    assert versions == set(expected)  # every model served some requests
    for r in results:  # and each response was scored wholly by the model it names
        np.testing.assert_allclose(r.json()["scores"], expected[r.json()["version"]], rtol=1e-5, atol=1e-6)


def _knowledge_with_champion(world: dict, db: str) -> tuple[int, int, int]:
    """A knowledge database with an intent, two candidates with run artifacts, and the first promoted."""
    store = KnowledgeStore(db)
    with store.transaction() as tx:
        snap = tx.snapshot("sim-tiny", "f" * 64, {"train": 1})
        intent = tx.create_intent(snapshot_id=snap.id, text="serve", objective="logloss", proposer="scripted", seed=1,
                                  ensemble_size=1)  # fmt: skip
        ids = []
        for name in ("deepfm", "lr"):
            row, _ = tx.add_candidate(intent.id, name * 8, round=len(ids), config={"model": name}, proposer="scripted")
            training = tx.start_training(row.id, "member", 1)
            tx.add_artifact("run", str(world["runs"][name]), intent_id=intent.id, candidate_id=row.id,
                            training_id=training.id)  # fmt: skip
            ids.append(row.id)
        tx.promote(intent.id, ids[0], 0, {"logloss": 0.3})
    store.close()
    return intent.id, ids[0], ids[1]


def test_the_champion_service_follows_promotions_and_records_deployments(world: dict, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    intent, first, second = _knowledge_with_champion(world, db)
    app, follower = champion_app(db, poll_s=0.2, endpoint="test")
    payload = world["payloads"][0][2]
    with TestClient(app) as client:
        assert client.get("/readyz").json()["champion"]["candidate"] == first
        before = client.post("/score", json=payload).json()
        store = KnowledgeStore(db)
        with store.transaction() as tx:
            tx.promote(intent, second, 1, {"logloss": 0.29})
        store.close()
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["champion"]["candidate"] != second and time.monotonic() < deadline:
            time.sleep(0.1)
        after = client.post("/score", json=payload).json()
        assert after["model"] == f"candidate-{second}" and after["version"] > before["version"]
    follower.retire()
    store = KnowledgeStore(db, readonly=True)
    with store.transaction() as tx:
        rows = tx.deployments()
    assert [(r.candidate_id, r.status) for r in rows] == [(first, "retired"), (second, "retired")]
    assert rows[0].ended_at is not None and rows[1].details["intent"] == intent


def test_the_environment_scores_through_the_endpoint_as_in_process(world: dict) -> None:
    from agenticrs.sim.environment import Environment
    from agenticrs.train.policy import RunPolicy, world_of_run

    run = world["runs"]["deepfm"]
    env = Environment(world_of_run(run), seed=3, rate_scale=0.2)
    local, _ = env.serve(RunPolicy(run))
    with running(run_app([run])) as url:
        policy = HttpPolicy(url, world["fields"], world["context"], request_column="request_id")
        served, _ = env.serve(policy)
    assert policy.errors == 0 and set(policy.arms) == {"champion"}
    for metric in local.per_user:
        np.testing.assert_array_equal(served.per_user[metric], local.per_user[metric])


def test_cli_serve_answers_on_loopback_and_stops(world: dict) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "agenticrs.cli.main", "serve", "--run", str(world["runs"]["lr"]),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read().decode()
            time.sleep(0.2)
        response = httpx.post(f"http://127.0.0.1:{port}/score", json=world["payloads"][0][2])
        assert response.status_code == 200 and len(response.json()["scores"]) == len(world["payloads"][0][2]["candidates"])
    finally:
        process.terminate()
        process.wait(20)


def test_cli_serve_refuses_a_missing_run_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "agenticrs.cli.main", "serve", "--run", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "nope" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_payloads_round_trip_a_table(world: dict) -> None:
    start, stop, payload = world["payloads"][1]
    from agenticrs.serve.payload import ScoreRequest, request_table

    table = request_table(ScoreRequest.model_validate(payload), world["fields"], 1000)
    scorer = Scorer(world["runs"]["deepfm"])
    np.testing.assert_allclose(scorer.score(table), scorer.score(world["test"].slice(start, stop - start)), rtol=1e-6)
    assert isinstance(table, pa.Table) and table.num_rows == stop - start


def test_an_onnx_champion_is_exported_recorded_and_scores_as_the_eager_model(world: dict, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    run_copy = tmp_path / "deepfm-run"  # the module's run stays unexported for the other tests
    shutil.copytree(world["runs"]["deepfm"], run_copy)
    intent, first, _ = _knowledge_with_champion({"runs": {**world["runs"], "deepfm": run_copy}}, db)
    app, follower = champion_app(db, backend="onnx", poll_s=5)
    start, stop, payload = world["payloads"][2]
    with TestClient(app) as client:
        ready = client.get("/readyz").json()
        assert ready["champion"]["backend"] == "onnx" and ready["champion"]["candidate"] == first
        scores = client.post("/score", json=payload).json()["scores"]
    eager = Scorer(run_copy).score(world["test"].slice(start, stop - start))
    np.testing.assert_allclose(scores, eager, atol=1e-5)
    follower.retire()
    store = KnowledgeStore(db, readonly=True)
    with store.transaction() as tx:
        (artifact,) = tx.artifacts(candidate_id=first, kind="export")
        assert artifact.sha256 and artifact.size_bytes > 0 and artifact.details
        assert [d.backend for d in tx.deployments()] == ["onnx"]
    store.close()


def test_a_request_centric_model_never_attends_across_batched_requests(world: dict, tiny_cache: Path) -> None:
    """SORT encodes each request's candidates together: requests merged into one micro-batch keep
    their own request ids, so each gets the scores it gets alone."""
    params = {"model_dim": 16, "num_heads": 2, "num_layers": 1, "num_pruned_layers": 0, "num_experts": 2, "top_k": 1,
              "expert_hidden": 16}  # fmt: skip
    run = api.train(world["sim"]["ctr"], "sort", params=params, train={"max_steps": 4}, seed=1,
                    runs_dir=world["folder"] / "runs", cache_dir=tiny_cache).run_dir  # fmt: skip
    scorer = Scorer(run)
    payloads = world["payloads"][:12]
    with running(run_app([run], limits=ServiceLimits(max_wait_ms=30))) as url:
        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(lambda p: httpx.post(url + "/score", json=p[2], timeout=30), payloads))
        metrics = httpx.get(url + "/metrics").text
    assert float(metrics.split("agenticrs_batch_rows_count ")[1].split()[0]) < len(payloads)  # they were batched
    for (start, stop, _), response in zip(payloads, responses):
        alone = scorer.score(world["test"].slice(start, stop - start))
        np.testing.assert_allclose(response.json()["scores"], alone, rtol=1e-5, atol=1e-6)


def test_the_one_call_table_and_the_shared_context_encode_exactly_as_row_by_row(world: dict, monkeypatch) -> None:
    """The fast paths (every candidate's columns in one Arrow call; the context encoded once and
    repeated) give the same table and the same model inputs as the careful per-field, per-row path."""
    from agenticrs.serve import payload as payload_module
    from agenticrs.serve.payload import ScoreRequest, request_table

    scorer = Scorer(world["runs"]["deepfm"])
    for _, _, payload in world["payloads"][:5]:
        request = ScoreRequest.model_validate(payload)
        fast = request_table(request, world["fields"], 1000, 7)
        with monkeypatch.context() as patch:
            patch.setattr(payload_module, "_uniform_columns", lambda *args: None)
            careful = request_table(request, world["fields"], 1000, 7)
        assert fast.num_rows > 1 and fast.equals(careful.select(fast.column_names))
        shared = scorer.encode(fast, shared=frozenset(request.context))
        per_row = scorer.encode(fast)
        assert shared.keys() == per_row.keys()
        for key in shared:
            np.testing.assert_array_equal(shared[key], per_row[key], err_msg=key)


def test_a_served_runs_requests_take_the_fast_path_and_get_the_arrow_paths_inputs(world: dict) -> None:
    """The simulator's requests are plain: `RequestEncoder` encodes every one of them (none falls
    back), to the arrays `Scorer.encode` makes of the request's table."""
    from agenticrs.serve.payload import ScoreRequest, request_table

    model = ServedModel.load([world["runs"]["deepfm"]])
    fast = model.request_encoders[0]
    for i, (_, _, payload) in enumerate(world["payloads"][:30]):
        request = ScoreRequest.model_validate(payload)
        arrays = fast.encode(request, request_id=i)
        assert arrays is not None
        expected = model.scorers[0].encode(request_table(request, world["fields"], 1000, i), shared=frozenset(request.context))
        assert sorted(arrays) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(arrays[key], expected[key], err_msg=key)


def test_a_bad_request_in_a_micro_batch_fails_alone(world: dict) -> None:
    """Requests are encoded one by one as they arrive: one that the encoder refuses gets its own
    4xx while the others, scored together, are answered."""
    from agenticrs.data.errors import DataError

    model = ServedModel.load([world["runs"]["deepfm"]])
    refused = -77
    encode_request = model.encode_request

    def refusing_encode(request, request_id=0, max_candidates=2_000):
        hours = [request.context.get("hour")] + [c.get("hour") for c in request.candidates]
        if refused in hours:
            raise DataError("hour -77 is refused here", file="<request>", field="hour", expected="an hour of the day")
        return encode_request(request, request_id, max_candidates)

    model.encode_request = refusing_encode  # type: ignore[method-assign]
    app = create_app(Router(champion=model), ServiceLimits(max_wait_ms=50.0))
    good, bad = _valid(world), _valid(world)
    holder = bad["context"] if "hour" in bad["context"] else bad["candidates"][0]
    holder["hour"] = refused
    bodies = [good, bad] + [good] * 10
    with running(app) as url, ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda body: httpx.post(url + "/score", json=body, timeout=30), bodies))
        metrics = httpx.get(url + "/metrics").text
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 422] + [200] * 10, statuses
    assert "hour" in responses[1].json()["detail"]
    assert float(metrics.split("agenticrs_batch_rows_count ")[1].split()[0]) < len(bodies)  # batches were shared
    # the same request in micro-batches of other sizes: float32 sums may differ in the last bit
    np.testing.assert_allclose(responses[0].json()["scores"], responses[2].json()["scores"], rtol=1e-5)
