"""Backtests: origins one before the other, no origin reading past its end, the pooled margin."""

import dataclasses
import datetime as dt
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from portrait.errors import PortraitError
from portrait.synthetic import write_sample_data
from training.backtest import backtest_lines, origin_ends, pooled_margin, run_backtest
from training.config import parse_experiment
from training.data import prepare
from training.metrics import paired_bootstrap_auc_margin

FAST = {"type": "lightgbm", "n_estimators": 60, "learning_rate": 0.1, "early_stopping_rounds": 10}


def experiment(data_path, **overrides):
    raw = {
        "name": "backtest_repurchase_30d",
        "data": {"path": str(data_path)},
        "cutoffs": {"rule": "monthly", "count": 2},
        "label": {"kind": "repurchase", "horizon_days": 30},
        "model": FAST,
        "validation": {"folds": 2, "cutoffs": 1},
    }
    raw.update(overrides)
    return parse_experiment(raw)


def test_each_origin_ends_the_day_before_the_previous_holdout_cutoff():
    # 90 days from 2018-01-01: the holdout is the latest month start with 90 days after it
    # (2017-10-01), so the next origin ends on 2017-09-30 (holdout 2017-07-01), and so on.
    assert origin_ends(dt.date(2018, 1, 1), 90, 3) == [dt.date(2018, 1, 1), dt.date(2017, 9, 30), dt.date(2017, 6, 30)]
    assert origin_ends(dt.date(2024, 12, 31), 30, 3) == [
        dt.date(2024, 12, 31),
        dt.date(2024, 11, 30),
        dt.date(2024, 10, 31),
    ]
    with pytest.raises(PortraitError, match="--origins must be from 1 to 12, got 0"):
        origin_ends(dt.date(2018, 1, 1), 90, 0)


def test_pooled_margin_is_the_mean_of_each_windows_margin():
    # window 1: the model orders all four right (AUC 1), the peer puts one negative above a
    # positive (3 of 4 pairs right: 3/4); window 2: the model gets 2 of 4 pairs right (1/2),
    # the peer all (1). Margins +0.25 and -0.5, pooled -0.125.
    ids = np.array(["a", "b", "c", "d"])
    y = np.array([1, 1, 0, 0])
    first = (ids, y, np.array([0.9, 0.8, 0.2, 0.1]), np.array([0.9, 0.3, 0.5, 0.1]))
    second = (ids, y, np.array([0.4, 0.2, 0.5, 0.1]), np.array([0.9, 0.8, 0.2, 0.1]))
    margin, low, high = pooled_margin([first, second], spend=False, resamples=200)
    assert margin == pytest.approx(((1 - 0.75) + (0.5 - 1.0)) / 2)  # -0.125
    assert low <= margin <= high
    # one window: the pooled interval is the paired interval of that window (the same draws)
    rng = np.random.default_rng(5)
    many = np.array([f"c{i}" for i in range(300)])
    labels = (rng.random(300) < 0.4).astype(int)
    model, peer = labels + rng.normal(0, 1, 300), labels + rng.normal(0, 1.5, 300)
    assert pooled_margin([(many, labels, model, peer)], spend=False, resamples=300) == pytest.approx(
        paired_bootstrap_auc_margin(labels, model, peer, resamples=300, seed=0)
    )
    assert pooled_margin([(many, labels, model, peer)], spend=False, resamples=300)[0] == pytest.approx(
        roc_auc_score(labels, model) - roc_auc_score(labels, peer)
    )


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backtest") / "data"
    write_sample_data(folder, customers=400, seed=4)
    return folder


def test_an_origin_reads_nothing_after_its_end(tiny_synthetic, tmp_path):
    """The training set of an origin ending on D is the one built from the data cut at D:
    adding every purchase and event after D changes nothing (features, labels, cutoffs)."""
    config = experiment(tiny_synthetic)
    ends_on = dt.date(2024, 10, 31)
    cut = tmp_path / "cut"
    shutil.copytree(tiny_synthetic, cut)
    for table in ("purchases", "events"):
        frame = pd.read_parquet(cut / f"{table}.parquet")
        kept = frame[pd.to_datetime(frame["ts"]) < pd.Timestamp(ends_on + dt.timedelta(days=1))]
        assert len(kept) < len(frame)  # the data does go on after D
        kept.to_parquet(cut / f"{table}.parquet", index=False)
    whole = prepare(config, ends_on=ends_on)
    truncated = prepare(experiment(cut))
    assert whole.split == truncated.split
    assert whole.split.holdout == dt.date(2024, 10, 1)
    pd.testing.assert_frame_equal(whole.frame, truncated.frame)


