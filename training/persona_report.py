"""The crowd portrait as files a marketer opens: CSV, Markdown, and one self-contained HTML page
(how the personas were found and how stable they are, sizes, a heat map of key-feature lifts,
and a card per persona with its distinguishing non-volume features, its spending-power mix and
a chart of what sets it apart in how it shops). Features are shown by their catalogue label ("spend in the last 365 days"), not their
column name. Everything taken from the data is HTML-escaped: category and channel names are text
a retailer's systems wrote, not markup."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from features.catalogue import Feature, describe, label_of
from portrait import pages

TOP_COLUMNS = ("top_categories", "top_channels", "top_payment_methods")
TEXT_COLUMNS = (*TOP_COLUMNS, "distinguishing_features", "spending_power")
SUMMARY_COLUMNS = ("persona_id", "persona_name", "customers", "share_of_customers", "share_of_revenue") + TOP_COLUMNS
CARD_FIGURES = {
    "median_spend_365d": ("median spend, last 365 days", "{:,.0f}"),
    "median_orders_365d": ("median orders, last 365 days", "{:,.0f}"),
    "median_avg_order_value": ("median order value", "{:,.2f}"),
    "median_days_since_last_purchase": ("median days since last purchase", "{:,.0f}"),
}
TOP_TRAITS = 8
VOCABULARY_FILE = "persona_vocabulary.json"


def distinguishing_traits(
    lifts: pd.Series, top: int = TOP_TRAITS, meanings: dict[str, Feature] | None = None
) -> pd.Series:
    """The features furthest from the population (by |log2 lift|), as log2 lifts, of which
    up to half the places go to the strongest traits *above* the population's: tiny shares'
    low lifts (x0.08 of a category nobody buys much) would otherwise push out what a persona
    does more than others, which is what its name says. With ``meanings``, volume features
    (spend, orders: the value axis) are left out, so the chart shows how a persona shops rather
    than how much."""
    if meanings is not None:
        lifts = lifts[[c for c in lifts.index if c not in meanings or meanings[c].aspect != "volume"]]
    log_lift = np.log2(pd.to_numeric(lifts, errors="coerce").clip(lower=0.01)).dropna()
    above = log_lift[log_lift > 0].sort_values(ascending=False).head(top // 2)
    rest = log_lift.drop(above.index)
    chosen = pd.concat([above, rest.reindex(rest.abs().sort_values(ascending=False).index).head(top - len(above))])
    return chosen.reindex(chosen.abs().sort_values(ascending=False, kind="stable").index)


markdown = pages.markdown


def write_portrait(
    table: pd.DataFrame,
    folder: Path,
    lifts: pd.DataFrame | None = None,
    meanings: dict[str, Feature] | None = None,
    summary: dict | None = None,
) -> dict[str, Path]:
    """Writes ``personas.csv``, ``personas.md``, ``personas.html`` and, given the per-feature
    ``lifts`` (one row per persona, ``persona_id`` and ``persona_name`` then a column per
    feature), ``persona_lifts.csv``. Returns the paths by kind.

    The pages label features from ``meanings`` (the catalogue entries), else from the catalogue
    with the vocabulary in ``table.attrs`` (set by the portrait table), else by name alone.
    The CSV files keep the column names. ``summary`` (k, bootstrap stability, silhouette...:
    :func:`training.personas.persona_summary`) heads the pages and goes to
    ``persona_summary.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = _labels(table, lifts, meanings)
    table = table.copy()
    for column in [c for c in table.columns if c in TEXT_COLUMNS or c.startswith("mix_")]:
        table[column] = table[column].fillna("").astype("object")
    paths = {"csv": folder / "personas.csv", "markdown": folder / "personas.md", "html": folder / "personas.html"}
    table.to_csv(paths["csv"], index=False)
    if lifts is not None:
        paths["lifts"] = folder / "persona_lifts.csv"
        lifts.to_csv(paths["lifts"], index=False)
    if summary is not None:
        paths["summary"] = folder / "persona_summary.json"
        paths["summary"].write_text(json.dumps(summary, indent=2))
    if table.attrs.get("vocabulary"):
        # The per-value shares' data values (BEERS/ALES for share_of_spend_beers_ales): the CSV
        # keeps column names only, and a page made again from it (portrait personas show)
        # names them from this file rather than from the slugs.
        paths["vocabulary"] = folder / VOCABULARY_FILE
        paths["vocabulary"].write_text(json.dumps(table.attrs["vocabulary"], indent=2))
    known = {**describe(list(labels), vocabulary=table.attrs.get("vocabulary")), **(meanings or {})}
    traits = _traits_by_persona(table, lifts, known)
    paths["markdown"].write_text(_markdown_page(table, traits, labels, summary))
    paths["html"].write_text(_html_page(table, traits, labels, summary))
    return paths


