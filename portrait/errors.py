"""Errors a user sees: each names the table, the column and examples where it can.

Each class carries the HTTP status the API answers it with (``status_code``); the API maps
them in one place (``serving/routes/errors.py``), the command line exits 2 with the message.
"""

from __future__ import annotations

import re


class PortraitError(Exception):
    """An error whose message is meant for the person running the command.

    Through the API it is a 422 (the request cannot be served as asked) unless a subclass
    says otherwise; on the command line the exit code is ``exit_code``: 2, something to fix."""

    status_code = 422
    exit_code = 2


class NotFound(PortraitError):
    """What was asked for (a customer, a segment, a model, a tag) does not exist."""

    status_code = 404


class Unauthorized(PortraitError):
    """No credentials, or credentials nobody issued."""

    status_code = 401


class Forbidden(PortraitError):
    """Valid credentials whose role may not do this."""

    status_code = 403


# sysexits' EX_TEMPFAIL: a scheduler may run the command again later, unchanged
TRY_AGAIN_LATER = 75


class Busy(PortraitError):
    """Another process holds what the command needs (a lock, a locked database): the same
    command can simply run again later (exit 75)."""

    exit_code = TRY_AGAIN_LATER


class Conflict(PortraitError):
    """The request asks for a state that is no longer current (a page of a list whose scores
    were replaced since its first page)."""

    status_code = 409


class Unavailable(PortraitError):
    """The server cannot answer right now for a reason the operator must fix (a missing data
    set, an unreadable keys file or audit log)."""

    status_code = 503


class Unreachable(Unavailable):
    """A server the command needs did not answer (the MLflow tracking server down): the same
    command may succeed later, unchanged (exit 75)."""

    exit_code = TRY_AGAIN_LATER


class ContractError(PortraitError):
    """The data set breaks the input contract in a way no row-level quarantine can fix."""

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
        examples: list[dict] | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.examples = examples or []
        where = ".".join(p for p in (table, column) if p)
        text = f"{where}: {message}" if where else message
        if self.examples:
            shown = "\n".join(f"  {row}" for row in self.examples[:3])
            text += f"\nexample rows:\n{shown}"
        super().__init__(text)


class ConfigError(PortraitError):
    """A configuration file or option has an unknown key or a bad value."""


def first_line(exc: BaseException) -> str:
    """An exception's first line (a library's message often goes on with a stack or a row),
    or its type's name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# How far into a file :func:`_first_line_longer` looks for the line (the error path only).
LONG_LINE_SCAN_BYTES = 1 << 31


def _first_line_longer(path: str, limit: int) -> int | None:
    """The number of the first line of ``path`` longer than ``limit`` bytes (its end of line
    counted, as DuckDB counts), None when it cannot be read or is not found in the first
    :data:`LONG_LINE_SCAN_BYTES`. Lines are counted in chunks, never held whole."""
    if path.lower().endswith((".gz", ".zst", ".bz2", ".xz")):  # compressed: its bytes are not its lines
        return None
    try:
        with open(path, "rb") as handle:
            number, length, scanned = 1, 0, 0
            while scanned < LONG_LINE_SCAN_BYTES and (chunk := handle.read(1 << 20)):
                scanned += len(chunk)
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    if length + end - start + 1 > limit:
                        return number
                    number, length, start = number + 1, 0, end + 1
                length += len(chunk) - start
                if length > limit:
                    return number
    except OSError:
        return None
    return None


def read_error_reason(exc: Exception) -> str:
    """What a DuckDB error reading a source says, in one line: its first line, which never holds
    the source's text (the lines after it may quote a row of the file: personal data); for a line
    longer than a CSV line may be, the file and the sizes, which are further down."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    size = next((line for line in lines if line.startswith("Maximum line size of")), None)
    if size is not None:
        file = next((line.split("=", 1)[1].strip() for line in lines if line.strip().startswith("file =")), None)
        numbers = re.findall(r"\d+", size)
        actual = f"{int(numbers[1]):,} bytes" if len(numbers) > 1 else "more"
        # DuckDB's own "Line:" counts from its buffer, not the file ("Line: 1" for line 31)
        number = _first_line_longer(file, int(numbers[0])) if file else None
        return (
            f"{f'line {number:,}' if number else 'a line'}{' of ' + file if file else ''} holds {actual}, more than "
            f"the {int(numbers[0]):,} a CSV line may hold (a field of megabytes: free text or a file pasted into a cell?)"
        )
    if "not latin-1 encoded" in lines[0]:  # bytes 0x80-0x9F, which DuckDB's latin-1 refuses
        return (
            f"{lines[0]}: it has bytes 0x80-0x9F, control characters in latin-1 that Windows exports use "
            'for the euro sign, dashes and quotes (cp1252): name encoding = "cp1252" instead'
        )
    if "Error when sniffing file" in lines[0] or "state machine reached an invalid state" in lines[0]:
        return (  # DuckDB's own advice, further down, quotes none of the usual causes of an export
            f"{lines[0].rstrip('.')}: DuckDB could not tell how its lines split into fields. Are its lines "
            "ended in two ways (two exports pasted together, one with CRLF, one with LF)? Is there a title "
            "line above the header? Save it as one CSV with one kind of line end and the header first"
        )
    return lines[0]
