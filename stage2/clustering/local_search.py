"""Local search with exact cost deltas, compiled with numba.

Moves between each batch and its ``n_neighbors`` nearest batches (by mean):

- *swap* ``i ∈ A`` with ``j ∈ B`` (sizes unchanged):
  ``Δ = 2 (x_i − x_j)·(m_A − m_B) − (1/s_A + 1/s_B) ||x_i − x_j||²``;
- *move* ``i`` from ``A`` to ``B`` (flexible sizes only, within [min, max]):
  ``Δ = s_B/(s_B+1) ||x_i − m_B||² − s_A/(s_A−1) ||x_i − m_A||²`` plus the change of the
  size penalty ``λ Σ (s_b − p_b)²``.

For every neighbouring pair the best of these is applied while it lowers the cost; passes
repeat until one gains less than ``tol`` × Σ||x||² or ``max_passes`` is reached.

On collapsed points (identical students as one weighted point), :func:`chunk_moves` moves
``m`` identical students at once and :func:`chunk_swaps` exchanges ``m_p`` students of one
course set for ``m_q`` of another: steps whose single-student halves each raise the cost.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stage2.clustering.assignment import SizeModel, squared_distances


@njit(cache=True, nogil=True)
def _best_swap(X, sq_norms, members_a, members_b, mean_diff, inv_sum):
    rows_a = X[members_a]
    rows_b = X[members_b]
    proj_a = rows_a @ mean_diff
    proj_b = rows_b @ mean_diff
    gram = rows_a @ rows_b.T  # x_i·x_j for every candidate pair, by BLAS
    best, best_i, best_j = 0.0, -1, -1
    for ii in range(members_a.size):
        i = members_a[ii]
        for jj in range(members_b.size):
            j = members_b[jj]
            delta = 2.0 * (proj_a[ii] - proj_b[jj]) - inv_sum * (sq_norms[i] + sq_norms[j] - 2.0 * gram[ii, jj])
            if delta < best:
                best, best_i, best_j = delta, ii, jj
    return best, best_i, best_j


@njit(cache=True, nogil=True)
def _best_move(X, sq_norms, members_a, sa, sb, mean_a, mean_b, penalty_delta):
    """Best student of A to move to B: (Δ, index in members_a)."""
    norm_a = mean_a @ mean_a
    norm_b = mean_b @ mean_b
    best, best_i = 0.0, -1
    for ii in range(members_a.size):
        i = members_a[ii]
        dot_a = X[i] @ mean_a
        dot_b = X[i] @ mean_b
        dist_a = sq_norms[i] - 2.0 * dot_a + norm_a
        dist_b = sq_norms[i] - 2.0 * dot_b + norm_b
        delta = sb / (sb + 1.0) * dist_b - sa / (sa - 1.0) * dist_a + penalty_delta
        if delta < best:
            best, best_i = delta, ii
    return best, best_i


@njit(cache=True, nogil=True)
def _passes(X, slots, sizes, sums, pairs, planned, min_size, max_size, deviation_cost, flexible, max_passes, tol):
    """``slots[b, :sizes[b]]`` are batch b's students; updated in place with ``sizes`` and
    ``sums``. Returns the total cost decrease."""
    n = X.shape[0]
    sq_norms = np.empty(n)
    scale = 0.0
    for i in range(n):
        sq_norms[i] = X[i] @ X[i]
        scale += sq_norms[i]
    total_gain = 0.0
    for _ in range(max_passes):
        pass_gain = 0.0
        for p in range(pairs.shape[0]):
            a, b = pairs[p, 0], pairs[p, 1]
            sa, sb = sizes[a], sizes[b]
            mean_a = sums[a] / sa
            mean_b = sums[b] / sb
            best, kind, ii, jj = 0.0, 0, -1, -1
            delta, si, sj = _best_swap(X, sq_norms, slots[a, :sa], slots[b, :sb], mean_a - mean_b, 1.0 / sa + 1.0 / sb)
            if si >= 0 and delta < best:
                best, kind, ii, jj = delta, 1, si, sj
            if flexible:
                # a -> b, then b -> a; penalty change of one student leaving x and joining y
                if sa - 1 >= min_size and sb + 1 <= max_size and sa > 1:
                    pen = deviation_cost * (-2.0 * (sa - planned[a]) + 1.0 + 2.0 * (sb - planned[b]) + 1.0)
                    delta, mi = _best_move(X, sq_norms, slots[a, :sa], sa, sb, mean_a, mean_b, pen)
                    if mi >= 0 and delta < best:
                        best, kind, ii = delta, 2, mi
                if sb - 1 >= min_size and sa + 1 <= max_size and sb > 1:
                    pen = deviation_cost * (-2.0 * (sb - planned[b]) + 1.0 + 2.0 * (sa - planned[a]) + 1.0)
                    delta, mi = _best_move(X, sq_norms, slots[b, :sb], sb, sa, mean_b, mean_a, pen)
                    if mi >= 0 and delta < best:
                        best, kind, ii = delta, 3, mi
            if best >= -1e-10:
                continue
            if kind == 1:
                i, j = slots[a, ii], slots[b, jj]
                sums[a] += X[j] - X[i]
                sums[b] += X[i] - X[j]
                slots[a, ii], slots[b, jj] = j, i
            else:
                src, dst = (a, b) if kind == 2 else (b, a)
                i = slots[src, ii]
                slots[src, ii] = slots[src, sizes[src] - 1]
                slots[src, sizes[src] - 1] = -1
                sizes[src] -= 1
                slots[dst, sizes[dst]] = i
                sizes[dst] += 1
                sums[src] -= X[i]
                sums[dst] += X[i]
            pass_gain -= best
        total_gain += pass_gain
        if pass_gain <= tol * max(scale, 1e-12):
            break
    return total_gain


def nearest_batches(means: np.ndarray, n_neighbors: int) -> np.ndarray:
    """``nearest[b]``: the ``min(n_neighbors, n_batches - 1)`` other batches whose means are
    nearest to batch ``b``'s (ties: lower index first)."""
    m = min(n_neighbors, means.shape[0] - 1)
    d2 = squared_distances(means, means)
    np.fill_diagonal(d2, np.inf)
    return np.ascontiguousarray(np.argsort(d2, axis=1, kind="stable")[:, :m]).astype(np.int64)


