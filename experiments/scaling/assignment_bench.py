"""The size-constrained assignment on its own: stage2's solver (shortest paths over the batches,
``stage2.clustering.transportation``, as the clustering calls it: with random exact
tie-breaking) against OR-Tools' min-cost flow on the same full graph.

    python experiments/scaling/assignment_bench.py          # ~1 min on 2 cores

Problems are random 0/1 course vectors (15 % density, 50 courses) collapsed to weighted points
(counts ≥ 1, 40 students per batch in all), centroids at random points; sizes exact (equal up to
one), flexible [15, 60] priced λ = 0.03 per squared student of deviation (the default), or
flexible at no price. Shapes: a random-swap trial's region (~130 points × 12 batches), a group's
whole assignment (2,000 × 124) and a large one (8,000 × 494). Both solvers get the same integer
costs (OR-Tools: the graph built and solved per call, as stage2 did before); times are the mean
over repeats after one warm-up call, without the last k-means round's prices to start from;
both results are checked to have the same cost.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from stage2.clustering.assignment import COST_SCALE, SizeModel, _slot_costs, _solve_dense, _solve_flow, squared_distances

SHAPES = [(133, 12, 200), (300, 14, 100), (2_000, 124, 5), (8_000, 494, 1)]  # points, batches, repeats
COMMAND = "python experiments/scaling/assignment_bench.py"


def problem(n_points: int, n_batches: int, seed: int):
    rng = np.random.default_rng(seed)
    points = (rng.random((n_points, 50)) < 0.15).astype(float)
    counts = rng.multinomial(40 * n_batches - n_points, np.ones(n_points) / n_points) + 1  # 40 per batch
    centroids = points[rng.choice(n_points, n_batches, replace=False)] * 0.7 + 0.1
    costs = np.rint(squared_distances(points, centroids) * COST_SCALE).astype(np.int64)
    total = int(counts.sum())
    planned = np.full(n_batches, total // n_batches) + (np.arange(n_batches) < total % n_batches)
    return costs, counts.astype(np.int64), planned


def total_cost(costs, flows, lower, slots) -> int:
    used = flows.sum(axis=0) - lower
    return int((costs * flows).sum()) + sum(int(slots[b, : used[b]].sum()) for b in range(costs.shape[1]))


def mean_seconds(call, repeats: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def main() -> int:
    print("| points × batches | students | sizes | OR-Tools ms | stage2 ms | × faster | same cost |")
    print("|---|---:|---|---:|---:|---:|---|")
    for n_points, n_batches, repeats in SHAPES:
        costs, counts, planned = problem(n_points, n_batches, seed=n_points)
        models = {"exact": SizeModel.exact(planned), "[15,60] λ=0.03": SizeModel(planned, 15, 60, 0.03),
                  "[15,60] free": SizeModel(planned, 15, 60, 0.0)}
        for label, model in models.items():
            if model.is_exact:
                lower, slots = model.planned.astype(np.int64), np.zeros((n_batches, 0), dtype=np.int64)
            else:
                lower, slots = np.full(n_batches, 15, dtype=np.int64), _slot_costs(model)
            point_idx = np.repeat(np.arange(n_points), n_batches)
            batch_idx = np.tile(np.arange(n_batches), n_points)
            ortools_s = mean_seconds(lambda: _solve_flow(point_idx, batch_idx, costs, counts, model, overflow=False), repeats)
            stage2_s = mean_seconds(lambda: _solve_dense(costs, counts, model), repeats)
            reference = _solve_flow(point_idx, batch_idx, costs, counts, model, overflow=False)[0]
            ours = _solve_dense(costs, counts, model)[0]
            same = total_cost(costs, reference, lower, slots) == total_cost(costs, ours, lower, slots)
            print(f"| {n_points:,} × {n_batches} | {int(counts.sum()):,} | {label} | {ortools_s * 1e3:.3f} | "
                  f"{stage2_s * 1e3:.3f} | {ortools_s / stage2_s:.1f} | {'yes' if same else 'NO'} |", flush=True)
    print(f"\nRegenerate: {COMMAND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
