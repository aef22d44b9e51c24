"""Privacy: personal-data columns withheld everywhere, consent and suppression honoured by lists."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from features.build import build_features
from portrait.dataset import Dataset, open_dataset
from portrait.errors import ConfigError, ContractError
from portrait.privacy import PrivacySettings, is_pii_name, pii_columns, safe_attribute_columns
from tests.test_marketing_api_cli import run
from tests.test_marketing_tags import AS_OF, EVENTS, PURCHASES

# Values that must never leave the customers table.
SECRETS = ("ann@example.com", "bob@example.com", "+44 7700 900001", "Ann Lee", "Bob Ray", "LC-0001", "LC-0002")
CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["A", "B", "C"],
        "email": ["ann@example.com", "bob@example.com", None],
        "phone": ["+44 7700 900001", "+44 7700 900002", "+44 7700 900003"],
        "full_name": ["Ann Lee", "Bob Ray", "Cy Doe"],
        "loyalty_card": ["LC-0001", "LC-0002", "LC-0003"],
        "age_band": ["25-34", "35-44", "25-34"],
    }
)
PII_TOML = '[privacy]\npii_columns = ["loyalty_card"]\n'


@pytest.fixture
def pii_data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    EVENTS.to_csv(folder / "events.csv", index=False)
    CUSTOMERS.to_csv(folder / "customers.csv", index=False)
    (folder / "portrait.toml").write_text(PII_TOML)
    return folder


def _no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    for name in ("email", "phone", "full_name", "loyalty_card"):
        assert name not in text


@pytest.mark.parametrize(
    "column",
    [
        "email",
        "E-Mail",
        "contact_email",
        "EmailAddress",
        "phone",
        "phone_number",
        "home_phone",
        "mobile",
        "mobile_no",
        "tel",
        "telephone",
        "name",
        "first_name",
        "LastName",
        "full_name",
        "surname",
        "customer_name",
        "address",
        "street",
        "postcode",
        "post_code",
        "zip",
        "ZipCode",
        "id_card",
        "national_id",
        "passport_no",
        "ssn",
    ],
)
def test_the_guard_knows_personal_data_by_its_name(column):
    assert is_pii_name(column)


@pytest.mark.parametrize(
    "column",
    [
        "age_band",
        "brand_name",  # a product's name, not a person's
        "store_name",
        "region",
        "signup_date",
        "membership_level",
        "email_opt_in",  # a flag about the address, not the address
        "has_phone",
        "phone_verified",
        "address_type",
        "mobile_app_user",
        "hotel",
    ],
)
def test_the_guard_leaves_other_columns_alone(column):
    assert not is_pii_name(column)


def test_pii_columns_never_reach_views_or_features(pii_data, caplog):
    caplog.set_level(logging.WARNING, logger="portrait.privacy")
    ds = open_dataset(pii_data)
    assert pii_columns(ds) == {"email", "phone", "full_name", "loyalty_card"}
    con = ds.connect()
    for view in ("raw_customers", "checked_customers", "customers"):
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]
        assert not {"email", "phone", "full_name", "loyalty_card"} & set(columns), view
    features = build_features(ds, AS_OF)
    assert [c for c in features.columns if c.startswith("attr_")] == ["attr_age_band"]
    assert dict(zip(features["customer_id"], features["attr_age_band"], strict=True)) == {
        "A": "25-34",
        "B": "35-44",
        "C": "25-34",
    }
    _no_secret_in(features.to_csv(index=False))
    # The names (never the values) are logged, once however often the data set is read.
    build_features(open_dataset(pii_data), AS_OF)
    logged = [r.getMessage() for r in caplog.records if r.name == "portrait.privacy"]
    assert logged == [
        "customers: personal-data columns withheld, never read: email, phone, full_name (named like personal "
        f"data); loyalty_card (pii_columns in {pii_data / 'portrait.toml'})"
    ]


def test_pii_columns_are_not_in_the_personas_page(pii_data, tmp_path):
    from models.persona_profile import portrait_table
    from training.persona_report import write_portrait

    features = build_features(open_dataset(pii_data), AS_OF)
    table = portrait_table(features, [0, 0, 1], {0: "Dairy lovers", 1: "Browsers"})
    paths = write_portrait(table, tmp_path / "page")
    assert "25-34" in paths["html"].read_text()  # the age band mix is shown
    for path in paths.values():
        _no_secret_in(path.read_text())


def test_pii_columns_are_not_in_a_list_or_an_export(pii_data, tmp_path, monkeypatch):
    from marketing.filters import FilterError
    from serving.lists import build_list

    features = build_features(open_dataset(pii_data), AS_OF)
    scores = pd.DataFrame({"customer_id": ["A", "B", "C"], "m_score": [0.9, 0.5, 0.7], "m_percentile": [100, 33, 67]})
    rows = build_list(scores, features, "m", where="attr_age_band = '25-34'")
    assert rows[["customer_id", "attr_age_band"]].to_dict("list") == {
        "customer_id": ["A", "C"],
        "attr_age_band": ["25-34", "25-34"],
    }
    with pytest.raises(FilterError, match="unknown column 'attr_email'"):
        build_list(scores, features, "m", where="attr_email = 'ann@example.com'")

    monkeypatch.chdir(tmp_path)
    assert run("segment", "create", "buyers", "--where", "orders_lifetime > 0")[0] == 0
    export = ("segment", "export", "buyers", "--data", str(pii_data), "--as-of", AS_OF, "--out", "b.csv")
    code, text = run(*export, "--columns", "attr_age_band")
    assert code == 0, text
    written = (tmp_path / "b.csv").read_text()
    assert pd.read_csv(tmp_path / "b.csv").to_dict("list") == {
        "customer_id": ["A", "B", "C"],
        "attr_age_band": ["25-34", "35-44", "25-34"],
    }
    _no_secret_in(written)
    code, text = run(*export, "--columns", "attr_email")
    assert code == 2 and "attr_email" in text


def test_validation_lists_withheld_columns_by_name_only(pii_data, tmp_path):
    from portrait.validate import validate

    (pii_data / "portrait.toml").write_text('[privacy]\npii_columns = ["loyalty_card", "loyalty_crad"]\n')
    # A malformed customers line: quarantined, but its text (personal data) is not kept.
    with open(pii_data / "customers.csv", "a") as handle:
        handle.write("D,dee@example.com,+44 7700 900004\n")
    report = validate(open_dataset(pii_data), tmp_path / "report")
    assert report.notes[:2] == [
        "customers: personal-data columns withheld, never read: email, phone, full_name, loyalty_card",
        "[privacy] pii_columns names loyalty_crad, which neither customers nor identities has",
    ]
    quarantine = pd.read_parquet(tmp_path / "report" / "quarantine" / "customers.parquet")
    assert quarantine["_reject_reason"].tolist() == ["malformed_row"]
    assert quarantine["_raw_line"].tolist() == ["(text withheld: the line holds personal-data columns)"]
    assert "dee@example.com" not in (tmp_path / "report" / "report.json").read_text()
    assert "dee@example.com" not in quarantine.to_csv()


def test_safe_attribute_columns_for_reports(pii_data):
    ds = open_dataset(pii_data)
    columns = ["customer_id", "email", "age_band", "loyalty_card", "brand_name", "Phone"]
    assert safe_attribute_columns(columns, ds) == ["age_band", "brand_name"]
    assert safe_attribute_columns(columns) == ["age_band", "loyalty_card", "brand_name"]  # the guard alone


def test_from_frames_guards_too():
    ds = Dataset.from_frames(
        purchases=PURCHASES, customers=CUSTOMERS, privacy=PrivacySettings(pii_columns=("loyalty_card",))
    )
    assert pii_columns(ds) == {"email", "phone", "full_name", "loyalty_card"}
    assert [c for c in build_features(ds, AS_OF).columns if c.startswith("attr_")] == ["attr_age_band"]


@pytest.mark.parametrize(
    "toml, error, message",
    [
        ("[privacy]\npii_column = ['x']\n", ConfigError, r"unknown keys \['pii_column'\]"),
        ("[privacy]\npii_columns = 'x'\n", ConfigError, "pii_columns must be a list of column names"),
        ("[privacy]\npii_columns = ['customer_id']\n", ConfigError, "'customer_id', which customers needs"),
        (
            "[privacy]\npii_columns = ['consent']\nconsent_column = 'consent'\n",
            ConfigError,
            "both the consent column and a pii column",
        ),
    ],
)
def test_bad_privacy_settings_stop_with_a_message(pii_data, toml, error, message):
    (pii_data / "portrait.toml").write_text(toml)
    with pytest.raises(error, match=message):
        build_features(open_dataset(pii_data), AS_OF)


def test_an_empty_customers_file_keeps_its_message(pii_data):
    (pii_data / "customers.csv").write_bytes(b"")
    with pytest.raises(ContractError, match=r"customers: .*customers.csv is empty \(not even a header line\)"):
        open_dataset(pii_data).connect()
