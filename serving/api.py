"""The HTTP API: profiles and scores from the latest batch, on-demand scoring, lists, models.

Endpoints are plain ``def`` (FastAPI runs them in its thread pool), since prediction is CPU
work. When an API key is configured every route but ``/health`` requires it in ``X-API-Key``,
``/docs`` and ``/openapi.json`` included. Request bodies over ``MAX_BODY_BYTES`` are refused
with 413 before they are parsed; ``POST /score`` takes at most ``MAX_SCORE_ROWS`` rows, and
every value is checked (finite number, text or null; a known category) before a frame is built.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import threading
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import AfterValidator, BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError
from starlette.datastructures import Headers
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from features.catalogue import describe, label_of
from portrait.errors import PortraitError
from portrait.outputs import latest_scores, latest_scores_dataset
from portrait.privacy import Consent
from serving.crowd_routes import build_crowd_router
from serving.lists import build_list
from serving.marketing_routes import build_router
from serving.registry import LoadedModel, list_models, load_model
from serving.score import predict_scores, reasons_for

KEY_FEATURES = (
    "days_since_last_purchase",
    "orders_lifetime",
    "spend_lifetime",
    "avg_order_value",
    "orders_90d",
    "spend_365d",
    "favourite_category",
    "favourite_channel",
    "promo_share_365d",
    "event_count_90d",
    "campaign_response_rate",
)
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
API_KEY_ENV = "PORTRAIT_API_KEY"
# What `portrait serve --workers N` hands each worker process (see app_from_environment).
SERVE_ENV = {
    "scores_dir": "PORTRAIT_SERVE_SCORES",
    "alias": "PORTRAIT_SERVE_ALIAS",
    "segments_dir": "PORTRAIT_SERVE_SEGMENTS",
    "tags_dir": "PORTRAIT_SERVE_TAGS",
    "tags_library": "PORTRAIT_SERVE_TAGS_FILE",
    "data": "PORTRAIT_SERVE_DATA",
}
MAX_SCORE_ROWS = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_ERRORS = 50


def _feature_value(value: Any) -> Any:
    """A feature value must be a finite number, text or null (missing): JSON's true/false,
    arrays and objects, NaN, Infinity, 1e999 (parsed as infinity) and integers beyond float
    range are refused here, naming the row and feature, before anything is built from them."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise PydanticCustomError("feature_value", f"must be a number, text or null, not {str(value).lower()}")
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            raise PydanticCustomError(
                "finite_number", f"is too large for a number ({len(str(abs(value)))} digits)"
            ) from None
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            raise PydanticCustomError("finite_number", f"must be a finite number, not {shown}")
        return value
    kind = "an array" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__
    raise PydanticCustomError("feature_value", f"must be a number, text or null, not {kind}")


FeatureValue = Annotated[Any, AfterValidator(_feature_value)]


class ScoreRequest(BaseModel):
    model: str = Field(max_length=200, description="Registered model name, e.g. repurchase_90d")
    rows: list[dict[str, FeatureValue]] = Field(
        description=(
            f"Feature rows, feature name to value (a finite number, text for a category, or null when "
            f"missing): 1 to {MAX_SCORE_ROWS:,} rows, and a body of at most {MAX_BODY_BYTES // 2**20} MB"
        )
    )
    reasons: bool = False

    @field_validator("rows", mode="before")
    @classmethod
    def _row_count(cls, rows: Any) -> Any:
        if isinstance(rows, list) and not rows:
            raise PydanticCustomError("too_short", "give at least one row of features")
        if isinstance(rows, list) and len(rows) > MAX_SCORE_ROWS:
            raise PydanticCustomError(
                "too_long", f"at most {MAX_SCORE_ROWS} rows per request, got {len(rows)}: split the request"
            )
        return rows


class Score(BaseModel):
    score: float
    reasons: list[str] | None = Field(None, description="Top three reasons, with reasons=true")


