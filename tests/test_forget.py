"""portrait forget: tombstones, the read side leaving forgotten people out, stored outputs."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import portrait.forget as forget_module
from marketing import manual
from portrait.dataset import open_dataset
from portrait.errors import PortraitError
from portrait.forget import forget
from portrait.validate import validate

# C1 and C2 are one person (they share the phone p-111); C2 also has an e-mail e-222.
PURCHASES = pd.DataFrame(
    {
        "order_id": ["o1", "o2", "o3", "o4", "o5", "o6"],
        "customer_id": ["C1", "C2", "C3", "C3", "C4", "C1"],
        "ts": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-06", "2024-01-07"],
        "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
    }
)
EVENTS = pd.DataFrame(
    {
        "customer_id": ["C2", "C3", "C2", "C4"],
        "ts": ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
        "event_type": ["view", "view", "add_to_cart", "view"],
    }
)
CUSTOMERS = pd.DataFrame({"customer_id": ["C1", "C3", "C4"], "region": ["north", "south", "east"]})
IDENTITIES = pd.DataFrame(
    {
        "customer_id": ["C1", "C2", "C2", "C4"],
        "id_type": ["phone_hash", "phone_hash", "email_hash", "phone_hash"],
        "id_value": ["p-111", "p-111", "e-222", "p-444"],
    }
)
PERSON = {"C1", "C2"}
SECRETS = ("p-111", "e-222")  # identity values: never printed, never stored


@pytest.fixture
def world(tmp_path, monkeypatch) -> dict[str, Path]:
    """A data set, an outputs folder with every kind of stored output, a segments folder and a
    manual tag store."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    PURCHASES.to_csv(data / "purchases.csv", index=False)
    EVENTS.to_parquet(data / "events.parquet", index=False)
    CUSTOMERS.to_csv(data / "customers.csv", index=False)
    IDENTITIES.to_parquet(data / "identities.parquet", index=False)
    outputs = tmp_path / "outputs"
    files = {
        "scores/features_2024-02-01.parquet": pd.DataFrame(
            {"customer_id": ["C1", "C3", "C4"], "spend_365d": [70.0, 70.0, 50.0]}
        ),
        "scores/scores_2024-02-01.parquet": pd.DataFrame(
            {"customer_id": ["C1", "C3", "C4"], "repurchase_90d_score": [0.9, 0.5, 0.1], "persona_id": [1, 2, 2]}
        ),
        "tags/tags_2024-02-01.parquet": pd.DataFrame(
            {"customer_id": ["C1", "C3", "C1"], "tag": ["VIP", "new", "loyal"], "group": ["g", "g", "h"]}
        ),
        "lists/top.csv": pd.DataFrame({"customer_id": ["C3", "C2", "C4"], "score": ["0.5", "0.9", "0.1"]}),
        "personas/assignments.parquet": pd.DataFrame(
            {"customer_id": ["C3", "C1", "C4"], "persona_id": [2, 1, 2], "persona_name": ["b", "a", "b"]}
        ),
        "refresh/runs/2024-02-01/segments/big.parquet": pd.DataFrame({"customer_id": ["C1", "C3"]}),
        "refresh/runs/2024-02-01/lists/top.csv": pd.DataFrame({"customer_id": ["C4", "C1"], "rank": ["1", "2"]}),
        "unrelated.parquet": pd.DataFrame({"customer_id": ["C3", "C4"], "x": [1, 2]}),
        "summary.csv": pd.DataFrame({"tag": ["VIP"], "customers": ["1"]}),
    }
    for name, frame in files.items():
        path = outputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".csv"):
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    segments = tmp_path / "segments"
    segments.mkdir()
    pd.DataFrame({"customer_id": ["C4", "C1", "C3"]}).to_parquet(segments / "big.members.parquet", index=False)
    store = tmp_path / "tags" / "manual.parquet"
    manual.record(store, "assign", "VIP", pd.Series(["C2", "C3"]), pd.Series(["C1", "C3"]), by="t")
    manual.record(store, "remove", "VIP", pd.Series(["C3"]), pd.Series(["C3"]), by="t")
    return {"data": data, "outputs": outputs, "segments": segments, "store": store, "files": files}


