"""Backtest an experiment at several holdout cutoffs: the same training design, judged on
more than one label window.

One holdout is one label window: on a few thousand customers its paired interval is about as
wide as the margins it is meant to tell apart. A backtest runs the experiment as if the data
ended earlier: origin 1 is the experiment itself (its holdout cutoff), origin ``i + 1`` ends
the day before origin ``i``'s holdout cutoff, so the holdout label windows never overlap and
no origin reads a day after its own end. Each origin chooses its own training cutoffs and
model as ``portrait train`` would and compares the chosen model with the best peer on its
holdout; the pooled margin is the mean of the origins' margins, with a paired bootstrap
interval that resamples customers once for every origin (a customer drawn twice counts twice
at every origin they are in), so the customers' repetition across origins is kept.

Nothing is registered: a backtest is evidence about the design, not a model.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from portrait.errors import PortraitError
from training.config import ExperimentConfig
from training.data import prepare
from training.evaluate import BOOTSTRAP_RESAMPLES, REGISTERED_OWN, fit_and_evaluate
from training.metrics import ResampledAUC, ResampledGini, bootstrap_counts, headline_value, shown
from training.splits import holdout_cutoff

MAX_ORIGINS = 12


@dataclass(frozen=True)
class Origin:
    """One holdout cutoff of a backtest and how the chosen model did on it."""

    ends_on: dt.date  # the data as if it ended on this day
    holdout: dt.date
    training_cutoffs: int
    customers: int
    base_rate: float  # share of positives (spend: share with spend)
    model_type: str
    model: float  # the headline metric (ROC AUC; spend: Gini) of the chosen model
    best_peer: str
    peer: float
    margin: float
    low: float
    high: float
    candidates: dict[str, float] = field(default_factory=dict)  # each candidate's holdout metric
    ece: float | None = None  # the chosen model's calibration error (classification)


@dataclass
class Backtest:
    metric: str  # "roc_auc" or "gini"
    origins: list[Origin]
    margin: float  # the mean of the origins' margins
    low: float
    high: float
    resamples: int
    notes: list[str] = field(default_factory=list)
    # each candidate's pooled margin over the best peer (margin, low, high), had it been registered
    # at every window: evidence about the selection, never used by it
    by_candidate: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def origin_ends(last_day: dt.date, horizon_days: int, origins: int, align: str = "month") -> list[dt.date]:
    """The last day of the data at each origin: the data's own last day, then each time the
    day before the previous origin's holdout cutoff (so holdout windows do not overlap)."""
    if not 1 <= origins <= MAX_ORIGINS:
        raise PortraitError(f"--origins must be from 1 to {MAX_ORIGINS}, got {origins}")
    ends = [last_day]
    for _ in range(origins - 1):
        ends.append(holdout_cutoff(ends[-1], horizon_days, align) - dt.timedelta(days=1))
    return ends


