"""``POST /score``: score feature rows on demand with a registered model (analyst keys only).

Every value is checked (finite number, text or null; a known category) before a frame is built;
at most ``MAX_SCORE_ROWS`` rows, in a body of at most ``MAX_BODY_BYTES`` (``serving.api``)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from models.btyd import BTYD_FEATURES, history_row_problems
from models.prior_shift import move_by
from portrait.errors import PortraitError
from serving.routes.access import Access
from serving.routes.errors import MAX_ERRORS, ProductErrorRoute, error_answers
from serving.score import model_meanings, predict_scores, reasons_for
from serving.state import ServeState

MAX_SCORE_ROWS = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024


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
    # A misspelt key ("reason") or "yes" for a flag is refused, not read as the default or true.
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200, description="Registered model name, e.g. repurchase_90d")
    rows: list[dict[str, FeatureValue]] = Field(
        description=(
            f"Feature rows, feature name to value (a finite number, text for a category, or null when "
            f"missing): 1 to {MAX_SCORE_ROWS:,} rows, and a body of at most {MAX_BODY_BYTES // 2**20} MB"
        )
    )
    reasons: StrictBool = Field(False, description="Add the top three reasons per row (slower)")

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
    score: float = Field(description="Probability (propensity models) or expected spend")
    reasons: list[str] | None = Field(None, description="Top three reasons, with reasons=true")


class ShareMove(BaseModel):
    """How a relative label's probabilities were moved: as the served batch moved them."""

    share: float = Field(description="The share of customers the label marks (high value: the top 20%)")
    logit_offset: float = Field(description="Added to every row's logit: the offset the served batch found")
    batch_as_of: str | None = Field(description="The as-of date of that batch")


class ScoreAnswer(BaseModel):
    model: str
    version: str = Field(description="Registered version that scored")
    scores: list[Score] = Field(description="One per request row, in order")
    moved_to_share: ShareMove | None = Field(
        None, description="A relative label's probabilities, moved by the served batch's offset"
    )
    note: str | None = Field(None, description="Why a relative label's probabilities were not moved")


def _as_in_batch(state: ServeState, loaded, values: np.ndarray) -> tuple[np.ndarray, ShareMove | None, str | None]:
    """A relative label's probabilities moved by the logit offset the served batch of the same
    model version found over its whole population (serving.score.population_scores), so a row
    scores here as it scored there; unmoved, with a note, when no such batch is served."""
    share = loaded.meta.get("positive_share")
    if share is None:
        return values, None, None
    try:
        as_of, models = state.batch_models()
    except PortraitError:  # no scores served: nothing to take the offset from
        as_of, models = None, {}
    batch = models.get(loaded.name, {})
    offset = batch.get("prior_shift_logit")
    if offset is None or str(batch.get("version")) != str(loaded.version):
        return (
            values,
            None,
            f"{loaded.name} marks a fixed share of customers ({share:.0%}), which batch scores are moved to; "
            f"no served batch of version {loaded.version} to take the offset from: the model's own probabilities",
        )
    move = ShareMove(share=float(share), logit_offset=float(offset), batch_as_of=as_of)
    return move_by(values, offset), move, None


# Scales whose values are never below zero (counts of orders, days since): a what-if row with
# -3 orders would get a score the model never learned anything about.
NONNEGATIVE_SCALES = ("count", "days")


def nonnegative_features(meta: dict) -> dict[str, str]:
    """Each of a model's features that cannot be negative, with its unit (from the catalogue)."""
    found = {}
    for name, meaning in model_meanings(meta).items():
        scale, unit = (
            (meaning.get("scale"), meaning.get("unit")) if isinstance(meaning, dict) else (meaning.scale, meaning.unit)
        )
        if scale in NONNEGATIVE_SCALES:
            found[name] = unit or scale
    return found


def text_features(meta: dict) -> set[str]:
    """A model's features whose values are text (favourites, text attributes), from the
    catalogue: a model that does not read them (logistic, BG/NBD) still takes them as text, as
    its batch scoring does, rather than asking for a number."""
    return {
        name
        for name, meaning in model_meanings(meta).items()
        if (meaning.get("scale") if isinstance(meaning, dict) else meaning.scale) == "category"
    }


def read_as_numbers(estimator) -> set[str]:
    """The features a model reads as numbers: the columns LightGBM is given (``feature_names_``;
    an average of fold models forwards its first member's, a rank blend reads its LightGBM
    ``base_``'s) less those it reads as categories. None for a model that reads only some of
    its inputs and no text (logistic, BG/NBD, the RFM score alone)."""
    reader = estimator if getattr(estimator, "feature_names_", None) else getattr(estimator, "base_", None)
    if reader is None:
        return set()
    return set(getattr(reader, "feature_names_", None) or []) - set(getattr(reader, "categories_", None) or {})


