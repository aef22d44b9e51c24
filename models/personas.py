"""Persona clustering on feature vectors, with k chosen by silhouette and bootstrap stability.

Pipeline: numeric features only (text attributes and favourites are left out: they are shown
in the portrait table, not clustered on); money and count columns get a signed log1p, since
they are heavily skewed; missing values take the median; then standard scaling, optional PCA,
and ``MiniBatchKMeans`` (default, scales to millions) or ``GaussianMixture``.

``fit`` follows scikit-learn's contract; ``predict`` gives a persona id for any feature row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

# Columns in [0, 1] or already ratio-scaled are not log-transformed.
_UNSKEWED = ("_share", "_rate", "ratio", "price_level", "trend", "depth")


def signed_log1p(X):
    X = np.asarray(X, dtype=float)
    return np.sign(X) * np.log1p(np.abs(X))


def numeric_columns(X: pd.DataFrame) -> list[str]:
    return [
        c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and not isinstance(X[c].dtype, pd.CategoricalDtype)
    ]


def _skewed(column: str) -> bool:
    return not any(marker in column for marker in _UNSKEWED)


class SignedLog(TransformerMixin, BaseEstimator):
    """sign(x) * log1p(|x|) on the columns where ``mask`` is true."""

    def __init__(self, mask=None):
        self.mask = mask

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float).copy()
        mask = np.asarray(self.mask, bool)
        X[:, mask] = signed_log1p(X[:, mask])
        return X


class ColumnWeights(TransformerMixin, BaseEstimator):
    def __init__(self, weights=None):
        self.weights = weights

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * np.asarray(self.weights, float)


class PersonaModel(ClusterMixin, BaseEstimator):
    """Clusters customers into personas; ``k`` fixed, or chosen over ``k_range``."""

    def __init__(
        self,
        k: int | None = None,
        k_range: tuple[int, int] = (4, 10),
        algorithm: str = "minibatch_kmeans",
        pca_components: int | None = None,
        sample_size: int = 20000,
        bootstrap_fits: int = 2,
        random_state: int = 42,
        groups: dict[str, str] | None = None,
        n_init: int = 5,
    ):
        self.groups = groups
        self.n_init = n_init
        self.k = k
        self.k_range = k_range
        self.algorithm = algorithm
        self.pca_components = pca_components
        self.sample_size = sample_size
        self.bootstrap_fits = bootstrap_fits
        self.random_state = random_state

    def _transformer(self, columns: list[str]) -> Pipeline:
        steps = [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("log", SignedLog(mask=[_skewed(c) for c in columns])),
            ("scale", StandardScaler()),
        ]
        if self.groups:
            # Each group (feature family) weighs the same in distances, however many columns it has.
            group_of = [self.groups.get(c, c) for c in columns]
            sizes = pd.Series(group_of).value_counts()
            steps.append(("balance", ColumnWeights([1 / np.sqrt(sizes[g]) for g in group_of])))
        if self.pca_components:
            steps.append(
                ("pca", PCA(n_components=min(self.pca_components, len(columns)), random_state=self.random_state))
            )
        return Pipeline(steps)

    def _clusterer(self, k: int, seed: int):
        if self.algorithm == "gaussian_mixture":
            return GaussianMixture(n_components=k, covariance_type="diag", random_state=seed)
        if self.algorithm == "minibatch_kmeans":
            return MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=self.n_init, batch_size=4096)
        raise ValueError(f"algorithm must be 'minibatch_kmeans' or 'gaussian_mixture', got {self.algorithm!r}")

    def fit(self, X: pd.DataFrame, y=None) -> PersonaModel:
        self.feature_names_ = numeric_columns(X)
        if not self.feature_names_:
            raise ValueError("no numeric feature to cluster on")
        self.transformer_ = self._transformer(self.feature_names_)
        Z = self.transformer_.fit_transform(X[self.feature_names_])
        rng = np.random.default_rng(self.random_state)
        sample = Z[rng.choice(len(Z), size=min(self.sample_size, len(Z)), replace=False)]
        candidates = [self.k] if self.k else list(range(self.k_range[0], self.k_range[1] + 1))
        self.k_scores_ = pd.DataFrame([self._score_k(k, sample, rng) for k in candidates]).set_index("k")
        self.k_ = self.k or self._choose_k(self.k_scores_)
        self.clusterer_ = self._clusterer(self.k_, self.random_state).fit(Z)
        return self

    def _score_k(self, k: int, sample: np.ndarray, rng) -> dict:
        labels = self._clusterer(k, self.random_state).fit(sample).predict(sample)
        silhouette = silhouette_score(
            sample, labels, sample_size=min(5000, len(sample)), random_state=self.random_state
        )
        agreements = []
        for i in range(self.bootstrap_fits):
            boot = sample[rng.choice(len(sample), size=len(sample), replace=True)]
            other = self._clusterer(k, self.random_state + i + 1).fit(boot).predict(sample)
            agreements.append(adjusted_rand_score(labels, other))
        return {
            "k": k,
            "silhouette": float(silhouette),
            "stability": float(np.mean(agreements)) if agreements else np.nan,
        }

    @staticmethod
    def _choose_k(scores: pd.DataFrame) -> int:
        """The best silhouette among the stable ks (bootstrap ARI >= 0.75), else the most stable."""
        stable = scores[scores["stability"] >= 0.75]
        if len(stable):
            return int(stable["silhouette"].idxmax())
        return int(scores["stability"].idxmax())

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "clusterer_")
        missing = [c for c in self.feature_names_ if c not in X.columns]
        if missing:
            raise ValueError(f"the data lacks {len(missing)} feature(s) the persona model needs: {missing[:10]}")
        return self.transformer_.transform(X[self.feature_names_])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.clusterer_.predict(self.transform(X))

    def centroids(self) -> np.ndarray:
        check_is_fitted(self, "clusterer_")
        if hasattr(self.clusterer_, "cluster_centers_"):
            return self.clusterer_.cluster_centers_
        return self.clusterer_.means_