def run(*args: str) -> tuple[int, str]:
    """The command as portrait_cli.main registers it; a product error is exit 2 with its message,
    as in portrait_cli.main."""
    from portrait_cli import forget_cli
    from portrait_cli.main import console, out

    app = typer.Typer()
    app.callback()(lambda: None)
    forget_cli.register(app, out, console)  # the product's consoles (text, not markup)
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, PortraitError):
        return 2, str(result.exception)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _forget_args(world, *extra: str) -> list[str]:
    return [
        "forget",
        "C2",
        "--data",
        str(world["data"]),
        "--outputs",
        str(world["outputs"]),
        "--outputs",
        str(world["segments"]),
        "--manual-tags",
        str(world["store"]),
        *extra,
    ]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype="str", keep_default_na=False)
    return pd.read_parquet(path)


def _snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def test_forget_removes_the_person_from_every_output(world):
    code, output = run(*_forget_args(world, "--reason", "request 17"))
    assert code == 0, output
    outputs = world["outputs"]
    # Every file holding the person lost exactly the person's rows; the other rows are as they were.
    for name, original in world["files"].items():
        now = _read(outputs / name)
        if "customer_id" in original.columns:
            expected = original[~original["customer_id"].isin(PERSON)].reset_index(drop=True)
            if name.endswith(".csv"):
                expected = expected.astype("str")
            pd.testing.assert_frame_equal(now.reset_index(drop=True), expected, check_dtype=False)
            assert not set(now["customer_id"]) & PERSON
        else:
            pd.testing.assert_frame_equal(now, original.astype("str"))
    members = pd.read_parquet(world["segments"] / "big.members.parquet")
    assert members["customer_id"].tolist() == ["C4", "C3"]
    log = pd.read_parquet(world["store"])
    assert log["customer_id"].tolist() == ["C3", "C3"] and log["action"].tolist() == ["assign", "remove"]
    # What was removed where, and nothing else printed about the person.
    assert "C2: one person, 2 customer ids and 2 identity values forgotten" in output
    assert "tombstone: 4 entries added" in output and "(4 in all)" in output
    for name, rows in [
        ("scores/features_2024-02-01.parquet", 1),
        ("scores/scores_2024-02-01.parquet", 1),
        ("tags/tags_2024-02-01.parquet", 2),
        ("lists/top.csv", 1),
        ("personas/assignments.parquet", 1),
        ("refresh/runs/2024-02-01/segments/big.parquet", 1),
        ("refresh/runs/2024-02-01/lists/top.csv", 1),
    ]:
        assert f"{outputs / name}: {rows} row{'s' if rows > 1 else ''} removed" in output
    assert f"{world['segments'] / 'big.members.parquet'}: 1 row removed" in output
    assert f"{world['store']} (manual tags): 1 row removed" in output
    assert "unrelated.parquet" not in output
    assert "C1" not in output
    for secret in SECRETS:
        assert secret not in output


def test_files_without_the_person_are_not_rewritten(world):
    unrelated = world["outputs"] / "unrelated.parquet"
    summary = world["outputs"] / "summary.csv"
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (unrelated, summary)}
    assert run(*_forget_args(world))[0] == 0
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (unrelated, summary)} == before


def test_tombstone_holds_salted_hashes_only(world):
    assert run(*_forget_args(world, "--reason", "request 17"))[0] == 0
    folder = world["data"] / ".portrait"
    tombstones = pd.read_parquet(folder / "tombstones.parquet")
    assert sorted(tombstones["kind"]) == ["customer_id", "customer_id", "identity", "identity"]
    assert set(tombstones["reason"]) == {"request 17"} and tombstones["request"].nunique() == 1
    assert tombstones["hash"].str.fullmatch(r"[0-9a-f]{64}").all()
    for path in folder.iterdir():
        raw = path.read_bytes()
        for value in ("C1", "C2", *SECRETS):
            assert value.encode() not in raw, (path.name, value)
    # Salted: the hash of "C1" alone, or with the kind, is not what is stored.
    import hashlib

    assert hashlib.sha256(b"C1").hexdigest() not in set(tombstones["hash"])
    assert len((folder / "tombstones.salt").read_text().strip()) == 64


