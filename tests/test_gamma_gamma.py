"""Gamma-Gamma spend per transaction: the expectation by hand, the published CDNOW-sample fit,
a simulation, the guards; the BG/NBD x Gamma-Gamma spend peer, the paired Gini interval, and
the peer in a spend training run."""

import datetime as dt
import gzip
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from features.build import build_features
from models.btyd import BTYD_FEATURES, BGNBDClassifier
from models.gamma_gamma import GammaGammaModel
from portrait.adapters.cdnow import import_cdnow
from portrait.dataset import open_dataset
from training.config import parse_experiment
from training.evaluate import Peer, bgnbd_gamma_gamma_spend, spend_peer_comparison
from training.metrics import bootstrap_counts, normalized_gini, paired_bootstrap_gini_margin

# The 1/10 sample of CDNOW (2,357 customers) of ../shared/datasets/cdnow, gzipped (as in test_btyd.py).
CDNOW_SAMPLE = Path(__file__).parent / "fixtures" / "CDNOW_sample.txt.gz"
PUBLISHED = {"p": 6.25, "q": 3.74, "v": 15.44}  # Fader, Hardie & Lee (2005); Fader & Hardie (2013)


def fitted(p=6.0, q=4.0, v=15.0) -> GammaGammaModel:
    model = GammaGammaModel()
    model.p_, model.q_, model.v_, model.flags_ = p, q, v, ()
    return model


def test_conditional_expected_average_spend_by_hand():
    model = fitted()  # population mean v p/(q-1) = 15 * 6 / 3 = 30
    x = np.array([0, 1, 4, 4])
    m = np.array([np.nan, 20.0, 10.0, 55.0])  # x = 0: no mean to condition on
    # (q-1)/(px+q-1) * 30 + px/(px+q-1) * m
    expected = [
        30.0,
        3 / 9 * 30 + 6 / 9 * 20,  # 10 + 13.33 = 23.33: pulled from 20 towards 30
        3 / 27 * 30 + 24 / 27 * 10,  # 3.33 + 8.89 = 12.22: four purchases, pulled less
        3 / 27 * 30 + 24 / 27 * 55,  # 3.33 + 48.89 = 52.22
    ]
    np.testing.assert_allclose(model.conditional_expected_average_spend(x, m), expected, rtol=1e-12)
    np.testing.assert_allclose(expected, [30.0, 70 / 3, 110 / 9, 470 / 9], rtol=1e-12)
    assert model.population_mean_spend_ == pytest.approx(30.0)


@pytest.fixture(scope="module")
def cdnow_sample(tmp_path_factory):
    """The CDNOW sample through the adapter (as test_btyd.py loads it), as of 1997-10-01: each
    customer's repeat transactions in the 39-week calibration period (count and mean value,
    from the purchases table: one order per customer and day) and the value features."""
    folder = tmp_path_factory.mktemp("cdnow_gg")
    raw = folder / "CDNOW_sample.txt"
    raw.write_bytes(gzip.decompress(CDNOW_SAMPLE.read_bytes()))
    import_cdnow(raw, folder / "data")
    dataset = open_dataset(folder / "data")
    con = dataset.connect()
    try:
        repeat = con.execute(
            """SELECT customer_id, COUNT(*) FILTER (WHERE k > 1) AS x, AVG(amount) FILTER (WHERE k > 1) AS m
               FROM (SELECT customer_id, amount, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ts) AS k
                     FROM purchases WHERE ts < TIMESTAMP '1997-10-01')
               GROUP BY customer_id ORDER BY customer_id"""
        ).df()
    finally:
        con.close()
    features = build_features(dataset, "1997-10-01", only=[*BTYD_FEATURES, "spend_lifetime"])
    return repeat, features


