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
from numba import njit

from stage2.clustering.assignment import TIE_LEVELS, SizeModel, _small_lloyd_rounds, slot_unit_costs
from stage2.clustering.base import CollapsedPoints


def random_swap(
    data: CollapsedPoints,
    labels: np.ndarray,
    sizes: SizeModel,
    *,
    n_trials: int,
    n_neighbors: int,
    n_iter: int,
    tol: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Improve ``labels`` (students of ``data``) by ``n_trials`` local random-swap trials;
    returns labels whose sizes ``sizes`` admits and whose objective is not higher. A trial's
    region is small enough for the full assignment graph."""
    n_batches = sizes.n_batches
    if n_batches < 2 or n_trials <= 0:
        return labels
    # draws made up front: the trial sequence depends on the seed only. Targets are distinct
    # feature rows, equally likely: drawing students would keep proposing the most common
    # course sets, which already have batches of their own
    removed_batches = rng.integers(0, n_batches, size=n_trials)
    first_student = np.unique(data.inverse, return_index=True)[1]
    chosen_students = first_student[rng.integers(0, first_student.size, size=n_trials)]
    exact = sizes.is_exact
    return _trials(
        np.ascontiguousarray(data.points, dtype=np.float64), data.inverse.astype(np.int64), labels.astype(np.int64),
        sizes.planned.astype(np.int64),
        exact, sizes.min_size, sizes.max_size, 0.0 if exact else float(sizes.deviation_cost),
        removed_batches.astype(np.int64), chosen_students.astype(np.int64), n_neighbors, n_iter, tol, TIE_LEVELS,
    )


@njit(cache=True, nogil=True)
def _trials(points, inverse, labels, planned, exact, min_size, max_size, deviation_cost,
            removed_batches, chosen_students, n_neighbors, n_iter, tol, tie_levels):  # pragma: no cover - numba
    """The trials, compiled (student i is ``points[inverse[i]]``). Per batch the sums that give
    its SSE in O(features) (Σx, Σ||x||², size) are kept up to date; a trial re-solves the
    students of its region by
    :func:`~stage2.clustering.assignment._small_lloyd_rounds` and is kept if the region's
    SSE plus size penalty falls."""
    labels = labels.copy()
    n_students = labels.size
    n_points, n_features = points.shape
    n_batches = planned.size
    row_sq = np.zeros(n_points)
    for p in range(n_points):
        for f in range(n_features):
            row_sq[p] += points[p, f] * points[p, f]
    sums = np.zeros((n_batches, n_features))
    sizes = np.zeros(n_batches, dtype=np.int64)
    sq = np.zeros(n_batches)
    for i in range(n_students):
        _add_student(points, row_sq, sums, sizes, sq, inverse[i], labels[i])
    in_region = np.zeros(n_batches, dtype=np.bool_)
    local_point = np.full(n_points, -1, dtype=np.int64)
    means = np.empty((n_batches, n_features))
    for trial in range(removed_batches.size):
        removed, student = removed_batches[trial], chosen_students[trial]
        for b in range(n_batches):
            for f in range(n_features):
                means[b, f] = sums[b, f] / sizes[b]
        target = points[inverse[student]]
        near_target = _nearest(means, target, n_neighbors)
        near_removed = _nearest(means, means[removed].copy(), n_neighbors)
        candidates = np.empty(2 + near_target.size + near_removed.size, dtype=np.int64)
        candidates[0], candidates[1] = removed, labels[student]
        candidates[2:2 + near_target.size] = near_target
        candidates[2 + near_target.size:] = near_removed
        region = np.unique(candidates)
        if region.size < 2:
            continue
        # the region's size model: the same bounds and price over its batches
        local_planned = planned[region]
        if exact:
            lower = local_planned.copy()
            slots = np.zeros((region.size, 0), dtype=np.int64)
        else:
            lower = np.full(region.size, min_size, dtype=np.int64)
            slots = slot_unit_costs(local_planned, min_size, max_size, deviation_cost)
        before = 0.0
        for b in region:
            norm = 0.0
            for f in range(n_features):
                norm += sums[b, f] * sums[b, f]
            before += sq[b] - norm / sizes[b]
            if not exact:
                before += deviation_cost * (sizes[b] - planned[b]) ** 2
        # the region's students, collapsed to its distinct points (ascending point id)
        for b in region:
            in_region[b] = True
        n_members = 0
        for i in range(n_students):
            if in_region[labels[i]]:
                n_members += 1
        members = np.empty(n_members, dtype=np.int64)
        n_members = 0
        for i in range(n_students):
            if in_region[labels[i]]:
                members[n_members] = i
                n_members += 1
        for b in region:
            in_region[b] = False
        for i in members:  # type: ignore[assignment]  # numba: int64 throughout
            local_point[inverse[i]] = 0
        point_ids = np.flatnonzero(local_point == 0)
        for index in range(point_ids.size):
            local_point[point_ids[index]] = index
        local_counts = np.zeros(point_ids.size, dtype=np.int64)
        for i in members:  # type: ignore[assignment]  # numba: int64 throughout
            local_counts[local_point[inverse[i]]] += 1
        centroids = means[region].copy()
        centroids[np.searchsorted(region, removed)] = target
        flows, after = _small_lloyd_rounds(points[point_ids], local_counts, centroids, lower, slots,
                                           local_planned.astype(np.float64), deviation_cost, n_iter, tol, tie_levels)
        if after < before - 1e-9 * max(1.0, before):
            # the students of each point, in ascending position, fill its batches in ascending
            # order (as flows_to_labels)
            next_batch = np.zeros(point_ids.size, dtype=np.int64)
            for b in region:
                sizes[b] = 0
                sq[b] = 0.0
                sums[b] = 0.0
            for i in members:  # type: ignore[assignment]  # numba: int64 throughout
                point = local_point[inverse[i]]
                while flows[point, next_batch[point]] == 0:
                    next_batch[point] += 1
                flows[point, next_batch[point]] -= 1
                labels[i] = region[next_batch[point]]
                _add_student(points, row_sq, sums, sizes, sq, inverse[i], labels[i])
        for index in range(point_ids.size):
            local_point[point_ids[index]] = -1
    return labels


@njit(cache=True, nogil=True, inline="always")
def _add_student(points, row_sq, sums, sizes, sq, point, batch):  # pragma: no cover - numba
    """One student of ``point`` into ``batch``'s sums."""
    sizes[batch] += 1
    sq[batch] += row_sq[point]
    for f in range(points.shape[1]):
        sums[batch, f] += points[point, f]


@njit(cache=True, nogil=True)
def _nearest(means, point, count):  # pragma: no cover - numba
    """The ``count`` batches whose means are nearest to ``point`` (ties: lower index first)."""
    n_batches, n_features = means.shape
    point_sq = 0.0
    for f in range(n_features):
        point_sq += point[f] * point[f]
    distances = np.empty(n_batches)
    for b in range(n_batches):
        dot = 0.0
        mean_sq = 0.0
        for f in range(n_features):
            dot += point[f] * means[b, f]
            mean_sq += means[b, f] * means[b, f]
        distances[b] = max(point_sq - 2.0 * dot + mean_sq, 0.0)
    return np.argsort(distances, kind="mergesort")[:count]
