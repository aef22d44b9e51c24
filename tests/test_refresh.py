"""The nightly refresh (issue 15 §2) on small synthetic data: one run published at once, a
failed step leaves LATEST alone, idempotent re-runs, the lock, keeping the last N runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from marketing.segments import Segment, SegmentStore
from portrait import connections, files
from portrait.errors import Busy, PortraitError
from portrait.files import LockHeld, exclusive_lock
from serving import refresh as refresh_module
from serving.refresh import LATEST, LOCK, RefreshFailed, current_run, load_config, refresh, run_dates

MODEL = "refresh_repurchase_30d"
AS_OF = "2025-01-01"

LIBRARY = f"""
[groups.value]
description = "value"

[groups."value/buyer_level"]
label = "buyer level"
exclusive = "levels"
feature = "orders_lifetime"
bounds = [1, 3, 10, 30]
values = ["novice", "junior", "intermediate", "senior", "veteran"]

[groups.predicted]
description = "models"

[[tags]]
name = "likely repurchaser"
group = "predicted"
kind = "model"
description = "top 20% of the repurchase scores"
where = "{MODEL}_percentile >= 80"
"""


@pytest.fixture(scope="module")
def registered(tracking, small_synthetic):
    from training.config import parse_experiment
    from training.registry import promote
    from training.train import train_experiment

    config = parse_experiment(
        {
            "name": MODEL,
            "data": {"path": str(small_synthetic)},
            "cutoffs": {"rule": "monthly", "count": 3},
            "label": {"kind": "repurchase", "horizon_days": 30},
            "model": {"n_estimators": 60, "learning_rate": 0.1, "early_stopping_rounds": 20},
            "validation": {"folds": 2},  # a cross-fit over two folds of customers keeps the tests fast
        }
    )
    train_experiment(config)
    promote(MODEL)
    return small_synthetic


def write_settings(folder: Path, data: Path, *, keep: int = 7, broken_segment: bool = False) -> Path:
    """A refresh.toml in ``folder`` with a tag library, two segments and two lists."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tags.toml").write_text(LIBRARY)
    store = SegmentStore(folder / "segments")
    store.save(Segment("likely", tags=["likely repurchaser"]), replace=True)
    store.save(Segment("frequent", where="orders_lifetime >= 3"), replace=True)
    if broken_segment:  # wrong only on the data: region is text there (a check without data takes any kind)
        store.save(Segment("broken", where="attr_region > 5"), replace=True)
    settings = folder / "refresh.toml"
    settings.write_text(
        f"""
data = "{data}"
out = "{folder / "out"}"
as_of = "{AS_OF}"
models = ["{MODEL}"]
tags = "{folder / "tags.toml"}"
manual_tags = "{folder / "manual.parquet"}"
segments = "{folder / "segments"}"
keep = {keep}

[[lists]]
name = "top100"
model = "{MODEL}"
top = 100

[[lists]]
model = "{MODEL}"
segment = "frequent"
top = 50
"""
    )
    return settings


@pytest.fixture(scope="module")
def first_run(registered, tmp_path_factory):
    folder = tmp_path_factory.mktemp("refresh")
    settings = write_settings(folder, registered)
    seen = []
    result = refresh(load_config(settings), on_step=seen.append)
    return settings, folder / "out", result, seen


def test_a_run_publishes_every_step_and_a_manifest(first_run):
    settings, root, result, seen = first_run
    run = root / "runs" / AS_OF
    assert result.run == run and current_run(root) == run
    assert (root / LATEST).read_text().strip() == f"runs/{AS_OF}"
    assert [r.step for r in seen] == [
        "validate",
        "features",
        "score",
        "rfm",
        "tags",
        "segments",
        "crowds",
        "profiles",
        "lists",
    ]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["outcome"] == "ok" and manifest["as_of"] == AS_OF
    assert [s["step"] for s in manifest["steps"]] == [r.step for r in seen]
    assert all(s["outcome"] == "ok" and s["seconds"] >= 0 for s in manifest["steps"])
    assert all(s["cpu_seconds"] >= 0 and s["peak_rss_gb"] > 0 for s in manifest["steps"])
    assert list(manifest["models"]) == [MODEL] and manifest["models"][MODEL].isdigit()
    assert set(manifest["drift"][MODEL]) == {"flagged", "warnings"}
    steps = {s["step"]: s for s in manifest["steps"]}
    customers = steps["score"]["rows"]["customers"]
    assert customers > 2000 and steps["features"]["rows"]["customers"] == customers
    assert steps["lists"]["rows"] == {"top100": 100, f"{MODEL}_frequent_top50": 50}
    for path in (
        "validation/report.json",
        f"scores/scores_{AS_OF}.parquet",
        f"scores/features_{AS_OF}.parquet",
        f"rfm/rfm_{AS_OF}.parquet",
        f"tags/tags_{AS_OF}.parquet",
        "segments/likely.parquet",
        "segments/frequent.parquet",
        "lists/top100.csv",
        "crowds/meta.json",
        "crowds/dimensions.parquet",
    ):
        assert (run / path).is_file(), path
    # the segment's members are the holders of the tag, as the run's tags table says
    tags = pd.read_parquet(run / f"tags/tags_{AS_OF}.parquet")
    holders = set(tags.loc[tags["tag"] == "likely repurchaser", "customer_id"].astype(str))
    assert set(pd.read_parquet(run / "segments/likely.parquet")["customer_id"]) == holders
    assert steps["segments"]["rows"]["likely"] == len(holders) > 0
    # what chose each segment's members, recorded for the API's privacy check
    recorded = json.loads((run / "segments/summary.json").read_text())["segments"]
    assert (recorded["frequent"]["reads"], recorded["likely"]["reads"]) == (
        "orders_lifetime >= 3",
        f"{MODEL}_percentile >= 80",
    )
    top = pd.read_csv(run / "lists/top100.csv")
    assert len(top) == 100 and top["score"].is_monotonic_decreasing
    # the profile material: row counts in the manifest, every table sorted by person id, nothing
    # on or after the as-of date
    profiles = steps["profiles"]["rows"]
    assert profiles["people"] >= customers and profiles["orders"] > 0 and profiles["events"] > 0
    for name, rows in profiles.items():
        frame = pd.read_parquet(run / "profiles" / f"{name}.parquet")
        assert len(frame) == rows and frame["customer_id"].is_monotonic_increasing, name
    for name in ("orders", "events"):
        frame = pd.read_parquet(run / "profiles" / f"{name}.parquet")
        assert frame["ts"].max() < pd.Timestamp(AS_OF), name
        assert frame.groupby("customer_id").size().max() == {"orders": 10, "events": 20}[name]
    # nothing half-made is left beside the run
    assert [p.name for p in (root / "runs").iterdir()] == [AS_OF]


