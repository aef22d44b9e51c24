"""A customer data set: where its tables are, how its columns map to the contract, and the
DuckDB views every later stage reads.

A data set is a folder holding, for each contract table, ``NAME.parquet``, ``NAME.csv``
(``.csv.gz``) or a sub-folder ``NAME/`` of Parquet or CSV parts; or a DuckDB database file with
tables of those names; or pandas frames (tests, notebooks). An optional ``portrait.toml`` in
the folder renames columns and points at other file names::

    timezone = "Europe/Paris"            # the zone timestamps are stored in (default UTC)
    [tables.purchases]
    file = "sales_export.csv"            # relative to the folder; a glob is allowed
    timestamp_format = "%d/%m/%Y %H:%M"  # when timestamps are not ISO
    delimiter = ";"                      # CSV only, when the sniffer guesses wrong
    decimal = ","                        # CSV only: 12,50 for 12.50 (a point then does not parse)
    encoding = "latin-1"                 # CSV only; or a list tried in order, per file
    [tables.purchases.columns]           # contract name = name in the export
    order_id = "InvoiceNo"
    customer_id = "CustomerID"
    [privacy]                            # see portrait.privacy
    pii_columns = ["loyalty_card"]       # withheld besides columns named like email, phone, ...
    consent_column = "marketing_consent"
    suppression_file = "suppressed.csv"

Personal-data columns of ``customers`` and ``identities`` (:mod:`portrait.privacy`) are left
out where the table is read (:meth:`TableSource.scan_sql`): no view ever holds them.

CSV encodings: without ``encoding`` a file is read as UTF-8 (UTF-16 when it starts with a UTF-16
byte-order mark). A single configured encoding is used as it is. A list (``["utf-8",
"latin-1"]``) is tried in order per file, and the first in which the whole file decodes is used
(latin-1 decodes anything, so it belongs last). UTF-8, UTF-16 and latin-1 are decoded by DuckDB;
any other encoding Python knows (``gbk``, ``cp1252``, ``shift_jis``, ...) is converted to a UTF-8
copy in a cache folder first (``$PORTRAIT_CACHE_DIR``, by default ``~/.cache/portrait``), once per
version of the file; bytes that do not decode are kept as they are, so their lines are
quarantined, not changed.

Views built on a connection, per table ``t``:

- ``raw_t``: the source with contract column names, values untouched (CSV lines that cannot be
  read are left out and kept in the connection's rejects tables, see :mod:`portrait.validate`);
- ``cleaned_t``: ``raw_t`` plus the trimmed text of text timestamps, parsed from there;
- ``checked_t``: the parsed values plus ``_reject_reason`` (NULL for a good row);
- ``t``: good rows, typed, exact duplicates removed, customer ids unified through
  ``identities``. This is the only view features may read.

Raw files are never modified.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import functools
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tomllib
import zlib
import zoneinfo
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pandas as pd

from portrait import connections, contract
from portrait.csv_dialect import QuotedDialect, guessed_delimiter, missed_quoting
from portrait.errors import ConfigError, ContractError, PortraitError, first_line
from portrait.files import atomic_target, open_bytes
from portrait.forget import tombstone_files
from portrait.privacy import (
    BIRTH_YEAR,
    GUARDED_TABLES,
    PrivacySettings,
    birth_year_sources,
    birth_years_sql,
    is_pii_name,
    personal_value_checks,
    refuse_values_as_names,
    report_personal_values,
    value_checked,
    withheld_columns,
)
from portrait.sql import quote_ident, quote_literal
from portrait.views import register_views

log = logging.getLogger(__name__)

CONFIG_FILE = "portrait.toml"


def encoding_hint(table: str, encoding: str = "cp1252") -> str:
    """How to name a table's encoding in portrait.toml, in either place a user's file may take
    it (a dotted key after a ``[tables.T]`` section declares it twice: invalid TOML). cp1252 by
    default: Windows exports in Western languages are written in it, and unlike latin-1, which
    reads any bytes (a cp1252 dash as a control character), it refuses bytes it has no letter
    for; ``encoding`` where the file's own is known better (cp932 for a file named Shift-JIS)."""
    return (
        f"Name the file's encoding in {CONFIG_FILE}: in its [tables.{table}] section, when it has one,\n"
        f'  encoding = "{encoding}"\n'
        f"or else before any section,\n"
        f'  tables.{table}.encoding = "{encoding}"\n'
        f'(or "latin-1", "gbk", "shift_jis", ...; or a list tried in order per file: ["utf-8", "{encoding}"])'
    )


DEFAULT_TIMEZONE = "UTC"
_TABLE_CONFIG_KEYS = {"file", "columns", "timestamp_format", "delimiter", "decimal", "encoding"}
_TOP_CONFIG_KEYS = {"tables", "name", "timezone", "privacy"}
# Python's codec name -> the name DuckDB's CSV reader knows; other encodings are converted first.
_DUCKDB_ENCODINGS = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "iso8859-1": "latin-1", "utf-16": "utf-16"}
_SHOWN_ENCODING = {"utf-8-sig": "utf-8", "iso8859-1": "latin-1"}
_CHUNK = 1 << 24


# The longest CSV line read (DuckDB's default is 2 MB, which a long free-text field can pass; 16 MB
# cost about 0.05 s and 30 MB on a 184 MB file against the default, 64 MB 0.15 s, measured);
# a longer line is quarantined as malformed (among the lines DuckDB samples first, it stops the read).
MAX_CSV_LINE_BYTES = 16 << 20


@dataclass(frozen=True)
class CsvFile:
    """One CSV file of a table and how it is decoded."""

    path: Path  # the file in the data set
    encoding: str  # the encoding it is in (shown in the report)
    how: str  # why that encoding: "default", "configured", "byte-order mark", "first that decodes"
    read_path: Path | None = None  # a UTF-8 copy DuckDB reads instead, for encodings it lacks
    quoting: QuotedDialect | None = None  # the dialect it is read with when the sniffer missed its quotes

    @property
    def duckdb_encoding(self) -> str:
        return "utf-8" if self.read_path is not None else _DUCKDB_ENCODINGS[codecs.lookup(self.encoding).name]

    @property
    def scanned_path(self) -> Path:
        return self.read_path or self.path


