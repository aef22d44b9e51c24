"""Batch scoring: features as of a date, every requested model by alias, one scores table.

Nothing is written until every model is loaded, the data set has passed validation, and the
features each model needs are present. Tables are written under a temporary name and renamed,
so an interrupted run leaves the previous table as it was, and re-running an as-of date
replaces its table.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import build_features, days_past_data, nobody_before, parse_cutoff, stale_feed_note
from features.catalogue import (
    PER_VALUE_PREFIXES,
    RENAMED_ON,
    Feature,
    Vocabulary,
    attribute_feature,
    describe,
    legacy_names,
)
from features.config import FeatureConfig
from models.drift import is_category
from models.prior_shift import shift_to_share
from models.reasons import top_reasons
from portrait.dataset import Dataset
from portrait.errors import PortraitError
from portrait.files import PARQUET_ROW_GROUP_ROWS, atomic_target, atomic_write, atomic_write_text, check_targets
from portrait.outputs import (
    LATEST,
    LOCK,
    MODEL_LABELS,
    RUNS,
    SCORING_TOKEN,
    features_path,
    point_latest_at,
    refresh_folder_problem,
    scores_path,
)
from portrait.privacy import PrivacySettings
from serving.drift import drift_report
from serving.registry import LoadedModel, load_model


def _feature_groups(models: list[LoadedModel]) -> dict[str, list[LoadedModel]]:
    """Models that need the same feature build (vocabulary and settings) share one."""
    groups: dict[str, list[LoadedModel]] = {}
    for model in models:
        key = json.dumps([model.meta.get("vocabulary"), model.meta.get("feature_config")], sort_keys=True)
        groups.setdefault(key, []).append(model)
    return groups


def build_model_features(
    dataset: Dataset, as_of: dt.date, models: list[LoadedModel], progress=None
) -> dict[str, pd.DataFrame]:
    """Feature rows per model name, each built with that model's vocabulary and settings
    (``progress`` is told each step)."""
    result = {}
    for group in _feature_groups(models).values():
        meta = group[0].meta
        config = FeatureConfig.from_dict(meta.get("feature_config") or {})
        vocabulary = Vocabulary.from_dict(meta["vocabulary"]) if meta.get("vocabulary") else None
        families = sorted({f for m in group for f in m.meta.get("families", [])}) or None
        frame = build_features(dataset, as_of, config, vocabulary=vocabulary, families=families, progress=progress)
        require_customers(len(frame), as_of)
        require_recent(frame, as_of)
        for model in group:
            check_model_features(model, frame.columns, feature_kinds(frame), frame)
            result[model.name] = frame
    return result


def require_recent(frame: pd.DataFrame, as_of: dt.date) -> None:
    """Scores as of a date more than a year after the latest purchase are of nobody's present:
    every window is empty and the served file would be the newest. Refused, as the refresh does."""
    latest = days_past_data(frame)
    if latest is not None:
        raise PortraitError(
            f"the latest purchase in the data is {latest:.0f} days before {as_of}: every purchase window "
            "is empty and the scores would say nothing; give a date within the data"
        )


def require_customers(count: int, as_of: dt.date) -> None:
    """Scoring nobody is a mistake (a date before the data, most often), not an empty table."""
    if count == 0:
        raise PortraitError(nobody_before(as_of, "nothing to score"))


def feature_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """Each column of a feature table as ``number`` or ``text`` (a category)."""
    return {c: "text" if is_category(frame[c]) else "number" for c in frame.columns}


# Features named after a data value or a customers column (features.catalogue.slug).
_NAMED_BY_VALUE = (*PER_VALUE_PREFIXES.values(), "attr_")


def _renamed_examples(names: list[str], frame: pd.DataFrame | None) -> str:
    """What ``names`` are called now, where the built table's vocabulary tells; else examples."""
    vocabulary = frame.attrs.get("vocabulary") if frame is not None else None
    renamed = legacy_names(Vocabulary.from_dict(vocabulary)) if vocabulary else {}
    known = [f"{name} is now {renamed[name]}" for name in names if name in renamed]
    if known:
        return "; ".join(known[:4]) + (" ..." if len(known) > 4 else "")
    return "category_share_blank_2 became category_share_u<hash>, category_share_s_waren category_share_susswaren"


