"""From an experiment config to a training set split in time, with the sufficiency gate."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalogue import Feature, Vocabulary, describe
from features.labels import LABELS, build_training_set, data_last_day
from models.history import GROUP_COLUMN, HISTORY_FEATURES, NEEDED, add_history_features
from portrait.dataset import Dataset, open_dataset
from portrait.errors import ConfigError, PortraitError
from portrait.validate import require_checked
from training.config import DEMO, DEMO_FOLDER, ExperimentConfig
from training.splits import TimeSplit, choose_split


def resolve_dataset(data: str, demo_path: Path = DEMO_FOLDER) -> Dataset:
    """``demo`` is the Complete Journey set in ``demo_path`` (imported there on first use). The
    data set's checks run first, once per version of its files (:func:`require_checked`)."""
    if data == DEMO:
        if not (demo_path / "purchases.parquet").exists():
            from portrait.adapters.completejourney import import_completejourney

            import_completejourney(demo_path)
        data = demo_path
    dataset = open_dataset(data)
    require_checked(dataset)
    return dataset


# The families the peers' inputs come from: built for every experiment, used by its model only
# when its [features] families include them.
PEER_FAMILIES = ("value", "windows")


@dataclass
class TrainingData:
    frame: pd.DataFrame
    split: TimeSplit
    feature_columns: list[str]
    target: str
    vocabulary: Vocabulary
    meanings: dict[str, Feature]  # the catalogue entry of each feature column
    dataset_name: str
    dataset_fingerprint: str
    history_columns: list[str] = field(default_factory=list)  # models.history, per cutoff
    history_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # BG/NBD fit flags by cutoff
    dataset_root: str = ""  # where the data set is (its folder, resolved): tells two sets of one name apart

    def rows(self, cutoff: dt.date) -> pd.DataFrame:
        return self.frame[self.frame["cutoff"] == pd.Timestamp(cutoff)]

    @property
    def train_rows(self) -> pd.DataFrame:
        return self.frame[self.frame["cutoff"].isin([pd.Timestamp(c) for c in self.split.train])]

    def X(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows[self.feature_columns]

    def model_X(self, rows: pd.DataFrame) -> pd.DataFrame:
        """What a classifier is fitted on and judged with: the features, the history features
        computed on each cutoff's whole population, and the cutoff (which groups them)."""
        if not self.history_columns:
            return self.X(rows)
        return rows[self.feature_columns + self.history_columns + [GROUP_COLUMN]]

    def y(self, rows: pd.DataFrame) -> np.ndarray:
        return rows[self.target].to_numpy()


def prepare(config: ExperimentConfig, progress=None, ends_on: dt.date | None = None) -> TrainingData:
    """The training set of ``config``: cutoffs chosen from the data's first and last days, or
    as if the data ended on ``ends_on`` (a backtest origin: then no label window, and so no
    feature, reads a day after it)."""
    dataset = resolve_dataset(config.data, config.demo_path)
    con = dataset.connect()
    try:
        last_day = data_last_day(con) if ends_on is None else min(data_last_day(con), ends_on)
        first_day = con.execute("SELECT CAST(MIN(ts) AS DATE) FROM purchases").fetchall()[0][0]
    finally:
        con.close()
    try:
        split = choose_split(
            config.cutoffs,
            config.validation.scheme,
            config.label.horizon_days,
            first_day,
            last_day,
            config.validation.cutoffs,
        )
    except PortraitError as exc:  # the cutoffs the data cannot hold: named in the experiment's file
        given = "dates" if config.cutoffs.dates else f'rule = "{config.cutoffs.rule or "spaced"}"'
        raise ConfigError(f"{config.source or config.name} [cutoffs] ({given}): {exc}") from None
    frame = build_training_set(
        dataset,
        list(split.all),
        config.label.horizon_days,
        config.features,
        high_value_quantile=config.label.high_value_quantile,
        # The peers (RFM, BG/NBD, recent spend) read these even when the model leaves them out.
        families=tuple(dict.fromkeys((*config.families, *PEER_FAMILIES))),
        progress=progress,
    )
    vocabulary = Vocabulary.from_dict(frame.attrs["vocabulary"])
    built = [c for c in frame.columns if c not in ("customer_id", "cutoff", *LABELS)]
    described = describe(built, config.features, vocabulary, frame.attrs.get("attributes"))
    features = [c for c in built if c not in described or described[c].family in config.families]
    meanings = {c: described[c] for c in features if c in described}
    history, flags = [], {}
    if config.label.is_classification and set(NEEDED) <= set(features):
        if progress:
            progress("RFM ranks and BG/NBD at each cutoff")
        frame, flags = add_history_features(frame, config.label.horizon_days)
        history = list(HISTORY_FEATURES)
    data = TrainingData(
        frame,
        split,
        features,
        config.label.kind,
        vocabulary,
        meanings,
        dataset.name,
        dataset.fingerprint(),
        history,
        flags,
        str(Path(dataset.root).resolve()) if dataset.root is not None else "",
    )
    check_sufficiency(data, config)
    return data


def check_sufficiency(data: TrainingData, config: ExperimentConfig) -> None:
    """Refuse to train, saying what is missing, on too few positives or negatives."""
    v = config.validation
    training = data.train_rows if data.split.train else data.rows(data.split.holdout)
    y = data.y(training)
    positives = int((y > 0).sum())
    negatives = int(len(y) - positives)
    what = "customers with spend" if data.target == "future_spend" else "positives"
    problems = []
    if positives < v.min_positives:
        problems.append(f"{positives} {what} (need {v.min_positives})")
    if data.target != "future_spend" and negatives < v.min_negatives:
        problems.append(f"{negatives} negatives (need {v.min_negatives})")
    for name, cutoff in (("validation", data.split.validation), ("holdout", data.split.holdout)):
        if cutoff is None or data.target == "future_spend":
            continue
        labels = data.y(data.rows(cutoff))
        if len(set(labels)) < 2:
            held = "nobody" if not labels.any() else "everyone"
            problems.append(
                f"at the {name} cutoff {cutoff} {held} of its {len(labels):,} customers has the label "
                f"({'no positives' if held == 'nobody' else 'no negatives'}: the metrics there cannot be measured)"
            )
    if problems:
        counted = (
            f"{len(training):,} training rows at cutoffs "
            f"{', '.join(c.isoformat() for c in (data.split.train or (data.split.holdout,)))}"
        )
        fewer = positives < v.min_positives or (data.target != "future_spend" and negatives < v.min_negatives)
        classify = data.target != "future_spend"
        advice = (
            f"; the minimum{'s are min_positives and min_negatives' if classify else ' is min_positives'} in the "
            "experiment's [validation]: below about 100 the figures say little (a holdout of a few dozen "
            "customers), so more history"
            + (", a shorter horizon" if classify else "")
            + " or more customers is the better remedy"
            if fewer
            else ""
        )
        raise PortraitError(
            f"not enough data to train {config.name!r} on {data.dataset_name}: {'; '.join(problems)} ({counted}){advice}"
        )


def label_notes(config: ExperimentConfig, data: TrainingData) -> tuple[str, ...]:
    """Notes on what the label means on this data: a high-value label whose spend threshold is
    0 at some cutoffs (fewer customers than its top share spend anything in the window: there
    it is "any purchase", not value)."""
    if config.label.kind != "high_value" or "future_spend" not in data.frame.columns:
        return ()
    quantile = config.label.high_value_quantile
    thresholds = data.frame.groupby("cutoff", observed=True)["future_spend"].quantile(quantile)
    zero = int((thresholds <= 0).sum())
    if not zero:
        return ()
    return (
        f"the high-value threshold (the top {1 - quantile:.0%} of spend over {config.label.horizon_days} days) is 0 "
        f"at {zero} of {len(thresholds)} cutoffs: fewer customers than that spend in the window, so there the label "
        "is any purchase; a longer horizon or a higher high_value_quantile keeps it a value target",
    )
