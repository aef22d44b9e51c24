"""The CDNOW purchase log (Fader, Hardie & Lee 2005) into the contract.

Accepts ``CDNOW_master.txt`` (header ``customer_id date number_of_cds dollar_value``) and
``CDNOW_sample.txt`` (no header: ``customer_id sample_id date number_of_cds dollar_value``),
both whitespace-separated with dates as YYYYMMDD. As in the Buy-Till-You-Die literature, all of
a customer's purchases on one day form one order (``order_id`` = customer id and date), written
as one line whose quantity and amount are the day's sums: the raw file has no line id, and the
same customer often bought the same number of CDs for the same price twice on one day, rows a
line-level duplicate check could not tell from a double export. Money is preserved exactly.
Rows whose values do not parse are passed through as their own lines, unsummed, for
``portrait validate`` to count and quarantine. Customer ids keep their leading zeros. The shop
was online, so ``channel`` is ``web``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from portrait.adapters._write import copy_to_parquet, write_provenance
from portrait.errors import ContractError

MASTER_COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]
SAMPLE_COLUMNS = ["customer_id", "sample_id", "date", "number_of_cds", "dollar_value"]


def read_cdnow(path: Path) -> pd.DataFrame:
    first = path.read_text().split("\n", 1)[0].split()
    if first[:1] == ["customer_id"]:
        raw = pd.read_csv(path, sep=r"\s+", dtype="str", skiprows=1, names=MASTER_COLUMNS)
    elif len(first) == 5:
        raw = pd.read_csv(path, sep=r"\s+", dtype="str", header=None, names=SAMPLE_COLUMNS)
    elif len(first) == 4:
        raw = pd.read_csv(path, sep=r"\s+", dtype="str", header=None, names=MASTER_COLUMNS)
    else:
        raise ContractError(
            f"{path} does not look like a CDNOW file: its first line has {len(first)} fields "
            f"({first}); expected {MASTER_COLUMNS} or {SAMPLE_COLUMNS}"
        )
    return raw


def import_cdnow(source: Path, out_dir: Path) -> dict[str, int]:
    raw = read_cdnow(source)
    con = duckdb.connect()
    con.register("raw", raw)
    # Values that do not parse stay as text so that `portrait validate` counts and quarantines
    # them rather than this adapter dropping them.
    parses = (
        "TRY_STRPTIME(date, '%Y%m%d') IS NOT NULL AND TRY_CAST(dollar_value AS DOUBLE) IS NOT NULL "
        "AND TRY_CAST(number_of_cds AS DOUBLE) IS NOT NULL"
    )
    purchases = f"""
        SELECT customer_id || '-' || date AS order_id, customer_id,
               CAST(STRPTIME(date, '%Y%m%d') AS VARCHAR) AS ts,
               CAST(ROUND(SUM(CAST(dollar_value AS DECIMAL(18, 2))), 2) AS VARCHAR) AS amount,
               CAST(SUM(CAST(number_of_cds AS DOUBLE)) AS VARCHAR) AS quantity, 'web' AS channel
        FROM raw WHERE {parses} GROUP BY customer_id, date
        UNION ALL
        SELECT customer_id || '-' || date, customer_id, date, dollar_value, number_of_cds, 'web'
        FROM raw WHERE NOT ({parses})
        ORDER BY customer_id, ts"""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"purchases": copy_to_parquet(con, purchases, out_dir / "purchases.parquet")}
    con.close()
    write_provenance(
        out_dir,
        {"source": str(source), "adapter": "portrait.adapters.cdnow", "rows": counts},
    )
    return counts