def check_model_features(
    model, columns, kinds: dict[str, str] | None = None, frame: pd.DataFrame | None = None
) -> None:
    """A model must find every feature it was trained on in the table built for it, each of the
    same kind (``kinds``: :func:`feature_kinds`): a customers column that held numbers when the
    model was trained and now holds text (an "n/a" among the ages), or the other way round, would
    be scored as something else (a category's codes read as ages)."""
    missing = [c for c in model.features if c not in set(columns)]
    if missing:
        attributes = [c for c in missing if c.startswith(("attr_", "days_since_"))]
        # an attribute's feature renamed needs the customers table there: without any, the table is gone
        # (the renaming paragraph beside that was a false lead)
        with_attributes = any(str(c).startswith("attr_") for c in columns)
        per_value = [
            c for c in missing if c.startswith(_NAMED_BY_VALUE) and (with_attributes or not c.startswith("attr_"))
        ]
        hint = (
            "; those come from the customers table: it or a column of it is missing, or a column is withheld "
            "now as personal data (see the warnings: values that look like e-mail addresses or phone numbers, "
            "or [privacy] pii_columns); train the model again on the data set as it is"
            if attributes
            else ""
        ) + (
            f"; features named after a value or a column with accents or letters outside a-z were renamed on "
            f"{RENAMED_ON} ({_renamed_examples(per_value, frame)}): a model trained before on such names must be "
            "trained again"
            if per_value
            else ""
        )
        raise PortraitError(
            f"model {model.name} v{model.version} needs {len(missing)} feature(s) this data set "
            f"does not provide: {missing[:8]}{' ...' if len(missing) > 8 else ''}{hint}"
        )
    # the numeric features the model was trained on: those with decile edges in its reference
    # (a category has its values there; models trained before 2026-12-06 have numbers only)
    reference = model.meta.get("reference") or {}
    numeric = {c for c, ref in reference.items() if "edges" in ref}
    if kinds is None or model.is_personas or not numeric:
        return
    changed = [c for c in model.features if c in kinds and (c in numeric) != (kinds[c] == "number")]
    if not changed:
        return
    said = []
    for column in changed[:4]:
        if column in numeric:
            examples = _not_numbers(frame[column]) if frame is not None and column in frame.columns else []
            shown = f" (such as {', '.join(repr(v) for v in examples)})" if examples else ""
            said.append(f"{column}: numbers when the model was trained, text now{shown}")
        else:
            said.append(f"{column}: text (a category) when the model was trained, numbers now")
    raise PortraitError(
        f"model {model.name} v{model.version} would read {len(changed)} feature(s) as another kind than it "
        f"was trained on: {'; '.join(said)}. A customers column holding a value that is not a number ('n/a') "
        "is read as text, and a text column of 12 or fewer distinct numbers as codes; write missing values as "
        "empty cells and numbers as numbers, or train the model again on the data set as it is"
    )


def _not_numbers(values: pd.Series, limit: int = 3) -> list[str]:
    """A few distinct values of a text column that are not numbers (shortened), for a message."""
    distinct = pd.Series(values.dropna().astype("str").unique())
    odd = distinct[pd.to_numeric(distinct, errors="coerce").isna()]
    return [v if len(v) <= 20 else v[:17] + "..." for v in odd.head(limit)]


def hindsight_note(model: LoadedModel, as_of: dt.date) -> str | None:
    """A note when ``model`` learned from outcomes after ``as_of`` (its card's
    ``learned_until``, :func:`models.task.learned_until_of`): its scores as of that date have
    seen what followed it. Fine for a
    backfill's lists; not a fair test of the model, nor history to judge it by."""
    # Older cards lack learned_until: their holdout cutoff is the nearest bound they know.
    until = model.meta.get("learned_until") or model.meta.get("holdout_cutoff")
    if not until or model.is_personas or as_of >= dt.date.fromisoformat(str(until)[:10]):
        return None
    last_day = dt.date.fromisoformat(str(until)[:10]) - dt.timedelta(days=1)  # label windows end before it
    return (
        f"{model.name} v{model.version} learned from purchases up to and including {last_day}; its scores as of "
        f"{as_of} read only those before {as_of}, so they know what came next (use them for lists, not to judge "
        "the model)"
    )


