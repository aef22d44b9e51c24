"""The whole profile (serving/profile.py) and ``portrait profile`` on a hand-built data set.

Person c1 is three customer ids: c1 and c2 share a phone hash, c2 and c4 an e-mail hash (so c4
reaches c1 in two steps). c3 is someone else. Stored outputs are written by hand: a scores
folder (two dates), tags, RFM, saved segments, and a refresh root with two runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from portrait.errors import ConfigError, PortraitError
from serving.profile import (
    CustomerProfile,
    ProfileSources,
    UnknownCustomer,
    build_profile,
)

AS_OF = dt.date(2025, 3, 5)
T = pd.Timestamp

PURCHASES = pd.DataFrame(
    [
        # order_id, customer_id, ts, amount, category, channel
        ("o1", "c1", T("2025-01-03 10:00"), 10.0, "dairy", "store"),
        ("o1", "c1", T("2025-01-03 10:00"), 5.0, "bakery", "store"),
        ("o2", "c2", T("2025-02-10 09:30"), 20.0, "dairy", "web"),
        ("o2", "c2", T("2025-02-10 09:31"), -5.0, "dairy", "web"),  # a refund line: net 15
        ("o3", "c4", T("2025-03-01 18:00"), 7.5, "snacks", "app"),
        ("o3", "c4", T("2025-03-01 18:00"), 7.5, "snacks", "app"),  # an exact copy: counted once
        ("o4", "c1", T("2025-03-05 00:00"), 100.0, "wine", "store"),  # on the as-of date: not before it
        ("o5", "c1", T("2025-04-01 12:00"), 50.0, "wine", "store"),  # after it
        ("o7", "c1", T("2025-02-20 12:00"), None, "dairy", "store"),  # no amount: quarantined
        ("o6", "c3", T("2025-01-15 11:00"), 42.0, "toys", "web"),
    ],
    columns=["order_id", "customer_id", "ts", "amount", "category", "channel"],
).assign(product_id=lambda f: "p-" + f["category"])
EVENTS = pd.DataFrame(
    [
        ("c1", T("2025-01-02 08:00"), "view", "web", "dairy", None),
        ("c2", T("2025-02-09 20:00"), "add_to_cart", "web", "dairy", None),
        ("c4", T("2025-03-04 09:00"), "campaign_received", "email", None, 5.0),
        ("c1", T("2025-03-05 00:00"), "view", "web", "wine", None),  # on the as-of date
        ("c1", T("2025-06-01 10:00"), "view", "web", "wine", None),  # after it
        ("c3", T("2025-01-10 10:00"), "view", "web", "toys", None),
    ],
    columns=["customer_id", "ts", "event_type", "channel", "category", "value"],
)
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["c1", "c2", "c3"],
        "region": ["north", "south", "east"],
        "age_band": ["35-44", "25-34", "45-54"],  # sensitive
        "email": ["ann@example.com", "ann2@example.com", "bob@example.com"],  # personal data by name
        "loyalty_card": ["LC-111", "LC-222", "LC-333"],  # personal data by configuration
        "signup_date": pd.to_datetime(["2024-05-01", "2024-06-01", "2024-07-01"]).date,
    }
)
IDENTITIES = pd.DataFrame(
    {
        "customer_id": ["c1", "c2", "c2", "c4", "c3"],
        "id_type": ["phone_hash", "phone_hash", "email_hash", "email_hash", "email_hash"],
        "id_value": ["ph-1", "ph-1", "em-9", "em-9", "em-3"],
    }
)
PORTRAIT_TOML = '[privacy]\npii_columns = ["loyalty_card"]\nsensitive_columns = ["age_band"]\n'


def _scores(as_of: str, rows: dict[str, tuple], reasons: bool) -> pd.DataFrame:
    """rows: customer -> (repurchase score, percentile, decile, high_value score, percentile, decile)."""
    ids = list(rows)
    values = np.array([rows[i] for i in ids], dtype=float)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "as_of": T(as_of),
            "repurchase_90d_score": values[:, 0],
            "repurchase_90d_percentile": values[:, 1],
            "repurchase_90d_decile": values[:, 2].astype(int),
            "repurchase_90d_version": "3",
            "high_value_90d_score": values[:, 3],
            "high_value_90d_percentile": values[:, 4],
            "high_value_90d_decile": values[:, 5].astype(int),
            "high_value_90d_version": "2",
            "persona_id": [1, 0][: len(ids)],
            "persona_name": ["Loyal regulars · store", "Browsers"][: len(ids)],
            "personas_version": "5",
        }
    )
    if reasons:
        frame["repurchase_90d_reason_1"] = ["orders in all: 3", "spend in all: 42.00"][: len(ids)]
        frame["repurchase_90d_reason_2"] = ["days since the last purchase: 4 days", None][: len(ids)]
        frame["repurchase_90d_reason_3"] = [None, None][: len(ids)]
    return frame


FEATURES = pd.DataFrame(
    {
        "customer_id": ["c1", "c3"],
        "days_since_last_purchase": [4.0, 49.0],
        "orders_lifetime": [3.0, 1.0],
        "spend_lifetime": [37.5, 42.0],
        "favourite_category": ["dairy", "toys"],
    }
)
TAGS = pd.DataFrame(
    {
        "customer_id": ["c1", "c1", "c3"],
        "tag": ["loyal repurchaser", "interest: dairy", "interest: toys"],
        "group": ["behaviour", "interests", "interests"],
        "kind": ["rule", "rule", "rule"],
        "since": pd.to_datetime(["2025-02-01", "2025-03-05", "2025-03-05"]).date,
    }
)
RFM = pd.DataFrame(
    {
        "customer_id": ["c1", "c3"],
        "days_since_last_purchase": [4.0, 49.0],
        "orders_lifetime": [3.0, 1.0],
        "spend_lifetime": [37.5, 42.0],
        "rfm_r": pd.array([5, 2], dtype="Int64"),
        "rfm_f": pd.array([5, 3], dtype="Int64"),
        "rfm_m": pd.array([4, 5], dtype="Int64"),
        "rfm_fm": pd.array([5, 4], dtype="Int64"),
        "rfm_group": ["Champions", "At risk"],
    }
)


def _write_data(folder: Path, fmt: str = "parquet") -> Path:
    folder.mkdir(parents=True)
    for name, frame in {
        "purchases": PURCHASES,
        "events": EVENTS,
        "customers": CUSTOMERS,
        "identities": IDENTITIES,
    }.items():
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{name}.csv", index=False)
    (folder / "portrait.toml").write_text(PORTRAIT_TOML)
    return folder


def _write_outputs(root: Path) -> dict[str, Path]:
    """A scores folder (2025-02-01 and 2025-03-05), tags (2025-03-05 and a later 2025-04-01),
    RFM, saved segments, and a refresh root whose runs hold the same files."""
    scores = root / "scores"
    scores.mkdir(parents=True)
    # repurchase_90d was retrained between the two dates: version 2, then 3
    _scores("2025-02-01", {"c1": (0.5, 40.0, 4, 0.1, 30.0, 3)}, reasons=False).assign(
        repurchase_90d_version="2"
    ).to_parquet(scores / "scores_2025-02-01.parquet", index=False)
    FEATURES.to_parquet(scores / "features_2025-02-01.parquet", index=False)
    latest = _scores("2025-03-05", {"c1": (0.8, 90.0, 9, 0.3, 60.0, 6), "c3": (0.2, 10.0, 1, 0.05, 5.0, 1)}, True)
    latest.to_parquet(scores / "scores_2025-03-05.parquet", index=False)
    FEATURES.to_parquet(scores / "features_2025-03-05.parquet", index=False)
    (scores / "LATEST").write_text("scores_2025-03-05.parquet")
    tags = root / "tags"
    tags.mkdir()
    TAGS.to_parquet(tags / "tags_2025-03-05.parquet", index=False)
    TAGS.assign(tag="from the future").to_parquet(tags / "tags_2025-04-01.parquet", index=False)
    rfm = root / "rfm"
    rfm.mkdir()
    RFM.to_parquet(rfm / "rfm_2025-03-05.parquet", index=False)
    segments = root / "segments"
    segments.mkdir()
    for name, members, as_of in (
        ("dairy_fans", ["c1", "c3"], "2025-03-05"),
        ("toy_buyers", ["c3"], "2025-03-05"),
        ("next_month", ["c1"], "2025-04-01"),  # refreshed after the as-of date
    ):
        (segments / f"{name}.toml").write_text('where = "orders_lifetime >= 1"\n')
        pd.DataFrame({"customer_id": members, "as_of": as_of}).to_parquet(
            segments / f"{name}.members.parquet", index=False
        )
    (segments / "never_refreshed.toml").write_text('where = "orders_lifetime >= 5"\n')
    refresh = root / "refresh"
    for day in ("2025-02-01", "2025-03-05"):
        run = refresh / "runs" / day
        (run / "scores").mkdir(parents=True)
        source = scores / f"scores_{day}.parquet"
        (run / "scores" / source.name).write_bytes(source.read_bytes())
        (run / "scores" / f"features_{day}.parquet").write_bytes((scores / f"features_{day}.parquet").read_bytes())
        (run / "scores" / "LATEST").write_text(source.name)
        (run / "manifest.json").write_text(json.dumps({"as_of": day, "outcome": "ok"}))  # what makes it a run
    run = refresh / "runs" / "2025-03-05"
    (run / "tags").mkdir()
    TAGS.to_parquet(run / "tags" / "tags_2025-03-05.parquet", index=False)
    (run / "rfm").mkdir()
    RFM.to_parquet(run / "rfm" / "rfm_2025-03-05.parquet", index=False)
    (run / "segments").mkdir()
    pd.DataFrame({"customer_id": ["c1", "c3"]}).to_parquet(run / "segments" / "dairy_fans.parquet", index=False)
    pd.DataFrame({"customer_id": ["c3"]}).to_parquet(run / "segments" / "toy_buyers.parquet", index=False)
    (refresh / "LATEST").write_text("runs/2025-03-05\n")
    return {"scores": scores, "tags": tags, "rfm": rfm, "segments": segments, "runs": refresh}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("profile")
    return {"data": _write_data(root / "data"), **_write_outputs(root)}


def _notes(profile: CustomerProfile) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for note in profile.notes:
        found.setdefault(note.section, []).append(note.note)
    return found


EXPECTED_ORDERS = [
    # (order_id, ts, amount, lines, categories, channel): before 2025-03-05, newest first
    ("o3", dt.datetime(2025, 3, 1, 18, 0), 7.5, 1, ["snacks"], "app"),
    ("o2", dt.datetime(2025, 2, 10, 9, 30), 15.0, 2, ["dairy"], "web"),
    ("o1", dt.datetime(2025, 1, 3, 10, 0), 15.0, 2, ["bakery", "dairy"], "store"),
]
EXPECTED_EVENTS = [
    (dt.datetime(2025, 3, 4, 9, 0), "campaign_received", "email", None, 5.0),
    (dt.datetime(2025, 2, 9, 20, 0), "add_to_cart", "web", "dairy", None),
    (dt.datetime(2025, 1, 2, 8, 0), "view", "web", "dairy", None),
]


def _orders(profile):
    return [(o.order_id, o.ts, o.amount, o.lines, o.categories, o.channel) for o in profile.orders.last]


def _events(profile):
    return [(e.ts, e.event_type, e.channel, e.category, e.value) for e in profile.events.last]


def test_the_whole_profile_from_a_refresh_root(world):
    profile = build_profile("c1", ProfileSources(data=world["data"], runs=world["runs"]), compute_reasons=False)
    assert profile.customer_id == "c1" and profile.resolved_from is None
    assert (profile.as_of, profile.as_of_from) == (AS_OF, "run")
    # attributes: the person's own customers row; never a personal-data column
    assert [(a.name, a.value) for a in profile.attributes.values] == [
        ("region", "north"),
        ("age_band", "35-44"),
        ("signup_date", "2024-05-01"),
    ]
    assert profile.attributes.from_customer_id == "c1"
    # identities: ids, counts per type, which shared kinds joined them; no identifier value
    assert profile.identities.customer_ids == ["c1", "c2", "c4"]
    assert [(t.id_type, t.identifiers) for t in profile.identities.types] == [("email_hash", 1), ("phone_hash", 1)]
    assert [(s.id_type, s.customer_ids, s.identifiers) for s in profile.identities.shared] == [
        ("email_hash", ["c2", "c4"], 1),
        ("phone_hash", ["c1", "c2"], 1),
    ]
    # orders and events of all three ids, strictly before the run's date
    assert (profile.orders.total, profile.orders.spend) == (3, 37.5)
    assert _orders(profile) == EXPECTED_ORDERS
    assert profile.events.total == 3
    assert _events(profile) == EXPECTED_EVENTS
    # outputs of the run LATEST names
    assert profile.persona.model_dump() == {"id": 1, "name": "Loyal regulars · store", "version": "5"}
    assert profile.scores.as_of == AS_OF and profile.scores.scored_as == "c1"
    by_model = {m.model: m for m in profile.scores.models}
    assert by_model["repurchase_90d"].model_dump() == {
        "model": "repurchase_90d",
        "score": 0.8,
        "percentile": 90.0,
        "decile": 9,
        "version": "3",
        "reasons": ["orders in all: 3", "days since the last purchase: 4 days"],
        "reasons_note": "stored with the scores",
    }
    assert by_model["high_value_90d"].reasons is None
    assert "not computed" in by_model["high_value_90d"].reasons_note
    assert [(p.as_of, [(m.model, m.score, m.percentile) for m in p.models]) for p in profile.score_history.points] == [
        (dt.date(2025, 2, 1), [("high_value_90d", 0.1, 30.0), ("repurchase_90d", 0.5, 40.0)]),
        (AS_OF, [("high_value_90d", 0.3, 60.0), ("repurchase_90d", 0.8, 90.0)]),
    ]
    # which version scored each point: a history across a retraining says where it changed
    assert [[(m.model, m.version) for m in p.models] for p in profile.score_history.points] == [
        [("high_value_90d", "2"), ("repurchase_90d", "2")],
        [("high_value_90d", "2"), ("repurchase_90d", "3")],
    ]
    assert [(t.tag, t.group, t.kind, t.since) for t in profile.tags.tags] == [
        ("loyal repurchaser", "behaviour", "rule", dt.date(2025, 2, 1)),
        ("interest: dairy", "interests", "rule", AS_OF),
    ]
    assert profile.segments.checked == ["dairy_fans", "toy_buyers"]
    assert [(m.name, m.as_of) for m in profile.segments.member_of] == [("dairy_fans", AS_OF)]
    assert profile.rfm.model_dump() == {
        "as_of": AS_OF,
        "r": 5,
        "f": 5,
        "m": 4,
        "fm": 5,
        "group": "Champions",
        "days_since_last_purchase": 4.0,
        "orders_lifetime": 3.0,
        "spend_lifetime": 37.5,
    }
    assert [(k.name, k.value, k.shown) for k in profile.key_features] == [
        ("days_since_last_purchase", 4.0, "4 days"),
        ("orders_lifetime", 3.0, "3"),
        ("spend_lifetime", 37.5, "37.50"),
        ("favourite_category", "dairy", "dairy"),
    ]
    assert profile.key_features[0].label == "days since the last purchase"


def test_a_merged_secondary_id_answers_with_the_person_and_says_so(world):
    sources = ProfileSources(data=world["data"], runs=world["runs"])
    asked = build_profile("c4", sources, compute_reasons=False)
    person = build_profile("c1", sources, compute_reasons=False)
    assert (asked.customer_id, asked.resolved_from) == ("c1", "c4")
    assert asked.model_dump(exclude={"resolved_from"}) == person.model_dump(exclude={"resolved_from"})


def test_an_unknown_id_is_an_error_naming_it(world):
    with pytest.raises(UnknownCustomer, match=r"unknown customer id 'zz': not in the data set") as caught:
        build_profile("zz", ProfileSources(data=world["data"], runs=world["runs"]))
    assert caught.value.status_code == 404
    with pytest.raises(UnknownCustomer, match=r"unknown customer id 'c2': not in the stored scores, tags, RFM"):
        build_profile("c2", ProfileSources(scores=world["scores"]))  # without data, c2 cannot be resolved to c1


def test_personal_data_is_never_shown_and_sensitive_columns_only_when_asked(world):
    sources = ProfileSources(data=world["data"], runs=world["runs"])
    full = build_profile("c2", sources, compute_reasons=False)
    marketing = build_profile("c2", sources, include_sensitive=False, compute_reasons=False)
    assert [a.name for a in full.attributes.values] == ["region", "age_band", "signup_date"]
    assert [a.name for a in marketing.attributes.values] == ["region", "signup_date"]
    assert (full.attributes.sensitive_left_out, marketing.attributes.sensitive_left_out) == (0, 1)
    for profile in (full, marketing):
        text = profile.model_dump_json()
        for secret in ("example.com", "LC-111", "LC-222", "loyalty_card", '"name":"email"', "ph-1", "em-9"):
            assert secret not in text
    assert "35-44" not in marketing.model_dump_json()


def test_rows_on_or_after_the_as_of_date_never_appear(world, tmp_path):
    sources = ProfileSources(data=world["data"], scores=world["scores"], as_of=AS_OF)
    before = build_profile("c1", sources, compute_reasons=False)
    assert [o[0] for o in _orders(before)] == ["o3", "o2", "o1"]  # not o4 (on the date) nor o5
    assert all(e.ts < dt.datetime(2025, 3, 5) for e in before.events.last)
    # appending more rows at and after the date changes nothing
    data = tmp_path / "data"
    data.mkdir()
    for name in ("customers", "identities"):
        (data / f"{name}.parquet").write_bytes((world["data"] / f"{name}.parquet").read_bytes())
    (data / "portrait.toml").write_text(PORTRAIT_TOML)
    later = PURCHASES.iloc[[0]].assign(order_id="o9", ts=T("2025-03-05 00:00:00"), amount=999.0)
    pd.concat([PURCHASES, later]).to_parquet(data / "purchases.parquet", index=False)
    more = EVENTS.iloc[[0]].assign(ts=T("2025-03-05 00:00:01"), event_type="search")
    pd.concat([EVENTS, more]).to_parquet(data / "events.parquet", index=False)
    after = build_profile("c1", sources.model_copy(update={"data": data}), compute_reasons=False)
    assert after.model_dump() == before.model_dump()


def test_outputs_later_than_the_as_of_date_are_not_used(world):
    sources = ProfileSources(
        data=world["data"],
        scores=world["scores"],
        tags=world["tags"],
        rfm=world["rfm"],
        segments=world["segments"],
        as_of=dt.date(2025, 3, 1),
    )
    profile = build_profile("c1", sources, compute_reasons=False)
    assert profile.scores.as_of == dt.date(2025, 2, 1)
    assert [p.as_of for p in profile.score_history.points] == [dt.date(2025, 2, 1)]
    assert profile.tags is None and profile.rfm is None
    notes = _notes(profile)
    assert "later tables would show the future" in notes["tags"][0]
    assert "later tables would show the future" in notes["rfm"][0]
    # segment members refreshed after the date are left out, with a note
    assert [m.name for m in profile.segments.member_of] == []
    assert any("next_month (2025-04-01)" in n for n in notes["segments"])
    # ... the same note, and the same segments checked, for a person who is not a member then:
    # told only to members, the note told their later membership
    other = build_profile("c2", sources, compute_reasons=False)  # in no segment at any date
    later = "refreshed after 2025-03-01, so not checked: dairy_fans (2025-03-05), next_month (2025-04-01), toy_buyers (2025-03-05)"
    assert later in _notes(other)["segments"] and later in notes["segments"]
    assert other.segments.checked == profile.segments.checked == []
    assert [o.order_id for o in profile.orders.last] == ["o2", "o1"]


def test_with_an_earlier_as_of_date_the_run_of_that_date_is_read(world):
    sources = ProfileSources(data=world["data"], runs=world["runs"], as_of=dt.date(2025, 3, 1))
    profile = build_profile("c1", sources, compute_reasons=False)
    assert profile.scores.as_of == dt.date(2025, 2, 1)
    assert {m.model: m.score for m in profile.scores.models} == {"high_value_90d": 0.1, "repurchase_90d": 0.5}
    assert [p.as_of for p in profile.score_history.points] == [dt.date(2025, 2, 1)]
    assert profile.tags is profile.rfm is profile.segments is None  # that run kept none
    assert "the run has no tags folder" in _notes(profile)["tags"][0]
    before_any = sources.model_copy(update={"as_of": dt.date(2025, 1, 1)})
    early = build_profile("c1", before_any, compute_reasons=False)
    assert early.scores is None and early.score_history is None
    assert "later tables would show the future" in _notes(early)["run"][0]


def test_a_person_of_thousands_of_ids_is_resolved_whole(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    ids = [f"k{i:05d}" for i in range(1500)]
    # a chain: each device shared by two neighbouring ids (one value shared by all 1,500 would
    # link nobody: portrait.identity.MAX_IDS_PER_IDENTIFIER)
    devices = [f"d{i}" for i in range(1499)]
    pd.DataFrame({"customer_id": ids[:-1] + ids[1:], "id_type": "device", "id_value": devices * 2}).to_parquet(
        folder / "identities.parquet", index=False
    )
    PURCHASES.assign(customer_id="k01234").to_parquet(folder / "purchases.parquet", index=False)
    profile = build_profile("k01499", ProfileSources(data=folder, as_of=AS_OF))
    assert (profile.customer_id, profile.resolved_from) == ("k00000", "k01499")
    assert profile.identities.customer_ids == ids
    assert [(t.id_type, t.identifiers) for t in profile.identities.types] == [("device", 1499)]
    assert profile.orders.total == 4  # o1, o2, o3 and o6, all under k01234 here


@pytest.mark.parametrize("hop_rounds", [1, 3, 100])
def test_a_chained_person_is_the_same_whether_followed_hop_by_hop_or_in_one_pass(tmp_path, monkeypatch, hop_rounds):
    """Past ``_HOP_ROUNDS`` the rest of a person is found in one pass over the identities; a
    chain with a branch gives the same person either way, and a placeholder value (held by more
    than MAX_IDS_PER_IDENTIFIER ids) and another person sharing a value between themselves join
    nobody."""
    monkeypatch.setattr("serving.profile._HOP_ROUNDS", hop_rounds)
    chain = [f"a{i:02d}" for i in range(12)]  # a00 -v0- a01 -v1- ... -v10- a11
    rows = [(chain[i], f"v{i}") for i in range(11)] + [(chain[i + 1], f"v{i}") for i in range(11)]
    rows += [("a02", "w"), ("b1", "w")]  # a branch off the chain
    rows += [("a03", "0000")] + [(f"x{i:02d}", "0000") for i in range(25)]  # a placeholder: links nobody
    rows += [("c1", "z"), ("c2", "z")]  # another person
    pd.DataFrame(rows, columns=["customer_id", "id_value"]).assign(id_type="card").to_parquet(
        tmp_path / "identities.parquet", index=False
    )
    PURCHASES.assign(customer_id="a07").to_parquet(tmp_path / "purchases.parquet", index=False)
    profile = build_profile("a11", ProfileSources(data=tmp_path, as_of=AS_OF))
    assert (profile.customer_id, profile.resolved_from) == ("a00", "a11")
    assert profile.identities.customer_ids == [*chain, "b1"]
    assert profile.orders.total == 4


def test_saved_segments_folder_and_the_newest_tags_by_default(world):
    sources = ProfileSources(data=world["data"], scores=world["scores"], tags=world["tags"], segments=world["segments"])
    profile = build_profile("c4", sources, compute_reasons=False)
    assert profile.as_of == AS_OF and profile.as_of_from == "scores"
    assert profile.tags.as_of == AS_OF  # not the 2025-04-01 table: it is later than the scores
    assert profile.segments.checked == ["dairy_fans", "toy_buyers"]  # next_month: refreshed after the scores
    assert [m.name for m in profile.segments.member_of] == ["dairy_fans"]
    assert "not refreshed yet, so not checked: never_refreshed" in _notes(profile)["segments"][0]
    # with a run that holds segment members, those (of the same refresh as its scores) are read
    both = build_profile(
        "c1", sources.model_copy(update={"runs": world["runs"], "scores": None, "tags": None}), compute_reasons=False
    )
    assert both.segments.checked == ["dairy_fans", "toy_buyers"]
    assert "membership from the run" in _notes(both)["segments"][0]


class _Estimator:
    """Contributions proportional to the features: orders up, recency down."""

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        weights = {"orders_lifetime": 1.0, "spend_lifetime": 0.01, "days_since_last_purchase": -1.0}
        return pd.DataFrame({c: X[c].astype(float) * weights[c] for c in X.columns}, index=X.index)


def _model(version: str):
    from serving.registry import LoadedModel

    meta = {"features": ["orders_lifetime", "spend_lifetime", "days_since_last_purchase"], "label": "high_value"}
    return LoadedModel("high_value_90d", version, "champion", meta, _Estimator(), {})


def test_reasons_are_computed_for_the_one_row_when_not_stored(world):
    sources = ProfileSources(data=world["data"], scores=world["scores"])
    asked = []

    def loader(name):
        asked.append(name)
        return _model("2")

    profile = build_profile("c1", sources, model_loader=loader)
    by_model = {m.model: m for m in profile.scores.models}
    assert by_model["high_value_90d"].reasons == ["orders in all: 3", "spend in all, net of refunds: 37.50"]
    assert by_model["high_value_90d"].reasons_note == "computed with high_value_90d v2"
    assert by_model["repurchase_90d"].reasons_note == "stored with the scores"
    assert asked == ["high_value_90d"]
    # another version than the one that scored: no reasons, a note; a loader failure: a note
    stale = build_profile("c1", sources, model_loader=lambda name: _model("7"))
    assert {m.model: m.reasons for m in stale.scores.models}["high_value_90d"] is None
    assert (
        "the scores are from high_value_90d v2, the model loaded now is v7"
        in {m.model: m.reasons_note for m in stale.scores.models}["high_value_90d"]
    )

    def failing(name):
        raise PortraitError(f"no registered model named {name!r}")

    gone = build_profile("c1", sources, model_loader=failing)
    assert {m.model: m.reasons_note for m in gone.scores.models}["high_value_90d"] == (
        "unavailable: no registered model named 'high_value_90d'"
    )


def test_a_csv_data_set_read_whole_gives_the_same_profile(world, tmp_path):
    csv = _write_data(tmp_path / "csv", fmt="csv")
    sources = ProfileSources(runs=world["runs"])
    from_parquet = build_profile("c4", sources.model_copy(update={"data": world["data"]}), compute_reasons=False)
    from_csv = build_profile("c4", sources.model_copy(update={"data": csv}), compute_reasons=False)
    assert from_csv.model_dump() == from_parquet.model_dump()


def test_the_profile_names_the_time_zone_its_times_are_in(world, tmp_path):
    """Order and event times are local times of the data set's zone: the answer says which."""
    import shutil

    assert build_profile("c3", ProfileSources(data=world["data"])).timezone == "UTC"
    paris = tmp_path / "paris"
    shutil.copytree(world["data"], paris)
    (paris / "portrait.toml").write_text('timezone = "Europe/Paris"\n')
    assert build_profile("c3", ProfileSources(data=paris)).timezone == "Europe/Paris"
    scores_only = build_profile("c1", ProfileSources(scores=world["scores"]), compute_reasons=False)
    assert scores_only.orders is None and scores_only.timezone is None


