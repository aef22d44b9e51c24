"""RFM scores and named value groups, as of a date.

``rfm_scores(features)`` takes the value features of :func:`features.build.build_features`
(recency ``days_since_last_purchase``, frequency ``orders_lifetime``, monetary
``spend_lifetime``; so only history before the as-of date counts) and gives each customer with
at least one purchase order R, F and M scores from 1 to 5.

Edge rules:

- Scores are quintiles of the customers with a purchase: a customer's score is
  ``ceil(5 * rank / n)``, where ``rank`` is the customer's position from worst to best and
  ties share the *average* rank of their block. Equal values therefore always get equal
  scores, and a large block of ties (many one-order customers) sits in the quintile that holds
  its middle, so quintiles can be unequal in size. Recency is ranked so that fewer days since
  the last purchase is better (R = 5 is the most recent).
- A customer with one order has ``F = 1``, the lowest frequency there is, however many share
  it: where most buyers bought once (86% of a real online shop's), the average rank of that
  block sits at F = 3, and one-time buyers would be called Champions (recent, high spend) or
  At risk (lapsed). Where fewer than 40% bought once the block's average rank gives 1 anyway.
- ``FM`` is the mean of F and M rounded half up: (3 + 4) / 2 = 3.5 gives 4.
- The group comes from the table :data:`GROUP_GRID` of R against FM, every cell named once.
- Customers with no purchase order before the as-of date (only events, only refunds, or a
  signup) have no scores and the group ``No purchase yet``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NO_PURCHASE = "No purchase yet"
GROUPS = (
    "Champions",
    "Loyal",
    "Potential loyalists",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose",
    "Hibernating",
    "Lost",
    NO_PURCHASE,
)
# GROUP_GRID[R][FM - 1]: rows are recency scores 5 (recent) to 1, columns FM 1 to 5.
GROUP_GRID = {
    5: ("New", "Potential loyalists", "Potential loyalists", "Champions", "Champions"),
    4: ("Promising", "Potential loyalists", "Potential loyalists", "Loyal", "Champions"),
    3: ("About to sleep", "Need attention", "Need attention", "Loyal", "Loyal"),
    2: ("Hibernating", "Hibernating", "At risk", "At risk", "Can't lose"),
    1: ("Lost", "Lost", "At risk", "At risk", "Can't lose"),
}
RFM_INPUTS = ("days_since_last_purchase", "orders_lifetime", "spend_lifetime")
RFM_COLUMNS = ("rfm_r", "rfm_f", "rfm_m", "rfm_fm", "rfm_group")


def quintile_scores(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """1-5 by ``ceil(5 * average rank / n)`` over the non-missing values (see module rules)."""
    present = values.dropna()
    ranks = present.rank(method="average", ascending=higher_is_better)
    scores = np.ceil(5 * ranks / max(len(present), 1)).clip(1, 5).astype("int64")
    return scores.reindex(values.index).astype("Int64")


def rfm_scores(features: pd.DataFrame) -> pd.DataFrame:
    """``customer_id``, ``rfm_r``, ``rfm_f``, ``rfm_m``, ``rfm_fm`` (nullable ints) and
    ``rfm_group`` for every row of ``features``."""
    missing = [c for c in ("customer_id", *RFM_INPUTS) if c not in features.columns]
    if missing:
        raise ValueError(f"RFM needs the value features {missing}")
    bought = features["orders_lifetime"].fillna(0) > 0
    r = quintile_scores(features["days_since_last_purchase"].where(bought), higher_is_better=False)
    orders = features["orders_lifetime"].where(bought).astype("float64")
    f = quintile_scores(orders).mask(orders == 1, 1)  # one order: the lowest frequency (module rules)
    m = quintile_scores(features["spend_lifetime"].where(bought))
    fm = np.floor((f.astype("float64") + m.astype("float64")) / 2 + 0.5)
    grid = np.array([GROUP_GRID[row] for row in (1, 2, 3, 4, 5)], dtype=object)
    r_index = r.fillna(1).astype("int64").to_numpy() - 1
    fm_index = pd.Series(fm).fillna(1).astype("int64").to_numpy() - 1
    group = np.where(bought.to_numpy(), grid[r_index, fm_index], NO_PURCHASE)
    return pd.DataFrame(
        {
            "customer_id": features["customer_id"].to_numpy(),
            "rfm_r": r.to_numpy(),
            "rfm_f": f.to_numpy(),
            "rfm_m": m.to_numpy(),
            "rfm_fm": pd.array(fm, dtype="Int64"),
            "rfm_group": pd.Categorical(group, categories=GROUPS),
        }
    )


def group_summary(features: pd.DataFrame, rfm: pd.DataFrame) -> pd.DataFrame:
    """Per group: customers, share of customers, share of revenue (net lifetime spend of
    customers with a purchase), mean recency, frequency and monetary value."""
    table = pd.DataFrame(
        {
            "rfm_group": rfm["rfm_group"].to_numpy(),
            "recency": features["days_since_last_purchase"].to_numpy(),
            "frequency": features["orders_lifetime"].to_numpy(),
            "monetary": features["spend_lifetime"].to_numpy(),
        }
    )
    revenue = table["monetary"].where(table["rfm_group"] != NO_PURCHASE, 0.0).clip(lower=0)
    total = revenue.sum() or 1.0
    summary = (
        table.assign(revenue=revenue)
        .groupby("rfm_group", observed=False)
        .agg(
            customers=("recency", "size"),
            revenue=("revenue", "sum"),
            mean_recency_days=("recency", "mean"),
            mean_frequency=("frequency", "mean"),
            mean_monetary=("monetary", "mean"),
        )
    )
    summary.insert(1, "share_of_customers", summary["customers"] / max(len(table), 1))
    summary.insert(3, "share_of_revenue", summary["revenue"] / total)
    return summary.drop(columns="revenue").reset_index()


def top_share_of_revenue(features: pd.DataFrame, top: float = 0.2) -> float:
    """Share of net revenue (customers with a purchase, refunds deducted, negatives as 0) that
    comes from the top ``top`` fraction of those customers by monetary value."""
    bought = features["orders_lifetime"].fillna(0) > 0
    revenue = features.loc[bought, "spend_lifetime"].clip(lower=0).sort_values(ascending=False).to_numpy()
    if not len(revenue) or revenue.sum() <= 0:
        return float("nan")
    n = max(int(np.ceil(top * len(revenue))), 1)
    return float(revenue[:n].sum() / revenue.sum())


def migration(previous: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Customers moving from each group at the previous date (rows) to each group now
    (columns). Customers not yet seen at the previous date are the row ``Not yet a customer``."""
    joined = current[["customer_id", "rfm_group"]].merge(
        previous[["customer_id", "rfm_group"]], on="customer_id", how="left", suffixes=("", "_previous")
    )
    before = joined["rfm_group_previous"].astype("object").fillna("Not yet a customer")
    table = pd.crosstab(
        pd.Categorical(before, categories=["Not yet a customer", *GROUPS]),
        pd.Categorical(joined["rfm_group"].astype("object"), categories=list(GROUPS)),
        dropna=False,
    )
    table.index.name, table.columns.name = "from", "to"
    return table


def rule_table_markdown() -> str:
    """The group rules as a Markdown table (docs/rfm.md)."""
    lines = ["| R \\ FM | 1 | 2 | 3 | 4 | 5 |", "| --- | --- | --- | --- | --- | --- |"]
    for r in (5, 4, 3, 2, 1):
        lines.append(f"| **{r}** | " + " | ".join(GROUP_GRID[r]) + " |")
    return "\n".join(lines)


def rfm_doc() -> str:
    """docs/rfm.md: the scoring rules (this module's docstring) and the group table."""
    rules = __doc__.split("Edge rules:", 1)[1].strip()
    return (
        "# RFM scores and value groups\n\n"
        "Generated by `make docs` from `marketing/rfm.py` (a test checks it agrees with the code).\n\n"
        "Recency is the days since the last purchase, frequency the purchase orders and monetary the net "
        "spend before the as-of date.\n\n"
        f"{rules}\n\n## Groups: recency score (rows) against FM (columns)\n\n{rule_table_markdown()}\n"
    )