def test_a_crowd_report_on_the_run_reads_its_material_and_matches_the_data(first_run):
    from marketing.crowd import Crowd, CrowdData
    from marketing.crowd_material import open_stored_crowds
    from marketing.population import Population
    from marketing.tags import load_library
    from portrait.dataset import open_dataset
    from tests.test_marketing_crowd_material import assert_same_report, reports

    settings, root, _, _ = first_run
    config = load_config(settings)
    run = root / "runs" / AS_OF
    library, store = load_library(config.tags), SegmentStore(config.segments)
    crowds = [
        Crowd("segment", "frequent"),
        Crowd("tag", "likely repurchaser"),
        Crowd("where", "orders_lifetime >= 3 and rfm_r >= 3"),
    ]
    assert json.loads((run / "manifest.json").read_text())["steps"][6]["rows"]["customers"] > 2000
    with Population(open_dataset(config.data), AS_OF, scores_dir=run / "scores") as population:
        computed = reports(CrowdData(population, library, segments=store), crowds)
    stored = open_stored_crowds(run, config.data, library, as_of=config.as_of, segments=store)
    try:
        for left, right in zip(computed, reports(stored, crowds), strict=True):
            assert_same_report(left, right)
        assert stored._population is None  # read from the run alone
    finally:
        stored.close()
    assert all(report.size > 0 for report in computed)


def _contents(run: Path) -> dict[str, object]:
    found = {}
    for path in sorted(run.rglob("*")):
        name = str(path.relative_to(run))
        if path.suffix == ".parquet":
            found[name] = pd.read_parquet(path)
        elif path.suffix == ".csv":
            found[name] = pd.read_csv(path)
        elif path.is_file():
            found[name] = None
    return found


def test_rerunning_the_same_date_replaces_the_run_with_the_same_files(first_run):
    settings, root, _, _ = first_run
    before = _contents(root / "runs" / AS_OF)
    result = refresh(load_config(settings))
    after = _contents(result.run)
    assert sorted(after) == sorted(before)
    for name, frame in before.items():
        if frame is not None:
            pd.testing.assert_frame_equal(after[name], frame, obj=name, check_exact=True)
    assert [p.name for p in (root / "runs").iterdir()] == [AS_OF]
    assert current_run(root) == root / "runs" / AS_OF
    # an order's amount is rounded as the totals are: a float sum's last bits follow the order
    # DuckDB's threads add its lines in, which made a re-run's file differ now and then
    amounts = after["profiles/orders.parquet"]["amount"].dropna()
    assert len(amounts) and (amounts == amounts.round(9)).all()


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("2031-01-01", r"failed at step validate: .*days after the latest purchase .*every window would be empty"),
        ("2001-01-01", r"failed at step validate: .*as of 2001-01-01 is before the first purchase"),
    ],
)
def test_a_date_far_outside_the_data_fails_and_leaves_latest(first_run, as_of, message):
    settings, root, _, _ = first_run
    pointer = (root / LATEST).read_text()
    with pytest.raises(RefreshFailed, match=message):
        refresh(load_config(settings, as_of=as_of))
    assert (root / LATEST).read_text() == pointer and run_dates(root) == [AS_OF]


def test_a_failed_step_leaves_latest_and_records_the_failure(first_run, monkeypatch):
    settings, root, _, _ = first_run
    pointer = (root / LATEST).read_text()
    published = _contents(root / "runs" / AS_OF)

    def broken(self, record):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(refresh_module._Job, "rfm", broken)
    with pytest.raises(RefreshFailed, match=r"failed at step rfm: RuntimeError: disk on fire; LATEST still points"):
        refresh(load_config(settings, as_of="2025-01-08"))
    assert (root / LATEST).read_text() == pointer
    assert run_dates(root) == [AS_OF]
    manifest = json.loads((root / "runs" / "2025-01-08.failed" / "manifest.json").read_text())
    assert manifest["outcome"] == "failed" and "disk on fire" in manifest["error"]
    assert [(s["step"], s["outcome"]) for s in manifest["steps"]][-2:] == [("score", "ok"), ("rfm", "failed")]
    assert sorted(_contents(root / "runs" / AS_OF)) == sorted(published)


def test_a_full_disk_when_publishing_says_so_and_leaves_nothing_behind(first_run, monkeypatch):
    """The manifest and the run's move were outside the failure handling: a full disk gave a raw
    OS error, no word about LATEST, and a hidden temporary run (16 MB) left on the full disk."""
    import errno

    settings, root, _, _ = first_run
    pointer = (root / LATEST).read_text()

    real = refresh_module.atomic_write_text

    def full(text, path, *args):
        if path.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(text, path, *args)

    monkeypatch.setattr(refresh_module, "atomic_write_text", full)
    with pytest.raises(RefreshFailed, match=r"every step ran, but the run could not be written whole \(No space left"):
        refresh(load_config(settings, as_of="2025-01-09"))
    assert (root / LATEST).read_text() == pointer
    assert not [p.name for p in (root / "runs").iterdir() if p.name.startswith(".2025-01-09")]
    # nor is the run that was never published in the segments folder's history (it was: recorded
    # before publishing, a night readers never saw)
    history = SegmentStore(load_config(settings).segments).history("frequent")
    assert "2025-01-09" not in history["as_of"].astype(str).tolist() and len(history)


def _portrait(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from portrait_cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        timeout=600,
    )


