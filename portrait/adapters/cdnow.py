"""The CDNOW purchase log (Fader, Hardie & Lee 2005) into the contract.

Accepts ``CDNOW_master.txt`` (header ``customer_id date number_of_cds dollar_value``) and
``CDNOW_sample.txt`` (no header: ``customer_id sample_id date number_of_cds dollar_value``),
both whitespace-separated with dates as YYYYMMDD. As in the Buy-Till-You-Die literature, all of
a customer's purchases on one day form one order (``order_id`` = customer id and date), written
as one line whose quantity and amount are the day's sums: the raw file has no line id, and the
same customer often bought the same number of CDs for the same price twice on one day, rows a
line-level duplicate check could not tell from a double export. Money is preserved exactly
(summed as decimals, rounded to cents). Columns are written typed: ``ts`` a timestamp,
``amount`` and ``quantity`` doubles, the ids and ``channel`` text. A row whose date, CD count
or dollar value does not parse cannot go into a typed column: it is left out of
``purchases`` and written, raw, with its line number to ``import_rejects.csv`` beside it (and
counted in the result and ``SOURCE.json``), never dropped silently. Customer ids keep their
leading zeros. The shop was online, so ``channel`` is ``web``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from portrait.adapters._write import check_target_folder, copy_to_parquet, write_provenance
from portrait.errors import ContractError
from portrait.files import atomic_write_text

MASTER_COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]
SAMPLE_COLUMNS = ["customer_id", "sample_id", "date", "number_of_cds", "dollar_value"]


def read_cdnow(path: Path) -> pd.DataFrame:
    """The raw file as text columns, with each row's ``line`` number in the file."""
    first = path.read_text().split("\n", 1)[0].split()
    if first[:1] == ["customer_id"]:
        raw = pd.read_csv(path, sep=r"\s+", dtype="str", skiprows=1, names=MASTER_COLUMNS)
        skipped = 1
    elif len(first) == 5:
        raw = pd.read_csv(path, sep=r"\s+", dtype="str", header=None, names=SAMPLE_COLUMNS)
        skipped = 0
    elif len(first) == 4:
        raw = pd.read_csv(path, sep=r"\s+", dtype="str", header=None, names=MASTER_COLUMNS)
        skipped = 0
    else:
        raise ContractError(
            f"{path} does not look like a CDNOW file: its first line has {len(first)} fields "
            f"({first}); expected {MASTER_COLUMNS} or {SAMPLE_COLUMNS}"
        )
    raw.insert(0, "line", range(skipped + 1, skipped + 1 + len(raw)))
    return raw


REJECTS_FILE = "import_rejects.csv"


def import_cdnow(source: Path, out_dir: Path) -> dict[str, int]:
    check_target_folder(out_dir, __name__)
    raw = read_cdnow(source)
    con = duckdb.connect()
    con.register("raw", raw)
    parses = (
        "TRY_STRPTIME(date, '%Y%m%d') IS NOT NULL AND TRY_CAST(dollar_value AS DECIMAL(18, 2)) IS NOT NULL "
        "AND TRY_CAST(number_of_cds AS DOUBLE) IS NOT NULL"
    )
    purchases = f"""
        SELECT customer_id || '-' || date AS order_id, customer_id,
               CAST(STRPTIME(date, '%Y%m%d') AS TIMESTAMP) AS ts,
               CAST(ROUND(SUM(CAST(dollar_value AS DECIMAL(18, 2))), 2) AS DOUBLE) AS amount,
               SUM(CAST(number_of_cds AS DOUBLE)) AS quantity, 'web' AS channel
        FROM raw WHERE {parses} GROUP BY customer_id, date
        ORDER BY customer_id, ts"""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"purchases": copy_to_parquet(con, purchases, out_dir / "purchases.parquet")}
    rejects = con.execute(f"SELECT * FROM raw WHERE NOT ({parses}) ORDER BY line").df()
    con.close()
    target = out_dir / REJECTS_FILE
    if len(rejects):
        atomic_write_text(rejects.to_csv(index=False), target)
        counts["import_rejects"] = len(rejects)
    elif target.exists():
        target.unlink()  # from an earlier import of another file
    write_provenance(
        out_dir,
        {
            "source": str(source),
            "adapter": "portrait.adapters.cdnow",
            "rows": counts,
            **({"rejected_rows_file": REJECTS_FILE} if len(rejects) else {}),
        },
    )
    return counts
