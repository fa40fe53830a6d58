"""The batching stages as a table: validation → configuration → prerequisites → batch sizing →
course features → clustering → room/shift allocation → membership → enrollment → faculty →
metrics.

Each entry names a plain function of a stage module (or a thin adapter here that picks its
arguments from the configuration), its inputs and its outputs. The catalog starts with
``config`` (a :class:`~stage2.config.Stage2Config`), ``input_dir`` and ``run`` (the tracking
run, for tags); :data:`BATCHING_STAGES` compute a batching without writing any output,
:data:`DRY_RUN_STAGES` stop after the plan. Publishing (CSVs, reports, MLflow) is
:mod:`stage2.pipeline.publish`. Under ``strict=true`` the stages marked ``records_problems``
(sizing, allocation, faculty) record their problems and the run goes on; the runner fails once
with all of them (:mod:`stage2.pipeline.runner`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stage2.allocation import Allocation, allocate_rooms, capacity_threshold, home_rooms
from stage2.clustering.groups import Clustering, cluster_groups
from stage2.config import BatchingSettings, build_settings
from stage2.config.schema import Stage2Config
from stage2.config.settings import seats_admitted
from stage2.contract import InstitutionData, load_institution, validate_output_tables
from stage2.contract.csvio import string_positions
from stage2.contract.invariants import check_invariants
from stage2.enrollment import build_batch_course_enrollment
from stage2.faculty import FacultyCheck, check_faculty
from stage2.features import CourseMatrix, course_matrix, course_set_digests
from stage2.membership import COURSE_SET_COLUMN, DEFAULT_TENANT, build_batches, build_membership
from stage2.metrics import QualityReport, compute_quality
from stage2.pipeline.runner import Catalog, Stage
from stage2.prerequisites import PrerequisiteCheck, check_prerequisites
from stage2.rebatching import (
    CHANGED,
    FORCED,
    NEW,
    UNCHANGED,
    PreviousRun,
    Rebatching,
    RebatchOutcome,
    RebatchPlan,
    course_sse,
    keep_rooms,
    load_previous_run,
    pinned_ids,
    plan_rebatch,
    rebatch_clustering,
    rebatch_codes,
    rebatch_outcome,
)
from stage2.rebatching.previous import MEMBERSHIP as MEMBERSHIP_FILE
from stage2.runlog import audit
from stage2.sizing import BatchPlan, plan_batches


def validate_input(config: Stage2Config, input_dir: Path) -> InstitutionData:
    """Gate 1, the configuration alone (its errors need no data); gate 2, the input."""
    build_settings(config)
    return load_institution(input_dir)


def configure(config: Stage2Config, data: InstitutionData) -> tuple[BatchingSettings, pd.DataFrame]:
    """The settings with the institution's EAV overrides, and the rooms usable as home rooms."""
    return build_settings(config, data), home_rooms(data.rooms, config.resources.room_types)


def prerequisites(data: InstitutionData, settings: BatchingSettings,
                  config: Stage2Config) -> tuple[PrerequisiteCheck, pd.DataFrame]:
    """The prerequisite check (:func:`stage2.prerequisites.check_prerequisites`) and the
    enrollments batched: the active students' current ones, minus those ``exclude`` leaves out.
    A ``strict`` policy's ``PREREQUISITE_NOT_MET`` is raised here, unless ``strict=true``, where
    the runner reports it with every other strict problem."""
    check = check_prerequisites(data.active_students, data.active_enrollments, data.history, data.prerequisites,
                                settings, listed=config.enrollment.prerequisites_listed)
    if check.problems and not config.strict:  # only strict=true runs on to collect every problem
        raise check.problems[0]
    return check, check.batched


def size_groups(data: InstitutionData, settings: BatchingSettings, rooms: pd.DataFrame) -> BatchPlan:
    largest_room = int(rooms["capacity"].max()) if len(rooms) else None
    return plan_batches(data.active_students, settings, largest_room)


def course_features(data: InstitutionData, enrollments: pd.DataFrame) -> tuple[CourseMatrix, np.ndarray]:
    """The active students' course matrix (of the batched ``enrollments``) and course-set
    digests, computed once for the clustering, the membership table and a re-batch's comparisons."""
    courses = course_matrix(data.active_students["student_id"], enrollments)
    return courses, course_set_digests(courses)


