"""``taskhead serve``: every endpoint through starlette's TestClient, micro-batching, limits, refusals, and
one real server in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BIN, assert_close, run_cli
from fastapi.testclient import TestClient

import taskhead
from taskhead.errors import ConfigError, DataError, UnsafeWeightsError
from taskhead.serving import ServeSettings, create_app, load_models
from taskhead.serving.loading import parse_specs

LONG_WORDS = " ".join(["good"] * 60)  # 60 tokens: over the tiny runs' max_length of 32


@pytest.fixture(scope="module")
def predictor(tiny_runs: Any) -> Any:
    return taskhead.load(tiny_runs["classification"])


class Counting:
    """A Predictor that records the size of every forward pass (``predict_examples`` call)."""

    def __init__(self, inner: Any, fail_on: str | None = None, crash: bool = False) -> None:
        self.inner, self.calls, self.fail_on, self.crash = inner, [], fail_on, crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append(len(examples))
        if self.crash:
            self.crash = False
            raise RuntimeError("the model fell over")
        bad = [ex["_where"] for ex in examples if ex.get("text") == self.fail_on]
        if bad:
            raise DataError([f"{bad[0]}: text: refused by the test"])
        return self.inner.predict_examples(examples)


def post_concurrently(app: Any, bodies: list[dict[str, Any]], model: str = "m") -> list[httpx.Response]:
    """Send all requests at once from one event loop, as concurrent clients would."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return list(
                await asyncio.gather(*(client.post(f"/v1/models/{model}/predict", json=b) for b in bodies))
            )

    return asyncio.run(go())


def test_endpoints(predictor: Any, tiny_backbone: Path, tmp_path: Path) -> None:
    from taskhead.retrieval.index import Index

    docs = ["good movie", {"id": "d2", "text": "the stock market fell", "metadata": {"src": "news"}}, "rain"]
    Index.build(str(tiny_backbone), docs, quiet=True).save(tmp_path / "idx")
    index = Index.load(tmp_path / "idx")
    app = create_app({"sst": predictor}, {"docs": index})
    inputs = ["good movie", "bad movie", {"id": "x", "text": "awful plot"}]  # single-text model
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "ok"
        models = client.get("/v1/models").json()["models"]
        assert models == [
            {
                "name": "sst",
                "task": "classification",
                "labels": ["neg", "pos"],
                "backbone": str(tiny_backbone),
                "max_length": 32,
                "backend": "torch",
            }
        ]
        assert client.get("/v1/indexes").json() == {"indexes": ["docs"]}
        r = client.post("/v1/models/sst/predict", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        assert r.json() == {"model": "sst", "predictions": predictor.predict(inputs)}
        assert r.json()["predictions"][2]["id"] == "x"
        r = client.post("/v1/indexes/docs/search", json={"queries": ["market", "film"], "k": 2})
        assert r.status_code == 200, r.text
        assert r.json() == {"results": index.search(["market", "film"], 2), "truncated": []}
        assert {hit["id"] for hit in r.json()["results"][0]} <= {"0", "d2", "2"}
        assert client.post("/v1/indexes/docs/search", json={"queries": ["x"], "k": 0}).status_code == 422
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/models/{name}/predict", "/v1/indexes/{name}/search", "/v1/models", "/health"} <= set(
            paths
        )
        stats = client.get("/health").json()["models"]["sst"]
        assert stats["requests"] == 1 and stats["inputs"] == 3


