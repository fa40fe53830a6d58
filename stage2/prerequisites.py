"""Prerequisite stage: which current enrollments lack a mandatory prerequisite in the student's
history, and what ``enrollment.prerequisites`` does about them.

Rule: a current enrollment of a student in course C is *eligible* when every mandatory
prerequisite P of C (``is_mandatory`` true or empty) is among the student's history (its
enrollments of an earlier term, :mod:`stage2.contract.history`). When the prerequisite row has a
numeric ``minimum_grade`` and the history row a numeric ``grade``, the grade must be at least the
minimum (the grade scale is the institution's own: both numbers are compared as they are). A
minimum grade that cannot be checked (no ``grade`` column or cell, or a minimum that is not a
number, such as a letter) is listed as ``grade_not_checkable`` and does not make the enrollment
ineligible. A course taken in several earlier terms counts with its best grade.

Policy, per student by programme (EAV ``enrollment.prerequisites`` for PROGRAM, else the
institution's): ``off`` (not checked, not listed), ``report`` (listed, batched as usual),
``exclude`` (listed, and left out of the batching features and of ``expected_students``),
``strict`` (the run fails with ``PREREQUISITE_NOT_MET`` naming the enrollments).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stage2.config.schema import PREREQUISITE_POLICIES
from stage2.config.settings import BatchingSettings
from stage2.contract.csvio import string_positions, take_strings
from stage2.errors import InputValidationError, Stage2Error, ValidationIssue

#: reasons of a row of ``prerequisite_report.csv``
MISSING = "missing"
GRADE_BELOW_MINIMUM = "grade_below_minimum"
GRADE_NOT_CHECKABLE = "grade_not_checkable"
#: actions of a row of ``prerequisite_report.csv``
REPORTED = "reported"
EXCLUDED = "excluded"
REPORT_COLUMNS = ("student_id", "course_id", "missing_prerequisite_id", "reason", "action")
#: the reasons by code (the report's ``reason`` column)
REASONS = (MISSING, GRADE_BELOW_MINIMUM, GRADE_NOT_CHECKABLE)
#: ``enrollment.prerequisites`` values as small integers, per student
POLICY_CODES = {policy: code for code, policy in enumerate(PREREQUISITE_POLICIES)}
ENROLLMENTS_FILE = "student_course_enrollment.csv"


@dataclass
class PrerequisiteCheck:
    """The outcome of :func:`check_prerequisites`."""

    #: one row per (student, course, prerequisite) found wanting: :data:`REPORT_COLUMNS`
    report: pd.DataFrame
    #: the current enrollments batched: the active ones minus the excluded pairs
    batched: pd.DataFrame
    #: current (student, course) enrollments of checked students lacking a mandatory
    #: prerequisite (or its minimum grade); ``None`` when no student is checked (policy off)
    violations: int | None
    #: (student, course, prerequisite) rows whose minimum grade could not be checked
    not_checkable: int
    #: (student, course) pairs left out of the batching
    excluded: int
    #: the institution-wide policy and the programmes' own
    policy: str
    program_policies: dict[str, str]
    #: ``PREREQUISITE_NOT_MET`` when a ``strict`` policy has an ineligible enrollment: recorded,
    #: not raised, so that the run reports it with every other strict problem
    #: (:mod:`stage2.pipeline.runner`)
    problems: list[Stage2Error] = field(default_factory=list)


def check_prerequisites(
    students: pd.DataFrame,
    enrollments: pd.DataFrame,
    history: pd.DataFrame,
    prerequisites: pd.DataFrame | None,
    settings: BatchingSettings,
    *,
    listed: int,
) -> PrerequisiteCheck:
    """Check every current enrollment (``enrollments``: student_id, course_id of the active
    students, one row per pair) against ``prerequisites`` and ``history`` (student_id,
    course_id[, grade]); ``students`` are the active students (their ``program_id`` chooses the
    policy). The report lists the rows in the order of the enrollments, each enrollment's
    prerequisites in the order of ``course_prerequisites.csv``.

    When a student under ``strict`` has an ineligible enrollment, ``problems`` holds an
    :class:`InputValidationError` (``PREREQUISITE_NOT_MET``, exit 3) naming up to ``listed``
    (student, course, prerequisite) rows and counting the rest; the pipeline's runner raises it
    with every other strict problem. Integer codes and sorted look-ups throughout: a
    million students' enrollments in seconds.
    """
    policies = dict(settings.program_prerequisite_policies)
    everyone_off = settings.prerequisite_policy == "off" and all(p == "off" for p in policies.values())
    if prerequisites is None or len(prerequisites) == 0 or everyone_off:
        empty = pd.DataFrame({c: pd.Series(dtype="string") for c in REPORT_COLUMNS})
        return PrerequisiteCheck(empty, enrollments, None if everyone_off else 0, 0, 0,
                                 settings.prerequisite_policy, policies)
    needs = _mandatory(prerequisites)
    need_courses = pd.Series(pd.unique(needs["course_id"]), dtype="string")
    prerequisite_ids = pd.Series(pd.unique(needs["prerequisite_course_id"]), dtype="string")
    need_course = string_positions(needs["course_id"], need_courses)
    need_prerequisite = string_positions(needs["prerequisite_course_id"], prerequisite_ids)
    # the needs of course code c are rows offsets[c] : offsets[c + 1] of the needs sorted by c
    by_course = np.argsort(need_course, kind="stable")
    need_count = np.bincount(need_course, minlength=len(need_courses))
    offsets = np.r_[0, np.cumsum(need_count)]

    # current enrollments in a course with a mandatory prerequisite, of students who are checked
    course_code = string_positions(enrollments["course_id"], need_courses)
    rows = np.flatnonzero(course_code >= 0)
    # enrollments and history are usually listed student by student: each run is looked up once
    student = string_positions(enrollments["student_id"].iloc[rows], students["student_id"], runs=True)
    policy = _student_policies(students, settings)[np.maximum(student, 0)]
    checked = (student >= 0) & (policy != POLICY_CODES["off"])
    rows, student, policy, course_code = rows[checked], student[checked], policy[checked], course_code[rows[checked]]
    # one entry per (enrollment, prerequisite)
    counts = need_count[course_code]
    entry_row = np.repeat(rows, counts)
    entry_student, entry_policy = np.repeat(student, counts), np.repeat(policy, counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    entry_need = by_course[np.repeat(offsets[course_code], counts) + within]
    key = entry_student.astype(np.int64) * len(prerequisite_ids) + need_prerequisite[entry_need]

    taken_keys, best_grade = _best_grades(history, students, prerequisite_ids)
    found_at = taken_keys.get_indexer(key)
    taken_before = found_at >= 0
    grade = np.r_[best_grade, np.nan][found_at]  # -1 (not taken) reads the NaN
    minimum = needs["minimum"].to_numpy()[entry_need]
    comparable = taken_before & ~np.isnan(grade) & ~np.isnan(minimum)
    below = comparable & (grade < minimum)
    unchecked = taken_before & needs["has_minimum"].to_numpy()[entry_need] & ~comparable
    reason = np.select([~taken_before, below, unchecked], [0, 1, 2], -1)
    shown = reason >= 0
    ineligible = shown & (reason != 2)

    excluded = ineligible & (entry_policy == POLICY_CODES["exclude"])
    # categorical columns: millions of rows name far fewer students and courses (codes, not strings)
    report = pd.DataFrame({
        "student_id": _categorical(entry_student[shown], students["student_id"]),
        "course_id": _categorical(np.repeat(course_code, counts)[shown], need_courses),
        "missing_prerequisite_id": _categorical(need_prerequisite[entry_need[shown]], prerequisite_ids),
        "reason": _categorical(reason[shown], pd.Series(REASONS)),
        "action": _categorical(excluded[shown].astype(np.int8), pd.Series([REPORTED, EXCLUDED])),
    })
    strict = ineligible[shown] & (entry_policy[shown] == POLICY_CODES["strict"])
    problems: list[Stage2Error] = [_not_met(report.loc[strict], listed)] if strict.any() else []
    excluded_rows = _distinct_sorted(entry_row[excluded])
    batched = enrollments
    if len(excluded_rows):
        keep = np.ones(len(enrollments), dtype=bool)
        keep[excluded_rows] = False
        batched = enrollments.loc[keep].reset_index(drop=True)
    return PrerequisiteCheck(
        report=report, batched=batched, violations=int(_distinct_sorted(entry_row[ineligible]).size),
        not_checkable=int((reason == 2).sum()), excluded=int(excluded_rows.size),
        policy=settings.prerequisite_policy, program_policies=policies, problems=problems,
    )


def _categorical(codes: np.ndarray, values: pd.Series) -> pd.Categorical:
    """``values`` (distinct strings) at ``codes`` (positions, none negative) as a categorical
    whose categories are the values used."""
    used, inverse = np.unique(codes, return_inverse=True)
    categories = pd.Index(take_strings(values.reset_index(drop=True), used.astype(np.int64)), dtype="string")
    return pd.Categorical.from_codes(inverse.reshape(-1), categories=categories)


def _mandatory(prerequisites: pd.DataFrame) -> pd.DataFrame:
    """The mandatory prerequisite rows (``is_mandatory`` true or empty) with their numeric
    ``minimum`` (NaN: none, or not a number) and whether a minimum was given (``has_minimum``)."""
    rows = prerequisites
    if "is_mandatory" in rows:
        rows = rows.loc[rows["is_mandatory"].fillna(True).to_numpy(dtype=bool)]
    given = rows["minimum_grade"] if "minimum_grade" in rows else pd.Series(pd.NA, index=rows.index, dtype="string")
    return pd.DataFrame({
        "course_id": rows["course_id"].astype("string").to_numpy(),
        "prerequisite_course_id": rows["prerequisite_course_id"].astype("string").to_numpy(),
        "minimum": pd.to_numeric(given, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan),
        "has_minimum": given.notna().to_numpy(dtype=bool),
    }).astype({"course_id": "string", "prerequisite_course_id": "string"})


def _student_policies(students: pd.DataFrame, settings: BatchingSettings) -> np.ndarray:
    """Per active student, its programme's policy as a :data:`POLICY_CODES` code."""
    policy = np.full(len(students), POLICY_CODES[settings.prerequisite_policy], dtype=np.int8)
    for program_id, program_policy in settings.program_prerequisite_policies.items():
        policy[(students["program_id"] == program_id).fillna(False).to_numpy(dtype=bool)] = POLICY_CODES[program_policy]
    return policy


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values of a non-decreasing array (``np.unique`` without its sort)."""
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _best_grades(history: pd.DataFrame, students: pd.DataFrame,
                 prerequisite_ids: pd.Series) -> tuple[pd.Index, np.ndarray]:
    """The distinct keys ``student position × len(prerequisite_ids) + prerequisite code`` of the
    history rows in a prerequisite course, and each key's best grade (NaN: none given)."""
    course = string_positions(history["course_id"], prerequisite_ids)
    rows = np.flatnonzero(course >= 0)
    student = string_positions(history["student_id"].iloc[rows], students["student_id"], runs=True)
    known = student >= 0
    keys = student[known].astype(np.int64) * len(prerequisite_ids) + course[rows[known]]
    if "grade" not in history:
        distinct = pd.Index(pd.unique(keys))
        return distinct, np.full(len(distinct), np.nan)
    grades = history["grade"].iloc[rows[known]].to_numpy(dtype=np.float64, na_value=np.nan)
    best = pd.Series(grades).groupby(keys, sort=False).max()
    return best.index, best.to_numpy(dtype=np.float64)


def _not_met(strict: pd.DataFrame, listed: int) -> InputValidationError:
    """``PREREQUISITE_NOT_MET`` naming the first ``listed`` rows and counting the others."""
    issues = [
        ValidationIssue(
            "PREREQUISITE_NOT_MET", ENROLLMENTS_FILE,
            f"student {student!r} is enrolled in {course!r} without its mandatory prerequisite "
            f"{prerequisite!r} ({str(reason).replace('_', ' ')})",
            column="course_id",
        )
        for student, course, prerequisite, reason in strict.head(listed)[
            ["student_id", "course_id", "missing_prerequisite_id", "reason"]].itertuples(index=False)
    ]
    rest = len(strict) - listed
    if rest > 0:
        pairs = len(strict[["student_id", "course_id"]].drop_duplicates())
        issues.append(ValidationIssue(
            "PREREQUISITE_NOT_MET", ENROLLMENTS_FILE,
            f"{rest} more missing prerequisite(s) like the ones above ({pairs} enrollments in all; "
            "every one is in prerequisite_report.csv of a run with enrollment.prerequisites=report)",
            column="course_id"))
    return InputValidationError(issues)