def test_segments_that_cannot_be_evaluated_are_left_out_of_a_published_run_and_the_exit_is_2(first_run, tmp_path):
    """One marketer's broken segment stopped the whole night: no scores, tags or lists (a user's
    test); a tag gone or a column misspelt stopped it before any step. The run is published
    without them and the lists drawn from them, said, and the exit is 2 for the scheduler."""
    settings, _, _, _ = first_run
    broken = write_settings(tmp_path, Path(load_config(settings).data), broken_segment=True)
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("gone_tag", tags=["no such tag"]))
    store.save(Segment("typo", where="orders_lifetme >= 2"))
    (tmp_path / "segments" / "handmade.toml").write_text('name = "edited by hand"\n')
    store.history_path("likely").write_bytes(b"\xff\xfe garbage, not a history")  # a file damaged by hand
    broken.write_text(broken.read_text() + f'\n[[lists]]\nname = "of_broken"\nmodel = "{MODEL}"\nsegment = "broken"\n')
    done = _portrait("refresh", str(broken), "--as-of", "2025-01-15", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "published 2025-01-15 without some of its parts: step segments: 4 of 6 segments not refreshed" in done.stderr
    assert "segment 'broken': " in done.stderr and "compares text with a number" in done.stderr
    assert "segment 'gone_tag': no tag 'no such tag'" in done.stderr
    assert "segment 'typo': unknown column 'orders_lifetme'" in done.stderr
    assert "segment 'handmade': " in done.stderr and "unknown keys ['name']" in done.stderr
    assert "step lists: list 'of_broken': segment 'broken' was not refreshed in this run" in done.stderr
    assert "PARTIAL" in done.stdout and "not done:" in done.stdout  # the step lines say it too
    said = " ".join(done.stdout.split())
    # of the two refreshed, the one whose history file is damaged is said, the other recorded
    assert f"segment history: 1 recorded in {(tmp_path / 'segments').resolve()}" in said
    assert "warning: segment 'likely' not recorded in the folder's history: 'utf-8' codec can't decode" in said
    assert store.history("frequent")["as_of"].tolist() == ["2025-01-15"]
    # the log's progress lines name each step once (a feature build's messages carry "features:")
    assert "s] features: orders" in done.stderr and "features: features:" not in done.stderr
    root = tmp_path / "out"
    run = root / "runs" / "2025-01-15"
    assert (root / LATEST).read_text() == "runs/2025-01-15\n"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["outcome"] == "partial" and "4 of 6 segments" in manifest["error"]
    assert manifest["segment_history"]["recorded"] == ["frequent"]  # written to the published run's manifest
    assert list(manifest["segment_history"]["not_recorded"]) == ["likely"]
    assert sorted(p.name for p in (run / "segments").glob("*.parquet")) == ["frequent.parquet", "likely.parquet"]
    assert set(json.loads((run / "segments" / "summary.json").read_text())["not_refreshed"]) == {
        "broken",
        "gone_tag",
        "handmade",
        "typo",
    }
    assert sorted(p.name for p in (run / "lists").iterdir()) == [f"{MODEL}_frequent_top50.csv", "top100.csv"]
    assert (run / "scores").is_dir() and not (root / "runs" / "2025-01-15.failed").exists()


def test_a_model_not_registered_is_refused_before_any_step(registered, tmp_path):
    """A typo in models failed at the features step, after validation (20 s at 1M customers),
    leaving a failed run; it is refused before the run starts, nothing written."""
    settings = write_settings(tmp_path, registered)
    settings.write_text(settings.read_text().replace(f'models = ["{MODEL}"]', f'models = ["{MODEL}", "nosuch"]'))
    with pytest.raises(PortraitError, match=r"^no registered model named 'nosuch'; train it first"):
        refresh(load_config(settings))
    assert not (tmp_path / "out").exists()


def test_a_held_lock_stops_a_second_run_naming_the_holder(first_run, tmp_path):
    settings, root, _, _ = first_run
    pointer = (root / LATEST).read_text()
    with exclusive_lock(root / LOCK, "a test holding the refresh"):
        with pytest.raises(LockHeld, match=r"portrait refresh of .* is already running \(pid \d+"):
            refresh(load_config(settings, as_of="2025-01-22"))
        done = _portrait("refresh", str(settings), "--as-of", "2025-01-22", cwd=tmp_path)
    assert done.returncode == 75  # EX_TEMPFAIL: a scheduler runs it again later, unlike a run that failed (2)
    assert "already running" in done.stderr and f"pid {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr
    assert (root / LATEST).read_text() == pointer
    assert not (root / "runs" / "2025-01-22").exists()


def test_only_the_last_runs_are_kept(registered, tmp_path, monkeypatch):
    import marketing.segments as segments_module
    from portrait.outputs import SEGMENT_RECORD_LOCK

    settings = write_settings(tmp_path, registered, keep=2)
    root = tmp_path / "out"
    abandoned = root / "runs" / ".2024-11-30.tmp-1-deadbeef"  # a killed run's folder
    abandoned.mkdir(parents=True)
    removed = []
    for as_of in ("2024-12-01", "2024-12-15", "2025-01-01"):
        removed += refresh(load_config(settings, as_of=as_of)).pruned
    assert run_dates(root) == ["2024-12-15", "2025-01-01"]
    assert removed == ["2024-12-01"]
    assert not abandoned.exists()
    assert current_run(root) == root / "runs" / "2025-01-01"
    # a re-run of a date follows the run before its date, not the run it replaces: the tags'
    # entered and left (and their "since") are the same as the first time
    first_summary = json.loads((root / "runs" / "2025-01-01" / "tags" / "tags_2025-01-01.summary.json").read_text())
    rerun = refresh(load_config(settings, as_of="2025-01-01"))
    summary = json.loads((rerun.run / "tags" / "tags_2025-01-01.summary.json").read_text())
    assert rerun.manifest["previous_run"] == "runs/2024-12-15" and summary["previous_run"] == "2024-12-15"
    assert summary["tags"] == first_summary["tags"]
    # the segments' entered and left against the run before (they had none: only the folder's
    # history counted them), by hand from the two runs' members files
    sizes = json.loads((rerun.run / "segments" / "summary.json").read_text())["segments"]
    for name in ("likely", "frequent"):
        before = set(pd.read_parquet(root / "runs" / "2024-12-15" / "segments" / f"{name}.parquet")["customer_id"])
        now = set(pd.read_parquet(rerun.run / "segments" / f"{name}.parquet")["customer_id"])
        assert (sizes[name]["entered"], sizes[name]["left"]) == (len(now - before), len(before - now)), name
    assert sizes["frequent"]["entered"] > 0
    # a run of an older date (a backfill) is published and kept although it is not among the
    # newest two, and LATEST stays at the newest date
    backfill = refresh(load_config(settings, as_of="2024-11-01"))
    assert backfill.manifest["previous_run"] is None  # no run before its date; never a later one
    assert backfill.is_backfill and backfill.latest == root / "runs" / "2025-01-01"
    assert current_run(root) == root / "runs" / "2025-01-01"
    assert run_dates(root) == ["2024-11-01", "2024-12-15", "2025-01-01"]
    # each run is recorded in the segments folder's history too, as `portrait segment refresh`
    # records (it was written to the run only): entered and left against the folder's members of
    # the date before, none for the first date, the backfill's row without them, its members
    # left as they were; the re-run of 2025-01-01 kept its row's counts (the same members)
    store = SegmentStore(tmp_path / "segments")
    history = store.history("frequent")
    assert history["as_of"].astype(str).tolist() == ["2024-11-01", "2024-12-01", "2024-12-15", "2025-01-01"]
    assert history["entered"].isna().tolist() == [True, True, False, False]
    newest = json.loads((root / "runs" / "2025-01-01" / "segments" / "summary.json").read_text())["segments"]
    row = history.iloc[-1]
    assert (row["customers"], row["entered"], row["left"]) == (
        newest["frequent"]["customers"],
        newest["frequent"]["entered"],
        newest["frequent"]["left"],
    )
    assert set(store.members("frequent")["customer_id"]) == set(
        pd.read_parquet(root / "runs" / "2025-01-01" / "segments" / "frequent.parquet")["customer_id"]
    )
    assert store.members("frequent")["as_of"].astype(str).unique().tolist() == ["2025-01-01"]
    assert sorted(backfill.manifest["segment_history"]["recorded"]) == ["frequent", "likely"]
    assert backfill.manifest["segment_history"]["not_recorded"] == {}
    # the next run's switch keeps the newest two again; a segments folder another command is
    # recording into: the run is published whole (its own segments are), the folder's history
    # is not written, and the manifest says why
    recorded_rows = len(store.history("frequent"))
    monkeypatch.setattr(segments_module, "SEGMENT_RECORD_WAIT_SECONDS", 0.2)
    with exclusive_lock(tmp_path / "segments" / SEGMENT_RECORD_LOCK, "a test recording into the folder"):
        held = refresh(load_config(settings, as_of="2025-01-01"))
    assert held.pruned == ["2024-11-01"]
    assert held.manifest["outcome"] == "ok" and current_run(root) == held.run
    history = held.manifest["segment_history"]
    assert history["recorded"] == [] and sorted(history["not_recorded"]) == ["frequent", "likely"]
    assert re.match(
        r"a segment refresh recording into .*/segments is already running \(pid \d+",
        history["not_recorded"]["frequent"],
    )
    assert len(store.history("frequent")) == recorded_rows
    # without a LATEST (deleted by hand), a backfill points it at the newest run, not at itself;
    # the data set is checked again under the folder's lock: a forget between the run's last
    # check and the recording (it scrubs the folder under that lock) must not have its person
    # written back
    checks = []

    def changed_at_the_second_check(job):
        checks.append(1)
        return "tombstones.csv changed" if len(checks) > 1 else None

    monkeypatch.setattr(refresh_module._Job, "data_changed", changed_at_the_second_check)
    (root / LATEST).unlink()
    backfill = refresh(load_config(settings, as_of="2024-12-01"))
    assert backfill.latest == root / "runs" / "2025-01-01"
    assert (root / LATEST).read_text().strip() == "runs/2025-01-01"
    assert backfill.manifest["segment_history"]["recorded"] == [] and len(checks) == 2
    assert backfill.manifest["segment_history"]["not_recorded"]["likely"] == (
        "the data set changed since it was read (tombstones.csv changed): a forget, or a new export"
    )
    assert len(store.history("frequent")) == recorded_rows


def test_settings_errors_name_the_setting(tmp_path):
    path = tmp_path / "refresh.toml"
    path.write_text('data = "d"\nout = "o"\nkeep = 0\n')
    with pytest.raises(Exception, match="keep must be a whole number"):
        load_config(path)
    path.write_text('data = "d"\nout = "o"\nmodel = ["x"]\n')
    with pytest.raises(Exception, match=r"unknown setting\(s\) \['model'\]"):
        load_config(path)
    path.write_text('out = "o"\n')
    with pytest.raises(Exception, match='data = "FOLDER" is required'):
        load_config(path)
    path.write_text('data = ""\nout = "o"\n')  # not the working folder
    with pytest.raises(Exception, match='data = "FOLDER" is required'):
        load_config(path)


def test_a_data_set_that_is_not_there_stops_before_the_output_root_is_made(tmp_path, monkeypatch):
    """Run from the wrong folder, a relative data path names nothing: say so, make nothing."""
    from serving.refresh import refresh

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "refresh.toml"
    path.write_text('data = "data4k"\nout = "out/refresh"\n')
    with pytest.raises(
        PortraitError,
        match=r"data = 'data4k' is .*data4k, which does not exist \(a relative path is read from the working folder",
    ):
        refresh(load_config(path))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('reasons = "no"', r'reasons must be true or false \(got "no"\)'),  # was read as true
        ("keep = true", r"keep must be a whole number of runs, at least 1 \(got true\)"),  # was "got True"
        ("as_of = 20241201", r'as_of must be a date, as_of = "YYYY-MM-DD" \(got 20241201\)'),
        ('as_of = "01/12/2024"', r"cutoff '01/12/2024' is not a date \(expected YYYY-MM-DD\)"),  # not 12 January
        ("segments = 3", r'segments must be text, segments = "..."'),
        ('models = ["a", "a"]', r"models names \['a'\] more than once"),
        ('models = ["a"]\n[[lists]]\nmodel = "b"', r"model 'b' is not scored by this refresh; models = \['a'\]"),
        (
            'models = ["a"]\n[[lists]]\nmodel = "a"\nname = "top"\ntop = 50\n[[lists]]\nmodel = "a"\nname = "top"\ntop = 10',
            r"\[\[lists\]\] entry 2: a list named 'top' comes earlier",
        ),
        ('models = ["a"]\n[[lists]]\nmodel = "a"\nname = 5', r'entry 1: name must be text, name = "..." \(got 5\)'),
        ('models = ["a"]\n[[lists]]\nmodel = 5', r'entry 1: model must be text, model = "..." \(got 5\)'),
        (
            'models = ["a"]\n[[lists]]\nmodel = "a"\nsegment = "big_spender"',
            r"entry 1: segment 'big_spender' needs segments = \"FOLDER\" in the settings",
        ),
        (
            'models = ["a"]\nsegments = "nowhere"\n[[lists]]\nmodel = "a"\nsegment = "big_spender"',
            "segments = 'nowhere': no such folder",
        ),
    ],
)
def test_settings_of_the_wrong_type_or_repeated_are_refused_before_the_run(tmp_path, settings, message):
    path = tmp_path / "refresh.toml"
    path.write_text(f'data = "d"\nout = "o"\n{settings}\n')
    with pytest.raises(PortraitError, match=message):
        load_config(path)


