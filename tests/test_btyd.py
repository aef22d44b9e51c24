"""BG/NBD: the published CDNOW fit, hand-computed P(alive), a Monte-Carlo check of the
predictions, the guards for degenerate data and bad input."""

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from features.build import build_features
from models.btyd import BTYD_FEATURES, BetaGeoModel, BGNBDClassifier, btyd_inputs, history_row_problems
from portrait.adapters.cdnow import import_cdnow
from portrait.dataset import open_dataset

# The 1/10 sample of CDNOW (2,357 customers) used by Fader, Hardie & Lee (2005): the file
# CDNOW_sample.txt of ../shared/datasets/cdnow (from the MIT-licensed lifetimes 0.11.3), gzipped.
CDNOW_SAMPLE = Path(__file__).parent / "fixtures" / "CDNOW_sample.txt.gz"
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # Fader, Hardie & Lee (2005), weeks
PUBLISHED_LOG_LIKELIHOOD = -9582.4


def fitted(r=0.243, alpha=4.414, a=0.793, b=2.426) -> BetaGeoModel:
    model = BetaGeoModel()
    model.r_, model.alpha_, model.a_, model.b_ = r, alpha, a, b
    return model


@pytest.fixture(scope="module")
def cdnow_sample_inputs(tmp_path_factory) -> pd.DataFrame:
    """(x, t_x, T) in weeks as of 1997-10-01, through the adapter, the features and btyd_inputs."""
    folder = tmp_path_factory.mktemp("cdnow")
    raw = folder / "CDNOW_sample.txt"
    raw.write_bytes(gzip.decompress(CDNOW_SAMPLE.read_bytes()))
    import_cdnow(raw, folder / "data")
    features = build_features(open_dataset(folder / "data"), "1997-10-01", only=list(BTYD_FEATURES))
    return btyd_inputs(features)


def test_published_cdnow_sample_parameters_are_reproduced(cdnow_sample_inputs):
    inputs = cdnow_sample_inputs
    assert len(inputs) == 2357 and inputs["frequency"].notna().all()
    model = BetaGeoModel().fit(inputs["frequency"], inputs["recency"], inputs["T"])
    for name, published in PUBLISHED.items():
        assert model.params_[name] == pytest.approx(published, rel=0.02), name
    assert model.log_likelihood_ == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.5)
    assert model.flags_ == ()


def test_p_alive_by_hand():
    model = fitted()
    x = np.array([0, 2, 1, 10, 5])
    t_x = np.array([0.0, 30.43, 1.0, 38.0, 10.0])
    T = np.array([20.0, 38.86, 38.0, 38.0, 39.0])
    # 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)); a customer with no repeat purchase is alive
    expected = [
        1.0,
        1 / (1 + 0.793 / 3.426 * (43.274 / 34.844) ** 2.243),  # 0.7266
        1 / (1 + 0.793 / 2.426 * (42.414 / 5.414) ** 1.243),  # 0.1915
        1 / (1 + 0.793 / 11.426 * (42.414 / 42.414) ** 10.243),  # 0.9351: bought at the end
        1 / (1 + 0.793 / 6.426 * (43.414 / 14.414) ** 5.243),  # 0.0244: five, then 29 weeks silent
    ]
    np.testing.assert_allclose(model.p_alive(x, t_x, T), expected, rtol=1e-12)
    np.testing.assert_allclose(expected[1:], [0.72658, 0.19146, 0.93510, 0.02440], atol=5e-5)


def simulate(r, alpha, a, b, T, t, rng):
    """BG/NBD histories over (0, T] after a first purchase at 0, and whether each customer buys
    in (T, T+t]: purchases at rate lambda while alive, dropout with probability p after each
    repeat purchase. Vectorised over customers, one step per purchase."""
    n = len(T)
    lam = np.maximum(rng.gamma(r, 1 / alpha, n), 1e-300)
    p = rng.beta(a, b, n)
    x, t_x, clock = np.zeros(n), np.zeros(n), np.zeros(n)
    alive, running = np.ones(n, bool), np.ones(n, bool)
    while running.any():
        who = np.flatnonzero(running)
        clock[who] += rng.exponential(1 / lam[who])
        after = clock[who] > T[who]
        running[who[after]] = False  # for the alive, clock is now their first purchase after T
        buyers = who[~after]
        x[buyers] += 1
        t_x[buyers] = clock[buyers]
        dropped = buyers[rng.uniform(size=len(buyers)) < p[buyers]]
        alive[dropped] = running[dropped] = False
    return x, t_x, alive, alive & (clock <= T + t)


