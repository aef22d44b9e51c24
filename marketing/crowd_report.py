"""The crowd portrait: a crowd against a comparison base on every dimension, in numbers.

``crowd_report`` returns the exact figures (used by tests and by the comparison); everything
that leaves the program goes through :func:`suppressed_dimensions` and friends, which show a
count of fewer than ``min_cell`` customers as ``"<N"`` and blank every figure computed from it.
Within one dimension, a single suppressed count could be recovered by subtracting the others
from the crowd's size, so the next-smallest count is suppressed with it (secondary suppression).

Edge rules: TGI is 100 x (share in the crowd / share in the base), blank when the base has
nobody with that value. Revenue is net spend (refunds deducted) in the 365 days before the
as-of date. The line-level tables (categories, brands, cross-sell) read purchase lines of those
365 days: a category's spend and units are net (refunds deducted), its buyers are customers
with a sold line of it in those days and net spend on it above 0 before the date (a refund
alone is not buying; what was bought and returned in full is not bought), its penetration
the buyers' share of the crowd, and its TGI the ratio of penetrations. "Share who bought"
counts customers with a purchase order in the 365 days (a refund alone is none).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from marketing.crowd import ACTIVITY, ACTIVITY_WINDOW, CrowdData

DEFAULT_MIN_CELL = 10
TOP = 10


@dataclass
class CrowdReport:
    crowd: str
    base: str
    as_of: dt.date
    min_cell: int
    size: int
    base_size: int
    figures: pd.DataFrame  # measure, crowd, base (exact numbers)
    dimensions: pd.DataFrame  # dimension, label, value, count, base_count, share, base_share, tgi
    categories: pd.DataFrame | None = None
    brands: pd.DataFrame | None = None
    cross_sell: dict = field(default_factory=dict)
    activity: pd.DataFrame | None = None
    labels: dict[str, str] = field(default_factory=dict)  # dimension -> human label
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.size == 0


def dimension_table(dims: pd.DataFrame, crowd: np.ndarray, base: np.ndarray, labels: dict[str, str]) -> pd.DataFrame:
    """Counts and shares of every dimension value in the crowd and in the base (exact), one row
    per value someone in the whole population holds: rows of only the values a small crowd or
    base holds would list those few customers' values, whatever their counts show."""
    parts = []
    n_crowd, n_base = int(crowd.sum()), int(base.sum())
    # Each value's customers, as two random projections of the rows they are (equal sets give
    # equal sums, summed in the same row order): values of two dimensions that hold the same
    # customers ("novice" buyers and "1" order ever placed) are hidden together (linked).
    weights = np.random.default_rng(0).random((2, len(dims)))
    for name in dims.columns:
        column = dims[name]
        codes = column.cat.codes.to_numpy()
        k = len(column.cat.categories)
        valid = codes >= 0
        signature = [np.bincount(codes[valid], weights=w[valid], minlength=k) for w in weights]
        counts = np.bincount(codes[crowd], minlength=k)
        base_counts = np.bincount(codes[base], minlength=k)
        keep = np.bincount(codes[codes >= 0], minlength=k) > 0
        share = counts / n_crowd if n_crowd else np.zeros(k)
        base_share = base_counts / n_base if n_base else np.zeros(k)
        with np.errstate(divide="ignore", invalid="ignore"):
            tgi = np.where(base_share > 0, 100 * share / np.where(base_share > 0, base_share, 1), np.nan)
        parts.append(
            pd.DataFrame(
                {
                    "dimension": name,
                    "label": labels.get(name, name.replace("_", " ")),
                    "value": np.asarray(column.cat.categories, dtype=object),
                    "count": counts,
                    "base_count": base_counts,
                    "share": share,
                    "base_share": base_share,
                    "tgi": tgi,
                    "_held": np.bincount(codes[valid], minlength=k),
                    "_sig1": signature[0],
                    "_sig2": signature[1],
                }
            )[keep]
        )
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    same = table.groupby(["_held", "_sig1", "_sig2"], sort=False).ngroup().to_numpy()
    shared = np.bincount(same)[same] > 1
    table["linked"] = np.where(shared, same, -1)
    table["held"] = table["_held"]  # by the whole population: what pooled_rare_values reads
    return table.drop(columns=["_held", "_sig1", "_sig2"])


