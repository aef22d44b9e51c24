"""A crowd over time: recomputed point-in-time at each date, never from today's features.

At every point the crowd is found again as of that date (features, tags, segments and
behaviour terms see only rows before it), so a point is not changed by anything that happened
after it. Per point: the crowd's size, its share of all customers known then, its revenue (net
spend of the point's members in the period since the previous point, or the same length before
the first point), the mean spend per member, and how many entered and left since the previous
point.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import parse_cutoff
from marketing.crowd import Crowd, CrowdData
from marketing.crowd_report import crowd_size_shown
from marketing.filters import parse_condition
from marketing.population import PURCHASES_READ, Population
from marketing.segments import SegmentStore
from marketing.tags import Library
from portrait import pages
from portrait.dataset import Dataset
from portrait.errors import PortraitError
from portrait.files import atomic_target, atomic_write, atomic_write_text, check_targets
from portrait.sql import quote_ident
from portrait.views import compute_once

EVERY = {"week": pd.DateOffset(weeks=1), "month": pd.DateOffset(months=1)}
MAX_POINTS = 120
TREND_COLUMNS = ["orders_lifetime"]  # the smallest build: crowds add the columns they read


def trend_dates(start: str | dt.date, end: str | dt.date, every: str) -> list[dt.date]:
    """``start``, ``start + every``, ... up to ``end`` (inclusive); months keep the day of month."""
    if every not in EVERY:
        raise PortraitError(f"--every is week or month, not {every!r}")
    first, last = parse_cutoff(start), parse_cutoff(end)
    if last <= first:
        raise PortraitError(f"--to ({last}) must be after --from ({first})")
    dates = []
    while True:  # start + k steps (not step after step, which drifts: Jan 31, Feb 29, Mar 29)
        point = (pd.Timestamp(first) + EVERY[every] * len(dates)).date()
        if point > last or len(dates) > MAX_POINTS:
            break
        dates.append(point)
    if len(dates) > MAX_POINTS:
        raise PortraitError(
            f"more than {MAX_POINTS} points from {first} to {last} every {every}: at most {MAX_POINTS}; "
            "use a longer step or a shorter span"
        )
    return dates


def crowd_trend(
    dataset: Dataset,
    crowd: Crowd,
    dates: list[dt.date],
    library: Library,
    *,
    segments: SegmentStore | None = None,
    scores_dir: Path | None = None,
    manual_store: Path | None = None,
    say: Callable[[str], None] | None = None,
    every: str | None = None,
) -> pd.DataFrame:
    """One row per date: ``as_of, customers, base, share_of_base, revenue, mean_spend,
    entered, left`` (exact figures; see :func:`suppressed_trend`). Each point's period starts at
    the date before it; the first point's one step before it: ``every`` (``week``, ``month``: a
    calendar month, as :func:`trend_dates` steps), else the first two dates' distance."""
    say = say or (lambda message: None)
    step = dates[1] - dates[0] if len(dates) > 1 else dt.timedelta(days=31)
    first_period_start = (pd.Timestamp(dates[0]) - EVERY[every]).date() if every in EVERY else dates[0] - step
    rows, previous = [], None
    con = dataset.connect()
    try:
        say("reading the purchases once for every point")
        _read_purchases_once(con, max(dates))
        if dataset.has("customers"):  # every point reads it several times: its checks run once
            compute_once(con, "customers")
        first_seen = None
        if dataset.has("events"):
            say("reading the events once for every point")
            first_seen = _read_event_first_seen(con)
        first, last = con.execute("SELECT MIN(ts), MAX(ts) FROM _trend_purchases").fetchall()[0]
        if first is None:  # the purchases read are those before the last date
            raise PortraitError(f"no purchase before {max(dates)}: every date is before the data's range")
        first, last = pd.Timestamp(first).date(), pd.Timestamp(last).date()
        # one step after the last purchase at most: a calendar month with every = month (the
        # first two points' distance made it 30 or 31 days by where --from fell)
        latest = (pd.Timestamp(last) + EVERY[every]).date() if every in EVERY else last + step
        outside = [d for d in dates if d <= first or d > latest]
        if outside:
            raise PortraitError(
                f"dates outside the data's range (purchases from {first} to {last}): "
                f"{', '.join(map(str, outside[:5]))}; each point needs purchases before it, and none may be more "
                "than one step after the last purchase"
            )
        for i, as_of in enumerate(dates):
            say(f"point {i + 1} of {len(dates)}: {crowd.describe()} as of {as_of}")
            period_start = dates[i - 1] if i else first_period_start
            rows.append(
                _point(
                    dataset,
                    con,
                    crowd,
                    as_of,
                    period_start,
                    previous,
                    library,
                    segments,
                    scores_dir,
                    manual_store,
                    first_seen,
                )
            )
            previous = rows[-1].pop("_members")
    finally:
        con.close()
    names = {row.pop("_crowd") for row in rows}
    table = pd.DataFrame(rows)
    # a persona given by its id is headed by its name when every point's scores give it one
    # (a personas model refitted between points may give the id to another persona)
    if len(names) == 1 and (name := names.pop()) != crowd.describe():
        table.attrs[CROWD_NAME] = name
    return table


