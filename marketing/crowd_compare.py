"""Cross-tabs of two dimensions, drill-down exports of one report cell, and the side-by-side
comparison of 2 to 6 crowds.

Comparison statistics: for every dimension value, a chi-square test of "has the value or not"
across the crowds (for two crowds this is the two-proportion z-test), with Holm's correction
for the number of values tested, at a family-wise 5% level. Values whose expected counts fall
under 5 in some crowd are not tested (marked so). Crowds may overlap (a customer can hold two
tags); the tests then overstate certainty, and the page says how many customers are shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from marketing.crowd import CrowdData
from marketing.crowd_report import (
    crowd_size_shown,
    hidden_counts,
    pooled_dimension,
    pooled_note,
    suppression_mask,
)
from portrait import pages
from portrait.errors import PortraitError
from portrait.files import atomic_write, atomic_write_text, check_targets

ALPHA = 0.05
MIN_EXPECTED = 5


# ------------------------------------------------------------------ cross-tab


def crosstab(data: CrowdData, crowd: np.ndarray, rows: str, cols: str, min_cell: int = 1) -> pd.DataFrame:
    """Exact counts of ``rows`` x ``cols`` values within the crowd (long form). The rows and
    columns are the values the whole base holds, as a crowd report lists them: a table of only
    the values the crowd holds would tell them even where every count is hidden (a crowd of one
    person would be its one row and column). Values fewer than ``min_cell`` customers of the
    whole base hold are one row (column), :func:`~marketing.crowd_report.pooled_dimension`."""
    rows, cols = data.check_dimension(rows), data.check_dimension(cols)
    if rows == cols:
        raise PortraitError(f"rows and columns are both {rows!r}: cross two different dimensions")
    row_all = pooled_dimension(data.dimensions[rows], min_cell)
    col_all = pooled_dimension(data.dimensions[cols], min_cell)
    counts = pd.crosstab(row_all[crowd], col_all[crowd], dropna=False).reindex(
        index=_held(row_all), columns=_held(col_all), fill_value=0
    )
    long = counts.stack().rename("count").reset_index()
    long.columns = ["row", "column", "count"]
    row_total = long.groupby("row", observed=True)["count"].transform("sum")
    col_total = long.groupby("column", observed=True)["count"].transform("sum")
    long["row_pct"] = long["count"] / row_total.where(row_total > 0)
    long["col_pct"] = long["count"] / col_total.where(col_total > 0)
    return long.reset_index(drop=True)


def _held(values: pd.Series) -> list:
    """The values some customer of the base holds, in the dimension's order."""
    present = set(values.dropna().unique())
    order = values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype) else sorted(present, key=str)
    return [value for value in order if value in present]


