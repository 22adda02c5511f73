"""One bad request harms no one: adversarial and seeded random requests against every endpoint answer 4xx
(never 5xx), good requests sent between or beside them get their own answers, a merged batch that fails
anywhere retries each request alone, and a real uvicorn server on 127.0.0.1 keeps a connection usable after
an error and times out a half-sent body."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BIN, assert_close
from fastapi.testclient import TestClient

import taskhead
from taskhead.serving import ServeSettings, create_app

JSON = {"content-type": "application/json"}
PREDICT, SEARCH = "/v1/models/m/predict", "/v1/indexes/i/search"
GOOD_TEXTS = ["good movie", "bad movie", "great film", "awful plot", "sad story"]
TOL = 1e-6  # batch mates may move fp32 scores by rounding only


@pytest.fixture(scope="module")
def predictor(tiny_runs: Any) -> Any:
    return taskhead.load(tiny_runs["classification"])


@pytest.fixture(scope="module")
def index(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from taskhead.retrieval.index import Index

    path = tmp_path_factory.mktemp("fuzz-index") / "idx"
    Index.build(str(tiny_backbone), ["good movie", "the stock market fell", "rain"], quiet=True).save(path)
    return Index.load(path)


def raw(body: str) -> bytes:
    return body.encode()


# (path, body bytes, headers, expected status): each the shape of a fault seen or feared
ADVERSARIAL = [
    (PREDICT, raw('{"inputs": ["\\ud800"]}'), JSON, 422),  # lone surrogate: the tokenizer raised (500)
    (PREDICT, raw('{"inputs": ["ok \\udfff x"]}'), JSON, 422),
    (PREDICT, raw('{"inputs": [{"\\ud800": "good"}]}'), JSON, 422),  # in a key
    (PREDICT, raw('{"inputs": ["good", NaN]}'), JSON, 422),  # FastAPI's error failed to render (500)
    (PREDICT, raw('{"inputs": [Infinity]}'), JSON, 422),
    (PREDICT, raw('{"inputs": [-Infinity]}'), JSON, 422),
    (PREDICT, raw('{"inputs": [1e999]}'), JSON, 422),
    (PREDICT, raw('{"inputs": [{"text": "good", "id": NaN}]}'), JSON, 422),  # was 200 with id null
    (PREDICT, b'{"inputs": ["\xff\xfe"]}', JSON, 422),  # invalid UTF-8 (was 400 in plain text)
    (PREDICT, b'{"inputs": ["\xff\xfe"]}', {"content-type": "text/plain"}, 415),  # was 500
    (PREDICT, b'{"inputs": ["\xed\xa0\x80"]}', JSON, 422),  # a surrogate encoded as UTF-8 bytes
    (PREDICT, raw('{"inputs": ["good"]}'), {"content-type": "application/x-www-form-urlencoded"}, 415),
    (PREDICT, b"", JSON, 422),
    (PREDICT, b"null", JSON, 422),
    (PREDICT, b"[1, 2]", JSON, 422),
    (PREDICT, raw('{"inputs": [' * 5000 + "]" * 5000 + "}"), JSON, 422),  # deep nesting
    (
        PREDICT,
        raw('{"inputs": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}'),
        JSON,
        422,
    ),
    (PREDICT, raw('{"inputs": [' + "9" * 5000 + "]}"), JSON, 422),  # over Python's int digit limit
    (PREDICT, raw('{"inputs": [""]}'), JSON, 422),
    (PREDICT, raw('{"inputs": ["   "]}'), JSON, 422),
    (PREDICT, raw('{"inputs": [true]}'), JSON, 422),
    (PREDICT, raw('{"inputs": "good"}'), JSON, 422),
    (PREDICT, raw('{"inputs": ["good"], "settings": []}'), JSON, 422),
    (PREDICT, raw('{"inputs": ["good"], "settings": {"num_beams": 2}}'), JSON, 422),  # not a generator
    (SEARCH, raw('{"queries": ["good"], "k": true}'), JSON, 422),  # was 200: true taken as 1
    (SEARCH, raw('{"queries": ["good"], "k": "3"}'), JSON, 422),
    (SEARCH, raw('{"queries": ["good"], "k": 2.0}'), JSON, 422),
    (SEARCH, raw('{"queries": ["good"], "k": NaN}'), JSON, 422),  # was 500
    (SEARCH, raw('{"queries": [""], "k": 2}'), JSON, 422),  # an empty query (was 200)
    (SEARCH, raw('{"queries": [" \\t"], "k": 2}'), JSON, 422),
    (SEARCH, raw('{"queries": ["\\udc00"], "k": 2}'), JSON, 422),  # was 500
    (SEARCH, b"\xff", JSON, 422),
    (SEARCH, raw('{"queries": "good"}'), JSON, 422),
    ("/v1/models/nope/predict", raw('{"inputs": ["good"]}'), JSON, 404),
    ("/v1/indexes/nope/search", raw('{"queries": ["good"]}'), JSON, 404),
]


@pytest.mark.parametrize(("path", "body", "headers", "status"), ADVERSARIAL)
def test_adversarial_requests_are_4xx(
    predictor: Any, index: Any, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    with TestClient(create_app({"m": predictor}, {"i": index})) as client:
        r = client.post(path, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert r.json()["detail"]
        r = client.post(PREDICT, json={"inputs": ["good movie"]})  # the next request is served as usual
        assert r.status_code == 200 and r.json()["predictions"] == predictor.predict(["good movie"])


def test_error_messages_name_the_fault(predictor: Any, index: Any) -> None:
    with TestClient(create_app({"m": predictor}, {"i": index})) as client:
        r = client.post(PREDICT, content=raw('{"inputs": ["good", "a\\ud800"]}'), headers=JSON)
        assert r.json()["detail"] == [
            {
                "type": "string_unicode",
                "loc": ["body", "inputs", 1],
                "msg": "a lone surrogate U+D800 at character 1: a text must be valid Unicode (an unpaired "
                "\\ud800-\\udfff escape)",
            }
        ]
        r = client.post(PREDICT, content=raw('{"inputs": [NaN]}'), headers=JSON)
        assert r.json()["detail"] == [
            {"type": "json_invalid", "loc": ["body"], "msg": "NaN is not a JSON number"}
        ]
        r = client.post(PREDICT, content=b'{"inputs": ["\xff"]}', headers=JSON)
        assert r.json()["detail"][0]["msg"] == "the body is not valid UTF-8: byte 0xff at offset 13"
        r = client.post(SEARCH, json={"queries": ["good"], "k": True})
        assert r.json()["detail"] == [
            {"type": "int_type", "loc": ["body", "k"], "msg": "Input should be a valid integer"}
        ]
        r = client.post(SEARCH, json={"queries": ["good", ""]})
        assert r.json() == {"detail": "queries[1]: expected a non-empty query, found ''"}
        r = client.post(PREDICT, content=b'{"inputs": ["good"]}', headers={"content-type": "text/plain"})
        assert r.json() == {"detail": "content-type: expected application/json, got 'text/plain'"}
        r = client.post(PREDICT, content=b'{"inputs": ["good"]}')  # no content type: taken as JSON
        assert r.status_code == 200


def test_generation_settings_take_no_coercion(tiny_runs: Any) -> None:
    generator = taskhead.load(tiny_runs["generation"])
    with TestClient(create_app({"g": generator})) as client:
        url = "/v1/models/g/predict"
        for settings, message in [
            ({"num_beams": True}, "settings num_beams: Input should be a valid integer (got True)"),
            ({"max_new_tokens": "5"}, "settings max_new_tokens: Input should be a valid integer (got '5')"),
            ({"max_new_tokens": 2.0}, "settings max_new_tokens: Input should be a valid integer (got 2.0)"),
            ({"do_sample": "yes"}, "settings do_sample: Input should be a valid boolean (got 'yes')"),
        ]:
            r = client.post(url, json={"inputs": ["good movie"], "settings": settings})
            assert r.status_code == 422 and r.json() == {"detail": message}
        r = client.post(url, json={"inputs": ["good movie"], "settings": {"max_new_tokens": 2}})
        assert r.status_code == 200
        assert r.json()["predictions"] == generator.predict(["good movie"], max_new_tokens=2)
        r = client.post(url, content=raw('{"inputs": ["\\ud83d"]}'), headers=JSON)
        assert r.status_code == 422


class FailingEncode:
    """A Predictor whose task's ``encode`` (the long-input check) raises a plain TypeError for one text: a
    failure outside the forward pass, the way a tokenizer fails on what it cannot encode."""

    def __init__(self, inner: Any, bad: str) -> None:
        self.inner, self.bad, self.calls = inner, bad, []
        outer = self

        class Task:
            def __getattr__(self, name: str) -> Any:
                return getattr(outer.inner.task, name)

            def encode(self, examples: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
                if any(ex.get("text") == outer.bad for ex in examples):
                    raise TypeError("the tokenizer cannot encode this")
                return outer.inner.task.encode(examples, *args, **kwargs)

        self.task = Task()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append(len(examples))
        return self.inner.predict_examples(examples)


class WrongCount:
    """A Predictor that drops the last prediction of a call of more than 2 inputs with a 'boom' among them:
    the merged batch below, never one of its requests alone."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        predictions = self.inner.predict_examples(examples)
        if len(examples) > 2 and any(ex.get("text") == "boom" for ex in examples):
            return predictions[:-1]
        return predictions


