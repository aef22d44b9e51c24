"""A customer data set: where its tables are, how its columns map to the contract, and the
DuckDB views every later stage reads.

A data set is a folder holding, for each contract table, ``NAME.parquet``, ``NAME.csv``
(``.csv.gz``) or a sub-folder ``NAME/`` of Parquet or CSV parts; or a DuckDB database file with
tables of those names; or pandas frames (tests, notebooks). An optional ``portrait.toml`` in
the folder renames columns and points at other file names::

    [tables.purchases]
    file = "sales_export.csv"            # relative to the folder; a glob is allowed
    timestamp_format = "%d/%m/%Y %H:%M"  # when timestamps are not ISO
    [tables.purchases.columns]           # contract name = name in the export
    order_id = "InvoiceNo"
    customer_id = "CustomerID"

Views built on a connection, per table ``t``:

- ``raw_t``: the source with contract column names, values untouched;
- ``checked_t``: ``raw_t`` plus ``_reject_reason`` (NULL for a good row);
- ``t``: good rows, typed, exact duplicates removed, customer ids unified through
  ``identities``. This is the only view features may read.

Raw files are never modified.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from portrait import contract
from portrait.errors import ConfigError, ContractError

CONFIG_FILE = "portrait.toml"
_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")
_TABLE_CONFIG_KEYS = {"file", "columns", "timestamp_format", "delimiter"}


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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

    @property
    def is_csv(self) -> bool:
        return bool(self.files) and not self.files[0].name.endswith(".parquet")

    def describe(self) -> str:
        if self.frame is not None:
            return f"in-memory frame ({len(self.frame)} rows)"
        if self.duckdb_file is not None:
            return f"{self.duckdb_file}:{self.table}"
        if len(self.files) == 1:
            return str(self.files[0])
        return f"{self.files[0].parent} ({len(self.files)} files)"

    def scan_sql(self, frame_view: str) -> str:
        if self.frame is not None:
            return quote_ident(frame_view)
        if self.duckdb_file is not None:
            return f"source_db.{quote_ident(self.table)}"
        paths = "[" + ", ".join(quote_literal(str(p)) for p in self.files) + "]"
        if self.is_csv:
            options = "header = true, all_varchar = true, union_by_name = true"
            if self.delimiter:
                options += f", delim = {quote_literal(self.delimiter)}"
            return f"read_csv({paths}, {options})"
        return f"read_parquet({paths}, union_by_name = true)"


@dataclass(frozen=True)
class Dataset:
    """A set of contract tables. Build with :func:`open_dataset` or :meth:`from_frames`."""

    name: str
    sources: dict[str, TableSource]
    root: Path | None = None

    @classmethod
    def from_frames(cls, name: str = "frames", **frames: pd.DataFrame | None) -> Dataset:
        sources = {}
        for table_name, frame in frames.items():
            contract.table(table_name)
            if frame is not None:
                sources[table_name] = TableSource(table=table_name, frame=frame)
        return cls(name=name, sources=sources)

    def has(self, table_name: str) -> bool:
        return table_name in self.sources

    def fingerprint(self) -> str:
        """A short hash of the files' names, sizes and modification times (or frame contents)."""
        digest = hashlib.sha256()
        for table_name in sorted(self.sources):
            source = self.sources[table_name]
            digest.update(table_name.encode())
            if source.frame is not None:
                digest.update(pd.util.hash_pandas_object(source.frame, index=False).values)
            for path in source.files or ((source.duckdb_file,) if source.duckdb_file else ()):
                stat = path.stat()
                digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]

    def connect(self, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection with the raw, checked and clean views of every table."""
        from portrait.views import register_views

        con = duckdb.connect()
        if memory_limit:
            con.execute(f"SET memory_limit = {quote_literal(memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        register_views(con, self)
        return con


def open_dataset(path: str | Path) -> Dataset:
    """Find the contract's tables in a folder or a DuckDB file; raise if purchases is missing."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"data set {path} does not exist")
    if path.is_file():
        return _open_duckdb_file(path)
    config = _read_config(path)
    sources: dict[str, TableSource] = {}
    for table in contract.TABLES:
        table_config = config.get(table.name, {})
        files = _find_files(path, table.name, table_config.get("file"))
        if files:
            sources[table.name] = TableSource(
                table=table.name,
                files=files,
                columns=dict(table_config.get("columns", {})),
                timestamp_format=table_config.get("timestamp_format"),
                delimiter=table_config.get("delimiter"),
            )
        elif table.required:
            raise ContractError(
                f"required table {table.name!r} not found in {path}: expected "
                f"{table.name}.parquet, {table.name}.csv or a folder {table.name}/ of parts"
                + (f" (or the file named in {CONFIG_FILE})" if table_config else ""),
                table=table.name,
            )
    return Dataset(name=path.resolve().name, sources=sources, root=path)


def _read_config(folder: Path) -> dict[str, dict]:
    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        return {}
    try:
        raw = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    unknown_top = set(raw) - {"tables", "name"}
    if unknown_top:
        raise ConfigError(f"{config_path}: unknown keys {sorted(unknown_top)}; expected [tables.*]")
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
        known_columns = set(contract.table(table_name).column_names)
        for contract_name in table_config.get("columns", {}):
            if contract_name not in known_columns:
                raise ConfigError(
                    f"{config_path}: [tables.{table_name}.columns] renames {contract_name!r}, "
                    f"which is not a contract column of {table_name}: {sorted(known_columns)}"
                )
    return tables


def _find_files(folder: Path, table_name: str, configured: str | None) -> tuple[Path, ...]:
    if configured:
        matches = sorted(folder.glob(configured))
        if not matches:
            raise ContractError(
                f"{CONFIG_FILE} names file {configured!r} but nothing matches it in {folder}",
                table=table_name,
            )
        return _one_format(tuple(matches), table_name)
    for suffix in _SUFFIXES:
        candidate = folder / f"{table_name}{suffix}"
        if candidate.is_file():
            return (candidate,)
    part_folder = folder / table_name
    if part_folder.is_dir():
        parts = sorted(p for p in part_folder.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
        if parts:
            return _one_format(tuple(parts), table_name)
    return ()


def _one_format(files: tuple[Path, ...], table_name: str) -> tuple[Path, ...]:
    kinds = {f.name.endswith(".parquet") for f in files}
    if len(kinds) > 1:
        raise ContractError("mixes Parquet and CSV files; keep one format per table", table=table_name)
    return files


def _open_duckdb_file(path: Path) -> Dataset:
    con = duckdb.connect(str(path), read_only=True)
    try:
        present = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    sources = {t.name: TableSource(table=t.name, duckdb_file=path) for t in contract.TABLES if t.name in present}
    if "purchases" not in sources:
        raise ContractError(f"required table 'purchases' not found in DuckDB file {path}", table="purchases")
    return Dataset(name=path.stem, sources=sources, root=path)
