"""The API as build_app(settings): keys with roles, the audit log of every pull and export, the
one mapping of the product's errors to HTTP answers, response models, the settings the workers
get, and --runs followed without a restart. A hand-made scores folder over a five-customer data
set (no model is trained here)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

from portrait.audit import read_audit_log, record_export
from portrait.errors import (
    ConfigError,
    Conflict,
    ContractError,
    Forbidden,
    NotFound,
    PortraitError,
    Unauthorized,
    Unavailable,
)
from serving.api import build_app
from serving.keys import add_key, hash_key, load_keys
from serving.settings import SETTINGS_ENV, ServeSettings
from tests.conftest import write_tables
from tests.test_marketing_crowd import AS_OF, CUSTOMERS, EVENTS, PURCHASES

IDS = ["A", "B", "C", "D", "E"]
SCORES = [0.9, 0.7, 0.5, 0.3, 0.1]
LOG_FIELDS = {"time", "who", "via", "what", "filter", "count", "left_out"}


def write_scores(folder: Path, data: Path, as_of: str = AS_OF, scores=SCORES) -> Path:
    """A scores folder as portrait score writes it, by hand: model m with stored reasons."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        {
            "customer_id": IDS,
            "as_of": pd.Timestamp(as_of),
            "m_score": scores,
            "m_percentile": [90.0, 70.0, 50.0, 30.0, 10.0],
            "m_decile": [10, 8, 6, 4, 2],
            "m_version": "3",
            "m_reason_1": ["spend in the last 90 days: 75.00"] * 5,
            "m_reason_2": ["age band: 25-34"] * 5,  # scored before reasons left sensitive attributes out
            "m_reason_3": [None] * 5,
        }
    )
    table.to_parquet(folder / f"scores_{as_of}.parquet", index=False)
    features = pd.DataFrame(
        {
            "customer_id": IDS,
            "orders_lifetime": [2.0, 1.0, 3.0, 4.0, 0.0],
            "spend_lifetime": [30.0, 100.0, 46.0, 200.0, 0.0],
            "days_since_last_purchase": [29.0, 25.0, 10.0, 29.0, None],
            "attr_age_band": ["25-34", "25-34", "35-44", None, "35-44"],
        }
    )
    features.to_parquet(folder / f"features_{as_of}.parquet", index=False)
    summary = {"as_of": as_of, "dataset_path": str(data)}
    (folder / f"scores_{as_of}.summary.json").write_text(json.dumps(summary))
    (folder / "LATEST").write_text(f"scores_{as_of}.parquet")
    return folder


@pytest.fixture
def world(tmp_path):
    return _world(tmp_path, CUSTOMERS, ["age_band"])


def _world(tmp_path, customers: pd.DataFrame, sensitive: list[str]):
    """Served settings over a small data set with ``customers`` and its ``sensitive`` columns,
    a segment "meat", and two keys: (settings, {role: headers})."""
    import json

    from marketing.segments import Evaluated, Segment, SegmentStore, record_refresh

    data = write_tables(tmp_path / "data", purchases=PURCHASES, events=EVENTS, customers=customers)
    (data / "portrait.toml").write_text(f"[privacy]\nsensitive_columns = {json.dumps(sensitive, ensure_ascii=False)}\n")
    scores = write_scores(tmp_path / "scores", data)
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("meat", where="purchased(category = 'Meat') > 0"))
    record_refresh(store, Evaluated("meat", pd.Series(["C", "D"]), 5, dt.date.fromisoformat(AS_OF)))
    keys = tmp_path / "keys.toml"
    marketing, analyst = add_key(keys, "campaigns", "marketing"), add_key(keys, "alice", "analyst")
    settings = ServeSettings(scores=scores, segments=store.folder, keys=keys, audit=tmp_path / "audit.log")
    return settings, {"marketing": {"X-API-Key": marketing}, "analyst": {"X-API-Key": analyst}}


def test_keys_file_holds_hashes_only_and_names_a_role(tmp_path):
    keys = tmp_path / "keys.toml"
    key = add_key(keys, "campaigns", "marketing")
    text = keys.read_text()
    assert key not in text and hash_key(key) in text
    assert text == f'[keys."campaigns"]\nrole = "marketing"\nhash = "{hash_key(key)}"\n'
    assert keys.stat().st_mode & 0o777 == 0o600  # the owner's only
    (caller,) = load_keys(keys).values()
    assert (caller.name, caller.role.value) == ("campaigns", "marketing")
    with pytest.raises(ConfigError, match="already has a key named 'campaigns'"):
        add_key(keys, "campaigns", "analyst")
    with pytest.raises(ConfigError, match="already has a key named 'campaigns'"):  # one name in the audit log
        add_key(keys, "Campaigns", "analyst")
    dotted = add_key(keys, "team.eu", "analyst")  # a dot is a table separator in TOML unless quoted
    assert {c.name: c.role.value for c in load_keys(keys).values()} == {"campaigns": "marketing", "team.eu": "analyst"}
    assert load_keys(keys)[hash_key(dotted)].name == "team.eu"
    with pytest.raises(ValueError, match="'boss' is not a valid Role"):
        add_key(keys, "bob", "boss")


@pytest.mark.parametrize(
    "text, message",
    [
        ('[keys.x]\nrole = "admin"\nhash = "sha256:' + "0" * 64 + '"\n', "role 'admin' is not one of"),
        ('[keys.x]\nrole = "analyst"\nhash = "s3cret"\n', "hash must be 'sha256:' and 64 hex digits"),
        ('[keys.x]\nrole = "analyst"\nkey = "s3cret"\n', r"unknown field\(s\) \['key'\]"),
        ('[users.x]\nrole = "analyst"\n', r"unknown section\(s\) \['users'\]"),
        ("[keys.x\n", "cannot be read"),
    ],
)
def test_a_bad_keys_file_stops_with_a_message(tmp_path, text, message):
    keys = tmp_path / "keys.toml"
    keys.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_keys(keys)


