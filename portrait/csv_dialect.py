"""Quoting DuckDB's CSV sniffer misses.

DuckDB chooses a CSV file's dialect from a sample of its first lines, and a dialect that fails
on any sampled line loses. One line with a stray quote (``"TV 55" LED"``, a quote inside a
quoted value not doubled) in that sample fails the quoted dialect, so the whole file is read
unquoted: every quoted value holding the delimiter (``"Home, Garden"``) then splits into too many
fields, and 75 of 301 lines of a real-looking export were quarantined; a quoted value without
one kept its quotes as text.

:func:`missed_quoting` finds such a file (the sniffer chose no quote while its first lines hold
quoted values) and gives the dialect to read it with instead: the sniffer's delimiter, RFC 4180
quoting (a quote inside a quoted value is doubled) and the header's column names, without
sniffing. The stray line is then one malformed line. A quote opened and never closed in a
quoted file runs on into the next lines, which a reader cannot tell apart from a value holding
line breaks: :mod:`portrait.validate` refuses the file when a malformed record spans lines,
rather than count the lines it lost as one.

Only files the sniffer reads unquoted while quoting is plain in their sample are changed; every
other file is read as DuckDB sniffs it. Backslash-escaped files (``\\"``) are left to it too.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from portrait import connections
from portrait.files import open_bytes
from portrait.sql import quote_literal

# The sample read (the first lines, up to this many bytes): DuckDB sniffs about 20,000 lines.
SAMPLE_BYTES = 1 << 20
# Sampled lines with a quoted value for the file to count as quoted: one could be a stray quote.
MIN_QUOTED_LINES = 3


@dataclass(frozen=True)
class QuotedDialect:
    """How to read a file the sniffer read unquoted: see the module docstring."""

    delimiter: str
    columns: tuple[str, ...]  # the header's names, in order

    def read_options(self) -> str:
        """``read_csv`` options for this dialect (the header line skipped, every column text)."""
        columns = ", ".join(f"{quote_literal(name)}: 'VARCHAR'" for name in self.columns)
        return (
            "auto_detect = false, header = false, skip = 1, strict_mode = true, "
            f"delim = {quote_literal(self.delimiter)}, quote = '\"', escape = '\"', columns = {{{columns}}}"
        )


def _quoted_value(delimiter: str) -> re.Pattern[str]:
    """A whole value in quotes (inner quotes doubled), between delimiters or line ends."""
    d = re.escape(delimiter)
    return re.compile(f'(?:^|{d})"(?:[^"]|"")*"(?={d}|$)')


def _quoted_line(delimiter: str) -> re.Pattern[str]:
    """A line every quote of which is RFC 4180's: values either quoted whole (inner quotes
    doubled) or without quotes."""
    d = re.escape(delimiter)
    value = f'(?:"(?:[^"]|"")*"|[^"{d}]*)'
    return re.compile(f"{value}(?:{d}{value})*")


def sample_lines(path: Path, encoding: str) -> list[str]:
    """The file's first lines, whole ones only (the last, maybe cut, is left out unless it is
    the only one), decoded in ``encoding`` with undecodable bytes replaced."""
    with open_bytes(path) as handle:
        data = handle.read(SAMPLE_BYTES + 1)
    text = data[:SAMPLE_BYTES].decode(encoding, errors="replace").lstrip("\ufeff")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if len(data) > SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]
    return [line for line in lines if line]


def backslash_escaped(path: Path, encoding: str) -> bool:
    """Whether the file's first lines escape quotes with a backslash (``\\"``) rather than by
    doubling them (RFC 4180, what Excel and pandas write); False for a file that cannot be read
    here (a path only Spark reads)."""
    try:
        return any('\\"' in line for line in sample_lines(path, encoding))
    except OSError:
        return False


def _sniffed(path: Path, encoding: str, delimiter: str | None) -> tuple[str, str, int] | None:
    """DuckDB's choice for the file as the product reads it (its delimiter, quote, skipped
    rows), or None when it cannot sniff it."""
    options = "header = true, all_varchar = true, ignore_errors = true"
    if delimiter:
        options += f", delim = {quote_literal(delimiter)}"
    if encoding != "utf-8":
        options += f", encoding = {quote_literal(encoding)}"
    con = connections.connect()
    try:
        row = con.execute(
            f"SELECT Delimiter, Quote, SkipRows FROM sniff_csv({quote_literal(str(path))}, {options})"
        ).fetchone()
    except Exception:  # noqa: BLE001 - whatever it is, the file's own read reports it
        return None
    finally:
        con.close()
    return (str(row[0]), str(row[1]), int(row[2])) if row else None


def missed_quoting(path: Path, encoding: str, delimiter: str | None = None) -> QuotedDialect | None:
    """The dialect to read ``path`` with when DuckDB's sniffer would read it unquoted although
    at least :data:`MIN_QUOTED_LINES` of its first lines hold a value in double quotes; None for
    every other file (read as sniffed). ``encoding`` is DuckDB's name for the file's encoding;
    ``delimiter`` the configured one, if any."""
    if encoding == "utf-16":  # its lines do not split at newline bytes; left to the sniffer
        return None
    lines = sample_lines(path, encoding)
    if len(lines) < 2 or not any('"' in line for line in lines) or any('\\"' in line for line in lines):
        return None
    # The sniffer (70 ms a file) is asked only when a sampled line breaks RFC 4180's quoting (a
    # clean quoted file is sniffed as quoted) and quoted values are common (MIN_QUOTED_LINES).
    guess = delimiter or max(",;\t|", key=lines[0].count)
    valid = _quoted_line(guess)
    if all(valid.fullmatch(line) for line in lines if '"' in line):
        return None
    if sum(1 for line in lines if _quoted_value(guess).search(line)) < MIN_QUOTED_LINES:
        return None
    sniffed = _sniffed(path, encoding, delimiter)
    if sniffed is None:
        return None
    sniffed_delimiter, quote, skipped = sniffed
    if quote == '"' or skipped:  # no quote chosen is "(empty)"; a file without quotes may get "'"
        return None
    chosen = delimiter or sniffed_delimiter
    if len(chosen) != 1 or chosen in '"\r\n':
        return None
    quoted = _quoted_value(chosen)
    if sum(1 for line in lines if quoted.search(line)) < MIN_QUOTED_LINES:
        return None
    header = next(csv.reader([lines[0]], delimiter=chosen, quotechar='"', doublequote=True), [])
    folded = [name.lower() for name in header]
    if len(header) < 2 or not all(header) or len(set(folded)) != len(folded):
        return None  # read as sniffed: the header checks say what is wrong with it
    return QuotedDialect(chosen, tuple(header))