class ScoreAnswer(BaseModel):
    model: str
    version: str
    scores: list[Score] = Field(description="One per request row, in order")


class ConsentRules:
    """The consent rules of the data set lists are drawn from (:mod:`portrait.privacy`), read
    on first use and again whenever the data set, its settings or its suppression file change.
    Without a known data set every list answers 503: no list goes out unchecked."""

    def __init__(self, data: Path | None, scores_dir: Path) -> None:
        self.data = data
        self.scores_dir = scores_dir
        self._lock = threading.Lock()
        self._version: str | None = None
        self._consent: Consent | None = None

    def __call__(self) -> Consent:
        from portrait.dataset import open_dataset
        from portrait.privacy import consent_version, load_consent

        if self.data is None:
            raise HTTPException(
                status_code=503,
                detail=f"cannot check marketing consent: the scores in {self.scores_dir} do not record their "
                "data set; start portrait serve with --data DATASET",
            )
        if not self.data.exists():
            raise HTTPException(
                status_code=503,
                detail=f"cannot check marketing consent: the data set {self.data} no longer exists; "
                "start portrait serve with --data DATASET",
            )
        with self._lock:
            dataset = open_dataset(self.data)
            version = consent_version(dataset)
            if version != self._version:
                self._consent, self._version = load_consent(dataset), version
            return self._consent


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body over {limit // 2**20} MB ({limit} bytes): split the rows over several requests",
        )


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before anything parses them: at once
    when Content-Length says so, otherwise as soon as the bytes received pass the limit (a
    chunked body has no Content-Length)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # an HTTPException: FastAPI's body reading passes it on to its handler (413)
                    raise _BodyTooLarge(self.limit)
            return message

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        error = _BodyTooLarge(self.limit)
        await JSONResponse({"detail": error.detail}, status_code=413)(scope, receive, send)