def neighbour_pairs(means: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Unordered pairs (a, b), a < b, of each batch with its nearest batches by mean."""
    n_batches = means.shape[0]
    m = min(n_neighbors, n_batches - 1)
    if m == n_batches - 1:  # every pair
        return np.stack(np.triu_indices(n_batches, 1), axis=1).astype(np.int64)
    nearest = nearest_batches(means, n_neighbors).reshape(-1)
    a = np.repeat(np.arange(n_batches), m)
    keys = np.unique(np.minimum(a, nearest) * n_batches + np.maximum(a, nearest))
    return np.stack([keys // n_batches, keys % n_batches], axis=1).astype(np.int64)


def local_search(
    features: np.ndarray,
    labels: np.ndarray,
    sizes: SizeModel,
    *,
    n_neighbors: int = 6,
    max_passes: int = 20,
    tol: float = 1e-7,
) -> np.ndarray:
    """Improve ``labels`` by swaps (and, for flexible sizes, moves); returns new labels whose
    sizes ``sizes`` still admits."""
    n_batches = sizes.n_batches
    if n_batches < 2:
        return labels
    X = np.ascontiguousarray(features, dtype=np.float64)
    counts = np.bincount(labels, minlength=n_batches).astype(np.int64)
    capacity = int(max(counts.max(), sizes.max_size))
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slots = np.full((n_batches, capacity), -1, dtype=np.int64)
    slots[labels[order], np.arange(labels.size) - starts[labels[order]]] = order
    sums = np.zeros((n_batches, X.shape[1]))
    np.add.at(sums, labels, X)
    pairs = neighbour_pairs(sums / counts[:, None], n_neighbors)
    flexible = not sizes.is_exact
    _passes(X, slots, counts, sums, pairs, sizes.planned.astype(np.float64), sizes.min_size, sizes.max_size,
            0.0 if not flexible else float(sizes.deviation_cost), flexible, max_passes, tol)
    new_labels = np.empty_like(labels)
    for b in range(n_batches):
        new_labels[slots[b, : counts[b]]] = b
    return new_labels


@njit(cache=True, nogil=True)
def _squared_norms(P, F, sums):  # pragma: no cover - numba
    """||x_p||² per point, ||S_b||² per batch and Σ over students of ||x||² (the scale of the
    passes' tolerance)."""
    n_points, n_batches = F.shape
    point_sq = np.empty(n_points)
    scale = 0.0
    for p in range(n_points):
        point_sq[p] = P[p] @ P[p]
        for b in range(n_batches):
            scale += F[p, b] * point_sq[p]
    sum_sq = np.empty(n_batches)
    for b in range(n_batches):
        sum_sq[b] = sums[b] @ sums[b]
    return point_sq, sum_sq, scale


@njit(cache=True, nogil=True)
def _chunk_passes(P, F, sums, sizes, neighbours, planned, min_size, max_size, deviation_cost, max_passes, tol):
    """Moves of ``m`` identical students (``m`` ≤ the point's students in the batch) from a
    batch to a neighbouring batch, best ``m`` and target per (point, batch), applied while they
    lower SSE + penalty. ``F`` (points × batches flows), ``sums`` and ``sizes`` updated in place."""
    n_points, n_batches = F.shape
    point_sq, sum_sq, scale = _squared_norms(P, F, sums)
    total_gain = 0.0
    for _ in range(max_passes):
        pass_gain = 0.0
        for p in range(n_points):
            x = P[p]
            for a in range(n_batches):
                count = F[p, a]
                if count == 0:
                    continue
                sa = sizes[a]
                dot_a = x @ sums[a]
                best, best_b, best_m = 0.0, -1, 0
                for t in range(neighbours.shape[1]):
                    b = neighbours[a, t]
                    sb = sizes[b]
                    most = min(count, sa - min_size, max_size - sb)
                    if most <= 0:
                        continue
                    dot_b = x @ sums[b]
                    before = sum_sq[a] / sa + sum_sq[b] / sb
                    for m in range(1, most + 1):
                        new_a = sum_sq[a] - 2.0 * m * dot_a + m * m * point_sq[p]
                        new_b = sum_sq[b] + 2.0 * m * dot_b + m * m * point_sq[p]
                        after = new_b / (sb + m) + (new_a / (sa - m) if sa > m else 0.0)
                        # SSE = Σ||x||² − Σ_b ||S_b||²/s_b; Σ||x||² does not change
                        delta = before - after
                        delta += deviation_cost * ((sa - m - planned[a]) ** 2 - (sa - planned[a]) ** 2
                                                   + (sb + m - planned[b]) ** 2 - (sb - planned[b]) ** 2)
                        if delta < best:
                            best, best_b, best_m = delta, b, m
                if best_b < 0 or best >= -1e-10:
                    continue
                F[p, a] -= best_m
                F[p, best_b] += best_m
                sums[a] -= best_m * x
                sums[best_b] += best_m * x
                sizes[a] -= best_m
                sizes[best_b] += best_m
                sum_sq[a] = sums[a] @ sums[a]
                sum_sq[best_b] = sums[best_b] @ sums[best_b]
                pass_gain -= best
        total_gain += pass_gain
        if pass_gain <= tol * max(scale, 1e-12):
            break
    return total_gain


def _collapsed_state(points: np.ndarray, flows: np.ndarray, n_neighbors: int):
    """What the chunk kernels update in place: float64 points, a copy of the flows, batch sizes
    and sums; and each batch's ``n_neighbors`` nearest batches by mean."""
    P = np.ascontiguousarray(points, dtype=np.float64)
    F = flows.astype(np.int64, copy=True)
    batch_sizes = F.sum(axis=0)
    sums = F.T.astype(np.float64) @ P
    neighbours = nearest_batches(sums / np.maximum(batch_sizes, 1)[:, None], n_neighbors)
    return P, F, batch_sizes, sums, neighbours


def chunk_moves(
    points: np.ndarray,
    flows: np.ndarray,
    sizes: SizeModel,
    *,
    n_neighbors: int = 6,
    max_passes: int = 20,
    tol: float = 1e-7,
) -> np.ndarray:
    """Improve ``flows`` (collapsed points × batches) by moving several identical students at
    once, which single-student moves cannot (moving one of 16 identical students raises the
    cost, moving all 16 may lower it). Flexible size models only; returns new flows."""
    n_batches = sizes.n_batches
    if n_batches < 2 or sizes.is_exact:
        return flows
    P, F, batch_sizes, sums, neighbours = _collapsed_state(points, flows, n_neighbors)
    _chunk_passes(P, F, sums, batch_sizes, neighbours, sizes.planned.astype(np.float64), sizes.min_size,
                  sizes.max_size, float(sizes.deviation_cost), max_passes, tol)
    return F


@njit(cache=True, nogil=True)
def _chunk_swap_passes(P, F, sums, sizes, neighbours, planned, min_size, max_size, deviation_cost, equal_counts,
                       max_passes, tol):
    """Exchanges of ``m_p`` identical students of point ``p`` in batch ``a`` with ``m_q`` of
    point ``q`` in a neighbouring batch ``b`` (``m_p == m_q`` under ``equal_counts``), the best
    per batch pair applied while it lowers SSE + penalty. ``F``, ``sums`` and ``sizes`` are
    updated in place; returns the total gain."""
    n_points, n_batches = F.shape
    point_sq, sum_sq, scale = _squared_norms(P, F, sums)
    total_gain = 0.0
    for _ in range(max_passes):
        # each batch's points, as of the start of the pass (stale entries are skipped: F is checked)
        n_in = np.zeros(n_batches, dtype=np.int64)
        for p in range(n_points):
            for b in range(n_batches):
                if F[p, b] > 0:
                    n_in[b] += 1
        offsets = np.zeros(n_batches + 1, dtype=np.int64)
        for b in range(n_batches):
            offsets[b + 1] = offsets[b] + n_in[b]
        members = np.empty(offsets[n_batches], dtype=np.int64)
        fill = offsets[:-1].copy()
        max_members = n_in.max()
        for p in range(n_points):
            for b in range(n_batches):
                if F[p, b] > 0:
                    members[fill[b]] = p
                    fill[b] += 1
        pass_gain = 0.0
        dots_a = np.empty((max_members, 2))  # x_p·S_a, x_p·S_b for the points of a
        dots_b = np.empty((max_members, 2))  # x_q·S_a, x_q·S_b for the points of b
        for a in range(n_batches):
            for t in range(neighbours.shape[1]):
                b = neighbours[a, t]
                sa, sb = sizes[a], sizes[b]
                before = sum_sq[a] / sa + sum_sq[b] / sb
                penalty_before = (sa - planned[a]) ** 2 + (sb - planned[b]) ** 2
                best, best_p, best_q, best_mp, best_mq = -1e-10, -1, -1, 0, 0
                for i in range(offsets[a], offsets[a + 1]):
                    p = members[i]
                    dots_a[i - offsets[a], 0] = P[p] @ sums[a]
                    dots_a[i - offsets[a], 1] = P[p] @ sums[b]
                for j in range(offsets[b], offsets[b + 1]):
                    q = members[j]
                    dots_b[j - offsets[b], 0] = P[q] @ sums[a]
                    dots_b[j - offsets[b], 1] = P[q] @ sums[b]
                for i in range(offsets[a], offsets[a + 1]):
                    p = members[i]
                    count_p = F[p, a]
                    if count_p == 0:
                        continue
                    pa, pb = dots_a[i - offsets[a], 0], dots_a[i - offsets[a], 1]
                    for j in range(offsets[b], offsets[b + 1]):
                        q = members[j]
                        count_q = F[q, b]
                        # one student for one: local_search's swaps already try those
                        if count_q == 0 or q == p or (count_p == 1 and count_q == 1):
                            continue
                        qa, qb = dots_b[j - offsets[b], 0], dots_b[j - offsets[b], 1]
                        pq = P[p] @ P[q]
                        for mp in range(1, count_p + 1):
                            for mq in range(
                                mp if equal_counts else 1, (min(mp, count_q) if equal_counts else count_q) + 1
                            ):
                                new_sa, new_sb = sa - mp + mq, sb + mp - mq
                                if new_sa < min_size or new_sa > max_size or new_sb < min_size or new_sb > max_size:
                                    continue
                                common = mp * mp * point_sq[p] + mq * mq * point_sq[q] - 2.0 * mp * mq * pq
                                new_a = sum_sq[a] + common - 2.0 * mp * pa + 2.0 * mq * qa
                                new_b = sum_sq[b] + common + 2.0 * mp * pb - 2.0 * mq * qb
                                # SSE = Σ||x||² − Σ_b ||S_b||²/s_b; Σ||x||² does not change
                                delta = before - new_a / new_sa - new_b / new_sb
                                delta += deviation_cost * ((new_sa - planned[a]) ** 2 + (new_sb - planned[b]) ** 2
                                                           - penalty_before)
                                if delta < best:
                                    best, best_p, best_q, best_mp, best_mq = delta, p, q, mp, mq
                if best_p < 0:
                    continue
                F[best_p, a] -= best_mp
                F[best_p, b] += best_mp
                F[best_q, b] -= best_mq
                F[best_q, a] += best_mq
                sums[a] += best_mq * P[best_q] - best_mp * P[best_p]
                sums[b] += best_mp * P[best_p] - best_mq * P[best_q]
                sizes[a] += best_mq - best_mp
                sizes[b] += best_mp - best_mq
                sum_sq[a] = sums[a] @ sums[a]
                sum_sq[b] = sums[b] @ sums[b]
                pass_gain -= best
        total_gain += pass_gain
        if pass_gain <= tol * max(scale, 1e-12):
            break
    return total_gain


def chunk_swaps(
    points: np.ndarray,
    flows: np.ndarray,
    sizes: SizeModel,
    *,
    n_neighbors: int = 6,
    max_passes: int = 20,
    tol: float = 1e-7,
) -> np.ndarray:
    """Improve ``flows`` (collapsed points × batches) by exchanging groups of identical
    students between neighbouring batches: ``m_p`` students of one course set for ``m_q`` of
    another (``m_p == m_q`` when sizes are fixed), which neither single swaps nor chunk moves
    reach when each half of the exchange alone raises the cost. Returns new flows."""
    n_batches = sizes.n_batches
    if n_batches < 2:
        return flows
    P, F, batch_sizes, sums, neighbours = _collapsed_state(points, flows, n_neighbors)
    if sizes.is_exact:  # sizes are kept: exchanges of equal counts only, no size price
        low, high, equal_counts, deviation_cost = 0, int(batch_sizes.max()), True, 0.0
    else:
        low, high, equal_counts, deviation_cost = sizes.min_size, sizes.max_size, False, float(sizes.deviation_cost)
    _chunk_swap_passes(P, F, sums, batch_sizes, neighbours, sizes.planned.astype(np.float64), low, high,
                       deviation_cost, equal_counts, max_passes, tol)
    return F