def suppressed_crosstab(table: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """Counts under ``min_cell`` as ``<N``, and more hidden until no row or column has a single
    hidden cell. A row's percentages are blank wherever it has a hidden cell, and so are a
    column's: a shown count over its percentage is the row's (column's) total, and the total
    less the shown counts would be the hidden ones."""
    rows, columns = table["row"].astype(str).to_numpy(), table["column"].astype(str).to_numpy()
    hide = suppression_mask(table["count"].to_numpy(), min_cell, rows, columns)
    row_hidden = pd.Series(hide).groupby(rows).transform("any").to_numpy()
    column_hidden = pd.Series(hide).groupby(columns).transform("any").to_numpy()
    return pd.DataFrame(
        {
            "row": rows,
            "column": columns,
            "count": hidden_counts(table["count"].to_numpy(), hide, min_cell),
            "row_pct": np.where(row_hidden, "", table["row_pct"].map(lambda v: f"{v:.4f}")),
            "col_pct": np.where(column_hidden, "", table["col_pct"].map(lambda v: f"{v:.4f}")),
        }
    )


def crosstab_paths(out_dir: Path) -> dict[str, Path]:
    """The files a crosstab writes in ``out_dir`` (checked before any work)."""
    return {"csv": out_dir / "crosstab.csv", "html": out_dir / "crosstab.html"}


def write_crosstab(
    table: pd.DataFrame, data: CrowdData, rows: str, cols: str, crowd_name: str, min_cell: int, out_dir: Path
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = crosstab_paths(out_dir)
    check_targets(paths.values())
    shown = suppressed_crosstab(table, min_cell)
    atomic_write(shown.rename(columns={"row": rows, "column": cols}), paths["csv"], csv=True)
    row_label, col_label = data.dimension_label(rows), data.dimension_label(cols)
    title = f"{row_label} by {col_label}: {crowd_name}"
    body = f"<h1>{escape(title)}</h1><p class='note'>As of {data.as_of}. Colour: row percentage. "
    body += f"Counts under {min_cell} customers are shown as &lt;{min_cell}.{escape(pooled_note(min_cell))}</p>"
    body += _heat_map(table, shown, row_label, col_label) if len(table) else "<p>The crowd is empty.</p>"
    wide = shown.pivot(index="row", columns="column", values="count").reindex(
        index=pd.unique(shown["row"]), columns=pd.unique(shown["column"])
    )
    body += f"<h2>Counts</h2>{wide.rename_axis(index=row_label, columns=col_label).to_html(na_rep='')}"
    atomic_write_text(pages.page(title, body), paths["html"])
    return paths


def _heat_map(table: pd.DataFrame, shown: pd.DataFrame, row_label: str, col_label: str) -> str:
    plt = pages.pyplot()
    row_names, col_names = list(pd.unique(shown["row"])), list(pd.unique(shown["column"]))
    pct = np.full((len(row_names), len(col_names)), np.nan)
    text = np.full(pct.shape, "", dtype=object)
    r = pd.Index(row_names).get_indexer(shown["row"])
    c = pd.Index(col_names).get_indexer(shown["column"])
    hidden = shown["row_pct"].eq("").to_numpy()
    pct[r, c] = np.where(hidden, np.nan, table["row_pct"].to_numpy())
    text[r, c] = np.where(hidden, shown["count"], [f"{v:.0%}" for v in table["row_pct"]])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(col_names), 0.8 + 0.45 * len(row_names)))
    image = ax.imshow(
        np.nan_to_num(pct, nan=0.0),
        cmap="Reds",
        vmin=0,
        vmax=max(np.nanmax(pct) if np.isfinite(pct).any() else 1, 0.01),
        aspect="auto",
    )
    ax.set_xticks(range(len(col_names)), col_names, rotation=40, ha="right")
    ax.set_yticks(range(len(row_names)), row_names)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    top = np.nanmax(pct) if np.isfinite(pct).any() else 1
    for (i, j), value in np.ndenumerate(text):
        ink = "white" if np.isfinite(pct[i, j]) and pct[i, j] > 0.6 * top else "black"
        ax.text(j, i, value, ha="center", va="center", fontsize=8, color=ink)
    fig.colorbar(image, ax=ax, label="share of the row")
    return pages.img(pages.png(fig), f"{row_label} by {col_label}")


# ------------------------------------------------------------------ drill-down


def export_cell(data: CrowdData, mask: np.ndarray, cell: str, out_file: Path) -> tuple[int, list[str], dict]:
    """Write the customers of ``mask`` (ids only), less those the consent rules leave out;
    return how many were written, the notes and how many were left out per reason (for the
    audit log's line)."""
    from portrait.privacy import export_note

    frame = pd.DataFrame({"customer_id": data.ids[mask].to_numpy()})
    kept, left_out = data.apply_consent(frame)
    notes = [export_note(left_out)]  # also when no consent rule is set: the file was not filtered
    out_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(kept.assign(cell=cell, as_of=data.as_of.isoformat()), out_file, csv=True)
    return len(kept), notes, left_out


# ------------------------------------------------------------------ comparison


@dataclass
class Comparison:
    sizes: dict[str, int]
    table: (
        pd.DataFrame
    )  # dimension, label, value, count_<i>, share_<i>, difference, p_value, p_holm, significant, tested
    figures: pd.DataFrame  # measure x crowd
    overlap: int  # customers in more than one crowd


