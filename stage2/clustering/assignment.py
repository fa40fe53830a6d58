"""Exact size-constrained assignment of weighted points to centroids, as a min-cost flow.

Each distinct feature row (a weighted point with ``count`` students) sends its students to
centroids; centroid ``b`` must receive exactly ``sizes[b]``. With every (point, centroid) arc
this is the exact optimum of the assignment step of size-constrained k-means. When there are
too many arcs, each point keeps arcs to its ``n_candidates`` nearest centroids plus one arc to
an overflow node that reaches every centroid, priced at the point's largest candidate
distance, so the flow is always feasible and the overflow is used only where capacities force
it.
"""

from __future__ import annotations

import numpy as np
from ortools.graph.python import min_cost_flow

from stage2.errors import Stage2Error

#: squared distances are rounded to integers after multiplying by this (the solver is integral)
COST_SCALE = 10_000
#: up to this many (point, centroid) arcs the full bipartite graph is used (exact)
FULL_GRAPH_MAX_ARCS = 200_000


def squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d2 = (
        np.einsum("ij,ij->i", points, points)[:, None]
        - 2.0 * points @ centroids.T
        + np.einsum("ij,ij->i", centroids, centroids)[None, :]
    )
    return np.maximum(d2, 0.0)


def assign_exact(
    points: np.ndarray,
    counts: np.ndarray,
    centroids: np.ndarray,
    sizes: np.ndarray,
    n_candidates: int | None = None,
) -> np.ndarray:
    """Return flows ``F`` (n_points × n_batches, int64) with row sums ``counts`` and column sums
    ``sizes`` minimising Σ F · ||point − centroid||²."""
    n_points, n_batches = points.shape[0], centroids.shape[0]
    if int(counts.sum()) != int(sizes.sum()):
        raise ValueError("counts and sizes must have the same total")
    if n_batches == 1:
        return counts.reshape(-1, 1).astype(np.int64)
    d2 = squared_distances(points, centroids)
    if n_candidates is None or n_points * n_batches <= FULL_GRAPH_MAX_ARCS or n_candidates >= n_batches:
        point_idx = np.repeat(np.arange(n_points), n_batches)
        batch_idx = np.tile(np.arange(n_batches), n_points)
        overflow = False
    else:
        nearest = np.argpartition(d2, n_candidates - 1, axis=1)[:, :n_candidates]
        point_idx = np.repeat(np.arange(n_points), n_candidates)
        batch_idx = nearest.reshape(-1)
        overflow = True
    costs = np.rint(d2[point_idx, batch_idx] * COST_SCALE).astype(np.int64)
    starts = [point_idx]
    ends = [n_points + batch_idx]
    capacities = [counts[point_idx]]
    unit_costs = [costs]
    overflow_node = n_points + n_batches
    if overflow:
        starts += [np.arange(n_points), np.full(n_batches, overflow_node)]
        ends += [np.full(n_points, overflow_node), n_points + np.arange(n_batches)]
        capacities += [counts, sizes]
        unit_costs += [np.rint(d2.max(axis=1) * COST_SCALE).astype(np.int64), np.zeros(n_batches, np.int64)]
    solver = min_cost_flow.SimpleMinCostFlow()
    arcs = solver.add_arcs_with_capacity_and_unit_cost(
        np.concatenate(starts), np.concatenate(ends), np.concatenate(capacities), np.concatenate(unit_costs)
    )
    n_nodes = overflow_node + (1 if overflow else 0)
    supplies = np.concatenate([counts, -sizes, np.zeros(1 if overflow else 0, np.int64)])
    solver.set_nodes_supplies(np.arange(n_nodes), supplies)
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise Stage2Error(f"min-cost flow assignment failed (status {status})", code="CONVERGENCE_FAILURE")
    flows = solver.flows(arcs)
    result = np.zeros((n_points, n_batches), dtype=np.int64)
    n_direct = point_idx.size
    np.add.at(result, (point_idx, batch_idx), flows[:n_direct])
    if overflow:
        # route overflow flow: points that used it, matched to centroids that received it
        via_point = flows[n_direct : n_direct + n_points]
        via_batch = flows[n_direct + n_points :]
        if via_point.sum():
            _route_overflow(result, via_point, via_batch, d2)
    return result


def _route_overflow(result: np.ndarray, via_point: np.ndarray, via_batch: np.ndarray, d2: np.ndarray) -> None:
    """Split the overflow node's flow between its points and centroids (a small exact
    transportation problem among only the points and centroids that used it)."""
    points = np.flatnonzero(via_point)
    batches = np.flatnonzero(via_batch)
    sub = assign_exact_dense(d2[np.ix_(points, batches)], via_point[points], via_batch[batches])
    result[np.ix_(points, batches)] += sub


def assign_exact_dense(d2: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Exact transportation problem on a precomputed cost matrix (full bipartite graph)."""
    n_points, n_batches = d2.shape
    point_idx = np.repeat(np.arange(n_points), n_batches)
    batch_idx = np.tile(np.arange(n_batches), n_points)
    solver = min_cost_flow.SimpleMinCostFlow()
    arcs = solver.add_arcs_with_capacity_and_unit_cost(
        point_idx, n_points + batch_idx, counts[point_idx], np.rint(d2.reshape(-1) * COST_SCALE).astype(np.int64)
    )
    solver.set_nodes_supplies(np.arange(n_points + n_batches), np.concatenate([counts, -sizes]))
    if solver.solve() != solver.OPTIMAL:
        raise Stage2Error("min-cost flow assignment failed", code="CONVERGENCE_FAILURE")
    result = np.zeros((n_points, n_batches), dtype=np.int64)
    np.add.at(result, (point_idx, batch_idx), solver.flows(arcs))
    return result


def flows_to_labels(flows: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Expand point flows to one label per student, deterministically: the students of each
    point, in ascending position, fill that point's batches in ascending batch order."""
    order = np.argsort(inverse, kind="stable")
    point_idx, batch_idx = np.nonzero(flows)  # row-major: sorted by point, then batch
    labels_sorted = np.repeat(batch_idx, flows[point_idx, batch_idx])
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels


def centroids_from_flows(points: np.ndarray, flows: np.ndarray) -> np.ndarray:
    sizes = flows.sum(axis=0).astype(np.float64)
    return (flows.T.astype(np.float64) @ points) / np.maximum(sizes, 1.0)[:, None]


def flow_cost(points: np.ndarray, flows: np.ndarray) -> float:
    """Within-batch SSE of the assignment ``flows`` (with the batches' own means)."""
    centroids = centroids_from_flows(points, flows)
    return float(np.sum(flows * squared_distances(points, centroids)))
