"""Fitting a model on a time split (or customer folds) and judging it on the holdout, with the
classic peers beside it: for classification the RFM rank score and BG/NBD, with the paired
bootstrap interval of the model's ROC AUC margin over the best of them; for spend the RFM rank
score, the last horizon's spend and BG/NBD expected purchases times Gamma-Gamma expected spend,
with the paired bootstrap interval of the model's Gini margin over the best of them. Metrics of
a peer are ``baseline_<peer>_holdout_*``."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from features.catalogue import describe, windowed
from features.config import FeatureConfig
from models.btyd import BTYD_FEATURES, BGNBDClassifier
from models.gamma_gamma import GammaGammaModel
from models.prior_shift import shift_to_share
from models.propensity import PropensityClassifier, SpendRegressor
from models.repurchase import AveragedClassifier, AveragedRegressor, BGNBDRepurchase, LogisticRepurchase, RankBlend
from portrait.errors import PortraitError
from portrait.toml_text import as_toml
from training.config import ExperimentConfig
from training.data import TrainingData
from training.metrics import (
    classification_metrics,
    paired_bootstrap_auc_margin,
    paired_bootstrap_gini_margin,
    ranking_metrics,
    spend_metrics,
)
from training.splits import customer_folds

BOOTSTRAP_RESAMPLES = 1000


def make_model(config: ExperimentConfig, params: dict | None = None, callbacks=None, horizon_days: int | None = None):
    """The LightGBM model of the experiment; ``horizon_days`` adds the history features."""
    params = {**config.model_params, **(params or {})}
    seed = int(params.get("random_state", 0))
    if config.label.is_classification:
        return PropensityClassifier(
            params=params,
            calibration=config.validation.calibration,
            callbacks=callbacks,
            horizon_days=horizon_days,
            monotone=config.monotone,
            random_state=seed,
        )
    return SpendRegressor(params=params, callbacks=callbacks, random_state=seed)


def predict(model, X: pd.DataFrame) -> np.ndarray:
    return model.predict_proba(X)[:, 1] if hasattr(model, "predict_proba") else model.predict(X)


def rfm_score(features: pd.DataFrame) -> np.ndarray:
    """The analysts' RFM rank score: the percentile ranks (0-1] among customers with a purchase
    of recency (fewer days since the last purchase is better), frequency (orders) and monetary
    value (net spend), summed (0-3]; 0 for no purchase yet. Ties share their average rank."""
    bought = features["orders_lifetime"] > 0

    def rank(values: pd.Series, higher_is_better: bool) -> np.ndarray:
        return values.where(bought).rank(pct=True, ascending=higher_is_better, method="average").fillna(0).to_numpy()

    score = (
        rank(features["days_since_last_purchase"], higher_is_better=False)
        + rank(features["orders_lifetime"], True)
        + rank(features["spend_lifetime"], True)
    )
    return np.where(bought, score, 0.0)


RFM_FEATURES = ("orders_lifetime", "days_since_last_purchase", "spend_lifetime")
PEER_LABELS = {
    "rfm": "RFM rank score",
    "bgnbd": "BG/NBD P(any purchase)",
    "bgnbd_expected": "BG/NBD expected purchases",
    "recent_spend": "spend in the last horizon",
    "bgnbd_gg": "BG/NBD x Gamma-Gamma expected spend",
}


@dataclass
class Peer:
    """A classic score a customer analyst reaches for first, judged beside the model."""

    name: str  # metric prefix: baseline_<name>_holdout_...
    label: str  # what a person reads
    scores: np.ndarray
    notes: tuple[str, ...] = ()


def classification_peers(features: pd.DataFrame, horizon_days: int) -> list[Peer]:
    """The peers of a classification task, on the holdout cutoff's features: the RFM rank
    score, and BG/NBD's P(any purchase within the horizon) and expected purchases, fitted on
    the history before the same cutoff (no label is used: its fit is the calibration period of
    the literature). Which of the two BG/NBD scores ranks better differs by data set (expected
    purchases on CDNOW), so both are peers. A peer whose inputs are not among the features is
    left out."""
    peers = []
    if set(RFM_FEATURES) <= set(features.columns):
        peers.append(Peer("rfm", PEER_LABELS["rfm"], rfm_score(features)))
    if set(BTYD_FEATURES) <= set(features.columns):
        bought = features["active_days_lifetime"].to_numpy() > 0
        if bought.any():
            bgnbd = BGNBDClassifier(horizon_days=horizon_days).fit(features)
            fitted = ", ".join(f"{k} {v:.4g}" for k, v in bgnbd.model_.params_.items())
            peers += [
                Peer(
                    "bgnbd",
                    PEER_LABELS["bgnbd"],
                    bgnbd.predict_proba(features)[:, 1],
                    (f"fitted on the history before the holdout cutoff (weeks): {fitted}", *bgnbd.flags_),
                ),
                Peer("bgnbd_expected", PEER_LABELS["bgnbd_expected"], bgnbd.expected_purchases(features)),
            ]
    return peers


def peer_comparison(
    y: np.ndarray, prediction: np.ndarray, peers: list[Peer], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[dict[str, float], dict[str, str]]:
    """Each peer's holdout ranking metrics (``baseline_<peer>_holdout_*``), and the model's ROC
    AUC margin over the best peer (highest holdout AUC) with its paired bootstrap interval
    (same customers and labels, customers resampled). Returns (metrics, tags)."""
    if not peers or len(np.unique(y)) < 2:
        return {}, {}
    return _compared(y, prediction, peers, ranking_metrics, "roc_auc", paired_bootstrap_auc_margin, resamples, seed)


def _compared(y, prediction, peers: list[Peer], peer_metrics, metric: str, bootstrap, resamples: int, seed: int):
    """Each peer's ``peer_metrics`` (``baseline_<peer>_holdout_*``) and the model's margin in
    ``metric`` over the best peer (highest holdout ``metric``) with ``bootstrap``'s paired
    interval; nothing more when a peer's ``metric`` is not finite (e.g. nobody spent)."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for peer in peers:
        metrics.update(peer_metrics(y, peer.scores, f"baseline_{peer.name}_holdout_"))
        if peer.notes:
            tags[f"peer_{peer.name}_notes"] = "; ".join(peer.notes)
    values = {p.name: metrics[f"baseline_{p.name}_holdout_{metric}"] for p in peers}
    if not all(np.isfinite(list(values.values()))):
        return metrics, tags
    best = max(peers, key=lambda p: values[p.name])
    margin, low, high = bootstrap(y, prediction, best.scores, resamples, seed)
    metrics |= {
        f"holdout_{metric}_margin_over_best_peer": margin,
        f"holdout_{metric}_margin_ci_low": low,
        f"holdout_{metric}_margin_ci_high": high,
        "bootstrap_resamples": float(resamples),
    }
    tags["best_peer"] = best.name
    return metrics, tags