def model_summary(
    model: LoadedModel, values: np.ndarray, shifted: dict, drift_features: pd.DataFrame, as_of: dt.date
) -> dict:
    """What a scores summary says of one propensity or spend model, on either engine: its
    version, label, score quantiles, the population shift, drift against its training reference
    (measured on ``drift_features``, the scored rows or a sample of them) and its hindsight note."""
    summary = {
        "version": model.version,
        "label": model.meta["label"],
        "score_quantiles": {q: float(np.quantile(values, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "mean": float(values.mean()),
        **shifted,
        "drift": drift_report(model.meta.get("reference", {}), drift_features),
    }
    if note := hindsight_note(model, as_of):
        summary["note"] = note
    return summary


def predict_scores(model: LoadedModel, features: pd.DataFrame) -> np.ndarray:
    X = features[model.features]
    if model.meta["label"] == "future_spend":
        return model.estimator.predict(X)
    return model.estimator.predict_proba(X)[:, 1]


def population_scores(model: LoadedModel, values: np.ndarray) -> tuple[np.ndarray, dict]:
    """A batch's scores of ``model``: a relative label's probabilities (its card's
    ``positive_share``, e.g. the top 20% of spend) moved by one logit offset to that share over
    the scored population (models.prior_shift: the order is kept). Returns (scores, what the run
    summary records about the move; nothing for an absolute label)."""
    share = model.meta.get("positive_share")
    if share is None or not len(values):
        return values, {}
    moved, offset = shift_to_share(values, float(share))
    return moved, {"shifted_to_share": share, "prior_shift_logit": offset, "mean_before_shift": float(values.mean())}


def _rows_of(table: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """The rows of ``table`` for ``ids``, in their order (every id is in it: the scores are
    the feature table's customers)."""
    positions = pd.Index(table["customer_id"]).get_indexer(ids)
    if (positions < 0).any():
        raise PortraitError(f"{int((positions < 0).sum())} scored customers have no feature row")
    return table.take(positions).reset_index(drop=True)


def significant(values: np.ndarray, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (0, NaN and infinities as they are)."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(np.isfinite(values) & (values != 0), np.floor(np.log10(np.abs(values))), 0)
    scale = 10.0 ** (digits - 1 - magnitude)
    return np.where(np.isfinite(values), np.round(values * scale) / scale, values)


# Scores equal to this many significant digits are one score when ranked: what differs further
# is arithmetic's rounding (1e-16 relative; two engines' features agree to 1e-9). Not fewer: a
# model's probabilities keep the booster's order inside a calibration step by a tie-break of
# about 1e-9 to 1e-7 (models.propensity.TIE_BREAK), the order lists follow. At 7 digits (2026-12-06
# morning) that order was lost: 1,265 of the Complete Journey's 2,447 customers shared one top
# step, all at percentile 76.6, so no one reached percentile 80 ("likely repurchaser" and
# --min-percentile 80 were empty) while a top-20 list ranked them.
RANKED_DIGITS = 12


def percentile_and_decile(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile among all scored customers (0-100, higher is better) and decile (10 = top);
    scores equal to :data:`RANKED_DIGITS` significant digits share their average rank."""
    ranks = pd.Series(significant(scores, RANKED_DIGITS)).rank(pct=True, method="average").to_numpy()
    percentile = np.round(100 * ranks, 2)
    decile = np.minimum(np.ceil(ranks * 10), 10).astype(int)
    return percentile, decile


def model_meanings(meta: dict) -> dict:
    """The catalogue meaning of each of a model's features: stored in its meta as ``meanings``,
    or, for models logged before meanings were stored, described from its vocabulary and
    feature settings."""
    if meta.get("meanings"):
        return meta["meanings"]
    config = FeatureConfig.from_dict(meta.get("feature_config") or {})
    return describe(meta.get("features", []), config, meta.get("vocabulary"))


def sensitive_attribute_features(privacy: PrivacySettings | None) -> list[Feature]:
    """The catalogue's features a sensitive column can become (a value, or days since a date)."""
    if privacy is None:
        return []
    return [attribute_feature(c, kind) for c in privacy.sensitive_columns for kind in ("category", "date")]


def withheld_attribute_features(privacy: PrivacySettings | None) -> list[Feature]:
    """The catalogue's features a column named in ``pii_columns`` can have become in outputs
    stored before it was named (features tables, reasons): never read from them."""
    if privacy is None:
        return []
    return [attribute_feature(c, kind) for c in privacy.pii_columns for kind in ("category", "date")]


def sensitive_features(privacy: PrivacySettings | None, names: Iterable[str]) -> list[str]:
    """The attribute features of ``names`` made from the data set's ``sensitive_columns``."""
    marked = {feature.name for feature in sensitive_attribute_features(privacy)}
    return [name for name in names if name in marked]


def without_sensitive_reasons(reasons: pd.DataFrame, privacy: PrivacySettings | None) -> pd.DataFrame:
    """``reasons`` (columns of phrased reasons, best first) less those phrased on a sensitive
    attribute (``"age band: 35-44"``: stored by scores made before reasons left them out, or
    before the column was marked), the rest moved up in their order. Vectorised over rows."""
    # In any case: sensitive_columns match the customers' columns in any case ("Age" marks the
    # column age), and a reason is phrased with the column's name as the data set wrote it.
    # ... and those phrased on a column named personal data since they were stored
    marked = sensitive_attribute_features(privacy) + withheld_attribute_features(privacy)
    labels = tuple(f"{feature.label}:".casefold() for feature in marked)
    if not labels or reasons.empty:
        return reasons
    values = reasons.to_numpy(dtype=object)
    keep = np.vectorize(lambda r: isinstance(r, str) and not r.casefold().startswith(labels), otypes=[bool])(values)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept reasons first, in their order
    moved = np.take_along_axis(np.where(keep, values, None), order, axis=1)
    return pd.DataFrame(moved, columns=reasons.columns, index=reasons.index, dtype=object)


def reasons_for(
    model: LoadedModel, features: pd.DataFrame, k: int = 3, privacy: PrivacySettings | None = None
) -> pd.DataFrame:
    """Each row's top ``k`` reasons. Never a sensitive attribute of the data set (``privacy``):
    reasons reach lists and the marketing role, who may not see those."""
    X = features[model.features]
    contributions = model.estimator.contributions(X)
    withheld = {feature.name for feature in withheld_attribute_features(privacy)}
    leave_out = sensitive_features(privacy, model.features) + [f for f in model.features if f in withheld]
    return top_reasons(contributions, X, k=k, meanings=model_meanings(model.meta), leave_out=leave_out)


def refresh_root_around(folder: Path) -> Path | None:
    """The refresh output root ``folder`` is, or whose ``runs/`` it lies in (a run's ``scores/``,
    the ``runs`` folder itself), also before its first run is published (a ``runs/`` folder, its
    lock); None for any other folder."""
    path = Path(folder).absolute()
    if (path / RUNS).is_dir():
        return path
    for parent in (path, *path.parents):
        if parent.name == RUNS and any((parent.parent / name).exists() for name in (LATEST, LOCK)):
            return parent.parent
    return None


def refuse_refresh_output(out_dir: Path) -> None:
    """``portrait score --out`` in a refresh output root (the root, its ``runs``, a run's
    ``scores/``): the refresh writes and publishes its runs whole, and scores written there by
    hand replaced a run's (serve --runs then lost the other models) or its LATEST. The refresh
    itself scores into its own work folder through :func:`score`, which does not ask this."""
    if problem := refresh_folder_problem(out_dir):
        raise PortraitError(f"--out {problem.split(':')[0]}; score into a scores folder of its own")
    if root := refresh_root_around(out_dir):
        raise PortraitError(
            f"--out {out_dir} is in the refresh output root {root}, whose runs portrait refresh writes and publishes "
            "whole (scores there would replace a run's, or its LATEST); score into a scores folder of its own"
        )


def publish_scores(scores: pd.DataFrame, features: pd.DataFrame, out_dir: Path, as_of: dt.date) -> Path:
    """Write a scoring's scores and the features they were computed from into ``out_dir`` (for
    both engines); returns the scores file. One token goes into both files' metadata, so that a
    reader pairing them (an API worker during a re-score of the same date) can tell whether they
    are of one scoring. The scores are written first and published last: an interrupted write
    (Ctrl-C, a full disk) while they are written leaves both files of the previous scoring, not
    this one's features beside the previous scores."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = scores_path(out_dir, as_of)
    token = uuid.uuid4().hex
    features = features.reset_index(drop=True)
    features.attrs = {**features.attrs, SCORING_TOKEN: token}
    scores.attrs = {**scores.attrs, SCORING_TOKEN: token}
    with atomic_target(target) as scores_tmp:
        scores.to_parquet(scores_tmp, index=False, row_group_size=PARQUET_ROW_GROUP_ROWS)
        atomic_write(features, features_path(out_dir, as_of))
    return target


def check_score_targets(out_dir: Path, as_of: dt.date, csv: bool) -> None:
    """Refuse, before any work, an ``--out`` where the scores cannot be written (a file, or a
    folder under a file): at a million customers the scoring takes minutes."""
    target = scores_path(out_dir, as_of)
    summary = target.with_name(target.stem + ".summary.json")
    check_targets(
        [
            target,
            features_path(out_dir, as_of),
            summary,
            out_dir / LATEST,
            *([target.with_suffix(".csv")] if csv else []),
        ]
    )


@dataclass
class ScoreRun:
    scores: pd.DataFrame
    summary: dict
    scores_file: Path
    summary_file: Path
    newer: str | None = None  # LATEST's scores when they are newer than these (a backfill): kept


def score(
    dataset: Dataset,
    as_of,
    model_names: list[str],
    out_dir: Path,
    alias: str = "champion",
    with_reasons: bool = False,
    csv: bool = False,
    validate_first: bool = True,
    progress=None,
    models: list[LoadedModel] | None = None,
    features_by_model: dict[str, pd.DataFrame] | None = None,
) -> ScoreRun:
    """Score ``dataset`` as of ``as_of`` with ``model_names`` (by ``alias``) into ``out_dir``.
    ``models`` and ``features_by_model`` (:func:`build_model_features` of them): already loaded
    models and their features, as the nightly refresh builds them in a step of its own."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    as_of = parse_cutoff(as_of)
    check_score_targets(out_dir, as_of, csv)
    say("loading models")
    if models is None:
        models = [load_model(name, alias) for name in model_names]
    if not models:
        raise PortraitError("no model to score with: give --models NAME[,NAME...]")
    quarantined = None
    if validate_first:
        from portrait.validate import require_checked

        say("validating the data set")
        quarantined = require_checked(dataset, say)
    if features_by_model is None:
        say("building features")
        features_by_model = build_model_features(dataset, as_of, models, progress=say)
    propensity = [m for m in models if not m.is_personas]
    base = next(iter(features_by_model.values()))
    scores = pd.DataFrame({"customer_id": base["customer_id"], "as_of": pd.Timestamp(as_of)})
    summary: dict = {
        "as_of": as_of.isoformat(),
        "dataset": dataset.name,
        # Lists from these scores read the data set's consent rules (portrait.privacy) there.
        "dataset_path": str(dataset.root.resolve()) if dataset.root is not None else None,
        "dataset_fingerprint": dataset.fingerprint(),
        "customers": int(len(scores)),
        "alias": alias,
        "models": {},
        "quarantined_rows": quarantined,
    }
    if stale := stale_feed_note(base, as_of):
        summary["note"] = stale
    for model in models:
        say(f"scoring {model.name}")
        features = _rows_of(features_by_model[model.name], scores["customer_id"])
        if model.is_personas:
            assigned = model.estimator.assign(features[model.features])
            scores["persona_id"] = assigned["persona_id"].to_numpy()
            scores["persona_name"] = assigned["persona_name"].to_numpy()
            scores["personas_version"] = model.version
            summary["models"][model.name] = {
                "version": model.version,
                "sizes": scores["persona_name"].value_counts().to_dict(),
            }
            continue
        values, shifted = population_scores(model, predict_scores(model, features))
        percentile, decile = percentile_and_decile(values)
        scores[f"{model.name}_score"] = values
        scores[f"{model.name}_percentile"] = percentile
        scores[f"{model.name}_decile"] = decile
        scores[f"{model.name}_version"] = model.version
        if with_reasons:
            say(f"reasons for {model.name}")
            reasons = reasons_for(model, features, privacy=dataset.privacy)
            for column in reasons.columns:
                scores[f"{model.name}_{column}"] = reasons[column].to_numpy()
        summary["models"][model.name] = model_summary(model, values, shifted, features, as_of)
    # One feature table (the first propensity model's build) is kept for profiles and filters.
    profile_features = features_by_model[propensity[0].name] if propensity else base
    scores.attrs[MODEL_LABELS] = {m.name: m.meta["label"] for m in models if not m.is_personas}
    target = publish_scores(scores, profile_features, out_dir, as_of)
    if csv:
        atomic_write(scores, target.with_suffix(".csv"), csv=True)
        summary["csv"] = str(target.with_suffix(".csv"))
    summary["duration_seconds"] = round(time.perf_counter() - started, 2)
    summary[SCORING_TOKEN] = scores.attrs[SCORING_TOKEN]  # which scores file it describes (scores_summary)
    summary_file = target.with_name(target.stem + ".summary.json")
    atomic_write_text(json.dumps(summary, indent=2, default=str), summary_file)
    newer = point_latest_at(out_dir, target, as_of)
    return ScoreRun(scores, summary, target, summary_file, newer)
