"""Retrain and promote one model for ``portrait refresh --retrain-if-drift`` (serving/ never
imports training, so the command is given this function when it is registered)."""

from __future__ import annotations

from pathlib import Path

from portrait.errors import PortraitError


def retrain_and_promote(name: str, experiment: Path, data: Path) -> str:
    """Train ``experiment`` on ``data`` (registers a ``candidate``) and promote it if its
    holdout metric is at least the champion's; one sentence saying what happened."""
    from training.config import load_experiment
    from training.registry import promote
    from training.train import train_experiment

    config = load_experiment(experiment).with_data(data)
    if config.name != name:
        raise PortraitError(f"[retrain] {name} = {str(experiment)!r}, but that experiment trains {config.name!r}")
    summary = train_experiment(config)
    try:
        promoted = promote(name).sentence()
    except PortraitError as exc:  # a worse candidate is not an error: the champion stays
        promoted = f"not promoted ({exc})"
    return f"trained v{summary.model_version}; {promoted}"