def test_other_tasks_take_their_own_inputs(tiny_runs: Any) -> None:
    qa = taskhead.load(tiny_runs["question-answering"])
    ner = taskhead.load(tiny_runs["token-classification"])
    emb = taskhead.load(tiny_runs["embedding"])
    app = create_app({"qa": qa, "ner": ner, "emb": emb})
    qa_inputs = [
        ["who won", "the team won the match"],
        {"question": "what fell", "context": "the market fell"},
    ]
    ner_inputs = ["alice was in rome", {"tokens": ["bob", "was", "in", "oslo"]}]
    with TestClient(app) as client:
        r = client.post("/v1/models/qa/predict", json={"inputs": qa_inputs})
        got, expected = r.json()["predictions"], qa.predict(qa_inputs)
        assert [p.pop("id") for p in got] == ["inputs[0]", "inputs[1]"]  # QA's default id: where it was
        assert got == [{k: v for k, v in p.items() if k != "id"} for p in expected]
        r = client.post("/v1/models/ner/predict", json={"inputs": ner_inputs})
        assert r.json()["predictions"] == ner.predict(ner_inputs)
        emb_inputs = ["good movie", ["good movie", "bad film"]]
        r = client.post("/v1/models/emb/predict", json={"inputs": emb_inputs})
        assert_close(r.json()["predictions"], emb.predict(emb_inputs), tol=1e-5)
        assert len(r.json()["predictions"][0]["embedding"]) == 32 and "score" in r.json()["predictions"][1]
        r = client.post("/v1/models/qa/predict", json={"inputs": ["a question without context"]})
        assert r.status_code == 422
        assert r.json()["detail"].startswith("inputs[0]: expected a (question, context) pair")


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_answers(predictor: Any) -> None:
    counting = Counting(predictor)
    app = create_app({"m": counting}, settings=ServeSettings(batch_wait_ms=300))
    texts = ["good movie", "bad movie", "great film", "awful plot", "sad story", "nice plot"]
    bodies = [
        {"inputs": [{"id": f"{i}-{j}", "text": texts[(i + j) % 6]} for j in range(i + 1)]} for i in range(6)
    ]
    responses = post_concurrently(app, bodies)
    assert counting.calls == [21]  # 1 + 2 + ... + 6 inputs in one forward pass
    # scores are unrounded: a merged batch is padded differently, so fp32 sums may differ in the last bits
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_close(response.json()["predictions"], predictor.predict(body["inputs"]), tol=1e-6)

    counting.calls.clear()
    app = create_app({"m": counting}, settings=ServeSettings(batch_wait_ms=300, micro_batching=False))
    responses = post_concurrently(app, bodies)
    assert sorted(counting.calls) == [1, 2, 3, 4, 5, 6]  # each request alone
    for body, response in zip(bodies, responses, strict=True):
        assert_close(response.json()["predictions"], predictor.predict(body["inputs"]), tol=1e-6)


def test_batches_stay_within_max_batch(predictor: Any) -> None:
    counting = Counting(predictor)
    app = create_app({"m": counting}, settings=ServeSettings(batch_wait_ms=200, max_batch=4))
    bodies = [{"inputs": ["good movie"] * 3} for _ in range(4)] + [{"inputs": ["bad movie"] * 10}]
    responses = post_concurrently(app, bodies)
    assert all(r.status_code == 200 for r in responses)
    assert sorted(counting.calls) == [3, 3, 3, 3, 10]  # a request over max_batch runs alone, never split
    assert [len(r.json()["predictions"]) for r in responses] == [3, 3, 3, 3, 10]


def test_a_bad_request_in_a_merged_batch_fails_alone(predictor: Any) -> None:
    counting = Counting(predictor, fail_on="boom")
    app = create_app({"m": counting}, settings=ServeSettings(batch_wait_ms=300))
    bodies = [{"inputs": ["good movie"]}, {"inputs": ["fine", "boom"]}, {"inputs": ["bad movie"]}]
    responses = post_concurrently(app, bodies)
    assert [r.status_code for r in responses] == [200, 422, 200]
    assert responses[1].json() == {"detail": "inputs[1]: text: refused by the test"}
    assert responses[2].json()["predictions"] == predictor.predict(["bad movie"])


def test_a_model_failure_is_a_500_and_the_server_keeps_serving(predictor: Any) -> None:
    app = create_app({"m": Counting(predictor, crash=True)})
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/models/m/predict", json={"inputs": ["good movie"]})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error: RuntimeError: the model fell over"}
        assert client.post("/v1/models/m/predict", json={"inputs": ["good movie"]}).status_code == 200