def test_keys_add_command_prints_the_key_once(tmp_path):
    from portrait_cli.main import _register_later_commands, app

    _register_later_commands()
    keys = tmp_path / "keys.toml"
    result = CliRunner().invoke(app, ["keys", "add", "alice", "--role", "analyst", "--keys", str(keys)])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("pk_") and len(key) > 40
    assert key not in keys.read_text() and load_keys(keys)[hash_key(key)].name == "alice"
    listed = CliRunner().invoke(app, ["keys", "list", "--keys", str(keys)])
    assert listed.output.split()[:2] == ["alice", "analyst"] and key not in listed.output
    refused = CliRunner().invoke(app, ["keys", "add", "bob", "--role", "boss", "--keys", str(keys)])
    assert refused.exit_code != 0 and "boss" in refused.output


def test_marketing_key_is_refused_analyst_routes_with_a_403_naming_its_role(world):
    settings, keys = world
    client = TestClient(build_app(settings))
    body = {"model": "m", "rows": [{"x": 1.0}]}
    refused = client.post("/score", json=body, headers=keys["marketing"])
    assert refused.status_code == 403
    assert refused.json() == {
        "detail": "the key 'campaigns' has the marketing role, which may not use POST /score: it needs an analyst key"
    }
    models = client.get("/models", headers=keys["marketing"])
    assert models.status_code == 403 and "GET /models" in models.json()["detail"]
    for path in ("/lists/m?top=2", "/segments", "/segments/meat", "/tags", "/customers/A"):
        assert client.get(path, headers=keys["marketing"]).status_code == 200, path
    # a mistyped parameter is refused, not ignored (tpo=2 returned every customer)
    typo = client.get("/lists/m?tpo=2", headers=keys["marketing"])
    assert typo.status_code == 422 and "unknown query parameter(s) tpo for /lists/m: it takes " in typo.json()["detail"]
    twice = client.get("/lists/m?top=5&top=6", headers=keys["marketing"])  # top 6 was served, top 5 dropped
    assert (
        twice.status_code == 422
        and twice.json()["detail"] == "query parameter(s) top given more than once; give each once"
    )
    assert client.get("/lists/nope", headers=keys["marketing"]).status_code == 404
    assert client.get("/lists/m?tpo=2").status_code == 401  # no key: not told what the route takes


def test_analyst_key_passes_the_role_check(world, tracking):
    from portrait.tracking import ensure_store

    ensure_store()  # the session's store, made now if no test used it before (a missing one is a 503)
    settings, keys = world
    client = TestClient(build_app(settings))
    body = {"model": "m", "rows": [{"x": 1.0}]}
    # past the role check, the model is looked up: none is registered under this name here
    answer = client.post("/score", json=body, headers=keys["analyst"])
    assert answer.status_code == 404 and "no registered model named 'm'" in answer.json()["detail"]
    assert client.get("/models", headers=keys["analyst"]).status_code == 200
    # a name no model can have is not asked of the registry: MLflow's error (a 503) named its path
    for name in ("a:b", "../../etc", "", " ", "x" * 201):
        answer = client.post("/score", json={**body, "model": name}, headers=keys["analyst"])
        detail = str(answer.json()["detail"])
        assert answer.status_code in (404, 422) and "mlflow" not in detail.lower() and "sqlite" not in detail, detail
        if "/" not in name and name.strip():  # the client would make a '/'-name another path, a blank one none
            listed = client.get(f"/lists/{name}", headers=keys["analyst"])
            assert listed.status_code in (404, 422) and "sqlite" not in listed.text, listed.text  # no scores of it
    too_long = client.get("/lists/" + "x" * 3000, headers=keys["analyst"])  # not repeated whole
    assert too_long.status_code == 422 and "x" * 300 not in too_long.text


