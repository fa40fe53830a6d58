"""The batching stages as a table: validation → configuration → batch sizing → clustering →
room/shift allocation → membership → enrollment → metrics.

Each entry names a plain function of a stage module (or a thin adapter here that picks its
arguments from the configuration), its inputs and its outputs. The catalog starts with
``config`` (a :class:`~stage2.config.Stage2Config`), ``input_dir`` and ``run`` (the tracking
run, for tags); :data:`BATCHING_STAGES` compute a batching without writing any output,
:data:`DRY_RUN_STAGES` stop after the plan. Publishing (CSVs, reports, MLflow) is
:mod:`stage2.pipeline.publish`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stage2.allocation import Allocation, allocate_rooms, home_rooms
from stage2.clustering.groups import Clustering, cluster_groups
from stage2.config import BatchingSettings, build_settings
from stage2.config.schema import Stage2Config
from stage2.contract import InstitutionData, load_institution, validate_output_tables
from stage2.contract.invariants import check_invariants
from stage2.enrollment import build_batch_course_enrollment
from stage2.membership import build_batches, build_membership
from stage2.metrics import QualityReport, compute_quality
from stage2.pipeline.runner import Catalog, Stage
from stage2.runlog import audit
from stage2.sizing import BatchPlan, plan_batches


def validate_input(config: Stage2Config, input_dir: Path) -> InstitutionData:
    """Gate 1, the configuration alone (its errors need no data); gate 2, the input."""
    build_settings(config)
    return load_institution(input_dir)


def configure(config: Stage2Config, data: InstitutionData) -> tuple[BatchingSettings, pd.DataFrame]:
    """The settings with the institution's EAV overrides, and the rooms usable as home rooms."""
    return build_settings(config, data), home_rooms(data.rooms, config.resources.room_types)


def size_groups(data: InstitutionData, settings: BatchingSettings, rooms: pd.DataFrame) -> BatchPlan:
    largest_room = int(rooms["capacity"].max()) if len(rooms) else None
    return plan_batches(data.active_students, settings, largest_room)


def cluster(data: InstitutionData, plan: BatchPlan, settings: BatchingSettings, config: Stage2Config) -> Clustering:
    return cluster_groups(data.active_students, data.active_enrollments, plan, settings, config.algorithm,
                          n_jobs=config.n_jobs)


def shift_preference_counts(active: pd.DataFrame, batch_of_student: np.ndarray, n_batches: int,
                            shifts: pd.DataFrame) -> np.ndarray:
    """``counts[b, s]``: members of batch ``b`` whose preferred shift is ``shifts`` row ``s``."""
    preferred = pd.Index(active["preferred_shift"].astype("string").fillna(""))
    shift_pos = pd.Index(shifts["shift_id"].astype(str)).get_indexer(preferred)
    has = shift_pos >= 0
    counts = np.zeros((n_batches, len(shifts)), dtype=np.int64)
    np.add.at(counts, (batch_of_student[has], shift_pos[has]), 1)
    return counts


def allocate(clustering: Clustering, plan: BatchPlan, data: InstitutionData, rooms: pd.DataFrame,
             settings: BatchingSettings, config: Stage2Config) -> Allocation:
    """One (room, shift) per batch (:func:`stage2.allocation.allocate_rooms`)."""
    n_batches = int(clustering.batch_group.size)
    if not config.resources.allocate_rooms:
        return Allocation([None] * n_batches, [None] * n_batches, np.zeros(n_batches, np.int64), "off")
    # batches are named by group and number here: their codes are made in the next stage
    number_in_group = np.arange(n_batches) - np.searchsorted(clustering.batch_group, clustering.batch_group)
    labels = [f"{plan.label(plan.groups[g])} batch {j + 1}"
              for g, j in zip(clustering.batch_group, number_in_group, strict=True)]
    sizes = np.bincount(clustering.batch_of_student, minlength=n_batches)
    preferences = shift_preference_counts(data.active_students, clustering.batch_of_student, n_batches, data.shifts)
    allocation = allocate_rooms(sizes, preferences, rooms, data.shifts, settings,
                                shift_preference_weight=config.resources.shift_preference_weight, batch_labels=labels)
    audit("allocation", "allocation (%s): %d of %d batches placed", allocation.method, int(allocation.placed.sum()),
          n_batches, method=allocation.method, placed=int(allocation.placed.sum()), n_batches=n_batches)
    return allocation


