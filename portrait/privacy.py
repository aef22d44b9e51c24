"""Personal data: which columns are withheld from everything, and who may be put on a list.

**Withheld columns.** A column of the ``customers`` or ``identities`` table is *personal data*
when the data set's ``portrait.toml`` names it, or when its name says it is one (the built-in
guard, :func:`is_pii_name`)::

    [privacy]
    pii_columns = ["loyalty_card"]          # withheld besides the built-in guard
    consent_column = "marketing_consent"    # customers column; false/0/no = opted out
    suppression_file = "suppressed.csv"     # one customer id per line (relative to the data set)
    sensitive_columns = ["gender", "age_band"]  # shown to analysts only (a profile's attributes)

The guard knows e-mail addresses (``email``, ``e-mail``, ``contact_email``), phone numbers
(``phone``, ``mobile``, ``tel``, ``fax``), personal names (``name``, ``first_name``,
``full_name``, ``surname``, ``customer_name``; not ``brand_name`` or ``store_name``), postal
addresses (``address``, ``street``, ``postcode``, ``zip``), identity documents (``id_card``,
``national_id``, ``passport``, ``ssn``), card numbers and dates of birth (``dob``,
``date_of_birth``, ``birth_dt``; not a year or month of birth, nor ``birthday_offer``; the year
of a date of birth is kept: :data:`BIRTH_YEAR`), shortened or run together
(``cust_name``, ``addr``, ``AddressLine1``) or in other languages (``Vorname``, ``prénom``,
``Straße``, ``telefono``: accents dropped), also with a number (``email2``, ``address1``) or the
words the other way round (``name_first``). A name ending like a flag (``email_opt_in``,
``phone_verified``, ``address_type``) or starting with ``has_``/``is_`` is not withheld: it
holds no personal value; nor is an engagement column, a name ending in a count, a rate or a date
of what was done through an e-mail address or a phone (``email_opens_90d``, ``last_email_date``,
``phone_calls``), whose values are still checked (below). Contract columns (``customer_id``, ``id_type``, ``id_value``) and the
configured consent column are never withheld.

A column whose *values* are personal data is withheld too, whatever its name (a ``contact``
or ``note`` column; :func:`personal_value_checks`, one scan of the table when it is first
read): one value holding an e-mail address (not ``img@2x.png``) or a phone number, even inside
other text, withholds it: international (``+44 7700 900123``, ``0049 30 1234567``) or national
(a trunk 0 and 9 to 11 more digits: ``call 07700 900123 after 6pm``, ``06.12.34.56.78``; or
North American, ``415-555-0100``; dates
written out, ``01.02.2023``, are taken out of the text first); so do values mostly shaped like
phone numbers (7 to 20 characters of digits with spaces, dots, slashes, dashes or brackets;
not dates, ranges such as ``100000-149999`` or ``25.000-50.000`` or amounts) and values mostly distinct whole
numbers of 9 to 16 digits, as numbers or as digit strings (phone, card or account numbers; not
times in seconds or milliseconds since 1970). An 8-digit number is not judged (dates written
as digits, amounts in cents): a column of 8-digit phone numbers needs ``pii_columns``.
Placeholders (``unknown``, ``n/a``, ``-``) do not count as values. Personal data that has no
shape, a name in free text, is not recognisable: name such a column in ``pii_columns`` (a text
column of nearly one value per customer is not used as an attribute either:
:func:`features.build.attribute_kinds`).

Withheld columns are left out of the table where it is read (:meth:`TableSource.scan_sql
<portrait.dataset.TableSource.scan_sql>`), so no view, feature, persona page, report, list,
MLflow run, log or API answer can see them; their names (never their values) are logged once
per process and listed in the validation report.

**Consent.** Every export and list leaves out the people who may not be contacted
(:func:`apply_consent`): with a ``consent_column``, everyone whose consent is not recorded as
given (``true``/``1``/``yes``; ``false``/``0``/``no`` is an opt-out, and a customer with no
value or no customers row has not given it); with a ``suppression_file``, everyone listed there.
Ids are resolved through identity merging: a person opted out or suppressed under any of their
customer ids is left out under all of them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from portrait.contract import placeholder_expr
from portrait.errors import ConfigError, ContractError, PortraitError, Unavailable
from portrait.files import file_stamp
from portrait.sql import quote_ident, quote_literal, zone_aware

if TYPE_CHECKING:
    import duckdb

    from portrait.dataset import Dataset

log = logging.getLogger(__name__)

GUARDED_TABLES = ("customers", "identities")
PRIVACY_KEYS = ("pii_columns", "consent_column", "suppression_file", "sensitive_columns")
# Reasons a customer is left out of an export, as keys of apply_consent's counts.
NO_CONSENT = "no_consent"
SUPPRESSED = "suppressed"
CONSENT_GIVEN = ("true", "t", "yes", "y", "1", "1.0")
CONSENT_REFUSED = ("false", "f", "no", "n", "0", "0.0")

# Words that make a column personal data wherever they appear in its name (single words, or
# two adjacent words written together: first+name, e+mail, zip+code).
_ALWAYS = frozenset(
    {
        "email",
        "emails",
        "emailaddress",
        "phone",
        "phones",
        "phonenumber",
        "telephone",
        "cellphone",
        "mobilephone",
        "msisdn",
        "fax",
        "address",
        "addresses",
        "street",
        "streetaddress",
        "postcode",
        "postalcode",
        "zipcode",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "forename",
        "givenname",
        "middlename",
        "maidenname",
        "username",
        "nickname",
        "passport",
        "ssn",
        "idcard",
        "identitycard",
        "nationalid",
        "nationalidentity",
        "nationalinsurance",
        "socialsecurity",
        "taxid",
        "idnumber",
        "iban",
        # national identity and tax numbers by their own names (Spain, Brazil, Poland, the
        # Netherlands, Italy, Sweden, Germany)
        "nif",
        "cpf",
        "pesel",
        "codicefiscale",
        "personnummer",
        "steuerid",
        "steuernummer",
        # shortened and run together, as exports write them
        "addr",
        "addressline",
        "creditcard",
        "cardnumber",
        "creditcardnumber",
        "ccnumber",
        "numerocarte",
        # other languages' exports (accents dropped: prénom is prenom, Straße strasse)
        "vorname",
        "nachname",
        # a person's name as one word: a customer's, a user's, a family's, a birth name, a nickname
        # (Kundenname passed as an attribute and was printed in profiles)
        "sobrenome",
        "kundenname",
        "benutzername",
        "familienname",
        "geburtsname",
        "rufname",
        "spitzname",
        "voornaam",
        "achternaam",
        "klantnaam",
        "nombrecompleto",
        "nomecompleto",
        "nomcomplet",
        "fornavn",
        "efternavn",
        "etternavn",
        "fornamn",
        "efternamn",
        "prenom",
        "apellido",
        "apellidos",
        "cognome",
        "strasse",
        "adresse",
        "direccion",
        "indirizzo",
        "telefon",
        "telefonnummer",
        "handynummer",
        "mobilnummer",
        "emailadresse",
        "mailadresse",
        "telefono",
        "telefone",
        "correo",
        "courriel",
        "plz",
        "codigopostal",
        # more of them (a user's test: Anschrift and Ansprechpartner reached features, profiles
        # and a crowd report's values): German, Polish, Dutch, Portuguese, Italian
        "anschrift",
        "lieferadresse",
        "rechnungsadresse",
        "lieferanschrift",
        "rechnungsanschrift",
        "empfanger",
        "ansprechpartner",
        "rufnummer",
        "mobilfunknummer",
        "personalausweis",
        "ausweisnummer",
        "kontonummer",
        "nazwisko",
        "imie",
        "adres",
        "celular",
        "cellulare",
        "endereco",
        # Cyrillic and CJK names (words of any script: _words); a CJK name is also judged by
        # what it contains (_CJK_PERSONAL), as it is written without separators
        "имя",
        "фамилия",
        "отчество",
        "фио",
        "телефон",
        "адрес",
        "почта",
    }
)
# Personal data in a name written in Chinese or Japanese, wherever it appears in the name
# (顧客氏名 is a customer's name): names, telephone numbers, addresses, e-mail.
_CJK_PERSONAL = ("氏名", "名前", "姓名", "電話", "电话", "手机", "携帯", "住所", "地址", "邮箱", "メール")
# Words that are personal data only as the last word of the name (after a number suffix is
# dropped), alone or after a word saying whose: ``mobile``, ``home_tel``, ``customer_name``;
# not ``mobile_app_user`` or ``brand_name``.
# (dni and bsn, a Spanish and a Dutch identity number, only so: dni is Polish for days, as in
# liczba_dni, and bsn short for business, as in bsn_unit)
_AS_HEAD = frozenset(
    {"mobile", "tel", "cell", "name", "zip", "mail", "nom", "nombre", "nome", "naam", "handy", "mobil", "dni", "bsn"}
)
_WHOSE = frozenset(
    {
        "customer",
        "cust",
        "client",
        "cliente",
        "kunde",
        "famille",
        "contact",
        "person",
        "member",
        "user",
        "account",
        "holder",
        "owner",
        "home",
        "work",
        "private",
        "personal",
        "primary",
        "secondary",
        "main",
        "billing",
        "shipping",
        "delivery",
        "first",
        "last",
        "full",
        "given",
        "family",
        "middle",
        "legal",
        "real",
        "display",
        "e",
        # other languages' (nome_utente, primeiro_nome, naam_klant, gebruiker_naam)
        "utente",
        "primeiro",
        "ultimo",
        "klant",
        "gebruiker",
    }
)
# A date of birth (with a postcode it singles out most people, and a feature of the days since
# it gives the date back), as the last words of a name: dob, customer_dob, date_of_birth,
# birth_dt, BDate, Geburtsdatum, geb_datum, fecha_nac, f_nacimiento (and _BIRTH_ALONE). Not a
# year or a month of birth, an age or an age band, which group people (dob_year,
# birthday_month), nor a programme's columns (birthday_offer, birthday_club_member).
_BIRTH_DATE = frozenset(
    {
        "dob",
        "bday",
        "bdate",
        "birthday",
        "birthdate",
        "birthdt",
        "birthts",
        "birthtimestamp",
        "datebirth",
        "dateofbirth",
        "dtofbirth",
        "dayofbirth",
        "geburtsdatum",
        "geburtstag",
        "gebdatum",
        "gebdat",
        "gebdt",
        "dateborn",
        "fnacimiento",
        "fechanac",
        "geboortedatum",
        "fechadenacimiento",
        "fechanacimiento",
        "datedenaissance",
        "datenaissance",
        "datadinascita",
        "datanascita",
        "datadenascimento",
        "datanascimento",
    }
)
# Words naming a birth, a date of birth only alone, after a word saying whose or before a word
# saying it is a date (born, customer_born, born_date, naissance): not a place of birth
# (lieu_naissance, pais_nacimiento) nor first_born.
_BIRTH_ALONE = frozenset({"born", "nacimiento", "naissance", "geboren"})
_A_PERSON = frozenset({"customer", "cust", "client", "cliente", "kunde", "member", "user", "person", "contact"})
# A name holding one of these is a year or a month of birth, not the date (year_born,
# month_born, ano_nacimiento from año, annee_naissance, mois_naissance, geburtsjahr's parts).
_PERIOD_WORDS = frozenset({"year", "yr", "yyyy", "month", "ano", "anio", "annee", "mois", "mes", "jahr", "monat"})
# ... also followed by a word saying it is a date or a time, or how it is written: birth_date,
# birthday_date, dob_ts, birth_datetime, dob_yyyymmdd, dob_str, dob_raw
_DATE_WORDS = frozenset({"date", "dt", "ts", "timestamp", "time", "datetime", "dttm", "yyyymmdd", "ddmmyyyy"})
_DATE_WORDS |= frozenset({"mmddyyyy", "iso", "str", "string", "text", "txt", "raw", "value", "val"})
_NUMBER_SUFFIXES = frozenset({"number", "no", "nr", "num"})
# A name ending in one of these (or starting with has/is) is a flag or a kind, not the value.
_FLAG_ENDINGS = frozenset(
    {
        "opt",
        "optin",
        "optout",
        "in",
        "out",
        "consent",
        "consented",
        "permission",
        "allowed",
        "verified",
        "validated",
        "valid",
        "bounced",
        "known",
        "present",
        "provided",
        "flag",
        "status",
        "type",
        "kind",
        "count",
        "domain",
        # other languages' flags: telefono_verificado, correo_valido
        "verificado",
        "valido",
        "validado",
        "verifie",
        "verifiziert",
    }
)
_FLAG_STARTS = frozenset({"has", "is", "uses"})
# A name ending in a word that counts, rates or dates something done through an e-mail address or
# a phone, or starting with a count, is an engagement column, not the address or the number:
# email_opens, emails_opened_90d, email_engagement_score, last_email_date, phone_calls,
# birthday_email_sent, num_emails, days_since_last_email. Only for those contact channels: an
# address, a name or an identity number has no shape the value checks know, so address_updated
# or ssn_date stay withheld. (A date of birth is judged before: birth_date is one.)
_CONTACT_CHANNELS = frozenset(
    {"email", "emails", "mail", "courriel", "correo", "phone", "phones", "telephone", "telefon", "telefono"}
    | {"telefone", "fax", "cellphone", "mobilephone", "msisdn", "mobile", "tel", "cell", "sms"}
)
_COUNT_STARTS = frozenset({"num", "n", "nb", "count", "total", "days", "weeks", "months"})
_MEASURE_ENDINGS = frozenset(
    {
        "at",
        "received",
        "unsubscribes",
        "pct",
        "percent",
        "ratio",
        "share",
        "ctr",
        "opens",
        "opened",
        "clicks",
        "clicked",
        "sent",
        "sends",
        "delivered",
        "deliveries",
        "bounces",
        "calls",
        "replies",
        "responses",
        "responded",
        "score",
        "rate",
        "engagement",
        "subscribed",
        "unsubscribed",
        "date",
        "changed",
        "updated",
    }
)
# Window words a measure's name may end with (emails_opened_90d, email_clicks_12m, calls_ytd).
_WINDOW_WORDS = frozenset(
    {"d", "day", "days", "w", "wk", "week", "weeks", "m", "mo", "month", "months", "y", "yr", "year", "years"}
    | {"ytd", "mtd", "qtd", "lifetime", "total", "last", "past"}
)

_reported: set[tuple] = set()


def _words(name: str) -> list[str]:
    """The words of a column name: split at separators, case changes and where letters and
    digits meet (``email2``, ``address1``, ``zip5`` are ``email``, ``address``, ``zip`` + a number)."""
    name = unicodedata.normalize("NFKD", str(name)).replace("\u00df", "ss")  # prénom -> prenom, Straße -> Strasse
    name = "".join(c for c in name if not unicodedata.combining(c))
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Za-z])([0-9])|([0-9])([A-Za-z])", r"\1\3 \2\4", spaced)
    # words of any script (Имя, Фамилия), split at anything that is not a letter or a digit
    return [w for w in re.split(r"[\W_]+", spaced.lower()) if w]


def _is_birth_date(words: list[str]) -> bool:
    """Whether the last words of a name (:data:`_BIRTH_DATE`), or those before a last word
    saying it is a date (``birth`` too then: ``birth_dt``), name a date of birth."""
    if _PERIOD_WORDS & set(words):
        return False
    ends = {"".join(words[-n:]) for n in range(1, min(len(words), 4) + 1)}
    named = words
    if len(words) > 1 and words[-1] in _DATE_WORDS:
        before = words[:-1]
        ends |= {"".join(before[-n:]) for n in range(1, min(len(before), 4) + 1)}
        if before[-1] == "birth":
            return True
        named = before
    if named[-1] in _BIRTH_ALONE and (len(named) == 1 or (len(named) == 2 and named[0] in _A_PERSON)):
        return True
    return bool(_BIRTH_DATE & ends)


def is_birth_date_name(column: str) -> bool:
    """Whether the guard withholds ``column`` because its name says it is a date of birth."""
    return is_pii_name(column) and _is_birth_date(_core_words(_words(column)))


def _core_words(words: list[str]) -> list[str]:
    """A name's words less a trailing number or number word (``phone_number``, ``email2``)."""
    core = list(words)
    while len(core) > 1 and (core[-1] in _NUMBER_SUFFIXES or core[-1].isdigit()):
        core.pop()
    return core


