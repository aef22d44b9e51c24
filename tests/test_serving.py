"""Serving on small synthetic data: batch scores, atomic writes, lists, filters and the API."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from marketing.filters import FilterError, evaluate, parse_filter
from models.btyd import BTYD_FEATURES
from portrait.dataset import open_dataset
from portrait.errors import PortraitError
from portrait.outputs import LATEST, MODEL_LABELS, latest_scores
from serving.api import build_app
from serving.lists import build_list
from serving.score import score
from serving.settings import ServeSettings
from training.config import parse_experiment
from training.personas import PersonaConfig, run_persona_fit
from training.registry import promote
from training.train import train_experiment

AS_OF = "2025-01-01"
MODEL = "serve_repurchase_30d"


def create_app(scores_dir, **settings):
    """The app over ``scores_dir`` as portrait serve builds it (other settings by name)."""
    return build_app(ServeSettings(scores=scores_dir, **settings))


@pytest.fixture(scope="module")
def registered(tracking, small_synthetic):
    config = parse_experiment(
        {
            "name": MODEL,
            "data": {"path": str(small_synthetic)},
            "cutoffs": {"rule": "monthly", "count": 3},
            "label": {"kind": "repurchase", "horizon_days": 30},
            "model": {"n_estimators": 100, "learning_rate": 0.1, "early_stopping_rounds": 20},
            "validation": {"folds": 2},  # a cross-fit over two folds of customers keeps the tests fast
        }
    )
    train_experiment(config)
    promote(MODEL)
    personas = PersonaConfig("serve_personas", str(small_synthetic), k=5)
    run_persona_fit(personas)
    promote("serve_personas")
    return small_synthetic


@pytest.fixture(scope="module")
def scored(registered, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores")
    run = score(open_dataset(registered), AS_OF, [MODEL, "serve_personas"], out, validate_first=False)
    return out, run


def test_scores_table_has_every_column_and_a_summary(scored):
    out, run = scored
    table = pd.read_parquet(run.scores_file)
    expected = {
        "customer_id",
        "as_of",
        f"{MODEL}_score",
        f"{MODEL}_percentile",
        f"{MODEL}_decile",
        f"{MODEL}_version",
        "persona_id",
        "persona_name",
        "personas_version",
    }
    assert expected <= set(table.columns)
    assert table[f"{MODEL}_percentile"].between(0, 100).all()
    assert set(table[f"{MODEL}_decile"]) == set(range(1, 11))
    assert table["customer_id"].is_unique
    assert (out / LATEST).read_text() == run.scores_file.name
    assert set(run.summary["models"][MODEL]["drift"]) == {"flagged", "warnings", "features_checked"}
    assert "note" not in run.summary["models"][MODEL]  # scored after everything the model learned from


def test_scores_before_the_models_holdout_say_the_model_knew_what_came_next(registered, tmp_path):
    import datetime as dt

    from serving.registry import load_model

    model = load_model(MODEL)
    until = dt.date.fromisoformat(model.meta["learned_until"])  # its last training cutoff + 30 days
    assert until <= dt.date.fromisoformat(model.meta["holdout_cutoff"])
    earlier = until - dt.timedelta(days=1)
    run = score(open_dataset(registered), earlier.isoformat(), [MODEL], tmp_path, validate_first=False)
    assert run.summary["models"][MODEL]["note"] == (
        f"{MODEL} v{model.version} learned from purchases up to and including {earlier}; its scores as of "
        f"{earlier} read only those before {earlier}, so they know what came next (use them for lists, not to "
        "judge the model)"
    )
    on_time = score(open_dataset(registered), until.isoformat(), [MODEL], tmp_path, validate_first=False)
    assert "note" not in on_time.summary["models"][MODEL]


def test_rerunning_an_as_of_date_replaces_its_table_with_the_same_scores(registered, scored):
    out, run = scored
    before = pd.read_parquet(run.scores_file)
    again = score(open_dataset(registered), AS_OF, [MODEL, "serve_personas"], out, validate_first=False)
    pd.testing.assert_frame_equal(before, pd.read_parquet(again.scores_file))
    assert sorted(p.name for p in out.glob("*.tmp")) == []


def test_an_interrupted_write_leaves_the_previous_table_whole(registered, scored, monkeypatch):
    out, run = scored
    before = pd.read_parquet(run.scores_file)
    real_to_parquet = pd.DataFrame.to_parquet

    def interrupted(self, path, *args, **kwargs):
        if "scores_" in str(path):
            with open(path, "wb") as handle:
                handle.write(b"PAR1 half a table")
            raise KeyboardInterrupt("interrupted while writing")
        return real_to_parquet(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        score(open_dataset(registered), AS_OF, [MODEL], out, validate_first=False)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(before, pd.read_parquet(run.scores_file))
    assert (out / LATEST).read_text() == run.scores_file.name
    # and the features beside them are still the previous scoring's: this one's were not published
    # before its scores (a worker paired them with the previous scores)
    from portrait.outputs import SCORING_TOKEN

    features = next(out.glob("features_*.parquet"))
    assert pd.read_parquet(features).attrs[SCORING_TOKEN] == before.attrs[SCORING_TOKEN]


def test_a_registry_that_does_not_exist_is_named_and_not_created(tmp_path, monkeypatch):
    """MLflow creates an empty store at a mistyped path, and the job then said "train it first":
    advice that trains into the wrong store."""
    from serving.registry import load_model

    missing = tmp_path / "nowhere" / "mlflow.db"
    monkeypatch.setattr("mlflow.get_tracking_uri", lambda: f"sqlite:///{missing}")
    with pytest.raises(PortraitError, match=rf"the model registry {missing} does not exist .* nothing was created"):
        load_model("repurchase_90d")
    assert not missing.parent.exists()


def test_an_empty_store_file_is_refused_by_readers_and_writers_and_left_empty(tmp_path, monkeypatch):
    """A 0-byte mlflow.db (a full disk, a stray ``> mlflow.db``) became a new empty store: every
    command then said no model was registered, and a training wrote a new history over it."""
    from portrait.tracking import ensure_store, setup_tracking
    from serving.registry import load_model

    empty = tmp_path / "mlflow.db"
    empty.touch()
    message = rf"the MLflow store {empty} is empty \(0 bytes.*remove it to start a new store; nothing was written"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{empty}")
    with pytest.raises(PortraitError, match=message):
        setup_tracking()
    monkeypatch.setattr("mlflow.get_tracking_uri", lambda: f"sqlite:///{empty}")
    with pytest.raises(PortraitError, match=message):  # an API worker's read (Unavailable: a 503)
        load_model("repurchase_90d")
    with pytest.raises(PortraitError, match=message):  # emptied after the command started
        ensure_store()
    assert empty.stat().st_size == 0


def test_bad_requests_stop_before_anything_is_written(registered, tmp_path):
    out = tmp_path / "scores"
    with pytest.raises(PortraitError, match="no registered model named 'nosuch'"):
        score(open_dataset(registered), AS_OF, ["nosuch"], out, validate_first=False)
    with pytest.raises(PortraitError, match="has no version with alias 'gold'"):
        score(open_dataset(registered), AS_OF, [MODEL], out, alias="gold", validate_first=False)
    lacking = tmp_path / "no_customers"
    shutil.copytree(registered, lacking, ignore=shutil.ignore_patterns("customers.parquet"))
    with pytest.raises(
        PortraitError,
        match=r"needs \d+ feature\(s\) this data set does not provide: \['days_since_signup_date'.*those come "
        r"from the customers table: it or a column of it is missing, or a column is withheld now as personal data",
    ):
        score(open_dataset(lacking), AS_OF, [MODEL], out, validate_first=False)
    # a date before the data: nobody to score (LightGBM's "non empty" ValueError before)
    with pytest.raises(PortraitError, match="no customer has a purchase, event or signup before 1990-01-01"):
        score(open_dataset(registered), "1990-01-01", [MODEL], out, validate_first=False)
    # long after the data: every window empty, and the newest file, the one served (was written)
    with pytest.raises(PortraitError, match=r"days before 2030-01-01: every purchase window is empty"):
        score(open_dataset(registered), "2030-01-01", [MODEL], out, validate_first=False)
    with pytest.raises(PortraitError, match="cutoff 9999-12-31 is out of range"):
        score(open_dataset(registered), "9999-12-31", [MODEL], out, validate_first=False)
    with pytest.raises(PortraitError, match="no model to score with"):  # --models '' (a StopIteration)
        score(open_dataset(registered), AS_OF, [], out, validate_first=False)
    assert not out.exists()


def test_list_filters_ranks_and_reports_the_columns_used(scored):
    out, _ = scored
    scores, features = latest_scores(out)
    rows = build_list(
        scores,
        features,
        MODEL,
        top=20,
        where="spend_365d > 100 and days_since_last_purchase < 60",
        exclude_bought_within=3,
    )
    assert len(rows) == 20
    assert rows["score"].is_monotonic_decreasing
    assert (rows["spend_365d"] > 100).all() and rows["days_since_last_purchase"].between(4, 59).all()
    persona = scores["persona_name"].iloc[0]
    assert (build_list(scores, features, MODEL, persona=persona)["persona"] == persona).all()
    # a persona the scores do not hold is an error naming them (it was an empty list)
    with pytest.raises(PortraitError, match=rf"no persona 'No such' in the latest scores; personas: \[.*{persona}"):
        build_list(scores, features, MODEL, persona="No such")
    # Stored reasons are text about feature values (perhaps an attribute marked sensitive since):
    # not a filter's column, so they cannot come back through one.
    # RFM columns, as segments know them (the README promised them; they were unknown columns)
    from marketing.rfm import rfm_scores

    best = build_list(scores, features, MODEL, where="rfm_r >= 4 and rfm_group != 'Lost'")
    rfm = rfm_scores(features).set_index("customer_id").loc[best["customer_id"]]
    assert len(best) and (rfm["rfm_r"] >= 4).all() and (rfm["rfm_group"] != "Lost").all()
    assert best.columns[-2:].tolist() == ["rfm_r", "rfm_group"]  # the columns used, as for features
    with pytest.raises(FilterError, match=r"rfm_group has no value 'Champion'; did you mean 'Champions'\?"):
        build_list(scores, features, MODEL, where="rfm_group = 'Champion'")
    held = features["favourite_category"].dropna().iloc[0]
    with pytest.raises(FilterError, match="favourite_category"):  # off in case alone: a typo, not an empty list
        build_list(scores, features, MODEL, where=f"favourite_category = '{held.swapcase()}'")
    with_reasons = scores.assign(**{f"{MODEL}_reason_{i}": "gender: female" for i in (1, 2, 3)})
    with pytest.raises(FilterError, match=f"unknown column '{MODEL}_reason_1'"):
        build_list(with_reasons, features, MODEL, where=f"{MODEL}_reason_1 is not null")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            {"min_score": float("nan")},
            "minimum score (--min-score, min_score) must be a number, got nan",
        ),  # NaN passes any range check
        ({"min_percentile": float("nan")}, "(--min-percentile, min_percentile) must be from 0 to 100, got nan"),
        # a probability model's threshold above 1 or below 0 wrote an empty (or a whole) list, exit 0
        (
            {"min_score": 2},
            "(--min-score, min_score) 2 is outside 0 to 1: serve_repurchase_30d's scores are probabilities",
        ),
        ({"min_score": -0.5}, "min_score) -0.5 is outside 0 to 1"),
        (
            {"exclude_bought_within": 0},
            "(exclude_bought_within) must be a whole number of days from 1 to 36,600, got 0",
        ),
        (  # was taken, and written to the audit log as given
            {"exclude_bought_within": 10**20},
            "(exclude_bought_within) must be a whole number of days from 1 to 36,600, got 10000000000000000000...",
        ),
        ({"exclude_bought_within": -5}, "from 1 to 36,600, got -5"),
    ],
)
def test_list_thresholds_that_select_nothing_or_everything_by_accident_are_errors(scored, option, message):
    out, _ = scored
    scores, features = latest_scores(out)
    with pytest.raises(PortraitError, match=re.escape(message)):
        build_list(scores, features, MODEL, **option)


@pytest.mark.parametrize(
    "text, message",
    [
        ("spend_365d > 1; DROP TABLE purchases", "';' is not allowed"),
        ("spend_365d > 1 or 1 = (SELECT 1)", "is not a value"),
        ("customer_id IN (SELECT customer_id FROM purchases)", "not a query|not allowed"),
        ("__import__('os').system('ls') = 1", "not a value|not allowed"),
        ("lower(persona_name) = 'x'", r"lower\(\.\.\.\) is not a function a condition can use"),
        ("spendd_365d > 10", "unknown column 'spendd_365d'"),
        ("spend_365d >", "cannot parse condition"),
    ],
)
def test_filter_rejects_injection_and_unknown_columns(text, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(text, {"spend_365d", "persona_name", "customer_id"})


def test_filter_semantics_by_hand():
    frame = pd.DataFrame({"x": [1.0, 5.0, None], "p": ["a", "b", None]})
    columns = set(frame.columns)
    assert evaluate(parse_filter("x between 1 and 4 or p in ('b')", columns), frame).tolist() == [True, True, False]
    assert evaluate(parse_filter("not x > 2", columns), frame).tolist() == [True, False, False]  # unknown stays out


def test_api_serves_profiles_scores_lists_and_models(scored):
    out, run = scored
    client = TestClient(create_app(out))
    assert client.get("/health").json()["status"] == "ok"
    customer = run.scores["customer_id"].iloc[7]
    profile = client.get(f"/customers/{customer}", params={"reasons": "true"}).json()  # none stored
    batch = run.scores.set_index("customer_id").loc[customer]
    by_model = {entry["model"]: entry for entry in profile["scores"]["models"]}
    assert by_model[MODEL]["score"] == pytest.approx(batch[f"{MODEL}_score"], abs=0)
    assert profile["persona"]["name"] == batch["persona_name"]
    assert 1 <= len(by_model[MODEL]["reasons"]) <= 3
    assert all(": " in reason for reason in by_model[MODEL]["reasons"])  # "label: value"
    _, features = latest_scores(out)
    stored = features.set_index("customer_id").loc[customer]
    key = {entry["name"]: entry for entry in profile["key_features"]}
    assert key["spend_lifetime"]["label"] == "spend in all, net of refunds"
    assert key["spend_lifetime"]["value"] == pytest.approx(stored["spend_lifetime"])
    assert key["orders_90d"]["label"] == "orders in the last 90 days"
    # the profile reads the data set the scores were computed from, before the scores' date
    assert profile["as_of"] == AS_OF and profile["customer_id"] == customer
    last = profile["orders"]["last"]
    assert 1 <= len(last) <= 10 <= profile["orders"]["total"] or len(last) == profile["orders"]["total"]
    assert all(order["ts"] < AS_OF for order in last)
    assert [order["ts"] for order in last] == sorted((order["ts"] for order in last), reverse=True)
    assert client.get("/customers/nobody").status_code == 404
    for path in ("/customers/S%2F1", "/customers/S/1"):  # an id holding a "/" is looked up, not a missing route
        missing = client.get(path)
        assert missing.status_code == 404 and "S/1" in missing.json()["detail"], missing.json()
    assert client.get(f"/customers/{customer}/").json()["customer_id"] == customer  # the URL's slash
    assert "'nobody/'" in client.get("/customers/nobody%2F").json()["detail"]  # %2F is the id's
    assert client.get("/customers/").status_code == 422
    # NaN was "should be less than or equal to 100"
    for option in ("min_percentile", "min_score"):
        refused = client.get(f"/lists/{MODEL}", params={option: "nan"})
        assert refused.status_code == 422 and refused.json()["detail"][0]["msg"] == "Input should be a finite number"
    listed = client.get(f"/lists/{MODEL}", params={"top": 5, "where": "orders_365d >= 1"}).json()
    assert listed["count"] == 5 and listed["customers"][0]["score"] >= listed["customers"][-1]["score"]
    assert client.get(f"/lists/{MODEL}", params={"where": "1=1; drop"}).status_code == 422
    for hostile, message in (
        ("(" * 45 + "orders_365d > 1" + ")" * 45, "nests parentheses 45 deep"),
        ("not " * 100 + "orders_365d > 1", "100 'not's"),
        ("spend_365d between 'a' and 'z'", "compares text with a number"),
        ("customer_id = 1020", "quote the value"),
        ("lower(persona_name)", "lower(...) is not a function a condition can use"),
    ):
        answer = client.get(f"/lists/{MODEL}", params={"where": hostile})
        assert answer.status_code == 422 and message in answer.json()["detail"], hostile
    names = {m["name"] for m in client.get("/models").json()}
    assert {MODEL, "serve_personas"} <= names
    assert "/customers/{customer_id}" in client.get("/openapi.json").json()["paths"]


def test_api_scores_equal_batch_scores_for_the_same_customer(scored):
    out, run = scored
    client = TestClient(create_app(out))
    scores, features = latest_scores(out)
    from serving.registry import load_model

    model = load_model(MODEL)
    chosen = features.set_index("customer_id").loc[scores["customer_id"].iloc[:25], model.features]
    rows = [
        {k: (None if pd.isna(v) else (v if isinstance(v, str) else float(v))) for k, v in row.items()}
        for row in chosen.to_dict("records")
    ]
    response = client.post("/score", json={"model": MODEL, "rows": rows})
    assert response.status_code == 200, response.text
    api = np.array([s["score"] for s in response.json()["scores"]])
    batch = scores.set_index("customer_id").loc[chosen.index, f"{MODEL}_score"].to_numpy()
    np.testing.assert_array_equal(api, batch)


def test_score_answers_for_a_model_that_is_not_lightgbm(scored, monkeypatch):
    # Validation may register a rank blend of LightGBM and the RFM score (the demo's repurchase
    # champion): POST /score read LightGBM's categories_ from whatever model it had: a 500.
    import dataclasses

    import serving.state
    from models.repurchase import RankBlend
    from serving.registry import load_model

    out, _ = scored
    scores, features = latest_scores(out)
    lightgbm = load_model(MODEL)
    X = features[lightgbm.features].iloc[:400]
    y = (X["orders_lifetime"] > X["orders_lifetime"].median()).astype(int).to_numpy()
    blend = RankBlend(base=lightgbm.estimator, weight=0.5, horizon_days=30).fit(X, y)
    assert blend.categories_ == lightgbm.estimator.categories_
    monkeypatch.setattr(serving.state, "alias_version", lambda name, alias: lightgbm.version)
    monkeypatch.setattr(
        serving.state, "load_model_version", lambda name, v, alias: dataclasses.replace(lightgbm, estimator=blend)
    )
    client = TestClient(create_app(out))
    rows = [
        {k: (None if pd.isna(v) else (v if isinstance(v, str) else float(v))) for k, v in row.items()}
        for row in X.iloc[:3].to_dict("records")
    ]
    response = client.post("/score", json={"model": MODEL, "rows": rows})
    assert response.status_code == 200, response.text
    expected = blend.predict_proba(X.iloc[:3])[:, 1]
    np.testing.assert_allclose([s["score"] for s in response.json()["scores"]], expected, rtol=1e-12)
    bad = client.post("/score", json={"model": MODEL, "rows": [{**rows[0], "orders_lifetime": "many"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "orders_lifetime"
    # A count or a number of days below zero is no customer the model has seen; money may be (refunds).
    negative = {**rows[0], "orders_lifetime": -3, "days_since_last_purchase": -1.5, "spend_lifetime": -20.0}
    refused = client.post("/score", json={"model": MODEL, "rows": [negative]})
    assert refused.status_code == 422
    assert {e["loc"][-1]: e["msg"] for e in refused.json()["detail"]} == {
        "orders_lifetime": "must be 0 or more (a number of orders), not -3",
        "days_since_last_purchase": "must be 0 or more (a number of days), not -1.5",
    }


def test_a_model_that_reads_no_text_takes_the_feature_rows_as_written(scored, monkeypatch):
    """A logistic (or BG/NBD) model reads no text feature, but the rows a features table holds
    have text favourites and attributes: they are taken, as batch scoring takes them (they were
    refused as "must be a number, not text"); a number where the catalogue says text is not."""
    import dataclasses

    import serving.state
    from models.repurchase import LogisticRepurchase
    from serving.registry import load_model

    out, _ = scored
    _, features = latest_scores(out)
    lightgbm = load_model(MODEL)
    X = features[lightgbm.features].iloc[:400]
    y = (X["orders_lifetime"] > X["orders_lifetime"].median()).astype(int).to_numpy()
    logistic = LogisticRepurchase(horizon_days=30).fit(X, y)
    assert logistic.categories_ == {} and "favourite_category" in lightgbm.features
    monkeypatch.setattr(
        serving.state, "load_model_version", lambda name, v, alias: dataclasses.replace(lightgbm, estimator=logistic)
    )
    client = TestClient(create_app(out))
    rows = [
        {k: (None if pd.isna(v) else (v if isinstance(v, str) else float(v))) for k, v in row.items()}
        for row in X.iloc[:3].to_dict("records")
    ]
    assert any(isinstance(row["favourite_category"], str) for row in rows)
    response = client.post("/score", json={"model": MODEL, "rows": rows})
    assert response.status_code == 200, response.text
    expected = logistic.predict_proba(X.iloc[:3])[:, 1]
    np.testing.assert_allclose([s["score"] for s in response.json()["scores"]], expected, rtol=1e-12)
    number = client.post("/score", json={"model": MODEL, "rows": [{**rows[0], "favourite_category": 3}]})
    assert number.status_code == 422
    assert number.json()["detail"][0]["msg"] == "must be text (a category), not a number"


@pytest.mark.parametrize("kind", ["lightgbm", "blend"])
def test_a_number_attribute_stored_as_a_category_is_taken_as_the_number_the_model_reads(scored, monkeypatch, kind):
    """A model trained before attributes had their kinds in the catalogue stored a number
    attribute (``attr_birth_year``) as a category: the rows a features table holds (a number)
    were refused as "must be text", and the same value sent as text reached LightGBM as text
    (HTTP 500). A feature LightGBM reads as a number takes a number, whatever the stored
    meaning says, and text there is a 422; so does a rank blend of LightGBM and the RFM score."""
    import dataclasses

    import serving.state
    from models.repurchase import RankBlend
    from serving.registry import load_model

    out, _ = scored
    _, features = latest_scores(out)
    lightgbm = load_model(MODEL)
    meanings = dict(lightgbm.meta["meanings"])
    meanings["orders_lifetime"] = {**meanings["orders_lifetime"], "scale": "category"}  # as stored then
    old = dataclasses.replace(lightgbm, meta={**lightgbm.meta, "meanings": meanings})
    if kind == "blend":
        X_fit = features[lightgbm.features].iloc[:600]
        y_fit = (X_fit["orders_lifetime"] > X_fit["orders_lifetime"].median()).astype(int).to_numpy()
        old = dataclasses.replace(old, estimator=RankBlend(lightgbm.estimator, horizon_days=30).fit(X_fit, y_fit))
    monkeypatch.setattr(serving.state, "load_model_version", lambda name, v, alias: old)
    client = TestClient(create_app(out))
    X = features[lightgbm.features].iloc[:3]
    rows = [
        {k: (None if pd.isna(v) else (v if isinstance(v, str) else float(v))) for k, v in row.items()}
        for row in X.to_dict("records")
    ]
    answer = client.post("/score", json={"model": MODEL, "rows": rows, "reasons": True})
    assert answer.status_code == 200, answer.text
    expected = old.estimator.predict_proba(X)[:, 1]
    np.testing.assert_allclose([s["score"] for s in answer.json()["scores"]], expected, rtol=1e-12)
    for text in ("3", "abc"):
        refused = client.post("/score", json={"model": MODEL, "rows": [{**rows[0], "orders_lifetime": text}]})
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"][0]["msg"] == "must be a number, not text"


def test_api_rejects_bad_rows_naming_the_field(scored):
    out, _ = scored
    client = TestClient(create_app(out))
    response = client.post("/score", json={"model": MODEL, "rows": [{"orders_lifetime": 3}]})
    assert response.status_code == 422
    fields = {tuple(e["loc"])[-1] for e in response.json()["detail"]}
    assert "spend_lifetime" in fields


def test_api_key_is_required_on_every_route_but_health(scored):
    out, run = scored
    client = TestClient(create_app(out, api_key="s3cret"))
    customer = run.scores["customer_id"].iloc[0]
    assert client.get("/health").status_code == 200
    assert client.get(f"/customers/{customer}").status_code == 401
    assert client.get(f"/customers/{customer}", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get(f"/customers/{customer}", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/models").status_code == 401


def test_serve_refuses_a_public_interface_without_an_api_key_and_runs_beside_scores(monkeypatch):
    from typer.testing import CliRunner

    from portrait_cli.main import _register_later_commands, app

    monkeypatch.delenv("PORTRAIT_API_KEY", raising=False)
    _register_later_commands()
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code != 0
    assert "without an API key" in str(result.exception)
    # a key no request can match (blanks around it), or one guessed in a few tries, is no key
    import uvicorn

    def started(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    monkeypatch.setenv("PORTRAIT_API_KEY", " ")
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    with pytest.raises(
        PortraitError, match=r"^PORTRAIT_API_KEY has blanks around it \(or is blank\): set the key alone$"
    ):
        raise result.exception
    monkeypatch.setenv("PORTRAIT_API_KEY", "a")
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    with pytest.raises(
        PortraitError, match=r"^refusing to listen on 0.0.0.0 with a 1-character PORTRAIT_API_KEY: .* 16 random"
    ):
        raise result.exception
    monkeypatch.delenv("PORTRAIT_API_KEY")
    # --runs serves a run's scores, tags and RFM: a --scores beside it was silently ignored
    result = CliRunner().invoke(app, ["serve", "--runs", "outputs/refresh", "--scores", "outputs/scores"])
    with pytest.raises(PortraitError, match=r"give either --runs .* or --scores, not both$"):
        raise result.exception


def test_serving_never_imports_training():
    import ast
    from pathlib import Path

    for path in (Path(__file__).parents[1] / "serving").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("training"), (path, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("training") for a in node.names), path


# --- /score robustness, request limits, docs behind the key, workers (issue 15, section 4) ---


@pytest.fixture(scope="module")
def api(scored):
    out, _ = scored
    return TestClient(create_app(out), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def score_rows(scored):
    """Two valid feature rows for MODEL, a numeric feature and a categorical feature of it."""
    from serving.registry import load_model

    out, _ = scored
    _, features = latest_scores(out)
    model = load_model(MODEL)
    chosen = features.set_index("customer_id")[model.features].iloc[:2]
    rows = [
        {k: (None if pd.isna(v) else (v if isinstance(v, str) else float(v))) for k, v in row.items()}
        for row in chosen.to_dict("records")
    ]
    numeric = next(name for name in model.features if name not in model.estimator.categories_)
    categorical = sorted(model.estimator.categories_)[0]
    return rows, numeric, categorical


def _post_with_literal(client, rows, feature, literal, row=1):
    """POST /score with one value written as raw JSON text (NaN, Infinity, 1e999, 10**400 ...),
    which json.dumps would not produce."""
    import json

    body = {"model": MODEL, "rows": [dict(r) for r in rows]}
    body["rows"][row][feature] = "@@LITERAL@@"
    text = json.dumps(body).replace('"@@LITERAL@@"', literal)
    return client.post("/score", content=text, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "literal, message",
    [
        ("NaN", "must be a finite number, not NaN"),
        ("Infinity", "must be a finite number, not Infinity"),
        ("-Infinity", "must be a finite number, not -Infinity"),
        ("1e999", "must be a finite number, not Infinity"),
        ("1" + "0" * 400, "is too large for a number (401 digits)"),
        ("true", "must be a number, text or null, not true"),
        ("false", "must be a number, text or null, not false"),
        ("[1, 2]", "must be a number, text or null, not an array"),
        ('{"a": 1}', "must be a number, text or null, not an object"),
    ],
)
def test_score_rejects_unusable_values_naming_row_and_feature(api, score_rows, literal, message):
    rows, numeric, _ = score_rows
    response = _post_with_literal(api, rows, numeric, literal)
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(["body", "rows", 1, numeric], message)]


def test_score_rejects_an_unknown_category_and_a_boolean_category(api, score_rows):
    rows, _, categorical = score_rows
    response = _post_with_literal(api, rows, categorical, '"no such value"', row=0)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "rows", 0, categorical]
    assert error["msg"].startswith(f"unknown value 'no such value' for {categorical}: the model knows [")
    assert _post_with_literal(api, rows, categorical, "true", row=0).status_code == 422
    # null stays allowed: a missing value, as in batch scoring
    assert _post_with_literal(api, rows, categorical, "null", row=0).status_code == 200


def test_score_refuses_a_purchase_history_no_customer_can_have(api, score_rows):
    # a what-if row whose last purchase is older than its first was an HTTP 500 (the history
    # models' own check, raised while predicting); any of them is now a located 422
    rows, _, _ = score_rows
    rows = [dict(r) for r in rows]
    assert set(BTYD_FEATURES) <= set(rows[0])
    rows[1].update(active_days_lifetime=3, days_since_first_purchase=289, days_since_last_purchase=1000)
    rows[0].update(active_days_lifetime=4, days_since_first_purchase=50, days_since_last_purchase=50)
    response = api.post("/score", json={"model": MODEL, "rows": rows})
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [
        (
            ["body", "rows", 0, "active_days_lifetime"],
            "cannot be more than days_since_first_purchase - days_since_last_purchase + 1 "
            "(the days from the first purchase to the last) (given 4)",
        ),
        (
            ["body", "rows", 1, "days_since_last_purchase"],
            "cannot be more than days_since_first_purchase: the last purchase is not older than the first (given 1000)",
        ),
    ]
    # a row without a purchase has no history to check; a consistent one scores
    rows[0].update(active_days_lifetime=0, days_since_first_purchase=None, days_since_last_purchase=None)
    rows[1].update(days_since_last_purchase=100)
    assert api.post("/score", json={"model": MODEL, "rows": rows}).status_code == 200


def test_score_refuses_unknown_keys_and_a_flag_that_is_not_true_or_false(api, score_rows):
    rows, _, _ = score_rows
    extra = api.post("/score", json={"model": MODEL, "rows": rows, "reason": True})  # misspelt
    assert extra.status_code == 422 and extra.json()["detail"][0]["type"] == "extra_forbidden"
    yes = api.post("/score", json={"model": MODEL, "rows": rows, "reasons": "yes"})  # was read as true
    assert yes.status_code == 422 and yes.json()["detail"][0]["loc"] == ["body", "reasons"]
    assert api.post("/score", json={"model": MODEL, "rows": rows, "reasons": False}).status_code == 200


def test_score_needs_between_one_and_the_row_limit(api):
    empty = api.post("/score", json={"model": MODEL, "rows": []})
    assert empty.status_code == 422, empty.text
    assert [(e["loc"], e["msg"]) for e in empty.json()["detail"]] == [
        (["body", "rows"], "give at least one row of features")
    ]
    many = api.post("/score", json={"model": MODEL, "rows": [{}] * 10_001})
    assert many.status_code == 422, many.text
    assert [(e["loc"], e["msg"]) for e in many.json()["detail"]] == [
        (["body", "rows"], "at most 10000 rows per request, got 10001: split the request")
    ]


def test_score_refuses_a_body_over_the_size_limit_before_parsing(api, score_rows, monkeypatch):
    import json

    rows, _, _ = score_rows
    big = json.dumps({"model": MODEL, "rows": rows + [{"padding": "x" * (13 * 1024 * 1024)}]}).encode()
    parsed = []
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append(1))  # parsing must not start
    message = "request body over 4 MB (4194304 bytes): split the rows over several requests"
    declared = api.post("/score", content=big, headers={"Content-Type": "application/json"})

    def chunks():  # no Content-Length: the bytes are counted as they arrive
        for start in range(0, len(big), 1 << 20):
            yield big[start : start + (1 << 20)]

    streamed = api.post("/score", content=chunks(), headers={"Content-Type": "application/json"})
    monkeypatch.undo()
    assert "content-length" not in streamed.request.headers
    assert parsed == []
    assert (declared.status_code, declared.json()) == (413, {"detail": message})
    assert (streamed.status_code, streamed.json()) == (413, {"detail": message})
    assert api.post("/score", json={"model": MODEL, "rows": rows}).status_code == 200


def test_validation_errors_with_nan_in_the_body_answer_422_not_500(api):
    response = api.post("/score", content='{"rows": [{"x": NaN}]}', headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert ["body", "model"] in [e["loc"] for e in response.json()["detail"]]


def test_a_body_sent_as_text_is_not_echoed_whole_in_the_422(api):
    body = '{"model": "m", "rows": [' + ", ".join(['{"x": 1}'] * 20_000) + "]}"  # about 200 KB
    response = api.post("/score", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 422 and len(response.content) < 2_000
    assert any(e.get("input") == f"({len(body):,} characters, not shown)" for e in response.json()["detail"])
    # an unknown key of a megabyte: part of the error's location, which was echoed whole
    key = "x" * 1_000_000
    response = api.post("/score", json={"model": "m", "rows": [{}], key: 1})
    assert response.status_code == 422 and len(response.content) < 5_000, len(response.content)
    assert any(e["loc"] == ["body", "x" * 200 + "..."] for e in response.json()["detail"]), response.json()
    # a body nested thousands deep, which Python's JSON reader gives up on: FastAPI's bare 400
    deep = '{"model": "m", "rows": [{"x": ' + "[" * 5000 + "]" * 5000 + "}]}"
    response = api.post("/score", content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": "the request's body could not be read: its JSON is nested too deeply"}


def test_a_portrait_error_in_a_route_answers_422_with_its_message(api, score_rows, monkeypatch):
    def refuse(*args, **kwargs):
        raise PortraitError("model serve_repurchase_30d v1 cannot score these rows")

    monkeypatch.setattr("serving.routes.scores.predict_scores", refuse)
    response = api.post("/score", json={"model": MODEL, "rows": score_rows[0]})
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "model serve_repurchase_30d v1 cannot score these rows"},
    )


def test_docs_and_openapi_need_the_key_when_one_is_set(scored):
    out, _ = scored
    locked = TestClient(create_app(out, api_key="s3cret"))
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert locked.get(path).status_code == 401, path
        assert locked.get(path, headers={"X-API-Key": "wrong"}).status_code == 401, path
        assert locked.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
    schema = locked.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()
    assert "/score" in schema["paths"] and "/docs" not in schema["paths"]
    open_ = TestClient(create_app(out))
    assert [open_.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [200, 200, 200]


def test_serve_defaults_to_one_worker_per_cpu_and_passes_settings_to_each(scored, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from portrait_cli.main import _register_later_commands, app
    from serving.api import app_from_environment
    from serving.cli import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers() == 2
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_workers() == 4
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert default_workers() == 1

    out, _ = scored
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kwargs: calls.append((target, kwargs)))
    monkeypatch.setenv("PORTRAIT_API_KEY", "s3cret")
    monkeypatch.setenv("PORTRAIT_SERVE_SETTINGS", "")  # serve sets it; restored after the test
    _register_later_commands()
    result = CliRunner().invoke(app, ["serve", "--scores", str(out), "--workers", "3", "--port", "8123"])
    assert result.exit_code == 0, result.output
    ((target, kwargs),) = calls
    assert target == "serving.api:app_from_environment"
    assert (kwargs["factory"], kwargs["workers"], kwargs["port"]) == (True, 3, 8123)
    assert kwargs["http"] == "serving.api:NoDelayHTTPProtocol"
    # each worker process builds the same app from the environment serve set
    client = TestClient(app_from_environment())
    assert client.get("/models").status_code == 401
    assert client.get("/health").json()["customers"] > 0
    assert CliRunner().invoke(app, ["serve", "--scores", str(out), "--workers", "0"]).exit_code != 0


def test_worker_connections_have_nagle_off():
    """uvicorn --workers binds the socket itself (proto 0) and asyncio then leaves Nagle on:
    each keep-alive request after the first waited ~40 ms for a delayed ACK."""
    import asyncio
    import socket

    import uvicorn

    async def app(scope, receive, send):
        return None

    async def nodelay_of(http) -> int:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, lifespan="off", log_level="error")
        listener = config.bind_socket()  # as the supervisor of several workers binds it
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        while not server.server_state.connections:
            await asyncio.sleep(0.01)
        (protocol,) = server.server_state.connections
        value = protocol.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        server.should_exit = True
        await task
        return value

    assert asyncio.run(nodelay_of("serving.api:NoDelayHTTPProtocol")) != 0


def test_lists_leave_out_customers_without_consent(registered, scored, tmp_path):
    from typer.testing import CliRunner

    from portrait.outputs import latest_scores_dataset
    from portrait_cli.main import _register_later_commands, app

    out, _ = scored
    assert latest_scores_dataset(out) == registered.resolve()  # the scores say where they come from
    data = tmp_path / "data"
    shutil.copytree(registered, data)
    top = build_list(*latest_scores(out), MODEL, top=5)["customer_id"].tolist()
    (data / "suppressed.csv").write_text(f"{top[0]}\n{top[3]}\n")
    (data / "portrait.toml").write_text('[privacy]\nsuppression_file = "suppressed.csv"\n')

    listed = TestClient(create_app(out, data=data)).get(f"/lists/{MODEL}", params={"top": 5}).json()
    assert listed.get("left_out") == {"suppressed": 2} and listed["count"] == 5, listed
    (data / "portrait.toml").write_text('[privacy]\nsuppression_file = "gone.csv"\n')  # the operator's to fix
    refused = TestClient(create_app(out, data=data)).get(f"/lists/{MODEL}", params={"top": 5})
    assert refused.status_code == 503 and "the suppression file gone.csv does not exist" in refused.json()["detail"]
    (data / "portrait.toml").write_text('[privacy]\nsuppression_file = "suppressed.csv"\n')
    assert [c["customer_id"] for c in listed["customers"]][:3] == [top[1], top[2], top[4]]

    _register_later_commands()
    command = ["list", "--model", MODEL, "--scores", str(out), "--top", "5", "--out", str(tmp_path / "l.csv")]
    result = CliRunner().invoke(app, [*command, "--data", str(data)])
    assert result.exit_code == 0, result.output
    # of every customer the filters matched, before the top 5 were taken (a top 10 said "left out
    # 208 customers", read as 208 of its 10)
    assert re.search(
        r"left out 2 of the [0-9,]+ customers the filters matched, before ranking: 2 on the suppression list",
        " ".join(result.output.split()),
    )
    assert not {top[0], top[3]} & set(pd.read_csv(tmp_path / "l.csv")["customer_id"])

    # Scores that do not record their data set: no list without --data.
    unknown = tmp_path / "old_scores"
    shutil.copytree(out, unknown)
    for summary in unknown.glob("*.summary.json"):
        summary.write_text(summary.read_text().replace('"dataset_path"', '"was_dataset_path"'))
    result = CliRunner().invoke(app, [*command[:4], str(unknown), *command[5:]])
    assert isinstance(result.exception, PortraitError)
    assert "cannot check marketing consent" in str(result.exception) and "give --data DATASET" in str(result.exception)
    answer = TestClient(create_app(unknown)).get(f"/lists/{MODEL}", params={"top": 5})
    assert answer.status_code == 503 and "cannot check marketing consent" in answer.json()["detail"]


def test_a_list_without_stored_reasons_is_served_without_them_when_the_model_is_not_registered(
    scored, tmp_path, monkeypatch
):
    """Scores written without reasons, of a model the registry does not have (another store,
    deleted): the list is computable from the scores, so it is given, without reasons, and the
    note says why (it was refused: 404 "no registered model", 503 with the registry down)."""
    from typer.testing import CliRunner

    import serving.registry
    import serving.state
    from portrait.errors import NotFound, PortraitError, Unavailable
    from portrait_cli.main import _register_later_commands, app

    out, _ = scored
    assert not any(c.startswith(f"{MODEL}_reason") for c in pd.read_parquet(next(out.glob("scores_*.parquet"))).columns)
    errors = (
        NotFound(f"no registered model named '{MODEL}'"),
        Unavailable("the model registry is busy"),
        # as the registry raises it for the command line; a path on the server is not answered
        PortraitError(f"model {MODEL} v1 cannot be loaded from /srv/portrait/mlruns/1/abc/artifacts/model"),
    )
    for error in errors:

        def gone(*args, error=error):
            raise error

        monkeypatch.setattr(serving.state, "alias_version", gone)
        answer = TestClient(create_app(out)).get(f"/lists/{MODEL}", params={"top": 3})
        assert answer.status_code == 200, answer.text
        listed = answer.json()
        assert listed["count"] == 3 and not any(c.get("reasons") for c in listed["customers"])
        said = str(error).replace("/srv/portrait/mlruns/1/abc/artifacts/model", "model")
        assert (
            listed["note"]
            == f"no reasons: the scores hold none, and {MODEL} could not be loaded to compute them ({said})"
        )

    def unregistered(*args):  # as serving.registry raises it for the command line
        raise PortraitError(f"no registered model named '{MODEL}'")

    monkeypatch.setattr(serving.registry, "alias_version", unregistered)
    _register_later_commands()
    result = CliRunner().invoke(
        app, ["list", "--model", MODEL, "--scores", str(out), "--top", "3", "--out", str(tmp_path / "l.csv")]
    )
    assert result.exit_code == 0, result.output
    assert f"no reasons: the scores hold none, and {MODEL} could not be loaded" in " ".join(result.output.split())
    assert len(pd.read_csv(tmp_path / "l.csv")) == 3


def test_an_analyst_key_scores_and_a_marketing_key_is_refused(scored, score_rows, tmp_path):
    from serving.keys import add_key

    out, _ = scored
    keys = tmp_path / "keys.toml"
    marketing, analyst = add_key(keys, "campaigns", "marketing"), add_key(keys, "alice", "analyst")
    client = TestClient(create_app(out, keys=keys, audit=tmp_path / "audit.log"))
    body = {"model": MODEL, "rows": score_rows[0]}
    scored_rows = client.post("/score", json=body, headers={"X-API-Key": analyst})
    assert scored_rows.status_code == 200 and len(scored_rows.json()["scores"]) == 2
    refused = client.post("/score", json=body, headers={"X-API-Key": marketing})
    assert refused.status_code == 403 and "the key 'campaigns' has the marketing role" in refused.json()["detail"]
    assert client.post("/score", json=body).status_code == 401


def test_a_list_of_a_segment_reads_the_data_set_the_scores_came_from(scored, registered, tmp_path):
    from typer.testing import CliRunner

    from marketing.segments import Segment, SegmentStore
    from portrait_cli.main import _register_later_commands, app

    out, _ = scored
    segments = tmp_path / "segments"
    SegmentStore(segments).save(Segment("repeaters", where="orders_lifetime >= 2"))
    _register_later_commands()
    listed = tmp_path / "l.csv"
    command = ["list", "--model", MODEL, "--scores", str(out), "--segment", "repeaters"]
    result = CliRunner().invoke(app, [*command, "--segments", str(segments), "--out", str(listed)])
    assert result.exit_code == 0, result.output  # no --data: the scores' own data set
    features = latest_scores(out)[1].set_index("customer_id")
    ids = pd.read_csv(listed, dtype={"customer_id": "str"})["customer_id"]
    assert len(ids) and (features.loc[ids, "orders_lifetime"] >= 2).all()


def test_a_model_whose_files_were_deleted_is_named_in_one_message(registered):
    """The registry still lists the version, but its artifacts are gone (moved by hand): the
    message names the model, version and where it was, not MLflow's "No such artifact: ''"."""
    import mlflow

    from serving.registry import load_model

    version = mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion")
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{version.version}"))
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    try:
        with pytest.raises(
            PortraitError,
            match=rf"model '{MODEL}' version {version.version} \(champion\) cannot be loaded from .*moved or deleted",
        ):
            load_model(MODEL)
    finally:
        aside.rename(folder)
    assert load_model(MODEL).version == str(version.version)


