"""PNG plots logged with each run (matplotlib's Agg backend; nothing is shown)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def gains_chart(y, scores: dict[str, np.ndarray], path: Path) -> None:
    """Cumulative share of positives (or value) captured against share of customers targeted."""
    plt = _pyplot()
    y = np.asarray(y, float).clip(min=0)
    fig, ax = plt.subplots(figsize=(6, 5))
    share = np.arange(1, len(y) + 1) / len(y)
    for label, score in scores.items():
        order = np.argsort(-np.asarray(score, float), kind="stable")
        ax.plot(share, np.cumsum(y[order]) / y.sum(), label=label)
    ax.plot([0, 1], [0, 1], "k--", label="random")
    ax.set(xlabel="share of customers targeted", ylabel="share of positives captured", title="Gains on the holdout")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibration_curve(y, calibrated, uncalibrated, path: Path, bins: int = 10) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, p in (("calibrated", calibrated), ("uncalibrated", uncalibrated)):
        if p is None:
            continue
        frame = pd.DataFrame({"y": y, "p": p})
        frame["bin"] = np.minimum((frame["p"] * bins).astype(int), bins - 1)
        curve = frame.groupby("bin").agg(p=("p", "mean"), y=("y", "mean"))
        ax.plot(curve["p"], curve["y"], marker="o", label=label)
    ax.plot([0, 1], [0, 1], "k--", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration on the holdout")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importance_chart(importance: pd.Series, path: Path, top: int = 25) -> None:
    plt = _pyplot()
    shown = importance.head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(shown) + 1.2))
    ax.barh(shown.index, shown.values)
    ax.set(xlabel="mean |SHAP contribution|", title="Feature importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
