"""Privacy: personal-data columns withheld everywhere, consent and suppression honoured by lists."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from features.build import build_features
from portrait.dataset import Dataset, open_dataset
from portrait.errors import ConfigError, ContractError, PortraitError
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
        # a number after the word, or the words the other way round
        "email2",
        "phone_2",
        "Phone2",
        "address1",
        "street1",
        "zip5",
        "mobile2",
        "customer_name_1",
        "name_first",
        "name_last",
        # shortened, run together, or another language's (an auditor's retail exports)
        "cust_name",
        "addr",
        "AddressLine1",
        "addressline1",
        "credit_card",
        "card_number",
        "CreditCardNumber",
        "numero_carte",
        "Telefonnummer",
        "emailadresse",
        "nom_famille",
        "Vorname",
        "Nachname",
        "Kundenname",  # a name as one word (was an attribute, printed in profiles)
        "Benutzername",
        "Familienname",
        "voornaam",
        "klant_naam",
        "nome_cliente",
        "nome",
        "NombreCompleto",
        "fornavn",
        "sobrenome",
        "nome_utente",
        "primeiro_nome",
        "naam_klant",
        "prénom",
        "nom_client",
        "nombre",
        "apellidos",
        "Straße",
        "PLZ",
        "telefono",
        "correo_cliente",
        # a user's test: German, Polish, Dutch, Portuguese, Italian, Cyrillic and CJK names that
        # reached features, profiles and a crowd report's values
        "Anschrift",
        "Lieferadresse",
        "Empfänger",
        "Rufnummer",
        "Mobil",
        "kunde_mobil",
        "Ansprechpartner",
        "Personalausweis",
        "kontonummer",
        "nazwisko",
        "imię",
        "adres",
        "celular",
        "cellulare",
        "endereço",
        "Имя",
        "Фамилия",
        "Телефон",
        "氏名",
        "顧客氏名",
        "名前",
        "電話番号",
        # a date of birth (a feature of the days since it gave the date back)
        "dob",
        "DOB",
        "customer_dob",
        "date_of_birth",
        "DateOfBirth",
        "birth_date",
        "birthdate",
        "Birthday",
        "Geburtsdatum",
        "fecha_de_nacimiento",
        "date_de_naissance",
        "data_di_nascita",
        "birth_dt",
        "birth_timestamp",
        "date_birth",
        "dt_of_birth",
        "bday",
        "BDate",
        "birthday_date",
        "data_de_nascimento",
        "geboortedatum",
        "dob2",
        "dob_yyyymmdd",  # how the date is written
        "dob_str",
        "dob_raw",
        "birth_datetime",
        "birth_dttm",
        "geb_datum",  # shortened, and without "date" (an auditor's finds)
        "gebdat",
        "fecha_nac",
        "f_nacimiento",
        "naissance",
        "born",
        "customer_born",
        "born_date",
        "naissance",
        # national identity and tax numbers, a mobile number in German
        "dni",
        "dni_cliente",
        "NIF",
        "cpf_cliente",
        "pesel",
        "bsn",
        "codice_fiscale",
        "handy",
        "kunde_handy",
        # not a count, a rate or a date of what was done through it: the value itself
        "email_sent_to",
        "email_hash",
        "phone_2_90d",
        "email_last",
        "customer_phone_number",
        # only engagement through an e-mail address or a phone is read: an address, a name or an
        # identity number has no shape the value checks know
        "address_last_updated",
        "postcode_updated",
        "first_name_updated",
        "ssn_date",
        "iban_updated",
        "passport_date",
        "email_address_sent",
    ],
)
def test_the_guard_knows_personal_data_by_its_name(column):
    assert is_pii_name(column)


@pytest.mark.parametrize(
    "column",
    [
        "age_band",
        "mobil_app",
        "Stadt",
        "город",  # a city, in Cyrillic
        "brand_name",  # a product's name, not a person's
        "nome_prodotto",
        "product_naam",
        "nome_negozio",
        "naam_winkel",
        "ultimo_acquisto",
        "store_name",
        "region",
        "signup_date",
        "membership_level",
        "email_opt_in",  # a flag about the address, not the address
        "has_phone",
        "phone_verified",
        "address_type",
        "mobile_app_user",
        "name_brand",
        "category2",
        "email2_verified",
        "hotel",
        "city",
        "nom_magasin_type",
        "card_type",
        "customer_segment",
        "uses_credit_card",  # a flag about a card, not its number
        "telefono_verificado",
        "correo_valido",
        "birth_year",  # a year or a month of birth, an age: they group people
        "year_of_birth",
        "dob_year",
        "date_of_birth_year",
        "birthday_month",
        "age",
        "birthday_opt_in",
        "dob_missing",  # flags and a programme's columns
        "dob_is_estimated",
        "birthday_offer",
        "birthday_club_member",
        "birthday_voucher_redeemed",
        "born_year",  # the year alone
        "handy_app_user",  # a flag: handy only as the name's last word
        "first_born_child",
        # a reviewer's: a year or a month of birth, a place of birth, Polish days, a business unit
        "year_born",
        "yr_born",
        "month_born",
        "año_nacimiento",
        "anio_nacimiento",
        "mes_nacimiento",
        "annee_naissance",
        "mois_naissance",
        "pais_nacimiento",
        "lugar_nacimiento",
        "lieu_naissance",
        "pays_naissance",
        "first_born",
        "baby_born",
        "liczba_dni",
        "dni_od_zakupu",
        "bsn_unit",
        "bsn_segment",
        # engagement: what was done through an address or a number, counted, rated or dated
        "email_opens",
        "emails_opened_90d",
        "email_clicks_12m",
        "email_count_90d",
        "email_engagement_score",
        "last_email_date",
        "newsletter_email_subscribed",
        "birthday_email_sent",
        "phone_calls",
        "num_phone_calls",
        "days_since_last_email",
        "email_opened_at",
        "num_emails",
        "emails_received",
        "email_open_pct",
        "email_ctr",
        "email_opens_last_30_days",
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
    # said as withheld personal data, not as a typo with other attributes suggested
    assert code == 2 and "unknown column(s) ['attr_email']; email is personal data by its name" in text


@pytest.mark.parametrize(
    ("table", "header", "bad_line"),
    [
        # identities' values are e-mails, phones or card numbers (raw or hashed)
        ("identities", "customer_id,id_type,id_value", "C1,email,cust1@example.com,extra"),
        # a column named like personal data in a table that is not guarded
        ("purchases", "order_id,customer_id,ts,amount,customer_email", "o9,C1,2024-01-02,5.0,cust1@example.com,x"),
    ],
)
def test_a_malformed_line_that_may_hold_personal_data_is_not_kept(tmp_path, table, header, bad_line):
    from portrait.validate import validate

    data = tmp_path / "data"
    data.mkdir()
    lines = {
        "purchases": ["order_id,customer_id,ts,amount", "o1,C1,2024-01-01,10.0"],
        "identities": ["customer_id,id_type,id_value", "C1,phone_hash,h1"],
    }
    lines[table] = [header, lines[table][1] + (",x@y.z" if table == "purchases" else ""), bad_line]
    for name, rows in lines.items():
        (data / f"{name}.csv").write_text("\n".join(rows) + "\n")
    report = validate(open_dataset(data), tmp_path / "report")
    quarantine = pd.read_parquet(tmp_path / "report" / "quarantine" / f"{table}.parquet")
    assert quarantine["_raw_line"].tolist() == ["(text withheld: the line may hold personal data)"]
    assert "example.com" not in (tmp_path / "report" / "report.json").read_text()
    assert report.tables[0].rows >= 1


def test_a_misspelt_sensitive_column_is_said_and_a_sensitive_date_of_birth_hides_its_year(pii_data, tmp_path):
    """A sensitive column the customers table does not have hid nothing, without a word (the
    marketing role saw the column meant); a date of birth marked sensitive left its year, the
    attribute read of it, shown."""
    from portrait.privacy import PrivacySettings
    from portrait.validate import validate

    (pii_data / "portrait.toml").write_text('[privacy]\nsensitive_columns = ["Age_Band ", "agee_band"]\n')
    notes = validate(open_dataset(pii_data), tmp_path / "report").notes
    assert (
        "[privacy] sensitive_columns names agee_band, which the customers table does not have: nothing is hidden "
        "for it (its columns: age_band, customer_id, email, full_name, loyalty_card, phone)"
    ) in notes
    assert not any("Age_Band" in note for note in notes)  # any case, and stripped
    settings = PrivacySettings.from_config(
        {"sensitive_columns": ["gender", "DOB"]}, pii_data / "portrait.toml", pii_data
    )
    assert settings.sensitive_columns == ("gender", "DOB", "birth_year") and settings.is_sensitive("birth_year")
    kept = PrivacySettings.from_config({"sensitive_columns": ["gender"]}, pii_data / "portrait.toml", pii_data)
    assert kept.sensitive_columns == ("gender",)


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
    assert quarantine["_raw_line"].tolist() == ["(text withheld: the line may hold personal data)"]
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


# ---------------------------------------------------------------- consent

CONSENT_PURCHASES = pd.DataFrame(
    {
        "order_id": [f"o{i}" for i in range(7)],
        "customer_id": ["A", "B", "C", "D", "E", "F", "W"],
        "ts": ["2024-01-05"] * 7,
        "amount": [10.0] * 7,
    }
)
CONSENT_CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["A", "B", "C", "D", "F"],  # E has no customers row
        "marketing_consent": ["yes", "No", None, "TRUE", "1"],
    }
)
# W is A's second account, X is F's: ids are resolved through identity merging.
CONSENT_IDENTITIES = pd.DataFrame(
    {"customer_id": ["A", "W", "F", "X"], "id_type": ["phone_hash"] * 4, "id_value": ["h1", "h1", "h2", "h2"]}
)


def consent_dataset(tmp_path, suppressed: str | None = "customer_id\nX\nnobody\n", **settings) -> Dataset:
    path = None
    if suppressed is not None:
        path = tmp_path / "suppressed.csv"
        path.write_text(suppressed)
    privacy = PrivacySettings(
        consent_column=settings.get("consent_column", "marketing_consent"), suppression_file=path, source="test.toml"
    )
    return Dataset.from_frames(
        purchases=CONSENT_PURCHASES,
        customers=settings.get("customers", CONSENT_CUSTOMERS),
        identities=CONSENT_IDENTITIES,
        privacy=privacy,
    )


def test_consent_and_suppression_by_hand(tmp_path):
    from portrait.privacy import apply_consent, consent_note

    frame = pd.DataFrame({"customer_id": ["A", "B", "C", "D", "E", "F"], "score": [6, 5, 4, 3, 2, 1]})
    kept, left_out = apply_consent(frame, consent_dataset(tmp_path))
    # A: yes (W, merged into A, has no row); B: no; C: none recorded; D: TRUE; E: no customers
    # row; F: 1, but suppressed through its second id X.
    assert kept.to_dict("list") == {"customer_id": ["A", "D"], "score": [6, 3]}
    assert left_out == {"suppressed": 1, "no_consent": 3}
    assert consent_note(left_out) == (
        "left out 4 customers: 3 without marketing consent (opted out or none recorded), 1 on the suppression list"
    )


def test_the_consent_version_changes_with_a_suppression_edit_that_keeps_size_and_modification_time(tmp_path):
    """A server reloads the consent rules when their version changes: an edit keeping the file's
    size and modification time (cp -p, rsync -t) went unnoticed, and lists left out the old list."""
    import os

    from portrait.privacy import consent_version

    dataset = consent_dataset(tmp_path, suppressed="customer_id\nX\n")
    path = dataset.privacy.suppression_file
    before = consent_version(dataset)
    stat = path.stat()
    path.write_text("customer_id\nY\n")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert consent_version(dataset) != before


def test_an_opt_out_under_any_merged_id_leaves_the_person_out(tmp_path):
    from portrait.privacy import apply_consent

    customers = pd.concat([CONSENT_CUSTOMERS, pd.DataFrame({"customer_id": ["W"], "marketing_consent": ["no"]})])
    ds = consent_dataset(tmp_path, suppressed=None, customers=customers)
    kept, left_out = apply_consent(pd.DataFrame({"customer_id": ["A", "D"]}), ds)
    assert kept["customer_id"].tolist() == ["D"] and left_out == {"no_consent": 1}


def test_no_rules_leave_the_frame_as_it_is():
    from portrait.privacy import apply_consent, consent_note, export_note

    frame = pd.DataFrame({"customer_id": ["A", "B"]})
    kept, left_out = apply_consent(frame, Dataset.from_frames(purchases=CONSENT_PURCHASES))
    assert kept is frame and left_out == {} and consent_note(left_out) is None
    assert export_note(left_out) == (
        "no consent rule applies: the data set's portrait.toml sets no [privacy] consent_column or "
        "suppression_file, so nobody was left out for consent"
    )
    assert export_note({"no_consent": 0}) == "nobody was left out for consent"
    assert (
        export_note({"no_consent": 2})
        == "left out 2 customers: 2 without marketing consent (opted out or none recorded)"
    )


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            {"customers": CONSENT_CUSTOMERS.assign(marketing_consent=["yes", "maybe", None, "1", "0"])},
            ContractError,
            r"customers.marketing_consent: the consent column has 1 value that is neither a yes .* nor a no"
            r"[\s\S]*'customer_id': 'B', 'marketing_consent': 'maybe'",
        ),
        (  # an e-mail column named as the consent column: its values are not shown
            {"customers": CONSENT_CUSTOMERS.assign(marketing_consent=["yes", "b@example.com", None, "1", "0"])},
            ContractError,
            r"'customer_id': 'B', 'marketing_consent': '\(a value of 13 characters, not shown\)'",
        ),
        (
            {"consent_column": "consent"},
            ContractError,
            r"customers: the consent column 'consent' named in test.toml \[privacy\] consent_column is not in the "
            r"table; its columns are \['marketing_consent'\]",
        ),
        ({"suppressed": "A\nB,opted out by phone\n"}, ConfigError, "line 2 holds more than an id"),
        ({"suppressed": "A\n\xff\n"}, ConfigError, r"is not UTF-8 \(line 2\)"),
    ],
)
def test_unreadable_consent_rules_stop_the_list(tmp_path, change, error, message):
    from portrait.privacy import apply_consent

    suppressed = change.pop("suppressed", "X\n")
    ds = consent_dataset(tmp_path, suppressed=None, **change)
    if suppressed is not None:
        (tmp_path / "s.csv").write_bytes(suppressed.encode("latin-1"))
        ds = Dataset.from_frames(
            purchases=CONSENT_PURCHASES,
            customers=change.get("customers", CONSENT_CUSTOMERS),
            privacy=PrivacySettings(
                consent_column=ds.privacy.consent_column, suppression_file=tmp_path / "s.csv", source="test.toml"
            ),
        )
    with pytest.raises(error, match=message):
        apply_consent(pd.DataFrame({"customer_id": ["A"]}), ds)


def test_a_missing_suppression_file_stops_the_list(tmp_path):
    from portrait.privacy import apply_consent

    ds = Dataset.from_frames(
        purchases=CONSENT_PURCHASES, privacy=PrivacySettings(suppression_file=tmp_path / "gone.csv")
    )
    with pytest.raises(ConfigError, match=r"suppression file .*gone.csv does not exist; no list is written"):
        apply_consent(pd.DataFrame({"customer_id": ["A"]}), ds)


def test_a_list_applies_consent_before_taking_the_top(tmp_path):
    from portrait.privacy import export_note, load_consent
    from serving.lists import build_list

    scores = pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D", "E", "F"],
            "m_score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            "m_percentile": [100.0, 83.3, 66.7, 50.0, 33.3, 16.7],
        }
    )
    features = pd.DataFrame({"customer_id": list("ABCDEF"), "orders_90d": [1, 1, 1, 1, 0, 1]})
    rows = build_list(
        scores, features, "m", top=2, where="orders_90d > 0", consent=load_consent(consent_dataset(tmp_path))
    )
    assert rows["customer_id"].tolist() == ["A", "D"]
    assert rows.attrs["left_out"] == {"suppressed": 1, "no_consent": 2}  # E did not match the filter
    assert rows.attrs["matched"] == 5 and export_note(rows.attrs["left_out"], rows.attrs["matched"]) == (
        "left out 3 of the 5 customers the filters matched, before ranking: 2 without marketing consent "
        "(opted out or none recorded), 1 on the suppression list"
    )


def test_segment_export_leaves_out_customers_without_consent(pii_data, tmp_path, monkeypatch):
    (pii_data / "portrait.toml").write_text(
        '[privacy]\npii_columns = ["loyalty_card"]\nconsent_column = "marketing_consent"\n'
        'suppression_file = "suppressed.csv"\n'
    )
    CUSTOMERS.assign(marketing_consent=["yes", "no", "yes"]).to_csv(pii_data / "customers.csv", index=False)
    (pii_data / "suppressed.csv").write_text("C\n")
    monkeypatch.chdir(tmp_path)
    assert run("segment", "create", "buyers", "--where", "orders_lifetime > 0")[0] == 0
    code, text = run("segment", "export", "buyers", "--data", str(pii_data), "--as-of", AS_OF, "--out", "b.csv")
    assert code == 0, text
    text = " ".join(text.split())  # the console wraps long lines
    assert "1 customer of 'buyers'" in text
    assert "left out 2 customers: 1 without marketing consent (opted out or none recorded), 1 on the" in text
    assert pd.read_csv(tmp_path / "b.csv")["customer_id"].tolist() == ["A"]
    (pii_data / "suppressed.csv").unlink()
    code, text = run("segment", "export", "buyers", "--data", str(pii_data), "--as-of", AS_OF, "--out", "c.csv")
    assert code == 2 and "suppressed.csv does not exist" in text
    assert not (tmp_path / "c.csv").exists()


def test_the_api_segment_customers_follow_consent(tmp_path):
    import datetime as dt

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from marketing.segments import Evaluated, Segment, SegmentStore, record_refresh
    from portrait.privacy import load_consent
    from serving.marketing_routes import build_router

    store = SegmentStore(tmp_path / "segments")
    store.save(Segment("all", where="orders_lifetime > 0"))
    record_refresh(store, Evaluated("all", pd.Series(list("ABCDEF")), 6, dt.date(2024, 3, 1)))
    consent = load_consent(consent_dataset(tmp_path))
    app = FastAPI()
    app.include_router(build_router(tmp_path / "segments", None, None, consent=lambda: consent))
    answer = TestClient(app).get("/segments/all/customers").json()
    assert (answer["total"], answer["customer_ids"]) == (2, ["A", "D"])
    assert answer["left_out"] == {"suppressed": 1, "no_consent": 3}


def test_text_attributes_are_read_by_their_values(tmp_path, caplog):
    """A CSV's columns are all text: numbers are numbers (a handful of numeric codes stays a
    category), and e-mail addresses or one value per customer are not attributes, whatever the
    column is called."""
    caplog.set_level(logging.WARNING, logger="features.build")
    caplog.set_level(logging.WARNING, logger="portrait.privacy")
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    ids = ["A", "B", "C"] + [f"X{i:03d}" for i in range(117)]
    pd.DataFrame(
        {
            "customer_id": ids,
            "contact": [f"person{i}@example.com" for i in range(120)],
            "age": [18 + i % 50 for i in range(120)],
            "tier": [1 + i % 3 for i in range(120)],
            "member_no": [f"M{i:05d}" for i in range(120)],
            "region": ["north", "south"] * 60,
            "signed_up": [f"{1 + i % 28:02d}/{1 + i // 28:02d}/2023" for i in range(120)],  # day first, 120 dates
            "visited": [f"{1 + i % 3:02d}/03/2023" for i in range(120)],  # day first, 3 dates: a category
            "joined": [f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(120)],
        }
    ).to_csv(folder / "customers.csv", index=False)
    features = build_features(open_dataset(folder), AS_OF)
    attributes = {c: str(features[c].dtype) for c in features.columns if c.startswith("attr_")}
    assert attributes == {
        "attr_age": "float64",
        "attr_tier": "category",
        "attr_region": "category",
        "attr_visited": "category",  # as before the rule: a model or segment may read it
    }
    assert "days_since_joined" in features and "days_since_signed_up" not in features
    assert (
        "customers.signed_up: dates not written YYYY-MM-DD (such as 31/12/2023 or 12/31/2023); not used" in caplog.text
    )
    assert (
        "customers.visited: dates not written YYYY-MM-DD (such as 31/12/2023 or 12/31/2023); each date" in caplog.text
    )
    assert features.set_index("customer_id").loc["C", "attr_age"] == 20.0
    assert "customers.contact: values look like e-mail addresses; withheld as personal data" in caplog.text
    assert "customers.member_no: nearly one value per customer" in caplog.text


def _quarantine_of(tmp_path, table: str, text: str) -> pd.DataFrame:
    """Validate a data set of two purchases and ``table``'s CSV ``text``; its quarantine."""
    from portrait.validate import validate

    data = tmp_path / "data"
    data.mkdir()
    (data / "purchases.csv").write_text("order_id,customer_id,ts,amount\no1,A1,2024-01-05,1\no2,B1,2024-01-06,2\n")
    (data / f"{table}.csv").write_text(text)
    validate(open_dataset(data), tmp_path / "report")
    return pd.read_parquet(tmp_path / "report" / "quarantine" / f"{table}.parquet")