def read_portrait_table(folder: Path) -> pd.DataFrame:
    """``personas.csv`` as :func:`write_portrait` wrote it, with the vocabulary it was built
    with in ``attrs`` when the folder holds it (portraits logged before it was kept do not)."""
    table = pd.read_csv(folder / "personas.csv")
    vocabulary = folder / VOCABULARY_FILE
    if vocabulary.exists():
        table.attrs["vocabulary"] = json.loads(vocabulary.read_text())
    return table


def summary_text(summary: dict | None) -> str:
    """One paragraph on how the personas were found and how far to trust them."""
    if not summary:
        return ""
    stable = summary["stability_ari"] >= summary["stable_from"]
    low, high = summary["k_range"]
    chosen = f"chosen over k = {low}-{high}" if low != high else "fixed in the experiment"
    return (
        f"{summary['k']} personas ({chosen}) among {summary['customers']:,} customers, clustered on "
        f"{summary['clustered_features']} features of how customers shop ({', '.join(summary['aspects'])}: "
        "shares, timing, promotion, category mix, engagement), not how much they spend, which is the "
        "spending-power mix of each persona. Bootstrap stability (adjusted Rand index between refits on "
        f"bootstrap samples): {summary['stability_ari']:.2f}, "
        + (
            f"stable (at least {summary['stable_from']:.2f})"
            if stable
            else f"NOT stable (below {summary['stable_from']:.2f}: the personas may reshuffle on the next refit)"
        )
        + f"; silhouette {summary['silhouette']:.3f}. {summary['personas_distinguished']} of {summary['k']} "
        "personas have a distinguishing feature other than volume (lift at least 1.5 or at most 0.67)."
    )


def _labels(table: pd.DataFrame, lifts: pd.DataFrame | None, meanings: dict[str, Feature] | None) -> dict[str, str]:
    """Feature name to its catalogue label, for every feature the pages show."""
    names = {c[len(prefix) :] for c in table.columns for prefix in ("lift_", "median_") if c.startswith(prefix)}
    if lifts is not None:
        names |= set(lifts.columns) - {"persona_id", "persona_name"}
    known = {**describe(names, vocabulary=table.attrs.get("vocabulary")), **(meanings or {})}
    return {name: label_of(name, known) for name in names}


def _median_headers(table: pd.DataFrame, labels: dict[str, str]) -> dict[str, str]:
    """``median_<feature>`` columns to "median <label>", less the features zero for everyone."""
    absent = set(_zero_for_everyone(table))
    return {
        c: f"median {labels.get(c[7:], c[7:])}"
        for c in table.columns
        if c.startswith("median_") and c[7:] not in absent
    }


def _zero_for_everyone(table: pd.DataFrame) -> list[str]:
    """Key features whose mean is 0 in every persona: 0 for every customer, so nothing the data
    set records (product views where it has no view events), not a median worth a column."""
    means = [c for c in table.columns if c.startswith("mean_")]
    return [c[5:] for c in means if (pd.to_numeric(table[c], errors="coerce").fillna(0) == 0).all()]


def _absent_note(table: pd.DataFrame, labels: dict[str, str]) -> str:
    """The key features left out as columns, said once: those 0 for everyone, and those no
    customer has a value of (a log without discounts or campaigns), which are not zero."""
    absent = _zero_for_everyone(table)
    missing = [f for f in absent if pd.to_numeric(table[f"mean_{f}"], errors="coerce").isna().all()]
    zero = [f for f in absent if f not in missing]
    parts = []
    if zero:
        parts.append(
            "Zero for every customer in this data set, not shown: " + ", ".join(labels.get(f, f) for f in zero) + "."
        )
    if missing:
        parts.append(
            "Not recorded for anyone in this data set, not shown: " + ", ".join(labels.get(f, f) for f in missing) + "."
        )
    return " ".join(parts)