@dataclass(frozen=True)
class TableSource:
    """Where one table's rows come from."""

    table: str
    files: tuple[Path, ...] = ()
    frame: pd.DataFrame | None = None
    duckdb_file: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)  # contract name -> source name
    timestamp_format: str | None = None
    delimiter: str | None = None
    decimal: str = "."  # the decimal separator of numbers written as text (CSV)
    encodings: tuple[str, ...] = ()  # configured, in the order to try; empty: UTF-8
    csv_files: tuple[CsvFile, ...] = ()  # resolved by open_dataset; empty: UTF-8 for every file
    # Customers and identities: the privacy settings whose withheld columns are left out of
    # every scan (None: the table is read whole).
    guard: PrivacySettings | None = None
    # The data set's folder as given: key=value folders above it are not the table's partitions
    # (a daily export folder, /exports/date=2024-06-01/shop/), only those below it.
    root: Path | None = None

    @property
    def is_csv(self) -> bool:
        return bool(self.files) and not self.files[0].name.endswith(".parquet")

    def describe(self) -> str:
        if self.frame is not None:
            return f"in-memory frame ({len(self.frame)} rows)"
        if self.duckdb_file is not None:
            return f"{self.duckdb_file}:{self.table}"
        if not self.files:  # read by another engine from its own path or catalog table
            return f"the {self.table} table"
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{self.parts_root()} ({len(self.files)} files)"

    def parts_root(self) -> Path:
        """The folder holding every file of this source (their common folder)."""
        return Path(os.path.commonpath([str(f.parent) for f in self.files]))

    def part_name(self, path: str | Path) -> str:
        """A file of this source as the user finds it: its path under :meth:`parts_root` (every
        part of a Spark or partitioned export may be named ``data.parquet``)."""
        try:
            return str(Path(path).relative_to(self.parts_root()))
        except ValueError:
            return str(path)

    def resolved_csv_files(self) -> tuple[CsvFile, ...]:
        if self.csv_files:
            return self.csv_files
        return tuple(CsvFile(path, "utf-8", "default") for path in self.files)

    def check_header_decodes(self) -> None:
        """Raise :class:`ContractError` when a CSV file's header line is not in the encoding it
        is read in: the reader would skip it, like any line that does not decode, and take the
        next line that does for the header, so a customer's values would pass for column names
        (and be shown as such). The line's bytes are not shown: they may be a customer's."""
        if not self.is_csv:
            return
        for csv_file in self.resolved_csv_files():
            if csv_file.duckdb_encoding != "utf-8" or not csv_file.scanned_path.is_file():
                continue  # latin-1 decodes any bytes; UTF-16 lines do not end at a newline byte
            try:
                _first_line(csv_file.scanned_path).decode("utf-8")
            except UnicodeDecodeError:
                shown = _SHOWN_ENCODING.get(codecs.lookup(csv_file.encoding).name, csv_file.encoding)
                raise ContractError(
                    f"{csv_file.path}: its header line (line 1) is not {shown.upper()}, so its column names "
                    f"cannot be read. {encoding_hint(self.table)}",
                    table=self.table,
                ) from None

    def encoding_note(self) -> str | None:
        """Which encoding each CSV file was read in, and why; None for other sources."""
        if not self.is_csv:
            return None
        described = {f"{f.encoding} ({f.how})" for f in self.resolved_csv_files()}
        if len(described) == 1:
            return described.pop()
        return "; ".join(f"{f.path.name}: {f.encoding} ({f.how})" for f in self.resolved_csv_files())

    def csv_delimiter(self, csv_file: CsvFile) -> str:
        """The delimiter ``csv_file`` is split on, as far as the product knows it: its quoting's,
        the configured one, else its header's most frequent of , ; tab | (what DuckDB sniffs)."""
        if csv_file.quoting is not None:
            return csv_file.quoting.delimiter
        line = _first_line(csv_file.scanned_path).decode(csv_file.duckdb_encoding, errors="replace")
        return self.delimiter or guessed_delimiter(line)

    def rejects_tables(self) -> tuple[str, str]:
        """The temporary tables where DuckDB stores this table's malformed CSV lines."""
        return f"_csv_rejects_{self.table}", f"_csv_reject_scans_{self.table}"

    @functools.cached_property
    def withheld(self) -> tuple[str, ...]:
        """The source's columns withheld as personal data (:mod:`portrait.privacy`), found from
        its column names (read once, without its rows)."""
        if self.guard is None:
            return ()
        refuse_values_as_names(self._column_names(), self, contract.table(self.table))
        keep = [self.columns.get(c, c) for c in contract.table(self.table).column_names]
        named = withheld_columns(self.table, self._column_names(), keep, self.guard)
        found = self._personal_by_value(value_checked(self._column_types, [*keep, *named], self.guard))
        report_personal_values(self.table, found, self.describe())
        return named + tuple(found)

    def _personal_by_value(self, columns: list[tuple[str, str]]) -> dict[str, str]:
        """Which of ``columns`` hold personal data by their values (one scan of the source)."""
        checks = personal_value_checks(columns)
        if checks is None:
            return {}
        return checks.personal(self._read_whole("SELECT " + checks.select + " FROM {scan}", "the values of")[0])

    @functools.cached_property
    def file_headers(self) -> dict[str, list[str]]:
        """Each file's column names (lower case, trimmed), by its path: each CSV file's first line
        (split on its delimiter: the configured one, else the most frequent of , ; tab |), each
        Parquet file's schema; a frame's columns under ``"frame"``. Empty for a DuckDB file and
        for paths only Spark reads (hdfs://, s3a://)."""
        if self.frame is not None:
            return {"frame": [str(c).strip().lower() for c in self.frame.columns]}
        headers: dict[str, list[str]] = {}
        if self.is_csv:
            for csv_file in self.resolved_csv_files():
                if not csv_file.scanned_path.is_file():  # a path only Spark reads (hdfs://, s3a://)
                    continue
                line = _first_line(csv_file.scanned_path).decode(csv_file.duckdb_encoding, errors="replace")
                line = line.lstrip("\ufeff")  # before the reader: a BOM before a quote kept the quotes
                delimiter = self.delimiter or guessed_delimiter(line)
                header = next(csv.reader([line], delimiter=delimiter), [])  # quoted names may hold it
                headers[str(csv_file.path)] = [n.strip().lower() for n in header]
        elif self.files:
            headers = {path: [n.lower() for n in schema.names] for path, schema in self._parquet_schemas.items()}
        return headers

    def hive_option(self) -> str:
        """The scan's hive-partitioning option (see :meth:`reads_folder_keys`): the ``key=value``
        folders read as text columns, or not read."""
        reads = self.reads_folder_keys()
        if reads is None:
            return ""
        return ", hive_partitioning = true, hive_types_autocast = false" if reads else ", hive_partitioning = false"

    def _keys_below_root(self, path: Path) -> set[str]:
        parent = Path(path).parent
        if self.root is not None:
            try:
                parent = parent.relative_to(self.root)
            except ValueError:
                pass  # a file outside the data set's folder: every folder of its path
        return {part.split("=", 1)[0].lower() for part in parent.parts if "=" in part}

    def _scanned_paths(self) -> list[Path]:
        if self.is_csv:
            return [f.scanned_path for f in self.resolved_csv_files()]
        return [Path(f) for f in self.files]

    def keys_above_root(self) -> list[str]:
        """The keys of key=value folders that DuckDB finds in the scanned paths but that are not
        this table's partitions (above the data set's folder): left out of the scan where the
        partitions are read, as Spark, reading below a base folder, never sees them."""
        if not self.reads_folder_keys():
            return []
        below = set().union(*(self._keys_below_root(f) for f in self.files))
        above = {
            part.split("=", 1)[0]
            for path in self._scanned_paths()
            for part in Path(path).parent.parts
            if "=" in part and part.split("=", 1)[0].lower() not in below
        }
        return sorted(above)

    def reads_folder_keys(self) -> bool | None:
        """Whether the folders named ``key=value`` below the data set's folder in this source's
        files' paths are read as columns (each key as text: ``store_id=007`` stays 007); None
        when no scanned path has such a folder at all. They are not read where the files hold
        such a column too (the folder's value replaced the files' own: ``channel=online`` over
        'web' and 'app'), nor where no key is a column the table reads (a contract column, or
        any for customers, whose extra columns are attributes). A table is refused when either
        reading would lose a column it reads: a key the files hold beside one they lack, or a
        key some files' folders give and others' do not (DuckDB then reads no folder at all,
        and lost the channel of every line). Folders above the data set's are never read."""
        per_file = [self._keys_below_root(f) for f in self.files]
        keys = set().union(*per_file)
        if not keys:
            anywhere = any("=" in part for path in self._scanned_paths() for part in Path(path).parent.parts)
            return False if anywhere else None
        table = contract.TABLES_BY_NAME[self.table]
        read = {c.name.lower() for c in table.columns} | {
            self.columns.get(c.name, c.name).lower() for c in table.columns
        }
        wanted = sorted(k for k in keys if table.keeps_extra_columns or k in read)
        columns = {name for names in self.file_headers.values() for name in names}
        held = sorted(keys & columns)
        if held:
            lost = [k for k in wanted if k not in held]
            if not lost:
                return False
            raise ContractError(
                f"the folders of {self.describe()} are named key=value for {', '.join(held)}, which the files also "
                f"hold as a column, and for {', '.join(lost)}, which they do not: read as columns, the folders' "
                f"{held[0]} would replace the files' own; not read, {lost[0]} would be lost. Rename those folders "
                "(not key=value), or drop the column from the files",
                table=self.table,
            )
        if not wanted:
            return False
        uneven = sorted(k for k in keys if any(k not in file_keys for file_keys in per_file))
        if uneven:
            without = next(f for f, file_keys in zip(self.files, per_file, strict=True) if uneven[0] not in file_keys)
            raise ContractError(
                f"some files of {self.describe()} lie in folders named {uneven[0]}=... and others do not "
                f"({self.part_name(without)}): folder keys are read only where every file has them, so "
                f"{wanted[0]} would be lost for every file. Put every file in such folders, or none",
                table=self.table,
            )
        # DuckDB reads every key=value folder of a path: one above the data set's folder is left
        # out of the scan (keys_above_root), but where it names a partition below or a column
        # of the files, its value would replace theirs before that.
        above = {part.split("=", 1)[0].lower() for part in (self.root.parts if self.root else ()) if "=" in part}
        clash = sorted(above & (keys | columns))
        if clash:
            raise ContractError(
                f"{self.describe()}: a folder above the data set's is named {clash[0]}=..., as "
                + ("a partition folder below it is" if clash[0] in keys else "a column of the files is")
                + ": read with the partitions, every row would take that folder's value. Rename that folder "
                "(not key=value), or move the data set",
                table=self.table,
            )
        cache = [p for p in cache_folder().parts if "=" in p]
        if cache and any(f.read_path is not None for f in self.csv_files):
            raise ContractError(
                f"{self.describe()}: files converted to UTF-8 for reading are kept under {cache_folder()}, whose "
                f"folder {cache[0]} reads as a key=value folder beside this table's {', '.join(wanted)}; set "
                "PORTRAIT_CACHE_DIR to a folder without '=' in its path",
                table=self.table,
            )
        return True

    @functools.cached_property
    def repeated_header_names(self) -> frozenset[str]:
        """Column names (lower case) that the source's header holds more than once: DuckDB
        reads the second as ``name_1``, so a contract column could silently be the wrong copy."""
        return frozenset(n for columns in self.file_headers.values() for n in columns if n and columns.count(n) > 1)

    def files_without(self, column: str) -> list[str]:
        """The files (paths) whose header lacks ``column`` (compared without case) while another
        file of the source has it: read together, their rows hold no value for it."""
        headers = self.file_headers
        lacking = [path for path, names in headers.items() if column.strip().lower() not in names]
        return lacking if len(lacking) < len(headers) else []

    @functools.cached_property
    def _parquet_schemas(self) -> dict[str, object]:
        """Each local Parquet file's schema (pyarrow's), by its path, read once; empty for
        other sources and for paths only Spark reads (hdfs://, s3a://)."""
        if self.frame is not None or self.duckdb_file is not None or self.is_csv or not self.files:
            return {}
        import pyarrow.parquet as pq

        return {str(path): pq.read_schema(path) for path in self.files if Path(path).is_file()}

    def parquet_timestamp_columns(self) -> list[str]:
        """The columns some Parquet file of this source stores as timestamps (none for others)."""
        import pyarrow as pa

        names = {
            f.name: None for schema in self._parquet_schemas.values() for f in schema if pa.types.is_timestamp(f.type)
        }
        return list(names)

    @functools.cached_property
    def parquet_int96_columns(self) -> dict[str, list[str]]:
        """Each column some Parquet file of this source stores as INT96 (a legacy timestamp),
        with those files; empty for other sources. Read once (each file's metadata again)."""
        import pyarrow.parquet as pq

        found: dict[str, list[str]] = {}
        for path in self._parquet_schemas:
            schema = pq.ParquetFile(path).schema  # the physical types (Arrow's schema shows a timestamp)
            for i in range(len(schema)):
                if schema.column(i).physical_type == "INT96":
                    found.setdefault(schema.column(i).name, []).append(path)
        return found

    def parquet_nanosecond_files(self, column: str) -> list[str]:
        """The Parquet files of this source storing ``column`` as a timestamp in nanoseconds (not
        INT96, which Arrow also shows in nanoseconds and Spark reads: its own older default)."""
        import pyarrow as pa

        int96 = {
            f for name, files in self.parquet_int96_columns.items() if name.lower() == column.lower() for f in files
        }
        return [
            path
            for path, f in self._parquet_fields(column).items()
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns" and path not in int96
        ]

    def _parquet_fields(self, column: str) -> dict[str, object]:
        """Per Parquet file (path) of this source holding ``column`` (any case), its field."""
        fields = {}
        for path, schema in self._parquet_schemas.items():
            field = next((f for f in schema if f.name.lower() == column.lower()), None)
            if field is not None:
                fields[path] = field
        return fields

    def parquet_zones(self, column: str) -> dict[str, str | None]:
        """Per Parquet file (path) of this source holding ``column`` as a timestamp or a date,
        its time zone (None for times stored without one, and for dates); empty for other
        sources."""
        import pyarrow as pa

        zones: dict[str, str | None] = {}
        for path, stored in self._parquet_fields(column).items():
            if pa.types.is_timestamp(stored.type):
                zones[path] = stored.type.tz
            elif pa.types.is_date(stored.type):
                zones[path] = None
        return zones

    def parquet_types(self, column: str) -> dict[str, str]:
        """Per Parquet file (path) of this source holding ``column``, its type as DuckDB names it
        read alone (the checks' names: BOOLEAN, DOUBLE, VARCHAR, ...); empty for other sources.
        Read together, DuckDB merges the files' types (float and text ids into text, a boolean
        and a double amount into a double): each file is checked as itself."""
        return {path: _duckdb_type_name(stored.type) for path, stored in self._parquet_fields(column).items()}

    @functools.cached_property
    def private_lines(self) -> bool:
        """Whether a line of this source may hold personal data, so that its text is never shown
        or stored (a malformed line's quarantine, an encoding error's example): it has withheld
        columns, or a column named like personal data in any table (a purchases export with a
        ``customer_email``), or it is ``customers`` or ``identities`` (a malformed line's fields
        are not where the header says, so no column check can clear its text)."""
        if self.withheld or self.table in GUARDED_TABLES:
            return True
        return any(is_pii_name(name) for name in self._column_names())

    def _column_names(self) -> list[str]:
        return [name for name, _ in self._column_types]

    def columns_for_privacy(self) -> list[str]:
        """The columns ``[privacy]`` settings may name: the source's as written (withheld ones
        included), and :data:`~portrait.privacy.BIRTH_YEAR` where a date of birth's year is read."""
        return self._column_names() + ([BIRTH_YEAR] if self.birth_year_from else [])

    @functools.cached_property
    def _column_types(self) -> list[tuple[str, str]]:
        """The source's (column name, DuckDB type) pairs, read once without its rows."""
        self.check_header_decodes()
        rows = self._read_whole("DESCRIBE SELECT * FROM {scan}", "the column names of")
        return [(str(row[0]), str(row[1])) for row in rows]

    def _read_whole(self, query: str, what: str) -> list[tuple]:
        """The rows of ``query`` (``{scan}`` standing for the whole source, withheld columns
        included) on a connection of its own; an unreadable source is a :class:`ContractError`
        saying ``what`` could not be read."""
        con = None
        try:
            con = self.connection("_frame")
            # replace, not format: the value checks' regular expressions hold braces ({2,})
            scan = self._scan_sql("_frame", keep_rejects=self.is_csv)
            return con.execute(query.replace("{scan}", scan)).fetchall()
        except duckdb.Error as exc:
            raise ContractError(f"cannot read {what} {self.describe()}: {first_line(exc)}", table=self.table) from exc
        finally:
            if con is not None:
                con.close()

    def connection(self, frame_view: str) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection of its own on which :meth:`scan_sql` (given ``frame_view``) reads
        this source: its frame registered under that name, its DuckDB file attached."""
        con = connections.connect()
        try:
            if self.frame is not None:
                con.register(frame_view, self.frame)
            if self.duckdb_file is not None:
                con.execute(f"ATTACH {quote_literal(str(self.duckdb_file))} AS source_db (READ_ONLY)")
        except BaseException:
            con.close()
            raise
        return con

    def scan_sql(self, frame_view: str, keep_rejects: bool = False, timezone: str = DEFAULT_TIMEZONE) -> str:
        """SQL reading the source, less its :attr:`withheld` columns. ``keep_rejects`` (CSV):
        malformed lines (a wrong number of fields, bytes not in the encoding) are skipped and
        stored in :meth:`rejects_tables` instead of failing the whole read; without it such a
        line is an error."""
        scan = self._scan_sql(frame_view, keep_rejects)
        withheld = {c.lower() for c in self.withheld}
        left_out = [*self.withheld, *(k for k in self.keys_above_root() if k.lower() not in withheld)]
        if not left_out:
            return scan
        born = self.birth_year_from
        derived = ""
        if born:  # its year only (timezone: the data set's, where a time stored with a zone is read)
            types = dict(self._column_types)
            year = birth_years_sql([(quote_ident(c), types[c]) for c in born], timezone, as_text=self.is_csv)
            derived = f", {year} AS {BIRTH_YEAR}"
        return f"(SELECT * EXCLUDE ({', '.join(quote_ident(c) for c in left_out)}){derived} FROM {scan})"

    @functools.cached_property
    def birth_year_from(self) -> tuple[str, ...]:
        """The withheld dates of birth whose year this table keeps (:func:`portrait.privacy.birth_year_sources`)."""
        if self.guard is None:
            return ()
        return birth_year_sources(self.table, self._column_names(), self.withheld, self.guard)

    def _scan_sql(self, frame_view: str, keep_rejects: bool = False) -> str:
        if self.frame is not None:
            return quote_ident(frame_view)
        if self.duckdb_file is not None:
            return f"source_db.{quote_ident(self.table)}"
        if not self.is_csv:
            paths = "[" + ", ".join(quote_literal(str(p)) for p in self.files) + "]"
            return f"read_parquet({paths}, union_by_name = true{self.hive_option()})"
        files = self.resolved_csv_files()
        options = f"max_line_size = {MAX_CSV_LINE_BYTES}{self.hive_option()}"
        if keep_rejects:
            errors, scans = self.rejects_tables()
            # DuckDB keeps rejects only without union_by_name: files with one header and one
            # encoding are read together, others one by one and stacked by column name.
            options += f", store_rejects = true, rejects_table = '{errors}', rejects_scan = '{scans}'"
            groups = _same_layout_groups(files)
        else:
            options += ", union_by_name = true"
            groups = [list(group) for group in _by_encoding(files)]
        scans = []
        for group in groups:
            paths = "[" + ", ".join(quote_literal(str(f.scanned_path)) for f in group) + "]"
            encoding, quoting = group[0].duckdb_encoding, group[0].quoting
            if quoting is not None:
                dialect = f"{quoting.read_options()}, {options}"
            else:
                dialect = f"header = true, all_varchar = true, {options}"
                if self.delimiter:
                    dialect += f", delim = {quote_literal(self.delimiter)}"
            extra = f", encoding = {quote_literal(encoding)}" if encoding != "utf-8" else ""
            scans.append(f"read_csv({paths}, {dialect}{extra})")
        if len(scans) == 1:
            return scans[0]
        return "(" + " UNION ALL BY NAME ".join(f"SELECT * FROM {scan}" for scan in scans) + ")"


def _by_encoding(files: tuple[CsvFile, ...]) -> list[list[CsvFile]]:
    """Files read by one ``read_csv`` call stacking them by column name: the same encoding and
    quoting."""
    groups: dict[tuple[str, QuotedDialect | None], list[CsvFile]] = {}
    for f in files:
        groups.setdefault((f.duckdb_encoding, f.quoting), []).append(f)
    return list(groups.values())


def _same_layout_groups(files: tuple[CsvFile, ...]) -> list[list[CsvFile]]:
    """Files that can be read by one ``read_csv`` call: the same encoding, header line and quoting."""
    groups: dict[tuple[str, bytes, QuotedDialect | None], list[CsvFile]] = {}
    for f in files:
        groups.setdefault((f.duckdb_encoding, _first_line(f.scanned_path), f.quoting), []).append(f)
    return list(groups.values())


def _first_line(path: Path) -> bytes:
    """The file's first line, without its end: a line ends at a line feed or, in a file whose
    lines end with a carriage return alone (Excel for Mac's "CSV (Macintosh)"), at that; the
    whole file read as one line was a traceback from the header's reader. (Not in UTF-16 text,
    where a character's byte can be a carriage return's: "č" is 0D 01.)"""
    try:
        with open_bytes(path) as handle:
            line = handle.readline(1 << 20)
    except (OSError, EOFError, zlib.error):  # the reader says what is wrong with the file
        return b""
    return (line if b"\x00" in line else line.split(b"\r", 1)[0]).rstrip(b"\r\n")


@dataclass(frozen=True)
class Dataset:
    """A set of contract tables. Build with :func:`open_dataset` or :meth:`from_frames`."""

    name: str
    sources: dict[str, TableSource]
    root: Path | None = None
    timezone: str = DEFAULT_TIMEZONE  # timestamps are converted to and stored in this zone
    privacy: PrivacySettings = field(default_factory=PrivacySettings)  # the [privacy] settings

    @classmethod
    def from_frames(
        cls,
        name: str = "frames",
        timezone: str = DEFAULT_TIMEZONE,
        privacy: PrivacySettings | None = None,
        **frames: pd.DataFrame | None,
    ) -> Dataset:
        privacy = privacy or PrivacySettings()
        sources = {}
        for table_name, frame in frames.items():
            contract.table(table_name)
            if frame is not None:
                sources[table_name] = TableSource(table=table_name, frame=frame, guard=_guard(table_name, privacy))
        return cls(name=name, sources=sources, timezone=_checked_timezone(timezone, "from_frames"), privacy=privacy)

    def has(self, table_name: str) -> bool:
        return table_name in self.sources

    def fingerprint(self) -> str:
        """A short hash of the files' names, sizes and modification times (or frame contents),
        and of the folder's ``portrait.toml``: its mapping and ``[privacy]`` settings change what
        the data set holds (a column named in ``pii_columns`` since is no longer read), so
        outputs stored before it changed are of another version."""
        digest = hashlib.sha256()
        config = self.root / CONFIG_FILE if self.root is not None and self.root.is_dir() else None
        if config is not None and config.is_file():
            # its settings, not its text: a comment or a blank line changes no version
            try:
                settings = json.dumps(tomllib.loads(config.read_text(encoding="utf-8")), sort_keys=True, default=str)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError):
                settings = config.read_bytes().hex()
            digest.update(b"config:" + settings.encode())
        for table_name in sorted(self.sources):
            source = self.sources[table_name]
            digest.update(table_name.encode())
            if source.frame is not None:
                digest.update(pd.util.hash_pandas_object(source.frame, index=False).values)
            for path in source.files or ((source.duckdb_file,) if source.duckdb_file else ()):
                stat = path.stat()
                digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        for path in tombstone_files(self):  # forgetting someone changes what the data set holds
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def connect(self, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection with the raw, checked and clean views of every table."""
        con = connections.connect()
        try:
            if memory_limit:
                con.execute(f"SET memory_limit = {quote_literal(memory_limit)}")
            con.execute("SET preserve_insertion_order = false")
            register_views(con, self)
        except BaseException:
            # closed, not left to the failure's traceback, which holds it open until reported
            # (a stop's interrupts went on for it: 3 s more to every refresh stopped here)
            con.close()
            raise
        return con