def pooled_margin(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    spend: bool,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """The mean over origins of (model - peer) in ROC AUC (spend: normalised Gini), and its
    percentile interval over ``resamples`` bootstrap draws of customers, one draw shared by
    every origin. ``parts``: per origin (customer ids, y, model scores, peer scores)."""
    ids = pd.Index(pd.unique(np.concatenate([np.asarray(p[0]).astype(str) for p in parts])))
    positions = [ids.get_indexer(np.asarray(p[0]).astype(str)) for p in parts]
    scorers = []
    for _, y, model, peer in parts:
        y = np.asarray(y, float)
        if spend:
            y = np.clip(y, 0, None)
            scorers.append((ResampledGini(y, model), ResampledGini(y, peer), ResampledGini(y, y)))
        else:
            scorers.append((ResampledAUC(y, model), ResampledAUC(y, peer), None))
    margins = []
    for counts in bootstrap_counts(len(ids), resamples, seed):
        counts = counts.astype(float)
        per_origin = []
        for (first, second, perfect), at in zip(scorers, positions, strict=True):
            weights = counts[:, at]
            with np.errstate(invalid="ignore", divide="ignore"):
                difference = first(weights) - second(weights)
                per_origin.append(difference / perfect(weights) if perfect is not None else difference)
        margins.append(np.mean(per_origin, axis=0))
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(np.concatenate(margins), [tail, 100 - tail])
    margin = float(np.mean([headline_value(y, m, spend) - headline_value(y, p, spend) for _, y, m, p in parts]))
    return margin, float(low), float(high)


def run_backtest(
    config: ExperimentConfig, origins: int = 3, progress=None, resamples: int = BOOTSTRAP_RESAMPLES
) -> Backtest:
    """Train and judge ``config`` at ``origins`` holdout cutoffs (see the module docstring).
    Stops early, with a note, when an origin's history is too short for its training cutoffs."""
    if config.cutoffs.dates:
        raise PortraitError(
            f"{config.name}: a backtest moves the holdout cutoff back, but [cutoffs] dates fixes it; "
            "use rule = 'spaced' or 'monthly'"
        )
    from features.labels import data_last_day
    from training.data import resolve_dataset

    dataset = resolve_dataset(config.data, config.demo_path)
    con = dataset.connect()
    try:
        last_day = data_last_day(con)
    finally:
        con.close()
    spend = not config.label.is_classification
    metric = "gini" if spend else "roc_auc"
    done: list[Origin] = []
    parts = []
    candidate_parts: dict[str, list] = {}
    notes = []
    for number, ends_on in enumerate(
        origin_ends(last_day, config.label.horizon_days, origins, config.cutoffs.align), start=1
    ):
        if progress:
            progress(f"origin {number} of {origins}: the data as if it ended on {ends_on}")

        def say(cutoff, number=number) -> None:
            if progress:
                progress(
                    cutoff if isinstance(cutoff, str) else f"origin {number} of {origins}: features as of {cutoff}"
                )

        try:
            data = prepare(config, progress=say, ends_on=ends_on)
        except PortraitError as error:
            if not done:
                raise
            notes.append(f"stopped after {len(done)} origin(s): origin {number} (data ending {ends_on}): {error}")
            break
        if progress:
            progress(f"origin {number} of {origins}: fitting (holdout {data.split.holdout})")
        result = fit_and_evaluate(config, data)
        m = result.metrics
        best = result.tags.get("best_peer")
        peer = next((p for p in result.peers if p.name == best), None)
        if peer is None or f"holdout_{metric}_margin_over_best_peer" not in m:
            notes.append(f"origin {number} (holdout {data.split.holdout}): no peer could be compared; left out")
            continue
        y = np.asarray(result.holdout_y, float)
        holdout_ids = data.rows(data.split.holdout)["customer_id"].to_numpy()
        peer_scores = np.asarray(peer.scores, float)
        parts.append((holdout_ids, y, np.asarray(result.holdout_prediction, float), peer_scores))
        for name, scores in result.candidate_predictions.items():
            candidate_parts.setdefault(name, []).append((holdout_ids, y, np.asarray(scores, float), peer_scores))
        own = f"{REGISTERED_OWN}holdout_{metric}"
        mixed = own in m  # folds of customers chose different candidates
        if mixed:
            notes.append(
                f"origin {number} (holdout {data.split.holdout}): its folds chose different candidates, so the model "
                f"row scores each fold with its own choice and judges the procedure; the registered "
                f"{result.model_type} alone scored {m[own]:.4f}"
            )
        done.append(
            Origin(
                ends_on=ends_on,
                holdout=data.split.holdout,
                training_cutoffs=len(data.split.train),
                customers=len(y),
                base_rate=float(np.mean(y > 0)),
                model_type="folds' choices" if mixed else result.model_type,
                model=float(m[f"holdout_{metric}"]),
                best_peer=best,
                peer=float(m[f"baseline_{best}_holdout_{metric}"]),
                margin=float(m[f"holdout_{metric}_margin_over_best_peer"]),
                low=float(m[f"holdout_{metric}_margin_ci_low"]),
                high=float(m[f"holdout_{metric}_margin_ci_high"]),
                candidates={n: float(c.get(f"holdout_{metric}", np.nan)) for n, c in result.candidates.items()},
                ece=float(m["holdout_ece"]) if "holdout_ece" in m else None,
            )
        )
    if not done:
        raise PortraitError(f"{config.name}: no origin had a peer to compare with")
    margin, low, high = pooled_margin(parts, spend, resamples)
    by_candidate = {
        name: pooled_margin(pieces, spend, resamples)
        for name, pieces in candidate_parts.items()
        if len(pieces) == len(parts) and len(candidate_parts) > 1
    }
    return Backtest(metric, done, margin, low, high, resamples, notes, by_candidate)


def backtest_lines(backtest: Backtest, peer_labels: dict[str, str] | None = None) -> list[str]:
    """What ``portrait backtest`` prints: one line per origin (its training cutoffs, or "folds"
    for a customer-fold design at the holdout cutoff alone), then the pooled margin."""
    title = "Gini" if backtest.metric == "gini" else "ROC AUC"
    calibrated = any(o.ece is not None for o in backtest.origins)
    lines = [
        # a spend label's "base rate" is the share of customers who spent in the window
        f"{'holdout':<12}{'training':>9}{'customers':>11}{'buyers' if title == 'Gini' else 'base rate':>11}  "
        f"{'model':<15}{title:>8}"
        f"  {'best peer':<16}{title:>8}{'margin':>9}  {'95% interval':<20}" + ("     ECE" if calibrated else "")
    ]
    for o in backtest.origins:
        ece = f"{o.ece:>8.4f}" if o.ece is not None else ""
        lines.append(
            f"{o.holdout.isoformat():<12}{o.training_cutoffs or 'folds':>9}{o.customers:>11,}{o.base_rate:>11.1%}  "
            f"{o.model_type:<15}{o.model:>8.4f}  {o.best_peer:<16}{o.peer:>8.4f}{o.margin:>+9.4f}  "
            f"{f'[{shown(o.low):+.4f}, {shown(o.high):+.4f}]':<20}{ece}".rstrip()
        )
    wins = sum(o.margin > 0 for o in backtest.origins)
    lines.append(
        f"pooled over {len(backtest.origins)} holdout windows: model minus the best peer {shown(backtest.margin):+.4f}, "
        f"95% paired bootstrap interval [{shown(backtest.low):+.4f}, {shown(backtest.high):+.4f}] ({backtest.resamples:,} "
        f"resamples of customers, one draw for every window); ahead in {wins} of {len(backtest.origins)}"
    )
    if backtest.by_candidate:
        lines.append(
            "each candidate had it been registered at every window (evidence only: the selection uses validation):"
        )
        for name, (margin, low, high) in backtest.by_candidate.items():
            wins = sum(o.candidates.get(name, np.nan) > o.peer for o in backtest.origins)
            each = ", ".join(f"{o.candidates.get(name, np.nan):.4f}" for o in backtest.origins)
            lines.append(
                f"  {name:<15}{shown(margin):>+9.4f}  [{shown(low):+.4f}, {shown(high):+.4f}]  ahead in {wins} of {len(backtest.origins)} "
                f"({title} {each})"
            )
    if peer_labels:
        used = sorted({o.best_peer for o in backtest.origins})
        lines.append("peers: " + "; ".join(f"{name} = {peer_labels.get(name, name)}" for name in used))
    return lines + [f"note: {note}" for note in backtest.notes]


def log_backtest(config: ExperimentConfig, backtest: Backtest) -> str:
    """One MLflow run in the experiment (tagged ``kind = backtest``, no model): each origin's
    figures as ``origin_<i>_*`` and the pooled margin. Returns the run id."""
    import mlflow

    from training.tracking import ensure_experiment

    experiment_id = ensure_experiment(config.name)
    metric = backtest.metric
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.name}-backtest") as run:
        mlflow.set_tags({"kind": "backtest", "metric": metric, "data": config.data})
        mlflow.log_params({"origins": len(backtest.origins), "horizon_days": config.label.horizon_days})
        metrics = {
            f"pooled_{metric}_margin_over_best_peer": backtest.margin,
            f"pooled_{metric}_margin_ci_low": backtest.low,
            f"pooled_{metric}_margin_ci_high": backtest.high,
        }
        for number, o in enumerate(backtest.origins, start=1):
            metrics |= {
                f"origin_{number}_holdout_{metric}": o.model,
                f"origin_{number}_best_peer_{metric}": o.peer,
                f"origin_{number}_margin": o.margin,
                f"origin_{number}_margin_ci_low": o.low,
                f"origin_{number}_margin_ci_high": o.high,
            }
            if o.ece is not None:
                metrics[f"origin_{number}_holdout_ece"] = o.ece
            mlflow.set_tag(f"origin_{number}", f"holdout {o.holdout} ({o.model_type} against {o.best_peer})")
        mlflow.log_metrics(metrics)
    return run.info.run_id
