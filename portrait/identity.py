"""Identity resolution: customer ids that share an identifier are one person.

Customer ids are nodes, each distinct ``(id_type, id_value)`` is a node, and an identities row
is an edge between them; every connected component is one person. The person's id is the
smallest customer id (as text) in the component that holds no e-mail address or phone number
(:data:`MERGING_LINKS_JUDGED`), else the smallest, so the merge never depends on row order.

Identifier values never leave this module: the map holds customer ids only, and
:func:`explain` shows identifiers by type and count, or by salted hash given the salt; never
the value, nor an unsalted hash of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from portrait import connections, contract
from portrait.adapters._write import copy_to_parquet
from portrait.errors import PortraitError, first_line
from portrait.files import open_bytes
from portrait.privacy import personal_text_sql
from portrait.sql import quote_ident, quote_literal

SALT_ENV = "PORTRAIT_IDENTITY_SALT"

# An identifier held by more customer ids than this links nobody: a household shares a phone or
# a card among a few ids; one value shared by dozens is a placeholder (the hash of an empty
# e-mail, "0000000000", a store's own card) that would otherwise merge them all into one person.
MAX_IDS_PER_IDENTIFIER = 20

# The identities rows that can merge anything: identifiers held by two ids or more, but not by
# more than MAX_IDS_PER_IDENTIFIER (every other id is its own person). One statement for both
# engines (DuckDB here, Spark in portrait.spark_engine).
MERGING_LINKS = f"""WITH links AS (SELECT DISTINCT customer_id, id_type, id_value FROM clean_identities),
        shared AS (SELECT id_type, id_value FROM links GROUP BY id_type, id_value
                   HAVING COUNT(*) > 1 AND COUNT(*) <= {MAX_IDS_PER_IDENTIFIER})
    SELECT links.customer_id, links.id_type, links.id_value FROM links JOIN shared USING (id_type, id_value)"""

# The merging links, each with whether its customer id holds an e-mail address or a phone number
# (written as one: +44 7700 900123, 07700 900123; an id of digits alone, 0100000001, is a loyalty
# number as often as a phone's, and is not judged): a person's id is the smallest of its ids that
# does not (else the smallest), so that an opaque id merged with "anna.smith@example.com" keys the
# person's rows in every output, not the address. One statement for both engines.
MERGING_LINKS_JUDGED = f"SELECT l.*, {personal_text_sql('l.customer_id')} AS personal FROM ({MERGING_LINKS}) l"

# The identifiers too widely held to link anyone, with how many ids hold each.
WIDELY_HELD = f"""SELECT id_type, id_value, COUNT(DISTINCT customer_id) AS holders FROM clean_identities
    GROUP BY id_type, id_value HAVING COUNT(DISTINCT customer_id) > {MAX_IDS_PER_IDENTIFIER}"""

# How many identifiers were too widely shared to link, and how many ids hold them.
UNLINKED_IDENTIFIERS = f"SELECT COUNT(*), COALESCE(SUM(holders), 0) FROM ({WIDELY_HELD})"


@dataclass(frozen=True)
class IdentitySummary:
    customer_ids: int
    persons: int
    merged_ids: int  # ids that now belong to a person with more than one id
    merged_persons: int  # persons made of more than one id
    largest_person: int = 1  # ids of the person with the most
    unlinked_identifiers: int = 0  # identifiers held by more than MAX_IDS_PER_IDENTIFIER ids
    unlinked_identifier_ids: int = 0  # the ids holding them (counted once per identifier)

    def sentence(self) -> str:
        people = "person" if self.merged_persons == 1 else "people"
        text = (
            f"{self.customer_ids:,} customer ids in identities resolve to {self.persons:,} "
            f"people: {self.merged_ids:,} ids merged into {self.merged_persons:,} {people}"
        )
        if self.largest_person > MAX_IDS_PER_IDENTIFIER:
            text += f"; the largest person holds {self.largest_person:,} ids (chained through shared identifiers)"
        return text

    def warnings(self) -> list[str]:
        """What a person reading the merge should check: identifiers too widely shared to link
        anyone (placeholders), and persons chained from many ids."""
        found = []
        if self.unlinked_identifiers:
            found.append(
                f"identities: {self.unlinked_identifiers:,} identifier value(s) are each held by more than "
                f"{MAX_IDS_PER_IDENTIFIER} customer ids ({self.unlinked_identifier_ids:,} in all) and link nobody: "
                "placeholders such as an empty value's hash? (portrait identity explain ID shows an id's identifiers)"
            )
        if self.largest_person > MAX_IDS_PER_IDENTIFIER:
            found.append(
                f"identities: one person is {self.largest_person:,} customer ids chained through shared identifiers; "
                "check it with portrait identity explain"
            )
        return found


def resolve(links: pd.DataFrame) -> pd.DataFrame:
    """Map each customer id in ``links`` (customer_id, id_type, id_value, optionally
    ``personal``: the id looks like an e-mail address or a phone number) to a person id: the
    smallest id (as text) of its connected component, the smallest of those not personal when
    there is one.

    Returns a frame (customer_id, person_id) sorted by customer_id, one row per customer id.
    """
    if links.empty:
        return pd.DataFrame({"customer_id": pd.Series(dtype="str"), "person_id": pd.Series(dtype="str")})
    customer_codes, customers = pd.factorize(links["customer_id"].astype("str"), sort=True)
    key = links["id_type"].astype("str") + "\x1f" + links["id_value"].astype("str")
    key_codes, keys = pd.factorize(key)
    n_customers, n_nodes = len(customers), len(customers) + len(keys)
    graph = coo_matrix(
        (np.ones(len(links), dtype=np.int8), (customer_codes, key_codes + n_customers)),
        shape=(n_nodes, n_nodes),
    )
    _, labels = connected_components(graph, directed=False)
    customer_labels = labels[:n_customers]
    # customers are sorted, so the first customer seen in each component is its smallest id;
    # an id that looks personal ranks after every other id
    rank = np.arange(n_customers)
    if "personal" in links.columns:
        personal = np.zeros(n_customers, dtype=bool)
        personal[customer_codes] = links["personal"].fillna(False).to_numpy(dtype=bool)
        rank = rank + personal * n_customers
    first_in_component = pd.Series(rank).groupby(customer_labels).transform("min").to_numpy() % n_customers
    return pd.DataFrame({"customer_id": np.asarray(customers), "person_id": np.asarray(customers)[first_in_component]})


def summarize(mapping: pd.DataFrame, unlinked: tuple[int, int] = (0, 0)) -> IdentitySummary:
    sizes = mapping.groupby("person_id").size()
    multi = sizes[sizes > 1]
    return IdentitySummary(
        customer_ids=len(mapping),
        persons=len(sizes),
        merged_ids=int(multi.sum()),
        merged_persons=len(multi),
        largest_person=int(sizes.max()) if len(sizes) else 1,
        unlinked_identifiers=int(unlinked[0]),
        unlinked_identifier_ids=int(unlinked[1]),
    )


def register_identity_map(con: duckdb.DuckDBPyConnection) -> bool:
    """Compute the map from ``clean_identities``: table ``identity_remap`` (the ids merged into
    another's person, what every feature read joins) and view ``identity_map`` (every id of the
    identities table with its person, read by the privacy rules and ``forget``). True when the
    identities table has a row."""
    # The graph is built from the links that can merge anything (a few percent of the table).
    links = con.execute(MERGING_LINKS_JUDGED).df()
    con.register("_identity_merged_frame", resolve(links))
    con.execute("CREATE OR REPLACE TEMP TABLE identity_merged AS SELECT * FROM _identity_merged_frame")
    con.unregister("_identity_merged_frame")
    # Only ids that change need a join partner; most ids map to themselves.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE identity_remap AS "
        "SELECT customer_id, person_id FROM identity_merged WHERE customer_id <> person_id"
    )
    # A view, not a table: a feature build never reads it, and computing it (every id of the
    # identities, about 0.5 s at 1M customers) for each build was time spent for nothing.
    con.execute(
        """CREATE OR REPLACE TEMP VIEW identity_map AS
           SELECT c.customer_id, COALESCE(m.person_id, c.customer_id) AS person_id
           FROM (SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id FROM clean_identities) c
           LEFT JOIN identity_merged m USING (customer_id)"""
    )
    return bool(con.execute("SELECT EXISTS (SELECT 1 FROM clean_identities)").fetchall()[0][0])


def identity_summary(con: duckdb.DuckDBPyConnection) -> IdentitySummary:
    unlinked = con.execute(UNLINKED_IDENTIFIERS).fetchall()[0]
    return summarize(con.execute("SELECT customer_id, person_id FROM identity_map").df(), unlinked)


def salted_hash(value: str, salt: str) -> str:
    """SHA-256 of ``salt`` + ``value`` as hex: what :func:`hash_identities_file` writes for it.
    Without the secret salt nobody can test guesses (a phone number has only ~10^10 values, so
    an unsalted hash of one, even a short prefix, is undone by brute force in a second)."""
    import hashlib

    return hashlib.sha256((salt + value).encode()).hexdigest()


def explain(con: duckdb.DuckDBPyConnection, customer_id: str, salt: str | None = None) -> dict:
    """Which ids were merged with ``customer_id`` and through which shared identifiers.

    Identifiers are never shown: each entry of ``shared_identifiers`` gives an ``id_type``, the
    customer ids sharing it and how many ``identifiers`` of that type they share; given the
    ``salt`` (``PORTRAIT_IDENTITY_SALT``), also their ``salted_hashes``, as ``portrait
    identity hash`` writes them. Without a salt no hash of any kind is given.
    """
    rows = con.execute(
        "SELECT person_id FROM identity_map WHERE customer_id = ? OR person_id = ? LIMIT 1",
        [customer_id, customer_id],
    ).fetchall()
    if not rows:
        raise PortraitError(f"customer id {customer_id!r} is not in the identities table, so it was not merged")
    person_id = rows[0][0]
    members = [
        r[0]
        for r in con.execute(
            "SELECT customer_id FROM identity_map WHERE person_id = ? ORDER BY customer_id",
            [person_id],
        ).fetchall()
    ]
    links = con.execute(
        """WITH mine AS (SELECT DISTINCT i.id_type, i.id_value, i.customer_id FROM clean_identities i
                         JOIN identity_map m ON i.customer_id = m.customer_id WHERE m.person_id = ?),
                holders AS (SELECT id_type, id_value, COUNT(DISTINCT customer_id) AS holders
                            FROM clean_identities WHERE (id_type, id_value) IN (SELECT id_type, id_value FROM mine)
                            GROUP BY ALL)
           SELECT mine.*, holders.holders FROM mine JOIN holders USING (id_type, id_value)""",
        [person_id],
    ).df()
    # Held by more ids than MAX_IDS_PER_IDENTIFIER: they linked nobody (MERGING_LINKS).
    wide = links[links["holders"] > MAX_IDS_PER_IDENTIFIER].drop_duplicates(["id_type", "id_value"])
    unlinked = [
        {"id_type": id_type, "identifiers": len(group), "most_ids_holding_one": int(group["holders"].max())}
        for id_type, group in wide.groupby("id_type", sort=True)
    ]
    links = links[links["holders"] <= MAX_IDS_PER_IDENTIFIER]
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (id_type, id_value), group in links.groupby(["id_type", "id_value"], sort=True):
        ids = tuple(sorted(group["customer_id"].unique()))
        if len(ids) > 1:
            grouped.setdefault((id_type, ids), []).append(id_value)
    shared = []
    for (id_type, ids), values in sorted(grouped.items()):
        entry = {"id_type": id_type, "customer_ids": list(ids), "identifiers": len(values)}
        if salt:
            entry["salted_hashes"] = sorted(salted_hash(v, salt) for v in values)
        shared.append(entry)
    return {
        "person_id": person_id,
        "customer_ids": members,
        "shared_identifiers": shared,
        "unlinked_identifiers": unlinked,
    }


def salt_from_environment() -> str:
    salt = os.environ.get(SALT_ENV, "")
    if not salt:
        raise PortraitError(
            f"set {SALT_ENV} to a secret salt to hash identity values; it is read from the "
            "environment so it never lands in a file or a log"
        )
    return salt


def hash_identities_file(source: Path, target: Path, salt: str | None = None) -> tuple[int, int]:
    """Copy an identities table with ``id_value`` replaced by its salted SHA-256 hex digest;
    returns (rows written, values hashed): a blank value or a placeholder stays empty.

    The salt comes from ``PORTRAIT_IDENTITY_SALT`` unless given, and is bound as a query
    parameter, never pasted into SQL. A CSV source is read strictly (:func:`check_csv`): a line
    that is not UTF-8 or has another number of fields than the header stops the copy with the
    file and line, before anything is written. The copy goes to a temporary file and is renamed.
    """
    salt = salt or salt_from_environment()
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise PortraitError(f"{source} is not a file")
    if target.resolve() == source.resolve():
        raise PortraitError(f"--out {target} is the source itself: the hashed copy goes to another file")
    if target.suffix.lower() != ".parquet":
        raise PortraitError(f"--out {target}: the hashed copy is written as Parquet; name it ....parquet")
    if source.name.endswith(".parquet"):
        scan = f"read_parquet({quote_literal(str(source))})"
    else:
        delimiter, columns = check_csv(source)
        spec = "{" + ", ".join(f"{quote_literal(c)}: 'VARCHAR'" for c in columns) + "}"
        scan = (
            f"read_csv({quote_literal(str(source))}, header = true, auto_detect = false, strict_mode = true, "
            f"delim = {quote_literal(delimiter)}, quote = '\"', escape = '\"', columns = {spec})"
        )
    con = connections.connect()
    con.execute("SET VARIABLE identity_salt = ?", [salt])
    try:
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
        if "id_value" not in columns:
            raise PortraitError(f"{source} has no id_value column; its columns are {columns}")
        hashed = con.execute(
            f"SELECT COUNT(*) > 0 AND bool_and(regexp_full_match(CAST(id_value AS VARCHAR), '[0-9a-f]{{64}}')) "
            f"FROM {scan} WHERE id_value IS NOT NULL"
        ).fetchall()[0][0]
        if hashed:  # hashed twice, the values would match nothing hashed once
            raise PortraitError(f"{source}: every id_value is already a SHA-256 hex digest; nothing was written")
        # The reader's rules, so that the hashed copy merges the same people as the source: a
        # CSV's values are trimmed (Parquet's are read as they are), and a blank value or a
        # placeholder ("null", "N/A", "0") stays empty (quarantined as missing), never the hash
        # that every customer without an identifier would share.
        value = (
            "TRIM(CAST(id_value AS VARCHAR))" if not source.name.endswith(".parquet") else "CAST(id_value AS VARCHAR)"
        )
        rows = copy_to_parquet(
            con,
            f"SELECT * REPLACE (CASE WHEN NULLIF({value}, '') IS NULL OR {contract.placeholder_expr(value)} THEN NULL "
            f"ELSE sha256(getvariable('identity_salt') || {value}) END AS {quote_ident('id_value')}) FROM {scan}",
            target,
        )
        written = f"read_parquet({quote_literal(str(target))})"
        return rows, int(con.execute(f"SELECT COUNT(id_value) FROM {written}").fetchall()[0][0])
    except duckdb.Error as exc:  # checked above, so not expected: still a message, not a traceback
        raise PortraitError(f"cannot hash {source} into {target}: {first_line(exc)}; nothing was written") from exc
    finally:
        con.close()


_DELIMITERS = (",", ";", "\t", "|")


def check_csv(path: Path) -> tuple[str, list[str]]:
    """Read a CSV file of identities strictly, in one pass: UTF-8 (a byte-order mark allowed),
    a header naming ``id_value`` (delimited by a comma, semicolon, tab or bar), and every line
    with as many fields as the header. Returns the delimiter and the header's columns; raises
    :class:`PortraitError` naming the file and the first bad line. The message never shows a
    line's text: it holds identifiers."""
    import csv

    def lines():
        with open_bytes(path) as handle:
            for number, raw in enumerate(handle, 1):
                try:
                    yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise PortraitError(
                        f"{path} line {number:,}: byte {raw[exc.start : exc.start + 1]!r} at position "
                        f"{exc.start + 1} is not UTF-8; save the file as UTF-8 (nothing was written)"
                    ) from None

    stream = lines()
    header_line = next(stream, None)
    if header_line is None or not header_line.strip():
        raise PortraitError(f"{path} is empty: expected a header line with customer_id, id_type, id_value")
    if "\r" in header_line.rstrip("\r\n"):  # the whole file read as one line: the reader's traceback
        raise PortraitError(
            f"{path}: its lines end with a carriage return alone (an old Mac format); save it with line feeds "
            "(LF or CRLF) (nothing was written)"
        )
    delimiter = next(
        (d for d in _DELIMITERS if "id_value" in next(csv.reader([header_line], delimiter=d))), _DELIMITERS[0]
    )
    reader = csv.reader(_chain([header_line], stream), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        if "id_value" not in header:
            # Not the line itself: without a header line it is the first row's identifiers.
            named = [name for name in ("customer_id", "id_type", "id_value") if name in header]
            raise PortraitError(
                f"{path} has no id_value column: its first line has {len(header)} field(s)"
                f"{', of them ' + ', '.join(named) if named else ', none of them customer_id, id_type or id_value'}; "
                "the first line must be the header customer_id, id_type, id_value (the line is not shown: it may "
                "hold identifiers)"
            )
        for row in reader:
            if len(row) != len(header) and row:
                raise PortraitError(
                    f"{path} line {reader.line_num:,} has {len(row)} field{'s' if len(row) != 1 else ''}, "
                    f"the header {len(header)} ({delimiter!r}-separated): fix or remove the line (nothing was written)"
                )
    except csv.Error as exc:
        raise PortraitError(f"{path} line {reader.line_num:,}: {exc} (nothing was written)") from None
    return delimiter, header


def _chain(first, rest):
    yield from first
    yield from rest
