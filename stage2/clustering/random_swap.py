"""Random swap (Fränti 2018, "Efficiency of random swap clustering"), local and size-constrained.

k-means rounds stop in the local optimum their seeds lead to; restarting from new seeds
explores poorly (the scaling benchmark: ten k-means++ restarts stayed 3-8 % above
k-means-constrained's best of ten). Random swap moves one centroid at a time instead: a trial
relocates a random batch's centroid onto a random course set (a distinct feature row) and
re-solves, and is kept only if the objective falls.

Here a trial is *local*, so its cost does not grow with the group: only the removed batch, the
batch of the chosen row and the ``n_neighbors`` batches nearest to each of them take part;
their students are redistributed among them by ``n_iter`` k-means rounds with the exact
size-constrained assignment (the same size model restricted to those batches), and the trial
is kept if the SSE plus size penalty of those batches falls. Other batches are untouched, so
the whole objective falls by the same amount.
"""

from __future__ import annotations

import numpy as np

from stage2.clustering.assignment import SizeModel, flows_to_labels, lloyd_rounds, squared_distances
from stage2.clustering.base import CollapsedPoints


class _BatchTotals:
    """Per-batch sums that give each batch's SSE in O(features): Σx, Σ||x||² and the size."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, n_batches: int) -> None:
        self.features = features
        self.row_sq = np.einsum("ij,ij->i", features, features)
        self.sums = np.zeros((n_batches, features.shape[1]))
        np.add.at(self.sums, labels, features)
        self.sizes = np.bincount(labels, minlength=n_batches).astype(np.int64)
        self.sq = np.bincount(labels, weights=self.row_sq, minlength=n_batches)

    def sse(self, batches: np.ndarray) -> float:
        sums = self.sums[batches]
        return float(np.sum(self.sq[batches] - np.einsum("ij,ij->i", sums, sums) / self.sizes[batches]))

    def update(self, batches: np.ndarray, members: np.ndarray, new_labels: np.ndarray) -> None:
        self.sums[batches] = 0.0
        np.add.at(self.sums, new_labels, self.features[members])
        self.sizes[batches] = 0
        np.add.at(self.sizes, new_labels, 1)
        self.sq[batches] = 0.0
        np.add.at(self.sq, new_labels, self.row_sq[members])


def random_swap(
    features: np.ndarray,
    data: CollapsedPoints,
    labels: np.ndarray,
    sizes: SizeModel,
    *,
    n_trials: int,
    n_neighbors: int,
    n_iter: int,
    n_candidates: int | None,
    tol: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Improve ``labels`` (students of ``data``) by ``n_trials`` local random-swap trials;
    returns labels whose sizes ``sizes`` admits and whose objective is not higher."""
    n_batches = sizes.n_batches
    if n_batches < 2 or n_trials <= 0:
        return labels
    labels = labels.copy()
    totals = _BatchTotals(features, labels, n_batches)
    in_region = np.zeros(n_batches, dtype=bool)
    # draws made up front: the trial sequence depends on the seed only. Targets are distinct
    # feature rows, equally likely: drawing students would keep proposing the most common
    # course sets, which already have batches of their own
    removed_batches = rng.integers(0, n_batches, size=n_trials)
    first_student = np.unique(data.inverse, return_index=True)[1]
    chosen_students = first_student[rng.integers(0, first_student.size, size=n_trials)]
    for removed, student in zip(removed_batches, chosen_students):
        means = totals.sums / totals.sizes[:, None]
        target = features[student]
        near_target = _nearest(means, target, n_neighbors)
        near_removed = _nearest(means, means[removed], n_neighbors)
        region = np.unique(np.concatenate(([removed, labels[student]], near_target, near_removed)))
        if region.size < 2:
            continue
        local_sizes = sizes.restricted(region)
        before = totals.sse(region) + local_sizes.penalty(totals.sizes[region])
        in_region[region] = True
        members = np.flatnonzero(in_region[labels])
        in_region[region] = False
        point_ids, local_inverse, local_counts = np.unique(
            data.inverse[members], return_inverse=True, return_counts=True
        )
        centroids = means[region]
        centroids[np.searchsorted(region, removed)] = target
        flows, after = lloyd_rounds(data.points[point_ids], local_counts.astype(np.int64), centroids, local_sizes,
                                    max_iter=n_iter, n_candidates=n_candidates, tol=tol)
        if after < before - 1e-9 * max(1.0, before):
            new_labels = region[flows_to_labels(flows, local_inverse.reshape(-1))]
            labels[members] = new_labels
            totals.update(region, members, new_labels)
    return labels


def _nearest(means: np.ndarray, point: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` batches whose means are nearest to ``point`` (ties: lower index first)."""
    distances = squared_distances(point[None, :], means)[0]
    return np.argsort(distances, kind="stable")[:count]