def test_published_cdnow_sample_parameters_are_reproduced(cdnow_sample):
    """The published p = 6.25, q = 3.74, v = 15.44 are fitted on the 946 customers of the
    sample with a repeat transaction in the calibration period, on the mean value of those
    repeat transactions (the first purchase left out; a customer's purchases on one day are
    one transaction, which the adapter writes as one order). The value features cannot give
    that mean (they hold spend over all purchase days, the first included: the training peer
    uses that), so this test takes the repeat transactions from the imported purchases."""
    repeat, _ = cdnow_sample
    assert len(repeat) == 2357 and (repeat["x"] > 0).sum() == 946
    started = time.perf_counter()
    model = GammaGammaModel().fit(repeat["x"], repeat["m"])  # x = 0 rows (m NaN) are ignored
    assert time.perf_counter() - started < 2.0
    assert model.n_customers_ == 946 and model.flags_ == ()
    for name, published in PUBLISHED.items():
        assert model.params_[name] == pytest.approx(published, rel=0.02), name
    # The population mean spend per repeat transaction, v p/(q-1) = 35.17 (the sample's 946
    # customers average 35.08).
    assert model.population_mean_spend_ == pytest.approx(35.17, abs=0.01)
    assert clone(model).get_params() == {"max_iter": 1000} and not hasattr(clone(model), "p_")


def test_fit_on_all_purchase_days_as_the_training_peer_does(cdnow_sample):
    """The training peer's variant (the mean over all purchase days, the first included, from
    the features): every buyer counts, and it gives other parameters than the paper's."""
    _, features = cdnow_sample
    n, spend = features["active_days_lifetime"], features["spend_lifetime"]
    valued = (n > 0) & (spend > 0)
    assert valued.sum() == 2357 - (spend <= 0).sum()
    model = GammaGammaModel().fit(n.where(valued, 0), (spend / n).where(valued))
    assert model.flags_ == () and model.q_ > 1
    assert model.n_customers_ == valued.sum()


def test_a_simulated_population_is_recovered_and_its_conditional_means_are_right():
    rng = np.random.default_rng(5)
    p, q, v = 6.0, 4.0, 15.0
    customers = 20_000
    nu = rng.gamma(q, 1 / v, customers)
    x = rng.integers(1, 8, customers)
    values = rng.gamma(p, 1 / nu[:, None], (customers, 7))
    m = np.array([row[:k].mean() for row, k in zip(values, x, strict=True)])
    model = GammaGammaModel().fit(x, m)
    for name, value in {"p": p, "q": q, "v": v}.items():
        assert model.params_[name] == pytest.approx(value, rel=0.1), name
    # E[M | x, m] is the posterior mean of a customer's true mean value p/nu: by groups of
    # predicted value, the prediction and the true mean agree.
    predicted = fitted(p, q, v).conditional_expected_average_spend(x, m)
    truth = p / nu
    groups = pd.qcut(predicted, 10, labels=False)
    by_group = pd.DataFrame({"predicted": predicted, "truth": truth}).groupby(groups).mean()
    np.testing.assert_allclose(by_group["predicted"], by_group["truth"], rtol=0.05)


def test_bad_spend_histories_are_refused_with_a_message():
    model = GammaGammaModel()
    with pytest.raises(ValueError, match=r"mean transaction value is not positive .* for 1 customer\(s\), e.g. row 1"):
        model.fit([2, 3], [10.0, -5.0])
    with pytest.raises(ValueError, match="at least one customer with frequency > 0"):
        model.fit([0, 0, 0], [np.nan, 0.0, 12.0])  # nobody with a repeat purchase
    with pytest.raises(ValueError, match="frequency is negative or not a whole number"):
        model.fit([1, -1], [10.0, 10.0])
    with pytest.raises(ValueError, match="the mean transaction value is missing"):
        model.fit([1, 2], [10.0, np.nan])
    with pytest.raises(ValueError, match="differ in length: 2, 1"):
        model.fit([1, 2], [10.0])
    with pytest.raises(ValueError, match="mean transaction value is not positive"):
        fitted().conditional_expected_average_spend([1], [0.0])