def test_retrain_if_drift_retrains_the_flagged_model_then_scores_again(registered, tmp_path, monkeypatch):
    import serving.score

    settings = write_settings(tmp_path, registered)
    experiment = tmp_path / f"{MODEL}.toml"  # the retrainer is a stand-in: the file needs only to be there
    experiment.write_text("")
    settings.write_text(settings.read_text() + f'\n[retrain]\n{MODEL} = "{experiment}"\n')
    monkeypatch.setattr(
        serving.score, "drift_report", lambda reference, features: {"flagged": {"spend_365d": 0.9}, "warnings": {}}
    )
    calls = []

    def retrainer(name, experiment, data):
        calls.append((name, experiment, data))
        return "trained v9; kept the champion"

    # the champion learned from these very files: not retrained (it registered and promoted an
    # equal version every night)
    result = refresh(load_config(settings), retrain_if_drift=True, retrainer=retrainer)
    assert calls == [] and result.manifest["retrained"] == []
    notes = next(s for s in result.manifest["steps"] if s["step"] == "score")["notes"]
    assert f"{MODEL}: not retrained: its champion learned from these very files" in " ".join(notes)
    assert not any("after retraining" in note for note in notes)  # nothing was retrained: not scored again
    import serving.registry

    monkeypatch.setattr(serving.registry, "trained_on", lambda name, alias: "another version of the files")
    result = refresh(load_config(settings), retrain_if_drift=True, retrainer=retrainer)
    assert calls == [(MODEL, experiment, registered)]
    manifest = result.manifest
    assert manifest["retrained"] == [
        {"model": MODEL, "experiment": str(experiment), "outcome": "trained v9; kept the champion"}
    ]
    notes = next(s for s in manifest["steps"] if s["step"] == "score")["notes"]
    assert notes[0] == f"drift flagged for {MODEL}: retraining"
    assert notes[-1] == f"drift still flagged after retraining: {MODEL}"
    assert manifest["retraining_advised"] is True and manifest["drift"][MODEL]["flagged"] == {"spend_365d": 0.9}