def _traits_by_persona(
    table: pd.DataFrame, lifts: pd.DataFrame | None, meanings: dict[str, Feature] | None = None
) -> dict[int, pd.Series]:
    if lifts is None:  # portraits logged before per-feature lifts were kept: key features only
        lifts = table.set_index("persona_id")[[c for c in table.columns if c.startswith("lift_")]]
        lifts.columns = [c[5:] for c in lifts.columns]
    else:
        lifts = lifts.set_index("persona_id").drop(columns="persona_name", errors="ignore")
    return {int(persona): distinguishing_traits(row, meanings=meanings) for persona, row in lifts.iterrows()}


def _non_empty(table: pd.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in table and not (table[c].isna() | (table[c].astype(str) == "")).all()]


def _markdown_page(
    table: pd.DataFrame, traits: dict[int, pd.Series], labels: dict[str, str], summary: dict | None = None
) -> str:
    parts = ["# Personas", ""] + ([summary_text(summary), ""] if summary else [])
    parts += [markdown(table[_non_empty(table, SUMMARY_COLUMNS)]), ""]
    parts += ["## Key features (median)", ""]
    medians = _median_headers(table, labels)
    parts += [markdown(table[["persona_name", *medians]].rename(columns=medians)), ""]
    if note := _absent_note(table, labels):
        parts += [pages.md_text(note), ""]
    mix = _non_empty(table, [c for c in table.columns if c.startswith("mix_")])
    if mix:
        parts += ["## Demographic mix", "", markdown(table[["persona_name", *mix]]), ""]
    shown = _non_empty(table, ["distinguishing_features", "spending_power"])
    if shown:
        parts += ["## Distinguishing non-volume features and spending power", ""]
        parts += [markdown(table[["persona_name", *shown]]), ""]
    parts += ["## What sets each persona apart in how it shops (lift against all customers)", ""]
    for row in table.itertuples():
        shown = ", ".join(
            f"{labels.get(feature, feature)} x{2**value:.2f}" for feature, value in traits[row.persona_id].items()
        )
        parts.append(f"- **{pages.md_text(row.persona_name)}**: {pages.md_text(shown)}")
    return "\n".join(parts) + "\n"


_pyplot = pages.pyplot
_png = pages.png
_img = pages.img


def _sizes_chart(table: pd.DataFrame) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(table) + 1))
    rows = np.arange(len(table))
    ax.barh(rows - 0.2, table["share_of_customers"], height=0.4, label="share of customers")
    ax.barh(rows + 0.2, table["share_of_revenue"], height=0.4, label="share of revenue")
    ax.set_yticks(rows, table["persona_name"])
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    ax.invert_yaxis()
    return _png(fig)


def _lift_heat_map(table: pd.DataFrame, labels: dict[str, str]) -> str | None:
    """The heat map of the personas' lifts; None when the table has none to show."""
    heat = table.set_index("persona_name")[[c for c in table.columns if c.startswith("lift_")]].astype(float)
    heat = heat.dropna(axis=1, how="all")  # features the data set does not have
    if heat.empty:
        return None
    plt = _pyplot()
    heat.columns = [labels.get(c[5:], c[5:]) for c in heat.columns]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(heat.columns), 0.5 * len(heat) + 2))
    colour = np.log2(heat.clip(lower=0.05).fillna(1.0)).to_numpy()
    image = ax.imshow(colour, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(heat.columns)), heat.columns, rotation=60, ha="right")
    ax.set_yticks(range(len(heat)), heat.index)
    for (i, j), value in np.ndenumerate(heat.to_numpy()):
        text = "" if np.isnan(value) else f"x{value:.1f}"
        ink = "white" if abs(colour[i, j]) > 1.2 else "black"  # legible on the dark ends of the scale
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=ink)
    fig.colorbar(image, ax=ax, label="lift vs all customers (log2 colour scale)")
    return _png(fig)