def test_q_at_most_one_is_flagged_and_infinite_expectations_refused():
    # Customers' mean values with a tail so heavy that their population mean is infinite.
    rng = np.random.default_rng(2)
    nu = rng.gamma(0.6, 1 / 2.0, 3000)
    x = rng.integers(1, 5, 3000)
    m = rng.gamma(5.0 * x, 1 / (nu * x))  # the mean of x Gamma(5, nu) values
    model = GammaGammaModel().fit(x, m)
    assert model.q_ < 1 and any("population mean spend v p/(q-1) is infinite" in f for f in model.flags_)
    with pytest.raises(ValueError, match=r"the population mean spend is infinite: q = 0\.5\d* <= 1"):
        _ = model.population_mean_spend_
    with pytest.raises(
        ValueError, match=r"expected spend is infinite for 1 customer\(s\), e.g. row 1 \(frequency=0.0\)"
    ):
        model.conditional_expected_average_spend([2, 0], [10.0, np.nan])
    finite = model.conditional_expected_average_spend([2, 3], [10.0, 20.0])  # p x + q > 1: finite
    assert np.isfinite(finite).all()


def test_spend_peer_is_bgnbd_expected_purchases_times_gamma_gamma_spend():
    rng = np.random.default_rng(4)
    n_customers = 400
    days = rng.integers(1, 30, n_customers)
    first = rng.integers(60, 300, n_customers)
    last = np.where(days > 1, rng.integers(1, 59, n_customers), first)
    spend = days * rng.gamma(6.0, 5.0, n_customers)
    spend[0] = -12.0  # refunds exceed purchases: no value to condition on
    features = pd.DataFrame(
        {
            "active_days_lifetime": np.r_[days, 0],
            "days_since_first_purchase": np.r_[first, np.nan].astype(float),
            "days_since_last_purchase": np.r_[last, np.nan].astype(float),
            "spend_lifetime": np.r_[spend, 0.0],
        }
    )
    scores, notes = bgnbd_gamma_gamma_spend(features, 90)
    purchases = BGNBDClassifier(horizon_days=90).fit(features).expected_purchases(features)
    valued = (features["active_days_lifetime"] > 0) & (features["spend_lifetime"] > 0)
    n = features["active_days_lifetime"].where(valued, 0).to_numpy(float)
    mean = (features["spend_lifetime"] / features["active_days_lifetime"]).where(valued).to_numpy(float)
    gamma_gamma = GammaGammaModel().fit(n, mean)
    np.testing.assert_allclose(
        scores[1:-1], purchases[1:-1] * gamma_gamma.conditional_expected_average_spend(n, mean)[1:-1]
    )
    assert scores[0] == pytest.approx(purchases[0] * gamma_gamma.population_mean_spend_)  # net refunds
    assert scores[-1] == 0.0  # no purchase yet
    bgnbd_flags = BGNBDClassifier(horizon_days=90).fit(features).flags_
    assert notes == bgnbd_flags + tuple(f"Gamma-Gamma: {f}" for f in gamma_gamma.flags_)


