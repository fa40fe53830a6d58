"""scikit-learn clusterings the design names, each followed by an exact size repair.

The repair takes the clustering's centroids and solves the size-constrained assignment
exactly (min-cost flow) under the group's size model, so sizes always respect it; the
clustering only decides where the centroids are.

scikit-learn is imported where a model is built: its import is a large share of a short run of
the default algorithm, which does not need it (``python -X importtime -c "import sklearn"``:
scipy.stats, which it imports, rewrites hundreds of docstrings).
"""

from __future__ import annotations

import numpy as np

from stage2.clustering.assignment import SizeModel, assign_exact, flows_to_labels
from stage2.clustering.balanced import initial_centroids
from stage2.clustering.base import Batcher, BatchingProblem, CollapsedPoints, collapse
from stage2.config.schema import HierarchicalConfig, KMeansConfig, SpectralConfig
from stage2.errors import ConfigurationError

#: AgglomerativeClustering and SpectralClustering keep O(points²) structures
MAX_POINTS_QUADRATIC = 15_000


def repair_to_sizes(data: CollapsedPoints, centroids: np.ndarray, sizes: SizeModel) -> np.ndarray:
    """The size-constrained assignment closest to ``centroids`` (exact min-cost flow)."""
    flows = assign_exact(data.points, data.counts, centroids, sizes, n_candidates=None)
    return flows_to_labels(flows, data.inverse)


def centroids_of_labels(data: CollapsedPoints, labels: np.ndarray, n_batches: int) -> np.ndarray:
    weights = data.counts.astype(np.float64)
    sums = np.zeros((n_batches, data.points.shape[1]))
    np.add.at(sums, labels, data.points * weights[:, None])
    totals = np.bincount(labels, weights=weights, minlength=n_batches)
    return sums / np.maximum(totals, 1.0)[:, None]


class _RepairedClustering(Batcher):
    def fit_predict(self, problem: BatchingProblem) -> np.ndarray:
        sizes = problem.sizes
        if sizes.n_batches == 1:
            return np.zeros(problem.features.shape[0], dtype=np.int64)
        data = collapse(problem.features)
        if data.points.shape[0] <= sizes.n_batches:
            centroids = initial_centroids(data.points, data.counts, sizes.n_batches, problem.seed)
        else:
            centroids = self._centroids(data, sizes.n_batches, problem.seed)
        return repair_to_sizes(data, centroids, sizes)

    def _centroids(self, data: CollapsedPoints, n_batches: int, seed: int) -> np.ndarray:
        raise NotImplementedError


class KMeansBatcher(_RepairedClustering):
    name = "kmeans"

    config_class = KMeansConfig
    config: KMeansConfig

    def _centroids(self, data: CollapsedPoints, n_batches: int, seed: int) -> np.ndarray:
        from sklearn.cluster import KMeans

        model = KMeans(
            n_clusters=n_batches, n_init=self.config.n_init, max_iter=self.config.max_iter, random_state=seed
        )
        model.fit(data.points, sample_weight=data.counts.astype(np.float64))
        return model.cluster_centers_


def _check_quadratic(data: CollapsedPoints, name: str) -> None:
    if data.points.shape[0] > MAX_POINTS_QUADRATIC:
        raise ConfigurationError(
            f"algorithm={name} needs O(n²) memory and a group has {data.points.shape[0]} distinct "
            f"students (> {MAX_POINTS_QUADRATIC})",
            where="algorithm",
            fix="use algorithm=balanced or algorithm=kmeans for groups this large",
        )


class SpectralBatcher(_RepairedClustering):
    name = "spectral"

    config_class = SpectralConfig
    config: SpectralConfig

    def _centroids(self, data: CollapsedPoints, n_batches: int, seed: int) -> np.ndarray:
        from sklearn.cluster import SpectralClustering

        _check_quadratic(data, self.name)
        n_points = data.points.shape[0]
        model = SpectralClustering(
            n_clusters=n_batches,
            affinity="nearest_neighbors",
            n_neighbors=max(1, min(self.config.n_neighbors, n_points - 1)),
            assign_labels="cluster_qr",
            random_state=seed,
        )
        labels = model.fit_predict(data.points)
        return centroids_of_labels(data, labels, n_batches)


class HierarchicalBatcher(_RepairedClustering):
    name = "hierarchical"

    config_class = HierarchicalConfig
    config: HierarchicalConfig

    def _centroids(self, data: CollapsedPoints, n_batches: int, seed: int) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering

        _check_quadratic(data, self.name)
        labels = AgglomerativeClustering(n_clusters=n_batches, linkage=self.config.linkage).fit_predict(data.points)
        return centroids_of_labels(data, labels, n_batches)