def test_reads_leave_the_person_out_and_validation_counts_them(world, tmp_path):
    before = open_dataset(world["data"]).fingerprint()
    assert run(*_forget_args(world))[0] == 0
    ds = open_dataset(world["data"])
    assert ds.fingerprint() != before
    report = validate(ds, tmp_path / "validation")
    by_table = {t.table: t for t in report.tables}
    # purchases o1, o2, o6; events two of C2; customers C1; identities the three rows of C1/C2.
    assert {t: by_table[t].forgotten for t in by_table} == {
        "purchases": 3,
        "events": 2,
        "customers": 1,
        "identities": 3,
    }
    assert by_table["purchases"].rows == 6 and by_table["purchases"].valid_rows == 3
    assert by_table["identities"].valid_rows == 1 and report.forgotten_rows == 9
    saved = json.loads((tmp_path / "validation" / "report.json").read_text())
    assert saved["forgotten_rows"] == 9 and saved["tables"][0]["forgotten"] == 3
    assert "purchases: 3 rows of forgotten customers left out (portrait forget)" in report.notes
    assert report.purchases_customers == 2 and report.quarantined_rows == 0
    con = ds.connect()
    for view in ("purchases", "events", "customers", "raw_purchases", "checked_events", "clean_identities"):
        ids = {r[0] for r in con.execute(f"SELECT DISTINCT customer_id FROM {view}").fetchall()}
        assert not ids & PERSON, view
    assert {r[0] for r in con.execute("SELECT customer_id FROM identity_map").fetchall()} == {"C4"}
    from features.build import build_features

    features = build_features(ds, "2024-02-01", families=["value"])
    assert sorted(features["customer_id"]) == ["C3", "C4"]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_the_profile_from_the_data_set_does_not_know_a_forgotten_person(world, kind):
    # An all-Parquet data set is profiled from an in-memory copy of the person's rows: the
    # tombstones must reach that copy too.
    from serving.profile import ProfileSources, UnknownCustomer, build_profile

    data = world["data"]
    if kind == "parquet":
        for name in ("purchases", "customers"):
            pd.read_csv(data / f"{name}.csv", dtype="str").to_parquet(data / f"{name}.parquet", index=False)
            (data / f"{name}.csv").unlink()
    sources = ProfileSources(data=data)
    assert build_profile("C3", sources, compute_reasons=False).customer_id == "C3"
    assert run(*_forget_args(world))[0] == 0
    for asked in ("C1", "C2"):  # the person forgotten and the id merged into them
        with pytest.raises(UnknownCustomer, match=f"unknown customer id '{asked}'"):
            build_profile(asked, sources, compute_reasons=False)
    assert build_profile("C3", sources, compute_reasons=False).customer_id == "C3"


def test_a_later_import_of_files_that_still_hold_the_person_leaves_them_out(world, tmp_path):
    assert run(*_forget_args(world))[0] == 0
    data = world["data"]
    # A re-export in another format, with a new purchase of C2 and a new id C9 sharing C2's
    # phone; padded values as an export writes them.
    (data / "purchases.csv").unlink()
    again = pd.concat(
        [
            PURCHASES,
            pd.DataFrame(
                {"order_id": ["o7", "o8"], "customer_id": ["C2", "C9"], "ts": ["2024-01-08"] * 2, "amount": [5.0, 6.0]}
            ),
        ]
    )
    again.to_parquet(data / "purchases.parquet", index=False)
    (data / "identities.parquet").unlink()
    identities = pd.concat(
        [IDENTITIES, pd.DataFrame({"customer_id": ["C9"], "id_type": ["phone_hash"], "id_value": ["p-111"]})]
    )
    identities.assign(customer_id=" " + identities["customer_id"] + " ").to_csv(data / "identities.csv", index=False)
    report = validate(open_dataset(data))
    by_table = {t.table: t for t in report.tables}
    assert by_table["purchases"].forgotten == 4 and by_table["purchases"].valid_rows == 4
    # The identities rows of C1 and C2, and C9's row with the forgotten phone.
    assert by_table["identities"].forgotten == 4 and by_table["identities"].valid_rows == 1
    con = open_dataset(data).connect()
    assert sorted(r[0] for r in con.execute("SELECT DISTINCT customer_id FROM purchases").fetchall()) == [
        "C3",
        "C4",
        "C9",
    ]  # C9 is not merged with anyone: the phone that linked it is forgotten