class NoDelayHTTPProtocol(AutoHTTPProtocol):
    """uvicorn's HTTP protocol with Nagle's algorithm turned off on every connection.

    With ``--workers N`` uvicorn binds the listening socket itself with ``proto`` 0, so asyncio
    does not set TCP_NODELAY on accepted connections, and every keep-alive request after the
    first waits ~40 ms for the client's delayed ACK (uvicorn issue #3149; measured here: 44 ms
    per request instead of 2.5 ms). ``portrait serve`` starts several workers with this one."""

    def connection_made(self, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def _json_safe(value: Any) -> Any:
    """An error's input as JSON can carry it: NaN and infinities as text, containers left out
    (they can be the whole body)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


def _plain(value):
    """JSON-safe: numpy scalars to Python, NaN to null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def create_app(
    scores_dir: Path,
    alias: str = "champion",
    api_key: str | None = None,
    *,
    segments_dir: Path | None = None,
    tags_dir: Path | None = None,
    tags_library: Path | None = None,
    data: Path | None = None,
) -> FastAPI:
    """The app over the latest scores in ``scores_dir``. Lists (``/lists``, a segment's
    customers) leave out whoever the consent rules of ``data`` (by default the data set the
    scores were computed from) leave out, and say how many."""
    scores, features = latest_scores(scores_dir)
    consent = ConsentRules(data or latest_scores_dataset(scores_dir), scores_dir)
    scored_models = [c[: -len("_score")] for c in scores.columns if c.endswith("_score")]
    as_of = str(scores["as_of"].iloc[0].date()) if len(scores) else None
    # Profiles are answered from plain column arrays and a dict index: a pandas row lookup per
    # request costs milliseconds, this costs microseconds.
    row_of = {customer: i for i, customer in enumerate(scores["customer_id"].astype(str))}
    score_columns = {c: scores[c].to_numpy() for c in scores.columns}
    features = features.set_index("customer_id").reindex(scores["customer_id"]).reset_index()
    feature_columns = {c: features[c].to_numpy(dtype=object) for c in KEY_FEATURES if c in features.columns}
    # Each key feature's label and unit from the catalogue, looked up once here, not per request.
    meanings = describe(feature_columns)
    key_features = [
        (name, label_of(name, meanings), meanings[name].unit if name in meanings else "", values)
        for name, values in feature_columns.items()
    ]

    def check_key(key: str | None = Security(API_KEY_HEADER)) -> None:
        if api_key and not (key and secrets.compare_digest(key, api_key)):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")

    @lru_cache(maxsize=16)
    def model(name: str) -> LoadedModel:
        try:
            return load_model(name, alias)
        except PortraitError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    # Docs and schema are routes of their own below, behind the key like the data routes.
    app = FastAPI(
        title="customer-portrait",
        description="Customer profiles, personas and propensity scores.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    secured = [Depends(check_key)]
    app.include_router(build_router(segments_dir, tags_dir, tags_library, consent=consent), dependencies=secured)
    app.include_router(
        build_crowd_router(
            consent.data,
            as_of,
            scores_dir=scores_dir,
            segments_dir=segments_dir,
            tags_library=tags_library,
        ),
        dependencies=secured,
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes each input, and a NaN or infinity in it made the answer
        # itself fail (500); the whole body as input is left out, as are errors past the first 50.
        errors = []
        for error in exc.errors()[:MAX_ERRORS]:
            entry = {k: v for k, v in error.items() if k != "input"}
            if not isinstance(error.get("input"), dict | list):
                entry["input"] = _json_safe(error.get("input"))
            errors.append(entry)
        return JSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})

    @app.exception_handler(PortraitError)
    async def portrait_error(request: Request, exc: PortraitError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/openapi.json", include_in_schema=False, dependencies=secured)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=secured)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=secured)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "scores_as_of": as_of, "customers": int(len(scores)), "models": scored_models}

    @lru_cache(maxsize=100_000)
    def computed_reasons(name: str, index: int) -> tuple[str, ...]:
        loaded = model(name)
        row = features.iloc[[index]].reset_index(drop=True)
        return tuple(r for r in reasons_for(loaded, row).iloc[0] if isinstance(r, str))

    @app.get("/customers/{customer_id}", dependencies=secured)
    def customer(customer_id: str, reasons: bool = True) -> dict:
        i = row_of.get(customer_id)
        if i is None:
            raise HTTPException(
                status_code=404, detail=f"unknown customer id {customer_id!r} in the scores as of {as_of}"
            )
        result = {
            "customer_id": customer_id,
            "as_of": as_of,
            "persona": None,
            "scores": {},
            "features": {k: _plain(values[i]) for k, values in feature_columns.items()},
            "key_features": [
                {"name": name, "label": label, "value": _plain(values[i]), "unit": unit}
                for name, label, unit, values in key_features
            ],
        }
        if "persona_id" in score_columns:
            result["persona"] = {"id": _plain(score_columns["persona_id"][i]), "name": score_columns["persona_name"][i]}
        for name in scored_models:
            entry = {
                key: _plain(score_columns[f"{name}_{key}"][i]) for key in ("score", "percentile", "decile", "version")
            }
            stored = [score_columns[c][i] for c in (f"{name}_reason_{k}" for k in (1, 2, 3)) if c in score_columns]
            if stored:
                entry["reasons"] = [r for r in stored if isinstance(r, str)]
            elif reasons:
                entry["reasons"] = list(computed_reasons(name, i))
            result["scores"][name] = entry
        return result

    @app.post("/score", dependencies=secured, response_model=ScoreAnswer, response_model_exclude_none=True)
    def score(request: ScoreRequest) -> ScoreAnswer:
        loaded = model(request.model)
        if loaded.is_personas:
            raise HTTPException(
                status_code=422, detail="use a propensity or spend model; personas come with /customers"
            )
        categories = {name: set(values) for name, values in loaded.estimator.categories_.items()}
        errors = []
        for i, row in enumerate(request.rows):
            for name in loaded.features:
                value = row.get(name)
                if name not in row:
                    errors.append({"loc": ["body", "rows", i, name], "msg": "feature missing", "type": "missing"})
                elif value is None:
                    continue
                elif name in categories and value not in categories[name]:
                    known = sorted(map(str, categories[name]))
                    shown = f"{known[:20]}{' ...' if len(known) > 20 else ''}"
                    errors.append(
                        {
                            "loc": ["body", "rows", i, name],
                            "msg": f"unknown value {value[:60] if isinstance(value, str) else value!r} for "
                            f"{name}: the model knows {shown}",
                            "type": "unknown_category",
                        }
                    )
                elif name not in categories and isinstance(value, str):
                    errors.append(
                        {"loc": ["body", "rows", i, name], "msg": "must be a number, not text", "type": "type_error"}
                    )
            for name in sorted(set(row) - set(loaded.features)):
                errors.append({"loc": ["body", "rows", i, name], "msg": "not a feature of this model", "type": "extra"})
            if len(errors) >= MAX_ERRORS:
                break
        if errors:
            raise HTTPException(status_code=422, detail=errors[:MAX_ERRORS])
        # Every value is now a finite number, a known category or null: build the frame from them.
        frame = pd.DataFrame(
            {
                name: pd.Series([row[name] for row in request.rows], dtype=object)
                if name in categories
                else np.array([np.nan if row[name] is None else float(row[name]) for row in request.rows])
                for name in loaded.features
            },
            columns=loaded.features,
        )
        values = predict_scores(loaded, frame)
        result = [Score(score=float(v)) for v in values]
        if request.reasons:
            for entry, (_, reasons) in zip(result, reasons_for(loaded, frame).iterrows(), strict=True):
                entry.reasons = [r for r in reasons if isinstance(r, str)]
        return ScoreAnswer(model=loaded.name, version=str(loaded.version), scores=result)

    @app.get("/lists/{model_name}", dependencies=secured)
    def marketing_list(
        model_name: str,
        top: int | None = Query(None, ge=1, le=1_000_000),
        min_percentile: float | None = Query(None, ge=0, le=100),
        min_score: float | None = None,
        persona: str | None = None,
        where: str | None = Query(None, max_length=2000),
        exclude_bought_within: int | None = Query(None, ge=0),
    ) -> dict:
        try:
            rows = build_list(
                scores,
                features,
                model_name,
                top=top,
                min_percentile=min_percentile,
                min_score=min_score,
                persona=persona,
                where=where,
                exclude_bought_within=exclude_bought_within,
                reasons_model=model(model_name) if (top or 0) <= 10_000 and top else None,
                consent=consent(),
            )
        except PortraitError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        records = [{k: _plain(v) for k, v in record.items()} for record in rows.to_dict("records")]
        return {
            "model": model_name,
            "as_of": as_of,
            "count": len(records),
            "left_out": rows.attrs["left_out"],
            "customers": records,
        }

    @app.get("/models", dependencies=secured)
    def models() -> list[dict]:
        return list_models()

    return app


def app_from_environment() -> FastAPI:
    """The app each worker of ``portrait serve --workers N`` builds (uvicorn starts workers
    from an import string): the serve options come in ``PORTRAIT_SERVE_*`` variables, the key
    in ``PORTRAIT_API_KEY``."""
    from portrait.tracking import setup_tracking

    setup_tracking()

    def setting(name: str) -> str | None:
        return os.environ.get(SERVE_ENV[name]) or None

    def folder(name: str) -> Path | None:
        value = setting(name)
        return Path(value) if value else None

    return create_app(
        folder("scores_dir") or Path("outputs/scores"),
        alias=setting("alias") or "champion",
        api_key=os.environ.get(API_KEY_ENV) or None,
        segments_dir=folder("segments_dir"),
        tags_dir=folder("tags_dir"),
        tags_library=folder("tags_library"),
        data=folder("data"),
    )