def test_a_model_this_user_may_not_read_is_said_as_a_permission_problem(registered, monkeypatch):
    """It was "its files were moved or deleted: train and promote it again": retraining moves
    the registry and fixes nothing (a user's test, the artifacts not readable by the job's user)."""
    from mlflow.exceptions import MlflowException

    from serving import registry

    def denied(name, version):
        try:
            raise PermissionError(13, "Permission denied", "/store/artifacts/registered_model_meta")
        except PermissionError as exc:
            raise MlflowException("could not read the model's files") from exc

    monkeypatch.setattr(registry, "load_version", denied)
    with pytest.raises(PortraitError, match=r"this user may not read them: give it read access") as raised:
        registry.load_model(MODEL)
    assert "moved or deleted" not in str(raised.value)
    assert registry._denied(OSError(2, "No such file or directory")) is False


def test_score_with_csv_says_where_the_csv_is(registered, tmp_path):
    from tests.test_marketing_api_cli import run

    out = tmp_path / "scores"
    code, text = run(
        "score", str(registered), "--as-of", AS_OF, "--models", MODEL, "--csv", "--skip-validation", "--out", str(out)
    )
    assert code == 0, text
    written = out / f"scores_{AS_OF}.csv"
    assert f"scores as CSV: {written}" in " ".join(text.split()) and written.is_file()
    summary = json.loads((out / f"scores_{AS_OF}.summary.json").read_text())
    assert summary["csv"] == str(written)


