"""The full-graph assignment solver (successive shortest paths over the batches) against an
independent optimum: scipy's Hungarian method on students × seats."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from stage2.clustering.assignment import (
    COST_SCALE,
    SizeModel,
    _slot_costs,
    assign_exact,
    squared_distances,
)
from stage2.clustering.transportation import dense_assignment, tie_broken


def seat_optimum(costs: np.ndarray, counts: np.ndarray, lower: np.ndarray, slots: np.ndarray) -> int:
    """The optimum by linear_sum_assignment: batch b has ``lower[b]`` mandatory seats (a bonus
    large enough that all are taken) and one seat per slot at the slot's cost."""
    students = np.repeat(np.arange(costs.shape[0]), counts)
    seat_batch, seat_extra, mandatory = [], [], []
    for b in range(costs.shape[1]):
        seat_batch += [b] * (int(lower[b]) + slots.shape[1])
        seat_extra += [0] * int(lower[b]) + slots[b].tolist()
        mandatory += [True] * int(lower[b]) + [False] * slots.shape[1]
    seat_batch, seat_extra, mandatory = np.array(seat_batch), np.array(seat_extra), np.array(mandatory)
    bonus = 10 * (int(np.abs(costs).sum()) + int(slots.sum()) + 1)
    matrix = costs[students][:, seat_batch] + seat_extra[None, :] - bonus * mandatory[None, :]
    rows, cols = linear_sum_assignment(matrix)
    assert mandatory[cols].sum() == lower.sum()
    return int(costs[students[rows], seat_batch[cols]].sum() + seat_extra[cols].sum())


def solution_cost(costs, flows, lower, slots) -> int:
    used = flows.sum(axis=0) - lower
    return int((costs * flows).sum()) + sum(int(slots[b, : used[b]].sum()) for b in range(costs.shape[1]))


def random_case(rng: np.random.Generator):
    n_points, n_batches = int(rng.integers(1, 9)), int(rng.integers(2, 5))
    counts = rng.integers(0, 4, size=n_points)
    counts[0] = max(counts[0], 1)
    if rng.random() < 0.3:  # ties: repeated centroids and points
        points = rng.integers(0, 2, size=(n_points, 3)).astype(float)
        centroids = points[rng.integers(0, n_points, size=n_batches)]
    else:
        points, centroids = rng.random((n_points, 3)), rng.random((n_batches, 3))
    costs = np.rint(squared_distances(points, centroids) * COST_SCALE).astype(np.int64)
    total = int(counts.sum())
    planned = np.full(n_batches, total // n_batches) + (np.arange(n_batches) < total % n_batches)
    kind = rng.integers(0, 3)
    if kind == 0:
        return costs, counts, planned.astype(np.int64), np.zeros((n_batches, 0), dtype=np.int64)
    low = int(rng.integers(0, total // n_batches + 1))
    high = int(rng.integers(-(-total // n_batches), total + 1))
    model = SizeModel(planned, low, max(high, low + 1), 0.0 if kind == 1 else float(rng.choice([0.05, 1.0])))
    return costs, counts, np.full(n_batches, low, dtype=np.int64), _slot_costs(model)


def test_dense_assignment_reaches_the_optimum_of_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        costs, counts, lower, slots = random_case(rng)
        flows, _ = dense_assignment(costs, counts, lower, slots, np.zeros(costs.shape[1], dtype=np.int64))
        sizes = flows.sum(axis=0)
        assert (flows >= 0).all() and np.array_equal(flows.sum(axis=1), counts)
        assert (sizes >= lower).all() and (sizes <= lower + slots.shape[1]).all()
        optimum = seat_optimum(costs, counts, lower, slots)
        assert solution_cost(costs, flows, lower, slots) == optimum
        # random tie-breaking keeps the optimum of the original costs
        tied_costs, tied_slots, _ = tie_broken(costs, slots, int(counts.sum()), 16)
        start = np.zeros(costs.shape[1], dtype=np.int64)
        assert solution_cost(costs, dense_assignment(tied_costs, counts, lower, tied_slots, start)[0],
                             lower, slots) == optimum
        # any starting prices give the optimum
        start = rng.integers(-50_000, 50_000, size=costs.shape[1])
        assert solution_cost(costs, dense_assignment(costs, counts, lower, slots, start)[0], lower, slots) == optimum


def test_dense_assignment_is_deterministic_and_takes_whole_points_when_it_can():
    rng = np.random.default_rng(3)
    points = rng.integers(0, 2, size=(40, 6)).astype(float)
    counts = rng.integers(1, 30, size=40)
    centroids = points[:5] + 0.1
    sizes = np.full(5, counts.sum() // 5) + (np.arange(5) < counts.sum() % 5)
    first = assign_exact(points, counts, centroids, sizes)
    assert np.array_equal(first, assign_exact(points, counts, centroids, sizes))
    assert np.array_equal(first.sum(axis=0), sizes)
    # an exact optimum splits at most (batches - 1) points between batches (a basic solution of
    # the transportation problem is a forest on points + batches)
    assert int(((first > 0).sum(axis=1) > 1).sum()) <= 4


@pytest.mark.parametrize("deviation_cost", [0.0, 0.03])
def test_flexible_sizes_use_the_convex_penalty(deviation_cost):
    # every student prefers batch 0; without a price its size goes to the maximum
    costs = np.array([[0, 10_000, 10_000]] * 3, dtype=np.int64)
    counts = np.array([30, 30, 30])
    model = SizeModel(np.array([30, 30, 30]), 20, 50, deviation_cost)
    flows, _ = dense_assignment(costs, counts, np.full(3, 20, dtype=np.int64), _slot_costs(model),
                                np.zeros(3, dtype=np.int64))
    sizes = flows.sum(axis=0)
    if deviation_cost == 0:
        assert sizes[0] == 50
    else:  # one more student in batch 0 costs 0.03·(2d+1)·COST_SCALE: worth it while < 10_000
        assert 30 < sizes[0] < 50 and sizes.sum() == 90
