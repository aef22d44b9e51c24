"""The crowd portrait as files: ``crowd.csv``, ``crowd.md`` and one self-contained ``crowd.html``
in the personas page's style (:mod:`portrait.pages`). Only suppressed figures are written
(:mod:`marketing.crowd_report`); dimension and measure names are shown by their labels; text
from the data is HTML-escaped."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from marketing.crowd_report import (
    TOP,
    CrowdReport,
    figures_shown,
    suppressed_activity,
    suppressed_dimensions,
    suppressed_lines,
    unknown_everywhere,
)
from portrait import pages
from portrait.files import atomic_write, atomic_write_text, check_targets

HEADERS = {
    "dimension": "dimension",
    "value": "value",
    "count": "customers",
    "share": "share of the crowd",
    "base_share": "share of the base",
    "tgi": "TGI",
}
CHART_VALUES = 12  # values per dimension chart (the CSV has them all)
CROWD_COLOUR, BASE_COLOUR = "#c0392b", "#95a5a6"


def report_paths(out_dir: Path) -> dict[str, Path]:
    """The files a crowd report writes in ``out_dir`` (checked before any work)."""
    return {"csv": out_dir / "crowd.csv", "md": out_dir / "crowd.md", "html": out_dir / "crowd.html"}


def write_report(report: CrowdReport, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = report_paths(out_dir)
    check_targets(paths.values())
    markdown, html = markdown_page(report), html_page(report)  # both made before anything is written
    atomic_write(suppressed_dimensions(report), paths["csv"], csv=True)
    atomic_write_text(markdown, paths["md"])
    atomic_write_text(html, paths["html"])
    return paths


def _figures_table(report: CrowdReport) -> pd.DataFrame:
    shown = figures_shown(report)
    shown["crowd"] = [_figure(m, v) for m, v in zip(shown["measure"], shown["crowd"], strict=True)]
    shown["base"] = [_figure(m, v) for m, v in zip(shown["measure"], shown["base"], strict=True)]
    return shown.rename(columns={"crowd": "this crowd", "base": report.base})


def _figure(measure: str, value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if measure.startswith("share"):
        return f"{value:.1%}"
    if measure == "customers":
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _lines_table(table: pd.DataFrame | None, min_cell: int, what: str) -> pd.DataFrame | None:
    shown = suppressed_lines(table, min_cell)
    if shown is None or shown.empty:
        return None
    return pd.DataFrame(
        {
            what: shown["value"],
            "spend": shown["spend"].map(lambda v: "" if v is None else f"{v:,.2f}"),
            "share of the crowd's spend": shown["share_of_spend"].map(_pct),
            "buyers": shown["buyers"],
            "bought by (crowd)": shown["penetration"].map(_pct),
            "bought by (base)": shown["base_penetration"].map(_pct),
            "average unit price": shown["avg_unit_price"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:,.2f}"),
            "TGI": shown["tgi"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.0f}"),
        }
    )


def _lines_note(min_cell: int) -> str:
    if min_cell <= 1:  # nothing is left out for its few buyers
        return f"The {TOP} with the most spend."
    return (
        f"The {TOP} with the most spend, those fewer than {min_cell} of the crowd bought left out (their "
        "place in the order would tell what those few bought)."
    )


def _activity_table(report: CrowdReport) -> pd.DataFrame | None:
    shown = suppressed_activity(report.activity, report.size, report.min_cell)
    if shown is None or shown.empty:
        return None
    return pd.DataFrame(
        {
            "activity": shown["label"],
            "customers with any": shown["reach"].map(_count_text),
            "share with any (crowd)": shown["reach_share"].map(_pct),
            "share with any (base)": shown["base_reach_share"].map(_pct),
            "mean per customer (crowd)": shown["mean"].map(_num),
            "mean per customer (base)": shown["base_mean"].map(_num),
            "index (base = 100)": shown["index"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.0f}"),
        }
    )


def _pct(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1%}"


def _num(value) -> str:
    return "" if value is None or pd.isna(value) else f"{value:,.2f}"


def _cross_sell_text(report: CrowdReport) -> str:
    cross = report.cross_sell
    if not cross or report.size < report.min_cell or cross.get("orders", 0) < report.min_cell:
        return ""
    return (
        f"Cross-sell: {cross['rate']:.1%} of the crowd's orders in the last 365 days had more than one category "
        f"(base: {cross['base_rate']:.1%})."
    )


def _dimension_tables(report: CrowdReport) -> list[tuple[str, str, pd.DataFrame]]:
    """(name, label, suppressed rows) per dimension that is known for someone."""
    shown = suppressed_dimensions(report)
    # Percentages from the exact shares where shown: the CSV's are rounded to 4 decimals, and
    # rounding those again made 216 of 2,469 (8.748%) read 8.8% where every other output said 8.7%.
    exact = report.dimensions.reset_index(drop=True)
    shown = shown.reset_index(drop=True).assign(
        share=_percentages(shown["share"], exact["share"]),
        base_share=_percentages(shown["base_share"], exact["base_share"]),
    )
    result = []
    for name, rows in shown.groupby("dimension", sort=False):
        if set(rows["value"]) == {"unknown"}:
            continue
        rows = rows.drop(columns="dimension").assign(count=rows["count"].map(_count_text))
        result.append((name, report.labels.get(name, name), rows))
    return result


def _count_text(value: str) -> str:
    """A count as the CSV has it ('1234', '<10', 'hidden') with thousands separators."""
    return f"{int(value):,}" if value.isdigit() else value


def _percentages(shown: pd.Series, exact: pd.Series) -> pd.Series:
    """Each share as a percentage of its exact value where ``shown`` (the CSV's text) shows one;
    its text where that is blank or 'hidden'."""
    numeric = pd.to_numeric(shown, errors="coerce").notna().to_numpy()
    text = np.where(numeric, exact.map(lambda v: f"{v:.1%}"), shown)
    return pd.Series(np.where(shown.eq("nan").to_numpy(), "", text), index=shown.index)  # no share: blank


def _unknown_everywhere(report: CrowdReport) -> list[str]:
    return [report.labels.get(n, n) for n in unknown_everywhere(report)]


def _header(report: CrowdReport) -> str:
    return (
        f"As of {report.as_of} (data before that date only), compared with {report.base}. "
        f"Counts under {report.min_cell} customers are shown as <{report.min_cell}; "
        "TGI = 100 x share in the crowd / share in the base."
    )


def markdown_page(report: CrowdReport) -> str:
    parts = [f"# Crowd portrait: {pages.md_text(report.crowd)}", "", pages.md_text(_header(report)), ""]
    parts += ["## Key figures", "", pages.markdown(_figures_table(report)), ""]
    for note in report.notes:
        parts.append(f"- {pages.md_text(note)}")
    if report.empty:
        return "\n".join(parts) + "\n"
    unknown = _unknown_everywhere(report)
    if unknown:
        parts += ["", pages.md_text(f"Not known for anyone in this data set: {', '.join(unknown)}."), ""]
    parts += ["## Who they are", ""]
    for _, label, rows in _dimension_tables(report):
        parts += [f"### {pages.md_text(label)}", "", pages.markdown(rows.rename(columns=HEADERS)), ""]
    for title, table in (
        (
            f"Top {TOP} categories by the crowd's spend (last 365 days)",
            _lines_table(report.categories, report.min_cell, "category"),
        ),
        (
            f"Top {TOP} brands by the crowd's spend (last 365 days)",
            _lines_table(report.brands, report.min_cell, "brand"),
        ),
    ):
        if table is not None:
            parts += [f"## {title}", "", pages.markdown(table), "", _lines_note(report.min_cell), ""]
    cross = _cross_sell_text(report)
    if cross:
        parts += [cross, ""]
    activity = _activity_table(report)
    if activity is not None:
        parts += ["## Consumption and non-consumption", "", pages.markdown(activity), ""]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ HTML


def _share_chart(name: str, label: str, rows: pd.DataFrame, report: CrowdReport) -> str | None:
    """Bars of share in the crowd against share in the base, TGI written beside each value."""
    exact = report.dimensions[report.dimensions["dimension"] == name].copy()
    shown = rows.set_index("value")
    exact = exact[exact["value"].isin(shown.index)]
    exact = exact.sort_values("base_count", ascending=False, kind="stable").head(CHART_VALUES)
    order = [v for v in rows["value"] if v in set(exact["value"])]  # the dimension's own order
    exact = exact.set_index("value").loc[order]
    hidden = shown.loc[order, "share"].eq("").to_numpy()
    base_hidden = shown.loc[order, "base_share"].isin(["", "hidden"]).to_numpy()
    if hidden.all() and base_hidden.all():
        return None
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 0.42 * len(order) + 0.9))
    y = np.arange(len(order))
    crowd_share = np.where(hidden, 0.0, exact["share"].to_numpy())
    base_share = np.where(base_hidden, 0.0, exact["base_share"].to_numpy())
    ax.barh(y - 0.2, crowd_share, height=0.38, color=CROWD_COLOUR, label="this crowd")
    ax.barh(y + 0.2, base_share, height=0.38, color=BASE_COLOUR, label=report.base)
    ax.set_yticks(y, [_short(v) for v in order])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    right = max(crowd_share.max(), base_share.max(), 0.01)
    ax.set_xlim(0, right * 1.28)
    for i, value in enumerate(order):
        tgi = shown.loc[value, "tgi"]
        # the count as shown: "<N", or "hidden" for a cell hidden so a small one cannot be worked
        # out (it may be large: "<N" would be false)
        text = shown.loc[value, "count"] if hidden[i] else (f"TGI {tgi}" if tgi else "")
        colour = "#c0392b" if tgi and float(tgi) >= 120 else ("#2e86c1" if tgi and float(tgi) <= 80 else "#444")
        ax.text(max(crowd_share[i], base_share[i]) + right * 0.02, i, text, va="center", fontsize=8, color=colour)
    ax.set_title(label, fontsize=11, loc="left")
    return pages.png(fig)


def _short(value: str, width: int = 28) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _activity_chart(report: CrowdReport) -> str | None:
    table = suppressed_activity(report.activity, report.size, report.min_cell)
    if table is None or table.empty or report.size < report.min_cell:
        return None
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1))
    y = np.arange(len(table))
    crowd = table["reach_share"].fillna(0).astype(float).to_numpy()
    base = table["base_reach_share"].astype(float).to_numpy()
    ax.barh(y - 0.2, crowd, height=0.38, color=CROWD_COLOUR, label="this crowd")
    ax.barh(y + 0.2, base, height=0.38, color=BASE_COLOUR, label=report.base)
    ax.set_yticks(y, table["label"].str.replace(", last 365 days", ""))
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of customers with any, last 365 days")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return pages.png(fig)


def _html_table(table: pd.DataFrame) -> str:
    return table.to_html(index=False, na_rep="", escape=True)


def html_page(report: CrowdReport) -> str:
    title = f"Crowd portrait: {report.crowd}"
    body = [f"<h1>{escape(title)}</h1><p class='note'>{escape(_header(report))}</p>"]
    body.append(f"<h2>Key figures</h2>{_html_table(_figures_table(report))}")
    body += [f"<p class='note'>{escape(note)}</p>" for note in report.notes]
    if report.empty:
        return pages.page(title, "".join(body))
    unknown = _unknown_everywhere(report)
    if unknown:
        body.append(f"<p class='note'>Not known for anyone in this data set: {escape(', '.join(unknown))}.</p>")
    charts = []
    for name, label, rows in _dimension_tables(report):
        chart = _share_chart(name, label, rows, report)
        if chart is not None:
            charts.append(f"<div>{pages.img(chart, f'{label}: share in the crowd against the base')}</div>")
    key = (
        f"<p class='note'><span style='color:{CROWD_COLOUR}'>&#9632;</span> this crowd &nbsp; "
        f"<span style='color:{BASE_COLOUR}'>&#9632;</span> {escape(report.base)}; TGI in red when 120 or more, "
        "in blue when 80 or less.</p>"
    )
    body.append(f"<h2>Who they are</h2>{key}<div style='display:grid;grid-template-columns:1fr 1fr;gap:1em'>")
    body.append("".join(charts) + "</div>")
    for title_text, table in (
        (
            f"Top {TOP} categories by the crowd's spend (last 365 days)",
            _lines_table(report.categories, report.min_cell, "category"),
        ),
        (
            f"Top {TOP} brands by the crowd's spend (last 365 days)",
            _lines_table(report.brands, report.min_cell, "brand"),
        ),
    ):
        if table is not None:
            body.append(
                f"<h2>{escape(title_text)}</h2>{_html_table(table)}<p class='note'>{_lines_note(report.min_cell)}</p>"
            )
    cross = _cross_sell_text(report)
    if cross:
        body.append(f"<p>{escape(cross)}</p>")
    activity = _activity_table(report)
    if activity is not None:
        body.append("<h2>Consumption and non-consumption</h2>")
        chart = _activity_chart(report)
        if chart:
            body.append(pages.img(chart, "Share of customers with each activity"))
        body.append(_html_table(activity))
    rows = suppressed_dimensions(report).assign(dimension=lambda t: t["dimension"].map(report.labels))
    rows = rows.rename(columns=HEADERS)
    body.append(f"<h2>Every dimension</h2><div style='overflow-x:auto'>{_html_table(rows)}</div>")
    return pages.page(title, "".join(body))