def test_predictions_agree_with_a_monte_carlo_simulation_of_the_model():
    rng = np.random.default_rng(7)
    params = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # the CDNOW sample's fit
    T = rng.uniform(1.0, 39.0, 200_000)
    x, t_x, alive, bought = simulate(*params.values(), T, 39.0, rng)
    model = fitted(**params)
    p_any = model.p_any_purchase(39.0, x, t_x, T)
    p_alive = model.p_alive(x, t_x, T)
    groups = np.digitize(x, [1, 2, 3, 5, 9])  # x = 0, 1, 2, 3-4, 5-8, 9+
    for g in np.unique(groups):
        rows = groups == g
        for predicted, observed in ((p_any, bought), (p_alive, alive)):
            se = np.sqrt(predicted[rows].mean() * (1 - predicted[rows].mean()) / rows.sum())
            assert abs(predicted[rows].mean() - observed[rows].mean()) < 4 * se + 1e-3, (g, rows.sum())
    # The same check catches a wrong formula: the Gamma posterior's rate at t_x instead of T.
    wrong = p_alive * -np.expm1(-(0.243 + x) * np.log1p(39.0 / (4.414 + t_x)))
    assert abs(wrong[x > 0].mean() - bought[x > 0].mean()) > 0.02
    # And the fit recovers the parameters it was simulated from (on 50,000 customers, for time).
    refit = BetaGeoModel().fit(x[:50_000], t_x[:50_000], T[:50_000])
    for name, value in params.items():
        assert refit.params_[name] == pytest.approx(value, rel=0.15), name


def test_expected_purchases_closed_form_quadrature_and_the_published_total(cdnow_sample_inputs):
    inputs = cdnow_sample_inputs
    model = fitted()
    x, t_x, T = (inputs[c].to_numpy() for c in ("frequency", "recency", "T"))
    expected, fell_back = model.expected_purchases(39.0, x, t_x, T, return_fallback=True)
    assert not fell_back.any()
    by_quadrature = model.p_alive(x, t_x, T) * model._expected_if_alive_by_quadrature(39.0, x, T)
    np.testing.assert_allclose(expected, by_quadrature, rtol=1e-5)
    # Fader, Hardie & Lee: about 1,652 repeat transactions predicted for the 39-week holdout.
    assert expected.sum() == pytest.approx(1652, rel=0.005)


# (x, t_x, T, t) and P(alive) times the paper's equation 10 with CDNOW's published parameters,
# in 50-digit arithmetic (mpmath's hyp2f1 of the formula as printed). Computed from the formula
# as printed in double precision (scipy's 2F1 of r+x and b+x) the x = 10 row gave 141.5, the
# x = 20 row 36.75 (as P(alive) 1 if alive), the x = 80 row was 1.5% low, and none fell back.
EQUATION_10_REFERENCES = [
    ((0, 0.0, 39.0, 39.0), 0.19453072170326547),
    ((2, 30.43, 38.86, 39.0), 1.2260281747671445),
    ((10, 1.0, 1.0, 200.0), 57.745938638934069),
    ((20, 30.0, 39.0, 200.0), 8.5824653689726706),
    ((46, 37.0, 39.0, 39.0), 27.847972231305779),
    ((80, 77.0, 78.0, 39.0), 31.656118061991211),
    ((150, 1.0, 1.0, 1.0), 25.803702225734181),
    ((2000, 38.99, 39.0, 39.0), 1370.4735643708429),
]


@pytest.mark.parametrize("history, reference", EQUATION_10_REFERENCES)
def test_expected_purchases_equal_fifty_digit_references(history, reference):
    x, t_x, T, t = history
    expected, fell_back = fitted().expected_purchases(t, [float(x)], [t_x], [T], return_fallback=True)
    assert expected[0] == pytest.approx(reference, rel=1e-12) and not fell_back[0]