async def post_all(app: Any, requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """Send all requests at once, as concurrent clients would; app exceptions are raised, not hidden."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return list(await asyncio.gather(*(client.post(p, content=b, headers=JSON) for p, b in requests)))


@pytest.mark.parametrize("wrap", ["encode", "count"])
def test_a_merged_batch_failing_anywhere_retries_each_request_alone(predictor: Any, wrap: str) -> None:
    model = FailingEncode(predictor, "boom") if wrap == "encode" else WrongCount(predictor)
    app = create_app({"m": model}, settings=ServeSettings(batch_wait_ms=300))
    bodies = [["good movie"], ["fine", "boom"], ["bad movie", "sad story"], ["great film"]]
    responses = asyncio.run(post_all(app, [(PREDICT, json.dumps({"inputs": b}).encode()) for b in bodies]))
    expected = [200, 500, 200, 200] if wrap == "encode" else [200] * 4
    assert [r.status_code for r in responses] == expected
    for body, response in zip(bodies, responses, strict=True):
        if "boom" not in body or wrap == "count":
            assert_close(response.json()["predictions"], predictor.predict(body), TOL)
    if wrap == "encode":
        assert responses[1].json() == {
            "detail": "internal error: TypeError: the tokenizer cannot encode this"
        }
        assert model.calls == [4]  # the long-input check failed for one request only: the rest merged


def test_a_model_failure_raises_nothing_past_the_app(predictor: Any) -> None:
    class Crash:
        def __getattr__(self, name: str) -> Any:
            return getattr(predictor, name)

        def predict_examples(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
            raise RuntimeError("the model fell over")

    # raise_server_exceptions=True (the default): an exception re-raised after the 500 would fail here;
    # under uvicorn it would drop the connection without saying Connection: close
    with TestClient(create_app({"m": Crash()})) as client:
        r = client.post(PREDICT, json={"inputs": ["good movie"]})
        assert r.status_code == 500 and "connection" not in r.headers
        assert r.json() == {"detail": "internal error: RuntimeError: the model fell over"}


# ---------------------------------------------------------------- seeded random fuzzing

TRICKY_TEXTS = ["", " ", "good movie", "\u200b", "\x00", "\ufeff", "é\u0301", "🙂", "\u2028", "a" * 300]
TRICKY_NUMBERS: list[Any] = [0, -1, 1.5, 10**30, float("nan"), float("inf"), True, False, None]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 3)
    if kind == 0:
        return rng.choice([*TRICKY_TEXTS, chr(rng.randrange(55296, 57344)), chr(rng.randrange(65536))])
    if kind == 1:
        return rng.choice(TRICKY_NUMBERS)
    if kind == 2:
        return rng.choice(GOOD_TEXTS)
    if kind in (3, 4):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["text", "text_pair", "id", "tokens", "question", "context", "source", "_where", "k", "inputs"]
    return {
        rng.choice([*keys, chr(rng.randrange(55296, 57344))]): random_value(rng, depth + 1) for _ in range(3)
    }


def random_body(rng: random.Random) -> tuple[bytes, dict[str, str]]:
    """A valid-looking body with random parts replaced, serialised with NaN/Infinity allowed, then perhaps
    encoded wrongly, cut short or corrupted, under a random content type."""
    body: dict[str, Any] = {"inputs": [rng.choice(GOOD_TEXTS)], "queries": ["good"], "k": 2, "settings": {}}
    for _ in range(rng.randrange(1, 4)):
        body[rng.choice([*list(body), "extra"])] = random_value(rng)
    for key in rng.sample(list(body), rng.randrange(3)):
        del body[key]
    text = json.dumps(body, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    data = text.encode("utf-8", "surrogatepass")  # unescaped surrogates: invalid UTF-8
    mutation = rng.randrange(6)
    if mutation == 0 and data:
        data = data[: rng.randrange(len(data))]
    elif mutation == 1 and data:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
    content_type = rng.choice(
        ["application/json"] * 6 + ["text/plain", "application/json; charset=latin-1", ""]
    )
    return data, {"content-type": content_type} if content_type else {}


ENDPOINTS = [
    ("POST", PREDICT),
    ("POST", SEARCH),
    ("POST", "/v1/models/nope/predict"),
    ("POST", "/v1/indexes/nope/search"),
    ("GET", "/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/indexes"),
    ("GET", PREDICT),
    ("POST", "/health"),
]


def test_seeded_fuzz_never_answers_5xx_and_good_requests_keep_their_answers(
    predictor: Any, index: Any
) -> None:
    rng = random.Random(15)
    alone = {text: predictor.predict([text]) for text in GOOD_TEXTS}
    hits = index.search(["good movie"], 2)
    statuses: dict[int, int] = {}
    with TestClient(create_app({"m": predictor}, {"i": index}, ServeSettings(max_text_chars=200))) as client:
        for n in range(300):
            method, path = rng.choice(ENDPOINTS)
            data, headers = random_body(rng)
            r = client.request(method, path, content=data, headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (n, method, path, data, r.text)
            assert isinstance(r.json(), dict), (n, data, r.text)
            if r.status_code >= 400:
                assert r.json()["detail"], (n, data)
            if n % 5 == 0:  # a good request between the bad ones gets its own answer
                text = rng.choice(GOOD_TEXTS)
                r = client.post(PREDICT, json={"inputs": [text]})
                assert r.status_code == 200 and r.json()["predictions"] == alone[text]
                r = client.post(SEARCH, json={"queries": ["good movie"], "k": 2})
                assert r.status_code == 200 and r.json()["results"] == hits
    assert statuses.get(200, 0) > 0 and statuses.get(422, 0) > 50  # the fuzz reaches past the parser too


def test_seeded_fuzz_beside_good_requests_in_merged_batches(predictor: Any) -> None:
    rng = random.Random(1515)
    app = create_app({"m": predictor}, settings=ServeSettings(batch_wait_ms=20))
    for _ in range(5):
        good = [[rng.choice(GOOD_TEXTS) for _ in range(rng.randrange(1, 4))] for _ in range(4)]
        bad = [random_body(rng)[0] for _ in range(8)]
        requests = [(PREDICT, json.dumps({"inputs": g}).encode()) for g in good] + [(PREDICT, b) for b in bad]
        order = list(range(len(requests)))
        rng.shuffle(order)
        responses = asyncio.run(post_all(app, [requests[i] for i in order]))
        by_request = dict(zip(order, responses, strict=True))
        for i, texts in enumerate(good):
            assert by_request[i].status_code == 200, by_request[i].text
            assert_close(by_request[i].json()["predictions"], predictor.predict(texts), TOL)
        assert all(by_request[i].status_code < 500 for i in range(len(good), len(requests)))


# ---------------------------------------------------------------- a real uvicorn server on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_runs: Any) -> Any:
    """``taskhead serve`` on 127.0.0.1 and a free port, with a 1 s body timeout and a 2 s keep-alive (and
    header) timeout; stopped after the tests."""
    port = _free_port()
    command = [str(BIN / "taskhead"), "serve", f"m={tiny_runs['classification']}", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--body-timeout", "1", "--keep-alive-timeout", "2", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 120 s"
            time.sleep(0.3)
        yield port
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err


def test_real_server_keeps_the_connection_after_errors(server: int, predictor: Any) -> None:
    connection = HTTPConnection("127.0.0.1", server, timeout=10)
    try:
        connection.request("GET", "/health")
        assert connection.getresponse().read() and connection.sock is not None
        sock = connection.sock
        for body, headers, status in [
            (b'{"inputs": ["good", NaN]}', JSON, 422),
            (b'{"inputs": ["\\ud800"]}', JSON, 422),
            (b'{"inputs": ["\xff"]}', {"content-type": "text/plain"}, 415),
            (b'{"inputs": [""]}', JSON, 422),
            (b'{"inputs": [', JSON, 422),
            (b'{"inputs": ["' + b"x" * (1 << 20) + b'"]}', JSON, 413),  # answered before the body is read
            (b'{"inputs": ["good movie"]}', JSON, 200),
        ]:
            connection.request("POST", "/v1/models/m/predict", body=body, headers=headers)
            response = connection.getresponse()
            answer = json.loads(response.read())
            assert response.status == status, answer
            assert response.getheader("connection") is None  # no Connection: close: the same socket serves on
            assert connection.sock is sock
        assert answer["predictions"] == predictor.predict(["good movie"])
    finally:
        connection.close()


def test_real_server_times_out_a_half_sent_body(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(
            b"POST /v1/models/m/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"inputs": ["go'
        )
        start = time.monotonic()
        received = b""
        while chunk := s.recv(4096):  # until the server closes the connection
            received += chunk
        waited = time.monotonic() - start
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"detail": "the request body did not arrive within 1 s (--body-timeout)"}
    assert 0.8 < waited < 8


def test_real_server_drops_half_sent_headers(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        s.sendall(b"POST /v1/models/m/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        start = time.monotonic()
        assert s.recv(4096) == b""  # closed without an answer
        assert 1.5 < time.monotonic() - start < 8