def test_a_minimum_score_outside_zero_to_one_is_refused_by_the_models_label_not_its_values(scored):
    """The scores file says what each model's scores are (its label): a probability model's
    threshold of 2 is refused; a spend model's (amounts, whatever today's range) and one of a
    file scored before labels were kept are taken."""
    out, _ = scored
    scores, features = latest_scores(out)
    assert scores.attrs[MODEL_LABELS] == {MODEL: "repurchase"}  # written by the scoring, read back
    with pytest.raises(PortraitError, match=r"2 is outside 0 to 1: serve_repurchase_30d's scores are probabilities"):
        build_list(scores, features, MODEL, min_score=2)
    spend = scores.copy()
    spend.attrs = {MODEL_LABELS: {MODEL: "future_spend"}}
    assert build_list(spend, features, MODEL, min_score=2).empty
    older = scores.copy()
    older.attrs = {}
    assert build_list(older, features, MODEL, min_score=2).empty


def test_an_empty_list_has_the_columns_of_a_list_with_rows(scored):
    """Reasons computed for the rows: an empty list keeps the reason columns (a CSV header a
    loader expects), not fewer columns."""
    from serving.registry import load_model

    out, _ = scored
    scores, features = latest_scores(out)
    model = load_model(MODEL)
    full = build_list(scores, features, MODEL, top=3, reasons_model=model)
    empty = build_list(scores, features, MODEL, customers={"nobody scored"}, reasons_model=model)
    assert empty.empty and list(empty.columns) == list(full.columns)
    assert full["reason_1"].notna().all() and "note" not in full.attrs
    # too many rows for reasons, or scores of another version than the model loaded: no reasons
    # (one rule for the API and the CLI), and a note says why
    many = build_list(scores, features, MODEL, top=3, reasons_model=model, reasons_up_to=2)
    assert many["reason_1"].isna().all() and "at most 2 customers; this one has 3" in many.attrs["note"]
    other = scores.assign(**{f"{MODEL}_version": "999"})
    stale = build_list(other, features, MODEL, top=3, reasons_model=model)
    assert stale["reason_1"].isna().all()
    assert f"the scores are from {MODEL} v999, the model loaded now is v{model.version}" in stale.attrs["note"]
    # the CLI and the refresh explain the first rows only (a 10,006-row list spent 84 s on them at 100k customers)
    first = build_list(scores, features, MODEL, top=3, reasons_model=model, reasons_first=2)
    assert first["reason_1"].notna().tolist() == [True, True, False]
    assert first["reason_1"].iloc[:2].tolist() == full["reason_1"].iloc[:2].tolist()
    assert first.attrs["note"].startswith(
        "reasons for the first 2 of 3 customers (TreeSHAP explains a few hundred a second): --reasons-for"
    )
    # --reasons-for 0: none computed, the same columns (it was a traceback from an empty frame)
    none = build_list(scores, features, MODEL, top=3, reasons_model=model, reasons_first=0)
    assert list(none.columns) == list(full.columns) and none["reason_1"].isna().all()
    assert none.attrs["note"] == "reasons not computed (--reasons-for 0)"
    # a page (the API's offset and limit) is those rows of the whole list, reasons computed for them
    page = build_list(scores, features, MODEL, reasons_model=model, offset=1, limit=2)
    assert page.attrs["total"] == len(scores) and "note" not in page.attrs
    assert page.equals(full.iloc[1:3].reset_index(drop=True))
    with pytest.raises(
        PortraitError, match="a page starts at offset 0 or later and holds at least 1 row, got offset -1"
    ):
        build_list(scores, features, MODEL, offset=-1)