def test_quarantined_identities_rows_keep_no_identity_value(tmp_path):
    quarantine = _quarantine_of(
        tmp_path,
        "identities",
        "customer_id,id_type,id_value\n"
        "A1,email,alice@example.com\n"
        ",email,bob@example.com\n"  # no customer id
        "B1,,+15551234567\n"  # no type
        "A1,email,alice@example.com\n"  # a copy
        "C1,phone,\n",  # no value
    )
    by_reason = dict(
        zip(
            quarantine["_reject_reason"],
            quarantine["id_value"].astype(object).where(quarantine["id_value"].notna(), None),
            strict=True,
        )
    )
    assert by_reason == {
        "missing_customer_id": "(withheld)",
        "missing_id_type": "(withheld)",
        "duplicate_line": "(withheld)",
        "missing_id_value": None,
    }
    assert "example.com" not in quarantine.to_csv() and "5551234567" not in quarantine.to_csv()


def test_columns_whose_values_are_personal_data_are_withheld_whatever_their_name(tmp_path, caplog):
    """A ``contact`` of e-mails (mostly placeholders), a phone number stored as a number, a note
    with one international phone number: withheld where the table is read, so neither features
    nor a profile holds them; an income band, ISO dates and short codes are no phone numbers."""
    caplog.set_level(logging.WARNING, logger="portrait.privacy")
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    customers = pd.DataFrame(
        {
            "customer_id": ["A", "B", "C"],
            "contact": ["unknown", "n/a", "c@example.org"],
            "extra": [447700900001, 447700900002, 447700900003],
            "note": ["likes shoes", "call +44 7700 900123", "vip"],
            "income_band": ["100000-149999", "50000-74999", "100000-149999"],
            "einkommen": ["25.000-50.000", "50.000 - 75.000", "100.000-150.000"],
            "since": ["2023-01-05", "2023-02-06", "2022-12-01"],
            "store": [1001, 1002, 1001],
        }
    )
    customers.to_parquet(folder / "customers.parquet", index=False)
    dataset = open_dataset(folder)
    assert set(dataset.sources["customers"].withheld) == {"contact", "extra", "note"}
    con = dataset.connect()
    try:
        columns = {row[0] for row in con.execute("DESCRIBE SELECT * FROM customers").fetchall()}
    finally:
        con.close()
    assert columns == {"customer_id", "income_band", "einkommen", "since", "store"}
    assert "customers.contact: values look like e-mail addresses" in caplog.text
    assert "customers.extra: values look like long distinct numbers" in caplog.text
    assert "customers.note: values look like phone numbers" in caplog.text
    assert "c@example.org" not in caplog.text and "4477" not in caplog.text
    features = build_features(open_dataset(folder), AS_OF)
    assert not {"attr_contact", "attr_extra"} & set(features.columns)
    assert {"attr_income_band", "attr_store"} <= set(features.columns)


