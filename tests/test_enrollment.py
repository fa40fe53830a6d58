"""Enrollment stage (``stage2/enrollment.py``): ``batch_course_enrollment`` on hand-made
batches, every expected value counted here from the README's rules.

README "Output columns you may wonder about": ``expected_students`` = members taking the
course; ``ENROLLED`` when at least ``shared_threshold`` of the members take it, else
``PARTIAL``; ``priority_level`` 1 CORE, 2 PRACTICAL, 3 ELECTIVE, 4 other; ``is_mandatory`` =
CORE; ``capacity_utilization`` = expected_students / capacity_allocated, empty when unplaced;
``enrollment_id`` = uuid5(batch_id, course_id).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from fractions import Fraction

import pandas as pd
import pytest

from stage2.enrollment import build_batch_course_enrollment
from stage2.outputs import write_tables_atomically

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "stage2.batching")
AS_OF = datetime(2025, 8, 1, 0, 0)
COLUMNS = [
    "enrollment_id", "batch_id", "course_id", "course_name", "credit_hours", "enrollment_status",
    "expected_students", "capacity_utilization", "credits_allocated", "is_mandatory", "priority_level",
    "sessions_per_week", "is_active", "created_at",
]

# batch -> (members, home-room capacity or None when unplaced)
BATCHES = {"B1": (["S1", "S2", "S3", "S4"], 40), "B2": (["S5", "S6", "S7"], None),
           "B3": ([f"T{i}" for i in range(10)], 30)}
# course -> (type, credits, sessions per week)
COURSES = {"C-CORE": ("CORE", 4, 4), "C-ELEC": ("ELECTIVE", 3, 3), "C-PRAC": ("PRACTICAL", 2, 2),
           "C-SKILL": ("SKILL_ENHANCEMENT", 1, 1), "C-VA": ("VALUE_ADDED", 1, 1), "C-SEM": ("SEMINAR", 2, 1)}
# course -> students taking it ("S99" is in no batch: ignored)
TAKES = {
    "C-CORE": ["S1", "S2", "S5", "S99"] + [f"T{i}" for i in range(7)],   # B1 2/4, B2 1/3, B3 7/10
    "C-ELEC": ["S1", "S2", "S3", "S4"] + [f"T{i}" for i in range(3)],    # B1 4/4, B3 3/10
    "C-PRAC": ["S1", "S5", "S6"],                                        # B1 1/4, B2 2/3
    "C-SKILL": ["S7"] + [f"T{i}" for i in range(5)],                     # B2 1/3, B3 5/10
    "C-VA": ["S1", "S2", "S3"],                                          # B1 3/4
    "C-SEM": ["T9"],                                                     # B3 1/10
}


def frames():
    batches = pd.DataFrame({
        "batch_id": [str(uuid.uuid5(NAMESPACE, f"batch\x1fT\x1f{b}")) for b in BATCHES],
        "batch_code": list(BATCHES),
        "student_count": [len(m) for m, _ in BATCHES.values()],
        "capacity_allocated": pd.array([c for _, c in BATCHES.values()], dtype="Int64"),
    })
    code_to_id = dict(zip(batches["batch_code"], batches["batch_id"], strict=True))
    membership = pd.DataFrame([(code_to_id[b], s) for b, (members, _) in BATCHES.items() for s in members],
                              columns=["batch_id", "student_id"])
    enrollments = pd.DataFrame([(s, c) for c, students in TAKES.items() for s in students],
                               columns=["student_id", "course_id"])
    courses = pd.DataFrame([(c, f"Course {c}", t, cr, sp) for c, (t, cr, sp) in COURSES.items()],
                           columns=["course_id", "course_name", "course_type", "credits", "max_sessions_per_week"])
    return batches, membership, enrollments, courses


def build(shared_threshold: float = 0.5) -> pd.DataFrame:
    batches, membership, enrollments, courses = frames()
    return build_batch_course_enrollment(batches, membership, enrollments, courses,
                                         shared_threshold=shared_threshold, timestamp=AS_OF)


def by_pair(table: pd.DataFrame) -> dict[tuple[str, str], dict]:
    codes = dict(zip(frames()[0]["batch_id"], frames()[0]["batch_code"], strict=True))
    return {(codes[r["batch_id"]], r["course_id"]): r for r in table.to_dict("records")}


def expected_counts() -> dict[tuple[str, str], int]:
    counts = {}
    for batch, (members, _) in BATCHES.items():
        for course, students in TAKES.items():
            n = len(set(members) & set(students))
            if n:
                counts[(batch, course)] = n
    return counts


def test_one_row_per_batch_and_course_taken_with_member_counts():
    table = build()
    assert table.columns.tolist() == COLUMNS
    rows = by_pair(table)
    assert {k: int(r["expected_students"]) for k, r in rows.items()} == expected_counts()
    assert ("B2", "C-ELEC") not in rows  # no member takes it: no row
    # ordered by batch, then course id
    order = [(b, c) for b in BATCHES for c in sorted(COURSES) if (b, c) in expected_counts()]
    assert list(rows) == order


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 2 / 3, 0.75, 1.0])
def test_enrolled_when_at_least_the_threshold_share_takes_the_course(threshold):
    rows = by_pair(build(threshold))
    exact = Fraction(threshold).limit_denominator(1000)
    for (batch, course), n in expected_counts().items():
        size = len(BATCHES[batch][0])
        want = "ENROLLED" if Fraction(n, size) >= exact else "PARTIAL"
        assert rows[(batch, course)]["enrollment_status"] == want, (batch, course, n, size, threshold)


def test_a_share_exactly_at_the_threshold_is_enrolled_and_one_student_less_is_partial():
    # B1: 2 of 4 take C-CORE, 1 of 4 C-PRAC; B2: 2 of 3 take C-PRAC; B3: 7 of 10 take C-CORE, 3 of 10 C-ELEC
    at_half = by_pair(build(0.5))
    assert at_half[("B1", "C-CORE")]["enrollment_status"] == "ENROLLED"
    assert at_half[("B1", "C-PRAC")]["enrollment_status"] == "PARTIAL"
    assert by_pair(build(2 / 3))[("B2", "C-PRAC")]["enrollment_status"] == "ENROLLED"
    assert by_pair(build(0.7))[("B3", "C-CORE")]["enrollment_status"] == "ENROLLED"
    assert by_pair(build(0.71))[("B3", "C-CORE")]["enrollment_status"] == "PARTIAL"
    assert by_pair(build(0.3))[("B3", "C-ELEC")]["enrollment_status"] == "ENROLLED"


def test_priority_and_mandatory_follow_the_course_type():
    rows = by_pair(build())
    priority = {"CORE": 1, "PRACTICAL": 2, "ELECTIVE": 3, "SKILL_ENHANCEMENT": 4, "VALUE_ADDED": 4, "SEMINAR": 4}
    for (_, course), row in rows.items():
        course_type = COURSES[course][0]
        assert row["priority_level"] == priority[course_type], course
        assert bool(row["is_mandatory"]) is (course_type == "CORE"), course


def test_course_attributes_and_timestamps_are_copied():
    for (_, course), row in by_pair(build()).items():
        _, credits, sessions = COURSES[course]
        assert row["course_name"] == f"Course {course}"
        assert row["credit_hours"] == credits and row["credits_allocated"] == credits
        assert row["sessions_per_week"] == sessions
        assert bool(row["is_active"]) is True
        assert row["created_at"] == "2025-08-01T00:00:00"


def test_capacity_utilization_is_attendees_over_home_room_seats_and_empty_when_unplaced(tmp_path):
    table = build()
    for (batch, _course), row in by_pair(table).items():
        capacity = BATCHES[batch][1]
        if capacity is None:
            assert pd.isna(row["capacity_utilization"])
        else:
            assert row["capacity_utilization"] == pytest.approx(row["expected_students"] / capacity, abs=5e-5)
    assert by_pair(table)[("B1", "C-ELEC")]["capacity_utilization"] == pytest.approx(4 / 40)
    write_tables_atomically(tmp_path, {"batch_course_enrollment": table})
    written = pd.read_csv(tmp_path / "batch_course_enrollment.csv", dtype=str, keep_default_na=False)
    codes = dict(zip(frames()[0]["batch_id"], frames()[0]["batch_code"], strict=True))
    unplaced = written["batch_id"].map(codes) == "B2"
    assert unplaced.sum() == 3 and (written.loc[unplaced, "capacity_utilization"] == "").all()
    assert (written.loc[~unplaced, "capacity_utilization"] != "").all()


def test_enrollment_ids_are_uuid5_of_batch_and_course():
    table = build()
    assert table["enrollment_id"].tolist() == [
        str(uuid.uuid5(NAMESPACE, f"enrollment\x1f{b}\x1f{c}"))
        for b, c in zip(table["batch_id"], table["course_id"], strict=True)]
    assert table["enrollment_id"].is_unique
    # the threshold changes statuses, never ids
    assert build(0.9)["enrollment_id"].tolist() == table["enrollment_id"].tolist()