def test_a_relative_labels_batch_is_moved_to_its_share_and_the_summary_says_by_how_much():
    from serving.registry import LoadedModel
    from serving.score import population_scores

    raw = np.array([0.5, 0.5, 0.5, 0.5])
    high_value = LoadedModel(
        "high_value_90d", "3", "champion", {"label": "high_value", "positive_share": 0.25}, None, {}
    )
    moved, summary = population_scores(high_value, raw)
    assert moved == pytest.approx([0.25] * 4)
    assert summary == {
        "shifted_to_share": 0.25,
        "prior_shift_logit": pytest.approx(np.log(1 / 3)),
        "mean_before_shift": 0.5,
    }
    # an absolute label (or a card from before the share was stored) is scored as predicted
    repurchase = LoadedModel("repurchase_90d", "1", "champion", {"label": "repurchase"}, None, {})
    same, nothing = population_scores(repurchase, raw)
    assert same is raw and nothing == {}


def test_a_port_in_use_is_one_error_line_before_serving():
    import socket

    from serving.cli import _check_port_free

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(PortraitError, match=rf"cannot serve on 127.0.0.1:{port}: .*; choose another --port"):
            _check_port_free("127.0.0.1", port)
    _check_port_free("127.0.0.1", port)  # free again


def test_a_data_option_that_does_not_exist_is_named_as_the_option(tmp_path):
    from serving.cli import dataset_of_scores

    with pytest.raises(PortraitError, match=r"^--data .*nope does not exist$"):
        dataset_of_scores(tmp_path, tmp_path / "nope")


