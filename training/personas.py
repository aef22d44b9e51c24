"""``portrait personas fit``: cluster the feature rows, name and describe the personas, keep ids
stable against the previous registered model, log to MLflow and register ``personas``."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from features.build import LATE_AS_OF_DAYS, build_features, late_as_of_note, nobody_before, parse_cutoff
from features.catalogue import ASPECTS, FAMILIES
from models.persona_profile import (
    feature_lifts,
    match_personas,
    name_personas,
    persona_feature_columns,
    portrait_table,
    support_columns,
)
from models.personas import ALGORITHMS, STABLE_ARI, PersonaModel, numeric_columns, too_few_customers
from models.pyfunc import PersonaPyfunc, StoredFit, serving_frame
from models.task import PERSONAS, PersonaCard
from portrait.errors import ConfigError, PortraitError
from portrait.files import atomic_write, exclusive_lock
from portrait.toml_text import as_toml
from training.champion import CHAMPION
from training.config import DEMO, check_keys, check_name, data_path_of, demo_path_of, table_of
from training.data import resolve_dataset
from training.persona_report import read_portrait_table, write_k_plot, write_portrait
from training.tracking import ensure_experiment, register_pyfunc
from training.train import CANDIDATE

DEFAULT_FAMILIES = ("value", "windows", "rhythm", "preferences", "price_promotion", "timing", "behaviour", "attributes")


@dataclass(frozen=True)
class PersonaConfig:
    name: str
    data: str
    as_of: dt.date | None = None
    families: tuple[str, ...] = DEFAULT_FAMILIES
    features: tuple[str, ...] | None = None  # cluster on exactly these instead of the default choice
    k: int | None = None
    k_min: int = 4
    k_max: int = 9
    algorithm: str = "kmeans"
    pca_components: int | None = None
    random_state: int = 42
    shrinkage: float = 1.0  # pseudo-orders pulling each share towards the population's
    aspects: tuple[str, ...] = ("shape",)  # the catalogue aspects clustered on by default
    clip: float | None = 3.0  # standard deviations each clustered value is clipped at
    balance: float = 0.4  # a catalogue group of n columns weighs n ** (1 - 2 * balance) columns
    source: Path | None = field(default=None, compare=False)  # the config file, if any

    @property
    def demo_path(self) -> Path:
        return demo_path_of(self.source)


def load_persona_config(path: Path) -> PersonaConfig:
    """The persona experiment in ``path``, every value type-checked; its ``[data] path`` is read
    from the file's folder (``"demo"`` from its project), as for training experiments."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    check_keys(str(path), raw, {"name", "data", "as_of", "families", "features", "clustering"})
    name = raw.get("name", "personas")
    check_name(str(path), name)
    data = table_of(str(path), raw, "data")
    check_keys(f"{path} [data]", data, {"path"})
    data_path = data.get("path", DEMO)
    if not isinstance(data_path, str) or not data_path:
        raise ConfigError(f"{path} [data]: path must be 'demo' or a data set folder, got {as_toml(data_path)}")
    clustering = table_of(str(path), raw, "clustering")
    check_keys(f"{path} [clustering]", clustering, {
        "k", "k_min", "k_max", "algorithm", "pca_components", "random_state", "shrinkage", "aspects", "clip", "balance",
    })  # fmt: skip
    where = f"{path} [clustering]"
    families = raw.get("families", list(DEFAULT_FAMILIES))
    if not isinstance(families, list) or not all(isinstance(f, str) for f in families):
        raise ConfigError(f"{path}: families must be a list of family names, got {as_toml(families)}")
    features = raw.get("features")
    if features is not None and (
        not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features)
    ):
        raise ConfigError(f"{path}: features must be a non-empty list of feature names, got {as_toml(features)}")
    if unknown := set(families) - set(FAMILIES):
        raise ConfigError(f"{path}: unknown families {sorted(unknown)}; known: {list(FAMILIES)}")
    algorithm = clustering.get("algorithm", "kmeans")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"{where}: algorithm must be one of {as_toml(list(ALGORITHMS))}, got {as_toml(algorithm)}")
    shrinkage = _number(where, clustering, "shrinkage", 1.0)
    if shrinkage < 0:
        raise ConfigError(f"{where}: shrinkage must be >= 0, got {shrinkage}")
    aspects = clustering.get("aspects", ["shape"])
    if not isinstance(aspects, list) or not aspects or set(aspects) - set(ASPECTS):
        raise ConfigError(f"{where}: aspects must be a non-empty list of {list(ASPECTS)}, got {as_toml(aspects)}")
    clip = clustering.get("clip", 3.0)
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, int | float) or not math.isfinite(clip) or clip <= 0
    ):
        raise ConfigError(f"{where}: clip must be a positive number of standard deviations, got {as_toml(clip)}")
    k_min, k_max = _integer(where, clustering, "k_min", 4), _integer(where, clustering, "k_max", 9)
    if not 2 <= k_min <= k_max:
        raise ConfigError(f"{where}: need 2 <= k_min <= k_max, got {k_min}, {k_max}")
    k = _integer(where, clustering, "k", None)
    if k is not None and k < 2:
        raise ConfigError(f"{where}: k must be at least 2, got {k}")
    pca_components = _integer(where, clustering, "pca_components", None)
    if pca_components is not None and pca_components < 1:
        raise ConfigError(f"{where}: pca_components must be a positive integer, got {pca_components}")
    random_state = _integer(where, clustering, "random_state", 42)
    if not 0 <= random_state < 2**32:  # scikit-learn's range for a seed
        raise ConfigError(f"{where}: random_state must be a whole number from 0 to 4294967295, got {random_state}")
    balance = _number(where, clustering, "balance", 0.4)
    if not 0 <= balance <= 1:
        raise ConfigError(f"{where}: balance must be from 0 to 1, got {balance}")
    as_of = raw.get("as_of")
    return PersonaConfig(
        name=name,
        data=data_path_of(data_path, path),
        as_of=parse_cutoff(str(as_of)) if as_of is not None else None,
        families=tuple(families),
        features=tuple(features) if features else None,
        k=k,
        k_min=k_min,
        k_max=k_max,
        algorithm=algorithm,
        pca_components=pca_components,
        random_state=random_state,
        shrinkage=shrinkage,
        aspects=tuple(aspects),
        clip=float(clip) if clip is not None else None,
        balance=balance,
        source=path,
    )