def _check_import_finished(path: Path) -> None:
    """Refuse a folder whose ``portrait import`` stopped before its last table (its record says
    so): some of its tables may be the new import's, others an older one's or missing."""
    try:
        record = json.loads((path / contract.PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # none (a data set written otherwise), or not the import's
    if isinstance(record, dict) and record.get("complete") is False:
        raise ContractError(
            f"data set {path}: an import into it ({record.get('adapter', 'portrait import')}) did not finish, so "
            f"its tables may be of two imports or missing ({contract.PROVENANCE_FILE}); run the import again"
        )


def open_dataset(path: str | Path) -> Dataset:
    """Find the contract's tables in a folder or a DuckDB file; raise if purchases is missing."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"data set {path} does not exist")
    if path.is_file():
        return _open_duckdb_file(path)
    _check_import_finished(path)
    config, timezone, privacy = _read_config(path)
    sources: dict[str, TableSource] = {}
    for table in contract.TABLES:
        table_config = config.get(table.name, {})
        files = _find_files(path, table.name, table_config.get("file"))
        if files:
            encodings = tuple(table_config.get("encoding", ()))
            is_csv = not files[0].name.endswith(".parquet")
            sources[table.name] = TableSource(
                table=table.name,
                files=files,
                columns=dict(table_config.get("columns", {})),
                timestamp_format=table_config.get("timestamp_format"),
                delimiter=table_config.get("delimiter"),
                decimal=table_config.get("decimal", "."),
                encodings=encodings,
                csv_files=tuple(
                    _quoting_checked(_csv_file(f, encodings, table.name), table_config.get("delimiter")) for f in files
                )
                if is_csv
                else (),
                guard=_guard(table.name, privacy),
                root=path,
            )
        elif table.required:
            raise ContractError(
                f"required table {table.name!r} not found in {path}: expected "
                f"{table.name}.parquet, {table.name}.csv or a folder {table.name}/ of parts"
                + (f" (or the file named in {CONFIG_FILE})" if table_config else ""),
                table=table.name,
            )
    return Dataset(name=path.resolve().name, sources=sources, root=path, timezone=timezone, privacy=privacy)


def _guard(table_name: str, privacy: PrivacySettings) -> PrivacySettings | None:
    return privacy if table_name in GUARDED_TABLES else None


def dataset_timezone(folder: str | Path) -> str:
    """The time zone a data set folder's times are in (its ``portrait.toml``), without opening
    its tables."""
    return _read_config(Path(folder))[1]


def today_in_zone_of(data: str | Path) -> dt.date:
    """Today in the data set's time zone (its ``timezone``, UTC by default), where its times
    are: a server on UTC running at 01:00 in Tokyo is still on yesterday, and a refresh as of
    yesterday would leave the day just ended out; at 22:00 in New York it is already on
    tomorrow, and the run would take a day not yet over (a manual tag's expiry "in the future"
    too). A folder without readable settings (refused later with its own message) counts in UTC."""
    try:
        zone = dataset_timezone(data)
    except (PortraitError, OSError):
        zone = DEFAULT_TIMEZONE
    return dt.datetime.now(zoneinfo.ZoneInfo(zone)).date()


def _read_config(folder: Path) -> tuple[dict[str, dict], str, PrivacySettings]:
    """The ``[tables.*]`` settings (``encoding`` as a tuple of codec names), the time zone and
    the ``[privacy]`` settings."""
    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        return {}, DEFAULT_TIMEZONE, PrivacySettings()
    try:
        raw = tomllib.loads(config_path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    unknown_top = set(raw) - _TOP_CONFIG_KEYS
    if unknown_top:
        raise ConfigError(
            f'{config_path}: unknown keys {sorted(unknown_top)}; expected [tables.*], [privacy] or timezone = "..."'
        )
    timezone = _checked_timezone(raw.get("timezone", DEFAULT_TIMEZONE), str(config_path))
    privacy = PrivacySettings.from_config(raw.get("privacy", {}), config_path, folder)
    tables = raw.get("tables", {})
    for table_name, table_config in tables.items():
        if table_name not in contract.TABLES_BY_NAME:
            raise ConfigError(
                f"{config_path}: unknown table {table_name!r}; the contract has {sorted(contract.TABLES_BY_NAME)}"
            )
        unknown = set(table_config) - _TABLE_CONFIG_KEYS
        if unknown:
            raise ConfigError(
                f"{config_path}: [tables.{table_name}] has unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(_TABLE_CONFIG_KEYS)}"
            )
        _check_table_settings(table_config, config_path, table_name)
        known_columns = set(contract.table(table_name).column_names)
        for contract_name in table_config.get("columns", {}):
            if contract_name not in known_columns:
                raise ConfigError(
                    f"{config_path}: [tables.{table_name}.columns] renames {contract_name!r}, "
                    f"which is not a contract column of {table_name}: {sorted(known_columns)}"
                )
        if "encoding" in table_config:
            table_config["encoding"] = _checked_encodings(table_config["encoding"], config_path, table_name)
    return tables, timezone, privacy


def _check_table_settings(table_config: dict, config_path: Path, table_name: str) -> None:
    """Each ``[tables.NAME]`` value of the type it must have (a wrong one was a traceback)."""
    where = f"{config_path}: [tables.{table_name}]"
    delimiter = table_config.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n'):
        raise ConfigError(f'{where} delimiter must be one character such as ";" or "\\t", got {delimiter!r}')
    file = table_config.get("file")
    if file is not None:
        if not isinstance(file, str) or not file.strip():
            raise ConfigError(f'{where} file must be a file name or pattern in the folder ("sales.csv"), got {file!r}')
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise ConfigError(
                f"{where} file {file!r} must be inside the data set folder (a name or a pattern relative to it; "
                "put or link the file there)"
            )
    decimal = table_config.get("decimal", ".")
    if decimal not in (".", ","):
        raise ConfigError(f'{where} decimal must be "." or ",", got {decimal!r}')
    if decimal == table_config.get("delimiter"):
        raise ConfigError(f"{where} decimal and delimiter are both {decimal!r}: a line could not be split")
    if "timestamp_format" in table_config and not isinstance(table_config["timestamp_format"], str):
        raise ConfigError(f"{where} timestamp_format must be text, got {table_config['timestamp_format']!r}")
    columns = table_config.get("columns", {})
    if not isinstance(columns, dict) or not all(isinstance(v, str) and v for v in columns.values()):
        raise ConfigError(
            f'{where}.columns must map contract names to the export\'s column names (order_id = "InvoiceNo"), '
            f"got {columns!r}"
        )


def _checked_timezone(name: object, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{where}: timezone must be a zone name such as "UTC" or "Europe/Paris"')
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f'{where}: unknown timezone {name!r}; use an IANA zone name such as "UTC" or "Europe/Paris"'
        ) from exc
    return name


def _checked_encodings(value: object, config_path: Path, table_name: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f'{config_path}: [tables.{table_name}] encoding must be a name ("latin-1") or a list of '
            f'names to try in order (["utf-8", "latin-1"]); got {value!r}'
        )
    checked = []
    for name in names:
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            raise ConfigError(
                f"{config_path}: [tables.{table_name}] encoding {name!r} is not an encoding Python knows "
                "(e.g. utf-8, latin-1, cp1252, gbk, shift_jis, utf-16)"
            ) from None
        if codec not in checked:
            checked.append(codec)
    single_byte_anything = {"iso8859-1"}
    for codec in checked[:-1]:
        if codec in single_byte_anything:
            raise ConfigError(
                f"{config_path}: [tables.{table_name}] encoding lists {codec!r} before {checked[-1]!r}, "
                "but latin-1 decodes any bytes, so nothing after it would ever be tried; put it last"
            )
    return tuple(checked)


def _csv_file(path: Path, encodings: tuple[str, ...], table_name: str) -> CsvFile:
    """How to decode one CSV file: see the module docstring. A compressed file cut short or
    damaged is a :class:`ContractError` naming it (it was a zlib traceback)."""
    try:
        return _decoded_csv_file(path, encodings, table_name)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ContractError(
            f"{path} cannot be read: {exc} (a compressed file cut short or damaged? export or copy it again)",
            table=table_name,
        ) from None


def _decoded_csv_file(path: Path, encodings: tuple[str, ...], table_name: str) -> CsvFile:
    if not encodings:
        with open_bytes(path) as handle:
            start = handle.read(2)
        if start == b"\xff\xfe":
            return CsvFile(path, "utf-16", "byte-order mark")
        if start == b"\xfe\xff":  # big-endian: DuckDB's UTF-16 reader reads little-endian only
            return CsvFile(
                path,
                "utf-16",
                "byte-order mark; converted to UTF-8 for reading",
                _converted_copy(path, "utf-16", table_name),
            )
        return CsvFile(path, "utf-8", "default")
    if len(encodings) == 1:
        chosen, how = encodings[0], "configured"
    else:
        failures = []
        for codec in encodings:
            problem = _decode_problem(path, codec)
            if problem is None:
                chosen, how = codec, f"first of {list(map(_shown, encodings))} that decodes the whole file"
                break
            failures.append(f"not {_shown(codec)} ({problem})")
        else:
            raise ContractError(
                f"{path} decodes in none of the configured encodings: {'; '.join(failures)}. Give the one "
                f'it is in alone (encoding = "..." under [tables.{table_name}] in {CONFIG_FILE}): a few '
                "lines that do not decode in it are then quarantined (many stop the read, naming them)",
                table=table_name,
            )
    big_endian = codecs.lookup(chosen).name == "utf-16" and _starts_with(path, b"\xfe\xff")
    if chosen in _DUCKDB_ENCODINGS and not big_endian:  # DuckDB's UTF-16 reader reads little-endian only
        return CsvFile(path, _shown(chosen), how)
    return CsvFile(
        path, _shown(chosen), how + "; converted to UTF-8 for reading", _converted_copy(path, chosen, table_name)
    )


def _quoting_checked(csv_file: CsvFile, delimiter: str | None) -> CsvFile:
    """``csv_file`` with the quoting to read it with when DuckDB's sniffer would miss it
    (:mod:`portrait.csv_dialect`)."""
    quoting = missed_quoting(csv_file.scanned_path, csv_file.duckdb_encoding, delimiter, cache_folder())
    return csv_file if quoting is None else replace(csv_file, quoting=quoting)


def _shown(codec: str) -> str:
    return _SHOWN_ENCODING.get(codec, codec)


# Bytes latin-1 decodes as control characters, which no text file holds, and Windows' cp1252
# uses for the euro sign, dashes and quotes: DuckDB's latin-1 reader refuses them.
_C1_BYTES = re.compile(rb"[\x80-\x9f]")


def _decode_problem(path: Path, codec: str) -> str | None:
    """None if the whole file decodes in ``codec``, else where it first fails (streamed in chunks).
    In latin-1 (which decodes any bytes) bytes 0x80-0x9F fail: see :data:`_C1_BYTES`."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    c1 = codecs.lookup(codec).name == "iso8859-1"
    line, offset = 1, 0
    with open_bytes(path) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            found = _C1_BYTES.search(chunk) if c1 else None
            if found is not None:
                line += chunk[: found.start()].count(b"\n")
                return (
                    f"byte {found.group()!r} at line {line:,}, byte {offset + found.start():,}: a control character "
                    "in latin-1, the euro sign, a dash or a quote in Windows' cp1252"
                )
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # The failing position is counted from the bytes this call was given (plus any
                # the decoder still held from the previous chunk, at most a few).
                held = max(0, len(exc.object) - len(chunk))
                position = max(0, exc.start - held)
                line += chunk[:position].count(b"\n")
                bad = exc.object[exc.start : exc.end]
                return f"byte {bad!r} at line {line:,}, byte {offset + position:,}"
            if not chunk:
                return None
            line += chunk.count(b"\n")
            offset += len(chunk)


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open_bytes(path) as handle:
        return handle.read(len(prefix)) == prefix


def cache_folder() -> Path:
    return Path(os.environ.get("PORTRAIT_CACHE_DIR") or Path.home() / ".cache" / "portrait")


def _converted_copy(path: Path, codec: str, table: str | None = None) -> Path:
    """A UTF-8 copy of a CSV file in ``codec`` (an encoding DuckDB cannot read), made once per
    version of the file. Bytes that do not decode are kept as they are (``surrogateescape``):
    they are not valid UTF-8, so DuckDB rejects their lines and validation quarantines them."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{codec}".encode()).hexdigest()[:16]
    folder = cache_folder() / "converted"
    version = f"{key}-{stat.st_size}-{stat.st_mtime_ns}"
    # A file under key=value folders (purchases/channel=web/) is copied under the same folders:
    # DuckDB reads such keys as columns only when every file of a scan has them, so a copy
    # without them lost the column for the copy and for the files read beside it.
    hive = [part for part in path.parent.parts if "=" in part]
    target = folder.joinpath(version, *hive, "data.csv") if hive else folder / f"{version}.csv"
    if target.exists():
        return target
    for older in folder.glob(f"{key}-*"):  # earlier versions of the same file (or a copy left unfinished)
        if older.is_dir():
            shutil.rmtree(older, ignore_errors=True)
        else:
            older.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    decoder = codecs.getincrementaldecoder(codec)(errors="surrogateescape")
    try:
        with atomic_target(target) as tmp, open_bytes(path) as source, open(tmp, "wb") as copy:
            while chunk := source.read(_CHUNK):
                copy.write(decoder.decode(chunk).encode("utf-8", "surrogateescape"))
            copy.write(decoder.decode(b"", final=True).encode("utf-8", "surrogateescape"))
    except UnicodeError as exc:  # UTF-16 cannot keep a stray byte as it is (an odd last byte, a lone surrogate)
        raise ContractError(
            f"{path} is not {_shown(codec)} throughout: {_decode_problem(path, codec) or exc.reason}; "
            "export it again (or as UTF-8)",
            table=table,
        ) from None
    return target


def _duckdb_type_name(arrow_type) -> str:
    """DuckDB's name for a Parquet column's Arrow type, as far as the contract's checks tell them
    apart (:func:`portrait.views.type_problem`)."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if getattr(arrow_type, "extension_name", None) == "arrow.uuid":
        return "UUID"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return f"{_duckdb_type_name(arrow_type.value_type)}[]"
    if pa.types.is_struct(arrow_type) or pa.types.is_map(arrow_type):
        return "STRUCT" if pa.types.is_struct(arrow_type) else "MAP"
    if pa.types.is_duration(arrow_type):
        return "INTERVAL"
    checks = (
        (pa.types.is_boolean, "BOOLEAN"),
        (pa.types.is_floating, "DOUBLE"),
        (pa.types.is_signed_integer, "BIGINT"),
        (pa.types.is_unsigned_integer, "UBIGINT"),
        (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t), "VARCHAR"),
        (pa.types.is_date, "DATE"),
        (lambda t: pa.types.is_timestamp(t) and t.tz is not None, "TIMESTAMP WITH TIME ZONE"),
        (pa.types.is_timestamp, "TIMESTAMP"),
        (pa.types.is_null, '"NULL"'),
        (pa.types.is_time, "TIME"),
        (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t), "BLOB"),
    )
    return next((name for test, name in checks if test(arrow_type)), str(arrow_type).upper())