def test_unknown_id_changes_nothing(world):
    snapshot = _snapshot(world["outputs"], world["segments"], world["store"].parent)
    code, message = run("forget", "C2", "NOPE", "--data", str(world["data"]), "--outputs", str(world["outputs"]))
    assert code == 2 and "unknown customer id NOPE" in message and "nothing was changed" in message
    with pytest.raises(PortraitError, match="unknown customer ids NOPE, NADA"):
        forget(open_dataset(world["data"]), ["NOPE", "NADA"], outputs=[world["outputs"]])
    assert not (world["data"] / ".portrait").exists()
    assert _snapshot(world["outputs"], world["segments"], world["store"].parent) == snapshot


def test_bad_arguments_are_errors(world):
    code, message = run("forget", "--data", str(world["data"]))
    assert code == 2 and "give the customer ids" in message
    code, message = run("forget", "C2", "--data", str(world["data"]), "--outputs", "nowhere")
    assert code == 2 and "--outputs nowhere: no such folder" in message
    for reason in ("erasure request from jane.doe@example.com", "called back on +44 7700 900123"):
        code, message = run("forget", "C2", "--data", str(world["data"]), "--reason", reason)
        assert code == 2 and "--reason holds an e-mail address or a phone number" in message
    code, message = run("forget", "C2", "--data", str(world["data"]), "--reason", "x" * 121)
    assert code == 2 and "--reason is 121 characters; at most 120" in message
    assert not (world["data"] / ".portrait").exists()


def test_ids_from_a_file(world, tmp_path):
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"customer_id": ["C1"]}).to_csv(ids, index=False)
    code, output = run(
        "forget", "--ids", str(ids), "--data", str(world["data"]), "--outputs", str(world["outputs"]),
        "--manual-tags", str(world["store"]),
    )  # fmt: skip
    assert code == 0, output
    assert "C1: one person, 2 customer ids and 2 identity values forgotten" in output
    assert "C2" not in set(_read(world["outputs"] / "lists/top.csv")["customer_id"])


def test_dry_run_changes_nothing(world):
    snapshot = _snapshot(world["outputs"], world["segments"], world["store"].parent, world["data"])
    code, output = run(*_forget_args(world, "--dry-run"))
    assert code == 0, output
    assert "tombstone: 4 entries would be added" in output
    assert f"{world['outputs'] / 'tags/tags_2024-02-01.parquet'}: 2 rows would be removed" in output
    assert f"{world['store']} (manual tags): 1 row would be removed" in output
    assert "dry run: nothing was changed" in output
    assert _snapshot(world["outputs"], world["segments"], world["store"].parent, world["data"]) == snapshot