def test_a_run_as_of_a_date_inside_the_data_does_not_retrain(registered, tmp_path, monkeypatch):
    """Training reads the whole data set: for a backfill its labels would be the purchases after
    the run's date, and the champion would move with them."""
    import serving.score

    settings = write_settings(tmp_path, registered)
    earlier = "2024-10-01"
    settings.write_text(
        settings.read_text().replace(f'as_of = "{AS_OF}"', f'as_of = "{earlier}"')
        + f'\n[retrain]\n{MODEL} = "{settings}"\n'  # never read: no retraining here (but it must exist)
    )
    monkeypatch.setattr(
        serving.score, "drift_report", lambda reference, features: {"flagged": {"spend_365d": 0.9}, "warnings": {}}
    )
    calls = []
    result = refresh(load_config(settings), retrain_if_drift=True, retrainer=lambda *args: calls.append(args))
    assert calls == [] and "retrained" not in result.manifest
    notes = next(s for s in result.manifest["steps"] if s["step"] == "score")["notes"]
    assert notes[0].startswith(
        f"drift flagged (PSI > 0.25) for {MODEL}; not retrained: the data holds purchases up to "
    )
    assert notes[0].endswith(
        f"after {earlier}, and a model trained for this run would learn from them (retrain in a run of today's date)"
    )


