"""The consumption funnel: how many customers reach each step, in order, within a window.

``compute_funnel`` counts, as of a date, the customers who reach step 1 in the window
``[as_of - N days, as_of)`` (midnight; ``ts >= as_of - N days and ts < as_of``, the window rule
of :mod:`marketing.behaviour`), then step 2 strictly after the time they reached step 1, and so
on: a customer reaches step k at the first row of step k's kind later than the time they
reached step k-1. Steps are

- an event type of the ``events`` table, compared case-insensitively after trimming;
- ``purchase``: a purchase order (a line in the window that is not a refund, as the features and
  the labels count one; a refund alone is not one), at the order's first timestamp in the window;
- ``repurchase``: a purchase order after the one that reached ``purchase`` (it must follow a
  purchase step).

Everything is whole-table SQL in DuckDB with bound parameters: one read of the window's rows of
the kinds asked for, one query per step (a join of the previous step's customers with the rows
of the next kind after their time), then one grouped query for the counts and median times,
overall and per group. Only rows before the as-of date are read for the counts; the as-of date
is checked against the data's range first. Groups (personas, segments, tags) are given as a
``customer_id, group`` table; a customer in several groups counts in each.

Small cells: :func:`suppress` writes any count below ``min_cell`` as ``"<min_cell"``, and the
rates, drop-off and median computed from a suppressed count are suppressed with it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from marketing.filters import check_window_days
from portrait.contract import purchase_order
from portrait.errors import PortraitError
from portrait.privacy import holds_personal_value

log = logging.getLogger(__name__)

PURCHASE = "purchase"
REPURCHASE = "repurchase"
PURCHASE_STEPS = (PURCHASE, REPURCHASE)
GROUP_BY = ("persona", "segment", "tag")
ALL_CUSTOMERS = "all customers"
COLUMNS = (
    "group",
    "step",
    "customers",
    "conversion_from_previous",
    "conversion_from_first",
    "drop_off",
    "median_hours_from_previous",
)
_PURCHASE_KIND = 0  # the kind code of purchase orders; event types are 1, 2, ...
_MAX_CHART_PANELS = 12


class FunnelError(PortraitError):
    """A funnel that cannot be computed as asked: bad steps, window, date or grouping."""


@dataclass
class Funnel:
    """The counts per group and step (unsuppressed; see :func:`suppress` before anything leaves)."""

    as_of: dt.date
    within_days: int
    steps: list[str]
    table: pd.DataFrame  # group, step_number, step, customers, conversion_*, drop_off, median_hours_from_previous
    by: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def start(self) -> dt.date:
        return self.as_of - dt.timedelta(days=self.within_days)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.table["group"]))


def parse_steps(steps: str | list[str]) -> list[str]:
    """Step names from ``"view, add_to_cart,purchase"`` (or a list): trimmed, lower-case."""
    raw = steps.split(",") if isinstance(steps, str) else list(steps)
    names = [s.strip().lower() for s in raw]
    if any(not n for n in names):
        raise FunnelError(f"--steps {','.join(raw)!r} has an empty step name; give names separated by commas")
    if len(names) < 2:
        raise FunnelError(
            f"a funnel needs at least two steps, got {names}; e.g. --steps view,add_to_cart,purchase,repurchase"
        )
    for i, name in enumerate(names):
        if name == REPURCHASE and not any(n in PURCHASE_STEPS for n in names[:i]):
            raise FunnelError(
                f"step {i + 1} 'repurchase' needs a 'purchase' step before it (a repurchase is an order after "
                "the one that reached purchase)"
            )
    return names


def check_window(within_days: int) -> int:
    return check_window_days(within_days, FunnelError)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _has_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute("SELECT COUNT(*) FROM duckdb_views() WHERE view_name = ? AND NOT internal", [name]).fetchall()
    return bool(rows[0][0])


def check_as_of(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, tables: list[str], within_days: int | None = None
) -> tuple[dt.date, dt.date]:
    """The first and last day of the data in ``tables``. An as-of date on or before the first day
    (nothing before it) is an error, and so is one whose window ``[as_of - within_days, as_of)``
    starts after the last day (no row can be in it); one a few days after the data (a weekend
    without a new export) is not. Without ``within_days``: more than a day after the last."""
    # The first and last timestamps do not change with de-duplication or identity merging, so
    # they are read from the typed good rows (typed_t) when the connection has them: at 1M
    # customers that is ~1 s instead of ~14 s through the de-duplicating views.
    sources = [f"typed_{t}" if _has_view(con, f"typed_{t}") else t for t in tables]
    parts = " UNION ALL ".join(f"SELECT MIN(ts) AS lo, MAX(ts) AS hi FROM {t}" for t in sources)
    lo, hi = con.execute(f"SELECT MIN(lo), MAX(hi) FROM ({parts})").fetchall()[0]
    if lo is None:
        raise FunnelError(f"the data set has no rows in {' or '.join(tables)}")
    first, last = lo.date(), hi.date()
    latest = last + dt.timedelta(days=within_days if within_days is not None else 1)
    if as_of <= first or as_of > latest:
        raise FunnelError(
            f"--as-of {as_of} is outside the data's range: {' and '.join(tables)} run from {first} to {last}, "
            f"so the as-of date must lie from {first + dt.timedelta(days=1)} to {latest}"
            + (f" (a window of {within_days} days must reach the data)" if within_days is not None else "")
        )
    return first, last


def check_inputs(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, steps: list[str], within_days: int | None = None
) -> None:
    """Event steps need an events table; the as-of date must lie in the range of the tables
    the steps read (purchases always: it is the data set's one required table)."""
    event_types = [s for s in steps if s not in PURCHASE_STEPS]
    if event_types and not _has_view(con, "events"):
        raise FunnelError(
            f"unknown step(s) {event_types}: this data set has no events table, so the only steps are "
            f"{list(PURCHASE_STEPS)}"
        )
    check_as_of(con, as_of, ["purchases", *(["events"] if event_types else [])], within_days)


def compute_funnel(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    steps: list[str],
    within_days: int,
    groups: pd.DataFrame | None = None,
    by: str | None = None,
    check_range: bool = True,
    timezone: str = "UTC",
) -> Funnel:
    """The funnel on a connection with the data set's views (``open_dataset(...).connect()``).

    ``groups``: ``customer_id, group`` rows (a customer may be in several groups); the counts
    are given for all customers first, then per group in the order the groups first appear.
    ``timezone``: the data set's, whose local times the waits are measured between as instants
    (a wait across a change to summer time was an hour too long). Steps are still ordered by
    local time: within the hour a change back to winter time repeats, the order can be wrong."""
    steps = parse_steps(steps)
    within_days = check_window(within_days)
    event_types = list(dict.fromkeys(s for s in steps if s not in PURCHASE_STEPS))
    uses_purchases = any(s in PURCHASE_STEPS for s in steps)
    if check_range:
        check_inputs(con, as_of, steps, within_days)
    start, end = _midnight(as_of - dt.timedelta(days=within_days)), _midnight(as_of)
    codes = {name: i + 1 for i, name in enumerate(event_types)}
    kinds = [_PURCHASE_KIND if s in PURCHASE_STEPS else codes[s] for s in steps]

    # One read of the window's rows of the kinds asked for: events by type, purchase orders.
    reads, params = [], []
    if event_types:
        cases = " ".join("WHEN ? THEN ?" for _ in event_types)
        placeholders = ", ".join("?" for _ in event_types)
        reads.append(
            f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(CASE LOWER(TRIM(event_type)) {cases} END AS INTEGER) AS kind, ts "
            f"FROM events WHERE ts >= ? AND ts < ? AND LOWER(TRIM(event_type)) IN ({placeholders})"
        )
        params += [v for name in event_types for v in (name, codes[name])] + [start, end, *event_types]
    if uses_purchases:
        reads.append(
            f"SELECT CAST(customer_id AS VARCHAR) AS customer_id, {_PURCHASE_KIND} AS kind, MIN(ts) AS ts "
            f"FROM purchases WHERE ts >= ? AND ts < ? GROUP BY customer_id, order_id HAVING {purchase_order()}"
        )
        params += [start, end]
    con.execute(f"CREATE OR REPLACE TEMP TABLE _funnel_rows AS {' UNION ALL '.join(reads)}", params)
    try:
        seen = {row[0] for row in con.execute("SELECT DISTINCT kind FROM _funnel_rows").fetchall()}
        unseen = [name for name in event_types if codes[name] not in seen]
        if unseen:
            _check_event_types(con, unseen, as_of)
        table = _step_counts(con, kinds, steps, groups, timezone)
    finally:
        for name in ["_funnel_rows", *(f"_funnel_reach_{k}" for k in range(1, len(steps) + 1)), "_funnel_groups"]:
            con.execute(f"DROP TABLE IF EXISTS {name}")
    return Funnel(as_of=as_of, within_days=within_days, steps=steps, table=table, by=by)


def _check_event_types(con: duckdb.DuckDBPyConnection, names: list[str], as_of: dt.date) -> None:
    """A step the window never has may still be an event type of the data (then nobody reaches
    it); one the data never has is a typo more often than not. One it has only from the as-of
    date on (a type tracked since) is reached by nobody then, with a warning, as conditions say
    (marketing.behaviour.check_values)."""
    # Which types occur does not change with de-duplication or identity merging (see check_as_of).
    source = "typed_events" if _has_view(con, "typed_events") else "events"
    first_seen = {
        row[0]: row[1]
        for row in con.execute(
            f"SELECT LOWER(TRIM(event_type)) AS t, MIN(ts) < ? FROM {source} "
            "WHERE t IS NOT NULL AND t <> '' GROUP BY t",
            [_midnight(as_of)],
        ).fetchall()
        if not holds_personal_value(str(row[0]))  # never echo a payload holding an address or a phone number
    }
    known = sorted(first_seen)
    for name in names:
        if name in first_seen:
            if not first_seen[name]:
                log.warning(
                    "events.event_type = %r occurs only on or after %s: nobody reaches it before then", name, as_of
                )
            continue
        choices = [*known, *PURCHASE_STEPS]
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        raise FunnelError(
            f"unknown step {name!r}: no event has that event_type"
            + (f"; closest: {close}" if close else "")
            + f". Known steps: event types {known or '(none)'} and {list(PURCHASE_STEPS)}"
        )


def _step_counts(
    con: duckdb.DuckDBPyConnection,
    kinds: list[int],
    steps: list[str],
    groups: pd.DataFrame | None,
    timezone: str = "UTC",
) -> pd.DataFrame:
    # Step 1: the first row of its kind; step k: the first row of its kind after step k-1's time.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _funnel_reach_1 AS SELECT customer_id, MIN(ts) AS t, CAST(NULL AS DOUBLE) AS gap "
        "FROM _funnel_rows WHERE kind = ? GROUP BY customer_id",
        [kinds[0]],
    )
    for k in range(2, len(steps) + 1):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _funnel_reach_{k} AS "
            "SELECT r.customer_id, MIN(f.ts) AS t, "
            "epoch(timezone(?, MIN(f.ts))) - epoch(timezone(?, r.t)) AS gap "  # instants: DST-safe waits
            f"FROM _funnel_reach_{k - 1} r JOIN _funnel_rows f "
            "ON f.customer_id = r.customer_id AND f.kind = ? AND f.ts > r.t GROUP BY r.customer_id, r.t",
            [timezone, timezone, kinds[k - 1]],
        )
    reached = " UNION ALL ".join(
        f"SELECT {k} AS step_number, customer_id, gap FROM _funnel_reach_{k}" for k in range(1, len(steps) + 1)
    )
    aggregates = "COUNT(*) AS customers, MEDIAN(gap) / 3600.0 AS median_hours"
    frames = [
        con.execute(f"SELECT step_number, {aggregates} FROM ({reached}) s GROUP BY step_number")
        .df()
        .assign(group=ALL_CUSTOMERS)
    ]
    names = [ALL_CUSTOMERS]
    if groups is not None:
        groups = groups[["customer_id", "group"]].astype("str").drop_duplicates()
        names += [g for g in dict.fromkeys(groups["group"]) if g != ALL_CUSTOMERS]
        con.register("_funnel_groups_frame", groups)
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE _funnel_groups AS SELECT * FROM _funnel_groups_frame")
        finally:
            con.unregister("_funnel_groups_frame")
        frames.append(
            con.execute(
                f'SELECT g."group", s.step_number, {aggregates} FROM ({reached}) s '
                'JOIN _funnel_groups g ON g.customer_id = s.customer_id GROUP BY g."group", s.step_number'
            ).df()
        )
    counts = pd.concat(frames, ignore_index=True)
    # The full grid, so that a step nobody in a group reaches shows as 0 (a few rows per group).
    grid = pd.MultiIndex.from_product([names, range(1, len(steps) + 1)], names=["group", "step_number"]).to_frame(
        index=False
    )
    table = grid.merge(counts, on=["group", "step_number"], how="left")
    table["customers"] = table["customers"].fillna(0).astype("int64")
    table["step"] = [steps[k - 1] for k in table["step_number"]]
    previous = table.groupby("group", sort=False)["customers"].shift(1)
    first = table.groupby("group", sort=False)["customers"].transform("first")
    table["conversion_from_previous"] = table["customers"] / previous.where(previous > 0)
    table["conversion_from_first"] = table["customers"] / first.where(first > 0)
    table["drop_off"] = (previous - table["customers"]).astype("Int64")
    table["median_hours_from_previous"] = table["median_hours"]
    return table[["group", "step_number", *COLUMNS[1:]]]