def _until_wildcard(parts: tuple[str, ...]) -> list[str]:
    """The folders of a glob pattern before its first part holding a wildcard."""
    literal = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        literal.append(part)
    return literal


def _not_a_part(relative: Path) -> bool:
    """A file in a table's folder that is no part of it: hidden (``.x.csv``; a macOS copy
    ``._x.csv``), an office program's lock file (``~$x.csv``), or anything under a hidden folder,
    ``__MACOSX`` or a folder or file whose name starts with ``_`` (a Spark job's ``_temporary/``
    attempts, which a failed job leaves: they were read as rows); Spark and Hadoop skip the same
    (their hidden-path rule: a name starting with ``.`` or ``_``)."""
    return any(part.startswith((".", "~$", "_")) for part in relative.parts)


# A folder holding one of these is a table format's, not a folder of parts: its Parquet files
# include versions its log has replaced or deleted (a Delta UPDATE doubled every customer's spend,
# a DELETE for an erasure would bring the rows back).
_TABLE_FORMATS = (("_delta_log", "a Delta table"), (".hoodie", "a Hudi table"), ("metadata", "an Iceberg table"))


def _refuse_table_format(part_folder: Path, table_name: str) -> None:
    for marker, kind in _TABLE_FORMATS:
        found = part_folder / marker
        if found.is_dir() and (marker != "metadata" or any(found.glob("*.metadata.json"))):
            raise ContractError(
                f"{part_folder} is {kind} ({marker}/): its Parquet files hold rows its log has since replaced "
                "or deleted, so they are not read as parts; export the table's current version as Parquet "
                "(Spark: spark.read.format(...).load(path).write.parquet(folder)) and read that",
                table=table_name,
            )