def test_models_list_versions_in_number_order_with_the_registered_models_own_figures(monkeypatch):
    """Versions sorted as text read 1, 10, 11, 2 (a user's test); a fold experiment's champion
    showed only the folds' mixture figure, not its registered model's own."""
    from types import SimpleNamespace

    from serving import registry

    metrics = {"holdout_roc_auc": 0.7731, "registered_candidate_holdout_roc_auc": 0.7708, "best_iteration": 40.0}

    class Registry:
        def search_registered_models(self):
            return [SimpleNamespace(name="m", aliases={"champion": "10"})]

        def search_model_versions(self, query):
            return [SimpleNamespace(version=v) for v in ("1", "10", "11", "2")]

        def get_model_version(self, name, version):
            return SimpleNamespace(run_id="r")

        def get_run(self, run_id):
            return SimpleNamespace(data=SimpleNamespace(metrics=metrics))

    monkeypatch.setattr(registry, "MlflowClient", Registry)
    (model,) = registry.list_models()
    assert model["versions"] == ["1", "2", "10", "11"]
    assert model["metrics"] == {"champion": {"holdout_roc_auc": 0.7731, "registered_candidate_holdout_roc_auc": 0.7708}}


def test_a_registry_that_cannot_be_read_is_the_operators_503(monkeypatch):
    from mlflow.exceptions import MlflowException

    from portrait.errors import Unavailable
    from serving import registry

    class Unreachable:
        def get_registered_model(self, name):
            raise MlflowException("API request to http://127.0.0.1:9 failed: Connection refused")

    monkeypatch.setattr(registry, "missing_store", lambda: None)
    monkeypatch.setattr(registry, "MlflowClient", Unreachable)
    with pytest.raises(Unavailable, match="cannot read the model registry at .*: API request to .* Connection refused"):
        registry.load_model("repurchase_90d")