def test_expected_purchases_stay_within_their_bounds_and_fall_back_near_a_equal_one():
    x = np.array([0.0, 1.0, 50.0, 300.0, 2000.0])
    t_x = np.array([0.0, 30.0, 38.0, 38.9, 38.99])
    T = np.full(5, 39.0)
    for params in ({}, {"b": 1e6}, {"a": 1.0}):  # large x; b -> infinity; a = 1 divides by 0
        model = fitted(**params)
        expected, fell_back = model.expected_purchases(39.0, x, t_x, T, return_fallback=True)
        assert np.isfinite(expected).all() and fell_back.all() == (params == {"a": 1.0}), params
        alive = model.p_alive(x, t_x, T)
        upper = alive * (model.r_ + x) * 39.0 / (model.alpha_ + T)  # no dropout at all
        lower = model.p_any_purchase(39.0, x, t_x, T)  # at least one purchase
        assert (expected <= upper * (1 + 1e-9)).all() and (expected >= lower * (1 - 1e-9)).all(), params
    # Just off a = 1 the closed form works for small x and agrees with the fallback at a = 1.
    np.testing.assert_allclose(
        fitted(a=1.0).expected_purchases(39.0, x[:2], t_x[:2], T[:2]),
        fitted(a=1.0 + 1e-6).expected_purchases(39.0, x[:2], t_x[:2], T[:2]),
        rtol=1e-4,
    )


def test_degenerate_histories_are_fitted_flagged_and_predicted_without_nan():
    # Nobody bought twice: no rate or dropout to estimate.
    zeros = BetaGeoModel().fit(np.zeros(50), np.zeros(50), np.linspace(1, 20, 50))
    assert any("nobody made a repeat purchase" in f for f in zeros.flags_)
    p = zeros.p_any_purchase(13.0, np.zeros(3), np.zeros(3), np.array([1.0, 5.0, 20.0]))
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    # Everyone's last purchase is at the end of a short history: no sign of dropout (b -> inf
    # or a -> 0), P(alive) is 1.
    rng = np.random.default_rng(3)
    x = rng.integers(1, 6, 400).astype(float)
    T = rng.uniform(4.0, 12.0, 400)
    silent = BetaGeoModel().fit(x, T, T)
    assert any("no evidence of dropout" in f for f in silent.flags_), silent.flags_
    assert silent.p_alive(x, T, T).min() > 0.99
    expected = silent.expected_purchases(13.0, x, T, T)
    assert np.isfinite(expected).all() and (expected > 0).all()


def test_bad_histories_are_refused_with_a_message():
    model = BetaGeoModel()
    with pytest.raises(ValueError, match="recency is later than T"):
        model.fit([1, 2], [5.0, 3.0], [4.0, 6.0])
    with pytest.raises(ValueError, match="a value is missing"):
        model.fit([1, np.nan], [1.0, 1.0], [4.0, 6.0])
    with pytest.raises(ValueError, match="frequency is negative or not a whole number"):
        model.fit([1.5], [1.0], [4.0])
    with pytest.raises(ValueError, match="frequency > 0 with recency 0"):
        model.fit([2], [0.0], [4.0])
    with pytest.raises(ValueError, match="differ in length: 2, 1, 1"):
        model.fit([1, 2], [1.0], [4.0])
    with pytest.raises(ValueError, match="at least one customer"):
        model.fit([], [], [])
    with pytest.raises(ValueError, match="horizon t must be a positive number"):
        fitted().p_any_purchase(0, [1], [1.0], [2.0])


def test_btyd_inputs_from_the_value_features_by_hand():
    features = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "active_days_lifetime": [3, 1, 0],
            "days_since_first_purchase": [71.0, 8.0, np.nan],  # first purchase 71 days before the cutoff
            "days_since_last_purchase": [1.0, 8.0, np.nan],  # a: bought the day before the cutoff
        }
    )
    inputs = btyd_inputs(features)
    np.testing.assert_allclose(inputs.iloc[0], [2, 70 / 7, 70 / 7])  # last purchase on the last day: t_x = T
    np.testing.assert_allclose(inputs.iloc[1], [0, 0, 1.0])
    assert inputs.iloc[2].isna().all()  # no purchase yet
    with pytest.raises(ValueError, match="need the value features"):
        btyd_inputs(features.drop(columns="active_days_lifetime"))


