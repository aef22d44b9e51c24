"""Quoting DuckDB's CSV sniffer misses.

DuckDB chooses a CSV file's dialect from a sample of its first lines, and a dialect that fails
on any sampled line loses. One line with a stray quote (``"TV 55" LED"``, a quote inside a
quoted value not doubled) in that sample fails the quoted dialect, so the whole file is read
unquoted: every quoted value holding the delimiter (``"Home, Garden"``) then splits into too many
fields, and 75 of 301 lines of a real-looking export were quarantined; a quoted value without
one kept its quotes as text.

:func:`missed_quoting` finds such a file: among the lines the sniffer samples (20,480), a quote
that neither opens nor closes a value (or one left open), and more whole quoted values than
values opening with a quote they do not close (a file of ``"Classic" T-shirt`` values is read as
written). It then reads that sample both ways, as DuckDB sniffs it and with RFC 4180 quoting (a
quote inside a quoted value doubled; the delimiter the configured one, else the header's most
frequent of , ; tab |; the header's names as DuckDB names them), and reads the file with RFC
4180 unless that reads fewer of the sample's rows than the sniffer but for the suspect lines:
the stray line is then one malformed line. A quote opened and never closed runs on into the
next lines: when the sample shows one, the file is read quoted too, and :mod:`portrait.validate`
refuses it naming the line (a malformed record holding a whole line of the file), rather than
count the lines it took as one. A file whose sampled lines hold no quote, which DuckDB then reads
unquoted, is searched for its first quote, and the lines from there are judged as the first
lines are (:func:`late_quote_sample`). Backslash-escaped files (``\\"``) are left to the
sniffer. The answer is kept per version of a file (:func:`missed_quoting`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import tempfile
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import duckdb

from portrait import connections
from portrait.files import atomic_write_text, open_bytes
from portrait.sql import quote_literal

# The sample read: the lines DuckDB's sniffer reads (its sample_size, 20,480 rows, after the
# header), up to this many bytes (1 MB held about 15,000 lines of 70 bytes: a stray quote
# further on, which the sniffer saw, was missed).
SAMPLE_LINES = 20_480 + 1
MAX_SAMPLE_BYTES = 16 << 20
# Quoted values in the sample for the file to count as quoted: one could be a stray quote.
MIN_QUOTED_VALUES = 3
# DuckDB keeps at most this many characters of a rejected record's text (measured: 10,000).
REJECT_TEXT_LIMIT = 10_000
# How much of a file the search for its first quote reads at a time (:func:`late_quote_sample`).
LATE_READ_BYTES = 4 << 20
# Bumped when the rule changes: answers kept on disk by an earlier rule are not read.
RULE_VERSION = 4


@dataclass(frozen=True)
class QuotedDialect:
    """How to read a file the sniffer read unquoted: see the module docstring."""

    delimiter: str
    columns: tuple[str, ...]  # the header's names, in order
    skip: int = 1  # the lines up to the header's (blank lines before it, as DuckDB skips them)

    def read_options(self) -> str:
        """``read_csv`` options for this dialect (the header line skipped, every column text)."""
        columns = ", ".join(f"{quote_literal(name)}: 'VARCHAR'" for name in self.columns)
        return (
            f"auto_detect = false, header = false, skip = {self.skip}, strict_mode = true, "
            f"delim = {quote_literal(self.delimiter)}, quote = '\"', escape = '\"', columns = {{{columns}}}"
        )


def _quoted_value(delimiter: str) -> re.Pattern[str]:
    """A whole value in quotes (inner quotes doubled), between delimiters or line ends."""
    d = re.escape(delimiter)
    return re.compile(f'(?:^|{d})"(?:[^"]|"")*"(?={d}|$)', re.MULTILINE)


def guessed_delimiter(header: str) -> str:
    """The delimiter a header line most likely uses: the most frequent of , ; tab | in it."""
    return max(",;\t|", key=header.count)


def _suspect_value(delimiter: str) -> re.Pattern[str]:
    """A value that opens with a quote and is not one quoted value (``"TV 55" LED"``,
    ``"Classic" T-shirt``, a quote never closed on its line): where the two ways of reading a
    file part. A quote inside an unquoted value (``TV 55" LED``) reads alike either way."""
    d = re.escape(delimiter)
    return re.compile(f'(?:^|{d})"(?!(?:[^"]|"")*"(?:{d}|$))', re.MULTILINE)


def sample_text(path: Path, encoding: str) -> str:
    """The file's first lines as text, as many as DuckDB's sniffer reads (:data:`SAMPLE_LINES`,
    at most :data:`MAX_SAMPLE_BYTES`): decoded in ``encoding`` (DuckDB's name), undecodable bytes
    replaced, lines ending in a line feed, the last one left out when cut."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    parts, lines, size, cut = [], 0, 0, False
    with open_bytes(path) as handle:
        while lines <= SAMPLE_LINES and size < MAX_SAMPLE_BYTES:
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            text = decoder.decode(chunk)
            parts.append(text)
            lines += max(text.count("\n"), text.count("\r"))  # CRLF, LF or CR (Excel for Mac)
        else:
            cut = True
    return _sampled_lines("".join(parts).lstrip("\ufeff"), cut)


def _sampled_lines(text: str, cut: bool) -> str:
    """The first :data:`SAMPLE_LINES` lines of ``text``, line ends made line feeds, a last line
    ``cut`` short by the read left out: what the sniffer sees, no more (a quote further on it
    misses)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text[: text.rfind("\n") + 1] if cut and "\n" in text else text
    lines = text.split("\n", SAMPLE_LINES)
    if len(lines) > SAMPLE_LINES:
        return "\n".join(lines[:SAMPLE_LINES]) + "\n"
    return text


def late_quote_sample(path: Path, encoding: str) -> str | None:
    """The file's lines from the first one holding a quote on, as many as :func:`sample_text`
    takes, or None when the file holds no quote: the file read once more, for a file whose first
    lines hold none (its answer is kept per version of the file). Decoded, undecodable bytes
    replaced, lines ending in a line feed."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    partial, parts, lines, size, cut = "", [], 0, 0, False
    with open_bytes(path) as handle:
        while True:
            if lines > SAMPLE_LINES or size >= MAX_SAMPLE_BYTES:
                cut = True
                break
            chunk = handle.read(LATE_READ_BYTES)
            if not chunk:
                break
            text = decoder.decode(chunk)
            if not parts:
                at = text.find('"')
                if at < 0:  # the line under way, which a quote in the next chunk may be on
                    end = max(text.rfind("\n"), text.rfind("\r"))
                    partial = partial + text if end < 0 else text[end + 1 :]
                    continue
                before = partial + text[:at]
                text = before[max(before.rfind("\n"), before.rfind("\r")) + 1 :] + text[at:]
            parts.append(text)
            size += len(text)
            lines += max(text.count("\n"), text.count("\r"))
    if not parts:
        return None
    text = _sampled_lines("".join(parts), cut)
    return text if text.endswith("\n") else text + "\n"


def sample_lines(path: Path, encoding: str) -> list[str]:
    """The non-empty lines of :func:`sample_text`."""
    return [line for line in sample_text(path, encoding).split("\n") if line]


def backslash_escaped(path: Path, encoding: str) -> bool:
    """Whether the file's first lines escape quotes with a backslash (``\\"``) rather than by
    doubling them (RFC 4180, what Excel and pandas write); False for a file that cannot be read
    here (a path only Spark reads, a broken gzip: the reader says what is wrong)."""
    try:
        return any('\\"' in line for line in sample_lines(path, encoding))
    except (OSError, EOFError, zlib.error):
        return False


def swallows_lines(record: str, delimiter: str, fields: int) -> bool:
    """Whether a record the reader could not read (DuckDB's ``csv_line``) holds a whole line of
    the file after its first (one that splits, quoted values and all, into ``fields`` fields): a
    quote opened and never closed took it as text. The rest of a value quoted over two lines
    (an address: ``1 High St",EXTRA``) is no whole line."""
    if fields < 2:
        return False
    text = record.strip("\r\n").replace("\r\n", "\n").replace("\r", "\n")
    # A value quoted over lines and closed leaves its record's quotes paired (a malformed
    # address ending '..., back door",EXTRA' splits into as many fields as a line of the file);
    # a quote left open leaves them odd, unless DuckDB cut the record's text short.
    if text.replace('""', "").count('"') % 2 == 0 and len(record) < REJECT_TEXT_LIMIT:
        return False
    return any(len(row) == fields for row in csv.reader(text.split("\n")[1:], delimiter=delimiter, quotechar='"'))


def _rows_read(con, path: Path, options: str) -> int:
    """How many rows DuckDB reads from ``path`` with ``options``, lines it cannot read set aside."""
    rows = con.execute(
        f"SELECT * FROM read_csv({quote_literal(str(path))}, {options}, store_rejects = true, "
        "rejects_table = '_sample_rejects', rejects_scan = '_sample_scans')"
    ).fetchall()
    return len(rows)


_SAMPLES: duckdb.DuckDBPyConnection | None = None


def _sample_connection() -> duckdb.DuckDBPyConnection:
    """A cursor of one connection kept for the samples' reads (a new connection cost 21 ms a
    file; cursors are cheap and each thread its own)."""
    global _SAMPLES
    if _SAMPLES is None:
        _SAMPLES = connections.connect()
    return _SAMPLES.cursor()


def _better_quoted(
    sample: str, delimiter: str | None, dialect: QuotedDialect, suspect: int, unquoted: bool = False
) -> bool:
    """Whether ``dialect`` reads ``sample``'s rows as well as DuckDB reads them as it sniffs it
    (``unquoted``: as it reads the file, having sniffed no quote in its first lines) but for at
    most the ``suspect`` lines (a stray quote is one malformed line with quotes; read unquoted,
    its quoted values split, or kept their quotes where a trailing delimiter's empty column took
    the rest): not when an unclosed quote swallows lines."""
    size = f"max_line_size = {MAX_SAMPLE_BYTES + 1}"
    sniffed = f"header = true, all_varchar = true, {size}"
    if delimiter or unquoted:
        sniffed += f", delim = {quote_literal(delimiter or dialect.delimiter)}"
    if unquoted:
        sniffed += ", quote = ''"
    with tempfile.TemporaryDirectory(prefix="portrait-csv-") as folder:
        path = Path(folder) / "sample.csv"
        path.write_text(sample, encoding="utf-8")  # decoded: the file's own encoding does not matter
        con = _sample_connection()
        try:
            try:
                as_sniffed = _rows_read(con, path, sniffed)
            except duckdb.Error:  # the sniffer gives up on the sample: so it would on the file
                as_sniffed = 0
            con.execute("DROP TABLE IF EXISTS _sample_rejects; DROP TABLE IF EXISTS _sample_scans")
            try:
                quoted = _rows_read(con, path, f"{dialect.read_options()}, {size}")
            except duckdb.Error:
                return False
            records = [row[0] for row in con.execute("SELECT csv_line FROM _sample_rejects").fetchall()]
        finally:
            con.close()
    # An unclosed quote among quoted values: read quoted, the read stops there naming its line
    # (portrait.validate), where read unquoted every quoted value was a malformed line.
    runaway = any(swallows_lines(r or "", dialect.delimiter, len(dialect.columns)) for r in records)
    return runaway or quoted + suspect >= as_sniffed


def _names_as_duckdb_reads(header: list[str]) -> list[str]:
    """The header's column names as DuckDB's reader names them: trimmed, an empty one
    ``column<i>`` (its position from 0; an export's trailing delimiter leaves one), a repeated one
    (any case) ``<name>_1``, ``<name>_2``, ..."""
    names, seen = [], {}
    for i, name in enumerate(header):
        name = name.strip() or f"column{i}"
        count = seen.get(name.lower(), 0)
        seen[name.lower()] = count + 1
        names.append(f"{name}_{count}" if count else name)
    return names


_CHOSEN: dict[tuple, QuotedDialect | None] = {}  # per version of a file: open_dataset runs per API request


def missed_quoting(
    path: Path, encoding: str, delimiter: str | None = None, cache: Path | None = None
) -> QuotedDialect | None:
    """The dialect to read ``path`` with when DuckDB, as it sniffs the file, would read its
    first lines' rows less well than RFC 4180 quoting; None for every other file (read as
    sniffed). Only a file whose first lines hold at least :data:`MIN_QUOTED_VALUES` values in
    double quotes and a quote that neither opens nor closes one is looked at further (10-50 ms),
    or one whose first lines hold no quote, and then the lines from its first quote on (the
    file read once more to find it: 0.04 s per 134 MB from the page cache);
    the answer is kept per version of the file, in memory and, given a ``cache`` folder, on disk
    for the next command (200 parts with inch marks, 55", took 3.3 s). ``encoding`` is DuckDB's
    name for the file's encoding; ``delimiter`` the configured one."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, encoding, delimiter, RULE_VERSION)
    if key not in _CHOSEN:
        if len(_CHOSEN) > 10_000:
            _CHOSEN.clear()
        stored = _stored_path(cache, key)
        found = _read_stored(stored)
        if found is False:
            try:
                found = _missed_quoting(path, encoding, delimiter)
            except (OSError, EOFError, zlib.error):  # the reader says what is wrong; not kept
                return None
            _store(stored, found)
        _CHOSEN[key] = found
    return _CHOSEN[key]


def _stored_path(cache: Path | None, key: tuple) -> Path | None:
    if cache is None:
        return None
    name = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:24]
    return cache / "csv-dialects" / f"{name}.json"


def _read_stored(stored: Path | None) -> QuotedDialect | None | bool:
    """The stored answer (None: read as sniffed), or False when there is none to trust."""
    if stored is None:
        return False
    try:
        data = json.loads(stored.read_text(encoding="utf-8"))
        if data is None:
            return None
        return QuotedDialect(str(data["delimiter"]), tuple(str(c) for c in data["columns"]), int(data["skip"]))
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: computed again
        return False


def _store(stored: Path | None, found: QuotedDialect | None) -> None:
    if stored is None:
        return
    try:
        stored.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(None if found is None else asdict(found)), stored)
    except OSError:  # a read-only cache only costs the next command the check again
        pass


def _missed_quoting(path: Path, encoding: str, delimiter: str | None) -> QuotedDialect | None:
    text = sample_text(path, encoding)
    if '\\"' in text:
        return None
    blank = len(text) - len(text.lstrip("\n"))  # lines before the header, which DuckDB skips
    first = text[blank:].split("\n", 1)[0]
    chosen = delimiter or guessed_delimiter(first)
    if '"' not in text:
        return _missed_late_quoting(path, encoding, delimiter, first, chosen, blank)
    # Only a quote that neither opens nor closes a value (nor is doubled inside one), or an
    # opening quote never closed, makes the values worth counting (over the whole sample at
    # once: a value quoted over several lines is one value). Counted first, with no regular
    # expression: about 3 ms for 1.5 MB, where the values' count takes 10 ms more.
    rest = f"\n{text}\n".replace('""', "") if '""' in text else f"\n{text}\n"
    opening = rest.count(chosen + '"') + rest.count('\n"')
    closing = rest.count('"' + chosen) + rest.count('"\n')
    if rest.count('"') == opening + closing and opening == closing:
        return None
    suspect = len(_suspect_value(chosen).findall(text))
    if not suspect:
        return None  # every quoted value is whole: the sniffer reads them as RFC 4180 does
    quoted = len(_quoted_value(chosen).findall(text))
    if quoted < MIN_QUOTED_VALUES or quoted <= suspect:  # "Classic" T-shirt: values that start with a quote
        return None
    dialect = _dialect(first, chosen, blank)
    return dialect if dialect is not None and _better_quoted(text, delimiter, dialect, suspect) else None


def _dialect(first: str, chosen: str, blank: int) -> QuotedDialect | None:
    """RFC 4180 quoting with the header line ``first``; None when its names would not do (read
    as sniffed: the header checks say what is wrong with it)."""
    header = _names_as_duckdb_reads(next(csv.reader([first], delimiter=chosen, quotechar='"'), []))
    if len(header) < 2 or len({name.lower() for name in header}) != len(header):
        return None
    return QuotedDialect(chosen, tuple(header), blank + 1)


def _missed_late_quoting(
    path: Path, encoding: str, delimiter: str | None, first: str, chosen: str, blank: int
) -> QuotedDialect | None:
    """A file whose sniffed lines hold no quote, which DuckDB then reads unquoted: quoted values
    further on (pandas quotes only a value holding the delimiter: a category "Home, Garden" new
    that month) split into malformed lines (2,500 of 30,000 in a test file). The lines from the
    first quote on are judged as the first lines are: read quoted when they hold whole quoted
    values, more of them than values that only start with a quote ("Classic" T-shirt, read as
    written either way), and reading them quoted loses no row that reading them unquoted keeps."""
    later = late_quote_sample(path, encoding)
    if later is None or '\\"' in later:
        return None
    quoted = len(_quoted_value(chosen).findall(later))
    suspect = len(_suspect_value(chosen).findall(later))
    if quoted < MIN_QUOTED_VALUES or quoted <= suspect:
        return None
    dialect = _dialect(first, chosen, blank)
    if dialect is None:
        return None
    sample = f"{first}\n{later}"  # the lines before the header, which DuckDB skips, left out
    return dialect if _better_quoted(sample, delimiter, replace(dialect, skip=1), suspect, unquoted=True) else None
