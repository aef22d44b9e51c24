"""Check a data set against the contract, count and quarantine bad rows, report.

Everything runs in DuckDB over the files, so a table of 100 million rows is streamed in
bounded memory (DuckDB spills to disk past its memory limit) instead of loaded into pandas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from portrait import contract
from portrait.dataset import Dataset, quote_ident, quote_literal
from portrait.errors import ContractError
from portrait.files import atomic_target, atomic_write_text
from portrait.identity import IdentitySummary, identity_summary
from portrait.views import REASON, parse_expr, present_expr


@dataclass
class TableReport:
    table: str
    source: str
    rows: int
    valid_rows: int
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None

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

    @property
    def quarantined_rows(self) -> int:
        return sum(t.quarantined_rows for t in self.tables)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["quarantined_rows"] = self.quarantined_rows
        return data


Progress = Callable[[str], None]


def validate(dataset: Dataset, out_dir: Path | None = None, progress: Progress | None = None) -> ValidationReport:
    """Validate every table; raise :class:`ContractError` on a table-level failure.

    Row-level failures are counted by reason and, when ``out_dir`` is given, written to
    ``out_dir/quarantine/<table>.parquet`` (every column as text, the reason in
    ``_reject_reason`` and, for duplicates, the number of extra copies in ``_rows``).
    """
    say = progress or (lambda message: None)
    con = dataset.connect()
    try:
        reports = []
        for table in contract.TABLES:
            if not dataset.has(table.name):
                continue
            say(f"checking {table.name}")
            _check_column_types(con, dataset, table)
            reports.append(_check_rows(con, dataset, table, out_dir))
        purchases = next(r for r in reports if r.table == "purchases")
        if purchases.rows == 0:
            raise ContractError("the purchases table has no rows", table="purchases")
        if purchases.valid_rows == 0:
            raise ContractError(
                f"no purchase row passed the checks; quarantined by reason: {purchases.quarantined}",
                table="purchases",
            )
        customers, first_ts, last_ts = con.execute(
            "SELECT COUNT(DISTINCT customer_id), MIN(ts), MAX(ts) FROM purchases"
        ).fetchall()[0]
        report = ValidationReport(
            dataset=dataset.name,
            fingerprint=dataset.fingerprint(),
            tables=reports,
            missing_optional_tables=[t.name for t in contract.TABLES if not dataset.has(t.name)],
            identities=identity_summary(con) if dataset.has("identities") else None,
            purchases_customers=int(customers),
            purchases_first_ts=str(first_ts),
            purchases_last_ts=str(last_ts),
        )
    finally:
        con.close()
    if out_dir is not None:
        atomic_write_text(json.dumps(report.to_dict(), indent=2), out_dir / "report.json")
    return report


def _check_column_types(con: duckdb.DuckDBPyConnection, dataset: Dataset, table: contract.Table) -> None:
    """A column most of whose values do not parse has the wrong type: a table-level error."""
    source = dataset.sources[table.name]
    types = {c: t.upper() for c, t in _raw_types(con, table.name).items()}
    parsed = [c for c in table.columns if c.kind in ("number", "timestamp")]
    if not parsed:
        return
    trim = source.is_csv
    unparseable = {
        column.name: f"{present_expr(column.name, types[column.name], trim)} AND "
        f"{parse_expr(column, types[column.name], source.timestamp_format, trim)} IS NULL"
        for column in parsed
    }
    aggregates = []
    for column in parsed:
        aggregates.append(f"COUNT(*) FILTER (WHERE {present_expr(column.name, types[column.name], trim)})")
        aggregates.append(f"COUNT(*) FILTER (WHERE {unparseable[column.name]})")
    counts = con.execute(f"SELECT {', '.join(aggregates)} FROM raw_{table.name}").fetchall()[0]
    for i, column in enumerate(parsed):
        present, bad = counts[2 * i], counts[2 * i + 1]
        if present and bad / present > contract.MAX_UNPARSEABLE_SHARE:
            examples = con.execute(f"SELECT * FROM raw_{table.name} WHERE {unparseable[column.name]} LIMIT 3").df()
            raise ContractError(
                f"{bad:,} of {present:,} values cannot be parsed as a {column.kind}"
                + (f" with format {source.timestamp_format!r}" if source.timestamp_format else "")
                + "; is this the right column, or does the config need a rename or a format?",
                table=table.name,
                column=column.name,
                examples=examples.astype("str").to_dict("records"),
            )


def _raw_types(con, view: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM raw_{view}").fetchall()}


def _check_rows(con, dataset: Dataset, table: contract.Table, out_dir: Path | None) -> TableReport:
    name = table.name
    counts = dict(con.execute(f"SELECT {REASON}, COUNT(*) FROM checked_{name} GROUP BY 1").fetchall())
    rows = sum(counts.values())
    quarantined = {reason: n for reason, n in counts.items() if reason is not None}
    has_duplicates_view = table.check_duplicates
    if has_duplicates_view:
        for reason, n in con.execute(f"SELECT {REASON}, SUM(_rows) FROM duplicates_{name} GROUP BY 1").fetchall():
            quarantined[reason] = quarantined.get(reason, 0) + int(n)
    # Every row is either clean or quarantined (duplicates counted as their extra copies), so
    # the clean count needs no further pass over the table.
    valid = rows - sum(quarantined.values())
    report = TableReport(
        table=name,
        source=dataset.sources[name].describe(),
        rows=rows,
        valid_rows=int(valid),
        quarantined=dict(sorted(quarantined.items())),
    )
    if out_dir is not None and report.quarantined_rows:
        target = out_dir / "quarantine" / f"{name}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        columns = _raw_types(con, name)
        as_text = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR) AS {quote_ident(c)}" for c in columns)
        parts = [f"SELECT {as_text}, {REASON}, 1 AS _rows FROM checked_{name} WHERE {REASON} IS NOT NULL"]
        if has_duplicates_view:
            parts.append(f"SELECT {as_text}, {REASON}, _rows FROM duplicates_{name}")
        with atomic_target(target) as tmp:
            con.execute(f"COPY ({' UNION ALL '.join(parts)}) TO {quote_literal(str(tmp))} (FORMAT PARQUET)")
        report.quarantine_file = str(target)
    return report
