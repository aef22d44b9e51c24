"""Engagement against spend: who is active without buying ("potential high spenders").

Engagement is the number of interactions (every event type: views, searches, carts, campaign
clicks, service contacts, ...) in the window; spend is net spend in the same window. Both are
turned into percentiles among the customers of the crowd (the share of the crowd with a
strictly lower value, 0-100), so the quadrants are relative to the crowd and a customer with
no interaction is never "high" however many share that zero. A customer is high on an axis at or above
``split`` (default the median). The high-engagement, low-spend cell is the potential high
spenders, ranked by the high-value model's score when a scores folder is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from marketing.crowd import CrowdData
from portrait import pages
from portrait.errors import PortraitError
from portrait.files import atomic_write, atomic_write_text, check_targets

WINDOWS = (30, 90, 180, 365)
CELLS = {
    (True, False): "potential high spenders (high engagement, low spend)",
    (True, True): "stars (high engagement, high spend)",
    (False, True): "quiet spenders (low engagement, high spend)",
    (False, False): "low value (low engagement, low spend)",
}
POTENTIAL = CELLS[(True, False)]
RANK_MODEL = "high_value_90d"


@dataclass
class Quadrant:
    window: int
    split: float
    cells: pd.DataFrame  # cell, customers, share, mean_events, mean_spend
    customers: pd.DataFrame  # customer_id, engagement_pct, spend_pct, cell (crowd members)
    grid: np.ndarray  # 10 x 10 counts of (engagement decile, spend decile)


def columns_for(window: int) -> list[str]:
    if window not in WINDOWS:
        raise PortraitError(f"--within-days for the quadrant is one of {list(WINDOWS)}, not {window}")
    return [f"event_count_{window}d", f"spend_{window}d"]


def quadrant(data: CrowdData, crowd: np.ndarray, window: int = 90, split: float = 50.0) -> Quadrant:
    if not data.has_events:
        raise PortraitError("the quadrant needs an events table (engagement is interactions); this data set has none")
    if not 0 < split < 100:
        raise PortraitError(f"--split is a percentile between 0 and 100, not {split}")
    events_column, spend_column = columns_for(window)
    frame = data.population.frame(columns=[events_column, spend_column])
    members = frame[crowd]
    events = members[events_column].fillna(0).astype(float)
    spend = members[spend_column].fillna(0).astype(float)
    n = max(len(members), 1)
    engagement_pct = (events.rank(method="min").to_numpy() - 1) / n * 100
    spend_pct = (spend.rank(method="min").to_numpy() - 1) / n * 100
    high_engagement, high_spend = engagement_pct >= split, spend_pct >= split
    labels = np.empty(len(members), dtype=object)
    for (engaged, spent), name in CELLS.items():
        labels[(high_engagement == engaged) & (high_spend == spent)] = name
    customers = pd.DataFrame(
        {
            "customer_id": members["customer_id"].astype("str").to_numpy(),
            "engagement_pct": engagement_pct.round(2),
            "spend_pct": spend_pct.round(2),
            f"events_{window}d": events.to_numpy(),
            f"spend_{window}d": spend.to_numpy(),
            "cell": labels,
        }
    )
    summary = (
        customers.groupby("cell")
        .agg(
            customers=("customer_id", "size"),
            mean_events=(f"events_{window}d", "mean"),
            mean_spend=(f"spend_{window}d", "mean"),
        )
        .reindex(list(CELLS.values()), fill_value=0)
        .rename_axis("cell")
        .reset_index()
    )
    summary["share"] = summary["customers"] / max(len(customers), 1)
    deciles = lambda pct: np.minimum((pct // 10).astype(int), 9)  # noqa: E731
    grid = np.zeros((10, 10), dtype=int)
    if len(customers):
        np.add.at(grid, (deciles(engagement_pct), deciles(spend_pct)), 1)
    return Quadrant(
        window, split, summary[["cell", "customers", "share", "mean_events", "mean_spend"]], customers, grid
    )


def potential_high_spenders(data: CrowdData, result: Quadrant) -> tuple[pd.DataFrame, str]:
    """The potential high spenders, ranked by the high-value model's score when the scores
    have one (else by engagement percentile), and how they were ranked."""
    chosen = result.customers[result.customers["cell"] == POTENTIAL].drop(columns="cell")
    scores = data.population.scores
    score_column = f"{RANK_MODEL}_score"
    if scores is not None and score_column in scores.columns:
        chosen = chosen.merge(scores[["customer_id", score_column]], on="customer_id", how="left")
        chosen = chosen.sort_values([score_column, "customer_id"], ascending=[False, True], na_position="last")
        return chosen.reset_index(drop=True), f"ranked by the {RANK_MODEL} model's score"
    chosen = chosen.sort_values(["engagement_pct", "customer_id"], ascending=[False, True])
    return chosen.reset_index(drop=True), (
        f"ranked by engagement (no {score_column} in the scores; --scores DIR of a scoring with it ranks by it)"
    )


def quadrant_paths(out_dir: Path) -> dict[str, Path]:
    """The files a quadrant writes in ``out_dir`` (checked before any work)."""
    return {
        "csv": out_dir / "quadrant.csv",
        "html": out_dir / "quadrant.html",
        "potential": out_dir / "potential_high_spenders.csv",
    }


def write_quadrant(
    data: CrowdData,
    result: Quadrant,
    crowd_name: str,
    min_cell: int,
    out_dir: Path,
    audited: Callable[[int, dict[str, int]], None] | None = None,
) -> tuple[dict[str, Path], list[str], int]:
    from portrait.privacy import consent_note

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = quadrant_paths(out_dir)
    check_targets(paths.values())
    cells = result.cells.astype(object).copy()
    hide = result.cells["customers"].to_numpy() < min_cell
    cells["customers"] = np.where(hide, f"<{min_cell}", result.cells["customers"].astype(str))
    for column in ("share", "mean_events", "mean_spend"):
        cells[column] = np.where(hide, "", result.cells[column].map(lambda v: f"{v:.4f}"))
    atomic_write(cells, paths["csv"], csv=True)
    ranked, how = potential_high_spenders(data, result)
    kept, left_out = data.apply_consent(ranked)
    notes = [how] + ([note] if (note := consent_note(left_out)) else [])
    # customer ids leave the program: recorded once the file is written whole, before it is published
    atomic_write(
        kept, paths["potential"], csv=True, before_publish=(lambda: audited(len(kept), left_out)) if audited else None
    )
    title = f"Engagement against spend: {crowd_name}"
    intro = (
        f"As of {data.as_of}. Engagement: interactions in the last {result.window} days; spend: net spend "
        f"in the same days; both as percentiles within the crowd, high from the {result.split:g}th. "
        f"Counts under {min_cell} shown as &lt;{min_cell}."
    )
    shown_any = bool((result.grid >= min_cell).any())
    chart = (
        pages.img(_chart(result, min_cell), title)
        if shown_any
        else f"<p>Every cell of the chart holds fewer than {min_cell} customers: no chart is drawn.</p>"
    )
    body = f"<h1>{escape(title)}</h1><p class='note'>{intro}</p>{chart}"
    body += (
        cells.to_html(index=False)
        + f"<p>Potential high spenders: {escape(paths['potential'].name)} ({escape(how)}).</p>"
    )
    atomic_write_text(pages.page(title, body), paths["html"])
    return paths, notes, len(kept)


def _chart(result: Quadrant, min_cell: int) -> str:
    plt = pages.pyplot()
    grid = np.where(result.grid < min_cell, 0, result.grid).astype(float)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(grid, origin="lower", cmap="Blues", extent=(0, 100, 0, 100), aspect="equal")
    ax.axvline(result.split, color="#c0392b", linewidth=1.2)
    ax.axhline(result.split, color="#c0392b", linewidth=1.2)
    ax.set_xlabel(f"spend percentile (last {result.window} days)")
    ax.set_ylabel(f"engagement percentile (interactions, last {result.window} days)")
    ax.text(2, 97, "potential high spenders", va="top", fontsize=9, color="#c0392b", weight="bold")
    ax.text(98, 97, "stars", va="top", ha="right", fontsize=9)
    ax.text(98, 3, "quiet spenders", ha="right", fontsize=9)
    ax.text(2, 3, "low value", fontsize=9)
    fig.colorbar(image, ax=ax, label=f"customers (cells under {min_cell} left blank)")
    return pages.png(fig)
