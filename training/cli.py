"""``portrait train``, ``backtest``, ``tune`` and ``promote``, and ``portrait personas``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.options import checked_date
from portrait.progress import counter, spinner
from portrait.tracking import setup_tracking  # MLflow itself is imported when a command runs

COMPARED = (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("lift_at_10pct", "lift at 10%"))
SPEND_COMPARED = (("gini", "Gini"), ("spearman", "Spearman"))


def _load(experiment: Path, data: Path | None):
    from training.config import check_data_set_named, load_experiment

    config = load_experiment(experiment)
    if data:
        return config.with_data(data)
    check_data_set_named(config.data, experiment)
    return config


def summary_lines(summary) -> list[str]:
    """What ``portrait train`` prints after the run: the cutoffs, the holdout, and the model
    beside each peer (ROC AUC, PR AUC, lift for classification; Gini and Spearman for spend)
    with the interval of its margin over the best peer."""
    from training.metrics import shown  # here: the CLI starts without scikit-learn

    m = summary.metrics
    lines = [
        f"run {summary.run_id} in experiment {summary.model_name} ({summary.tracking_uri})",
        f"registered {summary.model_name} v{summary.model_version} with alias 'candidate'",
    ]
    if summary.holdout_cutoff is not None:
        parts = []
        if summary.train_cutoffs:
            train = summary.train_cutoffs
            parts.append(
                "training " + ", ".join(c.isoformat() for c in train)
                if len(train) <= 4
                else f"training {len(train)} from {train[0].isoformat()} to {train[-1].isoformat()}"
            )
        if summary.validation_cutoff:
            parts.append(f"validation {summary.validation_cutoff.isoformat()}")
        parts.append(f"holdout {summary.holdout_cutoff.isoformat()}")
        lines.append(f"cutoffs: {'; '.join(parts)} (label window {summary.horizon_days} days)")
    spend = "holdout_roc_auc" not in m
    scheme = f" ({summary.validation_scheme})" if summary.validation_scheme else ""
    if spend:
        mean = m["holdout_total_actual"] / summary.holdout_rows if summary.holdout_rows else float("nan")
        lines.append(f"holdout: {summary.holdout_rows:,} customers, mean spend {mean:,.2f}{scheme}")
    else:
        lines.append(f"holdout: {summary.holdout_rows:,} customers, base rate {m['holdout_positive_rate']:.1%}{scheme}")
    compared, metric, title = (SPEND_COMPARED, "gini", "Gini") if spend else (COMPARED, "roc_auc", "ROC AUC")
    rows = [("model", "holdout_")] + [
        (label, f"baseline_{name}_holdout_") for name, label in summary.peer_labels.items()
    ]
    width = max(len(label) for label, _ in rows) + 2
    lines.append(" " * (width + 2) + "".join(f"{heading:>13}" for _, heading in compared))
    for label, prefix in rows:
        values = "".join(f"{m.get(prefix + key, float('nan')):>13.4f}" for key, _ in compared)
        lines.append(f"  {label:<{width}}{values}")
    if summary.best_peer and f"holdout_{metric}_margin_over_best_peer" in m:
        lines.append(
            f"model minus the best peer ({summary.peer_labels.get(summary.best_peer, summary.best_peer)}) in {title}: "
            f"{shown(m[f'holdout_{metric}_margin_over_best_peer']):+.4f}, 95% paired bootstrap interval "
            f"[{shown(m[f'holdout_{metric}_margin_ci_low']):+.4f}, {shown(m[f'holdout_{metric}_margin_ci_high']):+.4f}] "
            f"({int(m['bootstrap_resamples']):,} resamples of the holdout customers)"
        )
        # As printed: an end shown as +0.0000 holds 0.
        if shown(m[f"holdout_{metric}_margin_ci_low"]) <= 0 <= shown(m[f"holdout_{metric}_margin_ci_high"]):
            lines.append(
                "the interval holds 0: this holdout cannot tell the model from the peer"
                + ("; portrait backtest judges the design on more windows" if summary.can_backtest else "")
            )
    if summary.champion is not None:
        lines.append(summary.champion.sentence(title))
    if spend:
        return lines + [f"note: {note}" for note in summary.notes]
    if summary.candidates:
        lines.append(f"model chosen on validation: {summary.model_type}; candidates (validation, holdout ROC AUC):")
        for name, values in summary.candidates.items():
            mark = " <- registered" if name == summary.model_type else ""
            lines.append(
                f"  {name:<15}{values.get('validation_roc_auc', float('nan')):>9.4f}"
                f"{values.get('holdout_roc_auc', float('nan')):>9.4f}{mark}"
            )
        if set(summary.candidates) & set(summary.peer_labels):
            lines.append(
                "  (a candidate named as a peer is that peer made a model: it ranks customers against its "
                "training customers and is calibrated, which ties some scores, so its holdout figure differs a "
                "little from the peer's, ranked within the holdout's own customers)"
            )
    if "holdout_ece" in m:
        raw = m.get("holdout_ece_uncalibrated")
        lines.append(
            f"calibration error (ECE): {m['holdout_ece']:.4f}"
            + (f" (uncalibrated {raw:.4f})" if raw is not None else "")
        )
    if "holdout_prior_shift_logit" in m:
        lines.append(
            f"the label marks a fixed share of customers: holdout probabilities moved to it by "
            f"{m['holdout_prior_shift_logit']:+.3f} logits, as batch scores are (ECE before the move "
            f"{m['holdout_ece_before_shift']:.4f})"
        )
    lines += [f"note: {note}" for note in summary.notes]
    return lines


def _print_summary(out, summary) -> None:
    for line in summary_lines(summary):
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer, out, console) -> None:
    @app.command("train")
    def train_command(
        experiment: Annotated[Path, typer.Argument(help="experiments/NAME.toml")],
        data: Annotated[Path | None, typer.Option("--data", help="Run on this data set instead.")] = None,
    ) -> None:
        """Train an experiment: time-ordered cutoffs, candidates (LightGBM, logistic, BG/NBD, RFM, blend) chosen on validation, calibrated, judged against the peers; an MLflow run."""
        from training.train import train_experiment

        config = _load(experiment, data)
        setup_tracking()
        with spinner(console, "building the training set") as report:

            def say(message) -> None:
                report(f"features as of {message}" if not isinstance(message, str) else message)

            summary = train_experiment(config, progress=say)
        _print_summary(out, summary)

    @app.command("backtest")
    def backtest_command(
        experiment: Annotated[Path, typer.Argument(help="experiments/NAME.toml")],
        origins: Annotated[
            int,
            typer.Option("--origins", min=1, help="Holdout windows, the latest first, one before the other."),
        ] = 3,
        data: Annotated[Path | None, typer.Option("--data", help="Run on this data set instead.")] = None,
    ) -> None:
        """Judge an experiment's design on several holdout windows (nothing is registered)."""
        from training.backtest import backtest_lines, log_backtest, run_backtest
        from training.evaluate import PEER_LABELS

        config = _load(experiment, data)
        setup_tracking()
        with spinner(console, "backtest") as say:
            result = run_backtest(config, origins, progress=say)
        run_id = log_backtest(config, result)
        for line in backtest_lines(result, PEER_LABELS):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
        out.print(f"logged as run {run_id} in experiment {config.name}", highlight=False, markup=False)

    @app.command("tune")
    def tune_command(
        experiment: Annotated[Path, typer.Argument(help="experiments/NAME.toml")],
        trials: Annotated[
            int | None, typer.Option("--trials", min=1, help="Trials to run (default: the config's).")
        ] = None,
        timeout: Annotated[
            float | None, typer.Option("--timeout", help="Stop starting trials after S seconds.", min=1)
        ] = None,
        data: Annotated[Path | None, typer.Option("--data", help="Run on this data set instead.")] = None,
    ) -> None:
        """Tune with Optuna (resumable in optuna.db), then retrain the best and log it."""
        from training.tune import tune_experiment

        config = _load(experiment, data)
        setup_tracking()
        n = trials or config.tuning.trials
        # customer folds: one study on every customer, then one within each fold (nested tuning)
        studies = 1 + (config.validation.folds if config.validation.scheme == "customer_kfold" else 0)
        with counter(console, "tuning", n * studies) as trial_done:

            def on_trial(trial) -> None:
                trial_done(f"trial {trial.number}: {trial.state.name.lower()} {trial.value or ''}")

            summary = tune_experiment(config, n, timeout or config.tuning.timeout_seconds, progress=on_trial)
        out.print(
            f"{summary.trials} trials in the study; best validation {summary.metric} {summary.best_value:.4f}"
            + (f" (default parameters: {summary.default_value:.4f})" if summary.default_value is not None else "")
        )
        # a trial's figure is not the validation figure train prints (its candidates' customer folds)
        out.print(f"trials compared by {summary.scored_on}; the retrained best below is judged as train judges it")
        if summary.fold_values:
            out.print(
                f"best validation {summary.metric} within each fold: "
                + ", ".join(f"fold {k} {v:.4f}" for k, v in sorted(summary.fold_values.items()))
            )
        out.print(f"best parameters: {summary.best_params}")
        _print_summary(out, summary.final)

    @app.command("promote")
    def promote_command(
        name: Annotated[str, typer.Argument(help="Registered model name (the experiment's name).")],
        version: Annotated[
            str | None, typer.Option("--version", help="Version to promote (default: candidate).")
        ] = None,
        force: Annotated[bool, typer.Option("--force", help="Promote even if its holdout metric is lower.")] = False,
    ) -> None:
        """Move the 'champion' alias to the candidate if it is at least as good."""
        from portrait.tracking import require_store
        from training.registry import promote

        setup_tracking()
        require_store()
        out.print(promote(name, version, force).sentence())