# ---------------------------------------------------------------- groups


def persona_groups(scores_dir: Path | None, as_of: dt.date) -> tuple[pd.DataFrame, dt.date]:
    """``customer_id, group`` from the persona of the newest scores table not later than ``as_of``."""
    from portrait.outputs import scores_as_of

    if scores_dir is None:
        raise FunnelError("--by persona needs --scores DIR (a portrait score folder with personas)")
    if not Path(scores_dir).is_dir():
        raise FunnelError(f"scores folder {scores_dir} does not exist")
    scores, date = scores_as_of(Path(scores_dir), as_of)
    if "persona_name" not in scores.columns:
        raise FunnelError(
            f"the scores of {date} in {scores_dir} have no persona_name: score with a personas model registered"
        )
    named = scores[scores["persona_name"].notna()]
    frame = pd.DataFrame(
        {"customer_id": named["customer_id"].astype("str").to_numpy(), "group": named["persona_name"].astype("str")}
    )
    return frame.sort_values("group", kind="stable"), date


def tag_groups(tags_file: Path | None, as_of: dt.date) -> tuple[pd.DataFrame, dt.date | None]:
    """``customer_id, group`` from a tags table (``portrait tags apply``); a folder means its
    newest ``tags_<date>.parquet`` not later than ``as_of``. Tags dated after ``as_of`` are refused."""
    from marketing.tags import tags_dates
    from marketing.tags import tags_file as tags_path
    from portrait.files import read_parquet

    if tags_file is None:
        raise FunnelError("--by tag needs --tags-file F (tags_<date>.parquet written by portrait tags apply)")
    path = Path(tags_file)
    if path.is_dir():
        dates = [d for d in tags_dates(path) if d <= as_of]
        if not dates:
            raise FunnelError(f"no tags_<date>.parquet in {path} dated {as_of} or earlier (run portrait tags apply)")
        path = tags_path(path, dates[-1])
    if not path.is_file():
        raise FunnelError(f"tags file {path} does not exist")
    date = _date_in_name(path.stem.removeprefix("tags_"))
    if date is not None and date > as_of:
        raise FunnelError(f"tags file {path} is as of {date}, after --as-of {as_of}: later tags would leak the future")
    try:
        tags = read_parquet(path, columns=["customer_id", "tag"])
    except Exception as exc:  # a file that is not a tags table
        raise FunnelError(f"{path} is not a tags table with customer_id and tag columns: {exc}") from None
    frame = pd.DataFrame({"customer_id": tags["customer_id"].astype("str"), "group": tags["tag"].astype("str")})
    return frame.sort_values("group", kind="stable"), date