def test_missing_pieces_are_null_with_a_note_and_a_missing_folder_is_an_error(world, tmp_path):
    bare = build_profile("c3", ProfileSources(data=world["data"]))
    assert bare.scores is bare.tags is bare.rfm is bare.segments is bare.score_history is None
    assert bare.as_of is None and bare.as_of_from == "none"
    assert bare.identities.customer_ids == ["c3"] and bare.orders.total == 1
    assert set(_notes(bare)) == {"scores", "tags", "rfm", "segments"}
    empty_root = tmp_path / "refresh"
    empty_root.mkdir()
    no_run = build_profile("c3", ProfileSources(data=world["data"], runs=empty_root))
    assert no_run.scores is None and "no published run" in _notes(no_run)["run"][0]
    with pytest.raises(PortraitError, match=r"runs folder .*nowhere does not exist"):
        build_profile("c3", ProfileSources(data=world["data"], runs=tmp_path / "nowhere"))
    with pytest.raises(PortraitError, match=r"data folder .*nowhere does not exist"):
        build_profile("c3", ProfileSources(data=tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "LATEST").write_text("scores_yesterday.parquet")
    with pytest.raises(PortraitError, match=r"broken/LATEST: 'yesterday' is not a date"):
        build_profile("c3", ProfileSources(data=world["data"], scores=broken))
    with pytest.raises(PortraitError, match=r"give either runs .* or scores, not both"):
        build_profile("c3", ProfileSources(runs=world["runs"], scores=world["scores"]))


def test_a_data_set_without_identities_or_events(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_parquet(folder / "purchases.parquet", index=False)
    profile = build_profile("c2", ProfileSources(data=folder, as_of=AS_OF))
    assert profile.identities.customer_ids == ["c2"] and profile.identities.types == []
    assert [o.order_id for o in profile.orders.last] == ["o2"]
    assert profile.events is None and profile.attributes is None
    assert set(_notes(profile)) >= {"events", "attributes"}


def test_sensitive_columns_setting_is_checked(tmp_path):
    from portrait.dataset import open_dataset

    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_parquet(folder / "purchases.parquet", index=False)
    (folder / "portrait.toml").write_text('[privacy]\nsensitive_columns = "age_band"\n')
    with pytest.raises(ConfigError, match=r"sensitive_columns must be a list of column names"):
        open_dataset(folder)
    (folder / "portrait.toml").write_text('[privacy]\nsensitive_columns = ["Age_Band"]\n')
    assert open_dataset(folder).privacy.is_sensitive("age_band")


def _portrait(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from portrait_cli.main import main; main()", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_the_command_prints_sections_or_json_and_exits_non_zero_on_errors(world, tmp_path):
    shown = _portrait("profile", "c4", "--data", str(world["data"]), "--runs", str(world["runs"]), "--no-reasons")
    assert shown.returncode == 0, shown.stderr
    assert (
        "customer c1 (asked as c4, one of this person's merged ids), as of 2025-03-05 (the run's date)" in shown.stdout
    )
    for text in (
        "Identities",
        "customer ids: c1, c2, c4",
        "Champions: R 5 F 5 M 4 (FM 5)",
        "3 orders (refunds too)",
        "o3",
        "campaign_received",
        "0.5 (40.0) v2",  # the score history marks the version where it changes
        "0.8 (90.0) v3",
    ):
        assert text in shown.stdout
    assert "example.com" not in shown.stdout and "ph-1" not in shown.stdout
    as_json = _portrait("profile", "c1", "--data", str(world["data"]), "--runs", str(world["runs"]), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["orders"]["total"] == 3
    unknown = _portrait("profile", "zz", "--data", str(world["data"]))
    assert unknown.returncode == 2
    assert "unknown customer id 'zz'" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = _portrait("profile", "c1", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad_date = _portrait("profile", "c1", "--data", str(world["data"]), "--as-of", "yesterday")
    assert bad_date.returncode == 2 and "is not a date" in bad_date.stderr
    # nothing marked sensitive: asked to hide, the profile says so instead of doing nothing silently
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,c1,2024-01-05 10:00:00,12.50\n")
    (plain / "customers.csv").write_text("customer_id,region\nc1,north\n")
    hidden = _portrait("profile", "c1", "--data", str(plain), "--hide-sensitive", "--no-reasons")
    assert hidden.returncode == 0, hidden.stderr
    assert "region: north" in hidden.stdout
    assert (
        "(--hide-sensitive: no column is marked sensitive; [privacy] sensitive_columns in portrait.toml)"
        in hidden.stdout
    )
    # a log of dates (CDNOW's): the orders show their dates, not a made-up 00:00
    dated = tmp_path / "dated"
    dated.mkdir()
    basket = "".join(f"o2,c1,2024-02-07,0.30,k{i:02d}\n" for i in range(10))  # 10 categories: 8 shown
    (dated / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount,category\no1,c1,2024-01-05,12.50,k00\n" + basket
    )
    shown = _portrait("profile", "c1", "--data", str(dated), "--no-reasons")
    assert shown.returncode == 0, shown.stderr
    assert "2024-02-07" in shown.stdout and "2024-01-05" in shown.stdout and "00:00" not in shown.stdout
    assert "k00, k01, k02, k03, k04, k05, k06, k07, +2 more" in shown.stdout and "k08" not in shown.stdout
    as_json = json.loads(_portrait("profile", "c1", "--data", str(dated), "--no-reasons", "--json").stdout)
    assert as_json["orders"]["last"][0]["categories"] == [f"k{i:02d}" for i in range(10)]


def test_the_command_reads_the_default_segments_folder_as_list_and_the_api_do(world, tmp_path, monkeypatch):
    """Without --segments the command read no segments and showed "-": "in no segment", where
    ``portrait list --segment`` and the API's profiles read $PORTRAIT_SEGMENTS (else segments/)."""
    args = ("profile", "c4", "--data", str(world["data"]), "--scores", str(world["scores"]), "--json", "--no-reasons")
    monkeypatch.setenv("PORTRAIT_SEGMENTS", str(world["segments"]))
    read = json.loads(_portrait(*args).stdout)
    assert [m["name"] for m in read["segments"]["member_of"]] == ["dairy_fans"]
    monkeypatch.setenv("PORTRAIT_SEGMENTS", str(tmp_path / "none"))
    unread = json.loads(_portrait(*args).stdout)
    assert unread["segments"] is None
    assert {
        "section": "segments",
        "note": "no saved segments read: no run with members, and no segments folder (--segments)",
    } in unread["notes"]


# ---------------------------------------------------------------- the refresh's profile material


def _material_root(world, tmp_path) -> Path:
    """A copy of the refresh root whose run of AS_OF holds the profile material."""
    from portrait.dataset import open_dataset
    from serving.profile import MATERIAL, write_profile_material

    root = tmp_path / "o'refresh"  # a quote in the path: paths are quoted into COPY statements
    root.mkdir()
    import shutil

    shutil.copytree(world["runs"], root, dirs_exist_ok=True)
    dataset = open_dataset(world["data"])
    with dataset.connect() as con:
        write_profile_material(con, dataset, AS_OF, root / "runs" / AS_OF.isoformat() / MATERIAL)
    return root


def test_the_material_quotes_a_customers_column_name_holding_a_quote(tmp_path):
    """A header is the data file's text: pasted into SQL unquoted it broke the refresh's
    profiles step (and could have added SQL of its own)."""
    from portrait.dataset import open_dataset
    from serving.profile import write_profile_material
    from tests.conftest import write_tables

    customers = pd.DataFrame({"customer_id": ["c1"], 'tier"x': ["gold"]})
    purchases = pd.DataFrame(
        {"customer_id": ["c1"], "order_id": ["o1"], "ts": ["2024-01-05"], "amount": [10.0], "quantity": [1]}
    )
    dataset = open_dataset(write_tables(tmp_path / "data", purchases=purchases, customers=customers))
    with dataset.connect() as con:
        write_profile_material(con, dataset, dt.date(2024, 3, 1), tmp_path / "material")
    stored = pd.read_parquet(tmp_path / "material" / "attributes.parquet")
    assert stored.to_dict("records") == [{"customer_id": "c1", 'tier"x': "gold"}]


@pytest.mark.parametrize("in_memory", [False, True])
def test_the_material_gives_the_same_profile_as_the_data_set(world, tmp_path, in_memory):
    from serving.profile import MATERIAL

    root = _material_root(world, tmp_path)
    folder = root / "runs" / AS_OF.isoformat() / MATERIAL
    sources = ProfileSources(data=world["data"], runs=root)
    for asked in ("c1", "c2", "c4", "c3"):  # c2 and c4: merged secondary ids of c1
        for sensitive in (True, False):  # False: the marketing role
            fast = build_profile(
                asked, sources, compute_reasons=False, include_sensitive=sensitive, in_memory=in_memory
            )
            folder.rename(folder.with_name("hidden"))  # without it, the data set is read
            try:
                slow = build_profile(asked, sources, compute_reasons=False, include_sensitive=sensitive)
            finally:
                folder.with_name("hidden").rename(folder)
            assert fast.model_dump() == slow.model_dump(), asked
    fast = build_profile("c4", sources, compute_reasons=False, include_sensitive=False, in_memory=in_memory)
    assert (fast.customer_id, fast.resolved_from) == ("c1", "c4")
    assert [a.name for a in fast.attributes.values] == ["region", "signup_date"]
    assert fast.attributes.sensitive_left_out == 1
    assert _orders(fast) == EXPECTED_ORDERS and _events(fast) == EXPECTED_EVENTS
    # The run's copy of the data set does not know ids added since: the message says so.
    with pytest.raises(
        UnknownCustomer, match=r"'nobody': not in the data set .* as the run of .* read it \(an id added"
    ):
        build_profile("nobody", sources, compute_reasons=False, in_memory=in_memory)


def test_a_category_or_event_text_holding_an_email_or_phone_is_withheld_from_both_sources(world, tmp_path):
    """A product named after a person's contact and an event type holding a phone number: the
    profile shows them withheld, the same read from the data set and from a run's material."""
    import shutil

    from portrait.privacy import PERSONAL_VALUE
    from serving.profile import MATERIAL

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    purchases = PURCHASES.assign(
        # a phone number in text after a tab, withheld by both readers (digits alone,
        # "\t0201234567", are a number to every rule: tests/test_privacy.py FREE_TEXTS)
        category=PURCHASES["category"].replace(
            {"bakery": "Cake for anna.smith@example.com", "dairy": "\tring 0201234567"}
        ),
        channel=PURCHASES["channel"].replace("store", "call 020 7946 0958"),
    )
    purchases.to_parquet(data / "purchases.parquet", index=False)
    events = EVENTS.assign(event_type=EVENTS["event_type"].replace("view", "call +44 (0)20 7946 0958"))
    events.to_parquet(data / "events.parquet", index=False)
    root = _material_root({**world, "data": data}, tmp_path)
    sources = ProfileSources(data=data, runs=root)
    fast = build_profile("c1", sources, compute_reasons=False)
    shutil.rmtree(root / "runs" / AS_OF.isoformat() / MATERIAL)  # without it, the data set is read
    slow = build_profile("c1", sources, compute_reasons=False)
    for profile in (fast, slow):
        assert _orders(profile)[-1][4:] == ([PERSONAL_VALUE], PERSONAL_VALUE)  # o1: cake and number; its channel
        assert [e[1] for e in _events(profile)] == ["campaign_received", "add_to_cart", PERSONAL_VALUE]
        assert not {"anna", "7946", "0201234567"} & set(re.findall(r"[a-z]+|[0-9]+", profile.model_dump_json()))
    assert fast.model_dump() == slow.model_dump()


def test_the_material_holds_no_row_on_or_after_the_as_of_date_and_no_personal_data(world, tmp_path):
    from serving.profile import MATERIAL

    folder = _material_root(world, tmp_path) / "runs" / AS_OF.isoformat() / MATERIAL
    orders = pd.read_parquet(folder / "orders.parquet")
    events = pd.read_parquet(folder / "events.parquet")
    assert set(orders["order_id"]) == {"o1", "o2", "o3", "o6"}  # not o4 (on the date) nor o5 (after)
    assert (orders["ts"] < T(AS_OF)).all() and (events["ts"] < T(AS_OF)).all()
    assert len(events) == 4  # c1's two rows on and after the date are left out
    people = pd.read_parquet(folder / "people.parquet").set_index("customer_id")
    assert people.loc["c1", "orders_total"] == 3 and people.loc["c1", "events_total"] == 3
    text = b"".join(p.read_bytes() for p in folder.iterdir())
    for value in ("ann@example.com", "LC-111", "ph-1", "em-9"):  # no PII column, no identifier value
        assert value.encode() not in text, value
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["sensitive_columns"] == ["age_band"]
    assert "email" not in summary["attribute_columns"] and "loyalty_card" not in summary["attribute_columns"]


def test_material_of_another_date_or_data_set_is_not_used(world, tmp_path):
    root = _material_root(world, tmp_path)
    earlier = build_profile(
        "c1", ProfileSources(data=world["data"], runs=root, as_of=dt.date(2025, 2, 15)), compute_reasons=False
    )
    assert [o[0] for o in _orders(earlier)] == ["o2", "o1"]  # read from the data set before that date
    other = _copy_of(world["data"], tmp_path / "other")
    profile = build_profile("c1", ProfileSources(data=other, runs=root), compute_reasons=False)
    assert any("profile material was built from" in n for n in _notes(profile)["data"])
    assert _orders(profile) == EXPECTED_ORDERS
    # material of an older version (one that named values holding personal data) is not read
    import json

    from serving.profile import MATERIAL, MATERIAL_SUMMARY

    summary_file = root / "runs" / AS_OF.isoformat() / MATERIAL / MATERIAL_SUMMARY
    summary = json.loads(summary_file.read_text())
    del summary["format"]
    summary_file.write_text(json.dumps(summary))
    profile = build_profile("c1", ProfileSources(data=world["data"], runs=root), compute_reasons=False)
    assert (
        "the run's profile material was written by another version: read from the data set" in _notes(profile)["data"]
    )
    assert _orders(profile) == EXPECTED_ORDERS


def test_the_in_memory_reader_follows_a_new_run(world, tmp_path):
    from serving.profile import memory_reader

    root = _material_root(world, tmp_path)
    sources = ProfileSources(data=world["data"], runs=root)
    first = build_profile("c1", sources, compute_reasons=False, in_memory=True)
    assert first.scores.models[1].score == 0.8
    run = root / "runs" / AS_OF.isoformat()
    reader = memory_reader(root, run)
    assert reader.nbytes > 0
    remade = run.with_name("remade")  # a re-run of the date: the whole folder is replaced
    import shutil

    shutil.copytree(run, remade)
    scores = remade / "scores" / f"scores_{AS_OF}.parquet"
    frame = pd.read_parquet(scores)
    frame.loc[frame["customer_id"] == "c1", "repurchase_90d_score"] = 0.7
    frame.to_parquet(scores, index=False)
    shutil.rmtree(run)
    remade.rename(run)
    assert build_profile("c1", sources, compute_reasons=False, in_memory=True).scores.models[1].score == 0.7
    assert memory_reader(root, run) is not reader


def test_the_in_memory_reader_follows_a_backfilled_run_beside_the_latest(world, tmp_path):
    """A backfill publishes a run of an earlier date and leaves LATEST as it was: the score
    history (every kept run) must show it at once, as `portrait profile` does."""
    import shutil

    from serving.profile import memory_reader

    root = _material_root(world, tmp_path)
    sources = ProfileSources(data=world["data"], runs=root)
    before = build_profile("c1", sources, compute_reasons=False, in_memory=True).score_history
    run = root / "runs" / AS_OF.isoformat()
    reader = memory_reader(root, run)
    earlier = run.with_name((AS_OF - dt.timedelta(days=40)).isoformat())
    shutil.copytree(run, earlier)
    (earlier / "scores" / f"scores_{AS_OF}.parquet").rename(earlier / "scores" / f"scores_{earlier.name}.parquet")
    (earlier / "scores" / "LATEST").write_text(f"scores_{earlier.name}.parquet")
    after = build_profile("c1", sources, compute_reasons=False, in_memory=True).score_history
    assert memory_reader(root, run) is not reader
    assert len(after.points) == len(before.points) + 1
    assert after.points[0].as_of.isoformat() == earlier.name


def _copy_of(source: Path, folder: Path) -> Path:
    """A copy of the data set's files (a test that changes them leaves the shared one alone)."""
    folder.mkdir()
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_a_forgotten_person_leaves_the_run_held_in_memory(world, tmp_path):
    from portrait.dataset import open_dataset
    from portrait.forget import forget
    from serving.profile import memory_reader

    root = _material_root(world, tmp_path)
    data = _copy_of(world["data"], tmp_path / "forget-data")
    sources = ProfileSources(data=data, runs=root)
    assert build_profile("c1", sources, compute_reasons=False, in_memory=True).scores.models[1].score == 0.8
    run = root / "runs" / AS_OF.isoformat()
    reader = memory_reader(root, run)
    forget(open_dataset(data), ["c1"], outputs=[root])  # rewrites files inside the run, in place
    assert memory_reader(root, run) is not reader
    with pytest.raises(UnknownCustomer, match="'c1'"):
        build_profile("c1", sources, compute_reasons=False, in_memory=True)


@pytest.mark.parametrize("in_memory", [False, True])
def test_a_person_forgotten_without_the_runs_folder_cleaned_is_unknown_through_runs(world, tmp_path, in_memory):
    """forget's default --outputs leaves a refresh root elsewhere as it was: the run's profile
    material still held the person and --runs printed their whole profile (a user's test)."""
    from portrait.dataset import open_dataset
    from portrait.forget import forget

    root = _material_root(world, tmp_path)
    data = _copy_of(world["data"], tmp_path / "forget-data")
    sources = ProfileSources(data=data, runs=root)
    assert build_profile("c1", sources, compute_reasons=False, in_memory=in_memory).scores.models[1].score == 0.8
    forget(open_dataset(data), ["c1"], outputs=[])  # the runs root not cleaned
    assert "c1" in pd.read_parquet(next((root / "runs").rglob("scores_*.parquet")))["customer_id"].tolist()
    with pytest.raises(UnknownCustomer) as forgotten:
        build_profile("c1", sources, compute_reasons=False, in_memory=in_memory)
    with pytest.raises(UnknownCustomer) as never:  # said alike: no answer tells who asked to be forgotten
        build_profile("zz9", sources, compute_reasons=False, in_memory=in_memory)
    assert str(forgotten.value) == str(never.value).replace("'zz9'", "'c1'")
    assert str(forgotten.value).startswith("unknown customer id 'c1': not in the data set")
    # without --data: the run's manifest names the data set whose tombstones decide
    run = root / "runs" / AS_OF.isoformat()
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "data": str(data.resolve())}))
    alone = ProfileSources(runs=root)
    with pytest.raises(UnknownCustomer) as forgotten:
        build_profile("c1", alone, compute_reasons=False, in_memory=in_memory)
    with pytest.raises(UnknownCustomer) as never:
        build_profile("zz9", alone, compute_reasons=False, in_memory=in_memory)
    assert str(forgotten.value) == str(never.value).replace("'zz9'", "'c1'")
    assert build_profile("c3", alone, compute_reasons=False, in_memory=in_memory).customer_id == "c3"
    assert build_profile("c3", sources, compute_reasons=False, in_memory=in_memory).customer_id == "c3"


def test_columns_marked_after_the_run_are_withheld_at_once(world, tmp_path):
    root = _material_root(world, tmp_path)
    data = _copy_of(world["data"], tmp_path / "data")
    # the material was written from world["data"]; point its summary at this copy
    summary_path = root / "runs" / AS_OF.isoformat() / "profiles" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "data": str(data.resolve())}))
    (data / "portrait.toml").write_text(
        '[privacy]\npii_columns = ["loyalty_card", "region"]\nsensitive_columns = ["age_band", "signup_date"]\n'
    )
    for in_memory in (False, True):
        profile = build_profile(
            "c1",
            ProfileSources(data=data, runs=root),
            compute_reasons=False,
            include_sensitive=False,
            in_memory=in_memory,
        )
        assert not any("data set" in n for n in _notes(profile).get("data", []))  # the material was read
        assert profile.attributes.values == [] and profile.attributes.sensitive_left_out == 2


