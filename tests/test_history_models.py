"""History features (RFM ranks, BG/NBD outputs per cutoff) and the repurchase candidates: by
hand, point in time, the degenerate BG/NBD guarded, and scikit-learn's estimator contract."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from features.build import build_features
from models.history import (
    HISTORY_FEATURES,
    HistoryFeatures,
    add_history_features,
    fold_contributions,
    population_history,
    rank_reference,
    rfm_ranks,
)
from models.propensity import PropensityClassifier, SpendRegressor
from models.repurchase import BGNBDRepurchase, LogisticRepurchase, RankBlend
from portrait.dataset import Dataset

FAST = {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 20, "verbose": -1}


def value_frame(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Value features of ``n`` customers (a tenth never bought) and a label that follows
    frequency and recency."""
    rng = np.random.default_rng(seed)
    bought = rng.random(n) > 0.1
    first = rng.integers(30, 300, n).astype(float)
    active = np.where(bought, rng.integers(1, 12, n), 0)
    last = np.where(active > 1, np.floor((first - 1) * rng.random(n)) + 1, first)
    frame = pd.DataFrame(
        {
            "days_since_first_purchase": np.where(bought, first, np.nan),
            "days_since_last_purchase": np.where(bought, last, np.nan),
            "active_days_lifetime": active,
            "orders_lifetime": active,
            "spend_lifetime": active * rng.gamma(2.0, 20.0, n),
            "orders_per_month_of_tenure": np.where(bought, active / np.maximum(first, 30.4375) * 30.4375, np.nan),
            "recency_share_of_tenure": np.where(bought, last / first, np.nan),
        }
    )
    logit = 0.4 * active - 0.02 * np.nan_to_num(last, nan=300) + rng.normal(0, 0.5, n)
    return frame, (logit > np.median(logit)).astype(int)


