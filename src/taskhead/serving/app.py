"""The FastAPI application: prediction per model, search per index, model listing, health.

``create_app(models, indexes, settings)`` takes loaded Predictor-like objects (``task``, ``tokenizer``,
``config``, ``labels``, ``predict_examples``) and index-like objects (``search(queries, k)``), so tests
build it around tiny models or fakes and call it through starlette's TestClient without a server.

Errors are JSON ``{"detail": ...}``: 404 unknown model or index, 408 a body that did not arrive in time,
413 body or batch over the limits, 415 a body that is not JSON, 422 invalid UTF-8, malformed JSON (NaN,
Infinity and lone surrogates included), wrong fields or types, or inputs the task cannot take (the task's
own message, naming ``inputs[i]``), 500 a failure of the model itself (the server and the connection keep
running). Bodies are read by ``taskhead.serving.body``, not by FastAPI.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskhead import __version__
from taskhead.errors import ConfigError, DataError, TaskheadError
from taskhead.serving.batching import MicroBatcher
from taskhead.serving.body import BodyTimeout, CatchAll, read_body
from taskhead.serving.settings import ServeSettings

PredictInput = str | list[str] | dict[str, Any]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": ["a charming film", "dull and far too long"]}]},
    )
    inputs: list[PredictInput] = Field(
        description="What Predictor.predict takes for the model's task: a text; a [text, text_pair] pair or "
        '{"text", "text_pair"}; {"question", "context"}; a source text; {"tokens": [...]}; '
        'optionally with an "id", copied to the prediction. Dicts may also use the run\'s training column '
        "names."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description='Decoding settings of a generation model for this request only, e.g. {"num_beams": 4, '
        '"max_new_tokens": 32}; default: the run\'s own. Other tasks take none (422).',
    )


class PredictResponse(BaseModel):
    model: str
    predictions: list[dict[str, Any]] = Field(
        description='One prediction per input, in order; "truncated": true where the input was cut.'
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"queries": ["how do wings lift"], "k": 5}]}
    )
    queries: list[str] = Field(description="Query texts.")
    k: int = Field(10, ge=1, le=1000, description="Hits per query.")


class SearchResponse(BaseModel):
    results: list[list[dict[str, Any]]] = Field(
        description='Per query, its hits best first: {"id", "score", "text", "metadata"}.'
    )
    truncated: list[int] = Field(
        default_factory=list, description="Indexes of the queries cut to the server's --max-text-chars."
    )


class ModelInfo(BaseModel):
    name: str
    task: str
    labels: list[str]
    backbone: str
    max_length: int
    backend: str


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class IndexesResponse(BaseModel):
    indexes: list[str]


class Health(BaseModel):
    status: str
    models: dict[str, dict[str, Any]] = Field(description="Per model: requests, forward passes, inputs.")
    indexes: list[str]


def create_app(
    models: dict[str, Any], indexes: dict[str, Any] | None = None, settings: ServeSettings | None = None
) -> FastAPI:
    """The application serving ``models`` (name -> Predictor) and ``indexes`` (name -> Index)."""
    indexes = indexes or {}
    settings = settings or ServeSettings()
    batchers = {name: MicroBatcher(predictor, settings) for name, predictor in models.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for batcher in batchers.values():
            await batcher.close()

    app = FastAPI(
        title="taskhead",
        version=__version__,
        description="Predictions of fine-tuned taskhead runs and search over embedding indexes.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout_s)
    app.add_middleware(CatchAll)  # outermost of ours: a 500 keeps the connection usable
    _error_handlers(app)
    _listing_routes(app, models, indexes, batchers)
    _serving_routes(app, indexes, batchers, settings)
    return app


def _listing_routes(
    app: FastAPI, models: dict[str, Any], indexes: dict[str, Any], batchers: dict[str, MicroBatcher]
) -> None:
    """``GET /health``, ``/v1/models``, ``/v1/indexes``."""

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        stats = {name: b.stats.as_dict() for name, b in batchers.items()}
        return Health(status="ok", models=stats, indexes=sorted(indexes))

    @app.get("/v1/models", response_model=ModelsResponse)
    async def list_models() -> ModelsResponse:
        return ModelsResponse(models=[describe(name, p) for name, p in models.items()])

    @app.get("/v1/indexes", response_model=IndexesResponse)
    async def list_indexes() -> IndexesResponse:
        return IndexesResponse(indexes=sorted(indexes))


def _serving_routes(
    app: FastAPI, indexes: dict[str, Any], batchers: dict[str, MicroBatcher], settings: ServeSettings
) -> None:
    """``POST /v1/models/{name}/predict`` (through the model's micro-batcher) and
    ``/v1/indexes/{name}/search`` (one search at a time per index)."""
    index_locks = {name: asyncio.Lock() for name in indexes}
    errors: dict[int | str, dict[str, Any]] = {
        404: {"description": "unknown model or index"},
        408: {"description": "the body did not arrive within the server's --body-timeout"},
        413: {"description": "body or batch over the server's limits"},
        415: {"description": "a body that is not JSON"},
        422: {"description": "malformed request or inputs the task cannot take"},
    }

    @app.post(
        "/v1/models/{name}/predict",
        response_model=PredictResponse,
        responses=errors,
        openapi_extra=_request_body(PredictRequest),
    )
    async def predict(name: str, request: Request) -> PredictResponse:
        body = await read_body(request, PredictRequest)  # read first: the connection stays in step
        batcher = batchers.get(name) or _not_found("model", name, batchers)
        _check_items(len(body.inputs), "inputs", settings)
        examples, cut = to_examples(batcher.predictor, body.inputs, settings)
        if body.settings:  # checked now (422); the batch runs each request's settings apart from others'
            check_decoding(batcher.predictor, body.settings)
            for example in examples:
                example["_decoding"] = dict(body.settings)
        predictions = await batcher.submit(examples, cut)
        return PredictResponse(model=name, predictions=plain(predictions))

    @app.post(
        "/v1/indexes/{name}/search",
        response_model=SearchResponse,
        responses=errors,
        openapi_extra=_request_body(SearchRequest),
    )
    async def search(name: str, request: Request) -> SearchResponse:
        body = await read_body(request, SearchRequest)
        index = indexes.get(name) or _not_found("index", name, indexes)
        return await search_index(index, index_locks[name], body, settings)


async def search_index(
    index: Any, lock: asyncio.Lock, body: SearchRequest, settings: ServeSettings
) -> SearchResponse:
    """One search request: limits first, then ``index.search`` in a thread, one at a time per index."""
    _check_items(len(body.queries), "queries", settings)
    queries, cut = [], []
    for i, query in enumerate(body.queries):
        if not query.strip():
            raise DataError([f"queries[{i}]: expected a non-empty query, found {query!r}"])
        text, longest = cut_texts(query, settings.max_text_chars)
        if longest > settings.max_text_chars:
            _long_text(f"queries[{i}]", longest, settings)
            cut.append(i)
        queries.append(text)
    if not queries:
        return SearchResponse(results=[], truncated=[])
    async with lock:
        results = await asyncio.to_thread(index.search, queries, body.k)
    return SearchResponse(results=plain(results), truncated=cut)


def _too_large(max_bytes: int) -> str:
    return f"request body over the server's limit of {max_bytes} bytes (--max-body-bytes)"


class BodyLimit:
    """413 for request bodies over ``max_bytes``: at once when Content-Length says so, else (a chunked
    body) as soon as the bytes read pass the limit. Plain ASGI middleware, so the 413 is JSON like every
    other error (starlette's own limit answers in plain text)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"detail": _too_large(self.max_bytes)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # raised inside the body read: FastAPI passes it on as is
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)


def _error_handlers(app: FastAPI) -> None:
    async def taskhead_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 500)
        return JSONResponse(
            {"detail": getattr(exc, "detail", str(exc))}, status, getattr(exc, "headers", None)
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own rendering fails on inputs such as NaN (a 500): leave the input out
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(TaskheadError, taskhead_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    # anything else: taskhead.serving.body.CatchAll answers 500 and keeps the connection


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of an endpoint that reads its body itself (``read_body``)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def check_decoding(predictor: Any, settings: dict[str, Any]) -> None:
    """422 (ConfigError) for decoding settings the model cannot take, and for values of the wrong JSON type
    (``true`` or ``"4"`` for an integer: the CLI's ``--set`` coerces text, a JSON body need not)."""
    predictor.task_with(settings, "settings")
    options = getattr(predictor.task, "options", None)
    if not isinstance(options, BaseModel):
        return
    try:
        type(options).model_validate({**options.model_dump(), **settings}, strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in err["loc"])
        raise ConfigError(f"settings {key}: {err['msg']} (got {settings.get(key)!r})") from None


def describe(name: str, predictor: Any) -> ModelInfo:
    """What ``GET /v1/models`` shows about one served model."""
    return ModelInfo(
        name=name,
        task=predictor.task.name,
        labels=list(predictor.labels),
        backbone=str(predictor.config.model.backbone),
        max_length=predictor.config.model.max_length,
        backend=getattr(predictor, "backend", "torch"),
    )


def to_examples(
    predictor: Any, inputs: list[Any], settings: ServeSettings
) -> tuple[list[dict[str, Any]], list[bool]]:
    """The task's examples for a request's inputs (``inputs[i]`` in errors) and which were cut to
    ``max_text_chars``. Raises DataError (422) for an input the task cannot take or, with ``reject``, one
    over the limit."""
    examples, cut = [], []
    for i, raw in enumerate(inputs):
        value, longest = cut_texts(raw, settings.max_text_chars)
        if longest > settings.max_text_chars:
            _long_text(f"inputs[{i}]", longest, settings)
        make = getattr(predictor, "to_example", None) or predictor.task.to_example  # generic + run's names
        examples.append(make(value, f"inputs[{i}]"))
        cut.append(longest > settings.max_text_chars)
    return examples, cut


def cut_texts(value: Any, limit: int) -> tuple[Any, int]:
    """``value`` with every string in it cut to ``limit`` characters, and the length of its longest string."""
    if isinstance(value, str):
        return value[:limit], len(value)
    if isinstance(value, list):
        parts = [cut_texts(v, limit) for v in value]
        return [v for v, _ in parts], max((n for _, n in parts), default=0)
    if isinstance(value, dict):
        items = {k: cut_texts(v, limit) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, max((n for _, n in items.values()), default=0)
    return value, 0


def _long_text(where: str, length: int, settings: ServeSettings) -> None:
    if settings.on_long == "reject":
        raise DataError(
            [
                f"{where}: a text of {length} characters is over the server's limit of "
                f"{settings.max_text_chars} (--max-text-chars; the server rejects long inputs: "
                "--on-long reject)"
            ]
        )


def _check_items(n: int, field: str, settings: ServeSettings) -> None:
    if n > settings.max_batch_items:
        raise HTTPException(
            413,
            f"{field}: {n} items; the server takes at most {settings.max_batch_items} per request "
            f"(--max-batch-items); split the request",
        )


def _not_found(kind: str, name: str, known: dict[str, Any]) -> Any:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise HTTPException(404, f"unknown {kind} {name!r} (served: {', '.join(known) or 'none'}){hint}")


def plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars and arrays (index scores, vectors) become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return value.tolist()
    return value