CROWD_NAME = "crowd"  # a trend table's attribute: the crowd's name where it is not crowd.describe()


def crowd_named(table: pd.DataFrame, crowd: Crowd) -> str:
    """How the files and the command name the crowd of a trend ``table`` of ``crowd``."""
    return table.attrs.get(CROWD_NAME) or crowd.describe()


def _read_purchases_once(con, last: dt.date) -> None:
    """Read the validated purchases before the last point into a table and point this
    connection's ``purchases`` view at it: each point then filters a table in memory instead of
    re-reading, parsing and de-duplicating the source (same rows, same columns)."""
    columns = [row[0] for row in con.execute("DESCRIBE SELECT * FROM purchases").fetchall()]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _trend_purchases AS SELECT * FROM purchases WHERE ts < ?",
        [dt.datetime.combine(last, dt.time())],
    )
    listed = ", ".join(quote_ident(c) for c in columns)
    con.execute(f"CREATE OR REPLACE TEMP VIEW purchases AS SELECT {listed} FROM _trend_purchases")


def _read_event_first_seen(con) -> str:
    """Each event id's first event time, from one read of the events: who had an event before a
    point is who first had one before it, so the points' customers are found without reading
    the ~100M events at every point (a point's event features, when a crowd needs them, still
    read the events before it)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _trend_event_first_seen AS "
        "SELECT customer_id, MIN(ts) AS first_ts FROM clean_events GROUP BY customer_id"
    )
    return "_trend_event_first_seen"


def _point(
    dataset, con, crowd, as_of, period_start, previous, library, segments, scores_dir, manual_store, first_seen
) -> dict:
    """One point: the crowd found again as of ``as_of`` on the shared connection."""
    with Population(dataset, as_of, scores_dir=scores_dir, con=con, event_first_seen=first_seen) as population:
        # A filter's feature columns are built with the point's own (one feature build per
        # point; asking for them later would build every column again)
        columns = list(TREND_COLUMNS)
        if crowd.kind == "where":
            condition = parse_condition(crowd.value, population.schema(), behaviour=True)
            columns += sorted(set(condition.columns) - set(columns))
        data = CrowdData(population, library, segments=segments, manual_store=manual_store, columns=columns)
        mask = data.mask(crowd)
        named = data.named(crowd).describe()
        members = pd.Index(data.ids[mask])
        revenue = _revenue(population, members, period_start)
        base = len(mask)
    entered = left = None
    if previous is not None:
        stayed = int((members.get_indexer(previous) >= 0).sum())
        entered, left = len(members) - stayed, len(previous) - stayed
    return {
        "as_of": as_of.isoformat(),
        "period_start": period_start.isoformat(),
        "customers": len(members),
        "base": base,
        "share_of_base": len(members) / base if base else np.nan,
        "revenue": revenue,
        "mean_spend": revenue / len(members) if len(members) else np.nan,
        "entered": entered,
        "left": left,
        "_members": members,
        "_crowd": named,
    }


def _revenue(population: Population, members: pd.Index, since: dt.date) -> float:
    """Net spend of ``members`` from ``since`` to the population's as-of date (purchases read once)."""
    if not len(members):
        return 0.0
    con = population.con
    con.register("_trend_members", pd.DataFrame({"customer_id": members.astype("str")}))
    try:
        value = con.execute(
            f"SELECT SUM(amount) FROM {PURCHASES_READ} JOIN _trend_members USING (customer_id) WHERE ts >= ?",
            [dt.datetime.combine(since, dt.time())],
        ).fetchall()[0][0]
    finally:
        con.unregister("_trend_members")
    return float(value or 0.0)