# What a date of birth gives instead of itself: its year, as the customers attribute
# ``birth_year`` (those born in one year are many; an age at a cutoff is the cutoff's year less
# it), where the date singles people out and a days-since feature gave it back.
BIRTH_YEAR = "birth_year"
# Names of a year of birth the table may hold already (then none is derived): birth_year,
# year_of_birth, yob, dob_year, BirthYr (words run together).
_YEAR_OF_BIRTH = frozenset(
    {"birthyear", "birthyr", "yearofbirth", "yob", "dobyear", "yearborn", "bornyear", "yrborn", "geburtsjahr"}
    | {"anonacimiento", "anionacimiento", "anodenacimiento", "anneenaissance", "anneedenaissance"}
)
# The year in a date of birth as exports write one, year first (1975-11-29, 1975/11/29,
# 1975 11 29, 19751129, 19751129.0 from a float column, a stored date's text) or last
# (29.11.1975, 29. 11. 1975, 11/29/1975, 29-Nov-1975, Nov 29, 1975, 29111975, or 1021980 once
# the leading zero of 01021980 is lost in a number column: which of day and month comes first need
# not be known for the year), a time or a zone after it. A month or a day
# out of range reads no year, which tells 19751129 from 20011985 (20 January 1985). Nothing from
# a two-digit year, a count of days or seconds, or other text. The same in Python, DuckDB (RE2)
# and Java (Spark) for a value without a line break inside it (Python's $ matches before a last
# line break, Java's . matches no line break: the value is stripped first).
_MONTH = "(?:0?[1-9]|1[0-2])"
_DAY = "(?:0?[1-9]|[12][0-9]|3[01])"
_MM = "(?:0[1-9]|1[0-2])"
_DD = "(?:0[1-9]|[12][0-9]|3[01])"
_YEAR = "((?:19|20)[0-9]{2})"
_SEP = "(?:[-/.] ?| )"
_MONTH_NAME = r"[A-Za-z]{3,9}\.?"
_END = r"(?:\.0+)?(?:[ T+Z].*)?"
YEAR_FIRST = rf"^{_YEAR}(?:{_SEP}{_MONTH}{_SEP}{_DAY}|{_MM}{_DD}){_END}$"
YEAR_LAST = rf"^(?:{_DAY}{_SEP}{_DAY}{_SEP}|{_DAY}{_SEP}?{_MONTH_NAME}{_SEP}?|{_MONTH_NAME} {_DAY},? |{_DD}{_DD}|[1-9]{_DD}){_YEAR}{_END}$"


