"""``balanced``: stage2's own engine.

Size-constrained k-means on the group's distinct feature rows (students with the same course
set and soft-rule values are one weighted point): k-means++ seeding, then rounds of an exact
min-cost-flow assignment under the group's size model followed by a centroid update, until the
cost stops falling; then local search with exact deltas (swaps, and moves when sizes are
flexible) on the students. ``n_init`` restarts (fewer on large groups: at most
``restart_budget`` student-restarts per group); the lowest objective is kept.
"""

from __future__ import annotations

import numpy as np

from stage2.clustering.assignment import (
    SizeModel,
    assign_exact,
    centroids_from_flows,
    flow_cost,
    flows_to_labels,
    squared_distances,
)
from stage2.clustering.base import Batcher, BatchingProblem, collapse, objective
from stage2.clustering.local_search import local_search


def initial_centroids(points: np.ndarray, counts: np.ndarray, n_batches: int, seed: int) -> np.ndarray:
    """Greedy k-means++ seeds on the weighted points (as scikit-learn's ``kmeans_plusplus``:
    ``2 + log k`` candidates per step, the one lowering the potential most kept), without its
    per-call validation overhead, which dominates on thousands of small groups. With no more
    points than batches, every point is a seed and the rest repeat points."""
    rng = np.random.default_rng(seed)
    weights = counts.astype(np.float64)
    n_points = points.shape[0]
    if n_points <= n_batches:
        # every point is a seed; a random order lets restarts try different matchings of
        # points to batch sizes
        extra = rng.choice(n_points, n_batches - n_points, p=weights / weights.sum())
        return np.vstack([points, points[extra]])[rng.permutation(n_batches)]
    n_trials = 2 + int(np.log(n_batches))
    chosen = [int(rng.choice(n_points, p=weights / weights.sum()))]
    closest = squared_distances(points, points[chosen[0]][None, :])[:, 0]
    for _ in range(1, n_batches):
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0:  # every point coincides with a seed: take any other point
            candidates = np.setdiff1d(np.arange(n_points), chosen)[:1]
        else:
            candidates = np.searchsorted(cumulative, rng.random(n_trials) * cumulative[-1], side="right")
            candidates = np.minimum(candidates, n_points - 1)
        trial = np.minimum(closest[None, :], squared_distances(points[candidates], points))
        best = int(np.argmin(trial @ weights))
        chosen.append(int(candidates[best]))
        closest = trial[best]
    return points[chosen].copy()


def match_planned_order(labels: np.ndarray, planned: np.ndarray) -> np.ndarray:
    """Renumber batches so that batch ``b`` has ``planned[b]`` students (the labelling has the
    planned size multiset; batches of equal size keep their relative order)."""
    sizes = np.bincount(labels, minlength=planned.size)
    by_size = np.lexsort((np.arange(sizes.size), -sizes))
    slots = np.lexsort((np.arange(planned.size), -planned))
    new_label = np.empty(planned.size, dtype=np.int64)
    new_label[by_size] = slots
    return new_label[labels]


class BalancedBatcher(Batcher):
    name = "balanced"

    def __init__(
        self,
        *,
        n_init: int = 3,
        restart_budget: int = 20_000,
        max_iter: int = 30,
        n_candidates: int = 24,
        tol: float = 1e-6,
        local_search: bool = True,
        n_neighbors: int = 6,
        max_passes: int = 20,
    ) -> None:
        super().__init__(n_init=n_init, max_iter=max_iter)
        self.restart_budget = restart_budget
        self.n_candidates = n_candidates
        self.tol = tol
        self.local_search = local_search
        self.n_neighbors = n_neighbors
        self.max_passes = max_passes

    def fit_predict(self, problem: BatchingProblem) -> np.ndarray:
        sizes = problem.sizes
        if sizes.n_batches == 1:
            return np.zeros(problem.features.shape[0], dtype=np.int64)
        if sizes.is_exact and 0 < np.ptp(sizes.planned) <= 1:
            # equal sizes up to one student: let the flow choose WHICH batches get the extra
            # student ([s, s+1] at zero price admits exactly the planned size multiset), then
            # renumber the batches to the planned order
            free = SizeModel(sizes.planned, int(sizes.planned.min()), int(sizes.planned.max()), 0.0)
            labels = self._fit(problem.features, free, problem.seed)
            return match_planned_order(labels, sizes.planned)
        return self._fit(problem.features, sizes, problem.seed)

    def _fit(self, features: np.ndarray, sizes: SizeModel, seed: int) -> np.ndarray:
        data = collapse(features)
        seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=self._restarts(features.shape[0]))
        best_labels, best_cost = None, np.inf
        for restart_seed in seeds:
            flows, cost = self._lloyd(data.points, data.counts, sizes, int(restart_seed))
            labels = flows_to_labels(flows, data.inverse)
            if self.local_search:
                labels = local_search(features, labels, sizes, n_neighbors=self.n_neighbors,
                                      max_passes=self.max_passes)
                cost = objective(features, labels, sizes)
            if best_labels is None or cost < best_cost - 1e-9 * max(1.0, abs(cost)):
                best_labels, best_cost = labels, cost
        return best_labels

    def _restarts(self, n_students: int) -> int:
        """``n_init`` restarts, fewer for large groups: at most ``restart_budget`` student-
        restarts per group (restarts matter most, and cost least, on small groups)."""
        if self.restart_budget <= 0:
            return self.n_init
        return int(min(self.n_init, max(1, self.restart_budget // max(n_students, 1))))

    def _lloyd(self, points: np.ndarray, counts: np.ndarray, sizes: SizeModel, seed: int) -> tuple[np.ndarray, float]:
        centroids = initial_centroids(points, counts, sizes.n_batches, seed)
        flows = assign_exact(points, counts, centroids, sizes, self.n_candidates)
        cost = flow_cost(points, flows, sizes)
        for _ in range(self.max_iter - 1):
            centroids = centroids_from_flows(points, flows)
            new_flows = assign_exact(points, counts, centroids, sizes, self.n_candidates)
            new_cost = flow_cost(points, new_flows, sizes)
            if new_cost >= cost - self.tol * max(cost, 1e-12):
                if new_cost < cost:
                    flows, cost = new_flows, new_cost
                break
            flows, cost = new_flows, new_cost
        return flows, cost