def test_wrong_or_missing_key_is_401_and_docs_need_a_key(world):
    settings, keys = world
    client = TestClient(build_app(settings))
    assert client.get("/health").status_code == 200  # open
    for path in ("/customers/A", "/lists/m", "/segments", "/tags", "/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers={"X-API-Key": "pk_guessed"}).status_code == 401, path
    assert client.get("/lists/m").json() == {"detail": "missing or wrong X-API-Key"}
    for role in ("marketing", "analyst"):
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(path, headers=keys[role]).status_code == 200, (role, path)


def test_marketing_profiles_leave_out_sensitive_attributes(world):
    settings, keys = world
    client = TestClient(build_app(settings))
    answered = client.get("/customers/A", headers=keys["analyst"])
    assert str(settings.scores.parent) not in answered.text  # notes name folders, not where they are
    full = answered.json()
    limited = client.get("/customers/A", headers=keys["marketing"]).json()
    assert {a["name"]: a["value"] for a in full["attributes"]["values"]} == {"age_band": "25-34"}
    assert limited["attributes"]["values"] == [] and limited["attributes"]["sensitive_left_out"] == 1
    assert full["scores"]["models"][0]["score"] == 0.9
    # A reason on a sensitive attribute stored by older scores is dropped, for every role.
    assert full["scores"]["models"][0]["reasons"] == ["spend in the last 90 days: 75.00"]
    assert limited["scores"]["models"][0]["reasons"] == ["spend in the last 90 days: 75.00"]
    missing = client.get("/customers/nobody", headers=keys["marketing"])
    assert missing.status_code == 404 and "unknown customer id 'nobody'" in missing.json()["detail"]
    # The data set is named, not where the server keeps it (serving.routes.errors).
    assert str(settings.data or settings.scores) not in missing.text and "/" not in missing.json()["detail"]
    too_long = client.get("/customers/" + "x" * 201, headers=keys["marketing"])  # not echoed back whole
    assert too_long.status_code == 422 and too_long.json()["detail"][0]["type"] == "string_too_long"


def test_marketing_keys_cannot_filter_or_drill_down_by_a_sensitive_attribute(world):
    """A list filtered by a sensitive attribute, or a report cell of one, tells each customer's
    value: refused to the marketing role (403 naming it), answered for an analyst."""
    settings, keys = world
    client = TestClient(build_app(settings))
    params = {"where": "attr_age_band = '25-34'", "top": 5}
    refused = client.get("/lists/m", params=params, headers=keys["marketing"])
    assert refused.status_code == 403, refused.text
    assert "may not filter by sensitive attributes (attr_age_band" in refused.json()["detail"]
    assert client.get("/lists/m", params=params, headers=keys["analyst"]).status_code == 200
    allowed = client.get("/lists/m", params={"where": "orders_lifetime >= 1"}, headers=keys["marketing"])
    assert allowed.status_code == 200, allowed.text
    rows = allowed.json()["customers"]
    assert rows and all(r["reason_1"] == "spend in the last 90 days: 75.00" and r["reason_2"] is None for r in rows)
    cell = {"segment": "meat", "cell": "age_band = 25-34"}
    drill = client.get("/crowds/customers", params=cell, headers=keys["marketing"])
    assert drill.status_code == 403 and "may not drill into report cells by sensitive" in drill.json()["detail"]


def test_a_report_cell_named_by_a_sensitive_columns_own_name_is_refused(tmp_path):
    """A cell names its dimension by the column's own name as well as by its slug: a marketing
    key pulled the customers of "género = f" and "Marital Status = Married", which the check of
    ASCII words (genero, marital, status) did not see."""
    customers = CUSTOMERS.assign(
        **{"género": ["f", "m", "f", "m", "f"], "Marital Status": ["Married", "Single", "Married", "Single", None]}
    )
    settings, keys = _world(tmp_path, customers, ["GÉNERO", "marital status"])
    marketing, analyst = keys["marketing"]["X-API-Key"], keys["analyst"]["X-API-Key"]
    client = TestClient(build_app(settings))
    for cell in ("género = f", "ge\u0301nero = f", "Marital Status = Married", "marital status = Married"):
        drill = client.get(
            "/crowds/customers", params={"segment": "meat", "cell": cell}, headers={"X-API-Key": marketing}
        )
        assert drill.status_code == 403, (cell, drill.text)
        assert "may not drill into report cells by sensitive" in drill.json()["detail"]
    answered = client.get(
        "/crowds/customers", params={"segment": "meat", "cell": "género = f"}, headers={"X-API-Key": analyst}
    )
    assert answered.status_code == 200, answered.text


def test_a_revoked_key_stops_working_without_a_restart(world):
    settings, keys = world
    client = TestClient(build_app(settings))
    assert client.get("/tags", headers=keys["marketing"]).status_code == 200
    text = settings.keys.read_text()
    settings.keys.write_text(text[text.index('[keys."alice"]') :])  # the campaigns section deleted
    assert client.get("/tags", headers=keys["marketing"]).status_code == 401
    assert client.get("/tags", headers=keys["analyst"]).status_code == 200
    settings.keys.write_text("[keys.broken\n")
    broken = client.get("/tags", headers=keys["analyst"])
    assert broken.status_code == 503 and "nobody can be let in" in broken.json()["detail"]
    assert "line 1" not in broken.json()["detail"]  # how the file is broken: the operator's log only
    health = client.get("/health")  # a server that lets nobody in is not healthy
    assert health.status_code == 503 and "nobody can be let in" in health.json()["detail"]


def test_without_a_keys_file_the_single_key_is_an_analyst(world):
    settings, _ = world
    single = settings.model_copy(update={"keys": None, "api_key": SecretStr("s3cret")})
    client = TestClient(build_app(single))
    assert client.get("/models").status_code == 401
    assert client.post("/score", json={"model": "m", "rows": [{}]}).status_code == 401
    pulled = client.get("/lists/m", params={"top": 1}, headers={"X-API-Key": "s3cret"})
    assert pulled.status_code == 200
    assert read_audit_log(settings.audit)[-1]["who"] == "api-key"


def _no_ids(line: dict, ids: list[str]) -> None:
    """No customer id anywhere in an audit line, as a value or inside a list."""
    assert set(line) <= LOG_FIELDS, line

    def values(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from values(v)
        elif isinstance(value, list):
            for v in value:
                yield from values(v)
        else:
            yield value

    assert not set(ids) & {str(v) for v in values(line)}, line


def test_every_api_pull_is_audited_with_its_count_and_no_ids(world):
    settings, keys = world
    client = TestClient(build_app(settings))
    listed = client.get("/lists/m", params={"top": 2, "where": "spend_lifetime > 10"}, headers=keys["marketing"])
    assert listed.status_code == 200 and listed.json()["count"] == 2
    page = client.get("/segments/meat/customers", params={"limit": 1}, headers=keys["analyst"])
    assert page.json()["customer_ids"] == ["C"]
    client.get("/customers/A", headers=keys["analyst"])  # a profile is not an export
    client.get("/lists/m", params={"where": "nonsense >"}, headers=keys["analyst"])  # refused: nothing pulled
    first, second = read_audit_log(settings.audit)
    assert first["time"].endswith("Z") and dt.datetime.fromisoformat(first["time"]).tzinfo is not None
    assert {k: v for k, v in first.items() if k != "time"} == {
        "who": "campaigns",
        "via": "api",
        "what": "GET /lists/{model}",
        "filter": {"model": "m", "as_of": AS_OF, "top": 2, "where": "spend_lifetime > 10", "offset": 0, "limit": 2},
        "count": 2,
    }
    assert {k: v for k, v in second.items() if k != "time"} == {
        "who": "alice",
        "via": "api",
        "what": "GET /segments/{name}/customers",
        "filter": {"segment": "meat", "as_of": AS_OF, "offset": 0, "limit": 1},
        "count": 1,
    }
    for line in (first, second):
        _no_ids(line, IDS)


def test_a_list_is_served_in_pages_of_one_scores_table(world):
    settings, keys = world
    client = TestClient(build_app(settings))
    pages, offset, version = [], 0, None
    while offset is not None:
        params = {"limit": 2, "offset": offset, **({"version": version} if version else {})}
        answer = client.get("/lists/m", params=params, headers=keys["analyst"]).json()
        assert (answer["total"], answer["limit"], answer["offset"]) == (5, 2, offset)
        pages.append([c["customer_id"] for c in answer["customers"]])
        offset, version = answer["next_offset"], answer["version"]
    assert pages == [["A", "B"], ["C", "D"], ["E"]]  # best score first, every customer once
    inside_top = client.get("/lists/m", params={"top": 3, "limit": 2, "offset": 2}, headers=keys["analyst"]).json()
    assert (inside_top["total"], inside_top["next_offset"], inside_top["customers"][0]["customer_id"]) == (3, None, "C")
    whole_top = client.get("/lists/m", params={"top": 4}, headers=keys["analyst"]).json()  # no limit: the whole top
    assert (whole_top["count"], whole_top["limit"], whole_top["next_offset"]) == (4, 4, None)
    past_a_page = client.get("/lists/m", params={"top": 20_000}, headers=keys["analyst"]).json()
    assert past_a_page["limit"] == 1_000  # a top past 10,000 rows: pages of the default size
    past_the_end = client.get("/lists/m", params={"offset": 9}, headers=keys["analyst"]).json()
    assert (past_the_end["count"], past_the_end["next_offset"], past_the_end["customers"]) == (0, None, [])
    # the same date scored again (a new champion): the next page is refused, not drawn from another ranking
    scores_file = settings.scores / f"scores_{AS_OF}.parquet"
    rescored = pd.read_parquet(scores_file).assign(m_score=SCORES[::-1])
    scores_file.unlink()
    rescored.to_parquet(scores_file, index=False)
    stale = client.get("/lists/m", params={"offset": 2, "version": version}, headers=keys["analyst"])
    assert stale.status_code == 409
    assert stale.json()["detail"] == (
        f"the list changed since its first page (its scores were replaced, now as of {AS_OF}, or the consent rules "
        "changed): start again at offset 0"
    )
    fresh = client.get("/lists/m", params={"limit": 1}, headers=keys["analyst"]).json()
    assert fresh["version"] != version and fresh["customers"][0]["customer_id"] == "E"
    # a version no page had (made up): not "the list changed since its first page" (409)
    made_up = client.get("/lists/m", params={"offset": 2, "version": "bogus"}, headers=keys["analyst"])
    assert made_up.status_code == 422 and made_up.json()["detail"][0]["loc"] == ["query", "version"]
    too_big = client.get("/lists/m", params={"limit": 10_001}, headers=keys["analyst"])
    assert too_big.status_code == 422 and too_big.json()["detail"][0]["loc"] == ["query", "limit"]
    counts = [line["count"] for line in read_audit_log(settings.audit)]
    assert counts == [2, 2, 1, 1, 4, 5, 0, 1]  # each page served is recorded with its rows; refusals are not


def test_a_pull_that_cannot_be_audited_is_refused(world, tmp_path):
    settings, keys = world
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the log's folder should be")
    client = TestClient(build_app(settings.model_copy(update={"audit": blocked / "audit.log"})))
    answer = client.get("/lists/m", params={"top": 2}, headers=keys["analyst"])
    assert answer.status_code == 503
    assert "cannot write the audit log" in answer.json()["detail"] and "customers" not in answer.json()


def test_audit_lines_are_appended_one_per_call(tmp_path):
    log = tmp_path / "logs" / "audit.log"
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    record_export(log, "os:ana", "portrait list", {"model": "m", "top": None, "where": "x > 1"}, 7, now=when)
    record_export(log, "os:ana", "portrait list", {"model": "m"}, 0, left_out={"suppressed": 2}, now=when)
    lines = log.read_text().splitlines()
    assert json.loads(lines[0]) == {
        "time": "2026-01-02T03:04:05.678Z",
        "who": "os:ana",
        "via": "cli",
        "what": "portrait list",
        "filter": {"model": "m", "where": "x > 1"},
        "count": 7,
    }
    assert json.loads(lines[1])["left_out"] == {"suppressed": 2} and len(lines) == 2
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    # a condition naming customer ids: the log keeps its shape, never the ids it compares
    where = "customer_id in ('2070', 'O''Brien') and category = 'dairy'"
    record_export(log, "os:ana", "portrait list", {"model": "m", "where": where}, 2, now=when)
    logged = json.loads(log.read_text().splitlines()[2])["filter"]["where"]
    assert logged == "customer_id in ('...', '...') and category = '...'"
    # any condition: a value holding a phone number or an e-mail address, a bare long number
    where = "attr_notes = 'call 07700 900123' and attr_card = 4111111111110005 and attr_region = 'north' and x > 12"
    record_export(log, "os:ana", "portrait list", {"model": "m", "where": where}, 2, now=when)
    logged = json.loads(log.read_text().splitlines()[3])["filter"]["where"]
    assert logged == "attr_notes = '...' and attr_card = ... and attr_region = 'north' and x > 12"
    where = "customer_id <> 'x' and attr_card = 4111111111110005"
    record_export(log, "os:ana", "portrait list", {"model": "m", "where": where}, 2, now=when)
    assert json.loads(log.read_text().splitlines()[4])["filter"]["where"] == "customer_id <> '...' and attr_card = ..."


def test_cli_exports_are_audited(world, tmp_path, monkeypatch):
    from portrait_cli.main import _register_later_commands, app

    settings, _ = world
    log = tmp_path / "cli_audit.log"
    monkeypatch.setenv("PORTRAIT_AUDIT_LOG", str(log))
    monkeypatch.setenv("USER", "ana")
    monkeypatch.setenv("LOGNAME", "ana")
    _register_later_commands()
    runner = CliRunner()
    data = str(tmp_path / "data")
    commands = [
        ["list", "--model", "m", "--scores", str(settings.scores), "--top", "3", "--out", str(tmp_path / "l.csv")],
        [
            "segment",
            "export",
            "meat",
            "--data",
            data,
            "--as-of",
            AS_OF,
            "--segments",
            str(settings.segments),
            "--out",
            str(tmp_path / "s.csv"),
        ],
        [
            "crowd",
            "export",
            "--all",
            "--cell",
            "favourite_payment = cash",
            "--data",
            data,
            "--as-of",
            AS_OF,
            "--out",
            str(tmp_path / "c.csv"),
        ],
    ]
    for command in commands:
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output, result.exception)
    lines = read_audit_log(log)
    assert [(line["who"], line["via"], line["what"], line["count"]) for line in lines] == [
        ("os:ana", "cli", "portrait list", 3),
        ("os:ana", "cli", "portrait segment export", 2),
        ("os:ana", "cli", "portrait crowd export", 1),
    ]
    assert lines[0]["filter"] == {"model": "m", "as_of": AS_OF, "top": 3, "out": str(tmp_path / "l.csv")}
    assert lines[1]["filter"]["segment"] == "meat" and lines[2]["filter"]["cell"] == "favourite_payment = cash"
    assert [len(pd.read_csv(tmp_path / f)) for f in ("l.csv", "s.csv", "c.csv")] == [3, 2, 1]
    for line in lines:
        _no_ids(line, IDS)
    # the cell's one customer suppressed: the crowd export's line says how many consent left out,
    # as the list's and the API's lines do (it had no left_out)
    cash = str(pd.read_csv(tmp_path / "c.csv", dtype=str)["customer_id"].iloc[0])
    (tmp_path / "data" / "suppressed.csv").write_text(f"customer_id\n{cash}\n")
    toml = tmp_path / "data" / "portrait.toml"
    toml.write_text(toml.read_text() + 'suppression_file = "suppressed.csv"\n')
    result = runner.invoke(app, commands[2])
    assert result.exit_code == 0, (result.output, result.exception)
    last = read_audit_log(log)[-1]
    assert (last["what"], last["count"], last["left_out"]) == ("portrait crowd export", 0, {"suppressed": 1})


def test_a_cli_export_that_cannot_be_audited_writes_nothing(world, tmp_path, monkeypatch):
    from portrait_cli.main import _register_later_commands, app

    settings, _ = world
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("x")
    monkeypatch.setenv("PORTRAIT_AUDIT_LOG", str(blocked / "audit.log"))
    _register_later_commands()
    out = tmp_path / "l.csv"
    result = CliRunner().invoke(app, ["list", "--model", "m", "--scores", str(settings.scores), "--out", str(out)])
    assert isinstance(result.exception, Unavailable) and "cannot write the audit log" in str(result.exception)
    assert not out.exists()
    cell = tmp_path / "c.csv"
    args = ["crowd", "export", "--all", "--cell", "favourite_payment = cash", "--data", str(tmp_path / "data")]
    result = CliRunner().invoke(app, [*args, "--as-of", AS_OF, "--out", str(cell)])
    assert isinstance(result.exception, Unavailable) and not cell.exists()


def test_a_cli_export_that_cannot_be_written_is_not_in_the_audit_log(world, tmp_path, monkeypatch):
    """A full disk: the list is not written, and the log holds no export that never happened."""
    import errno

    from portrait_cli.main import _register_later_commands, app

    settings, _ = world
    log = tmp_path / "audit.log"
    monkeypatch.setenv("PORTRAIT_AUDIT_LOG", str(log))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    _register_later_commands()
    out = tmp_path / "l.csv"
    result = CliRunner().invoke(app, ["list", "--model", "m", "--scores", str(settings.scores), "--out", str(out)])
    assert isinstance(result.exception, OSError) and not out.exists() and not log.exists()
    monkeypatch.undo()
    monkeypatch.setenv("PORTRAIT_AUDIT_LOG", str(log))
    result = CliRunner().invoke(app, ["list", "--model", "m", "--scores", str(settings.scores), "--out", str(out)])
    assert result.exit_code == 0 and [line["count"] for line in read_audit_log(log)] == [5]


@pytest.mark.parametrize(
    "error, status",
    [
        (PortraitError("x"), 422),
        (ConfigError("x"), 422),
        (ContractError("x", table="purchases"), 422),
        (NotFound("x"), 404),
        (Unauthorized("x"), 401),
        (Forbidden("x"), 403),
        (Unavailable("x"), 503),
        (Conflict("x"), 409),
    ],
)
def test_each_product_error_has_its_status(error, status):
    from serving.routes.errors import error_response

    response = error_response(error)
    assert response.status_code == status
    assert json.loads(response.body) == {"detail": str(error)}


def test_the_one_handler_answers_a_product_error_with_its_status(world, monkeypatch):
    class Conflict(PortraitError):
        status_code = 409

    def refuse(*args, **kwargs):
        raise Conflict("the list is being rebuilt; try again in a minute")

    settings, keys = world
    client = TestClient(build_app(settings), raise_server_exceptions=False)
    monkeypatch.setattr("serving.routes.lists.build_list", refuse)
    answer = client.get("/lists/m", headers=keys["analyst"])
    assert (answer.status_code, answer.json()) == (409, {"detail": "the list is being rebuilt; try again in a minute"})
    missing = client.get("/segments/nope", headers=keys["analyst"])
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_a_file_gone_while_a_request_reads_it_is_a_503_to_ask_again(world, monkeypatch):
    """A refresh with keep pruning the run a request had resolved a moment before: the file
    read then is gone, which was an unhandled error, a 500."""

    def gone(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "/srv/out/runs/2025-01-01/scores/scores.parquet")

    settings, keys = world
    client = TestClient(build_app(settings), raise_server_exceptions=False)
    monkeypatch.setattr("serving.routes.lists.build_list", gone)
    answer = client.get("/lists/m", headers=keys["analyst"])
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.json()["detail"].endswith("ask again") and "/srv" not in answer.text


def api_routes(routes):
    """Every APIRoute of an app, inside included routers too (FastAPI 0.16x keeps an
    included router whole, as one route holding the original router)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from api_routes(inner.routes)
        elif isinstance(route, APIRoute):
            yield route


def test_every_route_has_a_response_model_and_documented_fields(world):
    settings, keys = world
    app = build_app(settings)
    routes = [r for r in api_routes(app.routes) if r.include_in_schema]
    paths = {(method, r.path) for r in routes for method in r.methods}
    assert {
        ("GET", "/health"),
        ("GET", "/customers/{customer_id:path}"),
        ("POST", "/score"),
        ("GET", "/lists/{model_name}"),
        ("GET", "/models"),
        ("GET", "/segments"),
        ("GET", "/segments/{name}"),
        ("GET", "/segments/{name}/customers"),
        ("GET", "/tags"),
        ("GET", "/crowds/report"),
        ("GET", "/crowds/customers"),
    } == paths
    for route in routes:
        model = route.response_model
        inner = getattr(model, "__args__", (model,))[0]
        assert isinstance(inner, type) and issubclass(inner, BaseModel), route.path
    schema = TestClient(app).get("/openapi.json", headers=keys["marketing"]).json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert answer != {} and "additionalProperties" not in answer, (method, path)
            # the error answers a generated client must parse: documented, by the product's models
            errors = {
                code: r["content"]["application/json"]["schema"]
                for code, r in operation["responses"].items()
                if code != "200"
            }
            assert errors["422"] == {"$ref": "#/components/schemas/InvalidRequestAnswer"}, (method, path)
            assert errors["503"] == {"$ref": "#/components/schemas/ErrorAnswer"}, (method, path)
            if path != "/health":
                assert {"401", "403", "404"} <= set(errors), (method, path)
    assert "413" in schema["paths"]["/score"]["post"]["responses"]
    detail = schema["components"]["schemas"]["InvalidRequestAnswer"]["properties"]["detail"]
    assert {"type": "string"} in detail["anyOf"]  # the product's own 422s say it in a sentence
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_settings_reach_the_workers_through_the_environment(world, monkeypatch):
    settings, _ = world
    settings = settings.model_copy(update={"api_key": SecretStr("s3cret"), "alias": "candidate"})
    environ = settings.to_environment()
    assert list(environ) == [SETTINGS_ENV] and "s3cret" not in environ[SETTINGS_ENV]
    again = ServeSettings.from_environment({**environ, "PORTRAIT_API_KEY": "s3cret"})
    assert again == settings.resolved() and again.key == "s3cret"
    assert ServeSettings.from_environment(environ).key is None
    with pytest.raises(ConfigError, match=f"{SETTINGS_ENV} is not set"):
        ServeSettings.from_environment({})
    with pytest.raises(ConfigError, match="does not hold serve settings"):
        ServeSettings.from_environment({SETTINGS_ENV: '{"scores": 3, "colour": "red"}'})


def _published_run(settings, root: Path, **summary) -> None:
    """A refresh root whose run of AS_OF holds the world's scores and segment meat's members (D)."""
    run = root / "runs" / AS_OF
    shutil.copytree(settings.scores, run / "scores")
    (run / "segments").mkdir()
    pd.DataFrame({"customer_id": ["D"]}).to_parquet(run / "segments" / "meat.parquet")
    summary = {"as_of": AS_OF, "segments": {"meat": {"customers": 1, "base": 5, "share": 0.2}}, **summary}
    (run / "segments" / "summary.json").write_text(json.dumps(summary))
    (root / "LATEST").write_text(f"runs/{AS_OF}\n")


def test_runs_are_followed_without_a_restart(world, tmp_path):
    settings, keys = world
    root = tmp_path / "refresh"
    _published_run(settings, root)
    client = TestClient(build_app(settings.model_copy(update={"runs": root})))
    health = client.get("/health").json()
    assert (health["scores_as_of"], health["run"]) == (AS_OF, f"runs/{AS_OF}")
    meat = client.get("/segments/meat", headers=keys["analyst"]).json()
    assert (meat["customers"], meat["as_of"], meat["refreshed_reads"]) == (1, AS_OF, None)  # none recorded
    assert client.get("/segments/meat/customers", headers=keys["analyst"]).json()["customer_ids"] == ["D"]
    top = client.get("/lists/m", params={"top": 1}, headers=keys["analyst"]).json()["customers"]
    assert top[0]["customer_id"] == "A"

    later = "2024-03-08"
    write_scores(root / "runs" / later / "scores", tmp_path / "data", as_of=later, scores=SCORES[::-1])
    (root / "LATEST").write_text(f"runs/{later}\n")
    assert client.get("/health").json()["run"] == f"runs/{later}"
    top = client.get("/lists/m", params={"top": 1}, headers=keys["analyst"]).json()
    assert (top["as_of"], top["customers"][0]["customer_id"]) == (later, "E")
    gone = client.get("/segments/meat/customers", headers=keys["analyst"])
    assert gone.status_code == 404 and "was not refreshed in the run served" in gone.json()["detail"]


def test_runs_without_segments_serve_the_folder_the_run_refreshed(world, tmp_path):
    """serve --runs without --segments served the default segments/ folder: no segment of the
    run's refresh was found (the README's serve example)."""
    settings, keys = world
    root = tmp_path / "refresh"
    _published_run(settings, root, folder=str(settings.segments))
    client = TestClient(build_app(settings.model_copy(update={"runs": root, "segments": None})))
    assert [s["name"] for s in client.get("/segments", headers=keys["analyst"]).json()["segments"]] == ["meat"]
    assert client.get("/segments/meat/customers", headers=keys["analyst"]).json()["customer_ids"] == ["D"]


def test_a_runs_members_chosen_by_a_sensitive_attribute_stay_refused_after_the_definition_changes(world, tmp_path):
    """The members served are the run's: what chose them is what the run recorded, whatever the
    segment's definition says today (meat reads no sensitive attribute now)."""
    settings, keys = world
    root = tmp_path / "refresh"
    then = {"meat": {"customers": 1, "base": 5, "share": 0.2, "reads": "attr_age_band = '25-34'"}}
    _published_run(settings, root, segments=then)
    client = TestClient(build_app(settings.model_copy(update={"runs": root})))
    refused = client.get("/segments/meat/customers", headers=keys["marketing"])
    assert (
        refused.status_code == 403
        and "segment computed from sensitive attributes (attr_age_band" in (refused.json()["detail"])
    )
    # the run's members are shown with what chose them, not only today's definition
    assert client.get("/segments/meat", headers=keys["analyst"]).json()["refreshed_reads"] == "attr_age_band = '25-34'"
    assert client.get("/segments/meat/customers", headers=keys["analyst"]).json()["customer_ids"] == ["D"]
    drill = client.get(
        "/crowds/customers", params={"segment": "meat", "cell": "favourite_payment = card"}, headers=keys["marketing"]
    )
    assert (
        drill.status_code == 403
        and "crowd computed from sensitive attributes (attr_age_band" in (drill.json()["detail"])
    )
    # a tag's crowd read from the run: what the run's tags summary recorded the tag reads counts too
    (root / "runs" / AS_OF / "tags").mkdir(exist_ok=True)
    recorded = {"tags": {"spending power: high": {"customers": 3, "reads": "attr_age_band = '65+'"}}}
    (root / "runs" / AS_OF / "tags" / f"tags_{AS_OF}.summary.json").write_text(json.dumps(recorded))
    (root / "runs" / AS_OF / "tags" / f"tags_{AS_OF}.parquet").write_bytes(b"")
    by_tag = {"tag": "spending power: high", "cell": "favourite_payment = card"}
    tagged = client.get("/crowds/customers", params=by_tag, headers=keys["marketing"])
    assert tagged.status_code == 403 and "crowd computed from sensitive attributes (attr_age_band" in tagged.text
    _published_run(settings, tmp_path / "other", segments={"meat": {**then["meat"], "reads": "orders_90d >= 1"}})
    served = TestClient(build_app(settings.model_copy(update={"runs": tmp_path / "other"})))
    assert served.get("/segments/meat/customers", headers=keys["marketing"]).json()["customer_ids"] == ["D"]