def cluster(data: InstitutionData, plan: BatchPlan, settings: BatchingSettings, config: Stage2Config,
            courses: CourseMatrix, enrollments: pd.DataFrame) -> Clustering:
    return cluster_groups(data.active_students, enrollments, plan, settings, config.algorithm,
                          parallel=config.parallel, courses=courses.matrix)


def shift_preference_counts(active: pd.DataFrame, batch_of_student: np.ndarray, n_batches: int,
                            shifts: pd.DataFrame) -> np.ndarray:
    """``counts[b, s]``: members of batch ``b`` whose preferred shift is ``shifts`` row ``s``."""
    preferred = pd.Index(active["preferred_shift"].astype("string").fillna(""))
    shift_pos = pd.Index(shifts["shift_id"].astype(str)).get_indexer(preferred)
    has = shift_pos >= 0
    counts = np.zeros((n_batches, len(shifts)), dtype=np.int64)
    np.add.at(counts, (batch_of_student[has], shift_pos[has]), 1)
    return counts


def batch_labels(clustering: Clustering, plan: BatchPlan) -> list[str]:
    """``<group> batch <n>`` per batch, for messages of the allocation (codes are made later,
    in the membership stage)."""
    number_in_group = np.arange(clustering.batch_group.size) - np.searchsorted(clustering.batch_group,
                                                                                clustering.batch_group)
    return [f"{plan.label(plan.groups[g])} batch {j + 1}"
            for g, j in zip(clustering.batch_group, number_in_group, strict=True)]


def allocate(clustering: Clustering, plan: BatchPlan, data: InstitutionData, rooms: pd.DataFrame,
             settings: BatchingSettings, config: Stage2Config) -> Allocation:
    """One (room, shift) per batch (:func:`stage2.allocation.allocate_rooms`)."""
    n_batches = int(clustering.batch_group.size)
    if not config.resources.allocate_rooms:
        return Allocation([None] * n_batches, [None] * n_batches, np.zeros(n_batches, np.int64), "off")
    labels = batch_labels(clustering, plan)
    sizes = np.bincount(clustering.batch_of_student, minlength=n_batches)
    preferences = shift_preference_counts(data.active_students, clustering.batch_of_student, n_batches, data.shifts)
    allocation = allocate_rooms(sizes, preferences, rooms, data.shifts, settings,
                                shift_preference_weight=config.resources.shift_preference_weight, batch_labels=labels)
    audit("allocation", "allocation (%s): %d of %d batches placed", allocation.method, int(allocation.placed.sum()),
          n_batches, method=allocation.method, placed=int(allocation.placed.sum()), n_batches=n_batches)
    return allocation