def test_a_malformed_customers_line_is_withheld_even_without_a_personal_column_name(tmp_path):
    """The line's fields are not where the header says: no column check clears its text."""
    quarantine = _quarantine_of(
        tmp_path,
        "customers",
        'customer_id,region,contact\nA1,north,x\nC7,north,"Jane Doe" <jane.doe@example.com>,+44 7700 900123\n',
    )
    assert quarantine["_raw_line"].tolist() == ["(text withheld: the line may hold personal data)"]
    assert "jane" not in (tmp_path / "report" / "report.json").read_text().lower()


def test_value_checks_tell_personal_values_from_codes_dates_amounts_and_times():
    """Each column on its own, through DuckDB as a data set reads it (the same SQL runs on
    Spark, transpiled: tests/test_spark_parity.py holds two such columns)."""
    import duckdb

    from portrait.privacy import personal_value_checks

    columns = {
        # withheld
        "email_among_placeholders": ["unknown", "n/a", "c@example.org"],
        "phone_in_a_note": ["likes shoes", "call +44 7700 900123", "vip"],
        "dotted_phones": ["06.12.34.56.78", "555.123.4567", "030/1234567"],
        "digit_phones": ["0612345678", "0712345679", "0612345670"],
        "national_phone_in_a_note": ["call 07700 900123 after 6pm", "vip", "likes shoes"],
        "card_numbers_as_text": ["4111111111110000", "4111111111110001", "5500000000000004"],
        # padded with a tab, a line break, a line separator (an export's cell): TRIM left them,
        # and the numbers were then neither numbers nor phones once judged digits alone
        "padded_phones": ["07700900123\t", "\t0201234567\r\n", "07700900125\u2028"],
        "padded_dotted_phones": ["06.12.34.56.78\n", "\x0b555.123.4567", "030/1234567\t"],
        # kept
        "day_first_times": ["01.02.2023 10:15", "12.03.2021 09:00", "01.02.2023 10:15"],
        # 8 digits are not judged: birth dates written DDMMYYYY, amounts in cents (and 8-digit phones)
        "birth_dates_as_digits": ["31121985", "01021990", "15071979"],
        "zip_plus_four": ["02134-1234", "90210-3301", "10001-0001"],
        "order_refs": ["order 123-456 shipped", "ref 0-24999", "0.12345678"],
        "income_band": ["100000-149999", "50000-74999", "100000-149999"],
        "compact_dates": ["20230105", "19901231", "20220101"],
        "day_first_dates": ["01-05-2023", "5-1-2023", "12.03.2021"],
        "big_incomes": ["1200000", "1500000", "2300000"],
        "epoch_seconds": ["1700000000", "1700000100", "1700000200"],
        "amounts": ["1234567.50", "2345678.10", "3456789.99"],
        "image": ["img@2x.png", "a", "b"],
        "points": ["+1000000 pts", "x", "y"],
    }
    frame = pd.DataFrame(columns)
    frame["phone_numbers"] = pd.Series([4155550100, 4155550101, 4155550102], dtype="int64")
    frame["epoch_millis"] = [1.7e12, 1.7e12 + 1, 1.7e12 + 2]
    # a card number read as a DOUBLE may not be whole: 4111111111109999.5
    frame["card_numbers"] = [4111111111109999.5, 4111111111110001.0, 5500000000000004.0]
    frame["odd_numbers"] = [float("nan"), float("inf"), 1e20]
    frame["lists"] = [["a"], ["b"], ["c"]]  # not checked (a nested type), and no error
    con = duckdb.connect()
    con.register("t", frame)
    checks = personal_value_checks([(r[0], r[1]) for r in con.execute("DESCRIBE t").fetchall()])
    found = checks.personal(con.execute(f"SELECT {checks.select} FROM t").fetchone())
    assert found == {
        "email_among_placeholders": "e-mail addresses",
        "phone_in_a_note": "phone numbers",
        "dotted_phones": "phone numbers",
        "digit_phones": "long distinct numbers (phone numbers or identifiers)",
        "phone_numbers": "long distinct numbers (phone numbers or identifiers)",
        "national_phone_in_a_note": "phone numbers",
        "card_numbers_as_text": "long distinct numbers (phone numbers or identifiers)",
        "card_numbers": "long distinct numbers (phone numbers or identifiers)",
        "padded_phones": "long distinct numbers (phone numbers or identifiers)",
        "padded_dotted_phones": "phone numbers",
    }


