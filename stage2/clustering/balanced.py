"""``balanced``: stage2's own engine.

Size-constrained k-means on the group's distinct feature rows (students with the same course
set and soft-rule values are one weighted point):

1. restarts: k-means++ seeds, then rounds of an exact min-cost-flow assignment under the
   group's size model and a centroid update until the cost stops falling, each polished (3);
   ``n_init`` of them, fewer on large groups (at most ``restart_budget`` student-restarts per
   group); the lowest objective is kept;
2. random swap on the best (:mod:`stage2.clustering.random_swap`): ``swap_trials`` local
   trials per batch (at least ``swap_min_trials``, at most ``swap_max_trials`` per group) in
   ``swap_rounds`` rounds, each round followed by k-means rounds on the
   whole group; only in groups with more than ``2 * swap_neighbors + 2`` batches, where a trial
   re-solves part of the group (in smaller ones a trial is a restart, and restarts are cheaper),
   and at most ``swap_max_rows_per_batch`` distinct feature rows per batch (a trial's cost
   grows with the distinct rows it re-solves: on continuous data with large clusters it costs
   hundreds of course-set trials, and the restarts already find the best optimum);
3. polish: moves of identical students together (:func:`~stage2.clustering.local_search.chunk_moves`)
   and local search with exact deltas (swaps, and moves when sizes are flexible);
4. once per group, on the result: exchanges of groups of identical students between batches
   (:func:`~stage2.clustering.local_search.chunk_swaps`), polished again if one was made.

Groups of more than ``part_max_students`` students are solved in parts: a size-constrained
k-means with one centroid per part splits the group (each part gets whole batches and exactly
their planned students), steps 1-4 run on each part, then k-means rounds and the polish run on
the whole group (:meth:`BalancedBatcher._fit_parts`). A group's cost grows with its students
times its batches; in parts, with its students only.

Groups of (nearly) fixed sizes get at least ``tight_effort`` restarts and that multiple of the
trials. Every assignment is the exact optimum, also on large groups
(:func:`~stage2.clustering.assignment.assign_with_prices`).
"""

from __future__ import annotations

from typing import cast

import numpy as np

from stage2.clustering.assignment import (
    SizeModel,
    cost_and_means,
    flows_to_labels,
    labels_to_flows,
    lloyd_rounds,
    squared_distances,
)
from stage2.clustering.base import Batcher, BatchingProblem, CollapsedPoints, collapse, objective
from stage2.clustering.local_search import chunk_moves, chunk_swaps, local_search
from stage2.clustering.random_swap import random_swap
from stage2.config.schema import BalancedConfig


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