def _traits_chart(traits: pd.Series, labels: dict[str, str]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(traits) + 0.8))
    shown = [labels.get(feature, feature) for feature in traits.index]
    ax.barh(shown, traits.to_numpy(), color=np.where(traits.to_numpy() >= 0, "#c0392b", "#2e86c1"))
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_xlabel("log2 lift vs all customers (1 = twice the average); spend and counts left out")
    ax.invert_yaxis()
    return _png(fig)


def _card(row: pd.Series, traits: pd.Series, mix: list[str], labels: dict[str, str]) -> str:
    figures = "".join(
        f"<li>{label}: {fmt.format(row[column])}</li>"
        for column, (label, fmt) in CARD_FIGURES.items()
        if column in row and pd.notna(row[column])
    )
    described = "".join(
        f"<li>{escape(label)}: {escape(str(row[column]))}</li>"
        for column, label in (
            ("spending_power", "Spending power (the value axis)"),
            ("top_categories", "Top categories"),
            ("top_channels", "Channels"),
            ("top_payment_methods", "Payment methods"),
        )
        if column in row and row[column]
    )
    distinct = ""
    if "distinguishing_features" in row:
        items = [item for item in str(row["distinguishing_features"]).split("; ") if item]
        distinct = (
            "<p><b>Distinguishing non-volume features</b> (lift against all customers, at least 1.5 or at most "
            "0.67):</p><ul>" + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"
            if items
            else "<p><b>No distinguishing non-volume feature</b> (no lift of 1.5 or more, or 0.67 or less).</p>"
        )
    demographics = "".join(f"<li>{escape(c[4:].replace('_', ' '))}: {escape(str(row[c]))}</li>" for c in mix if row[c])
    if mix and not demographics:
        demographics = "<li>not known for anyone in this persona</li>"
    name = escape(str(row["persona_name"]))
    alt = f"What sets {row['persona_name']} apart"  # _img escapes it
    return (
        f"<section><h2>{name}</h2><p>{row['customers']:,} customers ({row['share_of_customers']:.0%}), "
        f"{row['share_of_revenue']:.0%} of revenue in the last 365 days</p><div class='cols'>"
        f"<div>{distinct}<ul>{figures}{described}</ul>"
        + (f"<p>Demographic mix:</p><ul>{demographics}</ul>" if demographics else "")
        + f"</div><div>{_img(_traits_chart(traits, labels), alt)}</div></div></section>"
    )


def _html_page(
    table: pd.DataFrame, traits: dict[int, pd.Series], labels: dict[str, str], summary: dict | None = None
) -> str:
    mix = _non_empty(table, [c for c in table.columns if c.startswith("mix_")])
    cards = "".join(_card(row, traits[int(row["persona_id"])], mix, labels) for _, row in table.iterrows())
    medians = _median_headers(table, labels)
    shown = table[_non_empty(table, SUMMARY_COLUMNS) + list(medians)].rename(columns=medians)
    sizes = _img(_sizes_chart(table), "Share of customers and revenue per persona")
    heat_map = _lift_heat_map(table, labels)
    return pages.page(
        "Personas",
        "<h1>Personas</h1>"
        + (f"<p>{escape(summary_text(summary))}</p>" if summary else "")
        + f"<h2>Sizes</h2>{sizes}"
        + (f"<h2>Key features against all customers</h2>{_img(heat_map, 'Lift heat map')}" if heat_map else "")
        + f"{cards}<h2>Portrait table</h2><div style='overflow-x:auto'>"
        + shown.to_html(index=False, float_format=lambda v: f"{v:,.2f}", na_rep="")
        + "</div>"
        + (f"<p>{escape(note)}</p>" if (note := _absent_note(table, labels)) else ""),
    )


def write_k_plot(scores: pd.DataFrame, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(scores.index, scores["silhouette"], marker="o", label="silhouette")
    ax.plot(scores.index, scores["stability"], marker="o", label="bootstrap stability (ARI)")
    ax.set(xlabel="k", title="Choosing the number of personas")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