def _refuse_broken_links(paths, table_name: str) -> None:
    """A table's file or part folder that is a symbolic link to nothing (a share not mounted, a
    target moved): its rows cannot be read, and skipping it read as a table without them (an
    events table gone, a part file fewer, exit 0)."""
    for path in paths:
        if path.is_symlink() and not path.exists():
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise ContractError(
                f"{path} is a link to {target}, which does not exist or cannot be reached (a share not mounted?): "
                "its rows cannot be read; fix the link or remove it",
                table=table_name,
            )


def _find_files(folder: Path, table_name: str, configured: str | None) -> tuple[Path, ...]:
    if configured:
        found = sorted(folder.glob(configured))
        # a glob over a folder of parts reads what a folder does: not a failed job's _temporary/;
        # the folders the pattern names as written (a "_landing/" of the user's) are theirs to name
        literal = folder.joinpath(*_until_wildcard(Path(configured).parts))
        matches = [
            p for p in found if not _not_a_part(p.relative_to(literal) if literal in p.parents else Path(p.name))
        ]
        _refuse_broken_links(matches, table_name)  # not hidden ones (an editor's lock file is a link to nothing)
        if not matches:
            raise ContractError(
                f"{CONFIG_FILE} names file {configured!r} but nothing matches it in {folder}"
                if not found
                else f"{CONFIG_FILE} names file {configured!r}: the {len(found)} file(s) it matches in {folder} are "
                "hidden or under a _-named folder (a failed Spark job's _temporary/), not parts",
                table=table_name,
            )
        for root in {m.parent for m in matches}:  # a Delta (Hudi, Iceberg) table the glob reads into
            for candidate in (root, *root.parents):
                _refuse_table_format(candidate, table_name)
                if candidate == folder or folder not in candidate.parents:
                    break
        return _one_format(tuple(matches), table_name)
    _refuse_broken_links(
        [folder / table_name, *(folder / f"{table_name}{suffix}" for suffix in contract.TABLE_SUFFIXES)], table_name
    )
    for suffix in contract.TABLE_SUFFIXES:
        if (folder / f"{table_name}{suffix}").is_dir():
            raise ContractError(
                f"{folder / f'{table_name}{suffix}'} is a folder, not a file: a table split into part files goes "
                f"in a folder named {table_name}/",
                table=table_name,
            )
    # Every form the table may take: reading one of two and leaving the other unread would
    # silently drop its rows.
    found = [
        folder / f"{table_name}{suffix}"
        for suffix in contract.TABLE_SUFFIXES
        if (folder / f"{table_name}{suffix}").is_file()
    ]
    part_folder = folder / table_name
    parts = ()
    if part_folder.is_dir():
        _refuse_table_format(part_folder, table_name)
        entries = list(part_folder.rglob("*"))  # walked once (a folder of thousands of parts)
        # any link to nothing that is not hidden: a part file, or a key=value folder of parts
        _refuse_broken_links((p for p in entries if not _not_a_part(p.relative_to(part_folder))), table_name)
        candidates = sorted(p for p in entries if p.is_file() and p.name.endswith(contract.TABLE_SUFFIXES))
        parts = tuple(p for p in candidates if not _not_a_part(p.relative_to(part_folder)))
        if skipped := [p.relative_to(part_folder) for p in candidates if _not_a_part(p.relative_to(part_folder))]:
            log.warning(
                "%s/: %d file(s) not read as parts: hidden, a lock file, a macOS copy or a Spark job's leftovers (%s)",
                table_name,
                len(skipped),
                ", ".join(str(p) for p in skipped[:3]) + (" ..." if len(skipped) > 3 else ""),
            )
    if len(found) + bool(parts) > 1:
        named = [p.name for p in found] + ([f"{table_name}/ ({len(parts)} part files)"] if parts else [])
        raise ContractError(
            f"{folder} holds the table more than once: {', '.join(named)}; keep one (or name the file "
            f"in {CONFIG_FILE})",
            table=table_name,
        )
    if found:
        return (found[0],)
    return _one_format(parts, table_name) if parts else ()


