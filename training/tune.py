"""``portrait tune``: an Optuna study (TPE sampler, median pruning on the validation metric),
each trial a nested MLflow run; the best parameters are retrained and logged like ``train``.

The study lives in ``optuna.db`` in the working directory under the experiment's name and a
digest of what makes its trials comparable (:func:`study_name`), so an interrupted study
resumes, and an edited experiment (another metric, horizon, data set) starts a study of its own. The experiment's own parameters (the defaults and its ``[model]``
values) are the first trial of a new study, so the best trial is never worse than them on the
validation metric.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
from sklearn.model_selection import train_test_split

from portrait.errors import Busy, PortraitError, first_line
from portrait.toml_text import as_toml
from training.config import ExperimentConfig
from training.data import TrainingData, prepare
from training.evaluate import NestedParams, check_customer_folds, check_stratified_split, make_model, predict
from training.metrics import classification_metrics, spend_metrics
from training.splits import customer_validation_split
from training.tracking import ensure_experiment
from training.train import RunSummary, lightgbm_errors_said, train_experiment

STUDY_STORE = "optuna.db"
REPORT_EVERY = 25
TUNE_SPLIT_SEED = 0  # the customer-fold scheme's one 75/25 split of the cutoff, and its check
# The searched parameters: (kind, low, high, log scale).
SPACE = {
    "num_leaves": ("int", 7, 127, True),
    "learning_rate": ("float", 0.01, 0.2, True),
    "min_child_samples": ("int", 10, 300, True),
    "colsample_bytree": ("float", 0.3, 1.0, False),
    "subsample": ("float", 0.5, 1.0, False),
    "reg_lambda": ("float", 1e-3, 30.0, True),
    "reg_alpha": ("float", 1e-3, 10.0, True),
}
LIGHTGBM_DEFAULTS = {"reg_alpha": 0.0}  # searched, but left to LightGBM by DEFAULT_MODEL_PARAMS


def _study_store_error(store: Path, exc: Exception) -> PortraitError:
    """One line for a tuning study's database that cannot be used: locked by another tune of it
    (busy: run again later) or damaged (move it away: a new study starts from the defaults)."""
    reason = first_line(getattr(exc, "orig", None) or exc)
    if "locked" in reason:
        return Busy(
            f"the tuning study's store {store} cannot be used: {reason} (another portrait tune is writing to it: run this again when it has finished)"
        )
    return PortraitError(
        f"the tuning study's store {store} cannot be used: {reason} (move the file away, and a new study starts from "
        "the experiment's settings)"
    )


def default_trial(config: ExperimentConfig) -> dict:
    """Trial 0: the experiment's own values of the searched parameters (the defaults plus its
    ``[model]`` table), so the best trial is never worse than what ``portrait train`` fits."""
    return {name: config.model_params.get(name, LIGHTGBM_DEFAULTS.get(name)) for name in SPACE}


def search_space(trial: optuna.Trial, defaults: dict) -> dict:
    """Each range is widened to hold the default trial's value, and a log-scale range whose
    default is 0 or less (``reg_alpha = 0``, LightGBM's default) becomes linear from that value:
    a log scale cannot hold 0, and Optuna fails a trial whose fixed value it cannot represent."""
    params = {}
    for name, (kind, low, high, log) in SPACE.items():
        default = defaults[name]
        low, high = min(low, default), max(high, default)
        log = log and low > 0
        suggest = trial.suggest_int if kind == "int" else trial.suggest_float
        params[name] = suggest(name, low, high, log=log)
    return params


# The model types whose LightGBM a trial fits: the others have no parameter the search moves.
TUNED_TYPES = ("lightgbm", "select", "blend")


def _validation_sets(config: ExperimentConfig, data: TrainingData):
    """Training and validation rows: the time scheme's customer split of the training cutoffs
    (as ``train`` uses), or for customer folds one stratified 75/25 split of the single cutoff
    (the holdout folds are then judged in the final retraining)."""
    if config.validation.scheme == "time":
        rows = data.train_rows
        seed = int(config.model_params.get("random_state", 42))
        fit, valid = customer_validation_split(rows, data.split.validation_cutoffs, config.validation.customers, seed)
        y_valid = data.y(rows[valid])
        y_fit = data.y(rows[fit])
        if config.label.is_classification and len(np.unique(y_valid)) < 2:
            held = (
                f"{len(y_valid):,} rows at the latest {len(data.split.validation_cutoffs)} training cutoff(s), all "
                f"{'with' if y_valid[0] == 1 else 'without'} the label"
                if len(y_valid)
                else f"no rows at the latest {len(data.split.validation_cutoffs)} training cutoff(s)"
            )
            raise PortraitError(
                f"too few customers to tune: the {config.validation.customers:.0%} of customers held out for "
                f"validation ([validation] customers) have {held}: no trial could be scored by its AUC; hold "
                "out more customers, or use more customers"
            )
        if config.label.is_classification and len(np.unique(y_fit)) < 2:
            fitted = (
                f"{len(y_fit):,} training rows, all {'with' if y_fit[0] == 1 else 'without'} the label"
                if len(y_fit)
                else "no training rows"
            )
            raise PortraitError(
                f"too few customers to tune: the customers not held out for validation have {fitted}: no trial "
                "could learn; hold out fewer customers ([validation] customers), or use more customers"
            )
        return data.model_X(rows[fit]), y_fit, data.model_X(rows[valid]), y_valid
    rows = data.rows(data.split.holdout)
    y = data.y(rows)
    check_customer_folds(config, data.model_X(rows), y)  # the retraining's, before any trial
    return _customer_split(config, data.model_X(rows), y, "to tune:")


def _customer_split(config: ExperimentConfig, X: pd.DataFrame, y: np.ndarray, split: str):
    """One 75/25 split of customers (stratified for a classifier): the trials' fit and validation rows."""
    stratify = y if config.label.is_classification else None
    if stratify is not None:
        check_stratified_split(y, 0.25, split, "use more customers", seed=TUNE_SPLIT_SEED)
    X_fit, X_valid, y_fit, y_valid = train_test_split(
        X, y, test_size=0.25, random_state=TUNE_SPLIT_SEED, stratify=stratify
    )
    return X_fit, y_fit, X_valid, y_valid


def _pruning_callback(trial: optuna.Trial):
    def callback(env) -> None:
        if env.iteration % REPORT_EVERY or not env.evaluation_result_list:
            return
        _, metric, value, higher_better = env.evaluation_result_list[0]
        trial.report(value if higher_better else -value, env.iteration)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {env.iteration} ({metric} {value:.4f})")

    return callback


@dataclass
class TuneSummary:
    best_params: dict
    best_value: float
    default_value: float | None
    trials: int
    final: RunSummary
    metric: str = ""  # what a trial is judged by (the tuning metric's name)
    scored_on: str = ""  # which rows judge it (not those of train's candidate comparison)
    fold_values: dict[int, float] = field(default_factory=dict)  # nested tuning: each outer fold's best


def study_name(config: ExperimentConfig, metric_name: str, data_fingerprint: str = "") -> str:
    """The experiment's name and a digest of what makes its trials comparable (the data set's
    contents, cutoffs, label, features, fixed model values, validation, the metric): a study
    resumes only trials of the same question, not those of an edited experiment under the same
    name, nor those scored on the data set before its files changed."""
    compared = {k: v for k, v in config.to_dict().items() if k not in ("name", "description", "tuning")}
    digest = hashlib.sha256(json.dumps([compared, metric_name, data_fingerprint], sort_keys=True, default=str).encode())
    return f"{config.name}-{digest.hexdigest()[:10]}"


def tune_experiment(
    config: ExperimentConfig,
    trials: int,
    timeout: float | None = None,
    progress=None,
    workdir: Path | None = None,
    data: TrainingData | None = None,
) -> TuneSummary:
    if config.model_type not in TUNED_TYPES:  # a trial is a LightGBM fit: a logistic model's run was unchanged
        raise PortraitError(
            f"tune searches LightGBM's parameters; [model] type = {as_toml(config.model_type)} has none it "
            f"searches (tune an experiment of type {' or '.join(as_toml(t) for t in TUNED_TYPES)})"
        )
    data = data or prepare(config)
    X_fit, y_fit, X_valid, y_valid = _validation_sets(config, data)
    task = config.label.task
    metric_name = config.tuning.metric or task.tuning_metric
    eval_metric = task.early_stopping_metric  # early stopping and pruning (log loss, not AUC)
    experiment_id = ensure_experiment(config.name)
    store = ((workdir or Path.cwd()) / STUDY_STORE).resolve()
    name = study_name(config, metric_name, data.dataset_fingerprint)
    study = _study(config, name, store)
    defaults = default_trial(config)
    horizon = config.label.horizon_days if data.history_columns else None
    sets = (X_fit, y_fit, X_valid, y_valid)

    def after_trial(study, trial) -> None:
        if progress:
            progress(trial)

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.name}-tune") as parent:

        def logged(params: dict, number: int, run) -> float:  # each trial a nested MLflow run
            pruned = None
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{number}", nested=True):
                mlflow.log_params(params)
                try:
                    value = run()
                    mlflow.log_metric(f"validation_{metric_name}", value)
                except optuna.TrialPruned as exc:
                    # a pruned trial is a finished run tagged pruned, not a FAILED one: the
                    # exception leaves the run's context only after the run has ended
                    mlflow.set_tag("state", "pruned")
                    pruned = exc
            if pruned is not None:
                raise pruned
            return value

        best, default = _optimize(
            config, study, sets, defaults, eval_metric, metric_name, horizon, trials, timeout, after_trial, logged
        )
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})
        mlflow.log_metrics(
            {
                f"best_validation_{metric_name}": best.value,
                "trials_complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials),
                "trials_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            }
        )
        if default is not None and math.isfinite(default):
            mlflow.log_metric(f"default_validation_{metric_name}", default)
    tags = {"tuned_from_run": parent.info.run_id, "tuning_trials": str(len(study.trials))}
    params: dict | NestedParams = best.params
    fold_values: dict[int, float] = {}
    if config.validation.scheme == "customer_kfold":
        # Nested: each outer fold's customers are scored by a model whose parameters were tuned on
        # the other folds' customers alone, so the holdout figure judges the tuning as well (the
        # parameters above, tuned on every customer, are the registered model's).

        def for_fold(fold: int, X_part: pd.DataFrame, y_part: np.ndarray) -> dict:
            fold_sets = _customer_split(config, X_part, y_part, f"to tune within fold {fold + 1}:")
            fold_study = _study(config, f"{name}-fold{fold + 1}", store)
            fold_best, _ = _optimize(
                config,
                fold_study,
                fold_sets,
                defaults,
                eval_metric,
                metric_name,
                horizon,
                trials,
                timeout,
                after_trial,
                None,
            )
            fold_values[fold + 1] = float(fold_best.value)
            return dict(fold_best.params)

        params = NestedParams(best.params, for_fold)
        tags["nested_tuning"] = f"{config.validation.folds} folds, {trials} more trials each"
    # The retrained best is a run of its own, like `portrait train`, pointing back at the study.
    final = train_experiment(config, params=params, data=data, parent_tags=tags)
    return TuneSummary(
        best.params,
        float(best.value),
        default,
        len(study.trials),
        final,
        metric_name,
        _scored_on(config, len(y_valid), trials),
        fold_values,
    )


def _study(config: ExperimentConfig, name: str, store: Path) -> optuna.Study:
    """The study ``name`` in the study store (resumed when it exists), trial 0 the experiment's
    own parameters when it is new."""
    try:
        study = optuna.create_study(
            study_name=name,
            storage=f"sqlite:///{store}",
            load_if_exists=True,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=int(config.model_params.get("random_state", 42))),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=50),
        )
    except Exception as exc:  # the study's own database (SQLAlchemy's errors, optuna's wrapping of them)
        if type(exc).__module__.split(".")[0] not in ("sqlalchemy", "sqlite3", "optuna"):
            raise
        raise _study_store_error(store, exc) from None
    if not study.trials:
        study.enqueue_trial(default_trial(config), user_attrs={"default": True})
    return study