def pooled_rare_values(table: pd.DataFrame, min_cell: int, n_crowd: int, n_base: int) -> pd.DataFrame:
    """``table`` (:func:`dimension_table`) with the values that fewer than ``min_cell`` customers
    of the whole population hold pooled into one row per dimension ("other values"), last: a
    count under the minimum was hidden, but the value itself was printed (a user's test: 40
    customers' names as a dimension, each "<10" beside the name). The pooled row's figures are
    the sums, hidden in turn when small."""
    if table.empty or min_cell <= 1:
        return table
    rare = table["held"].to_numpy() < min_cell
    if not rare.any():
        return table
    pooled = (
        table[rare]
        .groupby(["dimension", "label"], sort=False)
        .agg(count=("count", "sum"), base_count=("base_count", "sum"), held=("held", "sum"), values=("value", "size"))
        .reset_index()
    )
    pooled["share"] = pooled["count"] / n_crowd if n_crowd else 0.0
    pooled["base_share"] = pooled["base_count"] / n_base if n_base else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled["tgi"] = np.where(pooled["base_share"] > 0, 100 * pooled["share"] / pooled["base_share"], np.nan)
    pooled["value"] = [pooled_label(n, min_cell) for n in pooled.pop("values")]
    pooled["linked"] = -1
    kept = table[~rare]
    order = {name: i for i, name in enumerate(pd.unique(table["dimension"]))}
    both = pd.concat([kept.assign(_last=0), pooled.assign(_last=1)], ignore_index=True)
    both["_order"] = both["dimension"].map(order)
    both = both.sort_values(["_order", "_last"], kind="stable").drop(columns=["_order", "_last"])
    return both[table.columns].reset_index(drop=True)


def pooled_label(values: int, min_cell: int) -> str:
    """The one row (or column) standing for ``values`` values each held by fewer than ``min_cell`` customers."""
    return f"other values ({values}, each held by fewer than {min_cell} customers)"


def pooled_note(min_cell: int) -> str:
    """What a page says of the pooled values (nothing when none can be: ``min_cell`` 1)."""
    if min_cell <= 1:
        return ""
    return (
        f" The values fewer than {min_cell} customers of the whole data set hold are one row or column, 'other values'."
    )


def pooled_dimension(column: pd.Series, min_cell: int) -> pd.Series:
    """``column`` (a categorical dimension over the whole population) with the values fewer
    than ``min_cell`` of its customers hold as one value, :func:`pooled_label`, last: what a
    crosstab or a comparison lists, as :func:`pooled_rare_values` does for a report (a count
    hidden as "<10" still printed the value beside it: a rare value is one customer's). Values
    nobody holds and missing values stay as they were."""
    if min_cell <= 1:
        return column
    codes = column.cat.codes.to_numpy()
    categories = column.cat.categories
    held = np.bincount(codes[codes >= 0], minlength=len(categories))
    rare = (held > 0) & (held < min_cell)
    if not rare.any():
        return column
    kept = np.flatnonzero(~rare)
    new_code = np.full(len(categories), len(kept))  # the rare ones: the pooled value, last
    new_code[kept] = np.arange(len(kept))
    pooled_codes = np.where(codes >= 0, new_code[np.maximum(codes, 0)], -1)
    new_categories = [*categories[kept], pooled_label(int(rare.sum()), min_cell)]
    return pd.Series(
        pd.Categorical.from_codes(pooled_codes, categories=pd.Index(new_categories, dtype=object)),
        index=column.index,
        name=column.name,
    )


def crowd_report(
    data: CrowdData,
    crowd: np.ndarray,
    base: np.ndarray,
    *,
    crowd_name: str,
    base_name: str,
    min_cell: int = DEFAULT_MIN_CELL,
    lines: bool = True,
) -> CrowdReport:
    """The portrait of ``crowd`` (a mask over ``data``'s customers) against ``base``."""
    if min_cell < 1:
        raise ValueError("min_cell is at least 1")
    frame = data.frame
    labels = {name: data.dimension_label(name) for name in data.dimensions.columns}
    report = CrowdReport(
        crowd=crowd_name,
        base=base_name,
        as_of=data.as_of,
        min_cell=min_cell,
        size=int(crowd.sum()),
        base_size=int(base.sum()),
        figures=key_figures(frame, crowd, base),
        dimensions=pooled_rare_values(
            dimension_table(data.dimensions, crowd, base, labels), min_cell, int(crowd.sum()), int(base.sum())
        ),
        labels=labels,
    )
    if report.empty:
        report.notes.append(f"the crowd has no customers as of {report.as_of}")
        return report
    if data.has_events:
        report.activity = activity_table(frame, crowd, base)
    else:
        report.notes.append("the data set has no events table: no views, carts, campaigns or service contacts")
    if lines:
        data.say("top categories, brands and cross-sell from the purchase lines")
        report.categories, report.brands, report.cross_sell = line_tables(data, crowd, base)
    return report