def compare(data: CrowdData, masks: dict[str, np.ndarray], min_cell: int = 1) -> Comparison:
    """The crowds of ``masks`` on every dimension value; values fewer than ``min_cell``
    customers of the population hold are one row per dimension
    (:func:`~marketing.crowd_report.pooled_dimension`), tested as one value."""
    from marketing.crowd_report import key_figures

    names = list(masks)
    stacked = np.column_stack([masks[n] for n in names])
    sizes = {n: int(masks[n].sum()) for n in names}
    rows = []
    dims = data.dimensions
    for dim in dims.columns:
        column = pooled_dimension(dims[dim], min_cell)
        codes = column.cat.codes.to_numpy()
        k = len(column.cat.categories)
        counts = np.column_stack([np.bincount(codes[masks[n]], minlength=k) for n in names])
        # every value someone in the population holds, not the crowds' alone: those rows would
        # list a small crowd's values (one customer's whole profile for a crowd of one)
        for v in np.flatnonzero(np.bincount(codes[codes >= 0], minlength=k) > 0):
            rows.append((dim, str(column.cat.categories[v]), counts[v]))
    table = pd.DataFrame(
        {
            "dimension": [r[0] for r in rows],
            "label": [data.dimension_label(r[0]) for r in rows],
            "value": [r[1] for r in rows],
        }
    )
    count_matrix = np.array([r[2] for r in rows]).reshape(len(rows), len(names))
    size_vector = np.array([sizes[n] for n in names], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(size_vector > 0, count_matrix / size_vector, np.nan)
    for i, _ in enumerate(names):
        table[f"count_{i + 1}"] = count_matrix[:, i]
        table[f"share_{i + 1}"] = shares[:, i]
    table["difference"] = np.nanmax(shares, axis=1) - np.nanmin(shares, axis=1) if len(rows) else []
    p_values, tested = _tests(count_matrix, size_vector)
    table["p_value"] = p_values
    table["tested"] = tested
    table["p_holm"] = holm(p_values)
    table["significant"] = table["p_holm"] < ALPHA
    table = table.sort_values(["difference", "dimension", "value"], ascending=[False, True, True], kind="stable")
    figures = {}
    everyone = np.ones(len(data.frame), bool)
    for n in names:
        f = key_figures(data.frame, masks[n], everyone)
        figures[n] = f.set_index("measure")["crowd"]
    overlap = int((stacked.sum(axis=1) > 1).sum())
    return Comparison(sizes, table.reset_index(drop=True), pd.DataFrame(figures), overlap)


def _tests(counts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square p-value per value (has it / not, across crowds); NaN where not testable."""
    p = np.full(len(counts), np.nan)
    tested = np.zeros(len(counts), bool)
    for i, row in enumerate(counts):
        table = np.vstack([row, sizes - row])
        if (table.sum(axis=1) == 0).any() or (sizes == 0).any():
            continue
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        if expected.min() < MIN_EXPECTED:
            continue
        p[i] = chi2_contingency(table, correction=False)[1]
        tested[i] = True
    return p, tested


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), np.nan)
    known = np.flatnonzero(~np.isnan(p))
    if not len(known):
        return adjusted
    order = known[np.argsort(p[known], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def suppressed_comparison(result: Comparison, min_cell: int) -> pd.DataFrame:
    names = list(result.sizes)
    shown = result.table[["dimension", "label", "value"]].copy()
    for i, name in enumerate(names):
        counts = result.table[f"count_{i + 1}"].to_numpy()
        hide = suppression_mask(counts, min_cell, result.table["dimension"].to_numpy())
        shown[f"{name}: customers"] = hidden_counts(counts, hide, min_cell)
        shown[f"{name}: share"] = np.where(hide, "", result.table[f"share_{i + 1}"].map(lambda v: f"{v:.4f}"))
    any_hidden = shown[[f"{n}: share" for n in names]].eq("").any(axis=1)
    shown["difference"] = np.where(any_hidden, "", result.table["difference"].map(lambda v: f"{v:.4f}"))
    shown["p_holm"] = np.where(
        any_hidden | result.table["p_holm"].isna(), "", result.table["p_holm"].map(lambda v: f"{v:.3g}")
    )
    shown["significant"] = np.where(
        any_hidden,
        "",
        np.where(result.table["tested"], result.table["significant"].map({True: "yes", False: "no"}), "not tested"),
    )
    # Rows whose difference is hidden come last, by dimension and value: in the order of their
    # true difference, right after the shown ones, they would tell a small crowd's values (its
    # four members' RFM group and age band) though every count of theirs is hidden.
    return pd.concat(
        [shown[~any_hidden], shown[any_hidden].sort_values(["dimension", "value"], kind="stable")], ignore_index=True
    )


def compare_paths(out_dir: Path) -> dict[str, Path]:
    """The files a crowd comparison writes in ``out_dir`` (checked before any work)."""
    return {"csv": out_dir / "compare.csv", "md": out_dir / "compare.md", "html": out_dir / "compare.html"}


def write_compare(result: Comparison, data: CrowdData, min_cell: int, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = compare_paths(out_dir)
    check_targets(paths.values())
    shown = suppressed_comparison(result, min_cell)
    atomic_write(shown, paths["csv"], csv=True)
    figures = _figures(result, min_cell)
    names = list(result.sizes)
    intro = (
        f"As of {data.as_of}. Differences are the largest minus the smallest share; "
        + (
            f"'significant' after Holm's correction over {tests:,} chi-square tests at 5%. "
            if (tests := int(result.table["tested"].sum()))
            else "no value has enough customers in every crowd for a chi-square test. "
        )
        + f"{result.overlap:,} customers are in more than one crowd. Counts under {min_cell} are shown as <{min_cell}."
        + pooled_note(min_cell)
    )
    markdown = [
        "# Crowd comparison: " + pages.md_text(" / ".join(names)),
        "",
        pages.md_text(intro),
        "",
        "## Key figures",
        "",
        pages.markdown(figures.reset_index()),
        "",
    ]
    top = shown[shown["difference"] != ""].head(40)
    nothing_shown = (
        f"No difference can be shown: in every row a crowd's count is under {min_cell} (hidden), so the "
        "crowds are too small to compare here; compare larger crowds, or the same ones on more customers."
    )
    markdown += [
        "## Largest differences",
        "",
        pages.markdown(top.drop(columns="dimension")) if len(top) else pages.md_text(nothing_shown),
        "",
    ]
    atomic_write_text("\n".join(markdown) + "\n", paths["md"])
    body = f"<h1>{escape('Crowd comparison: ' + ' / '.join(names))}</h1><p class='note'>{escape(intro)}</p>"
    body += f"<h2>Key figures</h2>{figures.reset_index().to_html(index=False, na_rep='')}"
    chart = _difference_chart(result, shown.head(15), names)
    if chart:
        body += f"<h2>Largest differences</h2>{chart}"
    styled = top.drop(columns="dimension").to_html(index=False, na_rep="", escape=True)
    styled = (
        styled.replace("<td>yes</td>", "<td class='sig'>yes</td>") if len(top) else f"<p>{escape(nothing_shown)}</p>"
    )

    body += f"<h2>Every difference (largest first)</h2><div style='overflow-x:auto'>{styled}</div>"
    atomic_write_text(pages.page("Crowd comparison", body), paths["html"])
    return paths


def _figures(result: Comparison, min_cell: int) -> pd.DataFrame:
    shown = result.figures.astype(object).copy()
    for name, size in result.sizes.items():
        if size < min_cell:
            shown[name] = None
            shown.loc["customers", name] = crowd_size_shown(size, min_cell)
    for measure in shown.index:
        for name in shown.columns:
            value = shown.loc[measure, name]
            if isinstance(value, float) and measure == "customers":
                shown.loc[measure, name] = f"{int(value):,}"
            elif isinstance(value, float):
                shown.loc[measure, name] = (
                    "" if np.isnan(value) else (f"{value:.1%}" if measure.startswith("share") else f"{value:,.2f}")
                )
            elif isinstance(value, (int, np.integer)):
                shown.loc[measure, name] = f"{int(value):,}"
    return shown.rename_axis("measure")


def _difference_chart(result: Comparison, shown: pd.DataFrame, names: list[str]) -> str | None:
    shown = shown[shown["difference"] != ""]
    if shown.empty:
        return None
    plt = pages.pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(shown) + 1))
    y = np.arange(len(shown))
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        values = shown[f"{name}: share"].replace("", np.nan).astype(float).to_numpy()
        ax.barh(y - 0.4 + height * (i + 0.5), values, height=height, label=name)
    labels = [
        f"{lab}: {val}" + (" *" if sig == "yes" else "")
        for lab, val, sig in zip(shown["label"], shown["value"], shown["significant"], strict=True)
    ]
    ax.set_yticks(y, [lab if len(lab) < 48 else lab[:47] + "…" for lab in labels])
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of the crowd (* significant after Holm's correction)")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.08 - 0.3 / max(len(shown), 1)),
        ncol=min(len(names), 3),
        frameon=False,
    )
    return pages.img(pages.png(fig), "Largest differences between the crowds")
