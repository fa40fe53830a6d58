"""Size-constrained assignment of weighted points to centroids, solved exactly as a min-cost
flow.

Each distinct feature row (a weighted point with ``count`` students) sends its students to
centroids. How many a centroid may receive is a :class:`SizeModel`:

- *exact*: centroid ``b`` receives exactly ``planned[b]``;
- *flexible*: between ``min_size`` and ``max_size``, each student of deviation from
  ``planned[b]`` priced by the convex penalty ``deviation_cost × (s_b − planned_b)²`` (a chain
  of unit arcs of increasing cost from the centroid to a sink).

The flow is the exact optimum of the assignment step. Up to ``FULL_GRAPH_MAX_ARCS`` (point,
centroid) pairs every pair is an arc, and successive shortest paths over the centroids solve it
(:mod:`stage2.clustering.transportation`). Above, each point starts with arcs to its
``n_candidates`` best centroids plus one arc to an overflow node (always feasible), OR-Tools'
min-cost flow solves that graph, and missing arcs are priced in until none could lower the cost
(:func:`assign_with_prices`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
from numba import njit
from ortools.graph.python import min_cost_flow

from stage2.clustering.transportation import dense_assignment, tie_broken
from stage2.errors import Stage2Error

#: squared distances are rounded to integers after multiplying by this (the solver is integral)
COST_SCALE = 10_000
#: up to this many (point, centroid) arcs the full bipartite graph is used (exact) ...
FULL_GRAPH_MAX_ARCS = 20_000
#: ... and with up to this many centroids whatever the number of points: the shortest paths
#: over the centroids cost O(k²) each. Where the crossover with the restricted graph solved
#: by OR-Tools lies, per number of centroids: ``python experiments/scaling/assignment_bench.py``
#: (its second table; figures in experiments/scaling/README.md)
DENSE_MAX_BATCHES = 128
#: random tie-breaking levels of the full-graph assignment (:func:`~stage2.clustering.transportation.tie_broken`)
TIE_LEVELS = 16
#: column-generation rounds of a restricted assignment (each adds the missing arcs that would
#: lower the cost; in practice one or two suffice)
MAX_PRICING_ROUNDS = 20


@dataclass(frozen=True)
class SizeModel:
    """What sizes the batches of one group may take."""

    planned: np.ndarray
    min_size: int = 0
    max_size: int = 0
    #: SSE units per squared student of deviation from ``planned``; ``inf``: exact sizes
    deviation_cost: float = math.inf
    #: per batch, a soft cap: each student above it costs ``cap_cost`` SSE units more (a
    #: re-batch's room capacities; flexible sizes only); ``None``: no caps
    caps: np.ndarray | None = None
    cap_cost: float = 0.0

    @classmethod
    def exact(cls, sizes: np.ndarray) -> SizeModel:
        sizes = np.asarray(sizes, dtype=np.int64)
        return cls(sizes, int(sizes.min()), int(sizes.max()), math.inf)

    @property
    def is_exact(self) -> bool:
        return math.isinf(self.deviation_cost) or self.min_size >= self.max_size

    @property
    def is_tight(self) -> bool:
        """Sizes fixed, or free by at most one student per batch."""
        return self.is_exact or self.max_size - self.min_size <= 1

    @property
    def n_batches(self) -> int:
        return int(self.planned.size)

    def restricted(self, batches: np.ndarray) -> SizeModel:
        """The model of the sub-problem over ``batches`` only (same bounds and price; the
        students of those batches are redistributed among them)."""
        planned = self.planned[batches]
        if self.is_exact:
            return SizeModel.exact(planned)
        caps = None if self.caps is None else self.caps[batches]
        return SizeModel(planned, self.min_size, self.max_size, self.deviation_cost, caps, self.cap_cost)

    def penalty(self, sizes: np.ndarray) -> float:
        if self.is_exact:
            return 0.0
        sizes = np.asarray(sizes)
        penalty = float(self.deviation_cost * np.sum((sizes - self.planned) ** 2))
        if self.caps is not None:
            penalty += float(self.cap_cost * np.sum(np.maximum(sizes - self.caps, 0)))
        return penalty

    def admits(self, sizes: np.ndarray) -> bool:
        sizes = np.asarray(sizes)
        if self.is_exact:
            return bool(np.array_equal(sizes, self.planned))
        return bool(sizes.sum() == self.planned.sum() and sizes.min() >= self.min_size and sizes.max() <= self.max_size)


def as_size_model(sizes: np.ndarray | SizeModel) -> SizeModel:
    return sizes if isinstance(sizes, SizeModel) else SizeModel.exact(sizes)


def squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d2 = (
        np.einsum("ij,ij->i", points, points)[:, None]
        - 2.0 * points @ centroids.T
        + np.einsum("ij,ij->i", centroids, centroids)[None, :]
    )
    return np.maximum(d2, 0.0)


def _slot_costs(model: SizeModel) -> np.ndarray:
    """Flexible sizes: the cost of each batch's students above ``min_size``
    (:func:`slot_unit_costs`), plus ``cap_cost`` for each one above the batch's cap."""
    costs = slot_unit_costs(model.planned.astype(np.int64), model.min_size, model.max_size, float(model.deviation_cost))
    if model.caps is not None and costs.size:
        student = model.min_size + 1 + np.arange(costs.shape[1])  # the size a slot's student makes
        over = student[None, :] > np.asarray(model.caps)[:, None]
        costs = costs + np.int64(np.rint(model.cap_cost * COST_SCALE)) * over
    return costs