@pytest.mark.parametrize("exchange", [True, False])
def test_a_run_folder_is_replaced_whole_with_or_without_an_atomic_exchange(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    final, work = tmp_path / "2025-01-01", tmp_path / ".2025-01-01.tmp-1"
    final.mkdir()
    (final / "old.txt").write_text("old")
    work.mkdir()
    (work / "new.txt").write_text("new")
    files.replace_directory(work, final)
    assert [p.name for p in tmp_path.iterdir()] == ["2025-01-01"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-step peak memory needs Linux's /proc")
def test_each_step_reports_its_own_peak_memory():
    import numpy as np

    from serving.refresh import StepMeter

    meter = StepMeter()
    block = np.ones(400 * 2**20 // 8)  # 400 MB, touched
    big = meter.read()
    del block
    small = StepMeter().read()
    assert big[2] >= 0.4 and big[2] - small[2] >= 0.3  # the second step's peak does not carry the first's


def test_a_table_gone_or_shrunk_since_the_previous_run_is_a_warning(tmp_path):
    """A broken feed (events gone, purchases cut to a third) is said in the validate step,
    against the valid rows the previous run read; growth and new tables are not."""
    from serving.refresh import _Job

    previous = tmp_path / "runs" / "2024-12-01"
    previous.mkdir(parents=True)
    rows = {"customers": 90, "purchases_valid": 900, "events_valid": 5000, "customers_valid": 100, "quarantined": 3}
    manifest = {"as_of": "2024-12-01", "steps": [{"step": "validate", "rows": rows}]}
    (previous / "manifest.json").write_text(json.dumps(manifest))
    job = _Job.__new__(_Job)  # only the previous run is read, and this run's manifest written
    job.previous, job.manifest = previous, {}
    now = {"customers": 40, "purchases_valid": 300, "customers_valid": 120, "quarantined": 0}
    assert job._changes_since_previous(now) == [
        "warning: purchases holds 300 valid rows against 900 in the run of 2024-12-01 (a broken or partial feed?)",
        "warning: the run of 2024-12-01 read 5,000 valid events rows; the data set has no events table now, so "
        "every feature built from it is empty (a broken feed?)",
    ]
    assert job.manifest["missing_tables"] == {"events": "2024-12-01"}
    # the next night, the table still gone: said again, from the run that last read it
    later = tmp_path / "runs" / "2024-12-02"
    later.mkdir()
    validate = {"step": "validate", "rows": now}
    later_manifest = {"as_of": "2024-12-02", "steps": [validate], "missing_tables": job.manifest["missing_tables"]}
    (later / "manifest.json").write_text(json.dumps(later_manifest))
    job.previous, job.manifest = later, {}
    assert job._changes_since_previous(now) == [
        "warning: the data set has had no events table since the run of 2024-12-01, so every feature built "
        "from it is empty (a broken feed?)"
    ]
    assert job.manifest["missing_tables"] == {"events": "2024-12-01"}
    assert job._changes_since_previous({**now, "events_valid": 10}) == []  # back: no longer said
    job.previous = previous
    assert job._changes_since_previous({**now, "purchases_valid": 950, "events_valid": 5100}) == []
    job.previous = None
    assert job._changes_since_previous(now) == []


def test_data_unchanged_or_restated_since_the_previous_run_is_a_warning(tmp_path):
    """The same files two nights running, or fewer purchase lines than the night before (history
    restated or cut), were published without a word, their entered and left counts read as
    customers' doings (a segment grew by 84 a night on a stopped feed)."""
    import types

    from serving.refresh import _Job

    previous = tmp_path / "runs" / "2024-12-01"
    previous.mkdir(parents=True)
    rows = {"purchases_valid": 900}
    manifest = {"as_of": "2024-12-01", "data_fingerprint": "f1", "steps": [{"step": "validate", "rows": rows}]}
    (previous / "manifest.json").write_text(json.dumps(manifest))
    job = _Job.__new__(_Job)
    job.previous, job.config = previous, types.SimpleNamespace(as_of=dt.date(2024, 12, 2))
    job.manifest = {"data_fingerprint": "f1"}
    assert job._changes_since_previous(rows) == [
        "warning: the data set is the same as in the run of 2024-12-01 (fingerprint f1): no new data since? Tags "
        "and segments entered or left tonight come from the date moving on alone"
    ]
    job.manifest = {"data_fingerprint": "f2"}
    assert job._changes_since_previous({"purchases_valid": 850}) == [
        "warning: purchases holds 850 valid rows, fewer than the 900 of the run of 2024-12-01: past lines restated "
        "or removed (or customers forgotten); tags and segments entered or left tonight may come from that, not "
        "from what customers did"
    ]
    assert job._changes_since_previous({"purchases_valid": 950}) == []
    job.config = types.SimpleNamespace(as_of=dt.date(2024, 11, 30))  # a backfill of the same files: expected
    job.manifest = {"data_fingerprint": "f1"}
    assert job._changes_since_previous(rows) == []
    # the data set's zone changed in portrait.toml between the runs
    manifest["timezone"] = "UTC"
    (previous / "manifest.json").write_text(json.dumps(manifest))
    job.manifest = {"data_fingerprint": "f2", "timezone": "America/Los_Angeles"}
    assert job._changes_since_previous(rows) == [
        "warning: the data set's timezone is America/Los_Angeles now, UTC in the run of 2024-12-01: times and days "
        "are read in another zone, so tags and segments entered or left tonight may come from that"
    ]


def test_a_run_well_after_the_latest_purchase_is_published_with_a_warning():
    import datetime as dt

    from serving.refresh import _Job

    job = _Job.__new__(_Job)  # only the settings' date is read
    job.config = type("Settings", (), {"as_of": dt.date(2025, 3, 1)})()
    first, last = "2024-01-01 09:00:00", "2025-01-10 18:00:00"
    assert job._check_as_of(first, last) == (
        "warning: the latest purchase (2025-01-10) is 50 days before 2025-03-01: the 30-day windows are empty "
        "for everyone and recency grows for all (a stopped feed, or a mistyped date?)"
    )
    job.config.as_of = dt.date(2025, 2, 10)  # 31 days: a quiet month is no warning
    assert job._check_as_of(first, last) is None


def test_one_runs_folder_given_for_a_refresh_root_is_refused_naming_the_root(tmp_path):
    from serving.refresh import check_refresh_root

    run = tmp_path / "out" / "runs" / "2025-01-01"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    (tmp_path / "out" / "LATEST").write_text("runs/2025-01-01")
    with pytest.raises(PortraitError, match=rf"--runs {run} is one run's folder; give the refresh root .*out \(with"):
        check_refresh_root(run)
    check_refresh_root(tmp_path / "out")  # the root itself
    check_refresh_root(tmp_path / "nothing yet")  # no run yet: said later as "no published run"
    scores = tmp_path / "scores"  # portrait score's folder, whose LATEST names a file
    scores.mkdir()
    (scores / "LATEST").write_text("scores_2025-01-01.parquet")
    with pytest.raises(PortraitError, match=rf"--runs {scores} is a scores folder .*: give --scores {scores}$"):
        check_refresh_root(scores)


def test_a_stop_signal_or_data_changing_during_the_run_ends_it_recorded_and_unpublished(registered, tmp_path):
    """SIGTERM (a scheduler's time limit) killed the job with no record; a data set re-exported
    while the run read it was published as one run of two versions of the data."""
    import shutil
    import signal

    data = tmp_path / "data"
    shutil.copytree(registered, data)
    settings = write_settings(tmp_path, data)
    root = tmp_path / "out"

    def stop_after_validate(record):
        if record.step == "validate":
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RefreshFailed, match=r"stopped by SIGTERM at step features; no LATEST yet; manifest: "):
        refresh(load_config(settings), on_step=stop_after_validate)
    failed = json.loads((root / "runs" / f"{AS_OF}.failed" / "manifest.json").read_text())
    assert failed["outcome"] == "failed" and failed["error"] == "stopped by SIGTERM at step features"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the run's only

    def query_interrupted(self, record):  # DuckDB turns the signal it saw into its own error
        refresh_module._TERMINATION.set()
        raise RuntimeError("Query interrupted")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refresh_module._Job, "validate", query_interrupted)
        with pytest.raises(RefreshFailed, match=r"stopped by SIGTERM at step validate; no LATEST yet"):
            refresh(load_config(settings))

    def ctrl_c_in_a_query(self, record):  # DuckDB's error for Ctrl-C was a failed step, exit 2
        raise RuntimeError("Query interrupted")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refresh_module._Job, "validate", ctrl_c_in_a_query)
        # said as SIGTERM is (the step, LATEST, the manifest: it was a bare "interrupted"), exit 130
        with pytest.raises(
            RefreshFailed, match=r"^refresh as of .* interrupted \(Ctrl-C\) at step validate; no LATEST yet; manifest: "
        ) as stopped:
            refresh(load_config(settings))
    assert stopped.value.exit_code == 130
    failed = json.loads((root / "runs" / f"{AS_OF}.failed" / "manifest.json").read_text())
    assert failed["error"] == "interrupted (Ctrl-C) at step validate" and failed["steps"] == []

    def query_under_way(self, record):  # minutes of work (40 billion rows), little memory
        con = connections.connect()

        def run():
            try:
                con.execute("SELECT SUM(hash(i) % 7) FROM range(40000000000) t(i)").fetchall()
                ended.append("completed")
            except duckdb.InterruptException:
                ended.append("interrupted")

        worker = threading.Thread(target=run, daemon=True)
        running.append((worker, con))
        worker.start()
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
        worker.join()

    # DuckDB interrupts a query by itself on Ctrl-C, not on SIGTERM: its Python handler ran when
    # the main thread next had control, which in a query was often its end (minutes on a large
    # data set, past a scheduler's grace period). The product's queries are interrupted at
    # once, in whichever thread they run (here one other than the main thread, which is
    # stopped by the handler itself).
    running, ended = [], []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refresh_module._Job, "validate", query_under_way)
        with pytest.raises(RefreshFailed, match=r"stopped by SIGTERM at step validate; no LATEST yet"):
            refresh(load_config(settings))
    worker, con = running[0]
    try:
        worker.join(timeout=60)
        assert ended == ["interrupted"]
    finally:
        con.interrupt()

    def reexport_during_scoring(record):
        if record.step == "score":
            table = data / "purchases.parquet"
            pd.read_parquet(table).iloc[:-5].to_parquet(table)

    with pytest.raises(
        RefreshFailed,
        match=r"the data set changed while the run read it \(purchases.parquet changed\).* nothing was published",
    ):
        refresh(load_config(settings), on_step=reexport_during_scoring)
    assert not (root / LATEST).exists() and run_dates(root) == []
    # none of these runs was published: none is in the segments folder's history (recorded only
    # once a run is published, whose segments evaluated the whole data set)
    assert SegmentStore(tmp_path / "segments").history("frequent").empty