def _one_format(files: tuple[Path, ...], table_name: str) -> tuple[Path, ...]:
    kinds = {f.name.endswith(".parquet") for f in files}
    if len(kinds) > 1:
        raise ContractError("mixes Parquet and CSV files; keep one format per table", table=table_name)
    return files


def _duckdb_header(path: Path) -> bool:
    """Whether ``path`` begins as a DuckDB database file does (the magic bytes ``DUCK`` at 8)."""
    try:
        with path.open("rb") as handle:
            return handle.read(12)[8:12] == b"DUCK"
    except OSError:
        return True  # unreadable: let DuckDB say why


def _open_duckdb_file(path: Path) -> Dataset:
    if path.suffix.lower() in (".csv", ".parquet", ".txt", ".tsv", ".gz"):
        raise ContractError(f"{path} is a table file, not a data set: give the folder that holds it ({path.parent})")
    if path.is_file() and not _duckdb_header(path):  # a readme, a SOURCE.json: not DuckDB's own words
        raise ContractError(
            f"{path} is neither a data set folder nor a DuckDB file: give the folder of the data set "
            f"({path.parent} if it is there)"
        )
    try:
        con = connections.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise ContractError(f"{path} is neither a data set folder nor a DuckDB file ({first_line(exc)})") from None
    try:
        present = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    privacy = PrivacySettings()
    sources = {
        t.name: TableSource(table=t.name, duckdb_file=path, guard=_guard(t.name, privacy))
        for t in contract.TABLES
        if t.name in present
    }
    if "purchases" not in sources:
        raise ContractError(f"required table 'purchases' not found in DuckDB file {path}", table="purchases")
    return Dataset(name=path.stem, sources=sources, root=path)