def _integer(where: str, table: dict, key: str, default: int | None) -> int | None:
    value = table.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: {key} must be a whole number, got {as_toml(value)}")
    return value


def _number(where: str, table: dict, key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, got {as_toml(value)}")
    return float(value)


@dataclass
class PersonaFit:
    model: PersonaModel
    features: pd.DataFrame
    labels: np.ndarray  # persona ids (stable), one per row
    names: dict[int, str]
    table: pd.DataFrame
    lifts: pd.DataFrame  # persona_id, persona_name, then each clustered feature's lift
    changes: dict[str, list]
    cluster_to_persona: dict[int, int]


def fit_personas(config: PersonaConfig, features: pd.DataFrame, previous=None) -> PersonaFit:
    """Fit, then carry ids and names over from ``previous`` (a fitted :class:`PersonaFit`-like
    object with ``model`` and ``names`` and ``cluster_to_persona``) where clusters match."""
    if problem := too_few_customers(len(features), config.k or config.k_max):
        raise PortraitError(f"{problem}; a smaller k_max (or k) or a larger data set")
    columns = _clustered_columns(config, features)
    support = support_columns(columns, list(features.columns)) if config.features is None else []
    model = PersonaModel(
        k=config.k,
        k_range=(config.k_min, config.k_max),
        algorithm=config.algorithm,
        pca_components=config.pca_components,
        random_state=config.random_state,
        shrinkage=config.shrinkage,
        support=tuple(support),
        clip=config.clip,
        balance=config.balance,
    ).fit(features[columns + support])
    clusters = model.predict(features)
    names = name_personas(features, clusters)
    cluster_to_persona = {c: c for c in range(model.k_)}
    changes = {"kept": [], "new": [], "gone": [], "merged": []}
    if previous is not None:
        cluster_to_persona, names, changes = _carry_over(model, features, clusters, names, previous)
    labels = np.vectorize(cluster_to_persona.get)(clusters)
    persona_names = {cluster_to_persona[c]: names[c] for c in names}
    table = portrait_table(features, labels, persona_names)
    lifts = feature_lifts(features[model.feature_names_], labels, persona_names)
    return PersonaFit(model, features, labels, persona_names, table, lifts, changes, cluster_to_persona)


def _clustered_columns(config: PersonaConfig, features: pd.DataFrame) -> list[str]:
    if config.features is None:
        columns = [c for c in features.columns if c != "customer_id"]
        chosen = persona_feature_columns(columns, aspects=config.aspects)
        numeric = numeric_columns(features[chosen])
        if not numeric:
            raise ConfigError(
                f"{config.name}: no numeric feature of aspects {list(config.aspects)} in families "
                f"{list(config.families)}; `portrait features list` shows every feature's family"
            )
        return numeric
    if missing := [c for c in config.features if c not in features.columns]:
        raise ConfigError(
            f"{config.name}: features {missing} are not built by families {list(config.families)}; "
            "`portrait features list` shows every feature and its family"
        )
    if text := [c for c in config.features if c not in numeric_columns(features[list(config.features)])]:
        raise ConfigError(f"{config.name}: features {text} are not numeric; personas cluster on numbers only")
    return list(config.features)


def _carry_over(model, features, clusters, names, previous):
    """Match clusters to the previous model's by centroid distance in the new model's space:
    the previous model labels today's rows, and its personas' centroids are those rows' means."""
    old_ids = sorted(set(previous.cluster_to_persona.values()))
    lacking = [c for c in previous.model.feature_names_ if c not in features.columns]
    if lacking:  # today's data lacks features the previous model clustered on: nothing to match
        first = max(old_ids) + 1  # new ids, never an old persona's id for a different group
        mapping = {cluster: first + cluster for cluster in range(model.k_)}
        changes = {"kept": [], "new": list(mapping.values()), "gone": old_ids, "merged": []}
        changes["note"] = (
            f"the previous personas were not matched: this data set lacks {len(lacking)} of the features "
            f"they were fitted on ({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}); new ids from {first}"
        )
        return mapping, names, changes
    Z = model.transform(features)
    old_clusters = previous.model.predict(features)
    present = [c for c in range(previous.model.k_) if (old_clusters == c).any()]
    old_centroids = np.vstack([Z[old_clusters == c].mean(axis=0) for c in present])
    matches, gone, cost = match_personas(old_centroids, model.centroids())
    next_id = max(old_ids) + 1
    mapping, new_names = {}, {}
    changes = {"kept": [], "new": [], "gone": [], "merged": []}
    for cluster in range(model.k_):
        if cluster in matches:
            old_cluster = present[matches[cluster]]
            persona = previous.cluster_to_persona[old_cluster]
            mapping[cluster], new_names[cluster] = persona, previous.names[persona]
            changes["kept"].append(persona)
        else:
            mapping[cluster], new_names[cluster] = next_id, names[cluster]
            changes["new"].append(next_id)
            next_id += 1
    for index in gone:
        persona = previous.cluster_to_persona[present[index]]
        nearest = int(np.argmin(cost[index]))
        if nearest in matches:  # its nearest new cluster is another persona: merged into it
            changes["merged"].append([persona, mapping[nearest]])
        else:
            changes["gone"].append(persona)
    changes["gone"] += [previous.cluster_to_persona[c] for c in range(previous.model.k_) if c not in present]
    return mapping, new_names, changes


def persona_summary(fit: PersonaFit, config: PersonaConfig) -> dict:
    """What the personas page says about the fit as a whole: k, its bootstrap stability and
    silhouette, what was clustered, and how many personas have a distinguishing non-volume
    feature."""
    chosen = fit.model.k_scores_.loc[fit.model.k_]
    return {
        "k": int(fit.model.k_),
        "stability_ari": round(float(chosen["stability"]), 4),
        "silhouette": round(float(chosen["silhouette"]), 4),
        "stable_from": STABLE_ARI,
        "k_range": [config.k_min, config.k_max] if config.k is None else [config.k, config.k],
        "aspects": list(config.aspects),
        "clustered_features": len(fit.model.clustered_names_),
        "customers": int(len(fit.labels)),
        "personas_distinguished": int((fit.table["distinguishing_count"] > 0).sum()),
    }


def persona_card(
    config: PersonaConfig, fit: PersonaFit, features: pd.DataFrame, as_of: dt.date, summary: dict
) -> PersonaCard:
    """The typed card stored beside the registered persona model (``meta.json``)."""
    chosen = fit.model.k_scores_.loc[fit.model.k_]
    return PersonaCard(
        name=config.name,
        features=list(fit.model.feature_names_),
        families=list(config.families),
        names=fit.names,
        as_of=as_of.isoformat(),
        vocabulary=features.attrs["vocabulary"],
        feature_config={},  # personas build features with the default settings
        metrics={
            "persona_stability": chosen["stability"],
            "persona_silhouette": chosen["silhouette"],
            "personas_distinguished": summary["personas_distinguished"],
        },
    )


def previous_fit(name: str):
    """The registered model's latest (champion, else candidate) persona fit, or None."""
    client = MlflowClient()
    for alias in (CHAMPION, CANDIDATE):
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            continue
        path = mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}")
        return joblib.load(Path(path) / "artifacts" / "persona_fit.joblib")
    return None


