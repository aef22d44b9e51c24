"""The HTTP API: profiles and scores from the latest batch, on-demand scoring, lists, models.

Endpoints are plain ``def`` (FastAPI runs them in its thread pool), since prediction is CPU
work. When an API key is configured every route but ``/health`` requires it in ``X-API-Key``.
"""

from __future__ import annotations

import math
import secrets
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field

from features.catalogue import describe, label_of
from portrait.errors import PortraitError
from portrait.outputs import latest_scores
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


class ScoreRequest(BaseModel):
    model: str = Field(description="Registered model name, e.g. repurchase_90d")
    rows: list[dict[str, float | int | str | None]] = Field(description="Feature rows: feature name to value")
    reasons: bool = False


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
) -> FastAPI:
    scores, features = latest_scores(scores_dir)
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

    app = FastAPI(title="customer-portrait", description="Customer profiles, personas and propensity scores.")
    secured = [Depends(check_key)]
    app.include_router(build_router(segments_dir, tags_dir, tags_library), dependencies=secured)

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

    @app.post("/score", dependencies=secured)
    def score(request: ScoreRequest) -> dict:
        loaded = model(request.model)
        if loaded.is_personas:
            raise HTTPException(
                status_code=422, detail="use a propensity or spend model; personas come with /customers"
            )
        errors = []
        for i, row in enumerate(request.rows):
            for name in loaded.features:
                if name not in row:
                    errors.append({"loc": ["body", "rows", i, name], "msg": "feature missing", "type": "missing"})
                elif (
                    name not in loaded.estimator.categories_
                    and row[name] is not None
                    and not isinstance(row[name], int | float)
                ):
                    errors.append({"loc": ["body", "rows", i, name], "msg": "must be a number", "type": "type_error"})
            for name in sorted(set(row) - set(loaded.features)):
                errors.append({"loc": ["body", "rows", i, name], "msg": "not a feature of this model", "type": "extra"})
        if errors:
            raise HTTPException(status_code=422, detail=errors[:50])
        frame = pd.DataFrame(request.rows, columns=loaded.features)
        for name in loaded.features:
            if name not in loaded.estimator.categories_:
                frame[name] = pd.to_numeric(frame[name]).astype("float64")
        values = predict_scores(loaded, frame)
        result = [{"score": float(v)} for v in values]
        if request.reasons:
            for entry, (_, reasons) in zip(result, reasons_for(loaded, frame).iterrows(), strict=True):
                entry["reasons"] = [r for r in reasons if isinstance(r, str)]
        return {"model": loaded.name, "version": loaded.version, "scores": result}

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
            )
        except PortraitError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        records = [{k: _plain(v) for k, v in record.items()} for record in rows.to_dict("records")]
        return {"model": model_name, "as_of": as_of, "count": len(records), "customers": records}

    @app.get("/models", dependencies=secured)
    def models() -> list[dict]:
        return list_models()

    return app