def test_a_run_is_loaded_in_the_background_and_served_from_files_meanwhile(world, tmp_path):
    from serving.profile import in_memory_ready, memory_reader

    root = _material_root(world, tmp_path)
    sources = ProfileSources(data=world["data"], runs=root)
    assert in_memory_ready(sources) is False  # starts loading the run
    reader = memory_reader(root, root / "runs" / AS_OF.isoformat())
    reader.warming.join(timeout=60)
    assert in_memory_ready(sources) is True and reader.nbytes > 0
    held = reader.nbytes
    from_memory = build_profile("c2", sources, compute_reasons=False, in_memory=True)
    assert reader.nbytes == held  # everything a profile reads was loaded by the warm-up
    assert from_memory.model_dump() == build_profile("c2", sources, compute_reasons=False).model_dump()


def test_an_id_with_spaces_around_it_is_the_id_and_the_profile_says_so(world):
    """As the data's ids are read ("A1 " and "A1" are one id), but not silently."""
    sources = ProfileSources(data=world["data"])
    padded = build_profile("  c1 ", sources, compute_reasons=False)
    assert padded.customer_id == "c1"
    assert ("customer_id", "the id was read without the spaces around it, as 'c1'") in {
        (n.section, n.note) for n in padded.notes
    }
    plain = build_profile("c1", sources, compute_reasons=False)
    assert not [n for n in plain.notes if n.section == "customer_id"]