@njit(cache=True, nogil=True)
def slot_unit_costs(planned, min_size, max_size, deviation_cost):  # pragma: no cover - numba
    """B × (max − min) int64: entry u of batch b is the (min + u + 1)-th student's share of the
    convex deviation penalty ``deviation_cost × (s − planned[b])²`` in cost units, shifted to be
    non-negative (the number of such students is fixed)."""
    costs = np.zeros((planned.size, max(max_size - min_size, 0)), dtype=np.int64)
    if deviation_cost == 0 or costs.size == 0:
        return costs
    for b in range(planned.size):
        for unit in range(max_size - min_size):
            after = min_size + unit + 1 - planned[b]
            costs[b, unit] = np.int64(
                np.rint(deviation_cost * (after * after - (after - 1) * (after - 1)) * COST_SCALE)
            )
    return costs - costs.min()


def _size_arcs(model: SizeModel, first_batch_node: int, sink: int):
    """Arcs batch -> sink carrying the students above ``min_size``, with the convex deviation
    penalty as unit costs (:func:`_slot_costs`)."""
    k, lo, hi = model.n_batches, model.min_size, model.max_size
    if model.deviation_cost == 0 and model.caps is None:
        return (first_batch_node + np.arange(k), np.full(k, sink), np.full(k, hi - lo), np.zeros(k, np.int64))
    starts = np.repeat(first_batch_node + np.arange(k), hi - lo)
    return starts, np.full(starts.size, sink), np.ones(starts.size, np.int64), _slot_costs(model).reshape(-1)