# A system's placeholder for a date it was not given (1900-01-01, SQL Server's and Excel's day
# zero), not a birth: no customer in data of this century was born in 1900. Read as unknown.
PLACEHOLDER_BIRTH_YEAR = "1900"


def birth_year_sql(column: str, source_type: str = "VARCHAR", timezone: str = "UTC", as_text: bool = False) -> str:
    """SQL: the year of birth in the date of birth ``column`` (a quoted name) stored as
    ``source_type``, or NULL when its value is not a date :data:`YEAR_FIRST` or
    :data:`YEAR_LAST` reads or is in :data:`PLACEHOLDER_BIRTH_YEAR`; as text when ``as_text``
    (a CSV table's columns are all read as text, then typed by their values). A time stored
    with a zone is read in the data set's ``timezone`` (a local midnight on 1 January is the day
    before in UTC)."""
    kind = source_type.upper()
    if zone_aware(kind):
        text = f"CAST(timezone({quote_literal(timezone)}, CAST({column} AS TIMESTAMPTZ)) AS VARCHAR)"
    elif kind.startswith(NUMBER_TYPES):  # digits as a number: 19751129.0 written without its .0
        text = f"CAST(TRY_CAST({column} AS BIGINT) AS VARCHAR)"
    else:
        text = stripped_sql(f"CAST({column} AS VARCHAR)")
    first = f"NULLIF(regexp_extract({text}, {quote_literal(YEAR_FIRST)}, 1), '')"
    last = f"NULLIF(regexp_extract({text}, {quote_literal(YEAR_LAST)}, 1), '')"
    year = f"NULLIF(COALESCE({first}, {last}), {quote_literal(PLACEHOLDER_BIRTH_YEAR)})"
    return year if as_text else f"CAST({year} AS INTEGER)"


def birth_year_sources(
    table: str, columns: Iterable[str], withheld: Iterable[str], settings: PrivacySettings
) -> tuple[str, ...]:
    """The withheld columns whose year the table keeps as :data:`BIRTH_YEAR`, in the table's
    order: each of ``customers`` withheld because its name says it is a date of birth (the year
    is each row's first one that reads, :func:`birth_years_sql`: an export with an empty ``dob``
    beside a filled ``date_of_birth`` lost every year), none when the data set's ``pii_columns``
    names ``birth_year`` (withheld on purpose) or the table holds a year of birth already
    (``birth_year``, ``year_of_birth``, ``yob``); one named in ``pii_columns`` is withheld whole."""
    configured = {c.lower() for c in settings.pii_columns}
    if table != "customers" or BIRTH_YEAR in configured:
        return ()
    if any("".join(_words(c)) in _YEAR_OF_BIRTH for c in columns):
        return ()
    return tuple(c for c in withheld if c.lower() not in configured and is_birth_date_name(c))


def birth_years_sql(columns: Iterable[tuple[str, str]], timezone: str = "UTC", as_text: bool = False) -> str:
    """SQL: the year of birth of each row from the first of ``columns`` (quoted name, stored
    type) whose value gives one (:func:`birth_year_sql`), NULL when none does."""
    years = [birth_year_sql(column, source_type, timezone, as_text) for column, source_type in columns]
    return years[0] if len(years) == 1 else f"COALESCE({', '.join(years)})"


