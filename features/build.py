"""Build the feature table as of a cutoff: ``build_features(dataset, cutoff, config)``.

Edge rules:

- The cutoff is a date (midnight) and is required. Only rows with ``ts < cutoff`` are read; a
  row at the cutoff or later changes nothing (tested).
- The customers are those with any purchase (or refund) or event before the cutoff, plus
  customers from the ``customers`` table whose ``signup_date`` is before the cutoff (when that
  column exists). Customers first seen after the cutoff are not in its rows.
- Customer attributes are the ``customers`` table as given (a snapshot, not point-in-time);
  date attributes become days before the cutoff, NULL when after it.
- The vocabulary of per-value shares (top categories, brands, channels, payment methods by
  spend) comes from the data before the cutoff unless passed in, so stacked cutoffs and a
  model's scoring can share one vocabulary.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Collection

import duckdb
import numpy as np
import pandas as pd

from features.catalogue import FAMILIES, OTHER_SLOT, Feature, Vocabulary, catalogue, slug
from features.config import FeatureConfig
from features.plan import (
    RECORDED_SQL,
    UNRECORDED_READ_AS,
    Step,
    compile_plan,
    droppable_after,
    event_type_vocabulary,
    purchase_steps,
    timestamp_literal,
)
from portrait.contract import MISSING_NUMBER_WORDS, MISSING_VALUE_WORDS, placeholder_word_expr
from portrait.dataset import Dataset
from portrait.engine import Engine, as_engine
from portrait.errors import PortraitError
from portrait.privacy import is_nested_type, personal_text_sql, safe_attribute_columns
from portrait.resources import cpu_seconds, peak_rss_bytes
from portrait.sql import quote_ident, quote_literal
from portrait.views import NUMERIC_TYPES, ZONE_PATTERN, compute_once, iso_text_timestamp, stored_timestamp, text_number

log = logging.getLogger(__name__)


# A cutoff more than this many days after the latest purchase is more often a mistake than a
# question (every purchase window up to a year is empty): crowd reports refuse it, the other
# commands say so. Defined once here, for every command.
LATE_AS_OF_DAYS = 366


# A date this many days after the latest purchase is said (a stopped feed, or a mistyped date):
# the 30-day windows are empty for everyone. Defined once here: the refresh and `score` say it.
STALE_FEED_DAYS = 31


def stale_feed_note(frame: pd.DataFrame, cutoff: dt.date) -> str | None:
    """A note when the latest purchase in ``frame`` (a feature table) is more than
    :data:`STALE_FEED_DAYS` (and at most :data:`LATE_AS_OF_DAYS`, refused elsewhere) days
    before ``cutoff``; None otherwise, without ``days_since_last_purchase`` and when nobody bought."""
    if "days_since_last_purchase" not in frame.columns:
        return None
    latest = frame["days_since_last_purchase"].min()
    if not latest > STALE_FEED_DAYS:  # NaN (nobody bought) is not
        return None
    return (
        f"the latest purchase in the data is {latest:.0f} days before {cutoff}: the 30-day windows are empty "
        "for everyone and recency grows for all (a stopped feed, or a mistyped date?)"
    )


def days_past_data(frame: pd.DataFrame) -> float | None:
    """How many days before the cutoff the latest purchase in ``frame`` (a feature table) is,
    when more than :data:`LATE_AS_OF_DAYS`; None otherwise, without ``days_since_last_purchase``
    and when nobody bought."""
    if "days_since_last_purchase" not in frame.columns:
        return None
    latest = frame["days_since_last_purchase"].min()
    return float(latest) if latest > LATE_AS_OF_DAYS else None  # NaN (nobody bought) compares False


def nobody_before(cutoff, consequence: str) -> str:
    """The message for a cutoff no customer existed before (a date before the data, most often)."""
    return (
        f"no customer has a purchase, event or signup before {cutoff}: {consequence} "
        "(is the as-of date before the data?)"
    )


def late_as_of_note(frame: pd.DataFrame, cutoff: dt.date, consequence: str = "") -> str | None:
    """A note when the latest purchase in ``frame`` is more than :data:`LATE_AS_OF_DAYS` before
    ``cutoff`` (:func:`days_past_data`); None otherwise."""
    latest = days_past_data(frame)
    if latest is None:
        return None
    consequence = consequence or "every purchase window up to a year is empty"
    return f"the latest purchase in the data is {latest:.0f} days before {cutoff}: {consequence}; is it the date meant?"


# A date as the help texts ask for it (YYYY-MM-DD), optionally with a time, which must be
# midnight: "01/06/2024" (June or January?), "24-06-01", "today" or an offset are refused, not
# guessed.
_DATE_TEXT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?", re.ASCII
)  # ASCII: int() reads other scripts' digits too


# The dates a cutoff may take: windows and horizons (up to ten years) reach back and forward
# from it without leaving the calendar, and 0001-01-01 or 9999-12-31 placeholders are refused.
CUTOFF_RANGE = (dt.date(1900, 1, 1), dt.date(2199, 12, 31))


def parse_cutoff(value: str | dt.date | dt.datetime | pd.Timestamp) -> dt.date:
    """A cutoff as a date from 1900 to 2199 (:data:`CUTOFF_RANGE`); a timestamp must be at
    midnight, since windows count whole days. Text must be ``YYYY-MM-DD`` (a time after it only
    if midnight)."""
    day = _cutoff_date(value)
    if not CUTOFF_RANGE[0] <= day <= CUTOFF_RANGE[1]:
        raise PortraitError(f"cutoff {day} is out of range: give a date from 1900-01-01 to 2199-12-31")
    return day


def _cutoff_date(value: str | dt.date | dt.datetime | pd.Timestamp) -> dt.date:
    if isinstance(value, str):
        match = _DATE_TEXT.fullmatch(value.strip())
        try:
            day = dt.date(*(int(part) for part in match.groups()[:3])) if match else None
        except ValueError:
            day = None
        if day is None:
            raise PortraitError(f"cutoff {value!r} is not a date (expected YYYY-MM-DD)")
        if any(part and int(part) for part in match.groups()[3:]):
            raise PortraitError(f"cutoff {value!r} must be a date at midnight; windows count whole days")
        return day
    if isinstance(value, pd.Timestamp | dt.datetime):
        if (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0):
            raise PortraitError(f"cutoff {value} must be a date at midnight; windows count whole days")
        return value.date() if isinstance(value, dt.datetime) else value.to_pydatetime().date()
    if isinstance(value, dt.date):
        return value
    raise PortraitError(f"cutoff must be a date, got {type(value).__name__}")


def compute_vocabulary(con: duckdb.DuckDBPyConnection | Engine, config: FeatureConfig) -> Vocabulary:
    """Top values by net spend (ties broken by name) in ``f_purchases`` (rows before the cutoff)."""
    engine = as_engine(con)
    # One pass over the lines: net spend per combination of the four columns (thousands of rows
    # where the lines are millions), each column's ranking read from that.
    engine.materialize(
        "f_vocabulary_spend",
        "SELECT category, brand, channel, payment_method, SUM(amount) AS spend FROM f_purchases "
        "GROUP BY category, brand, channel, payment_method",
    )

    def top(column: str, k: int) -> tuple[str, ...]:
        # A value holding an e-mail address or a phone number ("Engraving for jo@example.com")
        # would name features, and through them MLflow's runs and the tags ("interest: ..."),
        # for good: it is left out, its lines 'other', and said (how many, never which).
        personal = personal_text_sql(column)
        rows = engine.rows(
            f"SELECT {column} FROM f_vocabulary_spend WHERE {column} IS NOT NULL AND NOT {personal} "
            f"GROUP BY {column} ORDER BY SUM(spend) DESC, {column} LIMIT {int(k)}"
        )
        left_out = engine.rows(f"SELECT COUNT(DISTINCT {column}) FROM f_vocabulary_spend WHERE {personal}")[0][0]
        if left_out:
            log.warning(
                "purchases.%s: %d value(s) hold an e-mail address or a phone number; left out of the values "
                "features are named after (their lines count as 'other')",
                column,
                left_out,
            )
        return tuple(r[0] for r in rows)

    try:
        return Vocabulary(
            categories=top("category", config.top_categories),
            brands=top("brand", config.top_brands),
            channels=top("channel", config.top_channels),
            payment_methods=top("payment_method", config.top_payment_methods),
        )
    finally:
        engine.drop("f_vocabulary_spend")


def vocabulary_as_of(
    con: duckdb.DuckDBPyConnection | Engine, cutoff: dt.date, config: FeatureConfig, with_store: bool = False
) -> Vocabulary:
    """The vocabulary :func:`build_features` would compute for ``cutoff``; the lines it reads
    stay in ``f_purchases`` (with ``store_id`` when ``with_store``, for crowd reports)."""
    steps = purchase_steps(cutoff, with_store)
    _materialize(con, steps, keep=tuple(s.name for s in steps))
    return compute_vocabulary(con, config)


def step_label(name: str) -> str:
    """What a person reads for a plan step: ``f_orders`` -> ``orders`` (a table of rows), a
    stage ``f_stage_orders`` -> ``orders per customer`` (its aggregates)."""
    if name.startswith("f_stage_"):
        return name.removeprefix("f_stage_").replace("_", " ") + " per customer"
    return name.removeprefix("f_").replace("_", " ")


def _materialize(
    con: duckdb.DuckDBPyConnection | Engine,
    steps: list,
    keep: tuple[str, ...] = (),
    built: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> None:
    """Run each step into a temporary table (but those already ``built``), dropping every table
    no later step reads unless asked to ``keep`` it. The engine (:mod:`portrait.engine`) decides
    what a table is: DuckDB a temporary table, Spark a cached view. ``progress`` is told each
    step as it starts."""
    engine = as_engine(con)
    for step, done in zip(steps, droppable_after(steps), strict=True):
        if step.name not in built:
            if progress is not None:
                progress(f"features: {step_label(step.name)}")
            started = _clock()
            engine.materialize(step.name, step.sql)
            _log_step(step.name, started)
        for name in done:
            if name not in keep:
                engine.drop(name)


def _clock() -> tuple[float, float]:
    """Wall and CPU (user + system, every thread of the process) seconds, for the step log."""
    return time.perf_counter(), cpu_seconds()


def _log_step(name: str, started: tuple[float, float]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        wall, cpu = _clock()
        peak = peak_rss_bytes() / 1024**3
        log.debug(
            "feature step %s took %.1f s (%.1f s CPU; peak RSS so far %.2f GB)",
            name,
            wall - started[0],
            cpu - started[1],
            peak,
        )


# A date written day or month first (31/12/2023, 12-31-23, 31.12.2023 10:00): not read as one.
_OTHER_DATE_SHAPE = r"^[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}([ T].*)?$"
# A text column of numbers with at most this many distinct values is a code (a category).
NUMERIC_CODES = 12
# A text column with more distinct values than this, and than half of its values, names people
# one by one (an identifier, a name, free text), not groups of them: not an attribute...
IDENTIFIER_LIKE = 100
# ...nor a sparse one (a value for fewer than half of the customers) most of whose values are
# distinct, however few: notes kept on a few customers (one note on one customer is one). A full
# column of 35 cities among 60 customers stays an attribute.
SPARSE_IDENTIFIER_LIKE = 0
# ...nor, however few the customers, a column whose values are nearly all distinct (at least this
# share of at least DISTINCT_MINIMUM values): 40 customers' names, one each, were a category
# and printed as a crowd report's values (a user's test).
DISTINCT_SHARE = 0.9
DISTINCT_MINIMUM = 20


def names_people(present: int, distinct: int, floor: int = IDENTIFIER_LIKE) -> bool:
    """Whether a text column of ``present`` values, ``distinct`` of them different, names
    customers one by one rather than groups of them (see :data:`IDENTIFIER_LIKE`)."""
    return distinct > max(floor, present // 2) or (present >= DISTINCT_MINIMUM and distinct >= DISTINCT_SHARE * present)


def attribute_kinds(con: duckdb.DuckDBPyConnection | Engine, decimal: str = ".") -> dict[str, str]:
    """Each extra column of ``customers`` as ``number``, ``date`` or ``category`` (``decimal``:
    the table's decimal separator, for numbers written as text). Personal-data
    columns are not among them: the data set's views never hold them, whether named like
    personal data or holding e-mail addresses or phone numbers (:mod:`portrait.privacy`), and a
    column named like one (``email``, ``phone``, ...) is passed over here too."""
    engine = as_engine(con)
    columns = engine.columns("SELECT * FROM customers")
    allowed = set(safe_attribute_columns(name for name, *_ in columns))
    kinds: dict[str, str] = {}
    text = []
    types = {name: sql_type.upper() for name, sql_type, *_ in columns}
    for name, sql_type, *_ in columns:
        if name not in allowed:
            continue
        sql_type = sql_type.upper()
        if is_nested_type(sql_type):
            log.warning("customers.%s: nested values (lists, structs, maps); not used", name)
            continue
        if sql_type.startswith(NUMERIC_TYPES):
            kinds[name] = "number"
        elif sql_type.startswith(("DATE", "TIMESTAMP")):
            kinds[name] = "date"
        elif sql_type.startswith(("BLOB", "BIT")):
            log.warning("customers.%s: binary values (stored as %s); not used", name, sql_type)
        else:  # text, or read as its text: a BOOLEAN flag's true/false, a TIME's, a UUID's
            kinds[name] = "category"
            text.append(name)
    if text:
        # Text columns (a CSV's are all text) read by their values, in one scan of the table:
        # all dates (a signup_date) are dates; all numbers with more than a few distinct values
        # (an age, an income) are numbers, where a handful of numeric codes stays a category;
        # nearly one value per customer names people, not groups: not an attribute.
        # A word for no value ("NULL", "N/A") is no value: it made an age column a category.
        # Every count reads the value so ("NaN" is no value here, but TRY_CAST reads it as a number);
        # a column is of dates or numbers when all its values but the words for none in such a
        # column (R's NA, a dash: MISSING_NUMBER_WORDS) are.
        counts = "COUNT(*), " + ", ".join(
            f"COUNT({v}), COUNT(TRY_CAST({v} AS DATE)), COUNT({text_number(f'TRIM({v})', decimal)}), "
            f"COUNT(DISTINCT {v}), "
            f"COUNT(CASE WHEN regexp_matches(TRIM({v}), '{_OTHER_DATE_SHAPE}') THEN 1 END), "
            f"COUNT({present_text(q, MISSING_NUMBER_WORDS)})"
            for q, v in ((as_text(n, types[n]), present_text(as_text(n, types[n]))) for n in text)
        )
        rows, *row = engine.rows(f"SELECT {counts} FROM customers")[0]
        for i, name in enumerate(text):
            present, dates, numbers, distinct, other_dates, measured = row[6 * i : 6 * i + 6]
            floor = SPARSE_IDENTIFIER_LIKE if present * 2 < rows else IDENTIFIER_LIKE
            if present and measured == dates:
                kinds[name] = "date"
            elif present and measured == numbers:
                if distinct > NUMERIC_CODES:
                    kinds[name] = "number"
            elif present and present == other_dates:  # 31/12/2023: which is the day is not guessed
                # Many values: left out, as any column of nearly one value per customer; a few
                # stay a category (as before this rule: a model or segment may read them so).
                dropped = names_people(present, distinct, floor)
                if dropped:
                    del kinds[name]
                log.warning(
                    "customers.%s: dates not written YYYY-MM-DD (such as 31/12/2023 or 12/31/2023); %s: "
                    "export them as YYYY-MM-DD to have the days since each",
                    name,
                    "not used" if dropped else "each date used as a category",
                )
            elif names_people(present, distinct, floor):
                del kinds[name]
                log.warning("customers.%s: nearly one value per customer, an identifier or free text; not used", name)
    return kinds


def attribute_instant(column: str, sql_type: str, timezone: str) -> str:
    """SQL reading the date attribute ``column`` (stored as ``sql_type``) as a timestamp in the
    data set's zone, as purchase times are read: a zone-aware column, or text with an offset or
    zone (``2024-03-31T23:30:00-05:00``), converted; a date, a plain timestamp, or text without
    a zone taken as in the zone (a date is its midnight; text such as ``2024/03/15``, which
    ``attribute_kinds`` takes for a date, as before). Casting text with an offset straight to
    a date or timestamp dropped the offset: a signup after the cutoff in New York read as
    before it."""
    name = quote_ident(column)
    sql_type = sql_type.upper()
    if sql_type.startswith(("DATE", "TIMESTAMP")):
        return stored_timestamp(name, sql_type, timezone)
    text = f"TRIM(CAST({name} AS VARCHAR))"
    without_zone = (
        f"CASE WHEN NOT regexp_matches({text}, {quote_literal(ZONE_PATTERN)}) "
        f"THEN COALESCE(TRY_CAST({text} AS TIMESTAMP), CAST(TRY_CAST({text} AS DATE) AS TIMESTAMP)) END"
    )
    return f"COALESCE({iso_text_timestamp(text, timezone)}, {without_zone})"


def _warn_unread_dates(con, kinds: dict[str, str], types: dict[str, str], timezone: str) -> None:
    """Say how many values of a text date attribute are read as missing: a zone the time zone
    database does not know (``2024-03-10 01:00:00 BST``) or an impossible offset. Such a
    customer has no signup date (not a customer before any cutoff by it), which would
    otherwise pass unsaid; a purchase line with one is quarantined and counted."""
    text_dates = [
        name
        for name, kind in kinds.items()
        if kind == "date" and not types[name].upper().startswith(("DATE", "TIMESTAMP"))
    ]
    if not text_dates:
        return
    counts = ", ".join(
        f"COUNT(CASE WHEN {quote_ident(name)} IS NOT NULL AND {attribute_instant(name, types[name], timezone)} IS NULL "
        "THEN 1 END)"
        for name in text_dates
    )
    for name, unread in zip(text_dates, as_engine(con).rows(f"SELECT {counts} FROM customers")[0], strict=True):
        if unread:
            log.warning(
                "customers.%s: %d value(s) with a time zone the time zone database does not know (such as BST) "
                "or an impossible offset, read as missing; write an offset (+01:00) or the zone's full name",
                name,
                unread,
            )


def _attribute_select(
    kinds: dict[str, str],
    features: list[Feature],
    cutoff: dt.date,
    types: dict[str, str],
    timezone: str,
    decimal: str = ".",
) -> str:
    parts = ["customer_id"]
    for feature in features:
        if feature.family != "attributes":
            continue
        column = quote_ident(feature.sql)
        kind = kinds[feature.sql]
        if kind == "date":
            instant = attribute_instant(feature.sql, types[feature.sql], timezone)
            days = f"DATE_DIFF('day', CAST({instant} AS DATE), DATE '{cutoff.isoformat()}')"
            # > 0: the cutoff is the first instant of its day, so a date on that day, at any hour,
            # is not before it (as the spine's own signup rule reads timestamps).
            parts.append(f"CASE WHEN {days} > 0 THEN CAST({days} AS DOUBLE) END AS {feature.name}")
        elif kind == "number" and types.get(feature.sql, "VARCHAR").upper() == "VARCHAR":  # a CSV's text
            parts.append(f"{text_number(f'TRIM({column})', decimal)} AS {feature.name}")
        elif kind == "number":
            parts.append(f"TRY_CAST({column} AS DOUBLE) AS {feature.name}")
        else:
            parts.append(f"CAST({present_text(as_text(feature.sql, types[feature.sql]))} AS VARCHAR) AS {feature.name}")
    return f"SELECT {', '.join(parts)} FROM customers"


def as_text(column: str, sql_type: str) -> str:
    """SQL: the customers column ``column`` (stored as ``sql_type``) as text, for a category: a
    column stored otherwise (a BOOLEAN flag, a TIME, a UUID) cast, which TRIM and the words for no
    value need (a flag stopped every command reading attributes with a binder error)."""
    return quote_ident(column) if sql_type.upper() == "VARCHAR" else f"CAST({quote_ident(column)} AS VARCHAR)"


def present_text(column: str, words: tuple[str, ...] = MISSING_VALUE_WORDS) -> str:
    """SQL: the text column's value, NULL where it is a word for no value (``words``, by
    default :data:`portrait.contract.MISSING_VALUE_WORDS`: "NULL", "N/A", "\\N")."""
    return f"CASE WHEN {placeholder_word_expr(column, words)} THEN NULL ELSE {column} END"


def _register_vocabulary(con: duckdb.DuckDBPyConnection | Engine, vocab: Vocabulary) -> None:
    tables = {
        "vocab_category": vocab.categories,
        "vocab_brand": vocab.brands,
        "vocab_channel": vocab.channels,
        "vocab_payment": vocab.payment_methods,
        "vocab_event_type": tuple(v for v, _ in event_type_vocabulary()),
    }
    for name, values in tables.items():
        frame = pd.DataFrame({"value": pd.Series(values, dtype="str"), "slot": np.arange(len(values), dtype="int64")})
        # each value's rank by name: ties of a favourite go to the first by name, the same
        # whatever the vocabulary's order (:func:`_named_slot`)
        frame["name_rank"] = frame["value"].rank(method="first").astype("int64") - 1
        as_engine(con).register_frame(name, frame)


def build_features(
    dataset: Dataset,
    cutoff: str | dt.date,
    config: FeatureConfig | None = None,
    *,
    vocabulary: Vocabulary | None = None,
    families: Collection[str] | None = None,
    con: duckdb.DuckDBPyConnection | Engine | None = None,
    only: Collection[str] | None = None,
    purchases_ready: bool = False,
    on_engine: bool = False,
    event_first_seen: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """One row per customer as of ``cutoff`` (see the module docstring for the edge rules).

    Returns a frame keyed by ``customer_id`` (sorted), with int64 counts, float64 amounts,
    shares and ratios, and pandas categoricals for favourites and text attributes. The
    vocabulary used is in ``frame.attrs["vocabulary"]``, each customers column's kind (number,
    date, category: what its attribute feature is) in ``frame.attrs["attributes"]``.
    ``families`` restricts the build to those families (all by default); ``only`` to those
    features (and what they are computed from: derived features' inputs). A pass no selected feature needs is
    not run. ``purchases_ready`` says :func:`vocabulary_as_of` already read the purchases
    before this cutoff into ``f_purchases`` on ``con``: that one read is reused, and left in
    place for the caller (who owns it) instead of being dropped. ``con`` may be a DuckDB
    connection or an :class:`~portrait.engine.Engine` with the data set's views registered
    (the Spark engine: :func:`portrait.spark_engine.spark_dataset`). ``on_engine`` (Spark):
    return the table where it was built (a Spark DataFrame, finished batch by batch by the same
    :func:`_finish`) instead of collecting it; the caller owns the engine's steps and computes
    the table before closing the engine (on a local master the steps are checkpoints, freed by
    ``close`` and not recomputed).
    ``event_first_seen``: a relation on ``con`` of each event id's first event time
    (:func:`features.plan.compile_plan`), read instead of the events when no event feature is built.
    ``progress``: told each step as it starts (``features: orders``), for a command's log.
    """
    config = config or FeatureConfig()
    cutoff = parse_cutoff(cutoff)
    own_connection = con is None
    con = con or dataset.connect()
    try:
        mark = as_engine(con).steps_mark()
        first_steps = purchase_steps(cutoff)
        if not purchases_ready:  # else vocabulary_as_of(con, cutoff) built them on this connection
            _materialize(con, first_steps, keep=tuple(s.name for s in first_steps), progress=progress)
        vocabulary = vocabulary or compute_vocabulary(con, config)
        if own_connection and dataset.has("customers"):
            # Read three times below (the attribute kinds, the signups, the attributes), each
            # read repeating the view's de-duplication, conflict check and identity ranking; a
            # caller's connection is left as it was given.
            compute_once(con, "customers")
        decimal = dataset.sources["customers"].decimal if dataset.has("customers") else "."
        kinds = attribute_kinds(con, decimal) if dataset.has("customers") else {}
        types = dict(as_engine(con).columns("SELECT * FROM customers")) if kinds else {}
        _warn_unread_dates(con, kinds, types, dataset.timezone)
        features = select_families(catalogue(config, vocabulary, kinds), families)
        if only is not None:
            features = select_features(features, only)
        spine_extra = None
        if "signup_date" in kinds and kinds["signup_date"] == "date":
            spine_extra = (
                f"SELECT customer_id FROM customers "
                f"WHERE {attribute_instant('signup_date', types['signup_date'], dataset.timezone)} < "
                f"{timestamp_literal(cutoff)}"
            )
        # A purchase column with no value before the cutoff (an export without discounts, a log
        # of dates without times): the features reading it are missing, not 0. From the lines
        # before the cutoff alone.
        unrecorded = [c for c in UNRECORDED_READ_AS if not as_engine(con).rows(RECORDED_SQL[c])[0][0]]
        steps = compile_plan(
            features,
            cutoff,
            config,
            has_events=dataset.has("events"),
            spine_extra=spine_extra,
            attribute_select=(
                _attribute_select(kinds, features, cutoff, types, dataset.timezone, decimal) if kinds else None
            ),
            event_first_seen=event_first_seen,
            unrecorded=unrecorded,
        )
        _register_vocabulary(con, vocabulary)
        callers = tuple(s.name for s in first_steps) if purchases_ready else ()  # the caller's to drop
        _materialize(
            con,
            steps[:-1],
            keep=_read_by(steps[-1]) + callers,
            built=tuple(s.name for s in first_steps),
            progress=progress,
        )
        if on_engine:
            dtypes = {"customer_id": "str"} | {f.name: f.dtype for f in features}
            return as_engine(con).finished(steps[-1].sql, lambda batch: _finish(batch, features, vocabulary), dtypes)
        started = _clock()

        def drop_steps() -> None:  # once the table is fetched, before it is converted
            for step in first_steps + steps[:-1]:
                if step.name not in callers:
                    as_engine(con).drop(step.name)

        if progress is not None:
            progress("features: joining them into one table")
        frame = as_engine(con).wide_frame(f"{steps[-1].sql} ORDER BY customer_id", release=drop_steps)
        as_engine(con).free_dropped_since(mark)  # the table is fetched: nothing reads its steps now
        _log_step(steps[-1].name, started)
    finally:
        if own_connection:
            con.close()
    started = _clock()
    frame = _finish(frame, features, vocabulary)
    _log_step("favourites and dtypes (pandas)", started)
    frame.attrs["vocabulary"] = vocabulary.to_dict()
    frame.attrs["attributes"] = dict(kinds)  # each customers column's kind: what its feature is
    frame.attrs["cutoff"] = cutoff.isoformat()
    return frame


def select_families(features: list[Feature], families: Collection[str] | None) -> list[Feature]:
    """The features of ``families``, less derived ones whose inputs are not selected."""
    if families is None:
        return features
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise PortraitError(f"unknown feature families {sorted(unknown)}; known: {list(FAMILIES)}")
    chosen = [f for f in features if f.family in families]
    names = {f.name for f in chosen}
    every_name = {f.name for f in features}

    def inputs_present(feature: Feature) -> bool:
        used = set(re.findall(r"[a-z_0-9]+", feature.sql)) & every_name
        return used <= names

    return [f for f in chosen if f.stage != "derived" or inputs_present(f)]


def select_features(features: list[Feature], names: Collection[str]) -> list[Feature]:
    """``names`` and every feature they are computed from (a derived feature's inputs), in
    catalogue order."""
    by_name = {f.name: f for f in features}
    needed: set[str] = set()
    frontier = [n for n in names if n in by_name]
    while frontier:
        name = frontier.pop()
        if name in needed:
            continue
        needed.add(name)
        feature = by_name[name]
        if feature.stage == "derived":
            frontier += [n for n in re.findall(r"[a-z_0-9]+", feature.sql) if n in by_name]
    return [f for f in features if f.name in needed]


def _finish(frame: pd.DataFrame, features: list[Feature], vocabulary: Vocabulary) -> pd.DataFrame:
    """Favourites from the share columns, explicit dtypes, catalogue column order."""
    names = {f.name for f in features}
    favourites = {}  # beside the frame, not inserted into it (one block per column: no copies)
    if "favourite_category" in names:
        favourites["favourite_category"] = _named_slot(frame["favourite_category"], sorted(vocabulary.categories))
    if "favourite_channel" in names:
        favourites["favourite_channel"] = _named_slot(frame["favourite_channel"], sorted(vocabulary.channels))
    result = {"customer_id": frame["customer_id"].astype("str")}
    for feature in features:
        column = favourites[feature.name] if feature.name in favourites else frame[feature.name]
        if feature.dtype == "int":
            result[feature.name] = column.fillna(0).astype("int64")
        elif feature.dtype == "category":
            result[feature.name] = column.astype("category")
        else:  # rounded to 9 decimals by the plan's last step (features.plan.compile_plan)
            result[feature.name] = column.astype("float64")
    # One block per column, as built: consolidating 150 columns of 1M rows into one array per
    # dtype copies them all (about 3 s) for nothing a reader needs.
    return pd.DataFrame(result, copy=False)


def _named_slot(slots: pd.Series, values: list[str]) -> pd.Series:
    """Each slot of the vocabulary ``values`` as its value; ``OTHER_SLOT`` as 'other'; NULL kept."""
    codes = slots.to_numpy(dtype="float64", na_value=np.nan)
    missing, other = np.isnan(codes), codes == OTHER_SLOT
    named = ~missing & ~other
    if ((codes[named] < 0) | (codes[named] >= len(values))).any():
        raise AssertionError(f"a favourite slot outside the vocabulary of {len(values)} values")
    index = np.where(named, np.nan_to_num(codes), 0).astype(int)
    result = np.where(missing, None, np.where(other, "other", np.asarray([*values, ""], dtype=object)[index]))
    return pd.Series(result, index=slots.index, dtype=object)


def _read_by(step: Step) -> tuple[str, ...]:
    return tuple(set(re.findall(r"\bf_[a-z_]+\b", step.sql)))


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in ("customer_id", "cutoff")]


__all__ = [
    "LATE_AS_OF_DAYS",
    "STALE_FEED_DAYS",
    "stale_feed_note",
    "days_past_data",
    "late_as_of_note",
    "nobody_before",
    "build_features",
    "vocabulary_as_of",
    "parse_cutoff",
    "feature_columns",
    "slug",
]