def _date_in_name(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def segment_groups(population, segments_dir: Path | None) -> pd.DataFrame:
    """``customer_id, group`` for every saved segment, evaluated on ``population`` (its as-of date)."""
    from marketing.manual import default_store
    from marketing.segments import SegmentEvaluator, SegmentStore
    from marketing.tags import load_library

    store = SegmentStore(segments_dir)
    segments = list(store.all().values())
    if not segments:
        raise FunnelError(f"--by segment: no saved segments in {store.folder}/ (portrait segment create)")
    evaluator = SegmentEvaluator(population, store, load_library(None), default_store())
    evaluator.prepare(segments)
    frames = []
    for segment in segments:
        members = evaluator.evaluate(segment).members
        frames.append(pd.DataFrame({"customer_id": members.astype("str").to_numpy(), "group": segment.name}))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- leaving the program


def suppress(table: pd.DataFrame, min_cell: int = 10) -> pd.DataFrame:
    """The table as it may leave the program: counts below ``min_cell`` become ``"<min_cell"``,
    and so do the rates, drop-off and median computed from a suppressed count (a drop-off between
    two shown counts is shown, however small: it is their difference). Rates are
    rounded to 4 decimals, hours to 1."""
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 1:
        raise FunnelError(f"--min-cell must be a whole number of at least 1, got {min_cell!r}")
    hidden = f"<{min_cell}"
    small = table["customers"] < min_cell
    previous_small = small.groupby(table["group"], sort=False).shift(1, fill_value=False).astype(bool)
    first_small = small.groupby(table["group"], sort=False).transform("first").astype(bool)
    out = pd.DataFrame({"group": table["group"], "step": table["step"]})

    def shown(values: pd.Series, hide: pd.Series, digits: int | None) -> pd.Series:
        def one(value, hidden_here):
            if hidden_here:
                return hidden
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                return ""
            return round(float(value), digits) if digits is not None else int(value)

        return pd.Series([one(v, h) for v, h in zip(values, hide, strict=True)], index=values.index, dtype="object")

    out["customers"] = shown(table["customers"], small, None)
    out["conversion_from_previous"] = shown(table["conversion_from_previous"], small | previous_small, 4)
    out["conversion_from_first"] = shown(table["conversion_from_first"], small | first_small, 4)
    # the difference of two counts shown beside it: hidden only with one of them
    out["drop_off"] = shown(table["drop_off"], small | previous_small, None)
    out["median_hours_from_previous"] = shown(table["median_hours_from_previous"], small | previous_small, 1)
    return out


def wait_text(hours: float) -> str:
    """A median wait for people: minutes under an hour, hours under two days, else days."""
    if hours * 60 < 1:
        return "under 1 min"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def funnel_chart(funnel: Funnel, min_cell: int, path: Path) -> str | None:
    """A bar chart per group (one panel each, the all-customers funnel first): bars are the
    customers reaching each step, labelled with the count, the conversion from the previous
    step and the median time since it; suppressed cells show "<min_cell" and no bar. Returns a
    note when only some groups fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from portrait.files import atomic_target

    table = funnel.table
    shown_table = suppress(table, min_cell)
    groups = funnel.groups
    note = None
    if len(groups) > _MAX_CHART_PANELS:
        firsts = table[table["step_number"] == 1].set_index("group")["customers"]
        largest = firsts.drop(ALL_CUSTOMERS).sort_values(ascending=False, kind="stable").index
        keep = {ALL_CUSTOMERS, *largest[: _MAX_CHART_PANELS - 1]}
        note = f"the chart shows the {_MAX_CHART_PANELS - 1} largest of {len(groups) - 1} groups; all are in the CSV"
        groups = [g for g in groups if g in keep]
    columns = 1 if len(groups) == 1 else 2 if len(groups) <= 4 else 3
    rows = math.ceil(len(groups) / columns)
    steps = len(funnel.steps)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(7.8 * columns, (0.62 * steps + 1.3) * rows + 0.6),
        squeeze=False,
        constrained_layout=True,
    )
    colours = plt.get_cmap("tab10").colors
    labels = [f"{i + 1}. {s}" for i, s in enumerate(funnel.steps)]
    for index, group in enumerate(groups):
        ax = axes[index // columns][index % columns]
        part = table[table["group"] == group]
        shown = shown_table.loc[part.index]
        counts = [0 if s == f"<{min_cell}" else int(s) for s in shown["customers"]]
        colour = colours[index % len(colours)]
        y = list(range(steps))[::-1]
        ax.barh(y, counts, color=colour, alpha=0.85, height=0.62)
        top = max(counts) or 1
        for yy, count, (_, row) in zip(y, counts, shown.iterrows(), strict=True):
            if isinstance(row["customers"], str):
                text = f"{row['customers']} customers"
            else:
                text = f"{count:,}"
                if isinstance(row["conversion_from_previous"], float):
                    text += f"  ·  {row['conversion_from_previous']:.1%} of previous"
                if isinstance(row["median_hours_from_previous"], float):
                    text += f"  ·  median {wait_text(row['median_hours_from_previous'])} later"
            ax.text(count + top * 0.02, yy, text, va="center", fontsize=9)
        ax.set_yticks(y, labels, fontsize=10)
        ax.set_xlim(0, top * 2.1)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(4, integer=True))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.tick_params(axis="x", labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        first = shown["customers"].iloc[0]
        entered = first if isinstance(first, str) else f"{first:,}"
        ax.set_title(f"{group} ({entered} at step 1)", fontsize=11, loc="left")
        ax.set_xlabel("customers", fontsize=9)
    for index in range(len(groups), rows * columns):
        axes[index // columns][index % columns].axis("off")
    lines = [
        f"Funnel as of {funnel.as_of}" + (f", by {funnel.by}" if funnel.by else ""),
        f"steps in order within {funnel.within_days} days ({funnel.start} to {funnel.as_of - dt.timedelta(days=1)})",
    ]
    fig.suptitle("\n".join([*lines, *([note] if note else [])]), fontsize=12)
    with atomic_target(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return note
