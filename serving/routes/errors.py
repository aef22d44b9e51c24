"""The one place the product's errors become HTTP answers.

A :class:`~portrait.errors.PortraitError` carries its status (``status_code``: 404 not found,
401 no or wrong key, 403 the role may not, 409 a page of a list that changed since its first page, 422 a request that cannot be served as asked, 503
the server cannot answer until the operator fixes something); the answer is that status with
``{"detail": message}``. Every router is built with :class:`ProductErrorRoute`, so the mapping
goes with the router wherever it is mounted, and ``build_app`` also registers
:func:`product_error` as the app's handler for anything raised outside a route.
"""

from __future__ import annotations

import math
import os
import re
import sys
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from portrait.errors import PortraitError
from portrait.store_errors import tracking_store_problem, without_credentials

MAX_ERRORS = 50


class ErrorAnswer(BaseModel):
    """Every error answer but a request that does not fit its model."""

    detail: str = Field(description="What is wrong and, where the caller can, what to do instead")


class RequestIssue(BaseModel):
    """One way a request does not fit its model (FastAPI's validation, its input cut short)."""

    loc: list[str | int] = Field(description="Where: the part of the request and the field")
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class InvalidRequestAnswer(BaseModel):
    """422: the request does not fit its model (``detail`` lists each issue), or cannot be
    served as asked (``detail`` says why: an unknown query parameter, a filter naming no column)."""

    detail: str | list[RequestIssue]


# The error answers of every route, documented in /openapi.json beside its 200 (a generated
# client parses them by these models); a router passes the ones it can give.
ERROR_ANSWERS: dict[int, dict[str, Any]] = {
    401: {"model": ErrorAnswer, "description": "No API key, or one the server does not know"},
    403: {"model": ErrorAnswer, "description": "The key's role may not ask this"},
    404: {"model": ErrorAnswer, "description": "No such customer, model, segment, tag or persona"},
    409: {"model": ErrorAnswer, "description": "The list changed since its first page: start again"},
    413: {"model": ErrorAnswer, "description": "The request body is larger than the server takes"},
    422: {"model": InvalidRequestAnswer, "description": "The request does not fit, or cannot be served as asked"},
    503: {"model": ErrorAnswer, "description": "The server cannot answer until its operator fixes something"},
}


def error_answers(*statuses: int) -> dict[int, dict[str, Any]]:
    """The documented answers of ``statuses`` (every route's but 413 when none is given)."""
    return {status: ERROR_ANSWERS[status] for status in statuses or (401, 403, 404, 422, 503)}


# An absolute path (one starting a word, not in a URL or a ratio such as 1/2) in a message; not
# one in quotes, which is how messages echo what the caller sent (an id may start with a slash).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/'\"])/[^\s'\",;()\[\]]+")


def last_part(path: str) -> str:
    """A path on this server (its first folder exists here) cut to its last part, a folder
    keeping its slash and a sentence's full stop or colon kept; anything else as it is."""
    if not path.startswith("/") or not os.path.isdir("/" + path[1:].split("/", 1)[0]):
        return path  # a route ("POST /score"), not a file
    core = path.rstrip(".:")
    end = path[len(core) :]
    name = core.rstrip("/").rsplit("/", 1)[-1]
    return (name + ("/" if core.endswith("/") else "") + end) if name else path


def without_server_paths(message: str) -> str:
    """``message`` with each absolute path on this server cut to its last part
    (:func:`last_part`): a caller needs the file or folder ("segments/", "retail.toml"), not
    where the server keeps it. The same errors name whole paths on the command line, where they
    help the person who ran it."""
    return _ABSOLUTE_PATH.sub(lambda match: last_part(match.group(0)), _without_store(message))


