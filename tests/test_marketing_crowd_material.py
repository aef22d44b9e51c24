"""The refresh's crowd material: a report read from it equals the report computed from the data
(same crowds, same base, same numbers), and material that cannot answer says why."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from marketing.crowd import Crowd, CrowdData
from marketing.crowd_material import (
    FOLDER,
    StoredCrowdData,
    material_problem,
    open_stored_crowds,
    write_crowd_material,
)
from marketing.crowd_report import crowd_report
from marketing.population import Population
from marketing.tags import apply_tags, load_library, tags_file
from portrait.dataset import open_dataset
from portrait.errors import PortraitError
from tests.test_marketing_crowd import AS_OF, CUSTOMERS, EVENTS, PURCHASES, run

CROWDS = [
    Crowd("all"),
    Crowd("where", "orders_lifetime >= 2"),
    Crowd("where", "discount_order_share > 0 and purchased(within_days = 60) >= 1"),
    Crowd("where", "spend_30d > 10"),  # a feature the material does not hold
    Crowd("bought_category", "Meat"),
    Crowd("tag", "spending power: high"),
]


def assert_same_report(computed, stored) -> None:
    pd.testing.assert_frame_equal(computed.dimensions, stored.dimensions)
    pd.testing.assert_frame_equal(computed.figures, stored.figures)
    for name in ("categories", "brands", "activity"):
        left, right = getattr(computed, name), getattr(stored, name)
        if left is None:
            assert right is None, name
        else:
            pd.testing.assert_frame_equal(left, right, obj=name)
    assert computed.cross_sell == pytest.approx(stored.cross_sell, nan_ok=True)
    assert (computed.size, computed.base_size, computed.as_of) == (stored.size, stored.base_size, stored.as_of)


def reports(data, crowds=CROWDS) -> list:
    base = data.mask(Crowd("all"))
    return [
        crowd_report(data, data.mask(c), base, crowd_name=c.describe(), base_name="all", min_cell=1) for c in crowds
    ]


@pytest.fixture()
def run_folder(tmp_path) -> tuple[Path, Path]:
    """A data folder and a run folder holding its crowd material and tags as of AS_OF."""
    from tests.conftest import write_tables

    data = write_tables(tmp_path / "data", purchases=PURCHASES, events=EVENTS, customers=CUSTOMERS)
    run_dir = tmp_path / "o'refresh" / "runs" / AS_OF  # a quote in the path: paths are quoted into COPY statements
    library = load_library()
    with Population(open_dataset(data), AS_OF) as population:
        write_crowd_material(CrowdData(population, library), run_dir / FOLDER)
        tags = apply_tags(library, population).tags
    tags_file(run_dir / "tags", dt.date.fromisoformat(AS_OF)).parent.mkdir(parents=True)
    tags.to_parquet(tags_file(run_dir / "tags", dt.date.fromisoformat(AS_OF)), index=False)
    return data, run_dir


def test_a_report_from_the_material_equals_the_report_from_the_data(run_folder):
    data, run_dir = run_folder
    library = load_library()
    with Population(open_dataset(data), AS_OF) as population:
        computed = reports(CrowdData(population, library))
    stored = open_stored_crowds(run_dir, data, library, as_of=dt.date.fromisoformat(AS_OF))
    try:
        # the stored columns and a tag answer without opening the data set's population
        reports(stored, [Crowd("all"), Crowd("where", "orders_lifetime >= 2"), Crowd("tag", "spending power: high")])
        assert stored._population is None
        for left, right in zip(computed, reports(stored), strict=True):
            assert_same_report(left, right)
    finally:
        stored.close()
    # the hand-written crowd: A, C and D have two orders or more; D alone bought Meat twice
    assert computed[1].size == 3 and computed[4].size == 2


def test_material_that_cannot_answer_says_why(run_folder, tmp_path):
    data, run_dir = run_folder
    library = load_library()
    folder = run_dir / FOLDER
    fingerprint = open_dataset(data).fingerprint()
    assert material_problem(folder, library, dt.date.fromisoformat(AS_OF), fingerprint) is None
    with pytest.raises(PortraitError, match=r"is as of 2024-03-01, not 2024-04-01: run the command again without"):
        open_stored_crowds(run_dir, data, library, as_of=dt.date(2024, 4, 1))
    # a later run is the latest, the earlier date's run is there: that run is named (it said drop --run)
    later = run_dir.parent / "2024-04-01"
    (later / FOLDER).mkdir(parents=True)
    with pytest.raises(PortraitError, match=rf": give that date's run, --run .*runs/{AS_OF}$"):
        open_stored_crowds(later, data, library, as_of=dt.date.fromisoformat(AS_OF))
    with pytest.raises(PortraitError, match="holds no crowd material"):
        open_stored_crowds(tmp_path, data, library, as_of=dt.date.fromisoformat(AS_OF))
    other = tmp_path / "tags.toml"
    other.write_text(
        '[groups.value]\nlabel = "value"\n[groups."value/spend"]\nlabel = "spend"\nexclusive = "levels"\n'
        'feature = "spend_lifetime"\nquantiles = [0.5]\nvalues = ["low", "high"]\n'
    )
    with pytest.raises(PortraitError, match="another tag library's levels"):
        open_stored_crowds(run_dir, data, load_library(other), as_of=dt.date.fromisoformat(AS_OF))
    PURCHASES.iloc[:-1].to_csv(data / "purchases.csv", index=False)  # a line less: another data set
    with pytest.raises(
        PortraitError, match=r"data set changed since the crowd material.*: run the command again without --run"
    ):
        open_stored_crowds(run_dir, data, library, as_of=dt.date.fromisoformat(AS_OF))


def test_purchase_terms_read_the_stored_lines_and_event_terms_need_the_data_set(run_folder):
    _, run_dir = run_folder
    stored = StoredCrowdData(run_dir, None, load_library())
    try:
        # the lines before the date: A (2024-02-01), B (02-05), C (02-20) and D (02-01) bought in
        # the last 60 days; only C and D bought Meat ever, and the line at the date is not read
        assert stored.mask(Crowd("where", "purchased(within_days = 60) >= 1")).tolist() == [1, 1, 1, 1, 0]
        assert stored.mask(Crowd("bought_category", "Meat")).tolist() == [0, 0, 1, 1, 0]
        assert stored._population is None and stored._raw_con is None
        with pytest.raises(PortraitError, match=r"need the data set \(--data\)"):
            stored.mask(Crowd("where", "events(type = 'view', within_days = 60) >= 1"))
    finally:
        stored.close()


def test_crowd_report_with_run_writes_what_the_data_gives(run_folder, tmp_path):
    data, run_dir = run_folder
    common = ["--data", data, "--as-of", AS_OF, "--min-cell", "1", "--where", "orders_lifetime >= 2"]
    code, output = run("crowd", "report", *common, "--out", tmp_path / "cold")
    assert code == 0, output
    root = run_dir.parent.parent  # a refresh root: its LATEST names the run
    (root / "LATEST").write_text(f"runs/{AS_OF}\n")
    code, output = run("crowd", "report", *common, "--run", root, "--out", tmp_path / "warm")
    assert code == 0, output
    cold, warm = (pd.read_csv(tmp_path / name / "crowd.csv", dtype=str) for name in ("cold", "warm"))
    pd.testing.assert_frame_equal(cold, warm)
    code, output = run(
        "crowd", "report", *common[:2], "--as-of", "2024-02-01", *common[4:], "--run", run_dir, "--out", tmp_path / "x"
    )
    assert code != 0 and "is as of 2024-03-01, not 2024-02-01: run the command again without --run" in output


def test_the_api_answers_from_the_served_runs_material(run_folder, tmp_path, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from marketing.segments import Segment, SegmentStore
    from serving.routes.crowds import CrowdSources, build_crowds_router

    data, run_dir = run_folder
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("repeaters", where="orders_lifetime >= 2"))

    def client(run_dir):
        app = FastAPI()
        sources = CrowdSources(data, AS_OF, None, run_dir)
        app.include_router(
            build_crowds_router(lambda: sources, segments_dir=store.folder, tags_library=None, least_cell=1)
        )
        return TestClient(app)

    asks = [{"segment": "repeaters", "min_cell": 1}, {"tag": "spending power: high", "min_cell": 1}]
    cold = [client(None).get("/crowds/report", params=ask) for ask in asks]
    import marketing.population

    def no_population(*args, **kwargs):
        raise AssertionError("the material answers without the data set's population")

    # the saved segment is not in the run (evaluated from the data), the tag is
    warm = [client(run_dir).get("/crowds/report", params=asks[0])]
    monkeypatch.setattr(marketing.population.Population, "__init__", no_population)
    warm.append(client(run_dir).get("/crowds/report", params=asks[1]))
    for before, after in zip(cold, warm, strict=True):
        assert before.status_code == after.status_code == 200, after.text
        assert before.json() == after.json()
    assert cold[0].json()["customers"] == 3
    missing = client(run_dir).get("/crowds/report", params={"tag": "no such tag"})
    assert missing.status_code == 404 and "no such tag" in missing.json()["detail"]


def test_features_asked_later_are_built_alone_and_placed_row_for_row(run_folder, monkeypatch):
    data, _ = run_folder
    with Population(open_dataset(data), AS_OF) as population:
        whole = population.frame(columns=["orders_lifetime", "spend_30d", "view_count_365d"])
    with Population(open_dataset(data), AS_OF) as population:
        population.frame(columns=["orders_lifetime"])
        asked = []
        build = population._build
        monkeypatch.setattr(population, "_build", lambda names: asked.append(set(names)) or build(names))
        later = population.frame(columns=["spend_30d", "view_count_365d"])
    assert asked == [{"spend_30d", "view_count_365d"}]  # not the features built before
    pd.testing.assert_frame_equal(later[whole.columns], whole)
    assert list(whole.set_index("customer_id")["spend_30d"].round(2).items())[:2] == [("A", 20.0), ("B", 100.0)]


def test_the_api_says_once_why_the_runs_material_could_not_answer(run_folder, tmp_path, caplog, monkeypatch):
    import json as json_module

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    import serving.routes.crowds as crowds_routes
    from marketing.crowd_material import FOLDER, META
    from serving.routes.crowds import CrowdSources, build_crowds_router

    data, run_dir = run_folder
    stale = tmp_path / "run"
    shutil.copytree(run_dir, stale)
    meta = json_module.loads((stale / FOLDER / META).read_text())
    (stale / FOLDER / META).write_text(json_module.dumps({**meta, "format": -1}))
    monkeypatch.setattr(crowds_routes, "_SAID_PROBLEMS", set())
    app = FastAPI()
    sources = CrowdSources(data, AS_OF, None, stale)
    app.include_router(
        build_crowds_router(lambda: sources, segments_dir=tmp_path / "s", tags_library=None, least_cell=1)
    )
    with caplog.at_level("WARNING", logger="serving.routes.crowds"):
        for _ in range(2):
            assert (
                TestClient(app).get("/crowds/report", params={"tag": "spending power: high", "min_cell": 1}).status_code
                == 200
            )
    said = [r.getMessage() for r in caplog.records if "not the served run's material" in r.getMessage()]
    assert len(said) == 1 and "written by another version" in said[0]
