"""Check a data set against the contract, count and quarantine bad rows, report.

Everything runs in DuckDB over the files, so a table of 100 million rows is streamed in
bounded memory (DuckDB spills to disk past its memory limit) instead of loaded into pandas.

CSV lines DuckDB cannot read (a wrong number of fields, bytes not in the file's encoding) are
skipped by the reader and kept in its rejects tables with their file and line number; they are
counted here as ``malformed_row`` / ``invalid_encoding`` and written to the quarantine with the
line's text, like any other bad row.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from portrait import contract
from portrait.csv_dialect import swallows_lines
from portrait.dataset import CONFIG_FILE, Dataset, TableSource, cache_folder, encoding_hint, open_dataset
from portrait.errors import ContractError, read_error_reason
from portrait.files import atomic_target, atomic_write_text
from portrait.forget import forgotten_rows
from portrait.identity import IdentitySummary, identity_summary
from portrait.privacy import (
    BIRTH_YEAR,
    GUARDED_TABLES,
    holds_personal_value,
    personal_id_sql,
    personal_text_sql,
    without_personal_values,
)
from portrait.sql import quote_ident, quote_literal
from portrait.views import (
    PARSED,
    REASON,
    REMAP,
    REPEATED_HEADER,
    header_columns,
    mapped_column,
    parse_expr,
    present_expr,
    some_files,
    source_columns,
    zone_expr,
)

MALFORMED = "malformed_row"
WITHHELD_LINE = "(text withheld: the line may hold personal data)"
INVALID_ENCODING = "invalid_encoding"


@dataclass
class TableReport:
    table: str
    source: str
    rows: int
    valid_rows: int
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None
    encoding: str | None = None  # CSV: the encoding each file was read in, and why
    # Timestamp values that carried an offset or zone, per column; converted to the data set's zone.
    timestamps_with_offset: dict[str, int] = field(default_factory=dict)
    # The first malformed CSV lines: file, line number, reason, text.
    malformed_lines: list[dict] = field(default_factory=list)
    # Rows of forgotten customers (portrait forget), left out of everything; counted in rows.
    forgotten: int = 0
    # purchases: the source column read as line_id (None: the export has none)
    line_id_column: str | None = None
    # Customer ids with spaces around them in a file that is not a CSV (a CSV's cells are
    # trimmed; a Parquet file's values are taken as written): 'C1 ' and 'C1' are two customers.
    padded_customer_ids: int = 0
    # Customer ids equal to another but for leading zeros or a trailing '.0' ('00123', '123.0' and
    # '123'): two customers each.
    zero_padded_customer_ids: int = 0
    # Customer ids written in scientific notation by a spreadsheet (1.23457E+11): digits lost.
    scientific_customer_ids: int = 0
    # events: rows of the most common types without features of their own (at most 5 types)
    other_event_types: dict[str, int] = field(default_factory=dict)
    # valid rows per text column whose value is in decomposed Unicode (NFD: 'e' and a combining
    # accent, as macOS writes file text): not the same text as its composed spelling (NFC)
    decomposed_text: dict[str, int] = field(default_factory=dict)
    # Optional columns that some files of the table have and others lack: column -> those files.
    partial_columns: dict[str, list[str]] = field(default_factory=dict)
    # purchases: the customers of quarantined lines (guests left out), for a note; not reported
    rejected_customer_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def quarantined_rows(self) -> int:
        return sum(self.quarantined.values())


@dataclass
class ValidationReport:
    dataset: str
    fingerprint: str
    tables: list[TableReport]
    missing_optional_tables: list[str]
    identities: IdentitySummary | None = None
    purchases_customers: int = 0
    purchases_first_ts: str | None = None
    purchases_last_ts: str | None = None
    # Returns as recorded: refund lines (amount < 0), the money they give back against the money
    # of the sold lines (amount > 0), and orders of refund lines alone (returns booked under
    # their own id), so that a returns-heavy shop sees how its returns were read.
    purchases_lines: int = 0
    purchases_refund_lines: int = 0
    purchases_refund_orders: int = 0
    purchases_refund_lines_alone: int = 0  # the refund lines of those orders
    purchases_zero_orders: int = 0  # orders of $0.00 lines alone: purchase orders by the rule
    purchases_sold_money: float = 0.0
    purchases_refunded_money: float = 0.0
    timezone: str = "UTC"  # every timestamp is in this zone
    notes: list[str] = field(default_factory=list)  # what was read how, what was converted

    @property
    def quarantined_rows(self) -> int:
        return sum(t.quarantined_rows for t in self.tables)

    def returns_sentence(self) -> str:
        """How the returns were read, for a person: "no refund lines", or their count, the money
        they give back and the orders of refund lines alone; and the orders of $0.00 lines alone,
        which count as purchase orders."""
        zero = self.purchases_zero_orders
        free = (
            f"; {_count(zero, 'order')} of $0.00 lines alone, counted as "
            f"{'a purchase order' if zero == 1 else 'purchase orders'} (free goods, as the BTYD literature "
            "counts a transaction): leave out of the export any that are not purchases (store credit, "
            "loyalty entries)"
            if zero
            else ""
        )
        return self._refunds_sentence() + free

    def _refunds_sentence(self) -> str:
        refund_lines = self.purchases_refund_lines
        if not refund_lines:
            return "no refund lines (amount below 0)"
        given_back = (
            f"{self.purchases_refunded_money / self.purchases_sold_money:.1%} of the money of the sold lines"
            if self.purchases_sold_money
            else f"{self.purchases_refunded_money:,.2f} with no sold line"
        )
        alone, inside = self.purchases_refund_orders, refund_lines - self.purchases_refund_lines_alone
        return (
            f"{_count(refund_lines, 'refund line')} ({refund_lines / self.purchases_lines:.1%} of the lines) "
            f"give{'s' if refund_lines == 1 else ''} back {given_back}; "
            + (
                f"{_count(alone, 'order')} of refund lines alone (returns booked under their own id)"
                + (f", {_count(inside, 'refund line')} inside orders with a purchase" if inside else "")
                if alone
                else "every one inside an order with a purchase"
            )
        )

    @property
    def forgotten_rows(self) -> int:
        return sum(t.forgotten for t in self.tables)

    def to_dict(self) -> dict:
        data = asdict(self)
        for table in data["tables"]:  # ids are not the report's to list
            table.pop("rejected_customer_ids", None)
        data["quarantined_rows"] = self.quarantined_rows
        data["forgotten_rows"] = self.forgotten_rows
        return data


Progress = Callable[[str], None]


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 's'}"


def validate(dataset: Dataset, out_dir: Path | None = None, progress: Progress | None = None) -> ValidationReport:
    """Validate every table; raise :class:`ContractError` on a table-level failure.

    Row-level failures are counted by reason and, when ``out_dir`` is given, written to
    ``out_dir/quarantine/<table>.parquet`` (every column as text, the reason in
    ``_reject_reason`` and, for duplicates, the number of extra copies in ``_rows``; for CSV
    sources also ``_source_file``, ``_line`` and ``_raw_line`` of malformed lines).
    """
    say = progress or (lambda message: None)
    stamp = _stamp_path(dataset)  # the files as they were when the checks began
    con = dataset.connect()
    try:
        reports = []
        for table in contract.TABLES:
            if not dataset.has(table.name):
                if out_dir is not None:  # another data set's, validated into this folder
                    _earlier_quarantine_gone(out_dir, table.name)
                continue
            say(f"checking {table.name}")
            source = dataset.sources[table.name]
            try:
                offsets = _check_column_types(con, dataset, table)
                report = _check_rows(con, dataset, table, out_dir)
            except duckdb.Error as exc:
                raise ContractError(
                    f"cannot read {source.describe()}: {read_error_reason(exc)}", table=table.name
                ) from exc
            report.timestamps_with_offset = offsets
            report.encoding = source.encoding_note()
            reports.append(report)
        purchases = next(r for r in reports if r.table == "purchases")
        if purchases.rows == 0:
            raise ContractError("the purchases table has no rows", table="purchases")
        if purchases.valid_rows == 0:
            raise ContractError(
                f"no purchase row passed the checks; quarantined by reason: {purchases.quarantined}",
                table="purchases",
            )
        # Lines dated before 1970 or after tomorrow are kept (they may be true) but said: a
        # placeholder date (0001-01-01, 9999-12-31) stretches the data's range, which the as-of
        # checks of the reports and the refresh read.
        # One read of the purchases, per customer: the ids are judged once each (an id shaped
        # like an e-mail address or a phone number reaches lists, exports and answers).
        # Per order first, then per customer: an order whose sold lines lie days apart is an
        # order id used again (per till, per store or per month), which the features would
        # count as one order; an order of refund lines alone is a return booked under its own
        # id. Orders are grouped by a 64-bit hash of customer and order id (a third of the
        # memory of grouping by the two texts at 1M customers): two orders sharing a hash
        # (odds about 1e-6 at 9M orders) would be judged together in these notes' counts.
        (
            customers,
            first_ts,
            last_ts,
            implausible,
            personal_ids,
            spread_orders,
            lines,
            refund_lines,
            refund_orders,
            refund_lines_alone,
            sold_money,
            refunded_money,
            zero_orders,
        ) = con.execute(
            f"""SELECT COUNT(*), MIN(first_ts), MAX(last_ts), SUM(implausible),
                       COUNT(*) FILTER (WHERE {personal_id_sql("customer_id")}), SUM(spread_orders),
                       SUM(lines), SUM(refund_lines), SUM(refund_orders), SUM(refund_lines_alone),
                       SUM(sold_money), SUM(refunded_money), SUM(zero_orders)
                FROM (SELECT customer_id, MIN(first_ts) AS first_ts, MAX(last_ts) AS last_ts,
                             SUM(implausible) AS implausible,
                             COUNT(*) FILTER (WHERE {_SPREAD}) AS spread_orders,
                             SUM(lines) AS lines, SUM(refund_lines) AS refund_lines,
                             -- no purchase line: a refund, not a purchase order (contract.purchase_order)
                             COUNT(*) FILTER (WHERE kept_lines = 0 AND refund_lines > 0) AS refund_orders,
                             SUM(refund_lines) FILTER (WHERE kept_lines = 0) AS refund_lines_alone,
                             COUNT(*) FILTER (WHERE refund_lines = 0 AND sold_lines = 0 AND kept_lines > 0) AS zero_orders,
                             SUM(sold_money) AS sold_money, SUM(refunded_money) AS refunded_money
                      FROM (SELECT hash(customer_id, order_id) AS _order, arbitrary(customer_id) AS customer_id,
                                   MIN(ts) AS first_ts, MAX(ts) AS last_ts,
                                   COUNT(*) AS lines, COUNT(*) FILTER (WHERE amount > 0) AS sold_lines,
                                   COUNT(*) FILTER (WHERE {contract.purchase_line()}) AS kept_lines,
                                   COUNT(*) FILTER (WHERE amount < 0) AS refund_lines,
                                   SUM(amount) FILTER (WHERE amount > 0) AS sold_money,
                                   -SUM(amount) FILTER (WHERE amount < 0) AS refunded_money,
                                   COUNT(*) FILTER (WHERE ts <= TIMESTAMP '1970-01-01'  -- epoch 0 too
                                                    OR ts >= CAST(current_date + 2 AS TIMESTAMP)) AS implausible,
                                   MIN(ts) FILTER (WHERE amount > 0) AS first_sold,
                                   MAX(ts) FILTER (WHERE amount > 0) AS last_sold
                            FROM purchases GROUP BY _order)
                      GROUP BY customer_id)"""
        ).fetchall()[0]
        example = (  # one of them, read again only when there is one
            con.execute(
                f"""SELECT order_id, CAST(first_sold AS VARCHAR), CAST(last_sold AS VARCHAR)
                    FROM (SELECT order_id, MIN(ts) FILTER (WHERE amount > 0) AS first_sold,
                                 MAX(ts) FILTER (WHERE amount > 0) AS last_sold
                          FROM purchases GROUP BY customer_id, order_id)
                    WHERE {_SPREAD} ORDER BY order_id LIMIT 1"""
            ).fetchall()[0]
            if spread_orders
            else None
        )
        spread_orders = int(spread_orders or 0)
        spread_note = (
            [
                f"purchases: {spread_orders:,} order{' has' if spread_orders == 1 else 's have'} sold lines more "
                f"than {ORDER_SPREAD_DAYS} day{'' if ORDER_SPREAD_DAYS == 1 else 's'} apart (e.g. order "
                f"{example[0]}: {example[1]} to {example[2]}); the features count each as one purchase, at its "
                "first line's time (a refund is dated by its own lines). If order ids start again (per till, "
                "per store or per period), export ids that are unique (e.g. the date, the store and the number "
                "together); if lines were added to an order later (an exchange), that is how they count"
            ]
            if spread_orders
            else []
        )
        implausible = int(implausible or 0)
        implausible_note = (
            [
                f"purchases: {implausible:,} line{'' if implausible == 1 else 's'} dated before 1970 (or at its first instant, "
                f"a zero time's date) or after "
                f"tomorrow (the data runs from {first_ts} to {last_ts}): kept; check whether they are placeholders"
            ]
            if implausible
            else []
        )
        personal_note = [personal_ids_note("purchases", personal_ids)] if personal_ids else []
        dates_only_note = (
            []
            if not lines or con.execute(contract.any_timed("purchases")).fetchall()[0][0]
            else [
                "purchases: every time is midnight (dates without a time of day): the features of the time "
                "of day (the shares of orders at night, in the morning, afternoon and evening) are left "
                "empty, and crowd reports give no time of day"
            ]
        )
        if lines and not dates_only_note:
            dates_only_note = _some_dates_only_note(con)
        identities = identity_summary(con) if dataset.has("identities") else None
        say("comparing the customer ids of the tables")
        unmatched_note = _unmatched_ids_notes(con, [r.table for r in reports if r.table != "purchases"])
        unmatched_note += _all_lines_quarantined_note(con, purchases)
        if identities is not None and dataset.has("customers"):
            unmatched_note += _merged_customers_rows_note(con)
        report = ValidationReport(
            dataset=dataset.name,
            fingerprint=dataset.fingerprint(),
            tables=reports,
            missing_optional_tables=[t.name for t in contract.TABLES if not dataset.has(t.name)],
            identities=identities,
            purchases_customers=int(customers),
            purchases_first_ts=str(first_ts),
            purchases_last_ts=str(last_ts),
            purchases_lines=int(lines or 0),
            purchases_refund_lines=int(refund_lines or 0),
            purchases_refund_orders=int(refund_orders or 0),
            purchases_refund_lines_alone=int(refund_lines_alone or 0),
            purchases_zero_orders=int(zero_orders or 0),
            purchases_sold_money=round(float(sold_money or 0), 2),
            purchases_refunded_money=round(float(refunded_money or 0), 2),
            timezone=dataset.timezone,
            notes=_privacy_notes(dataset)
            + _int96_notes(dataset)
            + _notes(reports, dataset.timezone)
            + implausible_note
            + spread_note
            + dates_only_note
            + personal_note
            + unmatched_note
            + (identities.warnings() if identities else []),
        )
    finally:
        con.close()
    if out_dir is not None:
        atomic_write_text(json.dumps(report.to_dict(), indent=2), out_dir / "report.json")
    if stamp is not None and stamp == _stamp_path(dataset):  # no file changed while it was checked
        _write_stamp(stamp, report)
    return report


# Sold lines of one order further apart than this are said (validate): an order id used again.
ORDER_SPREAD_DAYS = 1
_SPREAD = f"last_sold > first_sold + INTERVAL {ORDER_SPREAD_DAYS} DAY"

# Bump when a check is added or changed: data sets checked by older code are checked again.
CHECKS_VERSION = 4


def _stamp_path(dataset: Dataset) -> Path | None:
    """Where the outcome of this version of the data set's checks is kept: keyed by its
    folder, its files (names, sizes, times), its portrait.toml and :data:`CHECKS_VERSION`.
    None for frames (nothing on disk to key by)."""
    if dataset.root is None:
        return None
    digest = hashlib.sha256(f"{CHECKS_VERSION}|{dataset.root.resolve()}|{dataset.fingerprint()}".encode())
    config = dataset.root / CONFIG_FILE
    if config.is_file():
        digest.update(config.read_bytes())
    return cache_folder() / "checked" / f"{digest.hexdigest()[:32]}.json"


def _write_stamp(stamp: Path, report: ValidationReport) -> None:
    summary = {"fingerprint": report.fingerprint, "quarantined_rows": report.quarantined_rows}
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(summary), stamp)
    except OSError:  # an unwritable cache: the checks run again next time, nothing else changes
        pass


def require_checked(dataset: Dataset, progress: Progress | None = None) -> int:
    """Run the contract's table-level checks on ``dataset`` unless this version of it (files
    and settings) passed them before, and return how many rows its checks leave out. Every
    command that reads a data set calls this first: without it a file in the wrong encoding or
    a column nobody can parse would lose its rows silently (the views drop what they cannot
    read; only the checks stop on it). Raises :class:`ContractError` as ``portrait validate``."""
    stamp = _stamp_path(dataset)
    if stamp is not None and stamp.is_file():
        try:
            return int(json.loads(stamp.read_text())["quarantined_rows"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    say = progress or (lambda message: None)
    say("checking the data set against the contract (once per version of its files)")
    return validate(dataset, progress=progress).quarantined_rows


def open_checked(path: str | Path, progress: Progress | None = None, note: Callable[[str], None] | None = None):
    """:func:`portrait.dataset.open_dataset`, then :func:`checked`."""
    return checked(open_dataset(path), progress, note)


def checked(dataset: Dataset, progress: Progress | None = None, note: Callable[[str], None] | None = None) -> Dataset:
    """``dataset`` once :func:`require_checked` passed; ``note`` hears how many rows the checks
    leave out, when any do."""
    left_out = require_checked(dataset, progress)
    if left_out and note is not None:
        where = dataset.root if dataset.root is not None else dataset.name
        note(
            f"{left_out:,} row{'' if left_out == 1 else 's'} of {dataset.name} fail the contract's checks and are "
            f"left out (portrait validate {shlex.quote(str(where))} --out DIR lists them)"
        )
    return dataset


def _written_id(column: str) -> str:
    """SQL: an id as another system may have written the same id: without leading zeros (a
    spreadsheet drops them) and without a trailing '.0' (a float column's text)."""
    return f"LTRIM(CASE WHEN suffix({column}, '.0') THEN left({column}, length({column}) - 2) ELSE {column} END, '0')"


# Rows of another table whose customer ids are compared with the purchases' (the first ones: a
# file that writes its ids differently writes them so from its first row).
ID_SAMPLE_ROWS = 100_000


def personal_ids_note(table: str, count: int, of: str = "") -> str:
    """The note for ``count`` customer ids of ``table`` shaped like an e-mail address or a phone
    number (``of``: of which ids, when not all of them were read: "of its 200 ids")."""
    one = count == 1
    return (
        f"{table}: {count:,} customer id{'' if one else 's'}{f' ({of})' if of else ''} "
        + ("looks like an e-mail address or a phone number" if one else "look like e-mail addresses or phone numbers")
        + "; ids reach lists, exports, API answers and messages, so replace them with opaque ids (or salted hashes) "
        "in the export"
    )


def _unmatched_ids_notes(con, tables: list[str]) -> list[str]:
    """For each of ``tables`` (customers, events, identities), said when its customer ids match
    the purchases' ones only once leading zeros or a trailing '.0' are ignored ('00123' or
    '123.0' against '123'), or match none at all: its rows then join nobody, every attribute of
    every customer empty, and nothing else says so (both files passed their own checks). The
    ids of its first :data:`ID_SAMPLE_ROWS` rows are compared, as written (typed, before the
    quarantine), with every id of the purchases: 1.9-2.5 s at 1M customers, where comparing
    whole tables through the checked views took 29 s."""
    if not tables:
        return []
    notes = []
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _purchase_ids AS SELECT DISTINCT CAST(customer_id AS VARCHAR) AS id FROM typed_purchases"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _purchase_written_ids AS SELECT DISTINCT {_written_id('id')} AS id FROM _purchase_ids"
    )
    try:
        for table in tables:
            ids, matched, loosely, personal = con.execute(
                f"""WITH sample AS (
                        SELECT DISTINCT CAST(customer_id AS VARCHAR) AS id
                        FROM (SELECT customer_id FROM typed_{table} WHERE customer_id IS NOT NULL LIMIT {ID_SAMPLE_ROWS}))
                    SELECT COUNT(*), COUNT(*) FILTER (WHERE id IN (SELECT id FROM _purchase_ids)),
                           COUNT(*) FILTER (WHERE {_written_id("id")} IN (SELECT id FROM _purchase_written_ids)),
                           COUNT(*) FILTER (WHERE {personal_id_sql("id")})
                    FROM sample"""
            ).fetchall()[0]
            if not ids:
                continue
            of = f"of its {ids:,} ids" + (f" (in its first {ID_SAMPLE_ROWS:,} rows)" if ids >= 10_000 else "")
            if personal:  # as the purchases' ids are judged: a customers or events row is a customer too
                notes.append(personal_ids_note(table, personal, of))
            if loosely - matched >= max(1, ids // 10):
                notes.append(
                    f"{table}.customer_id: {matched:,} {of} are ids of the purchases as written, "
                    f"{loosely:,} once leading zeros or a trailing '.0' are ignored ('00123' or '123.0' against "
                    "'123'): the files write the ids differently, so those rows join no customer. Write the ids the "
                    "same way in every file (a spreadsheet drops leading zeros; a float column adds '.0')"
                )
            elif not matched:
                notes.append(
                    f"{table}.customer_id: none {of} is the id of a customer in the purchases: its rows join "
                    f"nobody. Are they ids of the same system (is the right column mapped under "
                    f"[tables.{table}.columns])?"
                )
    finally:
        con.execute("DROP TABLE IF EXISTS _purchase_ids; DROP TABLE IF EXISTS _purchase_written_ids")
    return notes


def _int96_notes(dataset: Dataset) -> list[str]:
    """Timestamps stored as INT96 (Spark's and Databricks' older default, Impala's) carry no
    zone: read as wall-clock times in the data set's zone. Spark wrote UTC instants, Impala local
    times: which, the file does not say, so it is said rather than guessed (a Spark export's
    00:49 in Paris read as 22:49 the evening before)."""
    notes = []
    for name, source in dataset.sources.items():
        for column, files in source.parquet_int96_columns.items():
            notes.append(
                f"{name}.{column}: stored as INT96 in {len(files)} Parquet file(s), a time without a zone, read as "
                f"a wall-clock time in {dataset.timezone}"
                + (
                    ""
                    if dataset.timezone == "UTC"
                    else "; Spark writes INT96 as UTC instants: if this export is Spark's, its times are off by the "
                    "zone's offset: write the column as a timestamp with a zone (Spark: spark.sql.parquet."
                    "outputTimestampType = TIMESTAMP_MICROS)"
                )
            )
    return notes


# Lines at midnight exactly, as a share of all, above which a log with times holds dates without
# one too: to the minute, a real midnight is about 1 line in 1,440.
MIDNIGHT_SHARE = 0.01


def _some_dates_only_note(con) -> list[str]:
    """Lines at midnight exactly in a log whose other lines have times (an export mixing
    ``2026-10-12`` with ``2026-10-13T10:00:00+02:00``): dates without a time, read as midnight,
    count as night orders in the time-of-day shares (a user's test); said, not changed."""
    # placeholder dates (1970-01-01, 9999-12-31) have their own note
    plausible = "ts >= TIMESTAMP '1970-01-02' AND CAST(ts AS DATE) <= current_date + 1"
    midnight, total = con.execute(
        f"SELECT COUNT(*) FILTER (WHERE NOT {contract.timed()}), COUNT(*) FROM typed_purchases WHERE {plausible}"
    ).fetchall()[0]
    if not total or midnight / total <= MIDNIGHT_SHARE:
        return []
    return [
        f"purchases: {midnight:,} of {total:,} lines ({midnight / total:.1%}) are at midnight exactly, where the others "
        "have a time of day: dates without a time? They count as night orders in the time-of-day shares "
        "(order_share_night); export their times, or leave those features out"
    ]


def _all_lines_quarantined_note(con, purchases: TableReport) -> list[str]:
    """Customers every one of whose purchase lines was quarantined (a night's export with a
    negative discount on each of their lines): they read as customers who never bought (RFM "No
    purchase yet", every purchase tag left), which a run's entered and left would show as their
    doing. Guests (no id, a placeholder id) are not customers. Read only when lines were
    quarantined."""
    if not purchases.rejected_customer_ids:
        return []
    con.register(
        "_rejected_ids", pa.table({"id": pa.array([str(i) for i in purchases.rejected_customer_ids], pa.string())})
    )
    try:
        (lost,) = con.execute(
            """SELECT COUNT(*) FROM _rejected_ids WHERE id NOT IN (
                   SELECT CAST(customer_id AS VARCHAR) FROM typed_purchases
                   WHERE CAST(customer_id AS VARCHAR) IN (SELECT id FROM _rejected_ids))"""
        ).fetchall()[0]
    finally:
        con.unregister("_rejected_ids")
    if not lost:
        return []
    return [
        f"purchases: {lost:,} customer{' has' if lost == 1 else 's have'} every purchase line quarantined: until the "
        "lines are fixed, read as customers who never bought (RFM 'No purchase yet', their purchase tags left) "
        "where their events or a customers signup_date place them before the date, and left out of features, "
        "scores and reports otherwise"
    ]


def _privacy_notes(dataset: Dataset) -> list[str]:
    """Which columns were withheld as personal data (names only), and configured ones no
    table has (a misspelt name would otherwise go unnoticed)."""
    notes = []
    found: set[str] = set()
    for table in GUARDED_TABLES:
        source = dataset.sources.get(table)
        if source is not None and source.withheld:
            found |= {c.lower() for c in source.withheld}
            born = source.birth_year_from
            year = (
                f" (of {', '.join(born)} only the year of birth is read, as the attribute {BIRTH_YEAR})" if born else ""
            )
            notes.append(f"{table}: personal-data columns withheld, never read: {', '.join(source.withheld)}{year}")
    missing = [c for c in dataset.privacy.pii_columns if c.lower() not in found]
    if missing:
        notes.append(f"[privacy] pii_columns names {', '.join(missing)}, which neither customers nor identities has")
    customers = dataset.sources.get("customers")
    columns = customers.columns_for_privacy() if customers is not None else []
    has = {c.lower() for c in columns}
    privacy = dataset.privacy
    unknown = [c for c in privacy.sensitive_columns if c.lower() not in has and c not in privacy.implied_sensitive]
    if unknown:  # a misspelt one was shown to the marketing role without a word
        notes.append(
            f"[privacy] sensitive_columns names {', '.join(unknown)}, which the customers table does not have: "
            "nothing is hidden for "
            + ("it" if len(unknown) == 1 else "them")
            + (f" (its columns: {', '.join(sorted(columns))})" if customers is not None else "")
        )
    return notes


def _notes(reports: list[TableReport], timezone: str) -> list[str]:
    notes = []
    for r in reports:
        if r.forgotten:
            notes.append(f"{r.table}: {_rows(r.forgotten)} of forgotten customers left out (portrait forget)")
        if r.encoding:
            notes.append(f"{r.table}: read {r.source} as {r.encoding}")
        for column, n in r.timestamps_with_offset.items():
            if n:
                notes.append(
                    f"{r.table}.{column}: {n:,} values carried a UTC offset or time zone and were converted to {timezone}"
                )
        if r.padded_customer_ids:
            notes.append(
                f"{r.table}.customer_id: {_values(r.padded_customer_ids)} with spaces around the id, kept as "
                "written (only a CSV file's cells are trimmed): 'C1 ' and 'C1' are two customers to every "
                "table; trim them where the file is written if they are one"
            )
        if r.zero_padded_customer_ids:
            notes.append(
                f"{r.table}.customer_id: {_values(r.zero_padded_customer_ids)} equal another id but for leading "
                "zeros or a trailing '.0' ('00123', '123.0' and '123'): they are two customers to every table; if "
                "they are one, write the ids the same way in every file (a file saved through a spreadsheet loses the "
                "zeros; a float column adds '.0')"
            )
        if r.scientific_customer_ids:
            notes.append(
                f"{r.table}.customer_id: {_values(r.scientific_customer_ids)} in scientific notation ('1.23457E+11'), "
                "as a spreadsheet writes long numbers: their last digits are lost, so different customers may share "
                "one id; export the ids as text (a column formatted as text, or the system's own export)"
            )
        for column, n in r.decomposed_text.items():
            notes.append(
                f"{r.table}.{column}: {_values(n)} in decomposed Unicode (NFD: a letter and a separate accent, "
                "as some Mac tools write text), kept as written: they are not the same text as the composed "
                "spelling (NFC) that keyboards type, so 'Café' written both ways is two values (two categories, "
                "two customers), and a filter typed 'Café' misses the decomposed ones. Export the files in NFC"
            )
        if r.other_event_types:
            listed = ", ".join(f"{t} {n:,}" for t, n in r.other_event_types.items())
            notes.append(
                f"events.event_type: types without features of their own ({listed}): counted only in the event "
                "totals (event_count_*, days since the last event, active days)"
            )
        for column, files in r.partial_columns.items():
            notes.append(
                f"{r.table}.{column}: not in the header of {some_files(files)}, which other files of "
                f"{r.table} have: the rows of {'that file' if len(files) == 1 else 'those files'} read it as missing"
                + (
                    "; a line exported both there and in a file with the column is not found as a copy"
                    if contract.table(r.table).check_duplicates
                    else ""
                )
            )
        duplicates = _duplicates_note(r)
        if duplicates:
            notes.append(duplicates)
        unreadable = {k: v for k, v in r.quarantined.items() if k in (MALFORMED, INVALID_ENCODING)}
        if unreadable:
            first = r.malformed_lines[0]
            counts = ", ".join(f"{k}: {v:,}" for k, v in unreadable.items())
            notes.append(
                f"{r.table}: {_lines(sum(unreadable.values()))} could not be read, quarantined ({counts}); "
                f"the first is line {first['line']:,} of {first['file']}"
            )
    return notes


def _merged_customers_rows_note(con) -> list[str]:
    """Said when persons merged from several ids have a customers row under more than one of
    them: one row is read (the person's own id's, else the smallest id's: portrait.views.
    merged_view), the others not, which validation counted nowhere."""
    persons, rows = con.execute(
        f"""SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (
                SELECT COALESCE(m.person_id, t.customer_id) AS person, COUNT(*) AS n
                FROM clean_customers t LEFT JOIN {REMAP} m ON t.customer_id = m.customer_id
                GROUP BY 1 HAVING COUNT(*) > 1)"""
    ).fetchall()[0]
    if not persons:
        return []
    return [
        f"customers: {persons:,} person{'s' if persons != 1 else ''} merged from several ids "
        f"{'have' if persons != 1 else 'has'} a customers row under more than one of them ({int(rows):,} rows): "
        "the attributes are read from one (the person's own id's, else the smallest id's), the other "
        f"{int(rows) - persons:,} not"
    ]


def _has_copies(r: TableReport) -> bool:
    """Whether some lines were quarantined as copies: said, with the setting that keeps them
    apart if they are separate lines (a line or item number outside the contract). Said for any
    number of copies: under 1% they went unsaid, and CDNOW read through a mapping lost 255 real
    same-day repeat lines ($4,332.88) without a word but a count."""
    return bool(r.rows) and r.quarantined.get("duplicate_line", 0) > 0


def _duplicates_note(r: TableReport) -> str | None:
    if not _has_copies(r):
        return None
    copies = r.quarantined["duplicate_line"]
    verb, were = ("equals", "was") if copies == 1 else ("equal", "were")
    share = f"{copies / r.rows:.1%}" if copies / r.rows >= 0.001 else "under 0.1%"
    said = f"{r.table}: {_rows(copies)} ({share}) {verb} another line in every contract column"
    if r.line_id_column is not None:
        return f"{said} and in {r.line_id_column!r}, the line id: quarantined as copies (duplicate_line)"
    if r.table != "purchases":  # a line id is a purchases column: an identities row has no other
        return f"{said} and {were} quarantined as copies (duplicate_line)"
    return (
        f"{said} and {were} quarantined as copies (duplicate_line). If the export has a column that tells "
        "such lines apart (a line or item number), map it as line_id in portrait.toml "
        '([tables.purchases.columns] line_id = "..."): they are then separate lines'
    )


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def _values(n: int) -> str:
    return f"{n:,} value" + ("" if n == 1 else "s")


def _lines(n: int) -> str:
    return f"{n:,} line" + ("" if n == 1 else "s")


def _check_column_types(con: duckdb.DuckDBPyConnection, dataset: Dataset, table: contract.Table) -> dict[str, int]:
    """A column most of whose values do not parse has the wrong type: a table-level error.
    Returns, per timestamp column, how many values carried an offset or zone."""
    source = dataset.sources[table.name]
    types = {c: t.upper() for c, t in _raw_types(con, table.name).items()}
    parsed = [c for c in table.columns if c.kind in ("number", "timestamp")]
    trim = source.is_csv
    if not parsed:  # nothing to parse (identities): only the header check, in its own scan
        _refuse_header_in_other_order(con, source, table, types)
        return {}
    parse = {
        column.name: parse_expr(
            column, types[column.name], source.timestamp_format, trim, dataset.timezone, source.decimal
        )
        for column in parsed
    }
    unparseable = {
        column.name: f"{present_expr(column.name, types[column.name], trim, column.kind)} AND {parse[column.name]} IS NULL"
        for column in parsed
    }
    zones = {
        column.name: zone
        for column in parsed
        if (zone := zone_expr(column, types[column.name], source.timestamp_format)) is not None
    }
    aggregates = []
    for column in parsed:
        aggregates.append(f"COUNT(*) FILTER (WHERE {present_expr(column.name, types[column.name], trim, column.kind)})")
        aggregates.append(f"COUNT(*) FILTER (WHERE {unparseable[column.name]})")
    for name, zone in zones.items():
        aggregates.append(f"COUNT(*) FILTER (WHERE {zone} AND {parse[name]} IS NOT NULL)")
    header_in_other_order = _header_in_other_order(source, table, types) if trim else None
    if header_in_other_order is not None:  # in the same scan
        aggregates.append(f"COUNT(*) FILTER (WHERE {header_in_other_order})")
    counts = con.execute(f"SELECT {', '.join(aggregates)} FROM cleaned_{table.name}").fetchall()[0]
    raw_columns = ", ".join(quote_ident(c) for c in types)
    if header_in_other_order is not None:
        _header_error(con, source, table, types, header_in_other_order, counts[-1])
        counts = counts[:-1]
    for i, column in enumerate(parsed):
        present, bad = counts[2 * i], counts[2 * i + 1]
        if present and bad / present > contract.MAX_UNPARSEABLE_SHARE:
            examples = con.execute(
                f"SELECT {raw_columns} FROM cleaned_{table.name} WHERE {unparseable[column.name]} LIMIT 3"
            ).df()
            raise ContractError(
                f"{bad:,} of {present:,} values cannot be parsed as a {column.kind}"
                + (
                    f" with format {source.timestamp_format!r}"
                    if column.kind == "timestamp" and source.timestamp_format
                    else ""
                )
                + (
                    " (ISO, YYYY-MM-DD[ HH:MM:SS], with a four-digit year)"
                    if column.kind == "timestamp" and not source.timestamp_format
                    else ""
                )
                + (
                    _number_hint(table.name, source.decimal)
                    if column.kind == "number"
                    else "; is this the right column, or does portrait.toml need a rename or a timestamp_format?"
                ),
                table=table.name,
                column=column.name,
                examples=without_personal_values(examples.astype("str").to_dict("records")),
            )
    return {name: int(n) for name, n in zip(zones, counts[2 * len(parsed) :], strict=True)}


def _refuse_header_in_other_order(con, source, table: contract.Table, types: dict[str, str]) -> None:
    """:func:`_header_error` for a CSV table without columns to parse, in a scan of its own."""
    condition = _header_in_other_order(source, table, types) if source.is_csv else None
    if condition is not None:
        found = con.execute(f"SELECT COUNT(*) FILTER (WHERE {condition}) FROM cleaned_{table.name}").fetchall()[0][0]
        _header_error(con, source, table, types, condition, found)


def _header_error(con, source, table: contract.Table, types: dict[str, str], condition: str, found: int) -> None:
    """Raise for ``found`` rows of a CSV source that repeat its header in another order."""
    if not found:
        return
    raw_columns = ", ".join(quote_ident(c) for c in types)
    examples = con.execute(f"SELECT {raw_columns} FROM cleaned_{table.name} WHERE {condition} LIMIT 3").df()
    raise ContractError(
        f"{found:,} line(s) of {source.describe()} repeat the header with the columns in another order "
        "(two exports pasted into one file?): the lines after such a line are read under the file's first "
        "header, so their values land in the wrong columns. Split the file where the second header is, "
        "or export it again",
        table=table.name,
        examples=without_personal_values(examples.astype("str").to_dict("records")),
    )


def _header_in_other_order(source, table: contract.Table, types: dict[str, str]) -> str | None:
    """SQL true for a row of a CSV source whose values are all column names of its files' headers
    but not each its own column's: a header line in another order inside a file. None when the
    source has no header to compare with."""
    names = sorted({n for header in source.file_headers.values() for n in header if n})
    if not names:
        return None
    known = ", ".join(quote_literal(n) for n in names)
    # only columns read from the file (an absent optional column is NULL here), extra ones too
    present = header_columns(source, table, types)
    if len(present) < 2:
        return None
    value = {c: f"LOWER(TRIM(CAST({quote_ident(c)} AS VARCHAR)))" for c in present}
    all_names = " AND ".join(f"{v} IN ({known})" for v in value.values())
    any_elsewhere = " OR ".join(f"{value[c]} <> {quote_literal(n)}" for c, n in present.items())
    return f"({all_names} AND ({any_elsewhere}))"


def _raw_types(con, view: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM raw_{view}").fetchall()}


def _check_rows(con, dataset: Dataset, table: contract.Table, out_dir: Path | None) -> TableReport:
    name = table.name
    source = dataset.sources[name]
    if source.is_csv:
        _clear_rejects(con, source)
    # only text ids can have spaces or leading zeros (a Parquet file's whole-number ids are integers)
    text_ids = (
        "customer_id" in table.column_names
        and con.execute(f"DESCRIBE SELECT customer_id FROM checked_{name}").fetchall()[0][1] == "VARCHAR"
    )
    # In the same scan: customer ids that a CSV's trimming would have changed (see TableReport)...
    padded = (
        "COUNT(*) FILTER (WHERE prefix(customer_id, ' ') OR suffix(customer_id, ' '))"
        if not source.is_csv and text_ids
        else "0"
    )
    # ...and ids that are another id but for leading zeros or a trailing '.0' ('00123', '123.0',
    # '123'), of the purchases' valid rows
    read_id = "TRIM(customer_id)" if source.is_csv else "customer_id"  # as the typed rows read it
    zeros = (
        f"COUNT(DISTINCT {read_id}) - COUNT(DISTINCT {_written_id(read_id)})"
        if name == "purchases" and text_ids
        else "0"
    )
    # ...and ids a spreadsheet wrote in scientific notation (1.23457E+11: digits lost, customers merged)
    scientific = (
        f"COUNT(DISTINCT {read_id}) FILTER (WHERE regexp_matches({read_id}, '^[0-9]([.,][0-9]+)?[eE]\\+[0-9]+$'))"
        if text_ids
        else "0"
    )
    # events of types without features of their own (a new type): counted in the totals only
    known_types = ", ".join(quote_literal(t) for t in contract.KNOWN_EVENT_TYPES)
    other_type = f"LOWER(TRIM(CAST(event_type AS VARCHAR))) NOT IN ({known_types})"
    others = f"COUNT(*) FILTER (WHERE {other_type})" if name == "events" else "0"

    # text in decomposed Unicode (about 0.1 s per text column of 20M rows at 1M customers)
    # the columns read as text that are text in the file too (a Parquet file's integer ids are not)
    def texts_of(view: str) -> list[str]:
        return [c for c, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall() if kind == "VARCHAR"]

    in_file = set(texts_of(f"checked_{name}"))
    texts = [c for c in texts_of(f"typed_{name}") if c in in_file]
    decomposed = "".join(
        f", COUNT(*) FILTER (WHERE nfc_normalize({quote_ident(c)}) <> {quote_ident(c)})" for c in texts
    )
    # ...and the customers of quarantined purchase lines (few; guests are no customers), to find
    # those with no line left (:func:`_all_lines_quarantined_note`)
    rejected = (
        f", LIST(DISTINCT {quote_ident(PARSED + 'customer_id')}) FILTER (WHERE {REASON} IS NOT NULL "
        f"AND {REASON} NOT IN ('missing_customer_id', 'placeholder_customer_id', '{REPEATED_HEADER}'))"
        if name == "purchases"
        else ", NULL"
    )
    scanned = con.execute(
        f"SELECT {REASON}, COUNT(*), {padded}, CASE WHEN {REASON} IS NULL THEN {zeros} ELSE 0 END, {others}, "
        f"{scientific}{decomposed}{rejected} FROM checked_{name} GROUP BY 1"
    ).fetchall()
    decomposed_counts = [row[6:-1] for row in scanned if row[0] is None]
    scientific_ids = int(sum(row[5] for row in scanned if row[0] is None))
    rejected_ids = sorted({i for row in scanned for i in (row[-1] or []) if i is not None})
    scanned = [row[:5] for row in scanned]
    counts = {reason: n for reason, n, *_ in scanned}
    # The scan above stored the lines DuckDB could not read; keep them before another scan adds more.
    malformed = _collect_malformed(con, source) if source.is_csv else {}
    forgotten = forgotten_rows(con, name)
    rows = sum(counts.values()) + sum(malformed.values()) + forgotten
    quarantined = {reason: n for reason, n in counts.items() if reason is not None}
    quarantined.update(malformed)
    report = TableReport(table=name, source=source.describe(), rows=rows, valid_rows=0, forgotten=forgotten)
    report.rejected_customer_ids = rejected_ids
    report.padded_customer_ids = int(sum(n for reason, _, n, _, _ in scanned if reason is None))
    report.zero_padded_customer_ids = int(sum(z for reason, _, _, z, _ in scanned if reason is None))
    report.scientific_customer_ids = scientific_ids
    if decomposed_counts:
        report.decomposed_text = {c: int(n) for c, n in zip(texts, decomposed_counts[0], strict=True) if n}
    if any(o for reason, *_, o in scanned if reason is None):  # only then: which types, most rows first
        # a type holding an e-mail address or a phone number is counted, not written out
        for t, n in con.execute(
            f"SELECT LOWER(TRIM(CAST(event_type AS VARCHAR))) AS t, COUNT(*) FROM typed_{name} "
            f"WHERE {other_type} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"
        ).fetchall():
            shown = "(a type holding personal data)" if holds_personal_value(str(t)) else str(t)[:40]
            report.other_event_types[shown] = report.other_event_types.get(shown, 0) + int(n)
    report.partial_columns = {
        c.name: lacking
        for c in table.columns
        if not c.required and (lacking := source.files_without(source.columns.get(c.name, c.name)))
    }
    if malformed:
        report.malformed_lines = _malformed_examples(con, name)
        _check_malformed_share(source, table, rows, malformed, report.malformed_lines)
        _check_encoding(con, source, table, rows)
    has_duplicates_view = table.check_duplicates
    if has_duplicates_view:
        for reason, n in con.execute(f"SELECT {REASON}, SUM(_rows) FROM duplicates_{name} GROUP BY 1").fetchall():
            quarantined[reason] = quarantined.get(reason, 0) + int(n)
    # Every row is either clean or quarantined (duplicates counted as their extra copies), so
    # the clean count needs no further pass over the table.
    report.valid_rows = int(rows - sum(quarantined.values()) - forgotten)
    report.quarantined = dict(sorted(quarantined.items()))
    if "line_id" in table.column_names and _has_copies(report):  # only then is the source read for it
        report.line_id_column = mapped_column(source, "line_id", source_columns(con, source))
    if out_dir is not None and not report.quarantined_rows:
        _earlier_quarantine_gone(out_dir, name)
    if out_dir is not None and report.quarantined_rows:
        _earlier_report_gone(out_dir)
        target = out_dir / "quarantine" / f"{name}.parquet"
        columns = _raw_types(con, name)
        private = {c.name for c in table.columns if c.identifier}
        as_text = ", ".join(_quarantined_value(c, c in private) for c in columns)
        no_line = (
            ", CAST(NULL AS VARCHAR) AS _source_file, CAST(NULL AS BIGINT) AS _line, CAST(NULL AS VARCHAR) AS _raw_line"
            if source.is_csv
            else ""
        )
        parts = [f"SELECT {as_text}, {REASON}, 1 AS _rows{no_line} FROM checked_{name} WHERE {REASON} IS NOT NULL"]
        if has_duplicates_view:
            parts.append(f"SELECT {as_text}, {REASON}, _rows{no_line} FROM duplicates_{name}")
        if malformed:
            nulls = ", ".join(f"CAST(NULL AS VARCHAR) AS {quote_ident(c)}" for c in columns)
            parts.append(
                f"SELECT {nulls}, reason AS {REASON}, 1 AS _rows, file AS _source_file, CAST(line AS BIGINT) AS _line, "
                f"text AS _raw_line FROM _malformed_{name}"
            )
        with atomic_target(target) as tmp:
            con.execute(
                f"COPY ({' UNION ALL '.join(parts)}) TO {quote_literal(str(tmp))} (FORMAT PARQUET, USE_TMP_FILE false)"
            )
        report.quarantine_file = str(target)
    return report


def _earlier_quarantine_gone(out_dir: Path, table: str) -> None:
    """Remove an earlier validation's quarantine of ``table`` from ``out_dir`` (and the report
    naming it), where this one quarantines none of it: of this data set before its rows were
    fixed, or of another validated into the same folder (it stayed, its rows beside a report
    of none)."""
    target = out_dir / "quarantine" / f"{table}.parquet"
    if target.exists():
        _earlier_report_gone(out_dir)
        target.unlink()


def _earlier_report_gone(out_dir: Path) -> None:
    """Remove an earlier validation's report from ``out_dir`` before its quarantine files
    change: stopped before writing its own, this one left the earlier report naming files it
    had deleted or replaced (8,476 quarantined rows beside an empty quarantine)."""
    (out_dir / "report.json").unlink(missing_ok=True)


# A quarantined row keeps that an identifier (contract.Column.identifier: an e-mail address, a
# phone number) was there, not the identifier.
WITHHELD_VALUE = "(withheld)"


def _quarantined_value(column: str, private: bool) -> str:
    ident = quote_ident(column)
    if private:
        return f"CASE WHEN {ident} IS NULL THEN NULL ELSE {quote_literal(WITHHELD_VALUE)} END AS {ident}"
    return f"CAST({ident} AS VARCHAR) AS {ident}"


def _temporary_tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()}


def _clear_rejects(con, source: TableSource) -> None:
    present = _temporary_tables(con)
    for rejects in source.rejects_tables():
        if rejects in present:
            con.execute(f"DELETE FROM {quote_ident(rejects)}")


def _collect_malformed(con, source: TableSource) -> dict[str, int]:
    """Copy the lines the last scan could not read, one row per line, into ``_malformed_<t>``
    (file as named in the data set, line number, reason, text); return the counts by reason."""
    errors, scans = source.rejects_tables()
    target = quote_ident(f"_malformed_{source.table}")
    if not {errors, scans} <= _temporary_tables(con):  # nothing was rejected yet in this session
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {target} (file VARCHAR, line BIGINT, reason VARCHAR, "
            "text VARCHAR, byte BIGINT)"
        )
        return {}
    _refuse_runaway_quote(con, source, errors, scans)
    # A line that may hold personal data (TableSource.private_lines), or that holds an e-mail
    # address or a phone number in any field (a memo, a payload): its text is not kept.
    # The line without its end: in a CRLF file DuckDB's copy starts with the previous line's \n.
    line = "TRIM(any_value(e.csv_line), chr(13) || chr(10))"
    text = (
        f"{quote_literal(WITHHELD_LINE)}"
        if source.private_lines
        else f"CASE WHEN {personal_text_sql(line)} THEN {quote_literal(WITHHELD_LINE)} ELSE {line} END"
    )
    renamed = [f for f in source.resolved_csv_files() if f.read_path is not None]
    file_name = "s.file_path"
    if renamed:
        cases = " ".join(f"WHEN {quote_literal(str(f.read_path))} THEN {quote_literal(str(f.path))}" for f in renamed)
        file_name = f"CASE s.file_path {cases} ELSE s.file_path END"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {target} AS
        SELECT {file_name} AS file, e.line AS line,
            CASE WHEN bool_or(e.error_type = 'INVALID ENCODING') THEN '{INVALID_ENCODING}'
                 ELSE '{MALFORMED}' END AS reason,
            {text} AS text, min(e.line_byte_position) AS byte
        FROM {quote_ident(errors)} e JOIN {quote_ident(scans)} s USING (scan_id, file_id)
        GROUP BY s.file_path, e.line"""
    )
    if not source.private_lines:
        _keep_raw_bytes(con, target, {f.path for f in source.resolved_csv_files() if f.read_path is None})
    return {reason: int(n) for reason, n in con.execute(f"SELECT reason, COUNT(*) FROM {target} GROUP BY 1").fetchall()}


def _refuse_runaway_quote(con, source: TableSource, errors: str, scans: str) -> None:
    """Raise :class:`ContractError` when a line the reader could not read took whole lines after
    it: a quote opened on it and never closed made the lines after it (up to the next quote,
    maybe the end of the file) text inside the quotes. They are lost, not malformed lines, and
    were counted as one. A malformed record holding a quoted line break (an address) is one
    malformed row: its later lines are not whole lines of the file's layout (without quotes,
    the header's number of fields). (CSV quoting: :mod:`portrait.csv_dialect`.)"""
    text = "trim(e.csv_line, chr(13) || chr(10))"
    spanning = con.execute(
        f"SELECT s.file_path, e.line, {text} FROM {quote_ident(errors)} e JOIN {quote_ident(scans)} s "
        f"USING (scan_id, file_id) WHERE strpos({text}, chr(10)) > 0 OR strpos({text}, chr(13)) > 0 "
        "ORDER BY 1, 2 LIMIT 1000"
    ).fetchall()
    files = {str(f.scanned_path): f for f in source.resolved_csv_files()}
    layouts: dict[str, tuple[str, int]] = {}  # per file: its delimiter and number of fields, read once
    for read_path, line, record in spanning:
        csv_file = files.get(read_path)
        if csv_file is None:
            continue
        if read_path not in layouts:
            header = source.file_headers.get(str(csv_file.path), [])
            layouts[read_path] = (source.csv_delimiter(csv_file), len(header))
        if swallows_lines(record, *layouts[read_path]):
            raise ContractError(
                f"{csv_file.path} line {int(line):,}: a quoted value opens on this line and is not closed on it, so "
                "the reader took the lines after it as text inside the quotes and could not read them. Close the "
                'quote on that line (a quote inside a quoted value is written twice: "TV 55"" LED"), then read the '
                "file again",
                table=source.table,
            )


_RAW_BYTES_LINES = 10_000  # lines re-read from their file at most (one seek each)


def _keep_raw_bytes(con, target: str, files: set[Path]) -> None:
    """The text of a line that is not valid in its encoding as its bytes were, a byte that does
    not decode shown as ``\\xNN``: DuckDB's copy replaces such bytes (and may lose the field
    separator after one), and the quarantine must hold the line unchanged."""
    by_name = {str(path): path for path in files}
    rows = con.execute(
        f"SELECT file, line, byte FROM {target} WHERE reason = '{INVALID_ENCODING}' ORDER BY file, line "
        f"LIMIT {_RAW_BYTES_LINES}"
    ).fetchall()
    fixed = []
    for file, line, byte in rows:
        raw = _raw_line(by_name[file], byte) if file in by_name else None
        if raw is not None:
            text = raw.decode("utf-8", errors="backslashreplace")
            fixed.append((file, line, WITHHELD_LINE if holds_personal_value(text) else text))
    if not fixed:
        return
    files_, lines_, texts = zip(*fixed, strict=True)
    con.register("_raw_bytes", pa.table({"file": files_, "line": lines_, "text": texts}))
    try:
        con.execute(f"UPDATE {target} t SET text = r.text FROM _raw_bytes r WHERE t.file = r.file AND t.line = r.line")
    finally:
        con.unregister("_raw_bytes")


def _malformed_examples(con, table_name: str, limit: int = 5) -> list[dict]:
    rows = con.execute(
        f"SELECT file, line, reason, text FROM {quote_ident('_malformed_' + table_name)} ORDER BY file, line LIMIT {limit}"
    ).fetchall()
    return [{"file": f, "line": int(line), "reason": reason, "text": text} for f, line, reason, text in rows]


def _number_hint(table: str, decimal: str) -> str:
    if decimal == ",":
        return (
            '; numbers are read with a comma for decimals (decimal = "," in portrait.toml) and no thousands '
            "separator, point or currency sign ('1.234,50', '21.99' and '3,00 EUR' do not parse): is the setting "
            "right for this file, or is this the wrong column (rename the right one in portrait.toml)?"
        )
    return (
        "; numbers are read with a point for decimals and no thousands separator or currency sign ('$3.00' "
        f"does not parse). For a comma ('21,99'), set decimal = \",\" in the [tables.{table}] section of "
        "portrait.toml; if this is the wrong column, rename the right one there"
    )


def _check_malformed_share(source, table, rows: int, malformed: dict[str, int], examples: list[dict]) -> None:
    """Most lines unreadable: a wrong delimiter or quote, not a few bad lines."""
    bad = sum(malformed.values())
    if rows and bad / rows > contract.MAX_UNPARSEABLE_SHARE and malformed.get(MALFORMED, 0) >= bad / 2:
        shown = "\n".join(f"  {e['file']} line {e['line']:,}: {e['text']}" for e in examples[:3])
        raise ContractError(
            f"{bad:,} of {rows:,} lines of {source.describe()} cannot be split into the header's columns; "
            f'is the delimiter right (e.g. delimiter = ";" in the [tables.{table.name}] section of {CONFIG_FILE}), or does '
            "a line open a quote it never closes (the reader then cannot tell which commas are quoted)?\n"
            f"first lines:\n{shown}",
            table=table.name,
        )


# Where a file said to be in the key's encoding has bytes it lacks, the wider encoding of the same
# family it is most likely in: cp932 (what Windows writes: Shift-JIS with NEC and IBM characters
# such as ①), euc_jis_2004 for EUC-JP, gb18030 for GBK.
_WIDER_ENCODING = {
    "shift_jis": "cp932",
    "euc_jp": "euc_jis_2004",
    "gbk": "gb18030",
    "gb2312": "gb18030",
    "euc_kr": "cp949",
    "big5": "big5hkscs",
}


def _check_encoding(con, source: TableSource, table: contract.Table, lines: int) -> None:
    """A file with more than a few lines (or more than 1% of the table's lines) that do not
    decode in the encoding it was read in is in another encoding: stop and say how to name it,
    rather than quarantine every line with an accent. That holds for UTF-8 (no encoding
    configured), and for a configured one (a Japanese Windows export named Shift-JIS is cp932);
    a list of encodings chose one in which the whole file decodes. A configured encoding is
    trusted further: it stops only past both (more than 10 lines and more than 1% of the
    table's); fewer are quarantined, as a few stray bytes are."""
    guessed = {
        str(f.path): f
        for f in source.resolved_csv_files()
        if f.how.startswith(("default", "byte-order mark", "configured"))
    }
    if not guessed:
        return
    rows = con.execute(
        f"""SELECT file, COUNT(*), arg_min(line, line), arg_min(byte, line), arg_min(text, line)
        FROM {quote_ident("_malformed_" + source.table)} WHERE reason = '{INVALID_ENCODING}'
        GROUP BY file ORDER BY file"""
    ).fetchall()
    problems, suggested = [], []
    share = contract.MAX_UNDECLARED_ENCODING_SHARE
    for file, n, line, byte, text in rows:
        many, large = n > contract.MAX_UNDECLARED_ENCODING_ERRORS, n > share * lines
        configured = file in guessed and guessed[file].how.startswith("configured")
        if file in guessed and ((many and large) if configured else (many or large)):
            raw = None if source.private_lines else _raw_line(guessed[file].path, byte)
            if raw is not None and holds_personal_value(raw.decode("utf-8", errors="backslashreplace")):
                raw = None  # the quarantine's text, withheld as it is there
            encoding = guessed[file].encoding.upper()
            wider = _WIDER_ENCODING.get(codecs.lookup(guessed[file].encoding).name.replace("-", "_"))
            problems.append(
                f"{file} is not {encoding}: {n:,} lines have bytes that are not valid {encoding} "
                f"(the first is line {line:,}: {raw if raw else text!r})"
                + (
                    f"; {wider} is a wider encoding of the same family (Windows writes cp932): try that"
                    if wider
                    else ""
                )
            )
            suggested += [wider] if wider else []
    if problems:
        raise ContractError(
            "; ".join(problems)
            + (". " if suggested else " (no guess is safe: latin-1 reads any bytes, rightly or not). ")
            + encoding_hint(table.name, *suggested[:1]),
            table=table.name,
        )


def _raw_line(path: Path, byte: int | None) -> bytes | None:
    """The bytes of the line starting at ``byte`` (at most 200), to show what is not UTF-8."""
    if byte is None or path.name.endswith(".gz"):
        return None
    try:
        with open(path, "rb") as handle:
            # DuckDB's line_byte_position is one past the line's first byte (seen in 2.0);
            # should it ever be exact, the read lands on the previous line's end: skip that.
            handle.seek(max(0, byte - 1))
            line = handle.readline(200)
            if line in (b"\n", b"\r\n"):
                line = handle.readline(200)
            return line.rstrip(b"\r\n")
    except OSError:
        return None
