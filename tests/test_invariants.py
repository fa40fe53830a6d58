"""The contract invariants (``stage2.contract.invariants``) on tiny hand-made tables: each one
fails, with its message, when broken; the integer recount of the course counts agrees with the
tables exactly when the full comparison does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stage2.contract.invariants import invariant_failures


def tables():
    batches = pd.DataFrame({
        "batch_id": ["b1", "b2"], "batch_code": ["A-B01", "A-B02"], "student_count": [2, 1],
        "size_min": [1, 1], "size_max": [5, 5], "group_status": ["ok", "ok"], "room_id": ["R1", "R2"],
        "shift_id": ["S1", "S1"], "capacity_allocated": pd.array([10, 10], dtype="Int64"),
    })
    membership = pd.DataFrame({"batch_id": ["b1", "b1", "b2"], "student_id": ["s1", "s2", "s3"]})
    students = pd.DataFrame({"student_id": ["s1", "s2", "s3"]})
    enrollments = pd.DataFrame({"student_id": ["s1", "s1", "s2", "s3", "s9"],
                                "course_id": ["C1", "C2", "C1", "C2", "C1"]})
    courses = pd.DataFrame({"batch_id": ["b1", "b1", "b2"], "course_id": ["C1", "C2", "C2"],
                            "expected_students": np.array([2, 1, 1], dtype=np.int64)})
    return batches, membership, courses, students, enrollments


def failures(batches, membership, courses, students, enrollments, **kwargs):
    return invariant_failures(batches, membership, courses, students, enrollments, **kwargs)


def test_consistent_tables_keep_every_invariant():
    assert failures(*tables()) == []


def test_each_broken_invariant_is_named():
    batches, membership, courses, students, enrollments = tables()
    lost = membership.iloc[1:].reset_index(drop=True)
    assert failures(batches, lost, courses, students, enrollments)[:2] == [
        "active students in no batch: s1", "student_count differs from the membership rows: A-B01"]
    twice = pd.concat([membership, membership.iloc[[2]]], ignore_index=True)
    assert "students in more than one batch: s3" in failures(batches, twice, courses, students, enrollments)
    stranger = students.iloc[:2]
    assert "members who are not active input students: s3" in failures(batches, membership, courses, stranger,
                                                                       enrollments)
    unknown = membership.assign(batch_id=["b1", "b1", "b7"])
    assert "membership rows name unknown batches: b7" in failures(batches, unknown, courses, students, enrollments)
    assert failures(*tables(), hard_rule_failures=2) == ["2 (batch, hard rule) checks fail"]
    same_room = batches.assign(room_id=["R1", "R1"])
    assert failures(same_room, membership, courses, students, enrollments) == [
        "rooms given twice in one shift: A-B01, A-B02"]
    duplicated = batches.assign(batch_id=["b1", "b1"])
    assert "batch codes or ids are not unique" in failures(duplicated, membership, courses, students, enrollments)


@pytest.mark.parametrize("change", ["count", "extra_row", "missing_row", "course", "batch", "swapped"])
def test_course_counts_that_disagree_with_the_members_are_named(change):
    batches, membership, courses, students, enrollments = tables()
    if change == "count":
        courses.loc[0, "expected_students"] = 3
    elif change == "extra_row":
        courses = pd.concat([courses, pd.DataFrame({"batch_id": ["b2"], "course_id": ["C1"],
                                                    "expected_students": [1]})], ignore_index=True)
    elif change == "missing_row":
        courses = courses.iloc[:2]
    elif change == "course":
        courses.loc[2, "course_id"] = "C9"
    elif change == "batch":
        courses.loc[2, "batch_id"] = "b7"
    else:  # the right counts on the wrong rows
        courses["expected_students"] = np.array([1, 2, 1], dtype=np.int64)
    found = failures(batches, membership, courses, students, enrollments)
    assert len(found) == 1 and found[0].startswith("batch_course_enrollment.expected_students disagrees")


def test_row_order_of_the_course_table_does_not_matter():
    batches, membership, courses, students, enrollments = tables()
    assert failures(batches, membership, courses.iloc[::-1], students, enrollments.iloc[::-1]) == []