# Free texts and whether they hold personal data (also judged on Spark: tests/test_spark_parity.py).
FREE_TEXTS = [
    ("call 07700 900123 after 6pm", True),
    ("tel. 020 7946 1005", True),
    ("06.12.34.56.78", True),
    ("write to ann@example.com", True),
    ("+44 7700 900123", True),
    ("ticket 4711", False),
    ("0612345678", False),  # digits only: a reference number, judged as a number in columns
    ("01.02.2023 10:15", False),
    ("2024-01-05 10:15:00", False),
    ("img@2x.png", False),
    ("o123,C0001,2024-01-05 10:15:00,12.50,1,books", False),
    # a date elsewhere in the text does not hide a phone number
    ("A1,2024-01-05,view,call 07700 900123 Mary,extra", True),
    ("07700 900123 (Mary) since 2023-01-05", True),
    ("ring 0049 30 1234567", True),
    ("02134-1234", False),  # a ZIP+4 code
    ("call 415-555-0100 after 5", True),
    ("(415) 555-0100", True),
    ("sizes 100-200-3000", False),
    ("call 02 555 12 34", True),  # 9 digits: Brussels
    ("tel 06 1234567", True),
    ("lat 48.0012345678", False),  # after a decimal point
    ("p=0.00123456789", False),
    ("sizes 250 500 1000", False),
    ("2024-01-05 10:15:01.123456789", False),  # a time's fraction
    # the trunk 0 or the area code in brackets (two separators in a row): missed before
    ("call +44 (0)20 7946 0958", True),
    ("+49 (0)30 1234567", True),
    ("+33 (0)6 12 34 56 78", True),
    ("+7 (495) 123-45-67", True),
    ("Zentrale (030) 1234 5678", True),
    ("pack of 012 (24 x 0.5)", False),
    ("sizes 05 - 12 - 34", False),
    ("Season 01/2024 -02/2024", False),  # months written out are taken out first
    ("valid 1.2019 - 12.2020 only", False),
    ("call +44 7700  900123", True),  # two separators in a row
    ("tel 07700  900123", True),
    ("Tel. 030/ 1234 5678", True),
    ("0612 /345678", True),
    ("06.12.34.56.78", True),
    # white space of every kind, judged alike by Python and the SQL (they differed on each)
    ("\t0201234567", False),  # digits only, white space around them aside
    ("0201234567\n", False),
    ("\x0b0201234567", False),
    ("02012345678\r\n", False),
    ("\u20030201234567\u2003", False),
    ("abc\n0201234567\n", True),
    ("call\xa007700 900123", True),
    ("tel\t+44 7700 900123", True),
    ("name@example.com\n", True),
    ("x@y.com\u2028", True),
    ("a\xa0@b.com", False),  # no address: white space before the @, as "a @b.com"
    ("x\x0b@y.com", False),
    ("x@\xa0y.com", False),
    ("x@y\u2003z.com", False),
    ("\x850201234567\u2029", False),
    ("\f0201234567\u3000", False),
    ("a\u1680@b.com", False),
    ("a@b\u202f.com", False),
    ("mail a@b.com\x85", True),
    # file names are no address, in any case of their type but no other letter's
    ("img@2x.PNG", False),
    ("a@b.cd.\u017fvg", True),  # a long s: (?i) read it as an s in Python and RE2, not in Java
    ("x@y.png\u212a", False),  # a Kelvin sign after the type: not a letter A-Z
]