def _optimize(
    config, study, sets, defaults, eval_metric, metric_name, horizon, trials, timeout, after_trial, logged
) -> tuple[optuna.trial.FrozenTrial, float | None]:
    """``trials`` more trials of ``study``, each a LightGBM fit on ``sets`` (fit and validation
    rows) judged by ``metric_name``; ``logged(params, number, run)`` wraps each trial's ``run()``
    (an MLflow run) when given. Returns the best trial and the default trial's value."""
    X_fit, y_fit, X_valid, y_valid = sets

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, defaults)
        params["metric"] = eval_metric

        def run() -> float:
            model = make_model(config, params, callbacks=[_pruning_callback(trial)], horizon_days=horizon)
            model.fit(X_fit, y_fit, X_valid=X_valid, y_valid=y_valid)
            score = predict(model, X_valid)
            metrics = (
                classification_metrics(y_valid, score)
                if config.label.is_classification
                else spend_metrics(y_valid, score)
            )
            return metrics[metric_name]

        return logged(params, trial.number, run) if logged is not None else run()

    with lightgbm_errors_said(config):
        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[after_trial], catch=(ValueError,))
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise PortraitError(
            f"no tuning trial of {config.name!r} completed (all {len(study.trials)} failed or were pruned)"
        )
    default = next((t.value for t in completed if t.user_attrs.get("default")), None)
    return study.best_trial, default


def _scored_on(config: ExperimentConfig, rows: int, trials: int) -> str:
    """The rows :func:`_validation_sets` holds out, in words: one fit per trial is judged there,
    not on train's customer folds, so a trial's value is not the validation figure train prints."""
    if config.validation.scheme == "time":
        return (
            f"one fit per trial, judged on the {config.validation.customers:.0%} of customers held out at the latest "
            f"training cutoffs ({rows:,} rows)"
        )
    return (
        f"one fit per trial, judged on a 25% split of the holdout cutoff's customers ({rows:,} rows), for the "
        f"registered model's parameters; the holdout figure is nested: each of the {config.validation.folds} folds' "
        f"customers is scored by a model whose parameters were tuned ({trials} more trials) on the other folds' "
        "customers alone"
    )


__all__ = ["tune_experiment"]