@pytest.mark.parametrize("pointer", ["runs/2024-12-01\n", ""])
def test_latest_moves_to_a_run_newer_than_the_one_it_names_even_past_an_unpublished_folder(
    registered, tmp_path, pointer
):
    """A newer run whose LATEST write failed (or was killed before it) left a complete folder:
    a later run of an earlier date than that folder was called a backfill and LATEST stayed put.
    An empty LATEST named the root itself: every later run was a "backfill", LATEST never
    written again, and serve answered 503 "no scores"."""
    settings = write_settings(tmp_path, registered)
    root = tmp_path / "out"
    for day in ("2024-12-01", "2025-02-01"):  # published, and a newer one never published
        (root / "runs" / day).mkdir(parents=True)
        (root / "runs" / day / "manifest.json").write_text("{}")
    (root / LATEST).write_text(pointer)
    result = refresh(load_config(settings))
    if pointer:
        assert not result.is_backfill and (root / LATEST).read_text() == f"runs/{AS_OF}\n"
    else:  # as without a LATEST: it names the newest complete run
        assert (root / LATEST).read_text() == "runs/2025-02-01\n" and result.latest == root / "runs" / "2025-02-01"


def test_the_runs_lists_are_in_the_audit_log(first_run, audit_log):
    """A refresh's [[lists]] are files of customer ids, as every list pull: they were not audited."""
    from portrait.audit import read_audit_log

    _, root, _, _ = first_run
    lines = [
        line
        for line in read_audit_log(audit_log)
        if line["via"] == "refresh" and line["filter"]["out"].startswith(str(root))
    ]
    assert [(line["what"], line["filter"]["list"], line["count"]) for line in lines[:2]] == [
        ("portrait refresh list", "top100", 100),
        ("portrait refresh list", f"{MODEL}_frequent_top50", 50),
    ]
    assert lines[1]["filter"]["segment"] == "frequent" and lines[0]["filter"]["as_of"] == AS_OF
    assert lines[0]["filter"]["out"] == str(root / "runs" / AS_OF / "lists" / "top100.csv")


def test_a_list_the_audit_log_cannot_record_is_not_kept_in_the_failed_run(registered, tmp_path, monkeypatch):
    """The failed run's folder is kept for the operator: it held the list's customer ids, a pull
    the audit log could not account for."""
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    monkeypatch.setenv("PORTRAIT_AUDIT_LOG", str(blocked / "audit.log"))
    settings = write_settings(tmp_path, registered)
    with pytest.raises(RefreshFailed, match=r"failed at step lists: .*audit"):
        refresh(load_config(settings))
    failed = tmp_path / "out" / "runs" / f"{AS_OF}.failed"
    assert (failed / "manifest.json").is_file() and (failed / "scores").is_dir()
    assert not list((failed / "lists").glob("*.csv"))


def test_only_runs_with_a_manifest_count_toward_keep_and_strays_are_left_alone(tmp_path):
    """An empty 2099-01-01, a 2024-13-45 and a file named by a date each took one of keep's
    places: a refresh deleted three published runs for them (a user's test). A file named
    2024-01-01.failed was said removed and stayed."""
    from serving.refresh import prune, run_dates

    runs = tmp_path / "runs"
    for day in ("2024-10-05", "2024-10-06", "2024-10-07"):
        (runs / day).mkdir(parents=True)
        (runs / day / "manifest.json").write_text("{}")
    for stray in ("2099-01-01", "2024-13-45", "backup-2024-10-05"):
        (runs / stray).mkdir()
    (runs / "2024-10-10").write_text("")
    (runs / "2024-01-01.failed").write_text("")
    (tmp_path / LATEST).write_text("runs/2024-10-07\n")
    assert run_dates(tmp_path) == ["2024-10-05", "2024-10-06", "2024-10-07"]
    assert prune(tmp_path, keep=2) == ["2024-10-05"]
    assert sorted(p.name for p in runs.iterdir()) == [
        "2024-01-01.failed",
        "2024-10-06",
        "2024-10-07",
        "2024-10-10",
        "2024-13-45",
        "2099-01-01",
        "backup-2024-10-05",
    ]


def test_a_failure_record_that_cannot_be_written_is_said(tmp_path):
    from serving.refresh import _keep_failed

    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "a_file").write_text("")
    assert _keep_failed(work, tmp_path / "a_file" / "2025-01-01.failed", {"outcome": "failed"}) is not None
    assert _keep_failed(work, tmp_path / "2025-01-01.failed", {"outcome": "failed"}) is None
    assert (tmp_path / "2025-01-01.failed" / "manifest.json").is_file()