def _row_errors(
    request: ScoreRequest,
    features: list[str],
    categories: dict[str, set],
    nonnegative: dict[str, str],
    texts: set[str] = frozenset(),
) -> list[dict]:
    errors = []
    for i, row in enumerate(request.rows):
        for name in features:
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
            elif name in texts and not isinstance(value, str):
                errors.append(
                    {
                        "loc": ["body", "rows", i, name],
                        "msg": "must be text (a category), not a number",
                        "type": "type_error",
                    }
                )
            elif name not in categories and name not in texts and isinstance(value, str):
                errors.append(
                    {"loc": ["body", "rows", i, name], "msg": "must be a number, not text", "type": "type_error"}
                )
            elif name in nonnegative and value < 0:
                errors.append(
                    {
                        "loc": ["body", "rows", i, name],
                        "msg": f"must be 0 or more (a number of {nonnegative[name]}), not {value}",
                        "type": "greater_than_equal",
                    }
                )
        for name in sorted(set(row) - set(features)):
            errors.append({"loc": ["body", "rows", i, name], "msg": "not a feature of this model", "type": "extra"})
        if len(errors) >= MAX_ERRORS:
            break
    return errors[:MAX_ERRORS]


def _history_errors(frame: pd.DataFrame) -> list[dict]:
    """Rows whose purchase-history features cannot be one customer's as of a cutoff (the last
    purchase older than the first): the history models (BG/NBD, and the LightGBM models that
    read its outputs) have nothing to score there, and a built table never holds such a row."""
    if not set(BTYD_FEATURES) <= set(frame.columns):
        return []
    return [
        {
            "loc": ["body", "rows", row, column],
            "msg": f"{why} (given {_shown(frame[column].iloc[row])})",
            "type": "purchase_history",
        }
        for row, column, why in history_row_problems(frame)[:MAX_ERRORS]
    ]


def _shown(value: float) -> str:
    return "null" if pd.isna(value) else f"{value:g}"


def build_scores_router(state: ServeState, access: Access) -> APIRouter:
    router = APIRouter(
        route_class=ProductErrorRoute,
        responses=error_answers(401, 403, 404, 413, 422, 503),
        tags=["scores"],
        dependencies=[Depends(access.analyst)],
    )

    @router.post("/score", response_model=ScoreAnswer, response_model_exclude_none=True)
    def score(request: ScoreRequest) -> ScoreAnswer:
        """Score feature rows with the model's version under the serving alias (analyst keys). A
        relative label's probabilities (high value) are moved by the offset the served batch of
        the same version found over its population, so a row scores as it would in that batch."""
        loaded = state.model(request.model)
        if loaded.is_personas:
            raise HTTPException(
                status_code=422, detail="use a propensity or spend model; personas come with /customers"
            )
        # The text features the model reads and their values (none for a model of numbers only).
        known = getattr(loaded.estimator, "categories_", None) or {}
        categories = {name: set(values) for name, values in known.items()}
        # text the model takes but does not read; less what a model that reads text as categories
        # reads as numbers (a number attribute that a model trained before attributes had their
        # kinds in the catalogue calls a category: a birth year)
        texts = text_features(loaded.meta) - set(categories) - read_as_numbers(loaded.estimator)
        errors = _row_errors(request, loaded.features, categories, nonnegative_features(loaded.meta), texts)
        if errors:
            # A list of located errors, as FastAPI's own validation answers.
            raise HTTPException(status_code=422, detail=errors)
        # Every value is now a finite number, a known category or null: build the frame from them.
        frame = pd.DataFrame(
            {
                name: pd.Series([row[name] for row in request.rows], dtype=object)
                if name in categories or name in texts
                else np.array([np.nan if row[name] is None else float(row[name]) for row in request.rows])
                for name in loaded.features
            },
            columns=loaded.features,
        )
        errors = _history_errors(frame)
        if errors:
            raise HTTPException(status_code=422, detail=errors)
        values, moved, note = _as_in_batch(state, loaded, predict_scores(loaded, frame))
        result = [Score(score=float(v)) for v in values]
        if request.reasons:
            for entry, (_, reasons) in zip(result, reasons_for(loaded, frame).iterrows(), strict=True):
                entry.reasons = [r for r in reasons if isinstance(r, str)]
        return ScoreAnswer(
            model=loaded.name, version=str(loaded.version), scores=result, moved_to_share=moved, note=note
        )

    return router
