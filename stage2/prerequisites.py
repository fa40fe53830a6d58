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

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stage2.config.settings import BatchingSettings
from stage2.contract.csvio import string_isin, string_positions
from stage2.errors import InputValidationError, ValidationIssue

#: reasons of a row of ``prerequisite_report.csv``
MISSING = "missing"
GRADE_BELOW_MINIMUM = "grade_below_minimum"
GRADE_NOT_CHECKABLE = "grade_not_checkable"
#: actions of a row of ``prerequisite_report.csv``
REPORTED = "reported"
EXCLUDED = "excluded"
REPORT_COLUMNS = ("student_id", "course_id", "missing_prerequisite_id", "reason", "action")
ENROLLMENTS_FILE = "student_course_enrollment.csv"
#: joins a student id and a course id into one key (a control character no id contains)
PAIR_SEPARATOR = "\x1f"


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
    students) against ``prerequisites`` and ``history`` (student_id, course_id[, grade]);
    ``students`` are the active students (their ``program_id`` chooses the policy).

    Raises :class:`InputValidationError` (``PREREQUISITE_NOT_MET``, exit 3) naming up to
    ``listed`` (student, course, prerequisite) rows, and counting the rest, when a student under
    ``strict`` has an ineligible enrollment. Joins and group-bys only: millions of rows in seconds.
    """
    policies = dict(settings.program_prerequisite_policies)
    empty = pd.DataFrame({c: pd.Series(dtype="string") for c in REPORT_COLUMNS})
    everyone_off = settings.prerequisite_policy == "off" and all(p == "off" for p in policies.values())
    if prerequisites is None or len(prerequisites) == 0 or everyone_off:
        return PrerequisiteCheck(empty, enrollments, None if everyone_off else 0, 0, 0,
                                 settings.prerequisite_policy, policies)
    mandatory = prerequisites
    if "is_mandatory" in prerequisites:
        mandatory = prerequisites.loc[prerequisites["is_mandatory"].fillna(True).to_numpy(dtype=bool)]
    minimum = (pd.to_numeric(mandatory["minimum_grade"], errors="coerce").astype("Float64")
               if "minimum_grade" in mandatory else pd.Series(pd.NA, index=mandatory.index, dtype="Float64"))
    has_minimum = (mandatory["minimum_grade"].notna() if "minimum_grade" in mandatory
                   else pd.Series(False, index=mandatory.index))
    needs = pd.DataFrame({
        "course_id": mandatory["course_id"].astype("string").to_numpy(),
        "missing_prerequisite_id": mandatory["prerequisite_course_id"].astype("string").to_numpy(),
        "minimum": minimum.to_numpy(dtype=np.float64, na_value=np.nan),
        "has_minimum": has_minimum.to_numpy(dtype=bool),
    })

    # the policy of each student, by programme
    student_policy = _student_policies(students, settings)
    concerned = string_isin(enrollments["course_id"], needs["course_id"])
    current = enrollments.loc[concerned, ["student_id", "course_id"]]
    policy_of_row = student_policy[np.maximum(string_positions(current["student_id"], students["student_id"]), 0)]
    current = current.loc[policy_of_row != "off"].astype("string")
    pairs = current.merge(needs, on="course_id", how="inner")

    taken = _best_grades(history)
    pairs = pairs.merge(taken, left_on=["student_id", "missing_prerequisite_id"],
                        right_on=["student_id", "course_id"], how="left", suffixes=("", "_taken"), indicator=True)
    taken_before = (pairs["_merge"] == "both").to_numpy()
    grade = pairs["grade"].to_numpy(dtype=np.float64, na_value=np.nan)
    minimum_value = pairs["minimum"].to_numpy(dtype=np.float64)
    comparable = taken_before & ~np.isnan(grade) & ~np.isnan(minimum_value)
    below = comparable & (grade < minimum_value)
    unchecked = taken_before & pairs["has_minimum"].to_numpy(dtype=bool) & ~comparable
    reason = np.select([~taken_before, below, unchecked], [MISSING, GRADE_BELOW_MINIMUM, GRADE_NOT_CHECKABLE], "")
    listed_rows = pairs.loc[reason != "", ["student_id", "course_id", "missing_prerequisite_id"]].copy()
    listed_rows["reason"] = reason[reason != ""]
    ineligible = listed_rows["reason"] != GRADE_NOT_CHECKABLE
    row_policy = student_policy[string_positions(listed_rows["student_id"], students["student_id"])]
    listed_rows["action"] = np.where(ineligible & (row_policy == "exclude"), EXCLUDED, REPORTED)
    report = listed_rows.sort_values(["student_id", "course_id", "missing_prerequisite_id"], kind="stable")
    report = report.reset_index(drop=True).astype("string")[list(REPORT_COLUMNS)]

    ineligible_sorted = (report["reason"] != GRADE_NOT_CHECKABLE).to_numpy()
    strict = report.loc[ineligible_sorted & (
        student_policy[string_positions(report["student_id"], students["student_id"])] == "strict")]
    if len(strict):
        raise _not_met(strict, listed)

    violation_pairs = report.loc[ineligible_sorted, ["student_id", "course_id"]].drop_duplicates()
    excluded_pairs = report.loc[report["action"] == EXCLUDED, ["student_id", "course_id"]].drop_duplicates()
    batched = enrollments
    if len(excluded_pairs):
        pair = enrollments["student_id"].astype("string") + PAIR_SEPARATOR + enrollments["course_id"].astype("string")
        left_out = string_isin(pair, excluded_pairs["student_id"] + PAIR_SEPARATOR + excluded_pairs["course_id"])
        batched = enrollments.loc[~left_out].reset_index(drop=True)
    return PrerequisiteCheck(
        report=report, batched=batched, violations=len(violation_pairs),
        not_checkable=int((~ineligible_sorted).sum()), excluded=len(excluded_pairs),
        policy=settings.prerequisite_policy, program_policies=policies,
    )


def _student_policies(students: pd.DataFrame, settings: BatchingSettings) -> np.ndarray:
    """Per active student, its programme's policy."""
    policy = np.full(len(students), settings.prerequisite_policy, dtype=object)
    for program_id, program_policy in settings.program_prerequisite_policies.items():
        policy[(students["program_id"] == program_id).fillna(False).to_numpy(dtype=bool)] = program_policy
    return policy


def _best_grades(history: pd.DataFrame) -> pd.DataFrame:
    """(student_id, course_id, grade) per course of a student's history, its best grade."""
    grade = history["grade"] if "grade" in history else pd.Series(np.nan, index=history.index, dtype="Float64")
    frame = pd.DataFrame({"student_id": history["student_id"].astype("string"),
                          "course_id": history["course_id"].astype("string"),
                          "grade": grade.astype("Float64")})
    return frame.groupby(["student_id", "course_id"], sort=False)["grade"].max().reset_index()


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