def test_a_crash_halfway_leaves_whole_files_and_a_rerun_completes(world, monkeypatch):
    real = forget_module.atomic_target
    calls = []

    @contextlib.contextmanager
    def failing_on_the_second(path):
        calls.append(path)
        with real(path) as tmp:
            yield tmp  # the new content is written in full to the temporary file...
            if len(calls) == 2:
                raise OSError("disk full")  # ...and the process fails before the rename

    monkeypatch.setattr(forget_module, "atomic_target", failing_on_the_second)
    original = _snapshot(world["outputs"], world["segments"])
    with pytest.raises(OSError, match="disk full"):
        forget(open_dataset(world["data"]), ["C2"], outputs=[world["outputs"], world["segments"]])
    first, second = calls
    assert PERSON.isdisjoint(_read(first)["customer_id"])  # new
    assert second.read_bytes() == original[second]  # old, whole
    for path, content in original.items():
        if path not in (first, second):
            assert path.read_bytes() == content
    assert not [p for p in world["outputs"].rglob(".*") if p.is_file()]  # no temporary left
    # The tombstone was recorded first: reads already leave the person out.
    con = open_dataset(world["data"]).connect()
    assert not {r[0] for r in con.execute("SELECT customer_id FROM purchases").fetchall()} & PERSON
    monkeypatch.setattr(forget_module, "atomic_target", real)
    result = forget(open_dataset(world["data"]), ["C2"], outputs=[world["outputs"], world["segments"]])
    assert result.tombstones_added == 0 and result.tombstones_total == 4
    assert second in {p for p, _ in result.removed} and first not in {p for p, _ in result.removed}
    for path in original:
        frame = _read(path)
        if "customer_id" in frame.columns:
            assert PERSON.isdisjoint(frame["customer_id"]), path


def test_probes_are_found_again_when_missing_or_made_by_another_hash(world):
    assert run(*_forget_args(world))[0] == 0
    probes = world["data"] / ".portrait" / "tombstones.probes.json"
    stored = json.loads(probes.read_text())
    for damage in ("delete", "other hash function"):
        if damage == "delete":
            probes.unlink()
        else:
            probes.write_text(json.dumps({**stored, "check": stored["check"] + 1}))
        con = open_dataset(world["data"]).connect()
        assert {r[0] for r in con.execute("SELECT DISTINCT customer_id FROM purchases").fetchall()} == {"C3", "C4"}
        assert json.loads(probes.read_text()) == stored  # stored again


def test_a_missing_salt_is_an_error(world):
    assert run(*_forget_args(world))[0] == 0
    (world["data"] / ".portrait" / "tombstones.salt").unlink()
    with pytest.raises(PortraitError, match="salt .* is missing or damaged"):
        open_dataset(world["data"]).connect()


def test_manual_forget_ids_counts_and_removes(tmp_path):
    store = tmp_path / "manual.parquet"
    assert manual.forget_ids(store, ["A"]) == 0  # no store: nothing to do
    manual.record(store, "assign", "VIP", pd.Series(["A2", "B"]), pd.Series(["A", "B"]), by="t")
    assert manual.forget_ids(store, ["A2"], dry_run=True) == 1
    assert len(pd.read_parquet(store)) == 2
    assert manual.forget_ids(store, ["A", "A2"]) == 1
    assert pd.read_parquet(store)["customer_id"].tolist() == ["B"]


def test_defaults_are_outputs_the_segments_folder_and_the_manual_store(world):
    code, output = run("forget", "C2", "--data", str(world["data"]))  # run in the fixture's folder
    assert code == 0, output
    assert "stored outputs checked: 10 files under outputs, segments" in output
    assert PERSON.isdisjoint(_read(world["outputs"] / "lists/top.csv")["customer_id"])
    assert PERSON.isdisjoint(pd.read_parquet(world["segments"] / "big.members.parquet")["customer_id"])
    assert "tags/manual.parquet (manual tags): 1 row removed" in output


def test_an_id_no_longer_in_the_data_is_known_by_its_tombstone(world):
    assert run(*_forget_args(world))[0] == 0
    data = world["data"]
    # The source system dropped the person too.
    PURCHASES[~PURCHASES["customer_id"].isin(PERSON)].to_csv(data / "purchases.csv", index=False)
    EVENTS[~EVENTS["customer_id"].isin(PERSON)].to_parquet(data / "events.parquet", index=False)
    CUSTOMERS[~CUSTOMERS["customer_id"].isin(PERSON)].to_csv(data / "customers.csv", index=False)
    IDENTITIES[~IDENTITIES["customer_id"].isin(PERSON)].to_parquet(data / "identities.parquet", index=False)
    code, output = run("forget", "C1", "C2", "--data", str(data), "--outputs", str(world["outputs"]))
    assert code == 0, output
    assert "C1: already forgotten" in output and "C2: already forgotten" in output
    assert "tombstone: 0 entries added" in output
    code, message = run("forget", "C5", "--data", str(data), "--outputs", str(world["outputs"]))
    assert code == 2 and "unknown customer id C5" in message