def is_pii_name(column: str) -> bool:
    """The built-in guard: whether a column's name says it holds personal data (see the module
    docstring). ``is_pii_name("email")`` and ``is_pii_name("full_name")`` are true,
    ``is_pii_name("brand_name")`` and ``is_pii_name("email_opt_in")`` false."""
    words = _words(column)
    if not words or words[0] in _FLAG_STARTS or words[-1] in _FLAG_ENDINGS:
        return False
    if any(part in str(column) for part in _CJK_PERSONAL):
        return True
    measured = list(words)  # less a window at the end: email_count_90d, email_opens_12m
    while len(measured) > 1 and (measured[-1] in _WINDOW_WORDS or measured[-1].isdigit()):
        measured.pop()
    if measured[-1] in _FLAG_ENDINGS:
        return False
    core = _core_words(words)
    if _is_birth_date(core):
        return True
    pairs = {a + b for a, b in zip(words, words[1:], strict=False)}
    personal = _ALWAYS & (set(words) | pairs)
    if (personal | (_AS_HEAD & set(words))) <= _CONTACT_CHANNELS and len(measured) > 1:
        if measured[-1] in _MEASURE_ENDINGS or words[0] in _COUNT_STARTS:
            return False  # engagement through a contact channel (see _MEASURE_ENDINGS)
    if personal:
        return True
    if core[-1] in _AS_HEAD and (len(core) == 1 or core[-2] in _WHOSE):
        return True
    # the same two words the other way round: name_first, name_last, mobile_home
    return len(core) == 2 and core[0] in _AS_HEAD and core[1] in _WHOSE


@dataclass(frozen=True)
class PrivacySettings:
    """A data set's ``[privacy]`` settings (all optional)."""

    pii_columns: tuple[str, ...] = ()  # withheld besides the built-in guard
    consent_column: str | None = None  # a customers column: false/0/no = opted out
    suppression_file: Path | None = None  # one customer id per line; absolute once read
    # customers columns that are not personal data but are shown to analysts only: a profile
    # built for the marketing role (include_sensitive=False) leaves them out
    sensitive_columns: tuple[str, ...] = ()
    # among sensitive_columns, those the settings add to what was written: birth_year for a date of birth
    implied_sensitive: tuple[str, ...] = field(default=(), compare=False)
    source: str = field(default="", compare=False)  # where they were read from, for messages

    @classmethod
    def from_config(cls, raw: object, config_path: Path, folder: Path) -> PrivacySettings:
        where = f"{config_path} [privacy]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table of settings: {', '.join(PRIVACY_KEYS)}")
        if unknown := set(raw) - set(PRIVACY_KEYS):
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {list(PRIVACY_KEYS)}")
        columns = raw.get("pii_columns", [])
        if not isinstance(columns, list) or not all(isinstance(c, str) and c.strip() for c in columns):
            raise ConfigError(f'{where}: pii_columns must be a list of column names, e.g. ["loyalty_card"]')
        consent = raw.get("consent_column")
        if consent is not None and (not isinstance(consent, str) or not consent.strip()):
            raise ConfigError(f'{where}: consent_column must be a column name, e.g. "marketing_consent"')
        if consent is not None and consent.lower() in {c.lower() for c in columns}:
            raise ConfigError(f"{where}: {consent!r} is both the consent column and a pii column; it cannot be both")
        suppression = raw.get("suppression_file")
        if suppression is not None and (not isinstance(suppression, str) or not suppression.strip()):
            raise ConfigError(f'{where}: suppression_file must be a file name, e.g. "suppressed.csv"')
        sensitive = raw.get("sensitive_columns", [])
        if not isinstance(sensitive, list) or not all(isinstance(c, str) and c.strip() for c in sensitive):
            raise ConfigError(f'{where}: sensitive_columns must be a list of column names, e.g. ["gender"]')
        sensitive = [c.strip() for c in sensitive]
        implied = ()
        if any(is_birth_date_name(c) for c in sensitive) and BIRTH_YEAR not in {c.lower() for c in sensitive}:
            # a date of birth is withheld whole and only its year read (BIRTH_YEAR): marking it
            # sensitive marks what is read of it (birth_year was shown to the marketing role)
            implied = (BIRTH_YEAR,)
        return cls(
            pii_columns=tuple(c.strip() for c in columns),
            sensitive_columns=(*sensitive, *implied),
            implied_sensitive=implied,
            consent_column=consent.strip() if consent else None,
            suppression_file=(folder / suppression) if suppression else None,
            source=str(config_path),
        )

    @property
    def has_consent_rules(self) -> bool:
        return self.consent_column is not None or self.suppression_file is not None

    def is_sensitive(self, column: str) -> bool:
        """Whether a customers column is one of ``sensitive_columns`` (any case)."""
        return str(column).lower() in {c.lower() for c in self.sensitive_columns}


def withheld_columns(
    table: str, columns: Iterable[str], keep: Iterable[str], settings: PrivacySettings
) -> tuple[str, ...]:
    """Which of ``columns`` (a guarded table's source columns) are withheld: the configured
    ones and those the guard recognises, but never those in ``keep`` (the contract's columns,
    under their source names) nor the consent column. Logs the names once per process."""
    columns = [str(c) for c in columns]
    kept = {k.lower() for k in keep}
    configured = {c.lower() for c in settings.pii_columns}
    for name in columns:
        if name.lower() in kept and name.lower() in configured:
            raise ConfigError(
                f"{settings.source} [privacy]: pii_columns names {name!r}, which {table} needs "
                "(a contract column); it cannot be withheld"
            )
    consent = (settings.consent_column or "").lower()
    withheld = tuple(
        name
        for name in columns
        if name.lower() not in kept
        and name.lower() != consent
        and (name.lower() in configured or (table in GUARDED_TABLES and is_pii_name(name)))
    )
    _report_once(table, withheld, settings, birth_year_sources(table, columns, withheld, settings))
    return withheld


# Values that are personal data whatever their column is called (see the module docstring).
# Regular expressions Python, DuckDB (RE2) and Spark (Java) read alike.
# White space spelled out: ``\s`` is not the same class in the three (RE2 leaves out \v, Java
# the no-break and other Unicode spaces, Python none of them). Escapes all three read alike,
# and the Unicode spaces as the characters themselves (RE2 has no \u, Python no \x{...}).
WHITE_SPACE = r" \t\n\r\f\x0B\x85\xA0" + "\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL_IN_TEXT = rf"[^@{WHITE_SPACE}]+@[^@{WHITE_SPACE}]+\.[A-Za-z]{{2,}}"  # anywhere in a value


def _any_case(word: str) -> str:
    """``png`` as ``[Pp][Nn][Gg]``: ``(?i)`` folds Unicode letters in Python and RE2 (the long s
    as s, the Kelvin sign as k) but not in Java."""
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


