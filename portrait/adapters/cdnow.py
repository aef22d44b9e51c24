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
or dollar value does not parse cannot go into a typed column, nor can a line with another
number of fields or bytes that are not UTF-8: it is left out of ``purchases`` and written,
with its line number (blank lines counted), its text as written and the reason, to
``import_rejects.csv`` beside it (and counted in the result and ``SOURCE.json``), never
dropped silently. Values are kept as written (a customer id ``NA`` stays ``NA``); customer
ids keep their leading zeros. The shop was online, so ``channel`` is ``web``. A gzip-compressed file is read
decompressed, and a UTF-8 byte-order mark before the first line is not part of it.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pandas as pd

from portrait import connections
from portrait.adapters._write import check_target_folder, copy_to_parquet, start_import, write_provenance
from portrait.errors import ContractError
from portrait.files import atomic_write_text

MASTER_COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]
SAMPLE_COLUMNS = ["customer_id", "sample_id", "date", "number_of_cds", "dollar_value"]


def read_cdnow(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw file as text columns, each row with its ``line`` number in the file (blank lines
    counted) and its text (``raw_line``), exactly as written (``NA`` stays ``NA``); and the lines
    that cannot be split into those columns (another number of fields, bytes that are not
    UTF-8), with their ``line``, text and ``reason``."""
    data = path.read_bytes()
    if data.startswith(b"\x1f\x8b"):  # gzip's magic: the file as downloaded, compressed
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ContractError(
                f"{path} is a gzip file that cannot be decompressed ({exc}): nothing imported"
            ) from None
    # a UTF-8 byte-order mark (a file saved by Notepad or Excel) is no part of the first id: the
    # whole file was refused as "not CDNOW" with it
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    texts, readable = [], []
    for raw in lines:
        raw = raw.rstrip(b"\r")
        try:
            texts.append(raw.decode("utf-8"))
            readable.append(True)
        except UnicodeDecodeError:
            texts.append(raw.decode("utf-8", errors="replace"))
            readable.append(False)
    numbered = [(n, text, ok) for n, (text, ok) in enumerate(zip(texts, readable, strict=True), 1) if text.strip()]
    if not numbered:
        raise ContractError(f"{path} is empty: no CDNOW line in it")
    first = numbered[0][1].split()
    if first[:1] == ["customer_id"]:
        columns, numbered = MASTER_COLUMNS, numbered[1:]
    elif len(first) in (4, 5):
        columns = SAMPLE_COLUMNS if len(first) == 5 else MASTER_COLUMNS
    else:
        raise ContractError(
            f"{path} does not look like a CDNOW file: its first line has {len(first)} fields "
            f"({first}); expected {MASTER_COLUMNS} or {SAMPLE_COLUMNS}"
        )
    rows, malformed = [], []
    for number, text, ok in numbered:
        fields = text.split()
        if not ok:
            malformed.append((number, text, "not UTF-8"))
        elif len(fields) != len(columns):
            malformed.append((number, text, f"{len(fields)} fields, expected {len(columns)}"))
        else:
            rows.append((number, *fields, text))
    raw = pd.DataFrame(rows, columns=["line", *columns, "raw_line"], dtype="object").astype(
        {"line": "int64"} | {c: "str" for c in [*columns, "raw_line"]}
    )
    bad = pd.DataFrame(malformed, columns=["line", "raw_line", "reason"]).astype({"line": "int64"})
    return raw, bad


REJECTS_FILE = "import_rejects.csv"


def import_cdnow(source: Path, out_dir: Path) -> dict[str, int]:
    check_target_folder(out_dir, __name__)
    raw, malformed = read_cdnow(source)
    con = connections.connect()
    con.register("raw", raw)
    con.register("malformed", malformed)
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
    parsed = con.execute(f"SELECT COUNT(*) FROM raw WHERE {parses}").fetchall()[0][0]
    if not parsed:  # another text file (a readme) whose first line happens to have 4 words
        con.close()
        lines = len(raw) + len(malformed)
        raise ContractError(
            f"{source}: none of its {lines:,} non-blank lines is a CDNOW purchase (customer id, date as YYYYMMDD, "
            f"number of CDs, dollar value): is it the CDNOW file? nothing imported"
        )
    start_import(out_dir, "portrait.adapters.cdnow")
    counts = {"purchases": copy_to_parquet(con, purchases, out_dir / "purchases.parquet")}
    rejects = con.execute(
        f"""SELECT * EXCLUDE (raw_line), 'date, count or amount does not parse' AS reason, raw_line
        FROM raw WHERE NOT ({parses})
        UNION ALL BY NAME SELECT line, reason, raw_line FROM malformed ORDER BY line"""
    ).df()
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