@pytest.mark.parametrize(("text", "personal"), FREE_TEXTS)
def test_free_text_holding_a_phone_number_or_an_e_mail_address(text, personal):
    from portrait.privacy import holds_personal_value, personal_text_sql

    assert holds_personal_value(text) is personal
    import duckdb

    assert (
        duckdb.connect().execute(f"SELECT {personal_text_sql('t')} FROM (SELECT ? AS t)", [text]).fetchone()[0]
        is personal
    )


def test_a_note_with_a_national_phone_number_is_refused():
    from portrait.privacy import refuse_personal_text

    with pytest.raises(PortraitError, match="holds an e-mail address or a phone number"):
        refuse_personal_text("caller 07700 900123 Mary", "--reason", 200, "kept with the tombstone")
    refuse_personal_text("ticket 4711", "--reason", 200, "kept with the tombstone")


def test_a_column_of_one_value_per_customer_is_no_attribute_however_few_the_customers(tmp_path, caplog):
    """40 customers' contact persons, one name each (a name no check recognises): not an
    attribute, where 25 cities among 40 customers and 30 of 40 distinct values (under 90%) are."""
    caplog.set_level(logging.WARNING, logger="features.build")
    folder = tmp_path / "data"
    folder.mkdir()
    ids = [f"C{i:02d}" for i in range(40)]
    PURCHASES.assign(customer_id="C00").to_csv(folder / "purchases.csv", index=False)
    pd.DataFrame(
        {
            "customer_id": ids,
            "kontaktperson": [f"Person {chr(65 + i % 26)}{i}" for i in range(40)],
            "city": [f"city{i % 25}" for i in range(40)],
            "grade": [f"g{i % 30}" for i in range(40)],
        }
    ).to_csv(folder / "customers.csv", index=False)
    features = build_features(open_dataset(folder), AS_OF)
    assert sorted(c for c in features.columns if c.startswith("attr_")) == ["attr_city", "attr_grade"]
    assert "customers.kontaktperson: nearly one value per customer, an identifier or free text; not used" in caplog.text


def test_free_text_kept_on_a_few_customers_and_nested_values_are_not_attributes(tmp_path, caplog):
    """Notes on 20 of 200 customers, each its own (names and addresses no check recognises), and
    a list column: not attributes, not shown in a profile; the build does not stop on the list."""
    from serving.profile import ProfileSources, build_profile

    caplog.set_level(logging.WARNING, logger="features.build")
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    ids = ["A", "B", "C"] + [f"X{i:03d}" for i in range(197)]
    notes = [f"wife {name} picks up at {i} High St" for i, name in enumerate(["Mary Jones", "Ann Lee"] * 10)]
    pd.DataFrame(
        {
            "customer_id": ids,
            "notes": notes + [None] * 180,
            "store": [f"S{i % 8}" for i in range(200)],
            "aliases": [[f"a{i}"] for i in range(200)],
        }
    ).to_parquet(folder / "customers.parquet", index=False)
    features = build_features(open_dataset(folder), AS_OF)
    assert [c for c in features.columns if c.startswith("attr_")] == ["attr_store"]
    assert "customers.notes: nearly one value per customer, an identifier or free text; not used" in caplog.text
    assert "customers.aliases: nested values (lists, structs, maps); not used" in caplog.text
    profile = build_profile("A", ProfileSources(data=folder))
    assert [a.name for a in profile.attributes.values] == ["store"]
    # one note on one customer is free text too
    one = pd.read_parquet(folder / "customers.parquet").assign(notes=["wife Ann Lee picks up"] + [None] * 199)
    one.to_parquet(folder / "customers.parquet", index=False)
    assert "attr_notes" not in build_features(open_dataset(folder), AS_OF).columns
    # with Parquet purchases the profile reads a copy narrowed to the person: still judged on all
    PURCHASES.to_parquet(folder / "purchases.parquet", index=False)
    (folder / "purchases.csv").unlink()
    profile = build_profile("A", ProfileSources(data=folder))
    assert [a.name for a in profile.attributes.values] == ["store"]
    assert any("2 column(s) not shown" in n.note for n in profile.notes)
    assert "High St" not in profile.model_dump_json() and "a0" not in profile.model_dump_json()