_FILE_TYPES = "|".join(_any_case(t) for t in ("png", "jpeg", "jpg", "gif", "svg", "webp", "pdf"))
FILE_AT = rf"@[^@{WHITE_SPACE}]*\.({_FILE_TYPES})($|[^A-Za-z])"  # img@2x.png is no address
# White space at either end, as stripped_sql takes it off (TRIM strips spaces only).
STRIPPED = rf"^[{WHITE_SPACE}]+|[{WHITE_SPACE}]+$"
# Digits only, white space around them aside: a number, judged as one (never a phone in text).
# Spelled out rather than TRIM, which strips spaces only (and Python's strip() every space).
DIGITS_ONLY = rf"^[{WHITE_SPACE}]*[0-9]+[{WHITE_SPACE}]*$"
# Anywhere: +44 7700 900123 (9 to 15 digits), or the same written with 00 (0049 30 1234567),
# not after a decimal point (0.0012345678). Up to two separators between digits: the trunk 0 in
# brackets (+44 (0)20 7946 0958, +49 (0)30 1234567), an area code in them (+7 (495) 123-45-67),
# a double space or "030/ 1234 5678" are as common as one (months written out, 01/2024, are taken
# out of a text first, below, so that "01/2024 -02/2024" is not one).
_DIGIT_SEPARATOR = r"[ ()./-]{0,2}"
INTERNATIONAL_PHONE = rf"\+[0-9]({_DIGIT_SEPARATOR}[0-9]){{8,14}}|(^|[^0-9.])00[1-9]({_DIGIT_SEPARATOR}[0-9]){{7,13}}"
# Anywhere in text: a national number, a trunk 0 then 8 to 11 more digits with separators
# ("call 07700 900123", "02 555 12 34", "06.12.34.56.78"), not within a longer number nor after
# a decimal point or a colon (a time's fraction). Dates written out (01.02.2023, 2023-01-05) and
# ZIP+4 codes (02134-1234) are taken out of the text before it is judged, and a value of digits
# only is judged as a number (below).
NATIONAL_PHONE = rf"(^|[^0-9+.:])0[1-9]({_DIGIT_SEPARATOR}[0-9]){{7,10}}($|[^0-9])"  # (030) 1234 5678 too
# ...and a North American number written 3-3-4 with dashes or dots: 415-555-0100, (415) 555-0100.
NANP_PHONE = r"(^|[^0-9])(\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[.-])[2-9][0-9]{2}[.-][0-9]{4}($|[^0-9])"
_NATIONAL_OR_NANP = f"{NATIONAL_PHONE}|{NANP_PHONE}"  # one pass over a text for both
# Dates written out and ZIP+4 codes: taken out of a text before it is judged for phone numbers.
NOT_PHONES_IN_TEXT = r"([0-9]{1,2}[./-][0-9]{1,2}[./-](19|20)[0-9]{2}|(19|20)[0-9]{2}[./-][0-9]{1,2}[./-][0-9]{1,2}|(^|[^0-9])[0-9]{5}-[0-9]{4}($|[^0-9])|(^|[^0-9])(0?[1-9]|1[0-2])[./-](19|20)[0-9]{2}($|[^0-9]))"
PHONE_SHAPED = r"^\+?[0-9(][0-9 ()./-]{5,18}[0-9]$"  # 7 to 20 characters of digits and separators


def refuse_values_as_names(names, source, table) -> None:
    """Refuse a source whose column names hold e-mail addresses or phone numbers: a file without
    a header line, its first row read as the names. No message may repeat them, nor the
    privacy checks name them as columns. ``source``: the table's source (described only when
    refused); ``table``: the contract table (its required columns)."""
    personal = [n for n in names if re.search(EMAIL_IN_TEXT, str(n)) or re.fullmatch(PHONE_SHAPED, str(n).strip())]
    if personal:
        raise ContractError(
            f"the first line of {source.describe()} holds {len(personal)} value(s) shaped like an e-mail address or a phone "
            "number where column names belong (not shown: they may be personal data): the file needs a header line "
            f"naming its columns ({', '.join(c.name for c in table.columns if c.required)}, ...)",
            table=table.name,
        )


NOT_PHONES = (
    r"^[0-9]+$",  # digits only: judged as numbers (below)
    # a range, an income band: 100000-149999, 25.000-50.000 (thousands grouped, as a German export
    # writes them: the band was withheld as phone numbers)
    r"^[0-9]+([.,][0-9]{3})* *- *[0-9]+([.,][0-9]{3})*$",
    r"^[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}$",  # dates: 2023-01-05, 2023/1/5
    r"^[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4}$",  # 05-01-2023, 5.1.23
    r"^[0-9]+[.,][0-9]{1,2}$",  # an amount: 1234567.50
)
# 9 to 16 digits: phone numbers, card or account numbers. Not 8: dates written as digits
# (31121985, 20231231) and amounts in cents are 8 digits as often as some countries' phones.
LONG_DIGITS = r"^[0-9]{9,16}$"
LONG_INTEGERS = (1e8, 1e16)
EPOCH_RANGES = ((1e9, 2e9), (1e12, 2e12))  # ...but not times in seconds or milliseconds since 1970
# From 15 digits on, a number read as a DOUBLE may not be whole (4111111111110000 as ...09999.5)
WHOLE_UP_TO = 1e15
TEXT_TYPES = ("VARCHAR", "STRING", "TEXT", "CHAR", "BPCHAR", "ENUM")
NUMBER_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
    "UHUGEINT", "DECIMAL", "DOUBLE", "FLOAT", "REAL",
)  # fmt: skip
_TEXT_CHECKS = 6  # present, e-mails, international phones, phone-shaped, long digit strings, distinct ones
_NUMBER_CHECKS = 3  # present, long integers, distinct ones


@dataclass(frozen=True)
class ValueChecks:
    """One SQL select list checking some columns' values, and how to read its one row."""

    select: str
    columns: tuple[tuple[str, str], ...]  # (name, "text" | "number") in the select's order

    def personal(self, row: tuple) -> dict[str, str]:
        """The checked columns whose values are personal data, each with what they look like."""
        found: dict[str, str] = {}
        at = 0
        for name, kind in self.columns:
            if kind == "text":
                present, emails, international, phones, long, distinct = row[at : at + _TEXT_CHECKS]
                at += _TEXT_CHECKS
            else:
                present, long, distinct = row[at : at + _NUMBER_CHECKS]
                emails = international = phones = 0
                at += _NUMBER_CHECKS
            if emails:
                found[name] = "e-mail addresses"
            elif international or (present and phones * 2 >= present):
                found[name] = "phone numbers"
            elif present and long * 2 >= present and distinct * 2 > long:
                found[name] = "long distinct numbers (phone numbers or identifiers)"
        return found


def stripped_sql(text: str) -> str:
    """SQL: the text ``text`` without white space of any kind at either end (:data:`WHITE_SPACE`;
    TRIM strips spaces only, and a value padded with a tab or a line break was then neither a
    phone number nor a number to the rules that judge it stripped)."""
    return f"regexp_replace({text}, {quote_literal(STRIPPED)}, '', 'g')"


def phone_in_text_sql(text: str) -> str:
    """SQL: the text ``text`` holds a phone number somewhere (international, or national once
    dates written out are taken out, and not digits only): as :func:`holds_phone_number` reads it."""
    undated = f"regexp_replace({text}, {quote_literal(NOT_PHONES_IN_TEXT)}, ' ', 'g')"
    national = f"(regexp_matches({undated}, {quote_literal(_NATIONAL_OR_NANP)}) AND NOT regexp_matches({text}, {quote_literal(DIGITS_ONLY)}))"
    return f"(regexp_matches({text}, {quote_literal(INTERNATIONAL_PHONE)}) OR {national})"


def holds_phone_number(text: str) -> bool:
    """Whether ``text`` holds a phone number somewhere, as :func:`phone_in_text_sql` judges it."""
    if re.search(INTERNATIONAL_PHONE, text):
        return True
    undated = re.sub(NOT_PHONES_IN_TEXT, " ", text)
    return bool(re.search(_NATIONAL_OR_NANP, undated) and not re.search(DIGITS_ONLY, text))


def is_nested_type(sql_type: str) -> bool:
    """Whether a column of this SQL type (DuckDB's or Spark's spelling) holds lists, structs,
    maps or unions: judged by the type's text without the labels an ENUM may hold ('<25')."""
    bare = re.sub(r"'(?:[^']|'')*'", "''", sql_type).strip().upper()
    base = re.split(r"[\s(<\[]", bare, maxsplit=1)[0]
    return base in ("STRUCT", "MAP", "UNION", "ARRAY", "LIST") or "[" in bare or "<" in bare


# What reports show instead of a value holding an e-mail address or a phone number (a product
# or store named after a person's contact).
PERSONAL_VALUE = "(withheld: personal data)"


