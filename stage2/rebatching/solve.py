"""The re-batch's clustering: the clustering objective plus a price for every student placed
outside its previous batch, solved group by group.

For a group that keeps previous batches, k-means rounds start from those batches' means (new
batches from k-means++ seeds among the students without a batch) and each round's assignment
is the exact size-constrained min-cost assignment (:func:`~stage2.clustering.assignment.assign_costs`)
of the costs

    squared distance to the batch's mean  +  move penalty if the batch is not the student's previous one

with the move penalty ``rebatch.move_penalty`` for unchanged students,
``rebatch.changed_move_penalty`` for changed ones and none for new and forced ones; a frozen
(pinned) student's other batches cost more than any assignment that keeps it. The rounds
lower SSE + size penalty + move penalties until it stops falling. A group where nothing
changed keeps its batches as they are; a group without previous batches is batched by the
configured algorithm, as in a fresh run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stage2.clustering import BatchingProblem, make_batcher
from stage2.clustering.assignment import (
    COST_SCALE,
    SizeModel,
    assign_costs,
    cost_and_means,
    flows_to_labels,
    squared_distances,
)
from stage2.clustering.groups import Clustering, first_position_rank
from stage2.config.schema import BalancedConfig, RebatchConfig, Stage2Config
from stage2.config.settings import BatchingSettings
from stage2.features import SoftRuleFeatures, group_features
from stage2.rebatching.plan import CHANGED, FORCED, UNCHANGED, GroupRebatch, RebatchPlan
from stage2.runlog import audit
from stage2.sizing import BatchPlan


@dataclass(frozen=True)
class GroupMoves:
    """One group's re-batch problem: features and, per student, its previous batch (local
    index, -1: none), move penalty (objective units) and whether it is frozen."""

    features: np.ndarray
    previous: np.ndarray
    penalty: np.ndarray
    frozen: np.ndarray
    sizes: SizeModel
    seed: int


@dataclass(frozen=True)
class Rebatching:
    """The clustering of a re-batch, with each batch's previous row (-1: a new batch)."""

    clustering: Clustering
    previous_row: np.ndarray
    #: multiple of ``move_penalty`` in force at the end (>1 when ``max_moved`` raised it)
    penalty_factor: float = 1.0
    #: groups whose unchanged students had to be frozen to meet ``max_moved``
    frozen_groups: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _seeds_for_new(features: np.ndarray, centroids: np.ndarray, candidates: np.ndarray, n_new: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``n_new`` more centroids by k-means++ sampling (D², from the given ones) among the rows
    ``candidates`` (students without a kept batch first; any student when there are none)."""
    seeds = []
    pool = features[candidates]
    closest = (squared_distances(pool, centroids).min(axis=1) if centroids.size
               else np.ones(pool.shape[0]))
    for _ in range(n_new):
        weights = closest if closest.sum() > 0 else np.ones_like(closest)
        pick = int(rng.choice(pool.shape[0], p=weights / weights.sum()))
        seeds.append(pool[pick])
        closest = np.minimum(closest, squared_distances(pool, pool[pick][None, :])[:, 0])
    return np.asarray(seeds).reshape(n_new, features.shape[1])


def penalised_labels(problem: GroupMoves, *, n_candidates: int | None, max_iter: int, tol: float) -> np.ndarray:
    """Labels in ``[0, n_batches)`` minimising SSE + size penalty + move penalties locally
    (k-means rounds with exact penalised assignments; see the module docstring)."""
    features, previous = problem.features, problem.previous
    sizes = problem.sizes
    n_kept = int(previous.max()) + 1 if previous.size and previous.max() >= 0 else 0
    keyed = np.hstack([features, previous[:, None], problem.penalty[:, None], problem.frozen[:, None]])
    unique, inverse, counts = np.unique(keyed, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    points = np.ascontiguousarray(unique[:, : features.shape[1]])
    point_previous = unique[:, features.shape[1]].astype(np.int64)
    point_penalty = unique[:, features.shape[1] + 1]
    point_frozen = unique[:, features.shape[1] + 2] > 0
    counts = counts.astype(np.int64)

    centroids = np.zeros((n_kept, features.shape[1]))
    for b in range(n_kept):
        centroids[b] = features[previous == b].mean(axis=0)
    n_new = sizes.n_batches - n_kept
    if n_new:
        rng = np.random.default_rng(problem.seed)
        homeless = np.flatnonzero(previous < 0)
        pool = homeless if homeless.size >= n_new else np.arange(features.shape[0])
        centroids = np.vstack([centroids, _seeds_for_new(features, centroids, pool, n_new, rng)])

    batches = np.arange(sizes.n_batches)
    elsewhere = (point_previous[:, None] >= 0) & (point_previous[:, None] != batches[None, :])
    move_cost = np.where(elsewhere, np.rint(point_penalty * COST_SCALE)[:, None], 0).astype(np.int64)

    def penalised(flows: np.ndarray) -> float:
        return float(np.sum(flows * move_cost)) / COST_SCALE

    best_flows, best_cost, prices = None, np.inf, None
    for _ in range(max(1, max_iter)):
        costs = np.rint(squared_distances(points, centroids) * COST_SCALE).astype(np.int64) + move_cost
        if point_frozen.any():
            frozen_cost = min((int(costs.max()) + 1) * (int(counts.sum()) + 1), 2**40)
            costs[point_frozen[:, None] & elsewhere] = frozen_cost
        flows, prices = assign_costs(costs, counts, sizes, n_candidates, prices)
        sse, means = cost_and_means(points, flows, sizes)
        cost = sse + penalised(flows)
        improved = cost < best_cost - tol * max(abs(best_cost), 1e-12) if np.isfinite(best_cost) else True
        if cost < best_cost:
            best_flows, best_cost = flows, cost
            centroids = np.where((flows.sum(axis=0) > 0)[:, None], means, centroids)
        if not improved:
            break
    assert best_flows is not None
    return flows_to_labels(best_flows, inverse)


def _class_penalties(plan: RebatchPlan, index: np.ndarray, config: RebatchConfig, factor: float,
                     freeze: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per student of ``index``: move penalty by class (unchanged ones' times ``factor``) and
    whether it is frozen (pinned; unchanged ones too under ``freeze``)."""
    classes = plan.student_class[index]
    unchanged = classes == UNCHANGED
    penalty = np.zeros(index.size)
    penalty[unchanged] = config.move_penalty * factor
    penalty[classes == CHANGED] = config.changed_move_penalty
    frozen = plan.pinned[index] | (unchanged & freeze)
    return penalty, frozen


class _GroupSolver:
    """Solves one group of a re-batch at a given move-penalty factor."""

    def __init__(self, active: pd.DataFrame, courses: sp.csr_matrix, batch_plan: BatchPlan, plan: RebatchPlan,
                 settings: BatchingSettings, config: Stage2Config) -> None:
        self.plan, self.settings, self.rebatch = plan, settings, config.rebatch
        self.key_fields = batch_plan.key_fields
        self.engine = config.algorithm if isinstance(config.algorithm, BalancedConfig) else BalancedConfig()
        self.batcher = make_batcher(config.algorithm)
        self.courses = courses
        self.soft = SoftRuleFeatures(active, settings.soft_rule_scale)

    def features(self, group: GroupRebatch) -> np.ndarray:
        index = group.group.student_index
        program_id = (group.group.key[self.key_fields.index("program_id")] if "program_id" in self.key_fields
                      else None)
        soft = self.soft.for_group(index, self.settings.rules_for_program(program_id))
        return group_features(self.courses[index], soft)

    def previous(self, group: GroupRebatch) -> np.ndarray:
        """Per student of the group, its previous batch's local index (-1: new or forced)."""
        index = group.group.student_index
        position = pd.Index(group.kept).get_indexer(self.plan.previous_batch[index])
        return np.where(self.plan.student_class[index] == FORCED, -1, position).astype(np.int64)

    def moved_unchanged(self, group: GroupRebatch, labels: np.ndarray) -> int:
        unchanged = self.plan.student_class[group.group.student_index] == UNCHANGED
        return int(np.count_nonzero(unchanged & (labels != self.previous(group))))

    def __call__(self, group: GroupRebatch, factor: float = 1.0, freeze: bool = False) -> np.ndarray:
        index = group.group.student_index
        seed = self.settings.seed + group.group.group_index
        if group.is_fresh:
            if group.n_batches == 1:
                return np.zeros(index.size, dtype=np.int64)
            return self.batcher.fit_predict(BatchingProblem(self.features(group), group.sizes, seed=seed))
        previous = self.previous(group)
        if (group.n_new == 0 and np.all(self.plan.student_class[index] == UNCHANGED)
                and group.sizes.admits(np.bincount(previous, minlength=group.n_batches))):
            return previous  # nothing changed here: the batches stay as they are
        freeze = freeze or self.rebatch.freeze_unchanged
        penalty, frozen = _class_penalties(self.plan, index, self.rebatch, factor, freeze)
        problem = GroupMoves(self.features(group), previous, penalty, frozen, group.sizes, seed)
        return penalised_labels(problem, n_candidates=self.engine.n_candidates, max_iter=self.engine.max_iter,
                                tol=self.engine.tol)


def _meet_cap(solver: _GroupSolver, plan: RebatchPlan, batch_plan: BatchPlan, labels: list[np.ndarray],
              cap: int, config: RebatchConfig) -> tuple[list[np.ndarray], float, list[str], list[str]]:
    """Raise the unchanged students' move penalty ``cap_penalty_factor``-fold per round (only
    in groups that move some) until at most ``cap`` move; after ``cap_rounds`` rounds freeze
    them in those groups. Returns the labels, the final factor, the frozen groups, warnings."""
    moved = [solver.moved_unchanged(g, lab) for g, lab in zip(plan.groups, labels, strict=True)]
    factor = 1.0
    for _ in range(config.cap_rounds):
        if sum(moved) <= cap:
            return labels, factor, [], []
        factor *= config.cap_penalty_factor
        for i, group in enumerate(plan.groups):
            if moved[i]:
                labels[i] = solver(group, factor)
                moved[i] = solver.moved_unchanged(group, labels[i])
    frozen_groups: list[str] = []
    if sum(moved) > cap:
        for i, group in enumerate(plan.groups):
            if moved[i]:
                labels[i] = solver(group, factor, freeze=True)
                moved[i] = solver.moved_unchanged(group, labels[i])
                frozen_groups.append(batch_plan.label(group.group))
    warnings = []
    if sum(moved) > cap:
        warnings.append(f"rebatch.max_moved={cap}: {sum(moved)} unchanged students had to move even frozen "
                        "(their batches no longer fit the size bounds)")
    return labels, factor, frozen_groups, warnings


def rebatch_clustering(active: pd.DataFrame, courses: sp.csr_matrix, batch_plan: BatchPlan, plan: RebatchPlan,
                       settings: BatchingSettings, config: Stage2Config) -> Rebatching:
    """Label every active student with a global batch: per group (in plan order) the kept
    batches in the previous file's order, then the new ones by their first student.
    ``courses``: the active students' course matrix (:func:`~stage2.features.course_matrix`)."""
    solver = _GroupSolver(active, courses, batch_plan, plan, settings, config)
    labels = [solver(group) for group in plan.groups]
    factor, frozen_groups, warnings = 1.0, list[str](), list[str]()
    if config.rebatch.max_moved is not None:
        labels, factor, frozen_groups, warnings = _meet_cap(solver, plan, batch_plan, labels,
                                                            config.rebatch.max_moved, config.rebatch)
    batch_of_student = np.empty(len(active), dtype=np.int64)
    batch_group: list[int] = []
    previous_row: list[int] = []
    for group, group_labels in zip(plan.groups, labels, strict=True):
        n_kept = int(group.kept.size)
        rank = np.arange(group.n_batches)
        if group.n_batches > n_kept:  # new batches numbered by their first student's position
            rank[n_kept:] = n_kept + first_position_rank(group_labels, group.n_batches, n_kept)
        batch_of_student[group.group.student_index] = len(batch_group) + rank[group_labels]
        batch_group.extend([group.group.group_index] * group.n_batches)
        previous_row.extend(group.kept.tolist() + [-1] * (group.n_batches - n_kept))
    moved = sum(solver.moved_unchanged(g, lab) for g, lab in zip(plan.groups, labels, strict=True))
    audit("rebatch_clustering", "re-batch: %d groups, %d unchanged students moved (penalty factor %g)",
          len(plan.groups), moved, factor, moved_unchanged=moved, penalty_factor=factor)
    return Rebatching(Clustering(batch_of_student, np.asarray(batch_group, dtype=np.int64)),
                      np.asarray(previous_row, dtype=np.int64), factor, frozen_groups, warnings)