def test_a_customer_who_signed_up_after_the_as_of_date_shows_no_attributes(world):
    """The customers row is today's: as of a date before c3 joined (2024-07-01), the profile
    says c3 was not yet a customer instead of showing the row; c1 (joined 2024-05-01) keeps it."""
    before = dt.date(2024, 6, 15)
    sources = ProfileSources(data=world["data"], as_of=before)
    c3 = build_profile("c3", sources, compute_reasons=False)
    assert c3.attributes is None
    assert any(
        n.section == "attributes"
        and n.note == "signed up on 2024-07-01, after the as-of date 2024-06-15: not yet a customer then"
        for n in c3.notes
    )
    assert build_profile("c1", sources, compute_reasons=False).attributes is not None


def test_whether_one_had_signed_up_is_read_as_the_features_read_the_signup(tmp_path):
    """In a New York data set, 03:00 UTC on the as-of day is 22:00 the evening before: the
    features count s1 a customer, and the profile hid its attributes; 02:30 local on the as-of
    day (written -08:00) showed them. A day-first date is not guessed (12/10/2017 was read as
    10 December and hid u1's attributes)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "portrait.toml").write_text('timezone = "America/New_York"\n')
    pd.DataFrame({"order_id": ["o1"], "customer_id": ["s1"], "ts": ["2017-10-01 10:00:00"], "amount": [5.0]}).to_csv(
        data / "purchases.csv", index=False
    )
    signups = ["2017-11-06T03:00:00Z", "2017-11-05T23:30:00-08:00", "12/10/2017"]
    pd.DataFrame({"customer_id": ["s1", "s2", "u1"], "signup_date": signups, "region": ["e", "w", "n"]}).to_csv(
        data / "customers.csv", index=False
    )
    sources = ProfileSources(data=data, as_of=dt.date(2017, 11, 6))
    assert build_profile("s1", sources, compute_reasons=False).attributes is not None
    s2 = build_profile("s2", sources, compute_reasons=False)
    assert s2.attributes is None and any(n.note.startswith("signed up on 2017-11-06, after") for n in s2.notes)
    early = ProfileSources(data=data, as_of=dt.date(2017, 11, 1))
    assert build_profile("u1", early, compute_reasons=False).attributes is not None
    # the same from a refresh run's material, as `portrait serve --runs` answers
    from portrait.dataset import open_dataset
    from serving.profile import MATERIAL, write_profile_material

    root = tmp_path / "refresh"
    dataset = open_dataset(data)
    with dataset.connect() as con:
        write_profile_material(con, dataset, dt.date(2017, 11, 6), root / "runs" / "2017-11-06" / MATERIAL)
    (root / "LATEST").write_text("runs/2017-11-06\n")
    served = ProfileSources(data=data, runs=root, as_of=dt.date(2017, 11, 6))
    assert build_profile("s1", served, compute_reasons=False).attributes is not None
    assert build_profile("s2", served, compute_reasons=False).attributes is None
    # an instant at UTC midnight stored with its zone is 19:00 the day before in New York: shown
    # (it was written out as a date, its offset lost, and taken as local midnight: hidden)
    (data / "customers.csv").unlink()
    signup = pd.to_datetime(["2017-11-06 00:00"]).tz_localize("UTC")
    pd.DataFrame({"customer_id": ["s1"], "signup_date": signup, "region": ["e"]}).to_parquet(data / "customers.parquet")
    assert build_profile("s1", sources, compute_reasons=False).attributes is not None


def test_tags_and_segments_computed_from_a_sensitive_attribute_are_left_out_without_sensitive_data(world, tmp_path):
    """Holding a tag or a segment of `attr_age_band = '35-44'` tells the person's age band: a
    caller who may not see the attribute does not see the membership either."""
    from marketing.segments import Segment, SegmentStore

    tags = tmp_path / "tags"
    tags.mkdir()
    held = TAGS.copy()
    held.loc[len(held)] = ["c1", "age: 35-44", "age", "rule", held["since"].iloc[0]]
    held.to_parquet(tags / "tags_2025-03-05.parquet", index=False)
    recorded = {"loyal repurchaser": "orders_lifetime >= 3", "age: 35-44": "attr_age_band = '35-44'"}
    summary = {
        "as_of": "2025-03-05",
        "tags": {tag: {"customers": 1, "reads": reads} for tag, reads in recorded.items()},
    }
    (tags / "tags_2025-03-05.summary.json").write_text(json.dumps(summary))
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("older", where="attr_age_band = '35-44'"))
    store.save(Segment("older_buyers", include=["older"]))  # reads what it includes
    store.save(Segment("by_tag", tags=["age: 35-44"]))  # reads what its tag was computed from
    store.save(Segment("buyers", where="orders_lifetime >= 1"))
    for name in ("older", "older_buyers", "by_tag", "buyers"):
        pd.DataFrame({"customer_id": ["c1"], "as_of": "2025-03-05"}).to_parquet(store.members_path(name), index=False)
    sources = ProfileSources(data=world["data"], scores=world["scores"], tags=tags, segments=store.folder)
    full = build_profile("c1", sources, compute_reasons=False)
    hidden = build_profile("c1", sources, include_sensitive=False, compute_reasons=False)
    assert [m.name for m in full.segments.member_of] == ["buyers", "by_tag", "older", "older_buyers"]
    assert [m.name for m in hidden.segments.member_of] == ["buyers"]
    assert "age: 35-44" in [t.tag for t in full.tags.tags]
    assert [t.tag for t in hidden.tags.tags] == ["loyal repurchaser", "interest: dairy"]
    said = {(n.section, n.note) for n in hidden.notes}
    assert ("tags", "tags computed from sensitive attributes are never shown here, whoever holds them") in said
    assert (
        "segments",
        "3 segment(s) computed from sensitive attributes are never shown here, whoever is in them",
    ) in said
    assert "35-44" not in hidden.model_dump_json()
    # the notes say the same for someone in none of them: a count of the person's own (it was)
    # told who is in them
    other = build_profile("c2", sources, include_sensitive=False, compute_reasons=False)
    assert {(n.section, n.note) for n in other.notes if n.section in ("tags", "segments")} == {
        (section, note) for section, note in said if section in ("tags", "segments")
    }


def test_a_runs_segment_members_are_judged_by_the_saved_definitions_too(world, tmp_path):
    """A run refreshed before segments recorded what they read: its members are judged by the
    saved folder the run names, as the segment members route judges them."""
    import shutil

    from marketing.segments import Segment, SegmentStore

    runs = tmp_path / "refresh"
    shutil.copytree(world["runs"], runs)
    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("older", where="attr_age_band = '35-44'"))
    members = runs / "runs" / "2025-03-05" / "segments"
    members.mkdir(exist_ok=True)
    for old in members.iterdir():  # this test's segment alone
        old.unlink()
    pd.DataFrame({"customer_id": ["c1"]}).to_parquet(members / "older.parquet", index=False)
    (members / "summary.json").write_text(json.dumps({"as_of": "2025-03-05", "folder": str(store.folder)}))
    sources = ProfileSources(data=world["data"], runs=runs)
    assert [m.name for m in build_profile("c1", sources, compute_reasons=False).segments.member_of] == ["older"]
    hidden = build_profile("c1", sources, include_sensitive=False, compute_reasons=False)
    assert hidden.segments.member_of == []


def test_money_that_cancels_shows_as_zero_and_one_order_is_singular():
    from serving.profile_cli import _money, _orders

    assert [_money(v) for v in (-1e-17, -0.004, -0.0, -5.5, 1234.5, None)] == [
        "0.00",
        "0.00",
        "0.00",
        "-5.50",
        "1,234.50",
        "-",
    ]
    assert [_orders(n) for n in (0, 1, 2, 1500, None)] == [
        "0 orders",
        "1 order",
        "2 orders",
        "1,500 orders",
        "- orders",
    ]


def test_a_word_for_no_value_in_the_customers_row_is_shown_as_none(world, tmp_path):
    """The features read "N/A" as no value; the profile showed it as the region's value."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    CUSTOMERS.assign(region=["N/A", "south", "east"]).to_parquet(data / "customers.parquet", index=False)
    profile = build_profile("c1", ProfileSources(data=data, as_of=dt.date(2025, 3, 5)), compute_reasons=False)
    assert dict((a.name, a.value) for a in profile.attributes.values)["region"] is None