def withheld_sql(column: str, values: Iterable[str] | None = None) -> str:
    """SQL: ``column``'s text, or :data:`PERSONAL_VALUE` where it holds an e-mail address or a
    phone number. With ``values`` (found once by :func:`personal_values`), only those are
    replaced: no pattern is matched row by row (the column itself when there are none)."""
    if values is None:
        return f"CASE WHEN {personal_text_sql(column)} THEN {quote_literal(PERSONAL_VALUE)} ELSE {column} END"
    listed = ", ".join(quote_literal(str(v)) for v in values)
    if not listed:
        return column
    return f"CASE WHEN {column} IN ({listed}) THEN {quote_literal(PERSONAL_VALUE)} ELSE {column} END"


def withheld_list_sql(items: str, values: Iterable[str]) -> str:
    """SQL: the sorted list of distinct texts ``items`` with ``values`` (from
    :func:`personal_values`) shown as :data:`PERSONAL_VALUE`, sorted and distinct again: the list
    ``list(DISTINCT withheld ORDER BY withheld)`` makes of the lines (``items`` itself when there
    are no such values)."""
    values = list(values)
    if not values:
        return items
    return f"list_sort(list_distinct(list_transform({items}, lambda x: {withheld_sql('x', values)})))"


def personal_values(con, values_sql: str) -> list[str]:
    """The distinct texts of the one-column query ``values_sql`` holding an e-mail address or a
    phone number, judged by :func:`personal_text_sql` (the rule every SQL reader applies, so a
    value withheld in one place is withheld in all) once each: on a table of the distinct
    values, since DuckDB pushes a pattern below a DISTINCT (even a materialised one) and matched
    it on every row (3 s for 10M rows of 300 values where the DISTINCT took 0.2 s, measured)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _personal_candidates AS "
        f"SELECT DISTINCT CAST(v AS VARCHAR) AS v FROM ({values_sql}) t(v) WHERE v IS NOT NULL"
    )
    try:
        found = con.execute(f"SELECT v FROM _personal_candidates WHERE {personal_text_sql('v')} ORDER BY v").fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS _personal_candidates")
    return [row[0] for row in found]


def withheld_label(number: int) -> str:
    """The ``number``-th value withheld where values are shown side by side (a crowd report):
    ``(withheld: personal data #1)``."""
    return f"{PERSONAL_VALUE[:-1]} #{number})"


def withheld_labels(values: list[str]) -> str:
    """SQL: ``value`` with each of ``values`` (sorted, from :func:`personal_values`) replaced by
    its own numbered :data:`PERSONAL_VALUE` label, so that two such values stay two (neither
    merged nor named)."""
    cases = " ".join(
        f"WHEN {quote_literal(v)} THEN {quote_literal(withheld_label(i))}" for i, v in enumerate(values, 1)
    )
    return f"CASE value {cases} ELSE value END"


def holds_personal_value(text: str) -> bool:
    """Whether free text holds an e-mail address or a phone number anywhere in it."""
    return bool(re.search(EMAIL_IN_TEXT, text) and not re.search(FILE_AT, text)) or holds_phone_number(text)


def without_personal_values(rows: list[dict]) -> list[dict]:
    """Rows an error shows as examples (a line that cannot be parsed), each value holding an
    e-mail address or a phone number (:func:`holds_personal_value`) replaced by
    :data:`PERSONAL_VALUE`: an error reaches the terminal, a refresh's log and its manifest."""
    return [
        {k: PERSONAL_VALUE if isinstance(v, str) and holds_personal_value(v) else v for k, v in row.items()}
        for row in rows
    ]


def email_in_text_sql(text: str) -> str:
    """SQL: the text ``text`` holds an e-mail address somewhere (not a file name: ``img@2x.png``)."""
    return f"(regexp_matches({text}, {quote_literal(EMAIL_IN_TEXT)}) AND NOT regexp_matches({text}, {quote_literal(FILE_AT)}))"


def personal_text_sql(text: str) -> str:
    """SQL: the text ``text`` holds an e-mail address or a phone number anywhere in it."""
    return f"({email_in_text_sql(text)} OR {phone_in_text_sql(text)})"


# A customer id of digits only that reads as a national phone number: a trunk 0, 10 to 12 digits.
PHONE_DIGITS = "^0[1-9][0-9]{8,10}$"


def personal_id_sql(customer_id: str) -> str:
    """SQL: the customer id looks like an e-mail address or a phone number (also one written as
    digits only, which a text's rules judge as a number)."""
    return f"({personal_text_sql(customer_id)} OR regexp_matches({stripped_sql(customer_id)}, {quote_literal(PHONE_DIGITS)}))"


def with_pii_columns(privacy: PrivacySettings, columns: Iterable[str]) -> PrivacySettings:
    """``privacy`` with ``columns`` among its ``pii_columns`` (those not named there already)."""
    named = {c.lower() for c in privacy.pii_columns}
    extra = tuple(c for c in columns if c.lower() not in named)
    return dataclasses.replace(privacy, pii_columns=(*privacy.pii_columns, *extra)) if extra else privacy


def _long_number(number: str) -> str:
    """SQL: the DOUBLE ``number`` is a whole number of 9 to 16 digits, not a time since 1970.
    (``% 1`` rather than FLOOR: Spark's FLOOR makes a BIGINT, which overflows under ANSI.)"""
    low, high = LONG_INTEGERS
    epochs = " ".join(f"AND NOT ABS({number}) BETWEEN {a:.0f} AND {b:.0f}" for a, b in EPOCH_RANGES)
    whole = f"({number} % 1 = 0 OR ABS({number}) >= {WHOLE_UP_TO:.0f})"
    return f"ABS({number}) >= {low:.0f} AND ABS({number}) < {high:.0f} AND {whole} {epochs}"


def value_checked(
    columns: Iterable[tuple[str, str]], keep: Iterable[str], settings: PrivacySettings
) -> list[tuple[str, str]]:
    """The (name, type) ``columns`` of a guarded table whose values are checked: not the
    contract's columns (``keep``, source names, and any already withheld) nor the consent column."""
    never = {str(c).lower() for c in keep} | {(settings.consent_column or "").lower()}
    return [(name, sql_type) for name, sql_type in columns if name.lower() not in never]


def personal_value_checks(columns: Iterable[tuple[str, str]]) -> ValueChecks | None:
    """Checks of ``columns`` ((name, SQL type) pairs: text and number columns are checked;
    lists, structs and other types are not) for values that are personal data, as one select
    list over the table (no FROM: the caller reads it from the table on its engine; the SQL is
    DuckDB's, which the Spark engine transpiles). None when no column can be checked."""
    parts: list[str] = []
    checked: list[tuple[str, str]] = []
    for name, sql_type in columns:
        q = quote_ident(name)
        upper = sql_type.upper().strip()
        if is_nested_type(upper):
            continue  # a nested value: no column of the contract, and no shape to judge
        base = re.split(r"[\s(]", upper, maxsplit=1)[0]
        if base in TEXT_TYPES:
            raw = q if base != "ENUM" else f"CAST({q} AS VARCHAR)"
            value = stripped_sql(raw)
            present = f"NULLIF({value}, '') IS NOT NULL AND NOT {placeholder_expr(raw)}"
            phone = f"regexp_matches({value}, {quote_literal(PHONE_SHAPED)})" + "".join(
                f" AND NOT regexp_matches({value}, {quote_literal(p)})" for p in NOT_PHONES
            )
            digits = f"regexp_matches({value}, {quote_literal(LONG_DIGITS)}) AND {_long_number(f'TRY_CAST({value} AS DOUBLE)')}"
            email = email_in_text_sql(raw)
            parts += [
                f"COUNT(CASE WHEN {present} THEN 1 END)",
                f"COUNT(CASE WHEN {email} THEN 1 END)",
                f"COUNT(CASE WHEN {phone_in_text_sql(raw)} THEN 1 END)",
                f"COUNT(CASE WHEN {present} AND {phone} THEN 1 END)",
                f"COUNT(CASE WHEN {digits} THEN 1 END)",
                f"COUNT(DISTINCT CASE WHEN {digits} THEN {value} END)",
            ]
            checked.append((name, "text"))
        elif base in NUMBER_TYPES:
            number = f"CAST({q} AS DOUBLE)"
            parts += [
                f"COUNT({number})",
                f"COUNT(CASE WHEN {_long_number(number)} THEN 1 END)",
                f"COUNT(DISTINCT CASE WHEN {_long_number(number)} THEN {number} END)",
            ]
            checked.append((name, "number"))
    if not checked:
        return None
    return ValueChecks(", ".join(parts), tuple(checked))


def report_personal_values(table: str, found: dict[str, str], source: str) -> None:
    """Log the columns withheld by their values (names and what they looked like, never a
    value), once per process for each ``source`` (the table's files)."""
    for name, what in found.items():
        key = (table, name, source)
        if key not in _reported:
            _reported.add(key)
            log.warning(
                "%s.%s: values look like %s; withheld as personal data (name it in [privacy] pii_columns to say so)",
                table,
                name,
                what,
            )


def _report_once(table: str, withheld: tuple[str, ...], settings: PrivacySettings, born: tuple[str, ...]) -> None:
    key = (table, withheld, settings.source, born)
    if not withheld or key in _reported:
        return
    _reported.add(key)
    configured = {c.lower() for c in settings.pii_columns}
    named = [c for c in withheld if c.lower() in configured]
    guessed = [
        f"{c} (only its year is read, as {BIRTH_YEAR})" if c in born else c
        for c in withheld
        if c.lower() not in configured
    ]
    parts = []
    if guessed:
        parts.append(f"{', '.join(guessed)} (named like personal data)")
    if named:
        parts.append(f"{', '.join(named)} (pii_columns in {settings.source})")
    log.warning("%s: personal-data columns withheld, never read: %s", table, "; ".join(parts))


def with_withheld_columns(privacy: PrivacySettings, dataset: Dataset) -> PrivacySettings:
    """``privacy`` with the customers columns ``dataset`` withholds now, by their name or their
    values, among its ``pii_columns``: outputs stored before a column was recognised (a run of
    an older version) are then read without it, as those stored before it was named are."""
    source = dataset.sources.get("customers")
    return with_pii_columns(privacy, source.withheld if source is not None else ())


def pii_columns(dataset: Dataset) -> frozenset[str]:
    """The columns of ``dataset`` withheld as personal data (source names, from the
    ``customers`` and ``identities`` tables): configured in ``[privacy] pii_columns`` or
    recognised by the built-in guard. Reads the tables' column names, not their rows."""
    found: set[str] = set()
    for table in GUARDED_TABLES:
        source = dataset.sources.get(table)
        if source is not None:
            found.update(source.withheld)
    return frozenset(found)


def safe_attribute_columns(columns: Iterable[str], dataset: Dataset | None = None) -> list[str]:
    """``columns`` of the customers table (in their order) that may be shown as attributes:
    without ``customer_id``, columns the built-in guard recognises, and, given the
    ``dataset``, its configured ``pii_columns`` and withheld columns. (The data set's views
    already lack withheld columns; this also guards column lists from anywhere else.)"""
    blocked: set[str] = set()
    consent = ""
    if dataset is not None:
        blocked = {c.lower() for c in dataset.privacy.pii_columns} | {c.lower() for c in pii_columns(dataset)}
        consent = (dataset.privacy.consent_column or "").lower()
    return [
        c
        for c in columns
        if str(c) != "customer_id"
        and str(c).lower() not in blocked
        and (str(c).lower() == consent or not is_pii_name(str(c)))
    ]


# ---------------------------------------------------------------- consent


@dataclass(frozen=True)
class Consent:
    """Who may be contacted, by person id (customer ids after identity merging)."""

    consented: np.ndarray | None = None  # persons whose consent is given; None: no consent column
    suppressed: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    column: str | None = None
    suppression_file: Path | None = None

    def apply(self, frame: pd.DataFrame, id_column: str = "customer_id") -> tuple[pd.DataFrame, dict[str, int]]:
        """``frame`` less the rows of people who may not be contacted, and how many rows were
        left out per reason (``suppressed`` first, then ``no_consent``; each row counted once).
        The counts have a key per configured rule, so an empty dict means no rule is set."""
        counts: dict[str, int] = {}
        ids = frame[id_column].astype("str")
        out = pd.Series(False, index=frame.index)
        if self.suppression_file is not None:
            hit = ids.isin(self.suppressed)
            counts[SUPPRESSED] = int(hit.sum())
            out |= hit
        if self.consented is not None:
            hit = ~out & ~ids.isin(self.consented)
            counts[NO_CONSENT] = int(hit.sum())
            out |= hit
        if not out.any():
            return frame, counts
        return frame[~out.to_numpy()], counts


def load_consent(dataset: Dataset, con: duckdb.DuckDBPyConnection | None = None) -> Consent:
    """The data set's consent rules, read now (see the module docstring). ``con`` is a
    connection of ``dataset`` to reuse (its identity map), else one is opened and closed."""
    settings = dataset.privacy
    if not settings.has_consent_rules:
        return Consent()
    own = con is None
    con = con or dataset.connect()
    try:
        merged = has_identity_map(con)
        consented = (
            _consented_persons(con, dataset, settings.consent_column, merged) if settings.consent_column else None
        )
        suppressed = (
            _suppressed_persons(con, settings.suppression_file, merged)
            if settings.suppression_file is not None
            else np.array([], dtype=object)
        )
    finally:
        if own:
            con.close()
    return Consent(consented, suppressed, settings.consent_column, settings.suppression_file)


def consent_version(dataset: Dataset) -> str:
    """Changes whenever the consent rules could: the data set's files, its ``[privacy]``
    settings or the suppression file. A server reloads the rules when it changes."""
    settings = dataset.privacy
    parts = [dataset.fingerprint(), repr((settings.pii_columns, settings.consent_column, settings.suppression_file))]
    if settings.suppression_file is not None:
        parts.append(file_stamp(settings.suppression_file))
    return "|".join(parts)


def apply_consent(
    frame: pd.DataFrame, dataset: Dataset, con: duckdb.DuckDBPyConnection | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` (a ``customer_id`` column of person ids, as in features, scores and segment
    members) less the people ``dataset``'s consent rules leave out, and how many were left out
    per reason: ``{"no_consent": n, "suppressed": m}``, a key per configured rule (``{}`` when
    the data set has none). Raises :class:`ConfigError` / :class:`ContractError` when a
    configured rule cannot be read (a missing column or file, a value that is not yes or no):
    a list is never written without its consent check."""
    return load_consent(dataset, con).apply(frame)


def consent_note(left_out: dict[str, int], ranked_from: int | None = None) -> str | None:
    """One line for the person running an export: how many were left out and why; None when
    the data set has no consent rules or they left nobody out. ``ranked_from``: a ranked list's
    customers matching its filters, of whom these were left out before the ranking (a top 10
    said "left out 208 customers", read as 208 of its 10)."""
    total = sum(left_out.values())
    if not total:
        return None
    reasons = []
    if NO_CONSENT in left_out:
        reasons.append(f"{left_out[NO_CONSENT]:,} without marketing consent (opted out or none recorded)")
    if SUPPRESSED in left_out:
        reasons.append(f"{left_out[SUPPRESSED]:,} on the suppression list")
    whom = f"customer{'s' if total != 1 else ''}"
    if ranked_from is not None:
        whom = f"of the {ranked_from:,} customer{'s' if ranked_from != 1 else ''} the filters matched, before ranking"
    return f"left out {total:,} {whom}: {', '.join(reasons)}"


NO_CONSENT_RULES = (
    "no consent rule applies: the data set's portrait.toml sets no [privacy] consent_column or "
    "suppression_file, so nobody was left out for consent"
)


def export_note(left_out: dict[str, int], ranked_from: int | None = None) -> str:
    """:func:`consent_note` for a contact export (a list, a segment's customers), which also
    says when no consent rule is set: a marketer uploading the file must know it was not
    filtered."""
    return consent_note(left_out, ranked_from) or (
        NO_CONSENT_RULES if not left_out else "nobody was left out for consent"
    )


def has_identity_map(con) -> bool:
    """Whether ``con`` has the view ``identity_map`` (:func:`portrait.identity.register_identity_map`
    ran on it: the data set has identities)."""
    found = con.execute("SELECT COUNT(*) FROM duckdb_views() WHERE view_name = 'identity_map' AND temporary").fetchall()
    return bool(found[0][0])


def _shown_value(value: str) -> str:
    """A bad consent value as an error may show it (to an API caller too): a short word as it
    is ("maybe"), anything that could be personal data (a column of e-mails named as the
    consent column by mistake) only by its length."""
    text = str(value)
    if len(text) <= 12 and not any(ch in text for ch in "@ +") and sum(ch.isdigit() for ch in text) < 5:
        return text
    return f"(a value of {len(text)} characters, not shown)"


def _persons(merged: bool, relation: str) -> str:
    """SQL: ``relation``'s rows with ``person`` (the merged person's id) added."""
    if not merged:
        return f"SELECT *, customer_id AS person FROM {relation}"
    return (
        f"SELECT r.*, COALESCE(m.person_id, r.customer_id) AS person FROM {relation} r "
        "LEFT JOIN identity_map m ON m.customer_id = r.customer_id"
    )


def _consented_persons(con, dataset: Dataset, column: str, merged: bool) -> np.ndarray:
    where = f"{dataset.privacy.source} [privacy] consent_column"
    if not dataset.has("customers"):
        raise ConfigError(f"{where} is {column!r}, but the data set has no customers table to read it from")
    available = {r[0].lower(): r[0] for r in con.execute("DESCRIBE SELECT * FROM typed_customers").fetchall()}
    if column.lower() not in available:
        shown = sorted(c for c in available.values() if c != "customer_id")
        raise ContractError(
            f"the consent column {column!r} named in {where} is not in the table; its columns are {shown}",
            table="customers",
        )
    value = f"lower(trim(CAST({quote_ident(available[column.lower()])} AS VARCHAR)))"
    given, refused = _sql_list(CONSENT_GIVEN), _sql_list(CONSENT_REFUSED)
    status = (
        f"CASE WHEN {value} IN {given} THEN 1 WHEN {value} IN {refused} THEN 0 "
        f"WHEN {value} IS NULL OR {value} = '' THEN NULL ELSE -1 END"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _consent_rows AS SELECT CAST(customer_id AS VARCHAR) AS customer_id, "
        f"{status} AS status, CAST({quote_ident(available[column.lower()])} AS VARCHAR) AS value FROM typed_customers"
    )
    try:
        bad = con.execute("SELECT customer_id, value FROM _consent_rows WHERE status = -1 LIMIT 3").fetchall()
        if bad:
            n = con.execute("SELECT COUNT(*) FROM _consent_rows WHERE status = -1").fetchall()[0][0]
            raise ContractError(
                f"the consent column has {n:,} value{'s' if n != 1 else ''} that {'are' if n != 1 else 'is'} "
                f"neither a yes ({', '.join(CONSENT_GIVEN[:5])}) nor a no ({', '.join(CONSENT_REFUSED[:5])}); "
                "no list can tell whether those customers may be contacted",
                table="customers",
                column=available[column.lower()],
                examples=[{"customer_id": c, column: _shown_value(v)} for c, v in bad],
            )
        # A person is consented when some row of theirs says yes and none says no.
        rows = con.execute(
            f"""SELECT person FROM ({_persons(merged, "_consent_rows")}) p
            GROUP BY person HAVING bool_or(status = 1) AND NOT bool_or(status = 0)"""
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS _consent_rows")
    return np.array([r[0] for r in rows], dtype=object)


def _suppressed_persons(con, path: Path, merged: bool) -> np.ndarray:
    ids = read_suppression_file(path)
    frame = pd.DataFrame({"customer_id": pd.Series(ids, dtype="str")})
    con.register("_suppressed_frame", frame)
    try:
        rows = con.execute(f"SELECT DISTINCT person FROM ({_persons(merged, '_suppressed_frame')}) p").fetchall()
    finally:
        con.unregister("_suppressed_frame")
    return np.array([r[0] for r in rows], dtype=object)


class SuppressionFileError(ConfigError, Unavailable):
    """The suppression file named in ``[privacy]`` cannot be read: nobody may be contacted
    until it can (through the API a 503, the operator's to fix)."""


def read_suppression_file(path: Path) -> list[str]:
    """The customer ids of a suppression file: one per line, blank lines and a first line
    ``customer_id`` (a header) skipped, surrounding quotes and spaces removed. UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SuppressionFileError(
            f"the suppression file {path} does not exist; no list is written without it "
            "(create it, even empty, or remove suppression_file from [privacy])"
        ) from None
    except OSError as exc:
        raise SuppressionFileError(f"cannot read the suppression file {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuppressionFileError(
            f"the suppression file {path} is not UTF-8 (line {line:,}); save it as UTF-8"
        ) from None
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.strip().strip('"').strip()
        if not value or (number == 1 and value.lower() == "customer_id"):
            continue
        if "," in value or "\t" in value or ";" in value:
            raise ConfigError(
                f"the suppression file {path} line {number:,} holds more than an id (a comma, tab or "
                "semicolon); give one customer id per line"
            )
        ids.append(value)
    return ids


def _sql_list(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def sensitive_terms(text: str | None, sensitive: list[str]) -> list[str]:
    """The names of ``sensitive`` that ``text`` (a filter, a tag's or a segment's definition, a
    report cell) names as a whole word: words of any script ("género" is a column name a report
    cell may use as written), compared in any case and Unicode form (a word of ASCII letters only
    let a drill-down by "género = f" through)."""
    if not text or not sensitive:
        return []

    def folded(word: str) -> str:
        return unicodedata.normalize("NFC", word).casefold()

    words = {folded(w) for w in re.findall(r"[^\W\d]\w*", unicodedata.normalize("NFC", text))}
    # ...or the whole text, a report cell's dimension named as the column is ("Marital Status")
    words.add(folded(text.strip()))
    # once each: a column and the dimension named as it are one name ("gender, gender" was said)
    return list(dict.fromkeys(name for name in sensitive if folded(name) in words))


def refuse_personal_text(
    text: str, option: str, limit: int, kept: str, instead: str = "a reference such as a ticket number"
) -> None:
    """Refuse free text kept beside customers (a forget reason, a manual tag's note, a
    segment's description) that is longer than ``limit`` or holds an e-mail address or a phone
    number: such fields are for ``instead`` (a ticket number, a campaign), never for a person's
    details. ``kept`` says where the text would stay."""
    if len(text) > limit:
        raise PortraitError(f"{option} is {len(text)} characters; at most {limit}: {instead}")
    if holds_personal_value(text):
        raise PortraitError(
            f"{option} holds an e-mail address or a phone number; it is {kept}, so give {instead} instead "
            "(nothing was changed)"
        )