def _without_store(message: str) -> str:
    """``message`` without the MLflow store's URI (a server's path, or a database's host and
    password: ``sqlite:////srv/...``, ``postgresql://user:secret@db/...``), nor the user and
    password of any other URI: a caller is told the registry cannot be used, the server's log
    and the command line say where."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        uri = mlflow.get_tracking_uri()
        for shown in {uri, without_credentials(uri)}:
            if shown:
                message = message.replace(shown, "(MLFLOW_TRACKING_URI)")
    return without_credentials(message)


def error_response(exc: PortraitError) -> JSONResponse:
    status = getattr(exc, "status_code", PortraitError.status_code)
    if not 400 <= status < 600:
        status = PortraitError.status_code
    headers = {"WWW-Authenticate": "APIKey"} if status == 401 else None
    return JSONResponse(status_code=status, content={"detail": without_server_paths(str(exc))}, headers=headers)


async def product_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PortraitError)
    return error_response(exc)


def gone_file_response() -> JSONResponse:
    """503 for a file that went while a request read it: a refresh pruned the run the request
    had resolved a moment before (``keep``), or a folder was removed. It was a 500."""
    return JSONResponse(
        status_code=503,
        content={
            "detail": "a file this answer reads is gone (a refresh replaced the run it was read from?): ask again"
        },
        headers={"Retry-After": "1"},
    )


async def gone_file(request: Request, exc: Exception) -> JSONResponse:
    return gone_file_response()


_UNPARSED_BODY = "There was an error parsing the body"  # FastAPI's own words


class ProductErrorRoute(APIRoute):
    """An APIRoute whose product errors (from the endpoint or its dependencies) are answered
    by :func:`error_response`."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request):
            try:
                return await handler(request)
            except PortraitError as exc:
                return error_response(exc)
            except FileNotFoundError:
                return gone_file_response()
            except HTTPException as exc:
                # FastAPI's 400 for a body its JSON reader gave up on (nested thousands deep): a
                # request that cannot be served as asked, a 422 as every other one
                if exc.status_code != 400 or exc.detail != _UNPARSED_BODY:
                    raise
                deep = isinstance(exc.__cause__, RecursionError)
                said = "its JSON is nested too deeply" if deep else "it is not JSON this route reads"
                return JSONResponse(
                    status_code=422, content={"detail": f"the request's body could not be read: {said}"}
                )
            except Exception as exc:  # an MLflow store this server cannot use: the operator's, as the CLI says
                problem = tracking_store_problem(exc)
                if problem is None:
                    raise
                message, code = problem
                busy = {"Retry-After": "5"} if code != 2 else None  # locked by a writer: ask again
                return JSONResponse(status_code=503, content={"detail": without_server_paths(message)}, headers=busy)

        return handle


def _json_safe(value: Any) -> Any:
    """An error's input as JSON can carry it: NaN and infinities as text, long text cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


MAX_INPUT_ECHO = 200  # characters of a rejected value an error answer repeats


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 for a request that does not fit its model. FastAPI's own handler echoes each input,
    and a NaN or infinity in it made the answer itself fail (500); the whole body as input is
    left out, as are errors past the first 50."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors()[:MAX_ERRORS]:
        entry = {k: v for k, v in error.items() if k != "input"}
        # an unknown key is part of the error's location: a key of megabytes was echoed whole
        entry["loc"] = [_json_safe(part) for part in error.get("loc", ())]
        if isinstance(entry.get("msg"), str):
            entry["msg"] = _json_safe(entry["msg"])
        value = error.get("input")
        if isinstance(value, str | bytes) and len(value) > MAX_INPUT_ECHO:  # a body sent as text, echoed whole
            entry["input"] = f"({len(value):,} characters, not shown)"
        elif not isinstance(value, dict | list):
            entry["input"] = _json_safe(value)
        errors.append(entry)
    return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def refuse_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take (a mistyped ``tpo=3`` on a list would
    otherwise be ignored and every customer returned) or one given twice (every route, through
    ``build_app``)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known: set[str] = set()
    pending = [dependant]
    while pending:  # the route's own parameters and its dependencies'
        current = pending.pop()
        known |= {param.alias for param in current.query_params}
        pending += current.dependencies
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise PortraitError(f"unknown query parameter(s) {', '.join(unknown)} for {request.url.path}: {takes}")
    # Every parameter takes one value: of top=5&top=6 one would be used and the other dropped.
    repeated = sorted({name for name in request.query_params if len(request.query_params.getlist(name)) > 1})
    if repeated:
        raise PortraitError(f"query parameter(s) {', '.join(repeated)} given more than once; give each once")