def recent_spend(features: pd.DataFrame, horizon_days: int, config: FeatureConfig | None = None) -> np.ndarray:
    """Spend over the last horizon-length window (from the nearest windowed spend feature of the
    catalogue for ``config``), as a naive forecast."""
    spend = windowed("spend", describe(features.columns, config).values())
    if not spend:
        raise ValueError(f"no windowed spend feature among the columns {list(features.columns)[:10]}")
    nearest = min(sorted(spend), key=lambda w: abs(w - horizon_days))
    return (features[spend[nearest].name] * horizon_days / nearest).clip(lower=0).to_numpy()


# The value features the BG/NBD x Gamma-Gamma spend peer is computed from.
SPEND_PEER_FEATURES = (*BTYD_FEATURES, "spend_lifetime")


def bgnbd_gamma_gamma_spend(features: pd.DataFrame, horizon_days: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Expected spend within the horizon from the classic pair of models (Fader, Hardie & Lee
    2005): BG/NBD expected purchases in the horizon (:class:`BGNBDClassifier`) times the
    Gamma-Gamma expected spend per purchase (:class:`GammaGammaModel`), both fitted on the
    history before the features' cutoff (no label is used). Returns (scores, notes).

    A purchase is a day with a purchase, as for BG/NBD's frequency. The features hold a
    customer's net spend over all their purchase days (``spend_lifetime``) but not the first
    day's alone, so the Gamma-Gamma mean is taken over all ``n = active_days_lifetime``
    purchase days, the first included, where the paper averages the ``x = n - 1`` repeat
    transactions (the model is the same with ``n`` in place of ``x``; a customer with one
    purchase day has a mean over one). Customers with no purchase yet expect no purchase
    (score 0); a buyer whose net spend is not positive (refunds) has no transaction value to
    condition on and gets the population mean spend per purchase, ``v p / (q - 1)``. When
    the fit has ``q <= 1`` (infinite population mean, flagged) the spend per purchase falls
    back to each buyer's own mean and, for those without one, the pooled mean of the others
    (total net spend over total purchase days); the notes say so."""
    bgnbd = BGNBDClassifier(horizon_days=horizon_days).fit(features)
    purchases = bgnbd.expected_purchases(features)
    days = features["active_days_lifetime"].fillna(0).to_numpy(float)
    spend = features["spend_lifetime"].fillna(0).to_numpy(float)
    valued = (days > 0) & (spend > 0)
    n = np.where(valued, days, 0.0)
    mean = np.where(valued, spend / np.where(valued, days, 1.0), np.nan)
    notes = tuple(bgnbd.flags_)
    if not valued.any():
        return np.zeros(len(features)), (*notes, "no customer with positive net spend: Gamma-Gamma not fitted")
    gamma_gamma = GammaGammaModel().fit(n, mean)
    notes += tuple(f"Gamma-Gamma: {flag}" for flag in gamma_gamma.flags_)
    if gamma_gamma.q_ > 1:
        per_purchase = gamma_gamma.conditional_expected_average_spend(n, mean)
    else:
        pooled = spend[valued].sum() / days[valued].sum()
        per_purchase = np.where(valued, mean, pooled)
        notes += ("Gamma-Gamma q <= 1: spend per purchase is each buyer's own mean (the pooled mean without one)",)
    return np.where(days > 0, purchases * per_purchase, 0.0), notes


def spend_peers(features: pd.DataFrame, horizon_days: int, config: FeatureConfig | None = None) -> list[Peer]:
    """The peers of a spend task, on the holdout cutoff's features: the RFM rank score, the
    last horizon's spend and BG/NBD x Gamma-Gamma expected spend (fitted on the history
    before the same cutoff). A peer whose inputs are not among the features is left out."""
    peers = []
    if set(RFM_FEATURES) <= set(features.columns):
        peers += [
            Peer("rfm", PEER_LABELS["rfm"], rfm_score(features)),
            Peer("recent_spend", PEER_LABELS["recent_spend"], recent_spend(features, horizon_days, config)),
        ]
    if set(SPEND_PEER_FEATURES) <= set(features.columns) and (features["active_days_lifetime"] > 0).any():
        scores, notes = bgnbd_gamma_gamma_spend(features, horizon_days)
        peers.append(Peer("bgnbd_gg", PEER_LABELS["bgnbd_gg"], scores, notes))
    return peers


def spend_peer_comparison(
    y: np.ndarray, prediction: np.ndarray, peers: list[Peer], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[dict[str, float], dict[str, str]]:
    """Each peer's holdout spend metrics (``baseline_<peer>_holdout_*``: Gini, Spearman, ...),
    and the model's normalised Gini margin over the best peer (highest holdout Gini) with its
    paired bootstrap interval (same customers and spend, customers resampled). Returns
    (metrics, tags)."""
    if not peers:
        return {}, {}
    return _compared(y, prediction, peers, spend_metrics, "gini", paired_bootstrap_gini_margin, resamples, seed)


def baseline_metrics(
    holdout: pd.DataFrame, y: np.ndarray, config: ExperimentConfig, prediction: np.ndarray
) -> tuple[dict[str, float], dict[str, str], list[Peer]]:
    """The peers' holdout metrics beside the model's ``prediction`` (see :func:`peer_comparison`
    for classification, :func:`spend_peer_comparison` for spend). Returns (metrics, tags,
    peers)."""
    if config.label.is_classification:
        peers = classification_peers(holdout, config.label.horizon_days)
        return *peer_comparison(y, prediction, peers), peers
    peers = spend_peers(holdout, config.label.horizon_days, config.features)
    return *spend_peer_comparison(y, prediction, peers), peers


@dataclass
class FitResult:
    model: object
    metrics: dict[str, float]
    holdout: pd.DataFrame  # holdout rows' features
    holdout_y: np.ndarray
    holdout_prediction: np.ndarray
    holdout_uncalibrated: np.ndarray | None = None
    tags: dict[str, str] = field(default_factory=dict)
    peers: list[Peer] = field(default_factory=list)  # scored on the holdout rows
    holdout_model_X: pd.DataFrame | None = None  # what the model scores: features, history, cutoff
    model_type: str = "lightgbm"
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> metrics
    notes: tuple[str, ...] = ()
    candidate_predictions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> holdout scores
    positive_share: float | None = None  # a relative label's share: batch scores are moved to it


def _score_metrics(config, y, p, prefix) -> dict[str, float]:
    return classification_metrics(y, p, prefix) if config.label.is_classification else spend_metrics(y, p, prefix)


def _per_fold_metrics(config, y: np.ndarray, p: np.ndarray, folds: np.ndarray, prefix: str) -> dict[str, float]:
    """:func:`_score_metrics` of each fold, averaged: out-of-fold predictions come from models
    calibrated on their own fold's rows, so metrics of the pooled rows would be lifted by the
    calibration steps fitted on the rows they score (see :func:`_fold_auc`)."""
    each = [_score_metrics(config, y[folds == f], p[folds == f], prefix) for f in np.unique(folds)]
    keys = list(dict.fromkeys(key for metrics in each for key in metrics))
    with warnings.catch_warnings():  # a measure no fold could compute is NaN, as in one fold
        warnings.simplefilter("ignore", RuntimeWarning)
        return {key: float(np.nanmean([m.get(key, np.nan) for m in each])) for key in keys}


# Measures of calibrated probabilities: on the validation rows they would be measured on the
# rows the calibration was fitted on (near 0 by construction), so they are logged for the
# holdout only.
_CALIBRATION_MEASURES = ("_ece", "_brier", "_log_loss")


def _ranking_only(metrics: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in metrics.items() if not key.endswith(_CALIBRATION_MEASURES)}


def _auc(y, p) -> float:
    return ranking_metrics(y, p, "")["roc_auc"] if len(np.unique(y)) == 2 else float("nan")


def candidate_types(config: ExperimentConfig, with_history: bool) -> tuple[str, ...]:
    """The model types fitted: every one for ``select``, else the configured one (a blend needs
    its LightGBM). Without history features (no value family) only LightGBM."""
    if not config.label.is_classification:
        return ("lightgbm",)
    if not with_history:
        if config.model_type not in ("select", "lightgbm"):
            raise PortraitError(
                f"[model] type {config.model_type!r} needs the purchase history features, which this data has none of"
            )
        return ("lightgbm",)
    if config.model_type == "select":
        return ("lightgbm", "logistic", "bgnbd", "bgnbd_expected", "rfm", "blend")
    if config.model_type == "blend":
        return ("lightgbm", "blend")
    return (config.model_type,)


# ``[model] type`` -> an unfitted estimator, built from (config, params, callbacks, whether
# the history features are there, the candidates fitted before it). Every one is fitted as
# fit(X, y, X_valid=..., y_valid=...) and scores with predict_proba (predict for spend).
MODEL_REGISTRY = {
    "lightgbm": lambda config, params, callbacks, history, fitted: make_model(
        config, params, callbacks, config.label.horizon_days if history else None
    ),
    "logistic": lambda config, *_: LogisticRepurchase(horizon_days=config.label.horizon_days),
    "bgnbd": lambda config, *_: BGNBDRepurchase(horizon_days=config.label.horizon_days),
    "bgnbd_expected": lambda config, *_: BGNBDRepurchase(horizon_days=config.label.horizon_days, score="expected"),
    "rfm": lambda config, *_: RankBlend(weight=0.0, horizon_days=config.label.horizon_days),
    "blend": lambda config, params, callbacks, history, fitted: RankBlend(
        fitted["lightgbm"], weight=0.5, horizon_days=config.label.horizon_days
    ),
}


@dataclass
class Selection:
    chosen: str
    models: dict[str, object]
    validation_auc: dict[str, float]


def fit_candidates(
    config: ExperimentConfig,
    X_fit: pd.DataFrame,
    y_fit: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    params: dict | None,
    with_history: bool,
    callbacks=None,
    blend: bool = True,
) -> Selection:
    """Fit every candidate on the training rows (LightGBM early-stopped, and the calibrated
    ones calibrated, on the validation rows) and choose the one with the highest validation
    ROC AUC (the first listed on a tie). Spend: the LightGBM regressor alone."""
    types = candidate_types(config, with_history)
    models: dict[str, object] = {}
    for name in types:
        if name == "blend" and not blend:
            continue
        estimator = MODEL_REGISTRY[name](config, params, callbacks, with_history, models)
        models[name] = estimator.fit(X_fit, y_fit, X_valid=X_valid, y_valid=y_valid)
    if not config.label.is_classification:
        return Selection("lightgbm", models, {})
    auc = {name: _auc(y_valid, predict(model, X_valid)) for name, model in models.items()}
    wanted = [n for n in types if config.model_type in ("select", n) and n in models]  # not a blend's LightGBM
    # a blend left for later (``blend=False``, the cross-fit blends the averaged folds): its LightGBM
    wanted = wanted or [n for n in types if n in models]
    chosen = max(wanted, key=lambda n: (np.nan_to_num(auc[n], nan=-1.0), -wanted.index(n)))
    return Selection(chosen, models, auc)


SIMPLEST_FIRST = ("rfm", "bgnbd", "bgnbd_expected", "logistic", "lightgbm", "blend")


def _per_fold_auc(y: np.ndarray, scores: np.ndarray, folds: np.ndarray) -> np.ndarray:
    return np.array([_auc(y[folds == f], scores[folds == f]) for f in np.unique(folds)])


PREFERRED = "lightgbm"  # registered unless validation says otherwise (see preferred_choice)


def _standard_error(difference: np.ndarray) -> float:
    """The standard error of the mean of paired per-fold differences (0 with one fold)."""
    if len(difference) < 2:
        return 0.0
    return float(np.nanstd(difference, ddof=1) / np.sqrt(np.sum(np.isfinite(difference))))


def preferred_choice(per_fold: dict[str, np.ndarray], floor: float = -np.inf, preferred: str = PREFERRED) -> str:
    """``preferred`` (LightGBM) unless the validation folds say otherwise: it is registered when
    its mean validation AUC is at least ``floor`` (the best peer's validation AUC) and no
    candidate leads it by more than one standard error of their paired per-fold differences.
    Otherwise the best candidate at or above ``floor`` (simplest first on a tie, :data:`SIMPLEST_FIRST`).
    When every candidate is below ``floor``, the same choice among all of them: the registered
    model is never below a peer on validation unless every candidate is.

    Why LightGBM first and not the simplest candidate within one standard error of the best
    (Breiman's rule, used before 2026-12-04): LightGBM is the model the product is for, and the
    simpler candidates are the peers it is judged against, so a rule that falls back to a peer
    whenever validation is noisy registers a peer exactly where the model is least tested. In
    backtests (the Complete Journey's repurchase at 30 days, 6 windows, and 90 days, 2, and high
    value, 2; CDNOW at 90 days with spaced cutoffs, 4; 20,000 synthetic customers at 30 days, 2)
    the two rules chose alike in 15 of 16 windows; in the other (the Complete Journey's July
    90-day window, five training cutoffs) Breiman's rule chose BG/NBD (holdout AUC 0.8948) and
    this one the blend (0.9145)."""
    means = {name: float(np.nanmean(values)) for name, values in per_fold.items()}
    eligible = [n for n in means if means[n] >= floor - 1e-12] or list(means)
    rank = {n: SIMPLEST_FIRST.index(n) if n in SIMPLEST_FIRST else len(SIMPLEST_FIRST) for n in means}
    best = max(eligible, key=lambda n: (means[n], -rank[n]))
    if preferred in eligible:
        difference = per_fold[best] - per_fold[preferred]
        if float(np.nanmean(difference)) <= _standard_error(difference):
            return preferred
    return best


def _fold_auc(y: np.ndarray, scores: np.ndarray, folds: np.ndarray | None) -> float:
    """ROC AUC, or with ``folds`` the mean of each fold's: a fold's scores come from the model
    calibrated on that fold's rows, and pooling folds calibrated apart would mix their steps
    (an isotonic step fitted on the rows it scores lifts a pooled AUC); within one fold
    calibration keeps the order, so each fold's AUC is its model's ranking."""
    if folds is None:
        return _auc(y, scores)
    return float(np.nanmean([_auc(y[folds == f], scores[folds == f]) for f in np.unique(folds)]))


def validation_peer_auc(
    X_valid: pd.DataFrame, y_valid: np.ndarray, folds: np.ndarray | None = None
) -> dict[str, float]:
    """The peers' ROC AUC on the validation rows (per fold and averaged with ``folds``), from
    the history features computed at each row's cutoff: the RFM score, BG/NBD P(any purchase)
    and expected purchases."""
    columns = {"rfm": "rfm_score", "bgnbd": "bgnbd_p_any", "bgnbd_expected": "bgnbd_expected_purchases"}
    return {
        peer: _fold_auc(y_valid, X_valid[column].fillna(0.0).to_numpy(float), folds)
        for peer, column in columns.items()
        if column in X_valid.columns
    }


def _selection_metrics(selection: Selection, peer_auc: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    metrics = {f"candidate_{n}_validation_roc_auc": v for n, v in selection.validation_auc.items()}
    metrics |= {f"baseline_{n}_validation_roc_auc": v for n, v in peer_auc.items()}
    tags = {"model_type": selection.chosen, "candidates": ",".join(selection.models)}
    if selection.validation_auc:
        chosen = selection.validation_auc[selection.chosen]
        metrics["validation_roc_auc_selected"] = chosen
        if peer_auc:
            best = max(peer_auc.values())
            metrics["validation_roc_auc_margin_over_best_peer"] = chosen - best
            tags["validation_never_worse_than_peers"] = str(bool(chosen >= best - 1e-12)).lower()
    return metrics, tags


# A holdout class (buyers or not) smaller than this: its AUC and lift move widely from sample to
# sample, which the figures alone do not show.
FEW_HOLDOUT_CUSTOMERS = 50
BGNBD_CANDIDATES = ("bgnbd", "bgnbd_expected")


def _small_data_notes(
    config: ExperimentConfig,
    chosen: str,
    out_of_fold: dict[str, np.ndarray],
    folds: np.ndarray,
    y_holdout: np.ndarray,
    history_flags: dict[str, tuple[str, ...]],
) -> list[str]:
    """What a small shop's figures rest on: a holdout with few customers in a class, candidates
    that gave every validation customer one score (LightGBM with fewer rows than its leaves
    need), and a registered BG/NBD whose fits were flagged."""
    notes = []
    if config.label.is_classification and len(y_holdout):
        positives = int(np.sum(y_holdout))
        smaller = min(positives, len(y_holdout) - positives)
        if smaller < FEW_HOLDOUT_CUSTOMERS:
            notes.append(
                f"the holdout has {len(y_holdout):,} customers, {positives:,} of them with the label: on so few, "
                "its AUC, lift and calibration error move widely from one sample to the next; read the interval, "
                "not the point, and let portrait backtest judge on more windows"
            )
    flat = [  # one score for every customer of each fold (each fold's model calibrated on its own)
        name
        for name, scores in out_of_fold.items()
        if len(scores) and all(np.ptp(scores[folds == f]) == 0 for f in np.unique(folds))
    ]
    if flat:
        notes.append(
            f"{', '.join(flat)} gave every validation customer the same score (too few rows for what "
            "it needs, e.g. LightGBM's minimum rows per leaf): its "
            + ("AUC of 0.5" if config.label.is_classification else "Gini of 0")
            + " is no ranking at all"
        )
    if chosen in BGNBD_CANDIDATES and history_flags:
        latest = max(history_flags)
        notes.append(
            f"the registered model ({chosen}) is BG/NBD, whose fit was flagged at {len(history_flags)} cutoff(s); "
            f"at {latest}: {'; '.join(history_flags[latest])}. Check who it ranks first before using its lists"
        )
    return notes


def base_rate_note(validation_rate: float, holdout_rate: float, margin: float) -> str | None:
    """A warning when the calibration (validation) base rate is more than ``margin`` from the
    holdout's: the calibrated probabilities then miss the holdout's level."""
    if abs(validation_rate - holdout_rate) <= margin:
        return None
    return (
        f"the calibration rows' base rate {validation_rate:.1%} differs from the holdout's {holdout_rate:.1%} "
        f"by more than {margin:.1%}: probabilities are calibrated to another level than the holdout's"
    )


def _uncalibrated(model, X: pd.DataFrame) -> np.ndarray | None:
    try:
        return model.predict_uncalibrated(X)
    except AttributeError:  # a candidate without a calibration step (logistic) or an average of them
        return None


# How far a cutoff's share of positives may be from 1 - high_value_quantile for the label to
# count as that share by construction (ties at the cut move it by a customer or two).
SHARE_TOLERANCE = 0.005


def validation_cutoffs_notes(config: ExperimentConfig, split) -> list[str]:
    """A ``[validation] cutoffs`` above the number of training cutoffs, said (it was taken as
    all of them without a word)."""
    if config.validation.cutoffs <= len(split.validation_cutoffs):
        return []
    return [
        f"[validation] cutoffs = {config.validation.cutoffs}, but there are {len(split.train)} training "
        f"cutoffs: validated at all {len(split.validation_cutoffs)}"
    ]


def label_share(config: ExperimentConfig, y: np.ndarray, cutoffs: np.ndarray) -> float | None:
    """The share of the scored population a label marks positive by construction, or None: for
    ``high_value`` the top ``1 - high_value_quantile`` of spend, when every training cutoff's
    share of positives was that share (within :data:`SHARE_TOLERANCE`). Where fewer customers
    than that spend in a window, the positives are only the spenders, a share no model can know
    in advance, so there is none (CDNOW-like logs with few repeat buyers)."""
    if config.label.kind != "high_value" or not len(y):
        return None
    share = round(1 - config.label.high_value_quantile, 12)  # 0.2, not 0.19999999999999996
    grouped = pd.Series(np.asarray(y, dtype="float64")).groupby(np.asarray(cutoffs))
    positives, customers = grouped.sum(), grouped.size()
    # Within the tolerance, or less than one customer from the share (7 of 37 is the top 20%
    # of a small shop: 0.189, which the tolerance alone refused, leaving its probabilities at
    # the calibration's level, a mean of 0.43 for a top 20%).
    off = (positives - share * customers).abs()
    return share if bool(((off <= SHARE_TOLERANCE * customers) | (off < 1)).all()) else None


def _shift_metrics(y: np.ndarray, unshifted: np.ndarray, offset: float | None) -> dict[str, float]:
    if offset is None:
        return {}
    return {
        "holdout_prior_shift_logit": offset,
        "holdout_ece_before_shift": classification_metrics(y, unshifted)["ece"],
    }


def _at_share(predictions: dict[str, np.ndarray], share: float | None) -> tuple[dict[str, np.ndarray], dict]:
    """Holdout scores as batch scoring gives them: a relative label's probabilities moved to its
    share over the holdout's population (models.prior_shift); the chosen offset is a metric."""
    if share is None:
        return predictions, {}
    moved = {name: shift_to_share(scores, share) for name, scores in predictions.items()}
    return {name: m[0] for name, m in moved.items()}, {name: m[1] for name, m in moved.items()}


def fit_time_split(config: ExperimentConfig, data: TrainingData, params: dict | None = None) -> FitResult:
    """A cross-fit over customers on every training cutoff's rows: the customers are split in
    ``validation.folds`` folds; each fold's model is trained on the other folds' rows (every
    cutoff) and early-stopped and calibrated on its fold's rows at the latest
    ``validation.cutoffs`` training cutoffs (none of a fold's rows is trained on: its earlier
    label windows overlap the validation ones). Each candidate is the average of its fold
    models; candidates are compared on the out-of-fold validation predictions (every customer
    at the latest cutoffs) and the best is judged on the holdout cutoff (all customers)."""
    rows = data.train_rows
    seed = int(config.model_params.get("random_state", 42))
    k = config.validation.folds
    fold = customer_folds(rows["customer_id"], k, seed)
    latest = rows["cutoff"].isin([pd.Timestamp(c) for c in data.split.validation_cutoffs]).to_numpy()
    empty = sorted(set(range(k)) - set(np.unique(fold[latest])))
    if empty:
        customers = rows.loc[latest, "customer_id"].nunique()
        raise PortraitError(
            f"[validation] folds = {k} leaves {len(empty)} fold(s) without validation rows: only {customers:,} "
            f"customers are at the latest {len(data.split.validation_cutoffs)} training cutoff(s); use fewer folds"
        )
    if config.label.is_classification:  # each fold's calibration needs both classes
        labels = data.y(rows)
        one_class = [f for f in range(k) if len(np.unique(labels[(fold == f) & latest])) < 2]
        if one_class:
            positives = int(np.sum(labels[latest]))
            raise PortraitError(
                f"[validation] folds = {k}: {len(one_class)} fold(s) of the latest training cutoff(s) hold "
                f"customers of one class only ({positives:,} with the label there in all), which their "
                "calibration cannot fit: use fewer folds, a label more customers have, or more customers"
            )
    valid_rows = rows[latest]
    X_valid_all, y_valid_all = data.model_X(valid_rows), data.y(valid_rows)
    with_history = bool(data.history_columns)
    members: dict[str, list] = {}
    out_of_fold: dict[str, np.ndarray] = {}
    for f in range(k):
        fit_mask, valid_mask = fold != f, (fold == f) & latest
        train, valid = rows[fit_mask], rows[valid_mask]
        selection = fit_candidates(
            config,
            data.model_X(train),
            data.y(train),
            data.model_X(valid),
            data.y(valid),
            params,
            with_history,
            blend=False,
        )
        at = fold[latest] == f
        for name, model in selection.models.items():
            members.setdefault(name, []).append(model)
            out_of_fold.setdefault(name, np.zeros(len(valid_rows)))[at] = predict(model, data.model_X(valid))
    models: dict[str, object] = {name: AveragedClassifier(m).fit() for name, m in members.items()}
    if not config.label.is_classification:
        models = {name: AveragedRegressor(m).fit() for name, m in members.items()}
    if "blend" in candidate_types(config, with_history):
        blend = RankBlend(models["lightgbm"], weight=0.5, horizon_days=config.label.horizon_days)
        models["blend"] = blend.fit(
            X_valid_all, X_valid=X_valid_all, y_valid=y_valid_all, base_valid_scores=out_of_fold["lightgbm"]
        )
        rfm_valid, _ = blend._scores(X_valid_all)
        out_of_fold["blend"] = blend.predict_proba_from(rfm_valid, out_of_fold["lightgbm"])
    valid_fold = fold[latest]
    types = candidate_types(config, with_history)
    wanted = [n for n in types if config.model_type in ("select", n)]
    per_fold = (
        {name: _per_fold_auc(y_valid_all, out_of_fold[name], valid_fold) for name in types}
        if config.label.is_classification
        else {}
    )
    validation_auc = {name: float(np.nanmean(values)) for name, values in per_fold.items()}
    peer_auc = validation_peer_auc(X_valid_all, y_valid_all, valid_fold)
    floor = max(peer_auc.values(), default=-np.inf)
    chosen = preferred_choice({n: per_fold[n] for n in wanted}, floor) if per_fold else "lightgbm"
    selection = Selection(chosen, models, validation_auc)
    model = models[chosen]
    holdout = data.rows(data.split.holdout)
    # the holdout is scored as serving scores: the catalogue features alone, the history
    # features from each model's reference population (models.history)
    X_holdout = data.X(holdout)
    share = label_share(config, data.y(rows), rows["cutoff"].to_numpy())
    as_predicted = {name: predict(candidate, X_holdout) for name, candidate in models.items()}
    unshifted = as_predicted[chosen]
    candidate_predictions, offsets = _at_share(as_predicted, share)
    p_valid, p_holdout = out_of_fold[chosen], candidate_predictions[chosen]
    y_holdout = data.y(holdout)
    # The rows whole: the peers' inputs are built even when the model's families leave them out.
    peer_metrics, peer_tags, peers = baseline_metrics(holdout, y_holdout, config, p_holdout)
    selection_metrics, selection_tags = _selection_metrics(selection, peer_auc)
    metrics = {
        **_ranking_only(_per_fold_metrics(config, y_valid_all, p_valid, valid_fold, "validation_")),
        **_score_metrics(config, y_holdout, p_holdout, "holdout_"),
        **peer_metrics,
        **selection_metrics,
        "rows_validation": float(len(valid_rows)),
        **_shift_metrics(y_holdout, unshifted, offsets.get(chosen)),
    }
    if "lightgbm" in members:
        metrics["best_iteration"] = float(np.mean([m.best_iteration_ for m in members["lightgbm"]]))
    candidates = {
        name: {
            "validation_roc_auc": validation_auc.get(name, float("nan")),
            **_score_metrics(config, y_holdout, scores, "holdout_"),
        }
        for name, scores in candidate_predictions.items()
    }
    uncalibrated, notes = None, []
    if validation_auc and validation_auc[chosen] < floor - 1e-12:
        best_peer = max(peer_auc, key=peer_auc.get)
        notes.append(
            f"every candidate is below the best peer on validation ({best_peer} {floor:.4f}); the best of them, "
            f"{chosen} ({validation_auc[chosen]:.4f}), is registered"
            if len(validation_auc) > 1
            else f"the model ({chosen}, [model] type = {as_toml(config.model_type)}) is below the best peer on "
            f"validation ({best_peer} {floor:.4f} against {validation_auc[chosen]:.4f}); it is registered as asked"
        )
    if config.label.is_classification:
        uncalibrated = _uncalibrated(model, X_holdout)
        if uncalibrated is not None:
            metrics["holdout_ece_uncalibrated"] = classification_metrics(y_holdout, uncalibrated)["ece"]
        note = base_rate_note(
            float(np.mean(y_valid_all)), float(np.mean(y_holdout)), config.validation.base_rate_margin
        )
        notes += [note] if note else []
    notes += _small_data_notes(config, chosen, out_of_fold, valid_fold, y_holdout, data.history_flags)
    notes += validation_cutoffs_notes(config, data.split)
    if len(p_holdout) and np.ptp(p_holdout) == 0:
        notes.append(
            f"the registered model ({chosen}) gives every holdout customer the same score: it learned nothing "
            f"from {len(rows):,} training rows (too few, or no feature tells the classes apart)"
        )
    scheme = (
        f"time: {len(data.split.train)} training cutoff{'s' if len(data.split.train) != 1 else ''}, {k} folds of "
        "customers, out-of-fold validation at the "
        f"latest {len(data.split.validation_cutoffs)}"
    )
    return FitResult(
        model,
        metrics,
        data.X(holdout),
        y_holdout,
        p_holdout,
        uncalibrated,
        {"validation_scheme": scheme, **peer_tags, **selection_tags},
        peers,
        X_holdout,
        chosen,
        candidates,
        tuple(notes),
        candidate_predictions,
        share,
    )


STOPPING_SHARE = 0.2  # of a fold's training customers, kept for early stopping and calibration


def check_customer_folds(config: ExperimentConfig, X: pd.DataFrame, y: np.ndarray):
    """The customer folds of ``config`` over ``y`` (a scikit-learn splitter), once it is known
    that every fold's training part, and all of them, can keep :data:`STOPPING_SHARE` apart by
    class: before any fitting, by ``train`` and by ``tune`` (which ran every trial first)."""
    classify = config.label.is_classification
    count = config.validation.folds
    smallest = int(min(np.sum(y == 1), np.sum(y == 0))) if classify else len(y)
    if count > smallest:
        raise PortraitError(
            f"[validation] folds = {count} is more than the "
            f"{'smaller class' if classify else 'customers'} at the cutoff ({smallest:,}): use fewer folds"
        )
    seed = int(config.model_params.get("random_state", 42))
    folds = (StratifiedKFold if classify else KFold)(count, shuffle=True, random_state=seed)
    if classify:
        for train_index, _ in folds.split(X, y):
            check_stratified_split(
                y[train_index],
                STOPPING_SHARE,
                f"for [validation] folds = {count}: a fold trains on",
                f"use {'fewer folds or ' if count > 2 else ''}more customers",
                seed,
            )
    return folds


@dataclass(frozen=True)
class NestedParams:
    """LightGBM parameters of a customer-fold run tuned inside each outer fold (nested tuning,
    ``portrait tune``): ``for_fold(fold, X, y)`` tunes on that fold's training customers alone
    and returns their parameters; ``final`` were tuned on every customer, for the registered
    model. The out-of-fold holdout figure then judges the tuning too, instead of parameters
    chosen on the very customers and labels it scores."""

    final: dict
    for_fold: Callable[[int, pd.DataFrame, np.ndarray], dict]


def fit_customer_folds(
    config: ExperimentConfig, data: TrainingData, params: dict | NestedParams | None = None
) -> FitResult:
    """One cutoff, K folds of customers: each fold is scored by the candidate chosen on an
    inner 20% split of the other folds (trained on the rest, early-stopped and calibrated on
    that split). Out-of-fold predictions are the holdout, for the chosen model and for every
    candidate. The returned model is chosen and fitted the same way on all rows."""
    rows = data.rows(data.split.holdout)
    X, y = data.model_X(rows), data.y(rows)
    seed = int(config.model_params.get("random_state", 42))
    classify = config.label.is_classification
    with_history = bool(data.history_columns)
    folds = check_customer_folds(config, X, y)
    out_of_fold = np.zeros(len(rows))
    uncalibrated = np.full(len(rows), np.nan)
    per_candidate: dict[str, np.ndarray] = {}
    chosen_counts: dict[str, int] = {}
    fold_of = np.zeros(len(rows), dtype=int)  # each customer's outer fold, for _small_data_notes

    nested = params if isinstance(params, NestedParams) else None
    final_params = nested.final if nested is not None else params

    def fit_inner(X_part, y_part, part_params) -> Selection:
        X_fit, X_stop, y_fit, y_stop = train_test_split(
            X_part, y_part, test_size=STOPPING_SHARE, random_state=seed, stratify=y_part if classify else None
        )
        return fit_candidates(config, X_fit, y_fit, X_stop, y_stop, part_params, with_history)

    served = data.X(rows)  # scored as serving scores (see fit_time_split)
    for fold, (train_index, test_index) in enumerate(folds.split(X, y)):
        fold_of[test_index] = fold
        X_part, y_part = X.iloc[train_index], y[train_index]
        fold_params = nested.for_fold(fold, X_part, y_part) if nested is not None else final_params
        selection = fit_inner(X_part, y_part, fold_params)
        chosen_counts[selection.chosen] = chosen_counts.get(selection.chosen, 0) + 1
        model = selection.models[selection.chosen]
        test = served.iloc[test_index]
        out_of_fold[test_index] = predict(model, test)
        for name, candidate in selection.models.items():
            per_candidate.setdefault(name, np.zeros(len(rows)))[test_index] = predict(candidate, test)
        raw = _uncalibrated(model, test) if classify else None
        if raw is not None:
            uncalibrated[test_index] = raw
    final = fit_inner(X, y, final_params)
    share = label_share(config, y, np.zeros(len(y)))  # one cutoff: its labels are the training labels
    unshifted, offset = out_of_fold, None
    if share is not None:
        out_of_fold, offset = shift_to_share(out_of_fold, share)
    per_candidate, _ = _at_share(per_candidate, share)
    peer_metrics, peer_tags, peers = baseline_metrics(rows, y, config, out_of_fold)
    selection_metrics, selection_tags = _selection_metrics(final, {})
    metrics = {
        **_score_metrics(config, y, out_of_fold, "holdout_"),
        **peer_metrics,
        **selection_metrics,
        **_shift_metrics(y, unshifted, offset),
    }
    if "lightgbm" in final.models:
        metrics["best_iteration"] = float(final.models["lightgbm"].best_iteration_)
    if classify and np.isfinite(uncalibrated).all():
        metrics["holdout_ece_uncalibrated"] = classification_metrics(y, uncalibrated)["ece"]
    candidates = {
        name: {
            "validation_roc_auc": final.validation_auc.get(name, float("nan")),
            **_score_metrics(config, y, oof, "holdout_"),
        }
        for name, oof in per_candidate.items()
    }
    chosen = ", ".join(f"{n} in {k}" for n, k in sorted(chosen_counts.items()))
    notes = _registered_candidate_note(config, rows, y, final.chosen, per_candidate, chosen_counts, metrics)
    notes += tuple(_small_data_notes(config, final.chosen, per_candidate, fold_of, y, data.history_flags))
    return FitResult(
        final.models[final.chosen],
        metrics,
        data.X(rows),
        y,
        out_of_fold,
        uncalibrated if classify and np.isfinite(uncalibrated).all() else None,
        {
            "validation_scheme": f"customer_kfold ({config.validation.folds} folds, out-of-fold holdout; chosen {chosen})",
            **peer_tags,
            **selection_tags,
        },
        peers,
        served,
        final.chosen,
        candidates,
        candidate_predictions=per_candidate,
        positive_share=share,
        notes=notes,
    )


def check_stratified_split(y: np.ndarray, share: float, split: str, advice: str, seed: int) -> None:
    """``split`` keeps ``share`` of the customers ``y`` apart, by class (scikit-learn's stratified
    split with ``random_state=seed``, as the fitting will make it): scikit-learn needs two
    customers of each class and two on each side, or raises a ValueError; and each side must
    hold both classes, or the side kept apart has no validation AUC to choose a candidate by
    (the first listed was taken) and its calibration fits one class (2 customers with the label
    among 20 keep none of them among the 4 kept apart)."""
    positive = int(np.sum(y == 1))
    negative = len(y) - positive
    kept = int(np.ceil(share * len(y)))
    told = f"{len(y):,} customers ({positive:,} positive, {negative:,} negative), {share:.0%} of them kept apart"
    if min(positive, negative) < 2 or kept < 2 or len(y) - kept < 2:
        raise PortraitError(
            f"too few customers {split} {told}, which needs at least 2 of each class and 2 on each side; {advice}"
        )
    fitted, apart = train_test_split(np.asarray(y), test_size=share, random_state=seed, stratify=y)
    for side, labels in (("kept apart", apart), ("fitted", fitted)):
        held = np.unique(labels)
        if len(held) < 2:
            raise PortraitError(
                f"too few customers {split} {told}: the {len(labels):,} {side} would all be "
                f"{'positive' if held[0] == 1 else 'negative'}, with no validation AUC to choose a model by "
                f"and one class to calibrate on; {advice}"
            )


# Prefix of the registered candidate's own out-of-fold figures, logged beside the folds' mixture
# when folds of customers chose differently (promote and backtest read them).
REGISTERED_OWN = "registered_candidate_"


def _registered_candidate_note(
    config, rows, y, registered: str, per_candidate, chosen_counts, metrics
) -> tuple[str, ...]:
    """With K folds of customers the model row scores each fold with the candidate chosen in
    that fold: an estimate of the procedure that chose the registered model. When folds chose
    differently, the registered candidate's own out-of-fold figure and margin over the best peer
    (same customers, labels and bootstrap) are logged (``registered_candidate_*``) and said."""
    if set(chosen_counts) == {registered} or registered not in per_candidate:
        return ()
    own, _, _ = baseline_metrics(rows, y, config, per_candidate[registered])
    metric = config.label.task.headline_metric.removeprefix("holdout_")  # the task's own
    keys = [
        f"holdout_{metric}_margin_over_best_peer",
        f"holdout_{metric}_margin_ci_low",
        f"holdout_{metric}_margin_ci_high",
    ]
    figure = _score_metrics(config, y, per_candidate[registered], "holdout_").get(f"holdout_{metric}")
    if figure is None or not all(k in own for k in keys):
        return ()
    margin, low, high = (own[k] for k in keys)
    metrics[f"{REGISTERED_OWN}holdout_{metric}"] = figure
    metrics |= {f"{REGISTERED_OWN}{k}": own[k] for k in keys}
    return (
        f"the model row scores each fold's customers with the candidate chosen in that fold "
        f"({', '.join(f'{n} in {k}' for n, k in sorted(chosen_counts.items()))}): it judges the procedure. "
        f"The registered {registered} alone scored {figure:.4f} out of fold, {margin:+.4f} over the best peer, "
        f"95% paired bootstrap interval [{low:+.4f}, {high:+.4f}]",
    )


def fit_and_evaluate(
    config: ExperimentConfig, data: TrainingData, params: dict | NestedParams | None = None
) -> FitResult:
    if config.validation.scheme == "customer_kfold":
        return fit_customer_folds(config, data, params)
    return fit_time_split(config, data, params.final if isinstance(params, NestedParams) else params)