def test_runs_without_a_published_run_stop_at_start(world, tmp_path):
    settings, _ = world
    with pytest.raises(Unavailable, match="no published run under .* run portrait refresh first"):
        build_app(settings.model_copy(update={"runs": tmp_path / "empty_root"}))


def test_answers_name_files_and_folders_not_where_the_server_keeps_them():
    from serving.routes.errors import without_server_paths

    assert without_server_paths("no segment 'quiet' in /tmp/portrait/segments/") == "no segment 'quiet' in segments/"
    assert without_server_paths("no tag 'x' in /usr/app/retail.toml.") == "no tag 'x' in retail.toml."
    assert without_server_paths("not in the data set /tmp/cj (customers)") == "not in the data set cj (customers)"
    # what the caller sent (quoted), routes, ratios, URLs and tag groups are left as they are
    kept = "unknown customer id '/etc/passwd'; may not use POST /score; 1/2 of a / b, http://host/x, value/rfm"
    assert without_server_paths(kept) == kept


def test_serve_checks_its_paths_before_it_starts(world, tmp_path):
    from serving.settings import check_serve_paths

    settings, _ = world
    check_serve_paths(settings)
    with pytest.raises(PortraitError, match="--data .*nowhere does not exist"):
        check_serve_paths(settings.model_copy(update={"data": tmp_path / "nowhere"}))
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(PortraitError, match="--segments .*a_file is a file, not a folder"):
        check_serve_paths(settings.model_copy(update={"segments": a_file}))
    with pytest.raises(PortraitError, match="--audit .*cannot create its folder"):
        check_serve_paths(settings.model_copy(update={"audit": a_file / "logs" / "audit.log"}))
    # a log that cannot be written (here a folder in its place): the server started, then
    # refused every list pull with a 503
    (tmp_path / "pulls.log").mkdir()
    with pytest.raises(PortraitError, match=r"--audit .*pulls.log cannot be written \(Is a directory\): every list"):
        check_serve_paths(settings.model_copy(update={"audit": tmp_path / "pulls.log"}))


