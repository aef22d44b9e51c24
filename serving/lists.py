"""Propensity lists for marketing: the latest scores, filtered and ranked, with reasons."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from marketing.filters import Schema, check_window_days, columns_used, evaluate, parse_filter
from marketing.population import persona_named
from models.task import task_for_label
from portrait.errors import NotFound, PortraitError
from portrait.outputs import MODEL_LABELS
from portrait.privacy import Consent, PrivacySettings
from serving.feature_columns import FeatureColumns

_REASON_COLUMN = re.compile(r".+_reason_[0-9]+")
_RFM_TERM = re.compile(r"\brfm_(r|f|m|fm|group)\b", re.IGNORECASE)


def _with_rfm(table: pd.DataFrame, features: FeatureColumns) -> pd.DataFrame:
    """``table`` with the RFM scores and group of the scored population (marketing.rfm, from
    the value features stored beside the scores, so as of the scores' date)."""
    from marketing.rfm import RFM_INPUTS, rfm_scores

    if not set(RFM_INPUTS) <= set(features.columns):
        return table  # the filter then names an unknown column
    rfm = rfm_scores(features.read(RFM_INPUTS))
    return table.merge(rfm, on="customer_id", how="left")


def list_schema(table: pd.DataFrame, values_from: pd.DataFrame | FeatureColumns | None = None) -> Schema:
    """The columns a list's filter may name, as segments know them: RFM groups checked against
    the groups, a favourite category or channel against the values held that day (a value off
    only in case, 'beef' for 'BEEF', is refused rather than giving an empty list). Kinds come
    from ``table``'s dtypes (it may have no rows), values from ``values_from`` (else ``table``)."""
    from marketing.rfm import GROUPS

    held = table if values_from is None else values_from
    if isinstance(held, FeatureColumns):
        held = held.read([c for c in ("favourite_category", "favourite_channel") if c in held.columns])
    current = {
        column: tuple(str(v) for v in held[column].dropna().unique())
        for column in ("favourite_category", "favourite_channel")
        if column in table.columns and column in held.columns
    }
    values = {"rfm_group": tuple(GROUPS)} if "rfm_group" in table.columns else {}
    return Schema.of_frame(table, values=values, current=current)


def list_filter(model: str, as_of: str | None, **asked) -> dict:
    """What a list pull asked for, as the audit log records it (the CLI and the API add their
    own: the output file, the page): the model, the scores' date, then each option as given
    (``top``, ``min_percentile``, ``min_score``, ``persona``, ``where``, ``exclude_bought_within``)."""
    return {"model": model, "as_of": as_of, **asked}


def model_for_reasons(name: str, load: Callable[[], object]) -> tuple[object | None, str | None]:
    """The model that computes a list's reasons where its scores hold none (``load()``), or
    None and why: a list is computable from its scores alone, so a model the registry does not
    have (another store, deleted) or cannot give now leaves the list without reasons, and the
    answer's note says why, rather than refusing the list (an API answer's note names no path
    on the server: :func:`serving.routes.errors.without_server_paths`)."""
    from portrait.store_errors import tracking_store_problem

    try:
        return load(), None
    except PortraitError as exc:  # not registered, no such alias, the registry down or its files unreadable
        why = str(exc)
    except Exception as exc:  # a store this MLflow cannot use (another version's schema, locked): a 500 was all
        problem = tracking_store_problem(exc)
        if problem is None:
            raise
        why = problem[0]
    return None, f"no reasons: the scores hold none, and {name} could not be loaded to compute them ({why})"


def build_list(
    scores: pd.DataFrame,
    features: pd.DataFrame | FeatureColumns,
    model: str,
    *,
    top: int | None = None,
    min_percentile: float | None = None,
    min_score: float | None = None,
    persona: str | None = None,
    where: str | None = None,
    exclude_bought_within: int | None = None,
    reasons_model=None,
    reasons_note: str | None = None,
    reasons_up_to: int | None = None,
    reasons_first: int | None = None,
    customers: set[str] | None = None,
    consent: Consent | None = None,
    privacy: PrivacySettings | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> pd.DataFrame:
    """Customers ranked by ``model``'s score, best first.

    ``features``: the feature table the scores were computed from, or its columns read as
    needed (:class:`~serving.feature_columns.FeatureColumns`, as an API worker holds them).
    ``where`` may use any feature, score or persona column. ``reasons_model`` (a loaded model)
    computes reasons for the rows of the list when the scores table has none;
    ``reasons_note`` says why there is no such model (:func:`model_for_reasons`). ``customers``
    restricts the list to those ids (a segment's or a tag's members). ``consent`` (the data
    set's rules, :func:`portrait.privacy.load_consent`) leaves out those who may not be
    contacted before ``top`` is taken; how many matched the filters but were left out, per
    reason, is in ``result.attrs["left_out"]`` (empty without rules). ``privacy``: the data
    set's settings, whose sensitive attributes computed reasons never name. Reasons are not
    computed from a model version other than the one that scored the rows, nor for more than
    ``reasons_up_to`` rows; ``result.attrs["note"]`` then says why they are missing.
    ``reasons_first``: computed reasons only for the list's first rows (the best scores; the
    others' are empty, and the note says so): TreeSHAP explains a few hundred rows a second.
    ``offset`` and ``limit``: one page of the ranked list (its rows ``offset`` to ``offset +
    limit``), reasons computed for that page alone; ``result.attrs["total"]`` is the whole list's
    length.
    """
    score_column = f"{model}_score"
    if score_column not in scores.columns:
        scored = sorted(c[: -len("_score")] for c in scores.columns if c.endswith("_score"))
        hint = (
            "; a personas model is scored as persona_id and persona_name, not as a score: rank by a propensity "
            "model (portrait list --persona keeps one persona)"
            if "persona_name" in scores.columns
            else ""
        )
        raise NotFound(f"the latest scores have no model {model!r}; scored models: {scored}{hint}")
    if sum(x is not None for x in (top, min_percentile, min_score)) > 1:
        raise PortraitError(
            "give one of top, min percentile and min score (--top, --min-percentile, --min-score; on the API "
            "top, min_percentile, min_score)"
        )
    # NaN passes every range check (each comparison is false): said here, for the CLI and the API.
    if min_score is not None and not math.isfinite(min_score):
        raise PortraitError(f"the minimum score (--min-score, min_score) must be a number, got {min_score}")
    label = (scores.attrs.get(MODEL_LABELS) or {}).get(model)  # none in files scored before it was kept
    if min_score is not None and not 0 <= min_score <= 1 and label and task_for_label(label).is_classification:
        # a probability model's threshold outside 0-1 selects nobody or everyone, whatever the day
        # (a spend model's scores are amounts: any threshold may be meant)
        raise PortraitError(
            f"the minimum score (--min-score, min_score) {min_score:g} is outside 0 to 1: {model}'s scores are "
            f"probabilities ({label}); use a probability, or a minimum percentile"
        )
    if min_percentile is not None and not 0 <= min_percentile <= 100:
        raise PortraitError(
            f"the minimum percentile (--min-percentile, min_percentile) must be from 0 to 100, got {min_percentile}"
        )
    if offset < 0 or (limit is not None and limit < 1):
        raise PortraitError(
            f"a page starts at offset 0 or later and holds at least 1 row, got offset {offset}, limit {limit}"
        )
    if exclude_bought_within is not None:
        check_window_days(exclude_bought_within, option="--exclude-bought-within (exclude_bought_within)")
    from serving.score import withheld_attribute_features

    if isinstance(features, pd.DataFrame):
        features = FeatureColumns(features, scores["customer_id"])
    # The scores with the feature columns the list reads, not all of them: a whole merge of the
    # scored population's features on every API request took 3 s at 1M customers for top=10.
    # A feature named like a scores column is read as <name>_feature, as a whole merge names it.
    as_merged = {(c if c not in scores.columns else f"{c}_feature"): c for c in features.columns if c != "customer_id"}
    tree, used, rfm, absent = None, [], None, []
    if where:
        shape = scores.head(0).merge(features.empty, on="customer_id", how="left", suffixes=("", "_feature"))
        if _RFM_TERM.search(where):
            rfm = _with_rfm(scores[["customer_id"]], features)
            shape = shape.merge(rfm.head(0), on="customer_id", how="left")
        # Not the stored reasons: text naming a feature's value, which may be a sensitive attribute
        # marked since the scores were written (the reason columns are scrubbed; a filter is not).
        # Nor features of a column named personal data since they were stored: never filtered by
        # or shown (a model's reasons still read them, and leave them out).
        withheld = {feature.name for feature in withheld_attribute_features(privacy)}
        filterable = shape.drop(columns=[c for c in shape.columns if _REASON_COLUMN.fullmatch(c) or c in withheld])
        schema = list_schema(filterable, values_from=features)
        tree = parse_filter(where, schema)
        absent = schema.absent
        used = columns_used(tree)
    read = [c for c in used if c in as_merged]
    if exclude_bought_within is not None and "days_since_last_purchase" not in read:
        read.append("days_since_last_purchase")
    table = scores
    if read:
        picked = features.read([as_merged[c] for c in read]).set_axis(["customer_id", *read], axis=1)
        if features.in_order_of(scores["customer_id"]):  # as it was made for these scores: no merge
            table = table.assign(**{c: picked[c].set_axis(table.index) for c in read})
        else:
            table = table.merge(picked, on="customer_id", how="left")
    if rfm is not None and len(rfm.columns) > 1:
        table = table.merge(rfm, on="customer_id", how="left")
    mask = pd.Series(True, index=table.index)
    if tree is not None:
        mask &= evaluate(tree, table)
    nobody_by_filter = tree is not None and not mask.any()  # before the other options, consent and paging
    if persona is not None:
        if "persona_name" not in table.columns:
            raise PortraitError("the latest scores have no personas; score with the personas model")
        name = persona_named(table, persona)  # a name, or a persona's id
        if name is None:  # a typo would be an empty campaign list, not an answer
            names = sorted(table["persona_name"].dropna().astype(str).unique())
            raise PortraitError(f"no persona {persona!r} in the latest scores; personas: {names} (or their ids)")
        mask &= table["persona_name"] == name
    if customers is not None:
        mask &= table["customer_id"].astype("str").isin(customers)
    if exclude_bought_within is not None:
        mask &= ~(table["days_since_last_purchase"] <= exclude_bought_within)
    if min_percentile is not None:
        mask &= table[f"{model}_percentile"] >= min_percentile
    if min_score is not None:
        mask &= table[score_column] >= min_score
    left_out: dict[str, int] = {}
    matched = table[mask]
    filtered = len(matched)  # before the consent rules: what their left-out count is of
    if consent is not None:
        matched, left_out = consent.apply(matched)
    total = len(matched) if top is None else min(top, len(matched))
    # The rows up to the page's end: the best scores and every tie at the last one, then those sorted.
    needed = min(x for x in (top, None if limit is None else offset + limit, len(matched)) if x is not None)
    if needed < len(matched):
        matched = matched.loc[matched[score_column].nlargest(needed, keep="all").index]
    chosen = matched.sort_values([score_column, "customer_id"], ascending=[False, True], kind="stable")
    chosen = chosen.iloc[offset:needed]
    result = pd.DataFrame(
        {
            "customer_id": chosen["customer_id"].to_numpy(),
            "score": chosen[score_column].to_numpy(),
            "percentile": chosen[f"{model}_percentile"].to_numpy(),
        }
    )
    if "persona_name" in chosen.columns:
        result["persona"] = chosen["persona_name"].to_numpy()
    reason_columns = [f"{model}_reason_{i}" for i in (1, 2, 3)]
    if all(c in chosen.columns for c in reason_columns):
        from serving.score import without_sensitive_reasons

        stored = without_sensitive_reasons(chosen[reason_columns], privacy)
        for i, column in enumerate(reason_columns, 1):
            result[f"reason_{i}"] = stored[column].to_numpy()
    elif reasons_model is not None and reasons_first == 0:  # asked for none (--reasons-for 0)
        result.attrs["note"] = "reasons not computed (--reasons-for 0)"
        for i in (1, 2, 3):
            result[f"reason_{i}"] = pd.Series([None] * len(result), dtype="object")
    elif reasons_model is not None and (note := _no_reasons(chosen, model, reasons_model, reasons_up_to)):
        result.attrs["note"] = note
        for i in (1, 2, 3):
            result[f"reason_{i}"] = None
    elif reasons_model is not None and len(chosen):
        from serving.score import reasons_for

        explained = chosen if reasons_first is None else chosen.head(reasons_first)
        explained = features.rows(explained["customer_id"])
        reasons = reasons_for(reasons_model, explained, privacy=privacy)
        for column in reasons.columns:
            values = np.full(len(chosen), None, dtype=object)
            values[: len(explained)] = reasons[column].to_numpy()
            result[column] = values
        if len(explained) < len(chosen):
            result.attrs["note"] = (
                f"reasons for the first {len(explained):,} of {len(chosen):,} customers (TreeSHAP explains a few hundred a second): "
                "--reasons-for N for more, or store them when scoring (portrait score --reasons)"
            )
    elif reasons_model is not None:  # nobody matched: the same columns as a list with rows
        for i in (1, 2, 3):
            result[f"reason_{i}"] = pd.Series([], dtype="object")
    for column in used:
        if column not in result.columns:
            result[column] = chosen[column].to_numpy()
    note = "; ".join(n for n in (reasons_note, result.attrs.get("note")) if n) or None
    if absent and nobody_by_filter:
        said = "; ".join(
            f"no customer's {column} is {value!r} in these scores (its values: {sorted(schema.current[column])})"
            for column, value in absent
        )
        note = (
            f"{said}: a favourite is one of the values the scoring model was trained with ('other' for a "
            "category it does not know)" + (f"; {note}" if note else "")
        )
    if nobody_by_filter and "customer_id" in used:
        # Scores hold a person under the smallest of their merged ids: another of their ids
        # (from an order or a login) matches nobody, which would read as a person never scored.
        said = (
            "customer_id is the id a person is scored under, the smallest of their merged ids: an id "
            "merged into another person matches nobody (portrait profile ID shows whose it is)"
        )
        note = f"{note}; {said}" if note else said
    result = result.reset_index(drop=True)
    result.attrs["left_out"] = left_out
    result.attrs["matched"] = filtered
    result.attrs["total"] = total
    if note:
        result.attrs["note"] = note
    return result


def _no_reasons(chosen: pd.DataFrame, model: str, reasons_model, up_to: int | None) -> str | None:
    """Why reasons are not computed for ``chosen``, or None: the rows were scored by another
    version than the one loaded (its reasons would explain other scores), or they are too many."""
    version_column = f"{model}_version"
    if version_column in chosen.columns and len(chosen):
        scored_by = {str(v) for v in chosen[version_column].dropna().unique()}
        if scored_by and scored_by != {str(reasons_model.version)}:
            return (
                f"no reasons: the scores are from {model} v{', v'.join(sorted(scored_by))}, the model loaded now is "
                f"v{reasons_model.version} (score again, or store reasons when scoring)"
            )
    if up_to is not None and len(chosen) > up_to:
        return f"no reasons: they are computed for lists of at most {up_to:,} customers; this one has {len(chosen):,}"
    return None