def _solve_dense(costs: np.ndarray, counts: np.ndarray, model: SizeModel,
                 prices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact assignment on the full bipartite graph (:func:`dense_assignment`), ties broken
    at random; returns the flows and the batches' prices (cost units), which warm-start the
    next solve."""
    if model.is_exact:
        lower, slots = model.planned.astype(np.int64), np.zeros((model.n_batches, 0), dtype=np.int64)
    else:
        lower, slots = np.full(model.n_batches, model.min_size, dtype=np.int64), _slot_costs(model)
    counts = counts.astype(np.int64)
    # binary course vectors make many distances equal; a solver breaks such ties by index (the
    # lowest batch wins), which crowds the same batches round after round. Random ties: over 24
    # seeds on the ITC instances k-means ends in better optima
    tied_costs, tied_slots, scale = tie_broken(costs, slots, int(counts.sum()), TIE_LEVELS)
    start = np.zeros(model.n_batches, dtype=np.int64) if prices is None else np.asarray(prices, dtype=np.int64) * scale
    flows, final_prices = dense_assignment(tied_costs, counts, lower, tied_slots, start)
    return flows, final_prices // scale


def _check_totals(model: SizeModel, total: int, n_batches: int) -> None:
    if model.is_exact and total != int(model.planned.sum()):
        raise ValueError("counts and sizes must have the same total")
    if not model.is_exact and not n_batches * model.min_size <= total <= n_batches * model.max_size:
        raise ValueError("counts cannot fill the batches within [min_size, max_size]")


def assign_exact(
    points: np.ndarray,
    counts: np.ndarray,
    centroids: np.ndarray,
    sizes: np.ndarray | SizeModel,
    n_candidates: int | None = None,
) -> np.ndarray:
    """Return flows ``F`` (n_points × n_batches, int64) with row sums ``counts`` and column sums
    admitted by ``sizes`` (an exact size array or a :class:`SizeModel`), minimising
    Σ F · ||point − centroid||² + the model's size penalty (squared distances rounded to
    1/``COST_SCALE``). With ``n_candidates`` the flow is solved on a restricted graph and priced
    out against every (point, centroid) pair, so the result is still the exact optimum."""
    return assign_with_prices(points, counts, centroids, sizes, n_candidates)[0]


def assign_with_prices(
    points: np.ndarray,
    counts: np.ndarray,
    centroids: np.ndarray,
    sizes: np.ndarray | SizeModel,
    n_candidates: int | None = None,
    batch_prices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`assign_exact`, also returning the batches' prices (node potentials of the optimal
    flow, in cost units; ``None`` for a single batch). ``batch_prices`` (the previous k-means
    round's) warm-start the next solve: on the full graph they are the shortest paths' starting
    potentials (most paths become one step), on a restricted graph they pick the candidates.

    Restricted graph: each point gets arcs to its ``n_candidates`` best centroids by reduced
    cost ``cost − batch_prices`` (plain distance without prices) and one arc to an overflow
    node that reaches every centroid, priced at the point's largest distance (always
    feasible). After each solve, node potentials of the optimal flow are computed and every
    missing pair with a negative reduced cost is added (column generation) until none is left:
    then no pair outside the graph could lower the cost, and the flow is optimal on the full
    bipartite graph (after at most ``MAX_PRICING_ROUNDS`` re-solves; one or two in practice,
    and the flow is feasible either way). Under tight sizes the plain nearest centroids are the wrong candidates
    (students must travel past full batches); passing the previous round's prices makes the
    first restricted graph nearly right."""
    model = as_size_model(sizes)
    d2 = squared_distances(points, centroids)
    return assign_costs(np.rint(d2 * COST_SCALE).astype(np.int64), counts, model, n_candidates, batch_prices)


