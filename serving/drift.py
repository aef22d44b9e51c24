"""Population stability of each feature at scoring time against the training reference."""

from __future__ import annotations

import pandas as pd

from models.drift import bin_shares, category_shares, population_stability_index

WARN = 0.1
FLAG = 0.25


def drift_report(reference: dict[str, dict], features: pd.DataFrame) -> dict:
    """PSI per feature (numbers by their training deciles, categories by their training values,
    any other value and missing); features above 0.1 are warnings and above 0.25 flags, worst first."""
    psi = {}
    for column, ref in reference.items():
        if column not in features.columns:
            continue
        if "values" in ref:  # a category (models trained before 2026-12-06 have numbers only)
            shares = category_shares(features[column], ref["values"])
        else:
            shares = bin_shares(features[column], ref["edges"])
        psi[column] = population_stability_index(ref["shares"], shares)
    ordered = sorted(psi.items(), key=lambda item: -item[1])
    return {
        "flagged": {k: round(v, 4) for k, v in ordered if v > FLAG},
        "warnings": {k: round(v, 4) for k, v in ordered if WARN < v <= FLAG},
        "features_checked": len(psi),
    }