def test_a_list_ranks_by_score_then_id_and_reads_only_the_features_it_filters_on():
    """The list merged every feature of the whole population and sorted everyone for top=10
    (3 s per API request at 1M customers): the same rows come from the best scores and their ties."""
    from serving.lists import build_list

    scores = pd.DataFrame(
        {
            "customer_id": ["E", "D", "C", "B", "A"],
            "m_score": [0.9, 0.5, 0.7, 0.7, 0.7],
            "m_percentile": [100.0, 20.0, 60.0, 60.0, 60.0],
        }
    )
    features = pd.DataFrame(
        {"customer_id": ["A", "B", "C", "D", "E"], "spend_365d": [1.0, 50.0, 80.0, 90.0, 5.0], "other": [0] * 5}
    )
    assert build_list(scores, features, "m", top=2)["customer_id"].tolist() == ["E", "A"]  # A before B and C
    assert build_list(scores, features, "m", top=3)["customer_id"].tolist() == ["E", "A", "B"]
    assert build_list(scores, features, "m")["customer_id"].tolist() == ["E", "A", "B", "C", "D"]
    filtered = build_list(scores, features, "m", top=2, where="spend_365d > 10")
    assert filtered["customer_id"].tolist() == ["B", "C"] and filtered["spend_365d"].tolist() == [50.0, 80.0]
    assert "other" not in filtered.columns