def key_figures(frame: pd.DataFrame, crowd: np.ndarray, base: np.ndarray) -> pd.DataFrame:
    spend = frame["spend_365d"].fillna(0).to_numpy(dtype=float)
    orders = frame["orders_365d"].fillna(0).to_numpy(dtype=float) if "orders_365d" in frame else None
    lifetime = frame["orders_lifetime"].fillna(0).to_numpy(dtype=float)
    total_revenue = spend.sum()
    # a purchase order in the window, not money: refunds alone are no purchase, and purchases
    # cancelled out by refunds still are
    bought = orders > 0 if orders is not None else spend > 0

    def figures(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        revenue = float(spend[mask].sum())
        return {
            "customers": n,
            "share of all customers": n / len(frame) if len(frame) else np.nan,
            f"revenue, last {ACTIVITY_WINDOW} days": revenue,
            "share of revenue": revenue / total_revenue if total_revenue else np.nan,
            "mean spend per customer": revenue / n if n else np.nan,
            "share who bought in the last 365 days": float(bought[mask].mean()) if n else np.nan,
            "mean orders ever": float(lifetime[mask].mean()) if n else np.nan,
            **(
                {"mean orders, last 365 days": float(orders[mask].mean()) if n else np.nan}
                if orders is not None
                else {}
            ),
        }

    crowd_figures, base_figures = figures(crowd), figures(base)
    return pd.DataFrame(
        {"measure": list(crowd_figures), "crowd": list(crowd_figures.values()), "base": list(base_figures.values())}
    )


def activity_table(frame: pd.DataFrame, crowd: np.ndarray, base: np.ndarray) -> pd.DataFrame:
    """Purchases beside non-consumption activity: reach (customers with any) and mean per customer."""
    rows = []
    for feature, label in ACTIVITY:
        if feature not in frame:
            continue
        values = frame[feature].fillna(0).to_numpy(dtype=float)
        rows.append(
            {
                "measure": feature,
                "label": f"{label}, last {ACTIVITY_WINDOW} days",
                "reach": int((values[crowd] > 0).sum()),
                "base_reach": int((values[base] > 0).sum()),
                "mean": float(values[crowd].mean()) if crowd.any() else np.nan,
                "base_mean": float(values[base].mean()) if base.any() else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["reach_share"] = table["reach"] / max(int(crowd.sum()), 1)
    table["base_reach_share"] = table["base_reach"] / max(int(base.sum()), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["index"] = np.where(table["base_mean"] > 0, 100 * table["mean"] / table["base_mean"], np.nan)
    return table


def line_tables(data: CrowdData, crowd: np.ndarray, base: np.ndarray):
    """Top categories and brands by the crowd's spend, and the cross-sell rate, in SQL."""
    con = data.con
    members = pd.DataFrame({"customer_id": data.ids.to_numpy(), "c": crowd, "b": base})[crowd | base]
    con.register("_crowd_members", members)
    try:
        tables = []
        for column in ("category", "brand"):
            per_customer = data.per_customer(column)
            if per_customer is None:
                tables.append(None)
                continue
            found = con.execute(
                f"""SELECT value,
                      SUM(recent_spend) FILTER (WHERE c) AS spend, SUM(recent_units) FILTER (WHERE c) AS units,
                      COUNT(*) FILTER (WHERE c) AS buyers, COUNT(*) FILTER (WHERE b) AS base_buyers,
                      SUM(recent_spend) FILTER (WHERE b) AS base_spend
                    FROM {per_customer} p JOIN _crowd_members m USING (customer_id)
                    WHERE recent_spend IS NOT NULL GROUP BY value"""
            ).df()
            tables.append(_top(found, int(crowd.sum()), int(base.sum())))
        cross = con.execute(
            f"""SELECT SUM(orders) FILTER (WHERE c), SUM(multi) FILTER (WHERE c),
                       SUM(orders) FILTER (WHERE b), SUM(multi) FILTER (WHERE b)
                FROM {data.order_mix()} o JOIN _crowd_members m USING (customer_id)"""
        ).fetchall()[0]
    finally:
        con.unregister("_crowd_members")
    orders, multi, base_orders, base_multi = (int(v or 0) for v in cross)
    cross_sell = {
        "orders": orders,
        "rate": multi / orders if orders else np.nan,
        "base_orders": base_orders,
        "base_rate": base_multi / base_orders if base_orders else np.nan,
    }
    return tables[0], tables[1], cross_sell


def _top(found: pd.DataFrame, n_crowd: int, n_base: int, top: int = TOP) -> pd.DataFrame:
    found = found.fillna({"spend": 0.0, "units": 0.0, "buyers": 0, "base_buyers": 0, "base_spend": 0.0})
    found = found[found["buyers"] > 0]
    total = found["spend"].sum()  # of every category (brand), not only the top ones shown
    found = found.sort_values(["spend", "value"], ascending=[False, True]).head(top)
    result = pd.DataFrame(
        {
            "value": found["value"].astype("str"),
            "spend": found["spend"].astype(float),
            "share_of_spend": found["spend"] / total if total else np.nan,
            "buyers": found["buyers"].astype(int),
            "penetration": found["buyers"] / n_crowd if n_crowd else np.nan,
            "base_buyers": found["base_buyers"].astype(int),
            "base_penetration": found["base_buyers"] / n_base if n_base else np.nan,
            "avg_unit_price": found["spend"] / found["units"].where(found["units"] > 0),
        }
    ).reset_index(drop=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        result["tgi"] = np.where(
            result["base_penetration"] > 0, 100 * result["penetration"] / result["base_penetration"], np.nan
        )
    return result


# ------------------------------------------------------------------ suppression


def hidden_counts(counts: np.ndarray, hide: np.ndarray, min_cell: int) -> np.ndarray:
    """Counts as they may leave the program: ``<N`` for a count under ``min_cell``, ``hidden``
    for one hidden only so that a small one cannot be worked out (secondary suppression: it
    may be large, and ``<N`` would be false), else the count."""
    counts = np.asarray(counts)
    return np.where(hide, np.where(counts < min_cell, f"<{min_cell}", "hidden"), counts.astype(str))


def suppression_mask(
    counts: np.ndarray, min_cell: int, *groupings: np.ndarray, linked: np.ndarray | None = None
) -> np.ndarray:
    """Cells to hide: counts under ``min_cell``, plus, until no group of any grouping (the
    dimension of each cell; a crosstab's rows and its columns) has exactly one hidden cell, the
    next-smallest cell of each that has (else the hidden one is the group's total minus the
    others). Without a grouping the cells are one group. ``linked``: cells of one id (0 or
    more; -1 for none) hold the same customers in different dimensions: one hidden hides them all
    (else the other would show it)."""
    counts = np.asarray(counts)
    hide = counts < min_cell
    groupings = groupings or (np.zeros(len(counts), dtype=int),)
    for _ in range(len(counts) + 1):  # each pass hides at least one more cell, or stops
        changed = False
        if linked is not None:
            hidden_links = np.unique(linked[hide & (linked >= 0)])
            newly = np.isin(linked, hidden_links) & ~hide
            if newly.any():
                hide |= newly
                changed = True
        for groups in groupings:
            for group in pd.unique(groups):
                members = np.flatnonzero(groups == group)
                open_members = members[~hide[members]]
                if hide[members].sum() == 1 and len(open_members):
                    hide[open_members[np.argmin(counts[open_members])]] = True
                    changed = True
        if not changed:
            break
    return hide


def suppressed_dimensions(report: CrowdReport) -> pd.DataFrame:
    """``dimension, value, count, share, base_share, tgi`` as they may leave the program."""
    table = report.dimensions
    if table.empty:
        return pd.DataFrame(columns=["dimension", "value", "count", "share", "base_share", "tgi"])
    groups = table["dimension"].to_numpy()
    linked = table["linked"].to_numpy() if "linked" in table else None
    hide = suppression_mask(table["count"].to_numpy(), report.min_cell, groups, linked=linked)
    hide_base = suppression_mask(table["base_count"].to_numpy(), report.min_cell, groups, linked=linked)
    return pd.DataFrame(
        {
            "dimension": table["dimension"],
            "value": table["value"],
            "count": hidden_counts(table["count"].to_numpy(), hide, report.min_cell),
            "share": np.where(hide, "", table["share"].map(lambda v: f"{v:.4f}")),
            # marked: a blank read as 0% beside the crowd's share
            "base_share": np.where(hide_base, "hidden", table["base_share"].map(lambda v: f"{v:.4f}")),
            "tgi": np.where(hide | hide_base | table["tgi"].isna(), "", table["tgi"].map(lambda v: f"{v:.0f}")),
        }
    )


def suppressed_lines(table: pd.DataFrame | None, min_cell: int) -> pd.DataFrame | None:
    """A top categories/brands table without the rows of fewer than ``min_cell`` buyers (their
    place in an order by the crowd's spend would tell what those few bought: the whole table of
    a crowd under ``min_cell``), and the base's penetration (and the TGI) blank where fewer than
    ``min_cell`` of the base bought."""
    if table is None or table.empty:
        return table
    table = table[table["buyers"].to_numpy() >= min_cell].reset_index(drop=True)
    hide_base = table["base_buyers"].to_numpy() < min_cell
    shown = table.drop(columns=["base_buyers"]).astype(object).copy()
    shown.loc[hide_base, ["base_penetration", "tgi"]] = None
    shown["buyers"] = table["buyers"].astype(str)
    return shown


def suppressed_activity(table: pd.DataFrame | None, size: int, min_cell: int) -> pd.DataFrame | None:
    if table is None or table.empty:
        return table
    # an activity nobody in the base has is not in the data (or not of these customers): left out
    table = table[table["base_reach"].to_numpy() > 0].reset_index(drop=True)
    shown = table.astype(object).copy()
    hide = table["reach"].to_numpy() < min_cell
    shown["reach"] = np.where(hide, f"<{min_cell}", table["reach"].astype(str))
    shown.loc[hide, "reach_share"] = None
    # a mean over the crowd is the few's total divided by its size: hidden with the reach
    shown.loc[hide | (size < min_cell), ["mean", "index"]] = None
    return shown


def crowd_size_shown(size: int, min_cell: int) -> str | int:
    """A crowd's size as it may leave the program: ``<N`` under ``min_cell``, but 0 as 0 (an
    empty crowd tells nothing of anyone, and "<10" beside "the crowd is empty" read as two
    answers)."""
    return size if size >= min_cell or size == 0 else f"<{min_cell}"


def figures_shown(report: CrowdReport) -> pd.DataFrame:
    """Key figures with the crowd's column blanked when the crowd itself is too small."""
    shown = report.figures.astype(object).copy()
    if report.size < report.min_cell:
        shown["crowd"] = None
        shown.loc[shown["measure"] == "customers", "crowd"] = crowd_size_shown(report.size, report.min_cell)
    if report.base_size < report.min_cell:
        shown["base"] = None
        shown.loc[shown["measure"] == "customers", "base"] = crowd_size_shown(report.base_size, report.min_cell)
    return shown


def unknown_everywhere(report: CrowdReport) -> list[str]:
    """The dimensions whose every value is unknown (their names, in the report's order)."""
    table = report.dimensions
    if table.empty:
        return []
    only_unknown = table.groupby("dimension", sort=False)["value"].agg(lambda v: set(v) == {"unknown"})
    return list(only_unknown[only_unknown].index)


def report_json(report: CrowdReport) -> dict:
    """The whole portrait, suppressed, as plain JSON types (the API's answer)."""

    def records(frame: pd.DataFrame | None) -> list[dict]:
        if frame is None:
            return []
        return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]

    # a dimension nobody has a value of (personas where none were scored) is said once, as the
    # page says it, not listed as every customer "unknown"
    unknown = unknown_everywhere(report)
    unknown_labels = [report.labels.get(n, n) for n in unknown]
    dimensions = suppressed_dimensions(report)
    cross = dict(report.cross_sell)
    if report.size < report.min_cell or cross.get("orders", 0) < report.min_cell:
        cross = {k: None for k in cross}
    return {
        "crowd": report.crowd,
        "base": report.base,
        "as_of": report.as_of.isoformat(),
        "min_cell": report.min_cell,
        "customers": crowd_size_shown(report.size, report.min_cell),  # as the figures say it
        "figures": records(figures_shown(report)),
        "dimensions": records(dimensions[~dimensions["dimension"].isin(unknown)]),
        "top_categories": records(suppressed_lines(report.categories, report.min_cell)),
        "top_brands": records(suppressed_lines(report.brands, report.min_cell)),
        "cross_sell": {k: _plain(v) for k, v in cross.items()},
        "activity": records(suppressed_activity(report.activity, report.size, report.min_cell)),
        "notes": list(report.notes)
        + ([f"Not known for anyone in this data set: {', '.join(unknown_labels)}."] if unknown else []),
    }


def _plain(value):
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else round(float(value), 6)
    return value