def test_malformed_requests_are_422(predictor: Any) -> None:
    with TestClient(create_app({"m": predictor})) as client:
        url = "/v1/models/m/predict"
        r = client.post(url, content=b'{"inputs": [', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
        r = client.post(url, json={"texts": ["good"]})
        assert r.status_code == 422
        assert {e["type"] for e in r.json()["detail"]} == {"missing", "extra_forbidden"}
        assert client.post(url, json={"inputs": "good movie"}).status_code == 422  # not a list
        assert client.post(url, json={"inputs": [3]}).status_code == 422
        r = client.post(url, json={"inputs": ["good", {"text": ""}]})
        assert r.status_code == 422
        assert r.json() == {"detail": "inputs[1]: text: expected a non-empty string, found ''"}
        assert client.post(url, json={"inputs": []}).json() == {"model": "m", "predictions": []}


def test_unknown_model_or_index_is_404(predictor: Any) -> None:
    with TestClient(create_app({"sst": predictor})) as client:
        r = client.post("/v1/models/sts/predict", json={"inputs": ["good"]})
        assert r.status_code == 404
        assert r.json() == {"detail": "unknown model 'sts' (served: sst); did you mean 'sst'?"}
        r = client.post("/v1/indexes/docs/search", json={"queries": ["good"]})
        assert r.status_code == 404 and "unknown index 'docs'" in r.json()["detail"]


def test_body_and_batch_limits_are_413(predictor: Any) -> None:
    settings = ServeSettings(max_body_bytes=400, max_batch_items=3)
    with TestClient(create_app({"m": predictor}, settings=settings)) as client:
        url = "/v1/models/m/predict"
        assert client.post(url, json={"inputs": ["good movie"] * 3}).status_code == 200
        r = client.post(url, json={"inputs": ["good movie " * 50]})
        assert r.status_code == 413
        assert r.json() == {"detail": "request body over the server's limit of 400 bytes (--max-body-bytes)"}

        def chunked() -> Any:  # no Content-Length: counted while read
            yield b'{"inputs": ["'
            for _ in range(10):
                yield b"good " * 20
            yield b'"]}'

        r = client.post(url, content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "--max-body-bytes" in r.json()["detail"]
        r = client.post(url, json={"inputs": ["good"] * 4})
        assert r.status_code == 413
        assert r.json()["detail"].startswith("inputs: 4 items; the server takes at most 3 per request")


def test_long_inputs_truncate_or_reject(predictor: Any) -> None:
    url = "/v1/models/m/predict"
    truncate = ServeSettings(max_text_chars=50)
    with TestClient(create_app({"m": predictor}, settings=truncate)) as client:
        r = client.post(url, json={"inputs": ["good movie", "x" + "good " * 30, LONG_WORDS[:49]]})
        assert r.status_code == 200, r.text
        flags = [p.get("truncated") for p in r.json()["predictions"]]
        assert flags == [None, True, None]  # the third: 49 characters, 10 words: fits both limits
        r = client.post(url, json={"inputs": ["good movie", "bad movie " + "x" * 80]})  # single-text model
        assert [p.get("truncated") for p in r.json()["predictions"]] == [None, True]
    with TestClient(create_app({"m": predictor}, settings=ServeSettings())) as client:
        r = client.post(url, json={"inputs": ["good movie", LONG_WORDS]})  # 60 tokens over max_length 32
        assert [p.get("truncated") for p in r.json()["predictions"]] == [None, True]
        assert r.json()["predictions"][1]["label"] == predictor.predict([LONG_WORDS])[0]["label"]
    reject = ServeSettings(max_text_chars=50, on_long="reject")
    with TestClient(create_app({"m": predictor}, settings=reject)) as client:
        r = client.post(url, json={"inputs": ["good movie", "x" * 80]})
        assert r.status_code == 422
        assert r.json()["detail"] == (
            "inputs[1]: a text of 80 characters is over the server's limit of 50 (--max-text-chars; "
            "the server rejects long inputs: --on-long reject)"
        )
        assert client.post(url, json={"inputs": ["good movie", LONG_WORDS[:50]]}).status_code == 200
    reject_tokens = ServeSettings(on_long="reject")
    with TestClient(create_app({"m": predictor}, settings=reject_tokens)) as client:
        r = client.post(url, json={"inputs": ["good movie", "bad movie", LONG_WORDS]})
        assert r.status_code == 422
        assert r.json()["detail"] == (
            "inputs[2]: the model would truncate this input to fit model.max_length=32 tokens; the server "
            "rejects long inputs (--on-long reject)"
        )


def test_search_limits_and_errors() -> None:
    class FakeIndex:
        def __init__(self) -> None:
            self.calls: list[tuple[list[str], int]] = []

        def search(self, queries: list[str], k: int) -> list[list[dict[str, Any]]]:
            import numpy as np

            self.calls.append((queries, k))
            if "bad" in queries:
                raise DataError(["queries: refused by the fake index"])
            return [[{"id": q, "score": np.float32(0.5), "text": q, "metadata": {}}] for q in queries]

    fake = FakeIndex()
    app = create_app({}, {"f": fake}, ServeSettings(max_text_chars=5, max_batch_items=2))
    with TestClient(app) as client:
        r = client.post("/v1/indexes/f/search", json={"queries": ["a", "abcdefgh"], "k": 3})
        assert r.json() == {
            "results": [
                [{"id": "a", "score": 0.5, "text": "a", "metadata": {}}],
                [{"id": "abcde", "score": 0.5, "text": "abcde", "metadata": {}}],
            ],
            "truncated": [1],
        }
        assert fake.calls == [(["a", "abcde"], 3)]
        assert client.post("/v1/indexes/f/search", json={"queries": ["a"] * 3}).status_code == 413
        r = client.post("/v1/indexes/f/search", json={"queries": ["bad"]})
        assert r.status_code == 422 and r.json() == {"detail": "queries: refused by the fake index"}
        assert client.post("/v1/indexes/f/search", json={"query": "a"}).status_code == 422


def test_pickle_only_runs_and_remote_code_are_refused(tiny_runs: Any, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    run = shutil.copytree(tiny_runs["classification"], tmp_path / "pickled")
    weights = run / "model" / "model.safetensors"
    torch.save(load_file(str(weights)), run / "model" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UnsafeWeightsError, match=r"weights only as pickle files \(pytorch_model.bin\)"):
        load_models([str(run)])
    result = run_cli("serve", str(run), "--port", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {run / 'model'}: weights only as pickle files (pytorch_model.bin) and no *.safetensors; "
        "the server loads safetensors only (unpickling can run code from the file): re-save the model with "
        "save_pretrained(..., safe_serialization=True) and serve it again"
    )

    remote = shutil.copytree(tiny_runs["classification"], tmp_path / "remote")
    meta = json.loads((remote / "taskhead.json").read_text())
    meta["config"]["model"]["trust_remote_code"] = True
    (remote / "taskhead.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="start the server with --trust-remote-code"):
        load_models([str(remote)])
    assert load_models([f"r={remote}"], trust_remote_code=True)["r"].labels == ["neg", "pos"]


def test_model_names() -> None:
    assert parse_specs(["runs/a", "b=runs/a"], "RUN_DIR") == {"a": Path("runs/a"), "b": Path("runs/a")}
    with pytest.raises(ConfigError, match=r"the name 'a' is taken by runs/a; name one of them: NAME=x/a"):
        parse_specs(["runs/a", "x/a"], "RUN_DIR")
    from taskhead.cli import main

    with pytest.raises(ConfigError, match="nothing to serve; pass at least one RUN_DIR or --index"):
        main(["--debug", "serve"])


def test_serve_help() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for option in ("--index", "--max-batch", "--batch-wait-ms", "--max-body-bytes", "--max-batch-items"):
        assert option in result.stdout
    for option in (
        "--max-text-chars",
        "--on-long",
        "--no-micro-batching",
        "--trust-remote-code",
        "--backend",
        "--body-timeout",
        "--keep-alive-timeout",
    ):
        assert option in result.stdout


def test_connection_settings_are_checked() -> None:
    assert ServeSettings(body_timeout_s=0.5, keep_alive_s=2).body_timeout_s == 0.5
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="body_timeout_s: expected a positive finite number"):
            ServeSettings(body_timeout_s=bad)
    with pytest.raises(ConfigError, match="keep_alive_s: expected a positive integer, got 0"):
        ServeSettings(keep_alive_s=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_server(tiny_runs: Any) -> None:
    port = _free_port()
    run = tiny_runs["classification"]
    process = subprocess.Popen(
        [str(BIN / "taskhead"), "serve", f"sst={run}", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.3)
        r = httpx.post(f"{base}/v1/models/sst/predict", json={"inputs": ["good movie"]}, timeout=30)
        assert r.status_code == 200
        assert r.json() == {"model": "sst", "predictions": taskhead.load(run).predict(["good movie"])}
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), err  # uvicorn re-raises the signal after shutdown
    assert "Traceback" not in err
    assert f"serving model sst on http://127.0.0.1:{port}" in err
