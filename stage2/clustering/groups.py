"""Clustering stage: run the configured algorithm on every mixable group.

Groups are independent, so with ``parallel.n_workers != 1`` and enough students they are spread
over worker processes: joblib's (``parallel.backend=loky``) or a Dask cluster's (``dask``; see
:mod:`stage2.clustering.backends`). Each group's seed is ``seed + group index``, so the result
does not depend on the backend or on how groups are scheduled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stage2.clustering import BatchingProblem, make_batcher
from stage2.clustering.assignment import SizeModel
from stage2.clustering.backends import run_tasks
from stage2.clustering.worker import fit_group, fit_group_in_worker
from stage2.config.schema import AlgorithmConfig, ParallelConfig
from stage2.config.settings import BatchingSettings
from stage2.features import SoftRuleFeatures, course_matrix, group_features
from stage2.memory import workers_peak_mb
from stage2.sizing import STATUS_OK, BatchPlan, GroupPlan


@dataclass(frozen=True)
class Clustering:
    """Result of the clustering stage for all groups."""

    #: global batch index of each active student (batches ordered by group, then by their
    #: first student's position)
    batch_of_student: np.ndarray
    #: group index of each batch
    batch_group: np.ndarray
    #: summed peak resident memory of the worker processes used (0 when none), MiB
    workers_peak_mb: float = 0.0


def first_position_rank(labels: np.ndarray, n_batches: int, first_batch: int = 0) -> np.ndarray:
    """``rank[b - first_batch]``: the place of batch ``b`` (of ``first_batch`` .. ``n_batches - 1``)
    when those batches are ordered by their first student's position in ``labels``."""
    first = np.full(n_batches - first_batch, np.iinfo(np.int64).max)
    among = labels >= first_batch
    np.minimum.at(first, labels[among] - first_batch, np.flatnonzero(among))
    rank = np.empty(n_batches - first_batch, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_batches - first_batch)
    return rank


def size_model(group: GroupPlan, settings: BatchingSettings) -> SizeModel:
    """Flexible sizes within the group's bounds, priced by the weights; exact planned sizes
    for groups whose sizes are already forced (undersized, no feasible count)."""
    if group.status != STATUS_OK or math.isinf(settings.deviation_cost):
        return SizeModel.exact(group.batch_sizes)
    return SizeModel(group.batch_sizes, group.bounds.min, group.bounds.max, settings.deviation_cost)


def cluster_groups(
    active: pd.DataFrame,
    enrollments: pd.DataFrame,
    plan: BatchPlan,
    settings: BatchingSettings,
    algorithm: AlgorithmConfig | Mapping[str, Any],
    *,
    parallel: ParallelConfig | None = None,
    courses: sp.csr_matrix | None = None,
) -> Clustering:
    """Label every active student with a global batch index. ``parallel``: where the groups
    run (default: all in this process); ``courses``: the students' course matrix
    (:func:`~stage2.features.course_matrix`), when the caller has it already."""
    batcher = make_batcher(algorithm)
    if courses is None:
        courses = course_matrix(active["student_id"], enrollments).matrix
    soft_features = SoftRuleFeatures(active, settings.soft_rule_scale)
    # largest first: on workers, a large group started last would run alone at the end (each
    # group's seed is its own, so the order changes no result)
    to_cluster = sorted((g for g in plan.groups if g.n_batches > 1), key=lambda g: (-g.n_students, g.group_index))

    def problems() -> Iterator[BatchingProblem]:
        for group in to_cluster:
            program_id = group.key[plan.key_fields.index("program_id")] if "program_id" in plan.key_fields else None
            index = group.student_index
            features = group_features(
                courses[index], soft_features.for_group(index, settings.rules_for_program(program_id))
            )
            yield BatchingProblem(features, size_model(group, settings), seed=settings.seed + group.group_index)

    parallel = parallel or ParallelConfig(n_workers=1)
    workers_peak = 0.0
    if parallel.n_workers != 1 and len(to_cluster) > 1 and len(active) >= parallel.min_students:
        outcomes = run_tasks(fit_group_in_worker, ((batcher, p) for p in problems()), parallel)
        results = [labels for labels, _ in outcomes]
        workers_peak = workers_peak_mb([peak for _, peak in outcomes])
    else:
        results = [fit_group(batcher, p) for p in problems()]
    labels_of = {g.group_index: labels for g, labels in zip(to_cluster, results, strict=True)}

    batch_of_student = np.empty(len(active), dtype=np.int64)
    batch_group: list[int] = []
    for group in plan.groups:
        labels = labels_of.get(group.group_index, np.zeros(group.n_students, dtype=np.int64))
        # number the group's batches by their first student's position: stable ids
        rank = first_position_rank(labels, group.n_batches)
        batch_of_student[group.student_index] = len(batch_group) + rank[labels]
        batch_group.extend([group.group_index] * group.n_batches)
    return Clustering(batch_of_student, np.asarray(batch_group, dtype=np.int64), workers_peak)
