"""Exact size-constrained assignment on the full bipartite graph (points × batches), by
successive shortest paths over the batches: the solver of every assignment small enough to
give each point an arc to every batch (random-swap trials, small groups, scikit-learn
repairs). How much faster than building and solving the same graph with OR-Tools' min-cost
flow, by problem size: ``python experiments/scaling/assignment_bench.py`` (figures in
experiments/scaling/README.md).

Why it is fast: a shortest path from a point only ever moves students between batches, so
Dijkstra runs on the B batches (and one sink node for the flexible sizes' unit costs), not on
the P + B nodes of the graph; the cheapest point to move out of batch a into batch b is kept
per ordered pair and refreshed only for the batches a path changed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: distance of a node not reached (larger than any path cost, far from int64 overflow)
_UNREACHED = np.int64(2**62)


@njit(cache=True, nogil=True)
def dense_assignment(costs, counts, lower, slot_costs, prices):  # pragma: no cover - numba
    """Exact min-cost assignment on the full bipartite graph.

    ``costs`` (P × B int64): cost of one unit of point p in batch b; ``counts`` (P): units of
    each point, all placed; batch b receives at least ``lower[b]`` units and at most
    ``lower[b] + S`` (S = ``slot_costs.shape[1]``), its u-th unit above ``lower[b]`` costing
    ``slot_costs[b, u - 1]`` (non-decreasing in u: a convex size penalty). Minimises
    Σ costs·flows + the slot costs used. Needs Σ lower ≤ Σ counts ≤ Σ lower + B·S (the caller
    checks). ``prices`` (B int64) start the batches' potentials: any values give the optimum,
    and the previous k-means round's make most paths a single step. Returns the flows
    (P × B int64) and the batches' final prices (the smallest 0).

    Successive shortest paths with node potentials (Ahuja, Magnanti & Orlin 1993, ch. 9): the
    units of each point in turn (largest points first) go along a shortest path, in reduced costs, to the nearest
    batch still below ``lower`` or to the sink of the slots."""
    n_points, n_batches = costs.shape
    n_slots = slot_costs.shape[1]
    sink = n_batches
    flows_t = np.zeros((n_batches, n_points), dtype=np.int64)  # batch-major: a batch's points are a row
    sizes = np.zeros(n_batches, dtype=np.int64)
    remaining = counts.astype(np.int64).copy()
    sink_demand = np.int64(counts.sum() - lower.sum())
    potential = np.zeros(n_batches + 1, dtype=np.int64)
    potential[:n_batches] = prices
    if n_slots > 0:  # slot arcs b -> sink need slot + π(b) − π(sink) >= 0
        potential[sink] = (slot_costs[:, 0] + potential[:n_batches]).min()
    # the cheapest move of one unit out of batch a into batch b: min over a's points q of
    # costs[q, b] - costs[q, a], and that q
    move_cost = np.full((n_batches, n_batches), _UNREACHED, dtype=np.int64)
    move_point = np.full((n_batches, n_batches), -1, dtype=np.int64)
    distance = np.empty(n_batches + 1, dtype=np.int64)
    predecessor = np.empty(n_batches + 1, dtype=np.int64)
    settled = np.empty(n_batches + 1, dtype=np.bool_)
    # the largest points first: their units go in bulk while paths are short (fewer
    # augmentations; assignment_bench.py measures the solver)
    for point in np.argsort(-counts, kind="mergesort"):
        while remaining[point] > 0:
            terminal = _shortest_path(point, costs, lower, slot_costs, sizes, sink_demand, potential,
                                      move_cost, distance, predecessor, settled)
            reach = distance[terminal]
            for node in range(n_batches + 1):  # π += min(d, d(terminal)) keeps reduced costs >= 0
                potential[node] += min(distance[node], reach)
            amount = min(remaining[point], sink_demand if terminal == sink else lower[terminal] - sizes[terminal])
            amount = min(amount, _path_capacity(terminal, predecessor, lower, slot_costs, sizes, flows_t, move_point))
            remaining[point] -= amount
            if terminal == sink:
                sink_demand -= amount
            _augment(point, terminal, amount, predecessor, costs, flows_t, sizes, move_cost, move_point)
    final_prices = potential[:n_batches] - potential[:n_batches].min()
    return flows_t.T.copy(), final_prices


@njit(cache=True, nogil=True, inline="always")
def _shortest_path(point, costs, lower, slot_costs, sizes, sink_demand, potential, move_cost, distance,
                   predecessor, done):  # pragma: no cover - numba
    """Dijkstra (dense, O(B²)) from ``point`` over the batches and the sink, on reduced costs
    cost + π(tail) − π(head) ≥ 0, until the nearest terminal (a batch below ``lower``, or the
    sink while it still takes units) is settled; returns it. ``distance`` and
    ``predecessor`` (-1: straight from ``point``; B: through the sink) are filled in; ``done``
    is work space."""
    n_batches = costs.shape[1]
    n_slots = slot_costs.shape[1]
    sink = n_batches
    done[:] = False
    base = _UNREACHED
    for b in range(n_batches):
        base = min(base, costs[point, b] - potential[b])
    for b in range(n_batches):
        distance[b] = costs[point, b] - potential[b] - base
        predecessor[b] = -1
    distance[sink] = _UNREACHED
    predecessor[sink] = -1
    while True:
        node = -1
        best = _UNREACHED
        for v in range(n_batches + 1):
            if not done[v] and distance[v] < best:
                best = distance[v]
                node = v
        done[node] = True  # a terminal is always reachable: node >= 0
        if node == sink:
            if sink_demand > 0:
                return node
            for b in range(n_batches):  # back out of the sink: b gives up its last slot
                used = sizes[b] - lower[b]
                if used > 0 and not done[b]:
                    candidate = best - slot_costs[b, used - 1] + potential[sink] - potential[b]
                    if candidate < distance[b]:
                        distance[b] = candidate
                        predecessor[b] = sink
            continue
        if sizes[node] < lower[node]:
            return node
        for b in range(n_batches):
            if b != node and not done[b] and move_cost[node, b] != _UNREACHED:
                candidate = best + move_cost[node, b] + potential[node] - potential[b]
                if candidate < distance[b]:
                    distance[b] = candidate
                    predecessor[b] = node
        used = sizes[node] - lower[node]
        if used < n_slots and not done[sink]:
            candidate = best + slot_costs[node, used] + potential[node] - potential[sink]
            if candidate < distance[sink]:
                distance[sink] = candidate
                predecessor[sink] = node


@njit(cache=True, nogil=True, inline="always")
def _path_capacity(terminal, predecessor, lower, slot_costs, sizes, flows_t, move_point):  # pragma: no cover - numba
    """Units the path to ``terminal`` carries at its current cost: each move is limited by the
    units of the moved point, each slot step by the run of equal slot costs."""
    n_slots = slot_costs.shape[1]
    sink = sizes.size
    amount = _UNREACHED
    node = terminal
    while predecessor[node] != -1:
        before = predecessor[node]
        if node == sink:  # into the sink through ``before``'s next slot
            used = sizes[before] - lower[before]
            run = 1
            while used + run < n_slots and slot_costs[before, used + run] == slot_costs[before, used]:
                run += 1
            amount = min(amount, run)  # type: ignore[arg-type]  # numba: int64 throughout
        elif before == sink:  # out of the sink: ``node`` gives up its last slot
            used = sizes[node] - lower[node]
            run = 1
            while used - run - 1 >= 0 and slot_costs[node, used - run - 1] == slot_costs[node, used - 1]:
                run += 1
            amount = min(amount, run)  # type: ignore[arg-type]  # numba: int64 throughout
        else:
            amount = min(amount, flows_t[before, move_point[before, node]])
        node = before
    return amount


@njit(cache=True, nogil=True, inline="always")
def _augment(  # pragma: no cover - numba
    point, terminal, amount, predecessor, costs, flows_t, sizes, move_cost, move_point
):
    """Send ``amount`` units of ``point`` along the path to ``terminal``; refresh the cheapest
    moves of the batches that lost a point."""
    sink = sizes.size
    node = terminal
    while True:
        before = predecessor[node]
        if node == sink or before == sink:  # slot steps: sizes follow from the moves
            node = before
            continue
        if before == -1:
            _add_units(flows_t, sizes, move_cost, move_point, costs, node, point, amount)
            return
        moved = move_point[before, node]
        flows_t[before, moved] -= amount
        sizes[before] -= amount
        if flows_t[before, moved] == 0:
            _rebuild_moves(flows_t, move_cost, move_point, costs, before)
        _add_units(flows_t, sizes, move_cost, move_point, costs, node, moved, amount)
        node = before


@njit(cache=True, nogil=True)
def _add_units(flows_t, sizes, move_cost, move_point, costs, batch, point, amount):  # pragma: no cover - numba
    """``amount`` more units of ``point`` in ``batch`` (its cheapest moves updated if new there)."""
    if flows_t[batch, point] == 0:
        for b in range(costs.shape[1]):
            if b != batch:
                value = costs[point, b] - costs[point, batch]
                if value < move_cost[batch, b]:
                    move_cost[batch, b] = value
                    move_point[batch, b] = point
    flows_t[batch, point] += amount
    sizes[batch] += amount


@njit(cache=True, nogil=True)
def _rebuild_moves(flows_t, move_cost, move_point, costs, batch):  # pragma: no cover - numba
    """Recompute the cheapest moves out of ``batch`` from its points."""
    n_points, n_batches = costs.shape
    for b in range(n_batches):
        move_cost[batch, b] = _UNREACHED
        move_point[batch, b] = -1
    for point in range(n_points):
        if flows_t[batch, point] > 0:
            for b in range(n_batches):
                if b != batch:
                    value = costs[point, b] - costs[point, batch]
                    if value < move_cost[batch, b]:
                        move_cost[batch, b] = value
                        move_point[batch, b] = point


@njit(cache=True, nogil=True)
def tie_broken(costs, slot_costs, units, levels):  # pragma: no cover - numba
    """Costs with their ties broken at random but the optimum kept: every cost (and slot cost)
    times ``scale = levels × (units + 1)`` plus, for the costs, a draw in [0, levels); the draws
    of all ``units`` together weigh less than one unit of cost, so an optimum of the new costs
    is one of the old. The draws are a splitmix64 sequence seeded by the costs themselves
    (the same input, the same draws). Returns (costs, slot costs, scale); scale 1 and the
    costs unchanged when the scaled costs would not fit in int64."""
    n_rows, n_cols = costs.shape
    largest = 0
    for row in range(n_rows):
        for col in range(n_cols):
            largest = max(largest, costs[row, col])
    for row in range(slot_costs.shape[0]):
        for col in range(slot_costs.shape[1]):
            largest = max(largest, slot_costs[row, col])
    scale = levels * (units + 1)
    if float(largest) * scale * (n_cols + 2) >= 2.0**62:
        return costs.copy(), slot_costs.copy(), 1
    state = np.uint64(scale)
    golden, mix1, mix2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    for row in range(n_rows):  # the seed: a hash of the first column
        state = (state ^ np.uint64(costs[row, 0])) * golden
    modulus = np.uint64(levels)
    out = np.empty_like(costs)
    for row in range(n_rows):
        for col in range(n_cols):
            state += golden
            z = state
            z = (z ^ (z >> np.uint64(30))) * mix1
            z = (z ^ (z >> np.uint64(27))) * mix2
            z = z ^ (z >> np.uint64(31))
            out[row, col] = costs[row, col] * scale + np.int64(z % modulus)
    return out, slot_costs * scale, scale