class _EvenChances:
    """An estimator that gives every row P = 0.5 (a high-value model's stand-in)."""

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)


def test_a_relative_labels_rows_are_moved_by_the_served_batchs_offset(world, monkeypatch):
    from serving.registry import LoadedModel

    settings, keys = world
    summary = settings.scores / f"scores_{AS_OF}.summary.json"
    batch = {"as_of": AS_OF, "models": {"m": {"version": "3", "prior_shift_logit": float(np.log(1 / 3))}}}
    summary.write_text(json.dumps(batch))
    meta = {"label": "high_value", "positive_share": 0.25, "features": ["x"]}
    version = {"now": "3"}
    monkeypatch.setattr("serving.state.alias_version", lambda name, alias: version["now"])
    monkeypatch.setattr(
        "serving.state.load_model_version",
        lambda name, served, alias: LoadedModel(name, served, alias, meta, _EvenChances(), {}),
    )
    client = TestClient(build_app(settings))
    body = {"model": "m", "rows": [{"x": 1.0}, {"x": 2.0}]}
    answer = client.post("/score", json=body, headers=keys["analyst"]).json()
    # 0.5 moved by logit(1/3): 0.25, as the batch of version 3 moved its population
    assert [s["score"] for s in answer["scores"]] == pytest.approx([0.25, 0.25])
    assert answer["moved_to_share"] == {
        "share": 0.25,
        "logit_offset": pytest.approx(np.log(1 / 3)),
        "batch_as_of": AS_OF,
    }
    # another version than the served batch's (promoted while the API runs: served once the
    # alias is asked again, without a restart; v3 was kept for good): the model's own
    # probabilities, and why
    version["now"] = "4"
    monkeypatch.setattr("serving.state.ALIAS_CHECK_SECONDS", 0.0)
    answer = client.post("/score", json=body, headers=keys["analyst"]).json()
    assert answer["version"] == "4"
    assert [s["score"] for s in answer["scores"]] == [0.5, 0.5] and "moved_to_share" not in answer
    assert answer["note"] == (
        "m marks a fixed share of customers (25%), which batch scores are moved to; no served batch of "
        "version 4 to take the offset from: the model's own probabilities"
    )


