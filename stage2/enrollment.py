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

from stage2.contract.schemas import BATCH_COURSE_ENROLLMENT_COLUMNS
from stage2.identifiers import enrollment_id

PRIORITY_BY_COURSE_TYPE = {"CORE": 1, "PRACTICAL": 2, "ELECTIVE": 3, "SKILL_ENHANCEMENT": 4, "VALUE_ADDED": 4}
STATUS_ENROLLED = "ENROLLED"
STATUS_PARTIAL = "PARTIAL"


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
    pairs = enrollments[["student_id", "course_id"]].merge(membership[["student_id", "batch_id"]], on="student_id")
    counts = pairs.groupby(["batch_id", "course_id"], sort=False).size().rename("expected_students").reset_index()
    batch_info = batches[["batch_id", "student_count", "capacity_allocated"]].reset_index(names="batch_order")
    frame = counts.merge(batch_info, on="batch_id").merge(courses, on="course_id", how="left", suffixes=("", "_course"))
    frame = frame.sort_values(["batch_order", "course_id"], kind="stable").reset_index(drop=True)
    share = frame["expected_students"] / frame["student_count"]
    capacity = frame["capacity_allocated"].astype("Float64")
    course_type = frame["course_type"].astype("string").fillna("CORE") if "course_type" in frame else pd.Series("CORE", index=frame.index)
    credits = frame["credits"] if "credits" in frame else pd.Series(np.nan, index=frame.index)
    out = pd.DataFrame(
        {
            "enrollment_id": [enrollment_id(b, c) for b, c in zip(frame["batch_id"], frame["course_id"])],
            "batch_id": frame["batch_id"],
            "course_id": frame["course_id"],
            "course_name": frame["course_name"] if "course_name" in frame else None,
            "credit_hours": credits,
            "enrollment_status": np.where(share >= shared_threshold - 1e-12, STATUS_ENROLLED, STATUS_PARTIAL),
            "expected_students": frame["expected_students"].astype(np.int64),
            "capacity_utilization": (frame["expected_students"] / capacity.where(capacity > 0)).round(4),
            "credits_allocated": credits,
            "is_mandatory": (course_type == "CORE").astype(bool),
            "priority_level": course_type.map(PRIORITY_BY_COURSE_TYPE).fillna(4).astype(np.int64),
            "sessions_per_week": frame["max_sessions_per_week"] if "max_sessions_per_week" in frame else None,
            "is_active": True,
            "created_at": timestamp.isoformat(),
        }
    )
    return out[list(BATCH_COURSE_ENROLLMENT_COLUMNS)]