def test_a_stray_future_purchase_does_not_hide_a_stopped_feed():
    import datetime as dt

    from portrait.dataset import Dataset
    from serving.refresh import _Job

    purchases = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["a", "b", "c"],
            "ts": pd.to_datetime(
                ["2024-06-01 09:00", "2025-01-10 18:00", "2031-05-05 09:00"]
            ),  # the last: a placeholder
            "amount": [1.0, 2.0, 3.0],
        }
    )
    job = _Job.__new__(_Job)
    job.config = type("Settings", (), {"as_of": dt.date(2025, 3, 1)})()
    job.dataset = Dataset.from_frames(purchases=purchases)
    assert job._check_as_of("2024-06-01 00:00:00", "2031-05-05 00:00:00") == (
        "warning: the latest purchase (2025-01-10) is 50 days before 2025-03-01: the 30-day windows are empty "
        "for everyone and recency grows for all (a stopped feed, or a mistyped date?)"
    )
    assert job.last_purchase == dt.date(2031, 5, 5)  # what the data holds after the date, for the retraining guard


def test_retrain_files_and_tag_library_are_checked_when_the_settings_are_read(tmp_path):
    base = f'data = "{tmp_path}"\nout = "{tmp_path / "out"}"\n'
    settings = tmp_path / "refresh.toml"
    settings.write_text(base + 'tags = "tags/retial.toml"\n')
    with pytest.raises(PortraitError, match=r"tags = 'tags/retial.toml': no such file"):
        load_config(settings)
    settings.write_text(base + '[retrain]\nrepurchase_90d = "experiments/repurchase_90d.tmol"\n')
    config = load_config(settings)  # read only when retraining: a run without it does not need the files
    with pytest.raises(PortraitError, match=r"\[retrain\] repurchase_90d = .*tmol': no such experiment file"):
        refresh(config, retrain_if_drift=True)
    assert not (tmp_path / "out").exists()
    settings.write_text(base + 'as_of = "2018-13-01"\n')
    with pytest.raises(PortraitError, match=r"refresh.toml: as_of: cutoff '2018-13-01' is not a date"):
        load_config(settings)


def test_a_refresh_root_or_a_runs_folder_given_as_scores_says_where_the_scores_are(tmp_path):
    from portrait.outputs import latest_scores

    run = tmp_path / "out" / "runs" / "2025-01-01"
    (run / "scores").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    (tmp_path / "out" / "LATEST").write_text("runs/2025-01-01\n")
    with pytest.raises(
        PortraitError,
        match=r"out is a refresh root, not a scores folder: its latest scores are in .*runs/2025-01-01/scores",
    ):
        latest_scores(tmp_path / "out")
    with pytest.raises(
        PortraitError, match=r"2025-01-01 is one refresh run's folder: its scores are in .*2025-01-01/scores"
    ):
        latest_scores(run)


def test_the_data_change_check_reads_the_tables_and_settings_not_other_files_in_the_folder(tmp_path):
    from portrait.dataset import open_dataset
    from serving.refresh import _file_states

    (tmp_path / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,a,2024-01-01,1\n")
    (tmp_path / "portrait.toml").write_text("")
    (tmp_path / "outputs").mkdir()  # a refresh root kept inside the data folder
    (tmp_path / "outputs" / "x.parquet").write_text("")
    (tmp_path / "events").mkdir()  # a table split into part files, one added later
    (tmp_path / "events" / "part-0.csv").write_text("customer_id,ts,event_type\na,2024-01-01,view\n")
    names = sorted(Path(p).relative_to(tmp_path).as_posix() for p in _file_states(open_dataset(tmp_path)))
    assert names == ["events/part-0.csv", "portrait.toml", "purchases.csv"]


def test_the_default_as_of_is_today_in_the_data_sets_zone(tmp_path):
    """Kiritimati (+14) and Pago Pago (-11) are 25 hours apart: their dates always differ.

    By one day, or by two in the hour after Kiritimati's midnight (10:00-11:00 UTC).
    """
    import datetime as dt
    from zoneinfo import ZoneInfo

    days = {}
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        data = tmp_path / zone.replace("/", "_")
        data.mkdir()
        (data / "portrait.toml").write_text(f'timezone = "{zone}"\n')
        settings = tmp_path / f"{data.name}.toml"
        settings.write_text(f'data = "{data}"\nout = "{tmp_path / "out"}"\n')
        days[zone] = load_config(settings).as_of
        assert days[zone] == dt.datetime.now(ZoneInfo(zone)).date()
    assert days["Pacific/Kiritimati"] - days["Pacific/Pago_Pago"] in (dt.timedelta(days=1), dt.timedelta(days=2))


@pytest.mark.parametrize(
    "error, code",
    [
        (Busy("a personas fit holds the lock"), 75),
        (sqlite3.OperationalError("database is locked"), 75),
        (ValueError("a step's own failure"), 2),
    ],
)
def test_a_step_stopped_by_another_commands_lock_ends_the_run_as_busy(first_run, monkeypatch, error, code):
    """Exit 75 when the same run can simply be started again; 2 when something must be fixed."""
    from serving.refresh import _Job

    settings, root, _, _ = first_run
    pointer = (root / LATEST).read_text()

    def held(self, record):
        raise error

    monkeypatch.setattr(_Job, "validate", held)
    with pytest.raises(RefreshFailed, match="failed at step validate") as failed:
        refresh(load_config(settings, as_of="2025-01-29"))
    assert failed.value.exit_code == code and (root / LATEST).read_text() == pointer


def test_a_stop_while_the_run_is_published_waits_for_it(registered, tmp_path, monkeypatch):
    """SIGTERM waited for the rename and the pointer; Ctrl-C ended the command between them,
    the run's folder in place and LATEST naming no run (or the day before), unsaid."""
    import signal

    settings = write_settings(tmp_path, registered)
    real_replace = refresh_module.replace_directory

    def stopped_while_published(work, final, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        return real_replace(work, final, *args, **kwargs)

    monkeypatch.setattr(refresh_module, "replace_directory", stopped_while_published)
    # Python's own Ctrl-C handler, as in a command (pytest-xdist's workers ignore SIGINT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # said once the run is published (exit 130)
            refresh(load_config(settings))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the run's handler is gone
    finally:
        signal.signal(signal.SIGINT, before)
    assert (tmp_path / "out" / LATEST).read_text().strip() == f"runs/{AS_OF}"
    assert json.loads((tmp_path / "out" / "runs" / AS_OF / "manifest.json").read_text())["outcome"] == "ok"


def test_an_ignored_ctrl_c_stays_ignored_during_a_refresh():
    """A refresh started in the background by a script ignores SIGINT, as Python leaves it."""
    import signal

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with refresh_module._sigterm_ends_the_run():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
