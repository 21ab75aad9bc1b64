"""``polytask serve`` (issue 15, point 6): every task from one forward pass over HTTP, tested
in process. Its answers equal ``load(run).predict``; hostile input is a 4xx naming the
problem, never a 500; a full queue answers 503 with Retry-After at once; concurrent
requests share forward passes."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from tiny_reviews import cli, write_project

from polytask.runs import load

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from polytask.serve import Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("serve")
    result = cli("train", write_project(tmp, trainer={"epochs": 2}), "--out", tmp / "run")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return load(tmp / "run", device="cpu")


@pytest.fixture()
def client(run):
    with TestClient(create_app(run, Limits(max_inputs=8, max_chars=200, max_payload=4000))) as c:
        yield c


def test_predictions_equal_the_library_and_filter_tasks(client, run):
    inputs = ["the screen is good", ["bad", "battery", "life"]]
    answer = client.post("/predict", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tasks"] == ["aspects", "sentiment"]
    assert body["predictions"] == json.loads(json.dumps(run.predict(inputs)))
    only = client.post("/predict", json={"inputs": inputs, "tasks": ["sentiment"]}).json()
    assert [set(p) for p in only["predictions"]] == [{"sentiment"}, {"sentiment"}]
    assert only["predictions"][1]["sentiment"] == body["predictions"][1]["sentiment"]


def test_health_and_tasks(client):
    assert client.get("/health").json()["status"] == "ok"
    tasks = client.get("/tasks").json()
    assert tasks["aspects"] == {"kind": "tagging", "labels": ["O", "B-ASP", "I-ASP"]}
    assert "/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "content, headers, status, field",
    [
        (b'{"inputs": "a string"}', None, 422, "inputs"),
        (b'{"inputs": [3]}', None, 422, "inputs.0"),
        (b'{"inputs": []}', None, 422, "inputs"),
        (b'{"inputs": ["   "]}', None, 422, "inputs.0"),
        (b'{"inputs": [["a", ""]]}', None, 422, "inputs.0"),
        (b'{"inputs": ["ok"], "tasks": ["sentimnet"]}', None, 422, "tasks"),
        (b'{"inputs": ["ok"], "extra": 1}', None, 422, "extra"),
        (b'{"inputs": ["ok"]', None, 400, "body"),
        (b"\xff\xfe{}", None, 400, "body"),
        (b'{"inputs": ["' + b"x" * 300 + b'"]}', None, 413, "inputs.0"),
        (json.dumps({"inputs": ["a"] * 9}).encode(), None, 413, "inputs"),
        (b"[" * 5000 + b"]" * 5000, None, 413, "body"),
        (b"[" * 100 + b"]" * 100, None, 400, "body"),
        (b'{"inputs": ["ok"]}', {"content-type": "text/plain"}, 415, "content-type"),
        (b'{"inputs": ["ok"]}', {"content-type": ""}, 415, "content-type"),
    ],
)
def test_hostile_input_is_a_4xx_naming_the_problem(client, content, headers, status, field):
    answer = client.post(
        "/predict", content=content, headers=headers or {"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and error["problem"] and error["fix"]


class _Slow:
    """A run whose forward pass waits until released, recording its batch sizes."""

    tasks: dict[str, Any] = {}

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[int] = []

    def predict(self, inputs: list[Any]) -> list[dict[str, Any]]:
        self.release.wait(10)
        self.batches.append(len(inputs))
        return [{"n": len(x)} for x in inputs]


def _asgi(app: Any):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_a_full_queue_answers_503_at_once_and_the_rest_are_served():
    slow = _Slow()
    slow.tasks = {"n": type("T", (), {"kind": type("K", (), {"kind": "x", "labels": []})()})()}
    app = create_app(slow, Limits(queue_size=4, max_batch=4, max_wait_ms=1))

    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app), _asgi(app) as c:
            first = asyncio.create_task(c.post("/predict", json={"inputs": ["a", "b"]}))
            await asyncio.sleep(0.05)  # the first batch is in the model, blocked
            queued = [asyncio.create_task(c.post("/predict", json={"inputs": ["c", "d"]}))]
            await asyncio.sleep(0.05)
            refused = await asyncio.wait_for(
                c.post("/predict", json={"inputs": ["e", "f", "g"]}), timeout=2
            )
            slow.release.set()
            return [refused, await first, *[await q for q in queued]]

    refused, first, second = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
    assert refused.json()["error"]["field"] == "server"
    assert first.status_code == 200 and second.status_code == 200
    assert second.json()["predictions"] == [{"n": 1}, {"n": 1}]


def test_concurrent_requests_share_forward_passes(run):
    app = create_app(run, Limits(max_batch=64, max_wait_ms=50))

    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app), _asgi(app) as c:
            return await asyncio.gather(
                *(c.post("/predict", json={"inputs": [f"good screen {i}"]}) for i in range(12))
            )

    answers = asyncio.run(scenario())
    assert all(a.status_code == 200 for a in answers)
    stats = app.state.batcher.stats
    assert stats["inputs"] == 12 and stats["batches"] < 12  # shared passes
    for i, a in enumerate(answers):  # the same answers as one at a time (up to rounding:
        [served] = a.json()["predictions"]  # a batch of 12 sums in another order)
        [alone] = json.loads(json.dumps(run.predict([f"good screen {i}"])))
        assert served["aspects"]["tags"] == alone["aspects"]["tags"]
        assert served["sentiment"]["label"] == alone["sentiment"]["label"]
        for label, p in alone["sentiment"]["probabilities"].items():
            assert served["sentiment"]["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_serve_of_a_missing_run_is_one_line(tmp_path: Path):
    result = cli("serve", tmp_path / "nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