def test_an_unreadable_output_is_reported_and_the_exit_is_non_zero(world):
    broken = world["outputs"] / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    code, output = run(*_forget_args(world))
    assert code == 1
    assert f"cannot read {broken}" in output and "may still hold the customers" in output
    assert PERSON.isdisjoint(_read(world["outputs"] / "lists/top.csv")["customer_id"])  # the rest was done
    assert broken.read_bytes() == b"not parquet at all"


def test_a_forget_does_not_run_while_a_refresh_writes_into_its_outputs(world):
    """The refresh failed on the new tombstone but kept what it had written, the person's rows
    too, as runs/<date>.failed: forget now holds the refresh's lock (busy, 75, nothing done)."""
    from portrait.files import LockHeld, exclusive_lock
    from portrait.outputs import LOCK as REFRESH_LOCK

    root = world["outputs"] / "refresh"  # holds runs/
    (root / REFRESH_LOCK).write_text("")
    with exclusive_lock(root / REFRESH_LOCK, "a refresh, running"):
        snapshot = _snapshot(world["outputs"], world["segments"], world["store"].parent)
        for outputs in (world["outputs"], root, root / "runs" / "2024-02-01"):  # under, at or above it
            with pytest.raises(LockHeld, match=r"portrait refresh of .*refresh is already running"):
                forget(open_dataset(world["data"]), ["C2"], outputs=[outputs])
        code, message = run("forget", "C2", "--data", str(world["data"]), "--outputs", str(world["outputs"]))
        assert "is already running" in message  # exit 75 from portrait_cli.main: LockHeld is Busy
        assert not (world["data"] / ".portrait" / "tombstones.parquet").exists()
        assert _snapshot(world["outputs"], world["segments"], world["store"].parent) == snapshot
    forget(open_dataset(world["data"]), ["C2"], outputs=[world["outputs"]])  # once it has ended
    assert set(_read(world["outputs"] / "refresh/runs/2024-02-01/lists/top.csv")["customer_id"]) == {
        "C4"
    }  # C1 (C2) left


def test_a_killed_refreshs_folder_holding_the_person_is_removed_whole(world):
    """A refresh killed mid-run left runs/.2024-02-02.tmp-*/ with the person's scores; forget
    skipped hidden folders and said nothing of it (a user's test). Forget holds the refresh's
    lock, so such a folder is a killed run's, removed as the next refresh would."""
    from portrait.outputs import LOCK as REFRESH_LOCK

    root = world["outputs"] / "refresh"
    (root / REFRESH_LOCK).write_text("")
    killed = root / "runs" / ".2024-02-02.tmp-8991-ab12cd34"
    (killed / "scores").mkdir(parents=True)
    pd.DataFrame({"customer_id": ["C1", "C3"]}).to_parquet(killed / "scores" / "scores_2024-02-02.parquet")
    code, output = run(*_forget_args(world, "--dry-run"))
    assert code == 0 and f"{killed}: a killed refresh's folder, would be removed whole" in output
    assert killed.is_dir()
    stuck = root / "runs" / ".2024-02-03.tmp-9000-ef56ab78"
    stuck.mkdir()
    real_rmtree = shutil.rmtree
    with pytest.MonkeyPatch.context() as patch:  # one folder this user may not remove (root may remove any)
        patch.setattr(shutil, "rmtree", lambda path, **kw: None if Path(path) == stuck else real_rmtree(path, **kw))
        code, output = run(*_forget_args(world))
    assert code == 1 and f"{killed}: a killed refresh's folder, removed whole" in output
    assert f"cannot read {stuck}: a killed refresh's folder that could not be removed whole" in output
    assert f"{stuck}: a killed refresh's folder, removed" not in output  # not said removed
    assert not killed.exists() and stuck.exists() and (root / "runs" / "2024-02-01").is_dir()