def test_validation_notes_customer_ids_that_are_e_mail_addresses(tmp_path):
    from portrait.validate import validate

    data = tmp_path / "data"
    data.mkdir()
    (data / "purchases.csv").write_text(
        "order_id,customer_id,ts,amount\no1,ann@example.com,2024-01-05,1\no2,B1,2024-01-06,2\n"
    )
    report = validate(open_dataset(data), tmp_path / "report")
    assert any("1 customer id looks like an e-mail address or a phone number" in n for n in report.notes)
    assert "ann@example.com" not in " ".join(report.notes)
    # the other tables' ids too (a customers or events row is a customer of the features): said
    # of the purchases' ids only, customers keyed by e-mail reached the features without a word
    (data / "customers.csv").write_text("customer_id,region\nB1,north\ncy@example.com,south\n+44 7700 900123,east\n")
    (data / "events.csv").write_text("customer_id,ts,event_type\nB1,2024-01-05,view\ndee@example.org,2024-01-05,view\n")
    notes = validate(open_dataset(data), tmp_path / "report").notes
    assert (
        "customers: 2 customer ids (of its 3 ids) look like e-mail addresses or phone numbers; ids reach lists, "
        "exports, API answers and messages, so replace them with opaque ids (or salted hashes) in the export"
    ) in notes
    assert any(n.startswith("events: 1 customer id (of its 2 ids) looks like an e-mail address") for n in notes)
    assert "example" not in " ".join(notes) and "7700" not in " ".join(notes)


def test_a_malformed_line_holding_an_e_mail_in_any_field_is_withheld(tmp_path):
    """No column is named like personal data; the bad line's memo holds an address: withheld.
    The other bad line keeps its text."""
    quarantine = _quarantine_of(
        tmp_path,
        "events",
        "customer_id,ts,event_type,memo\n"
        + "A1,2024-01-05,view,x\n" * 8
        + "A1,2024-01-05,view,from ann@example.com,extra\nB1,2024-01-06,view,plain,extra\n",
    )
    assert quarantine["_raw_line"].tolist() == [
        "(text withheld: the line may hold personal data)",
        "B1,2024-01-06,view,plain,extra",
    ]
    assert "ann@" not in (tmp_path / "report" / "report.json").read_text()


def test_a_column_named_personal_data_after_scoring_is_not_read_from_the_stored_outputs(tmp_path):
    """Scores and features stored before ``pii_columns`` named loyalty_card: a list neither
    filters by it nor shows it, a stored reason on it is dropped, and the data set's version
    (its fingerprint: what stored crowd material is checked against) changed with the file."""
    from marketing.filters import FilterError
    from serving.lists import build_list

    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    before = open_dataset(folder).fingerprint()
    (folder / "portrait.toml").write_text('[privacy]\npii_columns = ["loyalty_card"]\n')
    assert open_dataset(folder).fingerprint() != before
    privacy = open_dataset(folder).privacy
    features = pd.DataFrame(
        {"customer_id": ["A", "B"], "attr_loyalty_card": [4111.0, 5500.0], "orders_lifetime": [2, 1]}
    )
    scores = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "m_score": [0.9, 0.5],
            "m_percentile": [100, 50],
            "m_reason_1": ["loyalty card: 4111.0", "orders: 1"],
            "m_reason_2": ["orders: 2", None],
            "m_reason_3": [None, None],
        }
    )
    with pytest.raises(FilterError, match="unknown column 'attr_loyalty_card'"):
        build_list(scores, features, "m", where="attr_loyalty_card > 0", privacy=privacy)
    rows = build_list(scores, features, "m", privacy=privacy)
    assert "attr_loyalty_card" not in rows.columns
    assert "4111" not in rows.to_csv()
    assert rows.filter(like="reason").iloc[0].dropna().tolist() == ["orders: 2"]


def test_validation_notes_customer_ids_that_are_phone_numbers_written_as_digits(tmp_path):
    from portrait.validate import validate

    data = tmp_path / "data"
    data.mkdir()
    lines = [f"o{i},0770090000{i},2024-01-05,1" for i in range(3)] + ["o9,B1,2024-01-06,2", "o8,12345,2024-01-06,2"]
    (data / "purchases.csv").write_text("order_id,customer_id,ts,amount\n" + "\n".join(lines) + "\n")
    report = validate(open_dataset(data), tmp_path / "report")
    assert any("3 customer ids look like e-mail addresses or phone numbers" in n for n in report.notes)


def test_full_columns_of_many_values_stay_attributes_and_enum_labels_are_no_nesting():
    """35 cities among 60 customers (every one has a city) and a categorical column whose labels
    hold '<' or a type's name: attributes, as before the sparse free-text rule."""
    purchases = pd.DataFrame(
        [(f"o{i}", f"C{i}", "2024-01-05", 5.0) for i in range(60)], columns=["order_id", "customer_id", "ts", "amount"]
    )
    customers = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(60)],
            "city": [f"city{i % 35}" for i in range(60)],
            "age_band": pd.Categorical(["<25" if i % 2 else "25-34" for i in range(60)]),
            "sector": pd.Categorical(["CONSTRUCTION" if i % 2 else "Union County" for i in range(60)]),
        }
    )
    features = build_features(Dataset.from_frames(purchases=purchases, customers=customers), AS_OF)
    assert [c for c in features.columns if c.startswith("attr_")] == ["attr_city", "attr_age_band", "attr_sector"]


