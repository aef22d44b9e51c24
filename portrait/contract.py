"""The input contract: the one place that says which tables and columns a data set has.

Everything else (validation, the README's table, the adapters, the feature builders) reads
these definitions; nothing restates them.

Column kinds and how a raw value is parsed:

- ``id``: text; a value that is null or blank after trimming is *missing*.
- ``timestamp``: a timestamp or a date (``YYYY-MM-DD[ HH:MM:SS]``); a non-null value that does
  not parse is *unparseable*.
- ``number``: a decimal number; a non-null value that does not parse is *not a number*.
- ``text``: free text, kept as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from portrait.sql import quote_literal

ColumnKind = Literal["id", "timestamp", "number", "text"]

SQL_TYPE: dict[ColumnKind, str] = {
    "id": "VARCHAR",
    "timestamp": "TIMESTAMP",
    "number": "DOUBLE",
    "text": "VARCHAR",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    required: bool
    description: str
    non_negative: bool = False
    # An identifier of a person (an e-mail address, a phone number, or their hash): personal
    # data, kept out of quarantine files, and a placeholder value ("null", "N/A") is no value.
    identifier: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    required: bool
    description: str
    columns: tuple[Column, ...]
    # Columns whose combination makes a row unique; extra copies are quarantined as duplicates.
    # None: every contract column together (a row repeated exactly).
    duplicate_key: tuple[str, ...] | None = None
    check_duplicates: bool = True
    # (count, money) column pairs where a negative count with positive money contradicts the
    # contract: -1 unit for +5.00 is a return whose money would count as a sale (amount is
    # negative for a refund). +1 unit for -5.00 is a refund of one unit, a common convention.
    returns_with_money_paid: tuple[tuple[str, str], ...] = ()
    keeps_extra_columns: bool = False
    extra_columns_note: str = ""

    @property
    def required_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no contract column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


PURCHASES = Table(
    name="purchases",
    required=True,
    description="One row per order line.",
    columns=(
        Column("order_id", "id", True, "Order (basket, invoice) the line belongs to."),
        Column("customer_id", "id", True, "Who bought."),
        Column("ts", "timestamp", True, "When the order was placed."),
        Column("amount", "number", True, "Net money paid for the line; negative for a refund."),
        Column(
            "quantity",
            "number",
            False,
            "Units on the line; a line without one counts as one unit (given back on a refund line).",
        ),
        Column("product_id", "id", False, "Product bought."),
        Column("category", "text", False, "Product category."),
        Column("brand", "text", False, "Product brand."),
        Column("channel", "text", False, "Where it was bought: store, web, app, ..."),
        Column("payment_method", "text", False, "How it was paid."),
        Column("discount", "number", False, "Money off the line, >= 0.", non_negative=True),
        Column("store_id", "id", False, "Store or site."),
        Column(
            "line_id",
            "id",
            False,
            "The export's own line (item) id: lines alike in every other column but with different "
            "line ids are separate lines, not copies.",
        ),
    ),
    returns_with_money_paid=(("quantity", "amount"),),
)

# Event types with features of their own; any other type still counts in the event totals.
KNOWN_EVENT_TYPES: tuple[str, ...] = (
    "view",
    "search",
    "add_to_cart",
    "favorite",
    "campaign_received",
    "campaign_click",
    "coupon_redeemed",
    "service_contact",
    "review",
)

EVENTS = Table(
    name="events",
    required=False,
    description="Non-consumption behaviour, one row per event.",
    columns=(
        Column("customer_id", "id", True, "Whose event."),
        Column("ts", "timestamp", True, "When it happened."),
        Column(
            "event_type",
            "text",
            True,
            "view, search, add_to_cart, favorite, campaign_received, campaign_click, "
            "coupon_redeemed, service_contact, review, ... (free text).",
        ),
        Column("channel", "text", False, "Where it happened."),
        Column("category", "text", False, "Product category concerned."),
        Column("value", "number", False, "Any amount attached (coupon value, rating, ...)."),
    ),
    # Two identical views in the same second are plausible; events are never deduplicated.
    check_duplicates=False,
)

CUSTOMERS = Table(
    name="customers",
    required=False,
    description="One row per customer; every extra column is kept as an attribute.",
    columns=(Column("customer_id", "id", True, "The customer."),),
    duplicate_key=("customer_id",),
    keeps_extra_columns=True,
    extra_columns_note="any attribute (signup_date, gender, age_band, region, ...)",
)

IDENTITIES = Table(
    name="identities",
    required=False,
    description=("Identifiers per customer id; ids sharing any (id_type, id_value) are one person."),
    columns=(
        Column("customer_id", "id", True, "A customer id as it appears in the other tables."),
        Column("id_type", "text", True, "phone_hash, email_hash, account, device, ..."),
        Column("id_value", "id", True, "The identifier (ideally a salted hash).", identifier=True),
    ),
)

# Identifier values that stand for "none" in exports: shared by every customer without one,
# they would merge all of them into one person. Compared lower-cased and trimmed; a value of
# only zeros and punctuation ("0", "000-000", "+0") is one too. Such rows are quarantined
# (placeholder_id_value), as a blank value is (missing_id_value).
PLACEHOLDER_ID_VALUES = (
    "null", "none", "nil", "nan", "n/a", "na", "n.a.", "unknown", "undefined", "missing", "not available",
    "-", "--", "?", "\\n", "#n/a", "(null)",
    "",  # spaces alone: a padded CHAR column's guest orders (a Parquet id is not trimmed) were one customer
)  # fmt: skip
PLACEHOLDER_ID_PATTERN = r"^[0 .+()/-]+$"


def placeholder_expr(value: str) -> str:
    """SQL true when the text ``value`` (an SQL expression) is a placeholder for no identifier
    (:data:`PLACEHOLDER_ID_VALUES`, :data:`PLACEHOLDER_ID_PATTERN`)."""
    listed = ", ".join(quote_literal(v) for v in PLACEHOLDER_ID_VALUES)
    text = f"LOWER(TRIM(CAST({value} AS VARCHAR)))"
    return f"({text} IN ({listed}) OR regexp_matches({text}, {quote_literal(PLACEHOLDER_ID_PATTERN)}))"


# Words an export writes for "no value" in a text column (a customers attribute such as age or
# gender): read as missing, not as a value ("NULL" made an age column text, with a category
# NULL, and a gender column three-valued). Narrower than the identifiers' list: "NA" can be a
# region and "unknown" an answer someone gave.
MISSING_VALUE_WORDS = ("null", "nan", "n/a", "#n/a", "\\n", "(null)", "none", "nil", "undefined")
# ...of which those no text value is (a brand is "Nil", "NAN", a category "None"): in a CSV's
# text columns and optional ids, only these are missing values (portrait.views.missing_words).
NULL_MARKERS = ("null", "\\n", "(null)", "#n/a", "n/a")
# ...and in a column of numbers or dates, where no such text can be a value: R's NA, a dash.
MISSING_NUMBER_WORDS = (*MISSING_VALUE_WORDS, "na", "n.a.", "-", "--", "?", "missing", "unknown")


def is_missing_word(value: object, words: tuple[str, ...] = MISSING_VALUE_WORDS) -> bool:
    """Python's side of :func:`placeholder_word_expr`: ``value`` is text that is one of ``words``
    (any case, spaces around it)."""
    return isinstance(value, str) and value.strip(" ").lower() in words


def placeholder_word_expr(
    value: str, words: tuple[str, ...] = PLACEHOLDER_ID_VALUES, longest: int | None = None
) -> str:
    """SQL true when the text ``value`` is one of ``words`` (any case, spaces around it): by
    default an export's word for "no customer" (a guest order) or "no order". Such a customer
    id or order id is quarantined (``placeholder_customer_id``), as a blank one is,
    rather than read as one customer who made every guest order (8% of an export's orders made
    "NULL" its best customer, first on a list). Zeros are not included here, unlike for the
    identities' values: "0" can be a real customer's id. The length (stored with the text) and
    the first character (a whole number) are compared first, cheap on 100M events: only the few
    values short enough and starting like a placeholder are lower-cased and trimmed. (Without
    the length, a brand "National" passed as starting like "null": validating the Complete
    Journey as CSV took 10 s against 6 without the words; with it 7 s, 8 s testing it second.)"""
    text = f"CAST({value} AS VARCHAR)"
    starts = sorted({ord(c) for word in words if word for c in (word[0], word[0].upper())} | {32})  # TRIM strips spaces
    listed = ", ".join(quote_literal(v) for v in words)
    longest = longest or max(map(len, words)) + PLACEHOLDER_PADDING
    return (
        f"(strlen({text}) <= {longest} AND ascii({text}) IN ({', '.join(map(str, starts))}) "
        f"AND LOWER(TRIM({text})) IN ({listed}))"
    )


# Spaces around a placeholder word still recognised as one (" NULL "); a longer value is none.
PLACEHOLDER_PADDING = 8
# An id of spaces alone is a placeholder up to this length: a padded CHAR column's blank (CHAR(36)
# for a UUID, up to CHAR(255)); the length is compared first, and only values that also start with a
# space or a placeholder's first letter are trimmed.
PLACEHOLDER_ID_LENGTH = 255


# How a purchase line is read, in SQL both engines run: one rule for the checks, the features,
# the labels, the tags, the funnel and the crowd reports.


def purchase_order(amount: str = "amount", quantity: str = "quantity") -> str:
    """SQL over one order's lines (an aggregate): true when the order is a purchase, that is when
    it has a line of a purchase (:func:`purchase_line`). An order splits into its purchase (its
    sold lines and $0.00 lines: an order of $0.00 lines is one, as the BTYD literature counts a
    transaction, CDNOW's $0.00 orders among them) and its refunds (its refund lines, a new refund
    where one comes more than a day after the previous, each dated by its own time), as the
    features' orders relation splits it (features.plan). So a return booked
    under its order's own id and one booked under a new id give the same purchases, refunds and
    money in every window, and a refund larger than its order (shipping refunded too) leaves the
    purchase a purchase. ``amount`` may be NULL on lines outside a window (a ``CASE`` without
    ``ELSE``): those lines count as neither."""
    return f"(COUNT(CASE WHEN {purchase_line(amount, quantity)} THEN 1 END) > 0)"


def purchase_line(amount: str = "amount", quantity: str = "quantity") -> str:
    """SQL true for a line of an order's purchase: a sold line (amount > 0), or a $0.00 line
    that gives no unit back (a free item; a $0.00 line with a negative quantity is a free item
    returned, part of a refund). Every other line is a refund line."""
    return f"({amount} > 0 OR ({amount} = 0 AND COALESCE({quantity}, 0) >= 0))"


def timed(ts: str = "ts") -> str:
    """SQL true for a time with a time of day: not midnight. A log where no line has one holds
    dates alone (CDNOW), whose hour says nothing: not "everyone shops at night"."""
    return f"({ts} <> CAST(CAST({ts} AS DATE) AS TIMESTAMP))"


def any_timed(relation: str) -> str:
    """SQL of one boolean: whether any line of ``relation`` (with a ``ts``) has a time of day;
    the scan stops at the first one, among the first lines of a log with times."""
    return f"SELECT COUNT(*) > 0 FROM (SELECT 1 AS one FROM {relation} WHERE {timed()} LIMIT 1) t"


def line_units(quantity: str = "quantity", amount: str = "amount") -> str:
    """SQL of a line's units: its quantity, or one unit where it has none (the contract's rule),
    and on a refund line units given back, whatever the quantity's sign (the contract reads
    +1 unit at -5.00 as a refund of one unit)."""
    return f"(CASE WHEN {amount} < 0 THEN -ABS(COALESCE({quantity}, 1)) ELSE COALESCE({quantity}, 1) END)"


TABLES: tuple[Table, ...] = (PURCHASES, EVENTS, CUSTOMERS, IDENTITIES)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
# The files a table may be, NAME + one of these (or a folder NAME/ of such part files).
TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")

# A column is a hard error (wrong type altogether), not a few bad rows, when more than this
# share of its non-null values fails to parse.
MAX_UNPARSEABLE_SHARE = 0.5

# A CSV file read as UTF-8 because the data set names no encoding may have this many lines,
# and at most this share of the table's lines, that are not UTF-8 (stray bad bytes, quarantined
# as invalid_encoding); more means the file is in another encoding, which must be named in
# portrait.toml: a table-level error.
MAX_UNDECLARED_ENCODING_ERRORS = 10
MAX_UNDECLARED_ENCODING_SHARE = 0.01


def table(name: str) -> Table:
    try:
        return TABLES_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; the contract has {sorted(TABLES_BY_NAME)}") from None


def markdown_table() -> str:
    """The contract as the Markdown table shown in the README (tested to agree)."""
    lines = [
        "| table | column | kind | required | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in TABLES:
        table_label = f"`{t.name}`" + (" (required)" if t.required else " (optional)")
        for c in t.columns:
            lines.append(
                f"| {table_label} | `{c.name}` | {c.kind} | {'yes' if c.required else 'no'} | {c.description} |"
            )
        if t.keeps_extra_columns:
            lines.append(f"| {table_label} | *other columns* | text | no | {t.extra_columns_note} |")
    return "\n".join(lines)


# An import's record of its source (``portrait import``), beside the tables it wrote. Written
# first with ``"complete": false``, and again when every table is written: a folder whose
# import stopped halfway (some tables new, some old or missing) is refused as a data set.
PROVENANCE_FILE = "SOURCE.json"