def test_scoring_an_earlier_date_leaves_latest_at_the_newer_scores(tmp_path):
    """A backfill (scores of an earlier date) does not move LATEST back: lists, profiles and
    the API would silently read the older scores; a refresh keeps LATEST the same way."""
    import datetime as dt

    from portrait.outputs import point_latest_at

    newer, older = tmp_path / "scores_2024-03-01.parquet", tmp_path / "scores_2024-02-01.parquet"
    for path in (newer, older):
        path.write_bytes(b"")
    assert point_latest_at(tmp_path, newer, dt.date(2024, 3, 1)) is None
    assert point_latest_at(tmp_path, older, dt.date(2024, 2, 1)) == newer.name
    assert (tmp_path / LATEST).read_text() == newer.name
    assert point_latest_at(tmp_path, newer, dt.date(2024, 3, 1)) is None  # the same date again: named
    later = tmp_path / "scores_2024-04-01.parquet"
    assert (
        point_latest_at(tmp_path, later, dt.date(2024, 4, 1)) is None and (tmp_path / LATEST).read_text() == later.name
    )
    # LATEST naming a newer file that is gone (removed by hand) does not hold the pointer back
    assert (
        point_latest_at(tmp_path, older, dt.date(2024, 2, 1)) is None and (tmp_path / LATEST).read_text() == older.name
    )


def test_scores_are_not_written_into_a_refresh_root_or_run(tmp_path):
    """Its LATEST names a run: a scores file named there broke serve --runs; one written into a
    run's scores/ replaced that run's scores with one model's."""
    from serving.score import refuse_refresh_output

    run = tmp_path / "runs" / "2024-03-01"
    (run / "scores").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    (tmp_path / LATEST).write_text("runs/2024-03-01")
    with pytest.raises(PortraitError, match=r"--out .* is a refresh root, not a scores folder; score into a scores"):
        refuse_refresh_output(tmp_path)
    with pytest.raises(PortraitError, match=r"is one refresh run's folder; score into a scores folder of its own"):
        refuse_refresh_output(run)
    for inside in (run / "scores", tmp_path / "runs"):
        with pytest.raises(
            PortraitError, match=rf"--out {inside} is in the refresh output root {tmp_path}, whose runs"
        ):
            refuse_refresh_output(inside)
    (tmp_path / LATEST).unlink()  # a root whose first run failed: its runs/ folder says what it is
    with pytest.raises(PortraitError, match="is in the refresh output root"):
        refuse_refresh_output(tmp_path)
    refuse_refresh_output(tmp_path / "scores")  # a folder beside the runs is any folder


def test_a_worker_never_pairs_scores_with_the_features_of_another_scoring(scored, tmp_path, monkeypatch, caplog):
    """A re-score writes its features, then its scores: a worker loading in between paired one
    scoring's scores with the next one's features (a filter then read the wrong values). Both
    files carry the scoring's token; a worker waits for the pair, then answers 503."""
    import logging
    import shutil
    import threading

    import serving.state as state_module
    from portrait.outputs import SCORING_TOKEN
    from serving.settings import ServeSettings
    from serving.state import ScoresReplacing, ScoresSnapshot, ServeState

    out, run = scored
    folder = tmp_path / "scores"
    shutil.copytree(out, folder)
    name = run.scores_file.name
    features_file = next(folder.glob("features_*.parquet"))
    assert pd.read_parquet(run.scores_file).attrs[SCORING_TOKEN] == pd.read_parquet(features_file).attrs[SCORING_TOKEN]
    ScoresSnapshot(folder, name)  # one scoring's pair
    newer = pd.read_parquet(features_file)
    newer.attrs[SCORING_TOKEN] = "the next scoring"
    newer.to_parquet(features_file)  # its features written, its scores not yet
    with pytest.raises(ScoresReplacing, match="are of another scoring"):
        ScoresSnapshot(folder, name)
    # the re-score's scores land while a worker waits: it serves the new pair
    state = ServeState(ServeSettings(scores=folder), tmp_path / "audit.log")
    scores = pd.read_parquet(folder / name)
    scores.attrs[SCORING_TOKEN] = "the next scoring"

    def land() -> None:  # renamed into place, as every writer of the product does (a reader
        # meeting the file half written failed the test on a loaded machine: "4 bytes")
        scores.to_parquet(folder / f".{name}.tmp")
        (folder / f".{name}.tmp").replace(folder / name)

    threading.Timer(0.5, land).start()
    assert state.snapshot().scores.attrs[SCORING_TOKEN] == "the next scoring"
    # a re-score interrupted between its two writes: served as it is after the wait, and logged
    # (refusing would stop every route until the next scoring)
    older = scores.copy()
    older.attrs[SCORING_TOKEN] = "an interrupted scoring's"
    older.to_parquet(folder / name)
    monkeypatch.setattr(state_module, "REPLACING_WAIT", 0.3)
    with caplog.at_level(logging.WARNING, logger="serving.state"):
        assert state.snapshot().scores.attrs[SCORING_TOKEN] == "an interrupted scoring's"
    assert "are of another scoring (a re-score interrupted between" in caplog.text