def suppressed_trend(table: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """Counts under ``min_cell`` as ``<N``; revenue and mean spend of such a point blank."""
    shown = table.astype(object).copy()
    small = table["customers"].to_numpy() < min_cell
    shown["customers"] = [str(crowd_size_shown(int(n), min_cell)) for n in table["customers"]]
    for column, pattern in (("share_of_base", "{:.4f}"), ("revenue", "{:.2f}"), ("mean_spend", "{:.2f}")):
        text = [("" if pd.isna(v) else pattern.format(v)) for v in table[column]]
        shown[column] = np.where(small, "", text)
    for column in ("entered", "left"):
        values = table[column]
        shown[column] = ["" if pd.isna(v) else (f"<{min_cell}" if v < min_cell else str(int(v))) for v in values]
    return shown


def trend_paths(out_dir: Path) -> dict[str, Path]:
    """The files a crowd trend writes in ``out_dir`` (checked before any work)."""
    return {"csv": out_dir / "trend.csv", "png": out_dir / "trend.png", "html": out_dir / "trend.html"}


def write_trend(table: pd.DataFrame, crowd: Crowd, min_cell: int, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = trend_paths(out_dir)
    check_targets(paths.values())
    shown = suppressed_trend(table, min_cell)
    atomic_write(shown, paths["csv"], csv=True)
    name = crowd_named(table, crowd)
    chart = _chart(table, shown, name, min_cell)
    import base64

    with atomic_target(paths["png"]) as tmp:  # the one atomic writer, as every output
        tmp.write_bytes(base64.b64decode(chart))
    title = f"Trend: {name}"
    body = (
        f"<h1>{escape(title)}</h1><p class='note'>Each point recomputed as of its date from data before it. Revenue: "
        f"net spend of the point's members since the previous point. Counts under {min_cell} shown as &lt;{min_cell}.</p>"
        f"{pages.img(chart, title)}{shown.to_html(index=False, na_rep='')}"
    )
    atomic_write_text(pages.page(title, body), paths["html"])
    return paths


def _chart(table: pd.DataFrame, shown: pd.DataFrame, name: str, min_cell: int) -> str:
    plt = pages.pyplot()
    dates = pd.to_datetime(table["as_of"])
    hidden = shown["revenue"].eq("").to_numpy()
    if hidden.all():  # no point may be drawn: a note, not empty panels with ticks of 0 and -0
        fig, ax = plt.subplots(figsize=(8, 1.6))
        ax.axis("off")
        ax.text(
            0.0,
            0.5,
            f"{name}: fewer than {min_cell} customers at every point, so nothing is drawn",
            va="center",
            fontsize=11,
        )
        return pages.png(fig)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(dates, np.where(hidden, np.nan, table["customers"]), marker="o", color="#c0392b")
    top.set_ylabel("customers in the crowd")
    top.set_title(name, loc="left", fontsize=11)
    # each point's revenue is of the period before it: the bar ends at the point's date
    step = dates.diff().median() if len(dates) > 1 else pd.Timedelta(days=7)
    bottom.bar(
        dates,
        np.where(hidden, 0, table["revenue"]),
        width=-max(step.days * 0.9, 1),
        align="edge",
        color="#95a5a6",
    )
    bottom.set_ylabel("revenue in the period")
    bottom.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    fig.autofmt_xdate()
    return pages.png(fig)