def test_a_dataset_version_follows_its_settings_not_comments(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    (folder / "portrait.toml").write_text('timezone = "UTC"\n')
    first = open_dataset(folder).fingerprint()
    (folder / "portrait.toml").write_text('# the shop\ntimezone = "UTC"   # as exported\n')
    assert open_dataset(folder).fingerprint() == first
    (folder / "portrait.toml").write_text('timezone = "UTC"\n[privacy]\npii_columns = ["x"]\n')
    assert open_dataset(folder).fingerprint() != first


def test_a_withheld_column_is_still_given_to_the_reasons_model_which_leaves_it_out(monkeypatch):
    """Reasons computed for a list read the model's features, a withheld one among them (it is
    never named in a reason): the list does not stop for want of it."""
    import serving.score
    from serving.lists import build_list

    given = {}

    def fake_reasons(model, frame, k=3, privacy=None):
        given["columns"] = list(frame.columns)
        return pd.DataFrame({f"reason_{i}": ["orders: 2"] * len(frame) for i in (1, 2, 3)})

    monkeypatch.setattr(serving.score, "reasons_for", fake_reasons)
    features = pd.DataFrame(
        {"customer_id": ["A", "B"], "attr_loyalty_card": [4111.0, 5500.0], "orders_lifetime": [2, 1]}
    )
    scores = pd.DataFrame({"customer_id": ["A", "B"], "m_score": [0.9, 0.5], "m_percentile": [100, 50]})
    model = type("Model", (), {"version": 1, "features": ["attr_loyalty_card", "orders_lifetime"]})()
    rows = build_list(
        scores, features, "m", reasons_model=model, privacy=PrivacySettings(pii_columns=("loyalty_card",))
    )
    assert "attr_loyalty_card" in given["columns"] and "attr_loyalty_card" not in rows.columns
    assert rows["reason_1"].tolist() == ["orders: 2", "orders: 2"]


def test_a_column_withheld_by_its_values_is_not_read_from_outputs_stored_before(tmp_path):
    """A run of an older version stored attr_note; the data set withholds note now by its values
    (a phone number in it), without pii_columns: the privacy settings lists read name it."""
    from marketing.filters import FilterError
    from serving.lists import build_list
    from serving.profile import privacy_now

    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    pd.DataFrame({"customer_id": ["A", "B"], "note": ["call 07700 900123", "vip"]}).to_csv(
        folder / "customers.csv", index=False
    )
    privacy = privacy_now(folder)
    assert privacy.pii_columns == ("note",)
    features = pd.DataFrame({"customer_id": ["A", "B"], "attr_note": ["call 07700 900123", "vip"]})
    scores = pd.DataFrame({"customer_id": ["A", "B"], "m_score": [0.9, 0.5], "m_percentile": [100, 50]})
    with pytest.raises(FilterError, match="unknown column 'attr_note'"):
        build_list(scores, features, "m", where="attr_note = 'vip'", privacy=privacy)


@pytest.mark.parametrize(
    ("sql_type", "nested"),
    [
        ("VARCHAR[]", True),
        ("INTEGER[3]", True),
        ("STRUCT(a INTEGER)", True),
        ("MAP(VARCHAR, INTEGER)", True),
        ("ARRAY<STRING>", True),
        ("ENUM('sad', 'ok')[]", True),
        ("ENUM('<25', '25-34')", False),
        ("ENUM('CONSTRUCTION', 'Union County')", False),
        ("VARCHAR", False),
        ("DECIMAL(10,2)", False),
    ],
)
def test_nested_types_are_told_by_the_type_not_by_enum_labels(sql_type, nested):
    from portrait.privacy import is_nested_type

    assert is_nested_type(sql_type) is nested


def test_settings_with_the_columns_withheld_now_for_cli_lists(tmp_path):
    from portrait.privacy import with_withheld_columns

    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    pd.DataFrame({"customer_id": ["A", "B"], "note": ["call 07700 900123", "vip"], "email": ["a@b.co", None]}).to_csv(
        folder / "customers.csv", index=False
    )
    (folder / "portrait.toml").write_text('[privacy]\npii_columns = ["loyalty"]\n')
    dataset = open_dataset(folder)
    assert with_withheld_columns(dataset.privacy, dataset).pii_columns == ("loyalty", "email", "note")


def test_an_identity_map_view_inside_a_duckdb_data_set_file_is_not_the_merge(tmp_path):
    """A view named identity_map in an attached data set file (no identities table) was taken
    for the merge of identities: forget then failed on a table that does not exist."""
    import duckdb

    from portrait.privacy import has_identity_map

    source = tmp_path / "ds.duckdb"
    with duckdb.connect(str(source)) as con:
        con.execute("CREATE VIEW identity_map AS SELECT 'a' AS customer_id, 'a' AS person_id")
    con = duckdb.connect()
    con.execute(f"ATTACH '{source}' AS source_db (READ_ONLY)")
    assert not has_identity_map(con)
    con.execute("CREATE TEMP VIEW identity_map AS SELECT 'a' AS customer_id, 'a' AS person_id")
    assert has_identity_map(con)


def test_sensitive_terms_finds_names_of_any_script_in_any_case_and_unicode_form():
    """A drill-down by "género = f" passed a marketing key: words were ASCII letters only."""
    from portrait.privacy import sensitive_terms

    sensitive = ["attr_gender", "género", "地域"]
    assert sensitive_terms("género = f", sensitive) == ["género"]
    assert sensitive_terms("GÉNERO = f", sensitive) == ["género"]
    assert sensitive_terms("ge\u0301nero = f", sensitive) == ["género"]  # decomposed, as a Mac writes it
    assert sensitive_terms("地域 = 東京", sensitive) == ["地域"]
    assert sensitive_terms("spend_365d > 10 and attr_gender = 'F'", sensitive) == ["attr_gender"]
    assert sensitive_terms("géneros = f", sensitive) == []  # a whole word only
    assert sensitive_terms("attr_gender_band = 1", sensitive) == []
    assert sensitive_terms("gender = f", ["gender", "gender", "attr_gender"]) == ["gender"]  # said once


def test_a_segment_description_holding_a_contact_or_a_document_is_refused(tmp_path):
    """Served to every key (GET /segments/NAME): 'call bob@example.com +44 7700 900123' was
    stored and served, and so was a 100,000-character description."""
    from marketing.segments import Segment, SegmentStore

    store = SegmentStore(tmp_path / "segments")
    with pytest.raises(PortraitError, match=r"^--description holds an e-mail address or a phone number"):
        store.save(Segment("e1", description="call bob@example.com", where="spend_365d > 1"))
    with pytest.raises(PortraitError, match=r"^--description holds an e-mail address or a phone number"):
        store.save(Segment("e1", description="call +44 7700 900123", where="spend_365d > 1"))
    with pytest.raises(
        PortraitError,
        match=r"^--description is 100000 characters; at most 500: what the segment is for \(a campaign's brief\)$",
    ):
        store.save(Segment("e1", description="x" * 100_000, where="spend_365d > 1"))
    assert not (tmp_path / "segments").exists()  # nothing written
    store.save(Segment("e1", description="Q4 2024 win-back: 3 orders in 90 days, none in 30", where="spend_365d > 1"))
    assert store.load("e1").description == "Q4 2024 win-back: 3 orders in 90 days, none in 30"


# A date of birth's text (or stored value) and the year of birth read from it (None: no year).
BIRTH_DATES = [
    ("1975-11-29", 1975),
    ("1975/1/9", 1975),
    ("1975.11.29", 1975),
    ("19751129", 1975),
    ("1975-11-29 08:00:00", 1975),
    ("1975-11-29T08:00:00Z", 1975),
    (" 1975-11-29\t", 1975),  # white space of any kind around it
    ("29.11.1975", 1975),
    ("11/29/1975", 1975),  # day and month either way round: the year is the same
    ("29111975", 1975),
    ("20011985", 1985),  # 20 January 1985, not a year 2001 with a 19th month
    ("31121985", 1985),
    ("2001-02-03", 2001),
    ("03.02.2001", 2001),
    ("19751129.0", 1975),  # a CSV written from a float column
    ("1021980", 1980),  # 01021980 once its leading zero is lost (1 February 1980)
    ("1975 11 29", 1975),
    ("29. 11. 1975", 1975),
    ("29-Nov-1975", 1975),
    ("29NOV1975", 1975),
    ("Nov 29, 1975", 1975),
    ("1975-11-29+01:00", 1975),
    ("19751129T080000", 1975),
    ("29/11/75", None),  # a two-digit year is not guessed
    ("1975", None),
    ("1975-13-01", None),
    ("32/01/1990", None),
    ("1890-01-01", None),
    ("1900-01-01", None),  # a system's placeholder for no date (it was read as born in 1900)
    ("01.01.1900", None),
    ("1901-01-01", 1901),
    ("12345678", None),
    ("-130000000", None),  # seconds since 1970
    ("unknown", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "year"), BIRTH_DATES)
def test_the_year_of_birth_is_read_from_a_date_as_exports_write_it(text, year):
    import duckdb

    from portrait.privacy import birth_year_sql

    con = duckdb.connect()
    assert con.execute(f"SELECT {birth_year_sql('t')} FROM (SELECT ?::VARCHAR AS t)", [text]).fetchone()[0] == year


def test_the_year_of_birth_is_read_from_stored_dates_times_and_numbers():
    """A time stored with a zone is read in the data set's zone: a local midnight on 1 January is
    31 December in UTC. Numbers: a float column's 19751129.0, an integer's lost leading zero."""
    import duckdb

    from portrait.privacy import birth_year_sql

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    columns = {"d": "DATE", "t": "TIMESTAMP", "z": "TIMESTAMP WITH TIME ZONE", "f": "DOUBLE", "i": "BIGINT"}
    years = ", ".join(birth_year_sql(name, sql_type, "Europe/Berlin") for name, sql_type in columns.items())
    rows = con.execute(
        f"SELECT {years} FROM (VALUES (DATE '1975-11-29', TIMESTAMP '1980-01-02 03:04:05', "
        "TIMESTAMPTZ '1974-12-31 23:00:00+00', 19751129.0::DOUBLE, 1021980::BIGINT), "
        "(NULL, NULL, NULL, 1700000000.0, -130000000)) v(d, t, z, f, i)"
    ).fetchall()
    assert rows == [(1975, 1980, 1975, 1975, 1980), (None, None, None, None, None)]
    in_utc = birth_year_sql("z", "TIMESTAMP WITH TIME ZONE", "UTC")
    assert con.execute(f"SELECT {in_utc} FROM (SELECT TIMESTAMPTZ '1974-12-31 23:00:00+00' z)").fetchone()[0] == 1974


@pytest.mark.parametrize(
    ("table", "columns", "pii", "source"),
    [
        ("customers", ["customer_id", "date_of_birth", "email"], (), ("date_of_birth",)),
        ("customers", ["customer_id", "email", "DOB", "birthday"], (), ("DOB", "birthday")),  # in order
        ("customers", ["customer_id", "DOB", "birthday"], ("DOB",), ("birthday",)),  # one withheld whole
        ("customers", ["customer_id", "date_of_birth"], ("date_of_birth",), ()),  # withheld whole on purpose
        ("customers", ["customer_id", "date_of_birth", "Birth_Year"], (), ()),  # the table has one
        ("customers", ["customer_id", "date_of_birth", "year_of_birth"], (), ()),
        ("customers", ["customer_id", "dob", "YOB"], (), ()),
        ("customers", ["customer_id", "dob"], ("birth_year",), ()),  # its year withheld on purpose
        ("customers", ["customer_id", "email"], (), ()),
        ("identities", ["customer_id", "id_type", "id_value", "dob"], (), ()),
    ],
)
def test_which_date_of_birth_gives_its_year(table, columns, pii, source):
    from portrait.privacy import birth_year_sources, withheld_columns

    settings = PrivacySettings(pii_columns=pii)
    withheld = withheld_columns(table, columns, ["customer_id", "id_type", "id_value"], settings)
    assert birth_year_sources(table, columns, withheld, settings) == source


def test_each_row_takes_its_year_from_the_first_date_of_birth_that_gives_one(tmp_path):
    """An export with an empty ``dob`` beside a filled ``date_of_birth``: the first column was
    read alone, so every year was missing."""
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D"],
            "dob": ["", "1980-01-02", "not known", ""],
            "date_of_birth": ["29.11.1975", "1990-05-05", "03/02/2001", ""],
        }
    ).to_csv(folder / "customers.csv", index=False)
    con = open_dataset(folder).connect()
    assert con.execute("SELECT customer_id, birth_year FROM customers ORDER BY 1").fetchall() == [
        ("A", "1975"),
        ("B", "1980"),  # the first column's, where it gives one
        ("C", "2001"),
        ("D", None),
    ]
    columns = [c[0] for c in con.execute("DESCRIBE customers").fetchall()]
    assert columns == ["customer_id", "birth_year"]


