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

A second table is the choice stage2 makes for large groups: up to eight k-means rounds from
k-means++ seeds (sizes [15, 60] at λ = 0.03, warm-started round to round as in the
clustering) on a synthetic one-group institution (40 students per batch; its course matrix
alone, and with the features of the soft rules a run clusters on), once with every assignment
on the full graph by stage2's solver and once on the restricted graph (each point's 24 nearest
centroids, missing arcs priced in) solved by OR-Tools.
`stage2.clustering.assignment.DENSE_MAX_BATCHES` sits where the two cross.
"""

from __future__ import annotations

import functools
import sys
import time

import numpy as np

from stage2.clustering import assignment
from stage2.clustering.assignment import (
    COST_SCALE,
    SizeModel,
    _slot_costs,
    _solve_dense,
    _solve_flow,
    lloyd_rounds,
    squared_distances,
)
from stage2.clustering.balanced import initial_centroids
from stage2.clustering.base import collapse
from stage2.config.settings import ConstraintRule
from stage2.features import SoftRuleFeatures, course_matrix, group_features
from stage2.synth import make_institution

SHAPES = [(133, 12, 200), (300, 14, 100), (2_000, 124, 5), (8_000, 494, 1)]  # points, batches, repeats
CROSSOVER_BATCHES = [64, 124, 200, 494]
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
            ortools_s = mean_seconds(
                functools.partial(_solve_flow, point_idx, batch_idx, costs, counts, model, overflow=False), repeats)
            stage2_s = mean_seconds(functools.partial(_solve_dense, costs, counts, model), repeats)
            reference = _solve_flow(point_idx, batch_idx, costs, counts, model, overflow=False)[0]
            ours = _solve_dense(costs, counts, model)[0]
            same = total_cost(costs, reference, lower, slots) == total_cost(costs, ours, lower, slots)
            print(f"| {n_points:,} × {n_batches} | {int(counts.sum()):,} | {label} | {ortools_s * 1e3:.3f} | "
                  f"{stage2_s * 1e3:.3f} | {ortools_s / stage2_s:.1f} | {'yes' if same else 'NO'} |", flush=True)
    print("\n| features | batches | students | distinct rows | rounds | full graph, stage2: ms per round "
          "| restricted graph, OR-Tools: ms per round | stage2 ÷ OR-Tools |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for soft_rules in (False, True):
        for n_batches in CROSSOVER_BATCHES:
            n_students, n_points, rounds, dense_s, restricted_s = crossover(n_batches, soft_rules)
            label = "courses + soft rules" if soft_rules else "courses"
            print(f"| {label} | {n_batches} | {n_students:,} | {n_points:,} | {rounds} | {dense_s * 1e3:.1f} | "
                  f"{restricted_s * 1e3:.1f} | {dense_s / restricted_s:.2f} |", flush=True)
    print(f"\nRegenerate: {COMMAND}")
    return 0


#: the soft rules a run on the synthetic institutions clusters on: their EAV table makes
#: preferred shift (weight 3) and languages (weight 2) homogeneous; soft_rule_scale as in
#: conf/constraints/default.yaml
SOFT_RULES = [ConstraintRule("shift", "preferred_shift", "homogeneous", "soft", 3.0, 0.8),
              ConstraintRule("language", "preferred_languages", "homogeneous", "soft", 2.0, 0.7)]
SOFT_RULE_SCALE = 0.1


def crossover(n_batches: int, soft_rules: bool, max_rounds: int = 8) -> tuple[int, int, int, float, float]:
    """k-means rounds on a synthetic one-group institution of 40 students per batch
    (``stage2.synth``, seed 0; its course matrix, with or without the soft rules' features),
    from the same k-means++ start, with every assignment on the full graph (stage2's solver)
    and on the restricted graph (OR-Tools). Returns students, distinct feature rows, rounds and
    the seconds per round of each."""
    tables = make_institution(40 * n_batches, seed=0, n_groups="one")
    students = tables["student_data"]
    courses = course_matrix(students["student_id"], tables["student_course_enrollment"]).matrix
    soft = SoftRuleFeatures(students, SOFT_RULE_SCALE).for_group(np.arange(len(students)), SOFT_RULES)
    data = collapse(group_features(courses, soft if soft_rules else None))
    start = initial_centroids(data.points, data.counts, n_batches, 0)
    planned = np.full(n_batches, len(students) // n_batches) + (np.arange(n_batches) < len(students) % n_batches)
    model = SizeModel(planned, 15, 60, 0.03)
    seconds, rounds = [], []
    saved_limit, saved_assign = assignment.DENSE_MAX_BATCHES, assignment.assign_with_prices
    try:
        for dense_up_to in (10**9, 0):
            assignment.DENSE_MAX_BATCHES = dense_up_to
            calls = []
            assignment.assign_with_prices = (
                lambda *args, _calls=calls, **kwargs: _calls.append(1) or saved_assign(*args, **kwargs))
            began = time.perf_counter()
            lloyd_rounds(data.points, data.counts, start, model, max_iter=max_rounds, n_candidates=24, tol=0.0)
            seconds.append((time.perf_counter() - began) / len(calls))
            rounds.append(len(calls))
    finally:
        assignment.DENSE_MAX_BATCHES, assignment.assign_with_prices = saved_limit, saved_assign
    return len(students), int(data.points.shape[0]), min(rounds), seconds[0], seconds[1]


if __name__ == "__main__":
    sys.exit(main())