def fit_lock_path(name: str) -> Path:
    """The lock two fits of registered model ``name`` in the current tracking store share:
    beside a local SQLite store, else in the working directory (a remote store is locked per
    machine only)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        database = Path(uri[len("sqlite:///") :].split("?", 1)[0])
        return database.with_name(f".{database.name}.personas-fit-{safe}.lock")
    return Path.cwd() / f".portrait-personas-fit-{safe}.lock"


def run_persona_fit(
    config: PersonaConfig, as_of: dt.date | None = None, out: Path | None = None, progress=None
) -> tuple[PersonaFit, str, str]:
    """Fit, log and register personas (see the module docstring). One fit of a model name runs
    at a time per store: a second one, started while the first runs, stops at once with
    :class:`portrait.files.LockHeld` (it would carry persona ids over from the same previous
    version and register after the first, so ids would not follow the latest version)."""
    with exclusive_lock(fit_lock_path(config.name), f"a personas fit of {config.name!r}"):
        return _run_persona_fit(config, as_of, out, progress)


def _run_persona_fit(
    config: PersonaConfig, as_of: dt.date | None, out: Path | None, progress
) -> tuple[PersonaFit, str, str]:
    say = progress or (lambda message: None)
    _require_personas_name(config.name)  # before the fit, not after it
    dataset = resolve_dataset(config.data, config.demo_path)
    cutoff = as_of or config.as_of
    if cutoff is None:
        con = dataset.connect()
        last = con.execute("SELECT CAST(MAX(ts) AS DATE) FROM purchases").fetchall()[0][0]
        con.close()
        cutoff = last + dt.timedelta(days=1)
    say(f"building features as of {cutoff}")
    features = build_features(dataset, cutoff, families=config.families)
    if features.empty:
        raise PortraitError(nobody_before(cutoff, "nothing to cluster"))
    if late := late_as_of_note(
        features, cutoff, "every purchase window is empty, so personas would be told apart by nothing recent"
    ):
        raise PortraitError(f"{late} (give an as-of date within {LATE_AS_OF_DAYS} days of the data)")
    searched = f"k={config.k}" if config.k else f"k search {config.k_min}-{config.k_max}"
    say(f"clustering {len(features):,} customers ({searched} on a sample, then all rows)")
    fit = fit_personas(config, features, previous_fit(config.name))
    say("logging the run and registering the model")
    experiment_id = ensure_experiment(config.name)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.name}-fit") as run:
        mlflow.log_params(
            {
                "as_of": cutoff.isoformat(),
                "algorithm": config.algorithm,
                "shrinkage": config.shrinkage,
                "aspects": ",".join(config.aspects),
                "clip": config.clip,
                "balance": config.balance,
                "k": fit.model.k_,
                "k_range": f"{config.k_min}-{config.k_max}",
                "families": ",".join(config.families),
                "features": len(fit.model.feature_names_),
                "customers": len(features),
                "dataset": dataset.name,
                "dataset_fingerprint": dataset.fingerprint(),
            }
        )
        for k, row in fit.model.k_scores_.iterrows():
            mlflow.log_metrics({"silhouette": row["silhouette"], "stability_ari": row["stability"]}, step=int(k))
        mlflow.log_metric("chosen_k", fit.model.k_)
        summary = persona_summary(fit, config)
        card = persona_card(config, fit, features, cutoff, summary)
        mlflow.log_metrics(card.metrics)  # persona_stability (the headline), silhouette, distinguished
        # promotion compares bootstrap stability: a refit must be at least as reproducible
        mlflow.set_tag("headline_metric", PERSONAS.headline_metric)
        mlflow.log_dict(fit.changes, "persona_changes.json")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write_portrait(fit.table, tmp, fit.lifts, summary=summary)
            write_k_plot(fit.model.k_scores_, tmp / "k_selection.png")
            mlflow.log_artifacts(str(tmp), artifact_path="portrait")
            stored = tmp / "persona_fit.joblib"
            joblib.dump(StoredFit(fit.model, fit.names, fit.cluster_to_persona), stored)
            meta = card.write(tmp / "meta.json")
            example = serving_frame(features[fit.model.feature_names_].head(5))
            # Inside the fit lock (run_persona_fit): ids carried over from the version this fit
            # read are registered before another fit of the model can read it.
            version = register_pyfunc(
                config.name,
                PersonaPyfunc(),
                {"persona_fit": str(stored), "meta": str(meta)},
                example,
                pd.DataFrame({"persona_id": [0], "persona_name": ["x"]}),
                CANDIDATE,
            )
    if out:
        assignments = pd.DataFrame(
            {
                "customer_id": features["customer_id"],
                "persona_id": fit.labels,
                "persona_name": [fit.names[i] for i in fit.labels],
            }
        )
        atomic_write(assignments, out)
    return fit, run.info.run_id, version


def _is_personas_run(client: MlflowClient, run_id: str) -> bool:
    return client.get_run(run_id).data.tags.get("headline_metric") == PERSONAS.headline_metric


def _require_personas_name(name: str) -> None:
    """A persona model may not take the name of a registered model of another kind (its
    versions would be compared with a propensity model's, and read as one)."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{name}'", max_results=1)
    except MlflowException:
        return
    if versions and not _is_personas_run(client, versions[0].run_id):
        raise PortraitError(
            f"{name!r} is the name of a registered model that is not a persona model: name the personas "
            'otherwise (name = "..." in the persona experiment)'
        )


def _no_alias_advice(client: MlflowClient, name: str, alias: str) -> str:
    """Why ``name`` has no version with ``alias``, and the step that gives it one: a fit when
    nothing is registered, else a promotion (or another alias)."""
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        registered = None
    if registered is None:
        return f"no {name!r} model is registered; run portrait personas fit"
    # the registered model's aliases (alias -> version): a search of its versions lists none
    # on a SQLite store
    held = sorted(registered.aliases or {})
    advice = (
        f"portrait promote {name}" if alias == "champion" and "candidate" in held else "--alias " + " or ".join(held)
    )
    return (
        f"no {name!r} model with alias {alias!r} (its versions hold {', '.join(map(repr, held)) or 'no alias'}); "
        + (f"try {advice}" if held else "run portrait personas fit")
    )


def changes_sentence(changes: dict) -> str:
    """A refit's persona changes as a sentence (``kept``, ``new``, ``gone``: persona ids;
    ``merged``: [old, into] pairs), each part only when it has any."""
    parts = []
    for key, label in (("kept", "kept"), ("new", "new"), ("gone", "gone")):
        if changes.get(key):
            parts.append(f"{label} {', '.join(map(str, changes[key]))}")
    if changes.get("merged"):
        parts.append("merged " + ", ".join(f"{old} into {into}" for old, into in changes["merged"]))
    return "; ".join(parts) or "no change"


def show_personas(name: str, alias: str, out: Path) -> dict[str, Path]:
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        raise PortraitError(_no_alias_advice(client, name, alias)) from None
    if not _is_personas_run(client, version.run_id):
        raise PortraitError(f"{name} v{version.version} ({alias}) is not a persona model; give the personas' --name")
    portrait = Path(mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="portrait"))
    lifts = portrait / "persona_lifts.csv"  # absent from runs logged before it was kept
    summary = portrait / "persona_summary.json"  # likewise
    return write_portrait(
        read_portrait_table(portrait),
        out,
        pd.read_csv(lifts) if lifts.exists() else None,
        summary=json.loads(summary.read_text()) if summary.exists() else None,
    )