def assign_members(data: InstitutionData, clustering: Clustering, plan: BatchPlan, allocation: Allocation,
                   course_sets: np.ndarray, settings: BatchingSettings,
                   config: Stage2Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``student_batches`` and ``batch_student_membership``."""
    institution = config.institution
    batches = build_batches(
        data.active_students, data.programs, clustering.batch_of_student, clustering.batch_group, plan, allocation,
        timestamp=settings.as_of, tenant_id=institution.tenant_id if institution else None,
        institution_id=institution.institution_id if institution else None,
    )
    membership = build_membership(data.active_students, batches, clustering.batch_of_student, timestamp=settings.as_of,
                                  course_sets=course_sets)
    return batches, membership


def enroll(batches: pd.DataFrame, membership: pd.DataFrame, data: InstitutionData, enrollments: pd.DataFrame,
           settings: BatchingSettings) -> pd.DataFrame:
    """``batch_course_enrollment`` of the batched ``enrollments``."""
    return build_batch_course_enrollment(batches, membership, enrollments, data.courses,
                                         shared_threshold=settings.shared_threshold, timestamp=settings.as_of)


def check_teaching_load(batch_courses: pd.DataFrame, data: InstitutionData, settings: BatchingSettings,
                        config: Stage2Config) -> FacultyCheck:
    """Can the competent faculty teach every section (:func:`stage2.faculty.check_faculty`)?"""
    faculty = config.resources.faculty
    check = check_faculty(batch_courses, data.faculty, data.faculty_competencies, session_hours=faculty.session_hours,
                          default_sessions_per_week=faculty.default_sessions_per_week,
                          min_competency=faculty.min_competency, strict=settings.strict)
    if check.checked:
        audit("faculty_check", "faculty check: %.1f of %.1f section-hours a week coverable, %d course(s) short",
              check.hours_covered, check.hours_needed, len(check.short_courses()), hours_needed=check.hours_needed,
              hours_covered=check.hours_covered, coverage=check.coverage)
    else:
        audit("faculty_check", "%s", check.reason, reason=check.reason)
    return check


def measure(batches: pd.DataFrame, membership: pd.DataFrame, batch_courses: pd.DataFrame, data: InstitutionData,
            enrollments: pd.DataFrame, prerequisite_check: PrerequisiteCheck, settings: BatchingSettings,
            config: Stage2Config, faculty: FacultyCheck) -> QualityReport:
    """The quality measures (with ``faculty_coverage`` when the faculty check ran); then every
    contract invariant and the output schemas are checked (:class:`~stage2.errors.InvariantViolation`
    otherwise)."""
    quality = compute_quality(
        batches, membership, batch_courses, data.active_students, enrollments, settings,
        thresholds=config.metrics.thresholds, silhouette_sample_size=config.metrics.silhouette_sample_size,
        prerequisite_violations=prerequisite_check.violations,
    )
    quality.metrics.update(faculty.metrics)
    check_invariants(batches, membership, batch_courses, data.active_students, enrollments,
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


def _prerequisites_checked(catalog: Catalog) -> None:
    check: PrerequisiteCheck = catalog["prerequisites"]
    audit("prerequisites_checked", "prerequisites (%s%s): %s enrollments without a mandatory prerequisite, %d "
          "excluded, %d minimum grades not checkable", check.policy,
          f", per programme {check.program_policies}" if check.program_policies else "", check.violations,
          check.excluded, check.not_checkable, policy=check.policy, program_policies=check.program_policies,
          violations=check.violations, excluded=check.excluded, not_checkable=check.not_checkable)


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
    Stage("prerequisites", prerequisites, ("data", "settings", "config"), ("prerequisites", "enrollments"),
          after=_prerequisites_checked, records_problems=True),
    Stage("sizing", size_groups, ("data", "settings", "rooms"), ("plan",), checkpoint=True, after=_groups_planned,
          records_problems=True),
)

#: every stage that computes a batching; nothing is written but checkpoints
BATCHING_STAGES: tuple[Stage, ...] = DRY_RUN_STAGES + (
    Stage("features", course_features, ("data", "enrollments"), ("courses", "course_sets")),
    Stage("clustering", cluster, ("data", "plan", "settings", "config", "courses", "enrollments"), ("clustering",),
          checkpoint=True),
    Stage("allocation", allocate, ("clustering", "plan", "data", "rooms", "settings", "config"), ("allocation",),
          checkpoint=True, records_problems=True),
    Stage("membership", assign_members, ("data", "clustering", "plan", "allocation", "course_sets", "settings",
                                         "config"), ("batches", "membership")),
    Stage("enrollment", enroll, ("batches", "membership", "data", "enrollments", "settings"), ("batch_courses",)),
    Stage("faculty", check_teaching_load, ("batch_courses", "data", "settings", "config"), ("faculty",),
          records_problems=True),
    Stage("metrics", measure, ("batches", "membership", "batch_courses", "data", "enrollments", "prerequisites",
                               "settings", "config", "faculty"), ("quality",)),
)
#: the stages after membership, shared by a fresh run and a re-batch
_AFTER_MEMBERSHIP = BATCHING_STAGES[-3:]


# ----------------------------------------------------------------------------- re-batching


def this_run_tenants(config: Stage2Config, data: InstitutionData) -> set[str]:
    """The tenant ids this run's batches get (:func:`stage2.membership.build_batches`)."""
    if config.institution and config.institution.tenant_id:
        return {config.institution.tenant_id}
    active = data.active_students
    if "tenant_id" not in active.columns:
        return {DEFAULT_TENANT}
    return set(active["tenant_id"].astype("string").fillna(DEFAULT_TENANT).unique().tolist())


def read_previous(config: Stage2Config, data: InstitutionData) -> PreviousRun:
    """The previous run named by ``rebatch.previous_run`` (checked; same tenant)."""
    return load_previous_run(str(config.rebatch.previous_run), tenants=this_run_tenants(config, data))


def read_pinned(path: str | None, active_ids: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Per active student, whether ``rebatch.pinned`` names it; warnings for unknown ids."""
    if not path:
        return np.zeros(len(active_ids), dtype=bool), []
    ids = pinned_ids(Path(path))
    known = active_ids.astype(str)
    unknown = sorted(set(ids) - set(known))
    warnings = [f"rebatch.pinned: {len(unknown)} id(s) are not active students: {', '.join(unknown[:10])}"
                f"{' ...' if len(unknown) > 10 else ''}"] if unknown else []
    return known.isin(ids).to_numpy(), warnings


def previous_room_seats(previous: PreviousRun, rooms: pd.DataFrame, settings: BatchingSettings) -> np.ndarray:
    """Per previous batch, the seats of its room if that is still a home room, else -1."""
    position = string_positions(previous.batches["room_id"].astype("string").fillna(""), rooms["room_id"])
    seats = seats_admitted(rooms["capacity"].to_numpy(dtype=np.int64), capacity_threshold(settings))
    return np.where(position >= 0, np.asarray(seats, dtype=np.int64)[np.maximum(position, 0)], -1)


def previous_groups(previous: PreviousRun) -> np.ndarray | None:
    """Per previous batch, its mixable group's label (``group_key``, which stage2 writes), or
    ``None`` when the previous run lacks the column."""
    if "group_key" not in previous.batches.columns:
        return None
    return previous.batches["group_key"].astype("string").fillna("").to_numpy(dtype=object)


def classify(data: InstitutionData, plan: BatchPlan, settings: BatchingSettings, rooms: pd.DataFrame,
             previous: PreviousRun, course_sets: np.ndarray, config: Stage2Config) -> RebatchPlan:
    """Each active student's class and each group's kept, new and dissolved batches
    (:func:`stage2.rebatching.plan.plan_rebatch`)."""
    active = data.active_students
    student_ids = active["student_id"].astype(str)
    previous_batch = string_positions(student_ids, previous.membership["student_id"])
    previous_batch = np.where(previous_batch >= 0, previous.batch_row[np.maximum(previous_batch, 0)], -1)
    warnings: list[str] = []
    if previous.has_course_sets:
        old = previous.membership.set_index(previous.membership["student_id"].astype(str))[COURSE_SET_COLUMN]
        old_digest = old.reindex(student_ids).astype("string").fillna("").to_numpy()
        courses_changed = (previous_batch >= 0) & (old_digest != course_sets)
    else:
        courses_changed = np.zeros(len(active), dtype=bool)
        warnings.append(f"the previous run's {MEMBERSHIP_FILE} has no {COURSE_SET_COLUMN} column (a run of an "
                        "older stage2): course changes are not detected, returning students count as unchanged")
    pinned, pin_warnings = read_pinned(config.rebatch.pinned, active["student_id"])
    seats = previous_room_seats(previous, rooms, settings) if config.resources.allocate_rooms else None
    rebatch_plan = plan_rebatch(active, plan, settings, previous_batch, courses_changed, len(previous.batches), pinned,
                                seats, config.rebatch.room_overflow_penalty, previous_groups(previous))
    rebatch_plan.warnings[:0] = warnings + pin_warnings
    audit("rebatch_classified", "re-batch against %s: %d unchanged, %d changed, %d new, %d forced; %d batches "
          "dissolved", previous.directory, rebatch_plan.count(UNCHANGED), rebatch_plan.count(CHANGED),
          rebatch_plan.count(NEW), rebatch_plan.count(FORCED), len(rebatch_plan.dissolved),
          unchanged=rebatch_plan.count(UNCHANGED), changed=rebatch_plan.count(CHANGED), new=rebatch_plan.count(NEW),
          forced=rebatch_plan.count(FORCED), dissolved=len(rebatch_plan.dissolved))
    return rebatch_plan


def recluster(data: InstitutionData, plan: BatchPlan, rebatch_plan: RebatchPlan, settings: BatchingSettings,
              config: Stage2Config, courses: CourseMatrix) -> tuple[Rebatching, Clustering]:
    rebatching = rebatch_clustering(data.active_students, courses.matrix, plan, rebatch_plan, settings, config)
    return rebatching, rebatching.clustering


def reallocate(rebatching: Rebatching, plan: BatchPlan, data: InstitutionData, rooms: pd.DataFrame,
               settings: BatchingSettings, previous: PreviousRun, config: Stage2Config) -> Allocation:
    """Kept batches keep their (room, shift); the rest are allocated among the free slots
    (:func:`stage2.rebatching.identity.keep_rooms`)."""
    clustering = rebatching.clustering
    n_batches = int(clustering.batch_group.size)
    if not config.resources.allocate_rooms:
        return Allocation([None] * n_batches, [None] * n_batches, np.zeros(n_batches, np.int64), "off")
    sizes = np.bincount(clustering.batch_of_student, minlength=n_batches)
    preferences = shift_preference_counts(data.active_students, clustering.batch_of_student, n_batches, data.shifts)
    allocation = keep_rooms(sizes, rebatching.previous_row, previous, preferences, rooms, data.shifts, settings,
                            shift_preference_weight=config.resources.shift_preference_weight,
                            batch_labels=batch_labels(clustering, plan))
    audit("allocation", "allocation (%s): %d of %d batches placed", allocation.method, int(allocation.placed.sum()),
          n_batches, method=allocation.method, placed=int(allocation.placed.sum()), n_batches=n_batches)
    return allocation


def reassign_members(data: InstitutionData, rebatching: Rebatching, plan: BatchPlan, allocation: Allocation,
                     previous: PreviousRun, course_sets: np.ndarray, settings: BatchingSettings,
                     config: Stage2Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``student_batches`` and ``batch_student_membership`` with the kept batches' codes (and
    ids); a student who stays in its batch keeps its membership's assignment time."""
    clustering = rebatching.clustering
    codes = rebatch_codes(plan, clustering.batch_group, rebatching.previous_row, previous)
    institution = config.institution
    batches = build_batches(
        data.active_students, data.programs, clustering.batch_of_student, clustering.batch_group, plan, allocation,
        timestamp=settings.as_of, tenant_id=institution.tenant_id if institution else None,
        institution_id=institution.institution_id if institution else None, codes=codes,
    )
    membership = build_membership(data.active_students, batches, clustering.batch_of_student, timestamp=settings.as_of,
                                  course_sets=course_sets)
    old = previous.membership
    for column in ("assignment_timestamp", "enrollment_date"):
        if column in old.columns:
            before = old.set_index(old["batch_id"].astype(str) + "\x1f" + old["student_id"].astype(str))[column]
            kept = before.reindex(membership["batch_id"].astype(str) + "\x1f" + membership["student_id"].astype(str))
            membership[column] = kept.where(kept.notna(), membership[column].to_numpy()).to_numpy()
    return batches, membership


def compare_with_previous(data: InstitutionData, rebatching: Rebatching, rebatch_plan: RebatchPlan,
                          batches: pd.DataFrame, previous: PreviousRun, plan: BatchPlan, settings: BatchingSettings,
                          config: Stage2Config, courses: CourseMatrix, enrollments: pd.DataFrame) -> RebatchOutcome:
    """``rebatch_diff.csv`` and the ``rebatch`` report figures; with ``rebatch.fresh_reference``
    also a fresh clustering's course SSE."""
    fresh_sse = None
    if config.rebatch.fresh_reference:
        fresh = cluster(data, plan, settings, config, courses, enrollments)
        fresh_sse = course_sse(courses.matrix, fresh.batch_of_student)
    return rebatch_outcome(data.students, data.active_students, courses.matrix, batches,
                           rebatching.clustering.batch_of_student, rebatching.previous_row, rebatch_plan, previous,
                           fresh_course_sse=fresh_sse)


#: a re-batch against ``rebatch.previous_run``: the previous run is read (and checked, also in a
#: dry run) after the input, the students classified after sizing; clustering, allocation and
#: membership keep what they can
REBATCH_DRY_RUN_STAGES: tuple[Stage, ...] = (
    DRY_RUN_STAGES[0],
    DRY_RUN_STAGES[1],
    DRY_RUN_STAGES[2],
    Stage("previous_run", read_previous, ("config", "data"), ("previous",)),
    DRY_RUN_STAGES[3],
)
REBATCH_STAGES: tuple[Stage, ...] = REBATCH_DRY_RUN_STAGES + (
    BATCHING_STAGES[len(DRY_RUN_STAGES)],  # features
    Stage("classification", classify, ("data", "plan", "settings", "rooms", "previous", "course_sets", "config"),
          ("rebatch_plan",)),
    Stage("clustering", recluster, ("data", "plan", "rebatch_plan", "settings", "config", "courses"),
          ("rebatching", "clustering")),
    Stage("allocation", reallocate, ("rebatching", "plan", "data", "rooms", "settings", "previous", "config"),
          ("allocation",), records_problems=True),
    Stage("membership", reassign_members, ("data", "rebatching", "plan", "allocation", "previous", "course_sets",
                                           "settings", "config"), ("batches", "membership")),
    *_AFTER_MEMBERSHIP,
    Stage("comparison", compare_with_previous, ("data", "rebatching", "rebatch_plan", "batches", "previous", "plan",
                                                "settings", "config", "courses", "enrollments"), ("rebatch",)),
)