def test_a_forget_waits_for_a_segment_refresh_recording_into_its_outputs(world, monkeypatch):
    """It rewrote the members files while a refresh recorded into them (each lost the other's
    writes); it now holds the folder's recording lock, waiting for a refresh that holds it."""
    import portrait.forget as forget_module
    from portrait.files import LockHeld, exclusive_lock
    from portrait.outputs import SEGMENT_RECORD_LOCK

    monkeypatch.setattr(forget_module, "SEGMENT_RECORD_WAIT_SECONDS", 0.2)
    with exclusive_lock(world["segments"] / SEGMENT_RECORD_LOCK, "a refresh recording"):
        snapshot = _snapshot(world["outputs"], world["segments"], world["store"].parent)
        with pytest.raises(LockHeld, match=r"a segment refresh recording into .*segments is already running"):
            forget(open_dataset(world["data"]), ["C2"], outputs=[world["outputs"], world["segments"]])
        assert _snapshot(world["outputs"], world["segments"], world["store"].parent) == snapshot
    forget(open_dataset(world["data"]), ["C2"], outputs=[world["outputs"], world["segments"]])
    assert "C1" not in set(_read(world["segments"] / "big.members.parquet")["customer_id"])


def test_a_person_of_many_merged_ids_is_forgotten_only_when_asked_for_whole(tmp_path, monkeypatch):
    """A guest id sharing a value with each of 25 customers (each value held by two ids, under
    the 20-id cap) makes one person of 26: forgetting one of them tombstoned all 26 for good.
    Refused now, before any write, unless --whole-person; --dry-run says how many."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    customers = [f"K{i:02d}" for i in range(25)]
    pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(26)],
            "customer_id": [*customers, "guest"],
            "ts": ["2024-01-05 10:00:00"] * 26,
            "amount": [10.0] * 26,
        }
    ).to_csv(data / "purchases.csv", index=False)
    pd.DataFrame(
        {
            "customer_id": [who for c in customers for who in (c, "guest")],
            "id_type": ["device"] * 50,
            "id_value": [f"d-{i}" for i in range(25) for _ in range(2)],
        }
    ).to_parquet(data / "identities.parquet", index=False)
    code, message = run("forget", "K07", "--data", str(data))
    assert code == 2 and "K07 is one person of 26 customer ids merged through identities (more than 20" in message
    assert "--whole-person" in message and "nothing was changed" in message
    assert not (data / ".portrait").exists()
    code, output = run("forget", "K07", "--data", str(data), "--dry-run")
    assert code == 0 and "K07: one person, 26 customer ids and 25 identity values would be forgotten" in output
    assert "a run without --dry-run refuses it unless --whole-person is given" in output
    code, output = run("forget", "K07", "--data", str(data), "--whole-person")
    assert code == 0 and "K07: one person, 26 customer ids and 25 identity values forgotten" in output


def test_forgotten_among_hashes_ids_as_the_data_sets_views_do(world):
    """A profile asks the tombstones of one id at a time (hashed in Python, read once per file
    version): the same answer as the hashes DuckDB computes for the views."""
    from portrait import connections
    from portrait.forget import _SALT_VARIABLE, _forgotten_ids, _read_salt, folder_of, forgotten_among

    dataset = open_dataset(world["data"])
    assert forgotten_among(world["data"], ["C1"]) == set()  # no tombstones yet
    forget(dataset, ["C2"], outputs=[])
    ids = ["C1", "C2", "C3", "C4", "c2", "C2 ", "Ünï 客户"]
    folder = folder_of(dataset)
    with connections.connect() as con:
        con.execute(f"SET VARIABLE {_SALT_VARIABLE} = ?", [_read_salt(folder)])
        expected = _forgotten_ids(con, folder, ids)
    assert forgotten_among(world["data"], ids) == expected and "C2" in expected and "C3" not in expected
