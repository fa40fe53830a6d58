"""Enrollment stage: the ``batch_course_enrollment`` table — one row per (batch, course) that
at least one member takes.

- ``expected_students``: members of the batch enrolled in the course;
- ``enrollment_status``: ``ENROLLED`` when ``expected_students / student_count`` is at least
  ``enrollment.shared_threshold`` (the batch attends the course together), else ``PARTIAL``;
- ``capacity_utilization``: ``expected_students / capacity_allocated`` — the share of the
  batch's home-room seats the course's attendees fill (empty when the batch has no room);
- ``priority_level``: 1 CORE, 2 PRACTICAL, 3 ELECTIVE, 4 SKILL_ENHANCEMENT / VALUE_ADDED;
- ``is_mandatory``: the course is CORE; ``credit_hours`` and ``credits_allocated``: the
  course's credits; ``sessions_per_week``: its ``max_sessions_per_week``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from stage2.contract.csvio import string_positions
from stage2.contract.schemas import BATCH_COURSE_ENROLLMENT_COLUMNS
from stage2.identifiers import uuid_texts

PRIORITY_BY_COURSE_TYPE = {"CORE": 1, "PRACTICAL": 2, "ELECTIVE": 3, "SKILL_ENHANCEMENT": 4, "VALUE_ADDED": 4}
STATUS_ENROLLED = "ENROLLED"
STATUS_PARTIAL = "PARTIAL"


def count_batch_courses(
    batch_ids: pd.Series, membership: pd.DataFrame, enrollments: pd.DataFrame
) -> pd.DataFrame:
    """``e_bc`` from the tables: members of each batch enrolled in each course.

    Returns ``batch_position`` (row of ``batch_ids``), ``course_id`` and
    ``expected_students``, ordered by batch position then course id. Enrollments of students
    who are not members are ignored. Integer codes throughout: millions of rows in seconds.
    """
    member_of_enrollment = string_positions(enrollments["student_id"], membership["student_id"])
    batch_of_member = string_positions(membership["batch_id"], batch_ids)
    keep = member_of_enrollment >= 0
    batch_position = batch_of_member[member_of_enrollment[keep]]
    # codes of the whole column (no text copied out of Arrow); unused codes change no key's order
    course_code, course_ids = pd.factorize(enrollments["course_id"], sort=True)
    course_code = course_code[keep]
    key = batch_position * len(course_ids) + course_code
    unique_keys, counts = np.unique(key, return_counts=True)
    return pd.DataFrame(
        {
            "batch_position": unique_keys // max(len(course_ids), 1),
            "course_id": np.asarray(course_ids, dtype=object)[unique_keys % max(len(course_ids), 1)],
            "expected_students": counts.astype(np.int64),
        }
    )


def build_batch_course_enrollment(
    batches: pd.DataFrame,
    membership: pd.DataFrame,
    enrollments: pd.DataFrame,
    courses: pd.DataFrame,
    *,
    shared_threshold: float,
    timestamp: datetime,
) -> pd.DataFrame:
    """Aggregate student enrollments to (batch, course) rows, ordered by batch then course."""
    counts = count_batch_courses(batches["batch_id"], membership, enrollments)
    position = counts["batch_position"].to_numpy()
    course_rows = string_positions(counts["course_id"], courses["course_id"])

    def course_column(name: str, default=None) -> pd.Series:
        if name not in courses.columns:
            return pd.Series(default, index=counts.index)
        return courses[name].iloc[course_rows].reset_index(drop=True)

    size = batches["student_count"].to_numpy()[position]
    capacity = batches["capacity_allocated"].astype("Float64").iloc[position].reset_index(drop=True)
    expected = counts["expected_students"]
    course_type = course_column("course_type", "CORE").astype("string").fillna("CORE")
    credits = course_column("credits")
    batch_id = batches["batch_id"].to_numpy()[position]
    out = pd.DataFrame(
        {
            "enrollment_id": pd.array(uuid_texts("enrollment", batch_id, counts["course_id"]), dtype="str"),
            "batch_id": batch_id,
            "course_id": counts["course_id"],
            "course_name": course_column("course_name"),
            "credit_hours": credits,
            "enrollment_status": np.where(expected / size >= shared_threshold - 1e-12, STATUS_ENROLLED, STATUS_PARTIAL),
            "expected_students": expected,
            "capacity_utilization": (expected / capacity.where(capacity > 0)).round(4),
            "credits_allocated": credits,
            "is_mandatory": (course_type == "CORE").to_numpy(dtype=bool),
            "priority_level": course_type.map(PRIORITY_BY_COURSE_TYPE).fillna(4).astype(np.int64),
            "sessions_per_week": course_column("max_sessions_per_week"),
            "is_active": True,
            "created_at": timestamp.isoformat(),
        }
    )
    return out[list(BATCH_COURSE_ENROLLMENT_COLUMNS)]