def test_a_date_of_birth_is_withheld_and_its_year_is_an_attribute(tmp_path, caplog, monkeypatch):
    """The date never reaches a view, a feature or a profile (its days-since feature gave it
    back); its year does, as ``birth_year``: it groups people, and an age at a cutoff follows."""
    from portrait import privacy
    from serving.profile import ProfileSources, build_profile

    monkeypatch.setattr(privacy, "_reported", set())  # logged once per process: whatever ran before
    caplog.set_level(logging.WARNING, logger="portrait.privacy")
    folder = tmp_path / "data"
    folder.mkdir()
    PURCHASES.to_csv(folder / "purchases.csv", index=False)
    others = [f"X{i:02d}" for i in range(12)]  # more years than a handful of codes: a number
    pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", *others],
            "date_of_birth": ["1975-11-29", "03/02/2001", "unknown", *(f"{1950 + i}0615" for i in range(12))],
            "region": "n",
        }
    ).to_csv(folder / "customers.csv", index=False)
    dataset = open_dataset(folder)
    con = dataset.connect()
    assert [c[0] for c in con.execute("DESCRIBE customers").fetchall()] == ["customer_id", "region", "birth_year"]
    # a CSV's columns are text, typed by their values (as a birth_year column of the export)
    assert con.execute("SELECT customer_id, birth_year FROM customers ORDER BY 1 LIMIT 4").fetchall() == [
        ("A", "1975"),
        ("B", "2001"),
        ("C", None),
        ("X00", "1950"),
    ]
    features = build_features(dataset, AS_OF).set_index("customer_id")
    assert features.loc[["A", "B"], "attr_birth_year"].tolist() == [1975, 2001]
    assert pd.isna(features.loc["C", "attr_birth_year"])
    assert not [c for c in features.columns if "date_of_birth" in c]
    profile = build_profile("A", ProfileSources(data=folder))
    assert [(a.name, a.value) for a in profile.attributes.values] == [("region", "n"), ("birth_year", "1975")]
    assert "date_of_birth" not in profile.model_dump_json() and "11-29" not in profile.model_dump_json()
    assert "date_of_birth (only its year is read, as birth_year) (named like personal data)" in caplog.text
    out = tmp_path / "validation"
    code, text = run("validate", str(folder), "--out", str(out))
    assert code == 0
    assert (
        "customers: personal-data columns withheld, never read: date_of_birth (of date_of_birth only the year of "
        "birth is read, as the attribute birth_year)" in text
    )