def test_marketing_keys_cannot_pull_members_of_a_crowd_computed_from_a_sensitive_attribute(world):
    """A segment (or one it includes) defined on a sensitive attribute: its members' ids tell
    each one's value, so a marketing key may not pull them, by the segment or by a crowd cell."""
    from marketing.segments import Evaluated, Segment, SegmentStore, record_refresh

    settings, keys = world
    store = SegmentStore(settings.segments)
    store.save(Segment("young", where="attr_age_band = '25-34'"))
    store.save(Segment("young_or_meat", include=["young", "meat"]))
    for name in ("young", "young_or_meat"):
        record_refresh(store, Evaluated(name, pd.Series(["A"]), 5, dt.date.fromisoformat(AS_OF)))
    client = TestClient(build_app(settings))
    for name in ("young", "young_or_meat"):
        refused = client.get(f"/segments/{name}/customers", headers=keys["marketing"])
        assert refused.status_code == 403, refused.text
        assert (
            "may not pull the members of a segment computed from sensitive attributes (attr_age_band"
            in (refused.json()["detail"])
        )
        assert client.get(f"/segments/{name}/customers", headers=keys["analyst"]).status_code == 200
    assert client.get("/segments/meat/customers", headers=keys["marketing"]).status_code == 200
    # ... also when the served features leave the attribute out (a model without the attributes family)
    features = next(settings.scores.glob("features_*.parquet"))
    pd.read_parquet(features).drop(columns=["attr_age_band"]).to_parquet(features)
    without = TestClient(build_app(settings)).get("/segments/young/customers", headers=keys["marketing"])
    assert without.status_code == 403, without.text
    cell = {"segment": "young", "cell": "favourite_payment = card"}
    drill = client.get("/crowds/customers", params=cell, headers=keys["marketing"])
    assert drill.status_code == 403 and "may not drill into a crowd computed from sensitive" in drill.json()["detail"]