def sub_collapse(data: CollapsedPoints, rows: np.ndarray) -> CollapsedPoints:
    """``collapse(features[rows])`` from the collapse of ``features`` (the same points, in the
    same order, without sorting the rows again)."""
    used, inverse, counts = np.unique(data.inverse[rows], return_inverse=True, return_counts=True)
    return CollapsedPoints(points=data.points[used], counts=counts.astype(np.int64), inverse=inverse.reshape(-1))


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

    config_class = BalancedConfig
    config: BalancedConfig

    def _check(self, config: BalancedConfig) -> None:
        super()._check(config)
        if config.n_candidates < 1:
            raise ValueError(f"n_candidates must be at least 1, got {config.n_candidates}")
        if config.tight_effort <= 0:
            raise ValueError(f"tight_effort must be positive, got {config.tight_effort}")
        if config.part_max_students < 0 or config.part_min_batches < 1 or config.part_repair_iter < 0:
            raise ValueError("part_max_students and part_repair_iter must be at least 0, part_min_batches at "
                             f"least 1; got {config.part_max_students}, {config.part_repair_iter}, "
                             f"{config.part_min_batches}")

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

    def _fit(self, features: np.ndarray, sizes: SizeModel, seed: int,
             data: CollapsedPoints | None = None) -> np.ndarray:
        """Restarts pick the best start; random swap improves it; a last polish (moves of
        identical students together, local search) and exchanges. No step raises the objective.
        Groups of more than ``part_max_students`` are solved in parts (:meth:`_fit_parts`).
        ``data``: ``collapse(features)``, when the caller has it."""
        if data is None:
            data = collapse(features)
        n_parts = self._n_parts(features.shape[0], sizes.n_batches)
        if n_parts > 1:
            return self._fit_parts(features, data, sizes, seed, n_parts)
        # with (nearly) fixed sizes k-means rounds end in optima that differ by several percent
        # from start to start, and a local trial, which must keep every batch's size, is rarely
        # accepted: such groups get more restarts and more trials
        effort = self.config.tight_effort if sizes.is_tight else 1.0
        seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=self._restarts(features.shape[0], effort))
        best_flows, best_labels, best_cost = None, None, np.inf
        for restart_seed in seeds:
            centroids = initial_centroids(data.points, data.counts, sizes.n_batches, int(restart_seed))
            flows, cost = self._lloyd(data.points, data.counts, centroids, sizes)
            labels = None
            if seeds.size > 1:  # compare restarts on their polished cost
                labels = self._polish(features, data, flows, sizes)
                cost = objective(features, labels, sizes)
            if best_flows is None or cost < best_cost - 1e-9 * max(1.0, abs(cost)):
                best_flows, best_labels, best_cost = flows, labels, cost
        best_flows = cast(np.ndarray, best_flows)  # seeds is never empty
        n_trials = self._swap_trials(sizes.n_batches, effort, data.points.shape[0])
        if n_trials == 0:
            labels = best_labels if best_labels is not None else self._polish(features, data, best_flows, sizes)
        else:
            if best_labels is not None:
                best_flows = labels_to_flows(best_labels, data.inverse, data.points.shape[0], sizes.n_batches)
            flows = self._random_swap(data, best_flows, sizes, n_trials, np.random.default_rng((seed, 1)))
            labels = self._polish(features, data, flows, sizes)
        return self._exchange(features, data, labels, sizes)

    def _n_parts(self, n_students: int, n_batches: int) -> int:
        """Sub-problems for a group: ``ceil(n_students / part_max_students)``, each of at least
        ``part_min_batches`` batches (1: the group is solved whole)."""
        if self.config.part_max_students <= 0 or n_students <= self.config.part_max_students:
            return 1
        wanted = -(-n_students // self.config.part_max_students)
        return max(1, min(wanted, n_batches // self.config.part_min_batches))

    def _fit_parts(self, features: np.ndarray, data: CollapsedPoints, sizes: SizeModel, seed: int,
                   n_parts: int) -> np.ndarray:
        """A large group as ``n_parts`` sub-problems, then repaired as a whole.

        The batches are dealt to the parts in order (part ``j`` gets consecutive batches and
        exactly their planned students); a size-constrained k-means with one centroid per part
        (``n_init`` restarts, the best kept) decides which students each part gets; each part is
        solved as a group of its own (its seed drawn from ``seed``); then k-means rounds on the
        whole group (``part_repair_iter`` exact assignments over every batch, kept only if they
        lower the objective) and the whole-group polish and exchanges move students across the
        parts' borders. The cost of a group grows with its students times its batches; in parts
        it grows with the students only."""
        bounds = np.linspace(0, sizes.n_batches, n_parts + 1).astype(np.int64)
        part_of_batch = np.repeat(np.arange(n_parts), np.diff(bounds))
        part_sizes = np.bincount(part_of_batch, weights=sizes.planned, minlength=n_parts).astype(np.int64)
        coarse = SizeModel.exact(part_sizes)
        rng = np.random.default_rng((seed, 2))
        best_flows, best_cost = None, np.inf
        for restart_seed in rng.integers(0, 2**31 - 1, size=max(1, self.config.n_init)):
            centroids = initial_centroids(data.points, data.counts, n_parts, int(restart_seed))
            flows, cost = self._lloyd(data.points, data.counts, centroids, coarse)
            if cost < best_cost:
                best_flows, best_cost = flows, cost
        part_of_student = flows_to_labels(cast(np.ndarray, best_flows), data.inverse)
        part_seeds = rng.integers(0, 2**31 - 1, size=n_parts)
        labels = np.empty(features.shape[0], dtype=np.int64)
        for part in range(n_parts):
            rows = np.flatnonzero(part_of_student == part)
            batches = np.flatnonzero(part_of_batch == part)
            part_labels = self._fit(features[rows], sizes.restricted(batches), int(part_seeds[part]),
                                    sub_collapse(data, rows))
            labels[rows] = batches[part_labels]
        flows = labels_to_flows(labels, data.inverse, data.points.shape[0], sizes.n_batches)
        if self.config.part_repair_iter > 0:
            cost, means = cost_and_means(data.points, flows, sizes)
            repaired, repaired_cost = lloyd_rounds(data.points, data.counts, means, sizes,
                                                   max_iter=self.config.part_repair_iter,
                                                   n_candidates=self.config.n_candidates, tol=self.config.tol)
            if repaired_cost < cost:
                flows = repaired
        return self._exchange(features, data, self._polish(features, data, flows, sizes), sizes)

    def _polish(self, features: np.ndarray, data: CollapsedPoints, flows: np.ndarray, sizes: SizeModel) -> np.ndarray:
        """Labels of ``flows`` after moves of identical students together and local search."""
        if not self.config.local_search:
            return flows_to_labels(flows, data.inverse)
        flows = chunk_moves(
            data.points, flows, sizes, n_neighbors=self.config.n_neighbors, max_passes=self.config.max_passes
        )
        labels = flows_to_labels(flows, data.inverse)
        return local_search(
            features, labels, sizes, n_neighbors=self.config.n_neighbors, max_passes=self.config.max_passes
        )

    def _exchange(
        self, features: np.ndarray, data: CollapsedPoints, labels: np.ndarray, sizes: SizeModel
    ) -> np.ndarray:
        """Last step, once per group: exchanges of groups of identical students between batches
        (:func:`chunk_swaps`), and the polish again if one was made. Not in every restart's
        polish: on thousands of small groups that was a large share of the clustering time for
        no gain in the objective."""
        if not self.config.local_search:
            return labels
        flows = labels_to_flows(labels, data.inverse, data.points.shape[0], sizes.n_batches)
        exchanged = chunk_swaps(
            data.points, flows, sizes, n_neighbors=self.config.n_neighbors, max_passes=self.config.max_passes
        )
        if np.array_equal(exchanged, flows):
            return labels
        return self._polish(features, data, exchanged, sizes)

    def _swap_trials(self, n_batches: int, effort: float = 1.0, n_rows: int = 0) -> int:
        """Random-swap trials for a group of ``n_rows`` distinct feature rows:
        ``effort × swap_trials`` per batch, at least ``effort × swap_min_trials`` and at most
        ``effort × swap_max_trials``. None when ``swap_trials`` is 0; when a trial is not local
        (it re-solves up to ``2 * swap_neighbors + 2`` batches; in smaller groups a trial is a
        whole-group restart, and restarts are cheaper there); or when the batches hold more than
        ``swap_max_rows_per_batch`` distinct rows each (a trial costs what it re-solves)."""
        if n_batches <= 2 * self.config.swap_neighbors + 2:
            return 0
        if n_rows > self.config.swap_max_rows_per_batch * n_batches:
            return 0
        if self.config.swap_trials <= 0:
            return 0
        wanted = max(self.config.swap_trials * n_batches, self.config.swap_min_trials)
        return int(max(0, round(effort * min(wanted, self.config.swap_max_trials))))

    def _random_swap(self, data: CollapsedPoints, flows: np.ndarray, sizes: SizeModel, n_trials: int,
                     rng: np.random.Generator) -> np.ndarray:
        """``swap_rounds`` × (random-swap trials, then k-means rounds on the whole group)."""
        rounds = max(1, self.config.swap_rounds)
        for round_index in range(rounds):
            share = n_trials // rounds + (1 if round_index < n_trials % rounds else 0)
            labels = random_swap(data, flows_to_labels(flows, data.inverse), sizes, n_trials=share,
                                 n_neighbors=self.config.swap_neighbors, n_iter=self.config.swap_iter,
                                 tol=self.config.tol, rng=rng)
            swapped = labels_to_flows(labels, data.inverse, data.points.shape[0], sizes.n_batches)
            # the trials moved centroids locally; global rounds from there (kept only if better:
            # the restricted candidate arcs could in principle miss the current assignment)
            swapped_cost, swapped_means = cost_and_means(data.points, swapped, sizes)
            new_flows, new_cost = self._lloyd(data.points, data.counts, swapped_means, sizes)
            flows = new_flows if new_cost < swapped_cost else swapped
        return flows

    def _restarts(self, n_students: int, effort: float = 1.0) -> int:
        """``n_init`` restarts, fewer for large groups: at most ``restart_budget`` student-
        restarts per group (restarts matter most, and cost least, on small groups); at least
        ``effort`` (tight groups: ``tight_effort``, also above ``n_init``)."""
        if self.config.restart_budget <= 0:
            return max(self.config.n_init, int(round(effort)))
        budgeted = max(1, self.config.restart_budget // max(n_students, 1))
        return int(max(min(self.config.n_init, budgeted), round(effort)))

    def _lloyd(self, points: np.ndarray, counts: np.ndarray, centroids: np.ndarray, sizes: SizeModel):
        return lloyd_rounds(points, counts, centroids, sizes, max_iter=self.config.max_iter,
                            n_candidates=self.config.n_candidates, tol=self.config.tol)