def test_a_feature_of_another_kind_than_the_model_was_trained_on_is_refused():
    """A customers column of numbers with an 'n/a' among them is read as text: the model would
    have scored its category codes as ages (and the drift check raised a traceback)."""
    from types import SimpleNamespace

    from serving.score import check_model_features, feature_kinds

    bins = {"edges": [1.0], "shares": [0.5, 0.5, 0.0]}
    model = SimpleNamespace(
        name="m",
        version="3",
        is_personas=False,
        features=["attr_age", "spend_90d", "attr_region"],
        meta={"reference": {"attr_age": bins, "spend_90d": bins}},  # the numeric ones
    )
    same = pd.DataFrame({"attr_age": [47.0, None], "spend_90d": [1.0, 2.0], "attr_region": pd.Categorical(["n", None])})
    check_model_features(model, same.columns, feature_kinds(same), same)
    ages_as_text = same.assign(attr_age=pd.Categorical(["47", "n/a"]))
    message = (
        r"model m v3 would read 1 feature\(s\) as another kind than it was trained on: attr_age: numbers when "
        r"the model was trained, text now \(such as 'n/a'\)\. .*write missing values as empty cells"
    )
    with pytest.raises(PortraitError, match=message):
        check_model_features(model, ages_as_text.columns, feature_kinds(ages_as_text), ages_as_text)
    regions_as_numbers = same.assign(attr_region=[1, 2])
    with pytest.raises(
        PortraitError, match=r"attr_region: text \(a category\) when the model was trained, numbers now"
    ):
        check_model_features(model, regions_as_numbers.columns, feature_kinds(regions_as_numbers), regions_as_numbers)


def test_scores_long_after_the_latest_purchase_say_so(registered, tmp_path, scored):
    # the synthetic data's latest purchase is on 2024-12-31: 60 days before 2025-03-01
    run = score(open_dataset(registered), "2025-03-01", [MODEL], tmp_path, validate_first=False)
    assert run.summary["note"] == (
        "the latest purchase in the data is 60 days before 2025-03-01: the 30-day windows are empty for "
        "everyone and recency grows for all (a stopped feed, or a mistyped date?)"
    )
    assert "note" not in scored[1].summary  # the day after the latest purchase


def test_an_empty_list_of_a_favourite_nobody_holds_says_which_values_there_are():
    scores = pd.DataFrame({"customer_id": ["a", "b"], "m_score": [0.9, 0.8], "m_percentile": [100.0, 50.0]})
    features = pd.DataFrame({"customer_id": ["a", "b"], "favourite_channel": pd.Categorical(["web", "store"])})
    empty = build_list(scores, features, "m", where="favourite_channel = 'kiosk'")
    assert len(empty) == 0
    assert empty.attrs["note"] == (
        "no customer's favourite_channel is 'kiosk' in these scores (its values: ['store', 'web']): a favourite is "
        "one of the values the scoring model was trained with ('other' for a category it does not know)"
    )
    found = build_list(scores, features, "m", where="favourite_channel = 'web' or favourite_channel = 'kiosk'")
    assert found["customer_id"].tolist() == ["a"] and "note" not in found.attrs
    # empty for another reason: no note blaming the value
    for where, options in (
        ("favourite_channel != 'kiosk' and favourite_channel = 'nothing'", {}),
        ("favourite_channel != 'kiosk'", {"min_score": 0.95}),
        ("favourite_channel = 'kiosk' or favourite_channel = 'web'", {"offset": 5, "limit": 10}),
    ):
        rows = build_list(scores, features, "m", where=where, **options)
        assert len(rows) == 0 and "'kiosk'" not in rows.attrs.get("note", ""), (where, rows.attrs)


def test_an_empty_list_by_customer_id_says_ids_are_persons():
    scores = pd.DataFrame({"customer_id": ["a", "b"], "m_score": [0.9, 0.8], "m_percentile": [100.0, 50.0]})
    features = pd.DataFrame({"customer_id": ["a", "b"], "favourite_channel": pd.Categorical(["web", "store"])})
    empty = build_list(scores, features, "m", where="customer_id = 'a2'")  # a2: merged into person a
    assert len(empty) == 0
    assert empty.attrs["note"] == (
        "customer_id is the id a person is scored under, the smallest of their merged ids: an id merged into "
        "another person matches nobody (portrait profile ID shows whose it is)"
    )
    assert build_list(scores, features, "m", where="customer_id = 'a'")["customer_id"].tolist() == ["a"]
    assert "note" not in build_list(scores, features, "m", where="m_score > 0.95").attrs


def test_scoring_the_default_models_when_one_is_not_registered_says_to_name_them(registered, tmp_path):
    from tests.test_marketing_api_cli import run

    code, text = run("score", str(registered), "--as-of", AS_OF, "--skip-validation", "--out", str(tmp_path / "s"))
    said = " ".join(text.split())
    assert code == 2 and "no registered model named" in said, text
    assert (
        "without --models every default model is scored (repurchase_90d, high_value_90d, spend_90d, personas)" in said
    )
    code, text = run("score", str(registered), "--as-of", AS_OF, "--models", "nosuch", "--out", str(tmp_path / "s"))
    assert code == 2 and "without --models" not in text


def test_scores_equal_but_for_arithmetic_share_their_percentile_and_decile():
    from serving.score import percentile_and_decile

    rounded = np.array([0.14353311, 0.14353311 * (1 + 4e-16), 0.14353311 * (1 - 3e-16), 0.3, 0.1])
    percentile, decile = percentile_and_decile(rounded)
    assert percentile.tolist() == [60.0, 60.0, 60.0, 100.0, 20.0]
    assert decile.tolist() == [6, 6, 6, 10, 2]
    spend = np.array([1234.56, 1234.57, 99.0, 0.0])  # money: distinct at 7 digits
    assert percentile_and_decile(spend)[0].tolist() == [75.0, 100.0, 50.0, 25.0]


def test_a_large_top_calibration_step_keeps_the_boosters_order_in_percentiles():
    """Half the customers in one top calibration step, told apart only by the tie-break (1e-9
    apart): ranked at 7 digits they all shared percentile 75.25, no one reached 80, and the
    "likely repurchaser" tag (percentile >= 80) and --min-percentile 80 lists were empty."""
    from serving.score import percentile_and_decile

    step = 0.9997 + 1e-9 * np.arange(100)  # the top step, in the booster's order
    lower = np.linspace(0.2, 0.9, 100)
    percentile, decile = percentile_and_decile(np.concatenate([lower, step]))
    assert percentile[-1] == 100.0 and percentile[100] == 50.5
    assert int((percentile >= 80).sum()) == 41  # ranks 160-200 of 200
    assert decile[-20:].tolist() == [10] * 20 and decile[100:110].tolist() == [6] * 10


def test_personas_show_names_the_aliases_a_real_store_holds(registered):
    """The advice read the aliases from a search of versions, which lists none on a SQLite
    store: "its versions hold no alias; run portrait personas fit" for a fitted, promoted model."""
    from mlflow.tracking import MlflowClient

    from training.personas import _no_alias_advice

    advice = _no_alias_advice(MlflowClient(), "serve_personas", "Champion")
    assert advice == (
        "no 'serve_personas' model with alias 'Champion' (its versions hold 'candidate', 'champion'); "
        "try --alias candidate or champion"
    )


def test_a_summary_left_by_another_scoring_of_the_date_is_not_read(scored, tmp_path):
    """Re-scoring a date from another data set, stopped between its scores and its summary:
    the scores were the new data set's while their summary named the old one (lists read the
    consent rules of the data set it names). The summary records its scoring's token."""
    from portrait.outputs import SCORING_TOKEN, latest_scores_dataset, scores_summary, scoring_token

    out, run = scored
    copy = tmp_path / "scores"
    shutil.copytree(out, copy)
    name = run.scores_file.name
    summary = scores_summary(copy, name)
    assert summary[SCORING_TOKEN] == scoring_token(copy / name) is not None
    assert latest_scores_dataset(copy) is not None
    scores = pd.read_parquet(copy / name)
    scores.attrs[SCORING_TOKEN] = "another scoring"  # the new scores, published before their summary
    scores.to_parquet(copy / name, index=False)
    assert scores_summary(copy, name) == {} and latest_scores_dataset(copy) is None


def test_a_console_line_of_drifted_features_says_how_many_more_the_summary_lists():
    """Five names were printed of six flagged, read as the whole list (a user's test)."""
    from serving.cli import _first_of

    assert _first_of(["a", "b", "c", "d", "e", "f", "g"]) == "a, b, c, d, e and 2 more (the summary file lists them)"
    assert _first_of(["a", "b", "c", "d", "e"]) == "a, b, c, d, e"
    assert _first_of({"x": 0.3}) == "x"  # the summary's dict of names and PSI