def test_classifier_scores_buyers_by_p_any_purchase_and_non_buyers_zero():
    rng = np.random.default_rng(5)
    T_days = rng.integers(10, 300, 500)
    x, t_x, _, _ = simulate(0.5, 20.0, 0.8, 2.5, (T_days - 1) / 7.0, 13.0, rng)
    last = np.maximum(T_days - np.round(t_x * 7).astype(int), 1)
    features = pd.DataFrame(
        {
            "active_days_lifetime": np.r_[x + 1, 0],
            "days_since_first_purchase": np.r_[T_days, np.nan],
            "days_since_last_purchase": np.r_[np.where(x > 0, last, T_days), np.nan],
        }
    )
    classifier = clone(BGNBDClassifier(horizon_days=91)).fit(features)
    proba = classifier.predict_proba(features)
    inputs = btyd_inputs(features).iloc[:-1]
    np.testing.assert_allclose(
        proba[:-1, 1], classifier.model_.p_any_purchase(13.0, inputs["frequency"], inputs["recency"], inputs["T"])
    )
    assert proba[-1, 1] == 0.0 and np.allclose(proba.sum(axis=1), 1.0)
    assert classifier.get_params() == {"horizon_days": 91, "unit_days": 7.0}


def test_classifier_expected_purchases_are_the_models_and_zero_without_a_purchase():
    features = pd.DataFrame(
        {
            "active_days_lifetime": [3, 1, 0],
            "days_since_first_purchase": [71.0, 8.0, np.nan],
            "days_since_last_purchase": [1.0, 8.0, np.nan],
        }
    )
    classifier = BGNBDClassifier(horizon_days=70)
    classifier.model_ = fitted()
    expected = classifier.expected_purchases(features)
    np.testing.assert_allclose(expected[:2], fitted().expected_purchases(10.0, [2, 0], [10.0, 0.0], [10.0, 1.0]))
    assert expected[2] == 0.0


def test_the_btyd_frequency_feature_is_no_persona_dimension():
    # It repeats orders_lifetime; clustering on both moved the planted personas' k from 8 to 9
    # and their adjusted Rand index from 0.889 to 0.857 (20,000 customers, seed 3).
    from models.persona_profile import persona_feature_columns

    assert persona_feature_columns(["active_days_lifetime", "orders_lifetime", "spend_lifetime"]) == [
        "orders_lifetime",
        "spend_lifetime",
    ]


def test_a_search_that_did_not_converge_is_said_in_words():
    from scipy.optimize import OptimizeResult

    from models.likelihood import not_converged

    assert not_converged(OptimizeResult(message="ABNORMAL: ")) == (
        "the optimiser stopped without converging: the line search failed (a flat likelihood: too few customers "
        "who bought again?)"
    )
    assert not_converged(OptimizeResult(message="STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT")).endswith(
        "it ran out of iterations"
    )


SPAN = (
    "cannot be more than days_since_first_purchase - days_since_last_purchase + 1 "
    "(the days from the first purchase to the last)"
)


def test_rows_that_are_no_purchase_history_are_named_with_the_feature_at_fault():
    rows = pd.DataFrame(
        {
            "active_days_lifetime": [3, 0, np.nan, 2.5, 2, 1, 2, 1, 4, 1, 1e12, 280],
            "days_since_first_purchase": [90, np.nan, 5, 90, np.nan, 0, 30, 10, 40, 7, 289, 289],
            "days_since_last_purchase": [10, np.nan, 9, 10, 3, 0, 60, 10, 40, 7, 10, 10],
        }
    )
    assert history_row_problems(rows) == [
        (3, "active_days_lifetime", "must be a whole number"),
        (4, "days_since_first_purchase", "is needed when active_days_lifetime is above 0"),
        (5, "days_since_first_purchase", "must be at least 1 (a purchase is before the cutoff)"),
        (
            6,
            "days_since_last_purchase",
            "cannot be more than days_since_first_purchase: the last purchase is not older than the first",
        ),
        (8, "active_days_lifetime", SPAN),  # 4 days with a purchase, the first and the last one day
        (10, "active_days_lifetime", SPAN),  # 1e12 days between 289 and 10 days ago
    ]
    # rows 0, 7, 9 and 11 (a purchase every day from the first to the last) are histories, 1 and 2
    # have no purchase: btyd_inputs takes them all
    fine = rows.iloc[[0, 1, 2, 7, 9, 11]]
    assert history_row_problems(fine) == []
    inputs = btyd_inputs(fine)
    BGNBDClassifier(horizon_days=30).fit(pd.concat([fine] * 3, ignore_index=True)).predict_proba(fine)
    assert inputs["frequency"].isna().tolist() == [False, True, True, False, False, False]