def register_personas(app: typer.Typer, out, console) -> None:
    @app.command("fit")
    def fit_command(
        experiment: Annotated[Path, typer.Argument(help="experiments/personas.toml")],
        data: Annotated[Path | None, typer.Option("--data", help="Run on this data set instead.")] = None,
        as_of: Annotated[
            str | None,
            typer.Option("--as-of", callback=checked_date, help="Feature cutoff (default: after the last purchase)."),
        ] = None,
        out_file: Annotated[
            Path | None, typer.Option("--out", help="Write each customer's persona (CSV or Parquet).")
        ] = None,
    ) -> None:
        """Fit personas, keep ids stable against the last model, log and register them."""
        from dataclasses import replace

        from features.build import parse_cutoff
        from models.personas import STABLE_ARI
        from portrait.files import check_suffix
        from training.config import check_data_set_named
        from training.personas import changes_sentence, load_persona_config, run_persona_fit

        if out_file is not None:  # before the fit registers a version, not after
            check_suffix(out_file, (".csv", ".parquet"))
        config = load_persona_config(experiment)
        if data:
            config = replace(config, data=str(data))
        else:
            check_data_set_named(config.data, experiment)
        setup_tracking()
        with spinner(console, "fitting personas") as say:
            fit, run_id, version = run_persona_fit(
                config, parse_cutoff(as_of) if as_of else None, out_file, progress=say
            )
        out.print(f"run {run_id}: {fit.model.k_} personas, registered {config.name} v{version} with alias 'candidate'")
        for row in fit.table.itertuples():
            out.print(
                f"  {row.persona_id:>2}  {row.persona_name:<45} {row.customers:>8,} customers  "
                f"{row.share_of_revenue:6.1%} of revenue"
            )
        stability = fit.model.k_scores_.loc[fit.model.k_, "stability"]
        if stability < STABLE_ARI:
            out.print(
                f"[yellow]warning:[/] no k in {config.k_min}-{config.k_max} was stable (best bootstrap agreement "
                f"{stability:.2f} < {STABLE_ARI}): these personas may reshuffle on the next refit; "
                + (
                    "try fewer features"
                    if config.k_min <= 2
                    else f"try a smaller k_min (now {config.k_min}) or fewer features"
                ),
                markup=True,
            )
        if fit.changes.get("note"):
            out.print(f"note: {fit.changes['note']}")
        if any(v for k, v in fit.changes.items() if k != "note"):
            out.print(f"compared with the previous model: {changes_sentence(fit.changes)}")
        if out_file:
            out.print(f"assignments: {out_file}")

    @app.command("show")
    def show_command(
        name: Annotated[str, typer.Option(help="Registered persona model.")] = "personas",
        alias: Annotated[str, typer.Option(help="Which version: champion or candidate.")] = "candidate",
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for personas.csv, .md and .html.")] = Path(
            "outputs/personas"
        ),
    ) -> None:
        """Write the crowd portrait table (CSV, Markdown, HTML page with charts)."""
        from portrait.tracking import require_store
        from training.personas import show_personas

        setup_tracking()
        require_store()
        paths = show_personas(name, alias, out_dir)
        out.print(paths["markdown"].read_text())
        out.print("written: " + ", ".join(str(p) for p in paths.values()))
