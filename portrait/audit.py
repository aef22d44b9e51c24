"""The audit log: one JSON line per export or list pull, appended, never rewritten.

Every way customers leave the program as a list of ids (``portrait list``, ``portrait segment
export``, ``portrait crowd export``, the API's ``/lists/{model}`` and
``/segments/{name}/customers``) records who pulled it, when, what, with which filter and how
many customers it held, never the ids themselves::

    {"time": "2026-11-24T09:12:03.481Z", "who": "alice", "via": "api", "what": "GET /lists/{model}",
     "filter": {"model": "repurchase_90d", "top": 500}, "count": 500}

``who`` is the API key's name, or ``os:<user>`` for a command. The log is the file in
``$PORTRAIT_AUDIT_LOG``, else ``outputs/audit.log`` under the working directory
(:func:`audit_log_path`; ``portrait serve --audit FILE`` overrides it for the API). Each line is
one ``write`` on a descriptor opened with ``O_APPEND`` and is flushed to disk (``fsync``) before
the call returns, so concurrent writers (API workers, commands) never interleave or overwrite
one another and a line reported written survives a crash. A record that cannot be written is an
error: an export that cannot be accounted for does not go out.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from portrait.errors import Unavailable
from portrait.privacy import holds_personal_value

AUDIT_LOG_ENV = "PORTRAIT_AUDIT_LOG"
DEFAULT_AUDIT_LOG = Path("outputs") / "audit.log"
MAX_FILTER_TEXT = 2_000


def audit_log_path(given: Path | None = None) -> Path:
    """The audit log: ``given``, else ``$PORTRAIT_AUDIT_LOG``, else ``outputs/audit.log``."""
    if given is not None:
        return Path(given)
    return Path(os.environ.get(AUDIT_LOG_ENV) or DEFAULT_AUDIT_LOG)


def os_user() -> str:
    """Who runs a command, as the audit log names them: ``os:<login name>`` (or the uid)."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        return f"os:uid-{os.getuid()}"


def _plain(value: Any) -> Any:
    """Filter values as JSON can carry them: text bounded, paths as text, containers walked."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= MAX_FILTER_TEXT else text[:MAX_FILTER_TEXT] + "..."


# A condition naming customer ids (customer_id = '2070', customer_id in (...)): the values it
# compares are the ids the log never holds, so each quoted value is written as '...'. In any
# condition, a quoted value holding an e-mail address or a phone number, and a bare number of 8
# or more digits (a card or phone number compared with an attribute), are written so too.
_NAMES_IDS = re.compile(r"\bcustomer_id\b", re.IGNORECASE)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_LONG_NUMBER = re.compile(r"(?<![\w.])[0-9]{8,}(?:\.[0-9]+)?(?![\w.])")


def _masked(condition: str) -> str:
    if _NAMES_IDS.search(condition):
        masked = _QUOTED.sub("'...'", condition)
    else:
        masked = _QUOTED.sub(lambda m: "'...'" if holds_personal_value(m.group(0)) else m.group(0), condition)
    return _LONG_NUMBER.sub("...", masked)


def record_export(
    log_path: Path | None,
    who: str,
    what: str,
    filter: Mapping[str, Any],  # noqa: A002 - the word the log uses
    count: int,
    *,
    via: str = "cli",
    left_out: Mapping[str, int] | None = None,
    now: dt.datetime | None = None,
) -> dict:
    """Append one line to the audit log (``log_path``, or :func:`audit_log_path`'s default)
    and return it. ``filter`` is what chose the customers (model, top, where, segment, cell...):
    options left unset (None) are left out. ``count`` is how many customers went out;
    ``left_out`` how many the consent rules held back, per reason. Raises
    :class:`~portrait.errors.Unavailable` naming the file when the line cannot be written."""
    path = audit_log_path(log_path)
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    line = {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "who": who,
        "via": via,
        "what": what,
        "filter": _plain({k: _masked(v) if k == "where" and isinstance(v, str) else v for k, v in filter.items()}),
        "count": int(count),
    }
    if left_out:
        line["left_out"] = {str(k): int(v) for k, v in left_out.items()}
    data = (json.dumps(line, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            written = os.write(fd, data)
            if written != len(data):  # a full disk: the line is cut, say so rather than go on
                raise OSError(f"wrote {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise Unavailable(
            f"cannot write the audit log {path} ({exc.strerror or exc}), so nothing is exported: fix the "
            f"file or point {AUDIT_LOG_ENV} at a writable one"
        ) from None
    return line


def read_audit_log(log_path: Path | None = None) -> list[dict]:
    """Every line of the audit log, oldest first (none when it does not exist yet)."""
    path = audit_log_path(log_path)
    if not path.exists():
        return []
    return [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines() if text.strip()]