def test_rfm_ranks_by_hand():
    frame = pd.DataFrame(
        {
            "days_since_last_purchase": [5.0, 20.0, 20.0, np.nan],
            "orders_lifetime": [3, 1, 2, 0],
            "spend_lifetime": [30.0, 10.0, 50.0, 0.0],
        }
    )
    ranks = rfm_ranks(frame)
    # recency: 5 days is best (1), the two at 20 days share ranks 1 and 2 (0.5 of 3 each: 1.5/3)
    np.testing.assert_allclose(ranks["rfm_recency_rank"], [1.0, 0.5, 0.5, 0.0])
    np.testing.assert_allclose(ranks["rfm_frequency_rank"], [1.0, 1 / 3, 2 / 3, 0.0])
    np.testing.assert_allclose(ranks["rfm_monetary_rank"], [2 / 3, 1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(ranks["rfm_score"], [8 / 3, 7 / 6, 13 / 6, 0.0])
    # ranked against the population's own reference: the same numbers
    against = rfm_ranks(frame, rank_reference(frame))
    pd.testing.assert_frame_equal(ranks, against)
    # a customer beyond every reference value is at the top, 1, not 1 + 0.5 / n (an RFM score of 3.5)
    best = pd.DataFrame({"days_since_last_purchase": [0.0], "orders_lifetime": [50], "spend_lifetime": [1000.0]})
    np.testing.assert_allclose(rfm_ranks(best, rank_reference(frame)).iloc[0].tolist(), [1.0, 1.0, 1.0, 3.0])


def test_each_cutoff_is_its_own_population():
    a, _ = value_frame(300, seed=1)
    b, _ = value_frame(300, seed=2)
    stacked = pd.concat(
        [a.assign(cutoff=pd.Timestamp("2024-01-01")), b.assign(cutoff=pd.Timestamp("2024-02-01"))], ignore_index=True
    )
    with_history, _ = add_history_features(stacked, 30)
    alone, _ = population_history(b, 30)
    np.testing.assert_allclose(with_history[list(HISTORY_FEATURES)].iloc[300:].to_numpy(), alone.to_numpy())


def test_history_features_read_nothing_at_or_after_the_cutoff():
    columns = ["order_id", "customer_id", "ts", "amount", "quantity", "category", "brand", "channel"]
    rows = [
        (
            f"o{c}{i}",
            f"c{c}",
            f"2024-0{1 + i % 2}-{3 + (c * 7 + i * 5) % 25:02d} 10:00:00",
            10.0 + c,
            1,
            "x",
            "y",
            "web",
        )
        for c in range(40)
        for i in range(1 + c % 4)
    ]
    later = [(f"l{c}", f"c{c}", "2024-03-02 10:00:00", 99.0, 1, "x", "y", "web") for c in range(0, 40, 3)]
    before = build_features(Dataset.from_frames(purchases=pd.DataFrame(rows, columns=columns)), "2024-03-01")
    leaked = build_features(Dataset.from_frames(purchases=pd.DataFrame(rows + later, columns=columns)), "2024-03-01")
    pd.testing.assert_frame_equal(population_history(before, 30)[0], population_history(leaked, 30)[0])


def test_a_degenerate_bgnbd_fit_is_flagged_and_its_outputs_stay_finite():
    # two weeks of history, nobody drops out: the fit drifts to the NBD (b -> infinity)
    n = 300
    rng = np.random.default_rng(3)
    active = rng.integers(1, 4, n)
    frame = pd.DataFrame(
        {
            "days_since_first_purchase": np.full(n, 14.0),
            "days_since_last_purchase": np.where(active > 1, rng.integers(1, 5, n), 14).astype(float),
            "active_days_lifetime": active,
            "orders_lifetime": active,
            "spend_lifetime": active * 10.0,
        }
    )
    history, flags = population_history(frame, 90)
    assert flags and any("dropout" in f or "bound" in f for f in flags)
    assert np.isfinite(history.to_numpy()).all()
    assert (history["bgnbd_p_alive"] > 0.9).all()
    # nobody has bought: no fit, missing BG/NBD outputs, zero ranks
    nobody = frame.assign(active_days_lifetime=0, orders_lifetime=0, spend_lifetime=0.0)
    history, flags = population_history(nobody, 90)
    assert flags == ("nobody has bought yet",)
    assert history["bgnbd_p_any"].isna().all() and (history["rfm_score"] == 0).all()


def test_a_small_frame_is_ranked_and_scored_against_the_reference_population():
    frame, _ = value_frame(600)
    history = HistoryFeatures(horizon_days=30).fit(frame)
    whole = history.transform(frame)
    few = history.transform(frame.head(5))  # five customers are no population
    np.testing.assert_allclose(
        few[list(HISTORY_FEATURES)].to_numpy(), whole[list(HISTORY_FEATURES)].head(5).to_numpy(), atol=1e-9
    )


def test_folded_contributions_keep_the_row_sums_and_name_catalogue_features():
    contributions = pd.DataFrame({"orders_lifetime": [0.1, -0.2], "rfm_score": [0.3, 0.6], "bgnbd_p_any": [0.3, 0.0]})
    columns = ["orders_lifetime", "days_since_last_purchase", "spend_lifetime", "active_days_lifetime"]
    folded = fold_contributions(contributions, columns)
    assert list(folded.columns) == columns
    np.testing.assert_allclose(folded.sum(axis=1), contributions.sum(axis=1))
    # rfm_score splits over its three inputs; bgnbd over the two of its inputs present here
    np.testing.assert_allclose(folded["spend_lifetime"], [0.1, 0.2])
    np.testing.assert_allclose(folded["orders_lifetime"], [0.1 + 0.1, -0.2 + 0.2], atol=1e-12)
    np.testing.assert_allclose(folded["active_days_lifetime"], [0.15, 0.0], atol=1e-12)


ESTIMATORS = [
    PropensityClassifier(params=FAST, horizon_days=30, monotone=True),
    LogisticRepurchase(horizon_days=30),
    BGNBDRepurchase(horizon_days=30),
    RankBlend(weight=0.0, horizon_days=30),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_candidates_follow_the_estimator_contract(estimator):
    frame, y = value_frame(500)
    name = type(estimator).__name__
    check_no_attributes_set_in_init(name, estimator)
    check_get_params_invariance(name, estimator)
    check_set_params(name, clone(estimator))
    check_parameters_default_constructible(name, estimator)
    before = clone(estimator).get_params()
    fitted = clone(estimator).fit(frame, y)
    assert fitted.get_params() == before  # fit changes no constructor parameter (params stays as given)
    p = fitted.predict_proba(frame)
    assert p.shape == (len(frame), 2) and np.all((p >= 0) & (p <= 1))
    contributions = fitted.contributions(frame.head(50))
    assert list(contributions.columns) == list(frame.columns)  # reasons name catalogue features only
    # a row's contributions are the same whichever rows are explained with it (a page of a list):
    # BG/NBD and the blend measured each row against the batch's mean, and a page's last rows
    # got no reasons, a one-row page none from the RFM ranks
    alone = pd.concat([fitted.contributions(frame.iloc[[i]]) for i in range(5)])
    pd.testing.assert_frame_equal(alone, contributions.head(5), check_exact=False, atol=1e-9)
    scores = cross_val_score(Pipeline([("model", clone(estimator))]), frame, y, cv=2, scoring="roc_auc")
    assert np.all(scores > 0.6)
    # fitted on a training frame with the history computed ahead and the cutoff, it still
    # names only catalogue features in its reasons and scores the catalogue frame serving passes
    ahead, _ = add_history_features(frame.assign(cutoff=pd.Timestamp("2024-01-01")), 30)
    trained = clone(estimator).fit(ahead, y)
    assert list(trained.contributions(frame.head(20)).columns) == list(frame.columns)
    # the catalogue frame is ranked against the reference (the rows fitted on, without the
    # internal validation split), the frame computed ahead against itself: nearly the same
    served, ahead_scores = trained.predict_proba(frame)[:, 1], trained.predict_proba(ahead)[:, 1]
    assert pd.Series(served).corr(pd.Series(ahead_scores), method="spearman") > 0.98


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_classifiers_answer_in_the_labels_they_were_given(estimator):
    """scikit-learn's contract: labels other than 0/1 are kept in ``classes_`` and ``predict``
    answers in them (labels 1/2 gave every customer a probability of 1; 'no'/'yes' made
    ``predict`` answer 0/1, so accuracy was NaN)."""
    frame, y = value_frame(500)
    for labels in (np.array([1, 2]), np.array(["no", "yes"])):
        # BG/NBD and the RFM score learn their labels from the validation rows they calibrate on
        fitted = clone(estimator).fit(frame, labels[y], X_valid=frame, y_valid=labels[y])
        assert fitted.classes_.tolist() == labels.tolist()
        as_01 = clone(estimator).fit(frame, y, X_valid=frame, y_valid=y)
        np.testing.assert_allclose(fitted.predict_proba(frame), as_01.predict_proba(frame))
        assert (fitted.predict(frame) == labels[as_01.predict(frame)]).all()


@pytest.mark.parametrize(
    ("estimator", "target", "message"),
    [
        (PropensityClassifier(params=FAST), "one class", r"y must hold two classes .* got 1: \[1\]"),
        (LogisticRepurchase(), "one class", r"y must hold two classes"),
        (PropensityClassifier(params=FAST), "missing", r"Input y contains NaN \(3 rows\)"),
        (SpendRegressor(params=FAST), "missing", r"Input y contains NaN \(3 rows\)"),
        (LogisticRepurchase(), "empty", "no rows to fit"),
        (BGNBDRepurchase(), "empty", "no rows to fit: X is empty"),
        (SpendRegressor(params=FAST), "empty", "no rows to fit"),
    ],
)
def test_a_target_that_cannot_be_learned_is_refused_at_fit(estimator, target, message):
    """A spend target with missing values was learned as if they were not there (the mean
    prediction fell from 460 to 250); one class gave 0.999999 to everyone; an empty frame
    divided by zero, or fitted and failed at predict."""
    frame, y = value_frame(200)
    if target == "one class":
        y = np.ones(len(frame), dtype=int)
    elif target == "missing":
        y = y.astype(float)
        y[:3] = np.nan
    else:
        frame, y = frame.iloc[:0], y[:0]
    with pytest.raises(ValueError, match=message):
        clone(estimator).fit(frame, y)


def test_an_unfitted_candidate_says_it_is_not_fitted():
    from sklearn.exceptions import NotFittedError

    frame, _ = value_frame(50)
    for estimator in ESTIMATORS:
        with pytest.raises(NotFittedError, match="not fitted yet"):
            clone(estimator).predict_proba(frame)


def test_params_none_stays_none_after_fit():
    frame, y = value_frame(400)
    model = PropensityClassifier(params=None).fit(frame, y)
    assert model.params is None
    spend = SpendRegressor(params=None).fit(frame, y.astype(float))
    assert spend.params is None


def test_the_lightgbm_candidate_is_monotone_in_recency_and_frequency():
    frame, y = value_frame(800)
    model = PropensityClassifier(params=FAST, horizon_days=30, monotone=True).fit(frame, y)
    row = frame[frame["orders_lifetime"] > 0].head(1)
    more_orders = pd.concat([row.assign(orders_lifetime=k, active_days_lifetime=k) for k in (1, 3, 6, 10)])
    later = pd.concat([row.assign(days_since_last_purchase=d) for d in (1.0, 10.0, 50.0, 100.0)])
    reference = model.history_
    # history features of a one-row frame come from the reference population, so these are comparable
    assert reference is not None
    p_orders = model.predict_uncalibrated(more_orders)
    p_later = model.predict_uncalibrated(later)
    assert np.all(np.diff(p_later) <= 1e-12)
    assert p_orders[-1] >= p_orders[0] - 1e-12


def test_a_blend_needs_its_base_and_a_weight_between_0_and_1():
    frame, y = value_frame(300)
    with pytest.raises(ValueError, match="weight must be between 0 and 1, got 1.5"):
        RankBlend(weight=1.5).fit(frame, y)
    with pytest.raises(ValueError, match="a blend with weight > 0 needs a fitted base classifier"):
        RankBlend(weight=0.5).fit(frame, y)
    with pytest.raises(ValueError, match="give both X_valid and y_valid, or neither"):
        PropensityClassifier(params=FAST).fit(frame, y, X_valid=frame)


def test_the_task_owns_prediction_and_the_headline_metric():
    from models.task import CLASSIFICATION, REGRESSION, task_for_label

    frame, y = value_frame(300)
    assert task_for_label("repurchase") is CLASSIFICATION and task_for_label("high_value") is CLASSIFICATION
    assert task_for_label("future_spend") is REGRESSION
    assert (CLASSIFICATION.headline_metric, REGRESSION.headline_metric) == ("holdout_roc_auc", "holdout_gini")
    model = LogisticRepurchase(horizon_days=30).fit(frame, y)
    np.testing.assert_allclose(CLASSIFICATION.predict(model, frame), model.predict_proba(frame)[:, 1])
    with pytest.raises(
        ValueError, match=r"label must be one of \['future_spend', 'high_value', 'repurchase'\], got 'churn'"
    ):
        task_for_label("churn")


def test_the_model_card_is_typed_and_refuses_what_does_not_fit():
    from models.task import ModelCard

    card = dict(
        name="m",
        label="repurchase",
        horizon_days=30,
        features=["orders_lifetime"],
        families=["value"],
        feature_config={},
        vocabulary={},
        descriptions={},
        meanings={},
        holdout_cutoff="2024-12-01",
        headline_metric="holdout_roc_auc",
        metrics={"holdout_roc_auc": np.float64(0.8)},
    )
    written = ModelCard(**card)
    assert written.task == "classification" and written.model_type == "lightgbm"
    import json

    assert ModelCard.from_dict(json.loads(written.to_json())) == ModelCard(
        **{**card, "metrics": {"holdout_roc_auc": 0.8}}
    )
    with pytest.raises(ValueError, match=r"model card: unknown keys \['colour'\]"):
        ModelCard.from_dict({**card, "colour": "red"})
    with pytest.raises(
        ValueError, match="headline metric 'holdout_gini', the classification task's is 'holdout_roc_auc'"
    ):
        ModelCard(**{**card, "headline_metric": "holdout_gini"})


def test_a_large_batch_predicts_on_every_core_with_the_same_scores(monkeypatch):
    import os

    import models.propensity as propensity

    assert propensity.prediction_threads(10) == 1
    assert propensity.prediction_threads(10**6) == (os.cpu_count() or 1)
    frame, y = value_frame(500)
    model = PropensityClassifier(params=FAST).fit(frame, y)
    spend = SpendRegressor(params=FAST).fit(frame, y.astype(float))
    one_thread = model.predict_proba(frame)[:, 1], spend.predict(frame)
    monkeypatch.setattr(propensity, "PARALLEL_PREDICT_ROWS", 10)  # this frame counts as large
    np.testing.assert_array_equal(model.predict_proba(frame)[:, 1], one_thread[0])
    np.testing.assert_array_equal(spend.predict(frame), one_thread[1])


def test_the_members_of_an_average_share_one_input_matrix_and_score_as_each_alone():
    from models.propensity import SharedInputs, numeric_matrix
    from models.repurchase import AveragedClassifier, AveragedRegressor

    frame, y = value_frame(600)
    colours = np.array(["red", "green", "blue", None], dtype=object)
    frame["favourite_colour"] = pd.Categorical(colours[np.arange(600) % 4], categories=["blue", "green", "red"])
    # two members with their own reference populations (trained on different customers), as a
    # cross-fit's folds are
    halves = [np.arange(600) % 2 == k for k in (0, 1)]
    members = [
        PropensityClassifier(params=FAST, horizon_days=30).fit(frame[rows], y[rows], frame[~rows], y[~rows])
        for rows in halves
    ]
    assert (
        members[0].history_.reference_["spend_lifetime"].tolist()
        != members[1].history_.reference_["spend_lifetime"].tolist()
    )
    scored = frame.head(200).copy()
    scored.loc[0, "favourite_colour"] = np.nan
    scored["favourite_colour"] = scored["favourite_colour"].cat.add_categories(["purple"])
    scored.loc[1, "favourite_colour"] = "purple"  # unseen in training: missing, as LightGBM reads it
    alone = [m.predict_proba(scored)[:, 1] for m in members]
    # the matrix is what LGBMClassifier makes of the frame
    prepared = members[0]._prepare(scored)
    np.testing.assert_array_equal(
        members[0].booster_.booster_.predict(numeric_matrix(prepared)),
        members[0].booster_.predict_proba(prepared)[:, 1],
    )
    average = AveragedClassifier(members=members).fit()
    np.testing.assert_array_equal(average.predict_proba(scored)[:, 1], np.mean(alone, axis=0))
    shared = SharedInputs()
    members[0].predict_proba(scored, shared=shared)
    built = shared.matrix
    np.testing.assert_array_equal(members[1].predict_proba(scored, shared=shared)[:, 1], alone[1])
    assert shared.matrix is built  # the second member rewrote its history columns, nothing else
    spenders = [SpendRegressor(params=FAST).fit(frame[rows], y[rows].astype(float)) for rows in halves]
    np.testing.assert_array_equal(
        AveragedRegressor(members=spenders).fit().predict(scored),
        np.mean([s.predict(scored) for s in spenders], axis=0),
    )