def assign_costs(
    costs: np.ndarray,
    counts: np.ndarray,
    model: SizeModel,
    n_candidates: int | None = None,
    batch_prices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`assign_with_prices` on a cost matrix given in cost units (P × B int64, one unit of
    point p in batch b; squared distances × ``COST_SCALE`` plus whatever else the caller prices,
    e.g. a re-batch's move penalties): the exact size-constrained min-cost assignment and the
    batches' prices."""
    n_points, n_batches = costs.shape
    _check_totals(model, int(counts.sum()), n_batches)
    if n_batches == 1:
        return counts.reshape(-1, 1).astype(np.int64), None
    if (n_candidates is None or n_candidates >= n_batches or n_points * n_batches <= FULL_GRAPH_MAX_ARCS
            or n_batches <= DENSE_MAX_BATCHES):
        return _solve_dense(costs, counts, model, batch_prices)
    prices = np.zeros(n_batches, dtype=np.int64) if batch_prices is None else batch_prices
    nearest = _best_candidates(costs, prices, n_candidates)
    point_idx = np.repeat(np.arange(n_points), n_candidates)
    batch_idx = nearest.reshape(-1)
    in_graph = np.zeros((n_points, n_batches), dtype=np.bool_)
    in_graph[point_idx, batch_idx] = True
    for _ in range(MAX_PRICING_ROUNDS):
        flows, potentials = _solve_flow(point_idx, batch_idx, costs, counts, model, overflow=True)
        potentials = cast(np.ndarray, potentials)  # always returned with overflow=True
        prices = potentials[n_points : n_points + n_batches]
        new_points, new_batches = _negative_arcs(costs, potentials[:n_points], prices, in_graph)
        if new_points.size == 0:
            break
        point_idx = np.concatenate([point_idx, new_points])
        batch_idx = np.concatenate([batch_idx, new_batches])
    return flows, prices


@njit(cache=True, nogil=True)
def _best_candidates(costs, prices, count):  # pragma: no cover - numba
    """Per row, the ``count`` columns with the smallest ``costs − prices`` (insertion into a
    sorted list of ``count``: one pass over the row, faster than ``np.argpartition``)."""
    n_rows, n_cols = costs.shape
    chosen = np.empty((n_rows, count), dtype=np.int64)
    values = np.empty(count, dtype=np.int64)
    for row in range(n_rows):
        kept = 0
        for col in range(n_cols):
            value = costs[row, col] - prices[col]
            if kept == count and value >= values[count - 1]:
                continue
            slot = kept if kept < count else count - 1
            while slot > 0 and values[slot - 1] > value:
                values[slot] = values[slot - 1]
                chosen[row, slot] = chosen[row, slot - 1]
                slot -= 1
            values[slot] = value
            chosen[row, slot] = col
            if kept < count:
                kept += 1
    return chosen


@njit(cache=True, nogil=True)
def _negative_arcs(costs, point_potentials, batch_potentials, in_graph):  # pragma: no cover - numba
    """The (point, batch) pairs outside the graph with a negative reduced cost
    ``cost + π[point] − π[batch]``; marks them as in the graph."""
    n_rows, n_cols = costs.shape
    found = 0
    for row in range(n_rows):
        for col in range(n_cols):
            if not in_graph[row, col] and costs[row, col] + point_potentials[row] - batch_potentials[col] < 0:
                found += 1
    rows = np.empty(found, dtype=np.int64)
    cols = np.empty(found, dtype=np.int64)
    found = 0
    for row in range(n_rows):
        for col in range(n_cols):
            if not in_graph[row, col] and costs[row, col] + point_potentials[row] - batch_potentials[col] < 0:
                rows[found] = row
                cols[found] = col
                in_graph[row, col] = True
                found += 1
    return rows, cols


def _solve_flow(point_idx: np.ndarray, batch_idx: np.ndarray, costs: np.ndarray, counts: np.ndarray,
                model: SizeModel, *, overflow: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Min-cost flow on the (point, batch) arcs given (distinct pairs), the size model's arcs
    and, with ``overflow``, the overflow node. Returns the flows (n_points × n_batches) and,
    with ``overflow``, the node potentials (points, then batches, sink, overflow node)."""
    n_points, n_batches = costs.shape
    first_batch = n_points
    sink = n_points + n_batches
    overflow_node = sink + 1
    starts = [point_idx]
    ends = [first_batch + batch_idx]
    capacities = [counts[point_idx]]
    unit_costs = [costs[point_idx, batch_idx]]
    if overflow:
        starts += [np.arange(n_points), np.full(n_batches, overflow_node)]
        ends += [np.full(n_points, overflow_node), first_batch + np.arange(n_batches)]
        batch_capacity = model.planned if model.is_exact else np.full(n_batches, model.max_size)
        capacities += [counts, batch_capacity.astype(np.int64)]
        unit_costs += [costs.max(axis=1), np.zeros(n_batches, np.int64)]
    if model.is_exact:
        batch_supply = -model.planned.astype(np.int64)
        sink_supply = 0
    else:
        batch_supply = np.full(n_batches, -model.min_size, dtype=np.int64)
        sink_supply = -(int(counts.sum()) - n_batches * model.min_size)
        s, e, c, u = _size_arcs(model, first_batch, sink)
        starts.append(s)
        ends.append(e)
        capacities.append(c)
        unit_costs.append(u)

    tails, heads = np.concatenate(starts), np.concatenate(ends)
    arc_capacities, arc_costs = np.concatenate(capacities).astype(np.int64), np.concatenate(unit_costs)
    solver = min_cost_flow.SimpleMinCostFlow()
    arcs = solver.add_arcs_with_capacity_and_unit_cost(tails, heads, arc_capacities, arc_costs)
    supplies = np.concatenate(
        [counts.astype(np.int64), batch_supply, [sink_supply], [0] if overflow else []]
    ).astype(np.int64)
    solver.set_nodes_supplies(np.arange(supplies.size), supplies)
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise Stage2Error(f"min-cost flow assignment failed (status {status})", code="CONVERGENCE_FAILURE")
    arc_flows = solver.flows(arcs)
    result = np.zeros((n_points, n_batches), dtype=np.int64)
    n_direct = point_idx.size
    result[point_idx, batch_idx] = arc_flows[:n_direct]  # (point, batch) pairs are distinct
    if not overflow:
        return result, None
    potentials = residual_potentials(supplies.size, tails, heads, arc_costs, arc_capacities, arc_flows)
    via_point = arc_flows[n_direct : n_direct + n_points]
    via_batch = arc_flows[n_direct + n_points : n_direct + n_points + n_batches]
    if via_point.sum():
        _route_overflow(result, via_point, via_batch, costs / COST_SCALE)
    return result, potentials


@njit(cache=True, nogil=True)
def residual_potentials(n_nodes, tails, heads, costs, capacities, flows):  # pragma: no cover - numba
    """Node potentials π of an optimal flow: shortest-path distances in its residual graph from
    a virtual source joined to every node (Bellman-Ford, stopping at the first pass without a
    change), so that every residual arc has reduced cost ``cost + π[tail] − π[head] ≥ 0``."""
    distance = np.zeros(n_nodes, dtype=np.int64)
    for _ in range(n_nodes + 1):
        changed = False
        for arc in range(tails.size):
            tail, head, cost = tails[arc], heads[arc], costs[arc]
            if flows[arc] < capacities[arc] and distance[tail] + cost < distance[head]:
                distance[head] = distance[tail] + cost
                changed = True
            if flows[arc] > 0 and distance[head] - cost < distance[tail]:
                distance[tail] = distance[head] - cost
                changed = True
        if not changed:
            break
    return distance


def _route_overflow(result: np.ndarray, via_point: np.ndarray, via_batch: np.ndarray, d2: np.ndarray) -> None:
    """Split the overflow node's flow between its points and centroids (a small exact
    transportation problem among only the points and centroids that used it)."""
    points = np.flatnonzero(via_point)
    batches = np.flatnonzero(via_batch)
    sub = _transport(d2[np.ix_(points, batches)], via_point[points], via_batch[batches])
    result[np.ix_(points, batches)] += sub


def _transport(d2: np.ndarray, counts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Exact transportation problem on a precomputed cost matrix (full bipartite graph)."""
    costs = np.rint(d2 * COST_SCALE).astype(np.int64)
    return _solve_dense(costs, counts, SizeModel.exact(sizes))[0]


def flows_to_labels(flows: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Expand point flows to one label per student, deterministically: the students of each
    point, in ascending position, fill that point's batches in ascending batch order."""
    order = np.argsort(inverse, kind="stable")
    point_idx, batch_idx = np.nonzero(flows)  # row-major: sorted by point, then batch
    labels_sorted = np.repeat(batch_idx, flows[point_idx, batch_idx])
    labels = np.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return labels


def labels_to_flows(labels: np.ndarray, inverse: np.ndarray, n_points: int, n_batches: int) -> np.ndarray:
    """Flows (points × batches) of a labelling of the students of collapsed points."""
    flows = np.zeros((n_points, n_batches), dtype=np.int64)
    np.add.at(flows, (inverse, labels), 1)
    return flows


def flow_cost(points: np.ndarray, flows: np.ndarray, model: SizeModel | None = None) -> float:
    """Within-batch SSE of the assignment ``flows`` (with the batches' own means), plus the
    size penalty of ``model``."""
    return cost_and_means(points, flows, model)[0]


def cost_and_means(points: np.ndarray, flows: np.ndarray, model: SizeModel | None = None) -> tuple[float, np.ndarray]:
    """(SSE + size penalty, batch means) of ``flows``, from the batches' sums alone:
    SSE = Σ_b (Σ f·||x||² − ||Σ f·x||² / s_b), no distance matrix."""
    sizes, sums = _flow_sums(np.ascontiguousarray(points, dtype=np.float64), np.ascontiguousarray(flows))
    row_sq = np.einsum("ij,ij->i", points, points)
    nonempty = sizes > 0
    sse = float(row_sq @ flows.sum(axis=1)) - float(
        np.sum(np.einsum("ij,ij->i", sums[nonempty], sums[nonempty]) / sizes[nonempty]))
    penalty = model.penalty(sizes) if model is not None else 0.0
    return max(sse, 0.0) + penalty, sums / np.maximum(sizes, 1.0)[:, None]


@njit(cache=True, nogil=True)
def _flow_sums(points, flows):  # pragma: no cover - numba
    """Per batch, its size and the sum of its students' rows: one pass over ``flows``
    touching only its non-zero entries (a dense product would multiply every zero)."""
    n_points, n_batches = flows.shape
    sizes = np.zeros(n_batches)
    sums = np.zeros((n_batches, points.shape[1]))
    for p in range(n_points):
        for b in range(n_batches):
            weight = flows[p, b]
            if weight != 0:
                sizes[b] += weight
                for f in range(points.shape[1]):
                    sums[b, f] += weight * points[p, f]
    return sizes, sums


def lloyd_rounds(
    points: np.ndarray,
    counts: np.ndarray,
    centroids: np.ndarray,
    sizes: SizeModel,
    *,
    max_iter: int,
    n_candidates: int | None,
    tol: float,
) -> tuple[np.ndarray, float]:
    """k-means rounds from ``centroids``: exact size-constrained assignment, then the batches'
    means, until the objective (SSE + size penalty) falls by less than ``tol`` (relative) or
    ``max_iter`` assignments are done. Returns the best flows and their objective.

    Problems of at most ``FULL_GRAPH_MAX_ARCS`` (point, centroid) pairs (random-swap trials,
    small groups) run every round in one compiled loop (:func:`_small_lloyd_rounds`): the same
    steps, without the fixed cost of numpy calls in every round."""
    model = as_size_model(sizes)
    n_batches = centroids.shape[0]
    if 1 < n_batches and points.shape[0] * n_batches <= FULL_GRAPH_MAX_ARCS:
        _check_totals(model, int(counts.sum()), n_batches)
        if model.is_exact:
            lower, slots, deviation_cost = model.planned.astype(np.int64), np.zeros((n_batches, 0), dtype=np.int64), 0.0
        else:
            lower, slots = np.full(n_batches, model.min_size, dtype=np.int64), _slot_costs(model)
            deviation_cost = float(model.deviation_cost)
        flows, cost = _small_lloyd_rounds(np.ascontiguousarray(points, dtype=np.float64), counts.astype(np.int64),
                                          np.ascontiguousarray(centroids, dtype=np.float64), lower, slots,
                                          model.planned.astype(np.float64), deviation_cost, max_iter, tol, TIE_LEVELS)
        return flows, float(cost)
    flows, prices = assign_with_prices(points, counts, centroids, sizes, n_candidates)
    cost, means = cost_and_means(points, flows, sizes)
    for _ in range(max_iter - 1):
        # the last round's prices pick the candidate arcs: centroids move little between rounds
        new_flows, prices = assign_with_prices(points, counts, means, sizes, n_candidates, prices)
        new_cost, new_means = cost_and_means(points, new_flows, sizes)
        improved = new_cost < cost - tol * max(cost, 1e-12)
        if new_cost < cost:
            flows, cost, means = new_flows, new_cost, new_means
        if not improved:
            break
    return flows, cost


@njit(cache=True, nogil=True)
def _small_lloyd_rounds(points, counts, centroids, lower, slots, planned, deviation_cost, max_iter, tol,
                        tie_levels):  # pragma: no cover - numba
    """:func:`lloyd_rounds` on the full graph, compiled: per round the rounded squared
    distances, the tie-broken exact assignment warm-started by the last round's prices, and
    the cost (SSE from the batches' sums + ``deviation_cost`` × Σ (s − planned)²) and means."""
    n_points, n_features = points.shape
    n_batches = centroids.shape[0]
    row_sq = np.zeros(n_points)
    for p in range(n_points):
        for f in range(n_features):
            row_sq[p] += points[p, f] * points[p, f]
    units = counts.sum()
    prices = np.zeros(n_batches, dtype=np.int64)
    current = centroids.copy()
    costs = np.empty((n_points, n_batches), dtype=np.int64)
    best_flows = np.zeros((n_points, n_batches), dtype=np.int64)
    best_cost = np.inf
    best_means = centroids.copy()
    for round_index in range(max(1, max_iter)):
        for b in range(n_batches):
            centroid_sq = 0.0
            for f in range(n_features):
                centroid_sq += current[b, f] * current[b, f]
            for p in range(n_points):
                dot = 0.0
                for f in range(n_features):
                    dot += points[p, f] * current[b, f]
                costs[p, b] = np.int64(np.rint(max(row_sq[p] - 2.0 * dot + centroid_sq, 0.0) * COST_SCALE))
        tied_costs, tied_slots, scale = tie_broken(costs, slots, units, tie_levels)
        flows, scaled_prices = dense_assignment(tied_costs, counts, lower, tied_slots, prices * scale)
        prices = scaled_prices // scale
        cost, means = _flow_cost_and_means(points, row_sq, flows, planned, deviation_cost)
        if round_index == 0:
            best_flows, best_cost, best_means = flows, cost, means
        else:
            improved = cost < best_cost - tol * max(best_cost, 1e-12)
            if cost < best_cost:
                best_flows, best_cost, best_means = flows, cost, means
            if not improved:
                break
        current = best_means
    return best_flows, best_cost


@njit(cache=True, nogil=True)
def _flow_cost_and_means(points, row_sq, flows, planned, deviation_cost):  # pragma: no cover - numba
    """:func:`cost_and_means`, compiled (``deviation_cost`` 0 for exact sizes)."""
    n_points, n_features = points.shape
    n_batches = flows.shape[1]
    sums = np.zeros((n_batches, n_features))
    sizes = np.zeros(n_batches)
    total_sq = 0.0
    for p in range(n_points):
        for b in range(n_batches):
            weight = flows[p, b]
            if weight > 0:
                sizes[b] += weight
                total_sq += weight * row_sq[p]
                for f in range(n_features):
                    sums[b, f] += weight * points[p, f]
    sse = total_sq
    penalty = 0.0
    means = np.zeros((n_batches, n_features))
    for b in range(n_batches):
        if sizes[b] > 0:
            norm = 0.0
            for f in range(n_features):
                norm += sums[b, f] * sums[b, f]
                means[b, f] = sums[b, f] / sizes[b]
            sse -= norm / sizes[b]
        penalty += deviation_cost * (sizes[b] - planned[b]) ** 2
    return max(sse, 0.0) + penalty, means