def assign_members(data: InstitutionData, clustering: Clustering, plan: BatchPlan, allocation: Allocation,
                   settings: BatchingSettings, config: Stage2Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``student_batches`` and ``batch_student_membership``."""
    institution = config.institution
    batches = build_batches(
        data.active_students, data.programs, clustering.batch_of_student, clustering.batch_group, plan, allocation,
        timestamp=settings.as_of, tenant_id=institution.tenant_id if institution else None,
        institution_id=institution.institution_id if institution else None,
    )
    membership = build_membership(data.active_students, batches, clustering.batch_of_student, timestamp=settings.as_of)
    return batches, membership


def enroll(batches: pd.DataFrame, membership: pd.DataFrame, data: InstitutionData,
           settings: BatchingSettings) -> pd.DataFrame:
    """``batch_course_enrollment``."""
    return build_batch_course_enrollment(batches, membership, data.active_enrollments, data.courses,
                                         shared_threshold=settings.shared_threshold, timestamp=settings.as_of)


def measure(batches: pd.DataFrame, membership: pd.DataFrame, batch_courses: pd.DataFrame, data: InstitutionData,
            settings: BatchingSettings, config: Stage2Config) -> QualityReport:
    """The quality measures; then every contract invariant and the output schemas are checked
    (:class:`~stage2.errors.InvariantViolation` otherwise)."""
    quality = compute_quality(
        batches, membership, batch_courses, data.active_students, data.active_enrollments, settings,
        thresholds=config.metrics.thresholds, silhouette_sample_size=config.metrics.silhouette_sample_size,
    )
    check_invariants(batches, membership, batch_courses, data.active_students, data.active_enrollments,
                     hard_rule_failures=int(quality.metrics["hard_constraint_violations"] or 0))
    validate_output_tables(batches, membership, batch_courses)
    return quality


# ----------------------------------------------------------------------------- audit trail


def _input_read(catalog: Catalog) -> None:
    data: InstitutionData = catalog["data"]
    catalog["run"].set_tags({"input_digest": data.digest})
    audit("input_read", "read %s: %d students (%d inactive), %d courses, %d rooms, %d shifts", data.input_dir,
          len(data.students), data.n_inactive, len(data.courses), len(data.rooms), len(data.shifts),
          input_dir=str(data.input_dir), digest=data.digest, n_students=len(data.students), n_inactive=data.n_inactive)


def _overrides_applied(catalog: Catalog) -> None:
    for override in catalog["settings"].overrides:
        audit("eav_override", "EAV override %s for %s %s = %r", override.parameter_code, override.entity_type,
              override.entity_id, override.value, parameter_code=override.parameter_code,
              entity_type=override.entity_type, entity_id=override.entity_id, value=override.value)


def _groups_planned(catalog: Catalog) -> None:
    plan: BatchPlan = catalog["plan"]
    for group in plan.groups:
        audit("group_planned", "group %s: %d students -> %d batches of %s (%s)", plan.label(group),
              group.n_students, group.n_batches, group.batch_sizes.tolist(), group.status,
              group=plan.label(group), n_students=group.n_students, n_batches=group.n_batches,
              status=group.status, reason=group.reason)


#: validation, configuration and the plan: what a dry run computes
DRY_RUN_STAGES: tuple[Stage, ...] = (
    Stage("validation", validate_input, ("config", "input_dir"), ("data",), after=_input_read),
    Stage("configuration", configure, ("config", "data"), ("settings", "rooms"), after=_overrides_applied),
    Stage("sizing", size_groups, ("data", "settings", "rooms"), ("plan",), checkpoint=True, after=_groups_planned),
)

#: every stage that computes a batching; nothing is written but checkpoints
BATCHING_STAGES: tuple[Stage, ...] = DRY_RUN_STAGES + (
    Stage("clustering", cluster, ("data", "plan", "settings", "config"), ("clustering",), checkpoint=True),
    Stage("allocation", allocate, ("clustering", "plan", "data", "rooms", "settings", "config"), ("allocation",),
          checkpoint=True),
    Stage("membership", assign_members, ("data", "clustering", "plan", "allocation", "settings", "config"),
          ("batches", "membership")),
    Stage("enrollment", enroll, ("batches", "membership", "data", "settings"), ("batch_courses",)),
    Stage("metrics", measure, ("batches", "membership", "batch_courses", "data", "settings", "config"), ("quality",)),
)
