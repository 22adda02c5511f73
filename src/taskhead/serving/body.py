"""Reading a request: strict JSON in, a 4xx JSON error out; and the ASGI middleware that keeps one bad
request from touching the connection or the server.

FastAPI's own body parsing lets through what Python's ``json`` module takes (``NaN``, ``Infinity``, ``1e999``
and lone surrogates such as ``"\\ud800"``), coerces ``true`` or ``"3"`` where an integer belongs, and its
validation error for a body holding NaN fails to render (a 500). So the endpoints read the body here
(hand-written because no JSON parser in the environment rejects all of these with a position): decode
UTF-8 strictly, parse JSON without non-finite numbers, refuse lone surrogates and deep nesting, then
validate with pydantic in strict mode. Every error is a list of ``{"type", "loc", "msg"}`` like FastAPI's,
without the offending input (which may not be JSON-renderable).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

MAX_DEPTH = 32  # nested lists/dicts in a body; deeper ones are refused before any recursive code sees them
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_TYPES = ("application/json",)
log = logging.getLogger("taskhead.serving")

Model = TypeVar("Model", bound=BaseModel)


def invalid(msg: str, loc: list[Any] | None = None, kind: str = "json_invalid") -> HTTPException:
    """The HTTPException (422) for a body the server cannot take, in FastAPI's error list shape."""
    return HTTPException(422, [{"type": kind, "loc": ["body", *(loc or [])], "msg": msg}])


async def read_body(request: Request, model: type[Model]) -> Model:
    """The request body as ``model``, validated strictly.

    Raises:
        HTTPException: 415 a content type other than JSON; 422 invalid UTF-8, malformed JSON, NaN or
            Infinity, a lone surrogate, nesting deeper than ``MAX_DEPTH``, or a field of the wrong type
            (no coercion: ``true`` or ``"3"`` is not an integer); 408/413 from the body-reading middleware.
    """
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type and content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise HTTPException(415, f"content-type: expected application/json, got {content_type!r}")
    data = parse_json(await request.body())
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise HTTPException(
            422, [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]} for e in errors]
        ) from None


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotFinite(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} is out of the range of a float (a JSON number must be finite)")
    return value


def parse_json(body: bytes) -> Any:
    """``body`` as JSON: strict UTF-8, finite numbers only, valid Unicode strings, at most ``MAX_DEPTH``
    levels deep. Raises HTTPException (422) naming the byte offset or the field."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(
            f"the body is not valid UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}", [exc.start]
        ) from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise invalid(f"JSON decode error: {exc.msg} ({where})", [exc.pos]) from None
    except _NotFinite as exc:
        raise invalid(str(exc)) from None
    except RecursionError:
        raise invalid(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an integer over Python's digit limit
        raise invalid(f"JSON decode error: {exc}") from None
    check_tree(data)
    return data


def check_tree(data: Any) -> None:
    """Refuse strings (values and keys) holding a lone surrogate, which no tokenizer can encode, and nesting
    deeper than ``MAX_DEPTH``; iterative, so any depth is safe to walk."""
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    while stack:
        value, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            raise invalid(f"JSON nested deeper than {MAX_DEPTH} levels", loc[:MAX_DEPTH])
        if isinstance(value, str):
            _check_text(value, loc)
        elif isinstance(value, list):
            stack.extend((v, [*loc, i]) for i, v in enumerate(value))
        elif isinstance(value, dict):
            for key, v in value.items():
                _check_text(key, loc)
                stack.append((v, [*loc, key]))


def _check_text(text: str, loc: list[Any]) -> None:
    found = _SURROGATE.search(text)
    if found:
        raise invalid(
            f"a lone surrogate U+{ord(found.group()):04X} at character {found.start()}: a text must be valid "
            "Unicode (an unpaired \\ud800-\\udfff escape)",
            loc,
            kind="string_unicode",
        )


class CatchAll:
    """Answers an exception that reached it with a JSON 500 (``"internal error: ..."``) and logs it. Without
    it the exception reaches Starlette's ServerErrorMiddleware, which re-raises after answering, and uvicorn
    then closes the connection without saying ``Connection: close``. With it the connection stays usable.
    An exception after the response started still propagates (the server closes the connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except ClientDisconnect:  # the client went away mid-body: nobody to answer
            return
        except Exception as exc:
            if started:
                raise
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            detail = f"internal error: {type(exc).__name__}: {exc}"
            await JSONResponse({"detail": detail}, status_code=500)(scope, receive, send)


class BodyTimeout:
    """408 with ``Connection: close`` for a request whose body has not fully arrived ``seconds`` after the
    server started reading it (a slow or half-sent body), so no client holds a connection and a handler
    forever. uvicorn's own timeouts cover only idle keep-alive connections."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        done = False

        async def timed_receive() -> Any:
            nonlocal deadline, done
            if done:  # the body is in: waiting for a disconnect is not bounded here
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline if deadline is not None else loop.time() + self.seconds
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.seconds:g} s (--body-timeout)",
                    headers={"Connection": "close"},
                ) from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