def test_paired_gini_interval_equals_resampling_by_hand():
    rng = np.random.default_rng(0)
    y = np.where(rng.uniform(size=300) < 0.4, 0.0, rng.gamma(2.0, 50.0, 300))
    y[:5] = -10.0  # refunds count as no spend in the Gini
    model = y + rng.normal(0, 40, 300)
    other = np.round(y / 100 + rng.normal(0, 1, 300))  # many ties, broken by position
    margin, low, high = paired_bootstrap_gini_margin(y, model, other, resamples=200, seed=3)
    clipped = np.clip(y, 0, None)
    assert margin == pytest.approx(normalized_gini(clipped, model) - normalized_gini(clipped, other))
    by_hand = []
    for chunk in bootstrap_counts(len(y), 200, 3):
        for counts in chunk:
            rows = np.repeat(np.arange(len(y)), counts)  # each customer's copies side by side
            by_hand.append(normalized_gini(clipped[rows], model[rows]) - normalized_gini(clipped[rows], other[rows]))
    assert (low, high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    assert low < margin < high


def test_spend_peer_comparison_names_the_best_peer_by_gini():
    rng = np.random.default_rng(1)
    y = rng.gamma(1.0, 100.0, 500)
    good, weak = y + rng.normal(0, 30, 500), rng.uniform(size=500)
    metrics, tags = spend_peer_comparison(y, y, [Peer("weak", "weak", weak), Peer("good", "good", good, ("a note",))])
    assert tags == {"best_peer": "good", "peer_good_notes": "a note"}
    assert metrics["baseline_good_holdout_gini"] == pytest.approx(normalized_gini(y, good))
    assert metrics["holdout_gini_margin_over_best_peer"] == pytest.approx(1 - normalized_gini(y, good))
    assert metrics["holdout_gini_margin_ci_low"] > 0 and metrics["bootstrap_resamples"] == 1000.0


def test_train_prints_the_spend_peer_table_and_the_gini_interval():
    from training.cli import summary_lines
    from training.train import RunSummary

    metrics = {
        "holdout_gini": 0.87,
        "holdout_spearman": 0.8,
        "holdout_total_actual": 2000.0,
        "baseline_rfm_holdout_gini": 0.78,
        "baseline_rfm_holdout_spearman": 0.7,
        "baseline_bgnbd_gg_holdout_gini": 0.86,
        "baseline_bgnbd_gg_holdout_spearman": 0.75,
        "holdout_gini_margin_over_best_peer": 0.01,
        "holdout_gini_margin_ci_low": -0.004,
        "holdout_gini_margin_ci_high": 0.023,
        "bootstrap_resamples": 1000.0,
    }
    summary = RunSummary(
        "run1",
        "1",
        "spend",
        "2",
        metrics,
        "sqlite:///x",
        holdout_cutoff=dt.date(2024, 12, 1),
        horizon_days=90,
        holdout_rows=20,
        best_peer="bgnbd_gg",
        peer_labels={"rfm": "RFM rank score", "bgnbd_gg": "BG/NBD x Gamma-Gamma expected spend"},
        notes=("BG/NBD x Gamma-Gamma expected spend: Gamma-Gamma: q is at its upper bound",),
    )
    text = "\n".join(summary_lines(summary))
    assert "holdout: 20 customers, mean spend 100.00" in text
    assert re.search(r"Gini\s+Spearman", text)
    assert re.search(r"model\s+0\.8700\s+0\.8000", text)
    assert re.search(r"BG/NBD x Gamma-Gamma expected spend\s+0\.8600\s+0\.7500", text)
    assert (
        "model minus the best peer (BG/NBD x Gamma-Gamma expected spend) in Gini: +0.0100, "
        "95% paired bootstrap interval [-0.0040, +0.0230] (1,000 resamples of the holdout customers)"
    ) in text
    assert "note: BG/NBD x Gamma-Gamma expected spend: Gamma-Gamma: q is at its upper bound" in text


def test_a_spend_training_run_logs_the_bgnbd_gamma_gamma_peer(tracking, small_synthetic):
    from mlflow.tracking import MlflowClient

    from training.train import train_experiment

    config = parse_experiment(
        {
            "name": "synthetic_spend_30d",
            "data": {"path": str(small_synthetic)},
            "cutoffs": {"rule": "monthly", "count": 2},
            "label": {"kind": "future_spend", "horizon_days": 30},
            "model": {"n_estimators": 100, "learning_rate": 0.1, "early_stopping_rounds": 20, "min_child_samples": 20},
            "validation": {"folds": 2},
        }
    )
    summary = train_experiment(config)
    m = summary.metrics
    logged = MlflowClient().get_run(summary.run_id).data
    for name in (
        "holdout_gini",
        "baseline_rfm_holdout_gini",
        "baseline_recent_spend_holdout_gini",
        "baseline_bgnbd_gg_holdout_gini",
        "holdout_gini_margin_over_best_peer",
        "holdout_gini_margin_ci_low",
        "holdout_gini_margin_ci_high",
    ):
        assert logged.metrics[name] == pytest.approx(m[name]), name
    assert 0.3 < m["baseline_bgnbd_gg_holdout_gini"] <= 1
    best = logged.tags["best_peer"]
    assert m[f"baseline_{best}_holdout_gini"] == max(
        m[f"baseline_{p}_holdout_gini"] for p in ("rfm", "recent_spend", "bgnbd_gg")
    )
    assert m["holdout_gini_margin_over_best_peer"] == pytest.approx(
        m["holdout_gini"] - m[f"baseline_{best}_holdout_gini"]
    )
    assert (
        m["holdout_gini_margin_ci_low"] <= m["holdout_gini_margin_over_best_peer"] <= m["holdout_gini_margin_ci_high"]
    )
    assert summary.peer_labels["bgnbd_gg"] == "BG/NBD x Gamma-Gamma expected spend"