def test_backtest_judges_each_window_and_pools_them(tiny_synthetic):
    config = experiment(tiny_synthetic, model={**FAST, "type": "blend"})  # two candidates: lightgbm, blend
    result = run_backtest(config, origins=2, resamples=200)
    holdouts = [o.holdout for o in result.origins]
    assert holdouts == [dt.date(2024, 12, 1), dt.date(2024, 11, 1)]
    assert [o.ends_on for o in result.origins] == [dt.date(2024, 12, 31), dt.date(2024, 11, 30)]
    assert result.margin == pytest.approx(np.mean([o.margin for o in result.origins]))
    assert result.low <= result.margin <= result.high
    assert set(result.by_candidate) == {"lightgbm", "blend"}
    for name, (margin, low, high) in result.by_candidate.items():  # as if registered at both windows
        assert margin == pytest.approx(np.mean([o.candidates[name] - o.peer for o in result.origins]))
        assert low <= margin <= high
    chosen = {o.model_type for o in result.origins}
    if len(chosen) == 1:  # the same candidate chosen at both windows: its pooled margin is the model's
        assert result.by_candidate[chosen.pop()][0] == pytest.approx(result.margin)
    lines = backtest_lines(result, {"rfm": "RFM rank score"})
    assert lines[1].startswith("2024-12-01") and lines[2].startswith("2024-11-01")
    assert lines[0].endswith("ECE") and lines[1].endswith(f"{result.origins[0].ece:.4f}")  # calibration too
    assert "pooled over 2 holdout windows" in lines[3]
    assert lines[5].lstrip().startswith("lightgbm") and lines[6].lstrip().startswith("blend")


def test_backtest_refuses_fixed_cutoffs(tiny_synthetic):
    config = experiment(tiny_synthetic, cutoffs={"dates": ["2024-11-01", "2024-12-01"]})
    with pytest.raises(
        PortraitError, match="a backtest moves the holdout cutoff back, but \\[cutoffs\\] dates fixes it"
    ):
        run_backtest(config, origins=2)


def test_a_backtest_is_logged_as_one_run_with_each_window_and_the_pooled_margin(tracking, tiny_synthetic):
    from mlflow.tracking import MlflowClient

    from training.backtest import Backtest, Origin, log_backtest

    window = Origin(
        dt.date(2024, 12, 31), dt.date(2024, 12, 1), 2, 400, 0.6, "lightgbm", 0.71, "rfm", 0.69, 0.02, -0.01, 0.05
    )
    earlier = Origin(
        dt.date(2024, 11, 30), dt.date(2024, 11, 1), 1, 390, 0.5, "bgnbd", 0.65, "bgnbd", 0.66, -0.01, -0.04, 0.02
    )
    backtest = Backtest("roc_auc", [window, earlier], 0.005, -0.02, 0.03, 200)
    run = MlflowClient().get_run(log_backtest(experiment(tiny_synthetic), backtest))
    assert run.data.tags["kind"] == "backtest"
    assert run.data.tags["origin_2"] == "holdout 2024-11-01 (bgnbd against bgnbd)"
    assert run.data.metrics["pooled_roc_auc_margin_over_best_peer"] == pytest.approx(0.005)
    assert run.data.metrics["origin_1_margin_ci_high"] == pytest.approx(0.05)
    assert run.data.metrics["origin_2_holdout_roc_auc"] == pytest.approx(0.65)
    assert not MlflowClient().search_registered_models(filter_string="name = 'backtest_repurchase_30d'")
    # a customer-fold design trains at the holdout cutoff alone: "folds", not 0 training cutoffs
    folds = Backtest("roc_auc", [dataclasses.replace(earlier, training_cutoffs=0)], 0, 0, 0, 10)
    assert backtest_lines(folds)[1].startswith("2024-11-01      folds        390")


def test_the_command_prints_each_window_and_the_pooled_margin_and_refuses_fixed_cutoffs(
    tracking, tiny_synthetic, tmp_path
):
    from tests.test_marketing_api_cli import run

    experiment_file = tmp_path / "bt.toml"
    experiment_file.write_text(
        f'name = "backtest_cli"\n[data]\npath = "{tiny_synthetic}"\n[cutoffs]\nrule = "monthly"\ncount = 2\n'
        '[label]\nkind = "repurchase"\nhorizon_days = 30\n[model]\ntype = "lightgbm"\nn_estimators = 40\n'
        "[validation]\nfolds = 2\ncutoffs = 1\n"
    )
    code, text = run("backtest", str(experiment_file), "--origins", "2")
    assert code == 0, text
    assert re.search(r"^2024-12-01\s+2\s+400\s", text, re.M) and re.search(r"^2024-11-01\s+2\s+", text, re.M)
    assert "pooled over 2 holdout windows: model minus the best peer" in text
    assert "logged as run" in text and "in experiment backtest_cli" in text
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(
        experiment_file.read_text().replace('rule = "monthly"\ncount = 2', 'dates = ["2024-11-01", "2024-12-01"]')
    )
    code, text = run("backtest", str(fixed))
    assert code == 2 and "[cutoffs] dates fixes it" in text
