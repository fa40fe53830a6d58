"""``balanced``: stage2's own engine.

Size-constrained k-means on the group's distinct feature rows (students with the same course
set and soft-rule values are one weighted point): k-means++ seeding, then rounds of an exact
min-cost-flow assignment onto the fixed batch sizes followed by a centroid update, until the
cost stops falling; ``n_init`` restarts, the lowest within-batch SSE kept.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import kmeans_plusplus

from stage2.clustering.assignment import assign_exact, centroids_from_flows, flow_cost, flows_to_labels
from stage2.clustering.base import Batcher, BatchingProblem, collapse


def initial_centroids(points: np.ndarray, counts: np.ndarray, n_batches: int, seed: int) -> np.ndarray:
    """k-means++ seeds on the weighted points (repeating points when there are fewer than k)."""
    if points.shape[0] > n_batches:
        centroids, _ = kmeans_plusplus(points, n_batches, sample_weight=counts.astype(np.float64), random_state=seed)
        return centroids
    rng = np.random.default_rng(seed)
    extra = rng.choice(points.shape[0], n_batches - points.shape[0], p=counts / counts.sum())
    return np.vstack([points, points[extra]])


class BalancedBatcher(Batcher):
    name = "balanced"

    def __init__(self, *, n_init: int = 3, max_iter: int = 30, n_candidates: int = 8, tol: float = 1e-6) -> None:
        super().__init__(n_init=n_init, max_iter=max_iter)
        self.n_candidates = n_candidates
        self.tol = tol

    def fit_predict(self, problem: BatchingProblem) -> np.ndarray:
        sizes = problem.batch_sizes.astype(np.int64)
        if sizes.size == 1:
            return np.zeros(problem.features.shape[0], dtype=np.int64)
        data = collapse(problem.features)
        seeds = np.random.default_rng(problem.seed).integers(0, 2**31 - 1, size=self.n_init)
        best_flows, best_cost = None, np.inf
        for seed in seeds:
            flows, cost = self._run(data.points, data.counts, sizes, int(seed))
            if cost < best_cost - 1e-9:
                best_flows, best_cost = flows, cost
        return flows_to_labels(best_flows, data.inverse)

    def _run(self, points: np.ndarray, counts: np.ndarray, sizes: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        centroids = initial_centroids(points, counts, sizes.size, seed)
        flows = assign_exact(points, counts, centroids, sizes, self.n_candidates)
        cost = flow_cost(points, flows)
        for _ in range(self.max_iter - 1):
            centroids = centroids_from_flows(points, flows)
            new_flows = assign_exact(points, counts, centroids, sizes, self.n_candidates)
            new_cost = flow_cost(points, new_flows)
            if new_cost >= cost - self.tol * max(cost, 1e-12):
                if new_cost < cost:
                    flows, cost = new_flows, new_cost
                break
            flows, cost = new_flows, new_cost
        return flows, cost