def test_a_registry_that_cannot_be_asked_keeps_the_version_served(world, monkeypatch):
    """Asked every 10 s since the API follows promotions: a registry busy with a promote's write
    turned every /score of a model it had loaded into an error (a 404 'promote one')."""
    from portrait.errors import Unavailable
    from serving.registry import LoadedModel

    settings, keys = world
    meta = {"label": "repurchase", "features": ["x"]}
    answers = iter(["3"])

    def alias_version(name, alias):
        try:
            return next(answers)
        except StopIteration:
            raise Unavailable("cannot read the model registry: database is locked") from None

    loads = []
    monkeypatch.setattr("serving.state.alias_version", alias_version)
    monkeypatch.setattr(
        "serving.state.load_model_version",
        lambda name, served, alias: loads.append(served) or LoadedModel(name, served, alias, meta, _EvenChances(), {}),
    )
    monkeypatch.setattr("serving.state.ALIAS_CHECK_SECONDS", 0.0)
    client = TestClient(build_app(settings))
    body = {"model": "m", "rows": [{"x": 1.0}]}
    assert [client.post("/score", json=body, headers=keys["analyst"]).json()["version"] for _ in range(3)] == ["3"] * 3
    assert loads == ["3"]


def test_a_list_does_not_tell_a_marketing_key_why_a_few_were_left_out(world, tmp_path):
    """left_out by reason for customer_id = 'A' (or any filter a few match: a score read off a
    profile) told whether A was suppressed or opted out, one id at a time (a user's test): for
    the marketing role, reasons of fewer than 10 are pooled; the analyst, and the audit log,
    still get each."""
    settings, keys = world
    (tmp_path / "data" / "suppressed.csv").write_text("customer_id\nA\n")
    toml = tmp_path / "data" / "portrait.toml"
    toml.write_text(toml.read_text() + 'suppression_file = "suppressed.csv"\n')
    client = TestClient(build_app(settings))
    pooled = "left_out pools the reasons fewer than 10 customers were left out for: a few could be told apart"
    for params in ({"where": "customer_id = 'A'"}, {"where": "customer_id in ('A', 'B')"}, {"top": 5}):
        answer = client.get("/lists/m", params=params, headers=keys["marketing"])
        assert answer.status_code == 200, answer.text
        assert answer.json()["left_out"] == {"other reasons": 1} and answer.json()["note"] == pooled, params
    unaffected = client.get("/lists/m", params={"where": "customer_id = 'B'"}, headers=keys["marketing"]).json()
    assert unaffected["left_out"] == {} and unaffected["note"] is None
    analyst = client.get("/lists/m", params={"where": "customer_id = 'A'"}, headers=keys["analyst"]).json()
    assert analyst["left_out"] == {"suppressed": 1} and analyst["note"] is None
    assert read_audit_log(settings.audit)[-5]["left_out"] == {"suppressed": 1}  # the marketing key's pull of A


def test_reasons_of_at_least_the_least_cell_are_given_to_every_role():
    from serving.routes.lists import pooled_reasons

    assert pooled_reasons({"opted_out": 12, "suppressed": 3, "deceased": 1}, 10) == (
        {"opted_out": 12, "other reasons": 4},
        True,
    )
    assert pooled_reasons({"opted_out": 10, "suppressed": 0}, 10) == ({"opted_out": 10}, False)
    assert pooled_reasons({}, 10) == ({}, False)
