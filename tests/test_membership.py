"""Membership stage (``stage2/membership.py``): the ``student_batches`` and
``batch_student_membership`` tables, their deterministic UUID5 ids and batch codes.

Expected values are computed here from the README's rules with Python's ``uuid`` module, on a
hand-made seven-student institution; one end-to-end run checks the same rules on real output.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from stage2.allocation import Allocation
from stage2.config.settings import SizeBounds
from stage2.membership import build_batches, build_membership
from stage2.sizing import NOT_APPLICABLE, BatchPlan, GroupPlan

#: README "Output columns you may wonder about": ids are uuid5 in stage2's own namespace (the
#: project's name in the URL namespace) of the kind and the parts, joined by the unit separator
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "stage2.batching")
AS_OF = datetime(2025, 8, 1, 9, 30)

BATCH_COLUMNS = [
    "batch_id", "tenant_id", "institution_id", "program_id", "batch_code", "batch_name", "student_count",
    "academic_year", "semester", "preferred_shift", "capacity_allocated", "generation_timestamp", "is_active",
    "room_id", "shift_id", "group_key", "group_status", "size_min", "size_max",
]
MEMBERSHIP_COLUMNS = [
    "membership_id", "batch_id", "student_id", "student_name", "program_id", "academic_year", "enrollment_date",
    "membership_status", "assignment_timestamp", "is_active",
]


def values(column: pd.Series) -> list:
    """A column as a list, missing values as ``None`` (whatever the dtype's missing marker)."""
    return [None if pd.isna(v) else v for v in column]


def expected_batch_id(tenant: str, code: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"batch\x1f{tenant}\x1f{code}"))


def expected_membership_id(batch_id: str, student_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"membership\x1f{batch_id}\x1f{student_id}"))


# Seven students in input order; CSE semester 3 (positions 0, 1, 3, 5) and ME semester 1
# (positions 2, 4, 6). CSE has two batches, ME one.
STUDENTS = pd.DataFrame({
    "student_id": ["S1", "S2", "S3", "S4", "S5", "S6", "S7"],
    "student_name": ["Asha", "Bo", "Chen", "Dev", "Eva", "Femi", "Gus"],
    "program_id": ["P-CSE", "P-CSE", "P-ME", "P-CSE", "P-ME", "P-CSE", "P-ME"],
    "academic_year": ["2024-25"] * 7,
    "semester": ["3", "3", "1", "3", "1", "3", "1"],
    "tenant_id": ["TEN-A"] * 7,
    "institution_id": ["INST-1"] * 7,
})
PROGRAMS = pd.DataFrame({"program_id": ["P-CSE", "P-ME"], "program_name": ["B.Tech CSE", "B.Tech ME"]})
KEY_FIELDS = ["program_id", "academic_year", "semester"]
BOUNDS = SizeBounds(min=1, target=2, max=4)
PLAN = BatchPlan(key_fields=KEY_FIELDS, groups=[
    GroupPlan(0, ("P-CSE", "2024-25", "3"), np.array([0, 1, 3, 5]), BOUNDS, np.array([2, 2])),
    GroupPlan(1, ("P-ME", "2024-25", "1"), np.array([2, 4, 6]), SizeBounds(3, 3, 3), np.array([3]),
              status="undersized"),
])
#: batch of each student (batches are ordered by group, then numbered within it)
BATCH_OF_STUDENT = np.array([0, 1, 2, 0, 2, 1, 2])
BATCH_GROUP = np.array([0, 0, 1])
ALLOCATION = Allocation(room_id=["R1", None, "R2"], shift_id=["SH-M", None, "SH-A"], capacity=np.array([40, 0, 30]),
                        method="hand")


def batches_frame(students=STUDENTS, plan=PLAN, batch_of_student=BATCH_OF_STUDENT, batch_group=BATCH_GROUP,
                  timestamp=AS_OF, **kwargs) -> pd.DataFrame:
    return build_batches(students, PROGRAMS, batch_of_student, batch_group, plan, ALLOCATION, timestamp=timestamp,
                         **kwargs)


def test_batch_codes_are_programme_year_semester_and_number_within_the_group():
    batches = batches_frame()
    assert batches["batch_code"].tolist() == ["P-CSE-2024-25-3-B01", "P-CSE-2024-25-3-B02", "P-ME-2024-25-1-B01"]
    assert batches["batch_name"].tolist() == ["B.Tech CSE 2024-25 Sem 3 — B01", "B.Tech CSE 2024-25 Sem 3 — B02",
                                              "B.Tech ME 2024-25 Sem 1 — B01"]


def test_batch_ids_are_uuid5_of_tenant_and_code():
    batches = batches_frame()
    assert batches["tenant_id"].tolist() == ["TEN-A"] * 3
    assert batches["batch_id"].tolist() == [expected_batch_id("TEN-A", c) for c in batches["batch_code"]]
    assert all(uuid.UUID(b).version == 5 for b in batches["batch_id"])
    # the configured tenant wins over the students' column; no tenant at all is "default"
    configured = batches_frame(tenant_id="TEN-X", institution_id="INST-X")
    assert configured["batch_id"].tolist() == [expected_batch_id("TEN-X", c) for c in batches["batch_code"]]
    assert configured["institution_id"].tolist() == ["INST-X"] * 3
    anonymous = batches_frame(students=STUDENTS.drop(columns=["tenant_id"]))
    assert anonymous["tenant_id"].tolist() == ["default"] * 3
    assert anonymous["batch_id"].tolist() == [expected_batch_id("default", c) for c in batches["batch_code"]]


def test_ids_do_not_depend_on_the_timestamp_and_repeat_exactly():
    first = batches_frame()
    later = batches_frame(timestamp=datetime(2031, 1, 2, 3, 4, 5))
    assert first["batch_id"].tolist() == later["batch_id"].tolist()
    assert later["generation_timestamp"].tolist() == ["2031-01-02T03:04:05"] * 3
    pd.testing.assert_frame_equal(first, batches_frame())
    members_first = build_membership(STUDENTS, first, BATCH_OF_STUDENT, timestamp=AS_OF)
    members_later = build_membership(STUDENTS, later, BATCH_OF_STUDENT, timestamp=datetime(2031, 1, 2))
    assert members_first["membership_id"].tolist() == members_later["membership_id"].tolist()


def test_student_batches_columns_sizes_rooms_and_group_audit_fields():
    batches = batches_frame()
    assert batches.columns.tolist() == BATCH_COLUMNS
    assert batches["student_count"].tolist() == [2, 2, 3]
    assert batches["program_id"].tolist() == ["P-CSE", "P-CSE", "P-ME"]
    assert batches["semester"].tolist() == [3, 3, 1]
    assert values(batches["room_id"]) == ["R1", None, "R2"]
    assert values(batches["shift_id"]) == ["SH-M", None, "SH-A"]
    assert values(batches["preferred_shift"]) == ["SH-M", None, "SH-A"]
    capacity = batches["capacity_allocated"]
    assert capacity.iloc[0] == 40 and pd.isna(capacity.iloc[1]) and capacity.iloc[2] == 30  # unplaced: empty
    assert batches["generation_timestamp"].tolist() == [AS_OF.isoformat()] * 3
    assert batches["is_active"].tolist() == [True] * 3
    assert batches["group_key"].tolist() == ["program_id=P-CSE, academic_year=2024-25, semester=3"] * 2 + [
        "program_id=P-ME, academic_year=2024-25, semester=1"]
    assert batches["group_status"].tolist() == ["ok", "ok", "undersized"]
    assert batches["size_min"].tolist() == [1, 1, 3] and batches["size_max"].tolist() == [4, 4, 3]


def test_membership_rows_ids_and_order():
    batches = batches_frame()
    members = build_membership(STUDENTS, batches, BATCH_OF_STUDENT, timestamp=AS_OF)
    assert members.columns.tolist() == MEMBERSHIP_COLUMNS
    # ordered by batch, then by the student's input position
    assert members["student_id"].tolist() == ["S1", "S4", "S2", "S6", "S3", "S5", "S7"]
    ids = batches["batch_id"].tolist()
    assert members["batch_id"].tolist() == [ids[0]] * 2 + [ids[1]] * 2 + [ids[2]] * 3
    assert members["membership_id"].tolist() == [
        expected_membership_id(b, s) for b, s in zip(members["batch_id"], members["student_id"], strict=True)]
    assert members["membership_id"].is_unique
    assert members["student_name"].tolist() == ["Asha", "Dev", "Bo", "Femi", "Chen", "Eva", "Gus"]
    assert members["program_id"].tolist() == ["P-CSE"] * 4 + ["P-ME"] * 3
    assert members["enrollment_date"].tolist() == ["2025-08-01"] * 7
    assert members["assignment_timestamp"].tolist() == ["2025-08-01T09:30:00"] * 7
    assert members["membership_status"].tolist() == ["ACTIVE"] * 7 and members["is_active"].all()


def test_codes_skip_fields_that_do_not_apply_and_stay_unique_when_keys_sanitise_alike():
    # a programme-scoped no_mix field (semester) that does not apply to P-ME's students
    students = STUDENTS.assign(program_id=["cse/ai", "cse/ai", "CSE AI", "cse/ai", "CSE AI", "cse/ai", "CSE AI"])
    plan = BatchPlan(key_fields=KEY_FIELDS, groups=[
        GroupPlan(0, ("CSE AI", "2024-25", NOT_APPLICABLE), np.array([2, 4, 6]), BOUNDS, np.array([3])),
        GroupPlan(1, ("cse/ai", "2024-25", "3"), np.array([0, 1, 3, 5]), BOUNDS, np.array([2, 2])),
    ])
    batch_of_student = np.array([1, 2, 0, 1, 0, 2, 0])
    batches = build_batches(students, PROGRAMS, batch_of_student, np.array([0, 1, 1]), plan, ALLOCATION,
                            timestamp=AS_OF)
    # "CSE AI-2024-25" and "cse/ai-2024-25-3" sanitise to different prefixes here ...
    assert batches["batch_code"].tolist() == ["CSE-AI-2024-25-B01", "CSE-AI-2024-25-3-B01", "CSE-AI-2024-25-3-B02"]
    # ... but with the same semester they would collide: a group index keeps them apart
    plan_same = BatchPlan(key_fields=KEY_FIELDS, groups=[
        GroupPlan(0, ("CSE AI", "2024-25", "3"), np.array([2, 4, 6]), BOUNDS, np.array([3])),
        GroupPlan(1, ("cse/ai", "2024-25", "3"), np.array([0, 1, 3, 5]), BOUNDS, np.array([2, 2])),
    ])
    same = build_batches(students, PROGRAMS, batch_of_student, np.array([0, 1, 1]), plan_same, ALLOCATION,
                         timestamp=AS_OF)
    assert same["batch_code"].is_unique and same["batch_id"].is_unique
    assert same["batch_code"].tolist() == ["CSE-AI-2024-25-3-G000-B01", "CSE-AI-2024-25-3-G001-B01",
                                           "CSE-AI-2024-25-3-G001-B02"]


def test_a_run_numbers_batches_by_their_first_student_and_its_ids_follow_the_readme(make_institution_dir,
                                                                                     compose_config, tmp_path):
    from stage2 import process_student_batching

    input_dir = make_institution_dir(200, seed=0, n_groups="one")
    result = process_student_batching(compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false",
                                                      "report.notebook=false", "report.formats=[]"]),
                                      output_dir=tmp_path)
    batches, members = result.batches, result.membership
    assert len(batches) > 2  # several batches in the group, or the numbering is not exercised
    students = pd.read_csv(input_dir / "student_data.csv", dtype=str, keep_default_na=False)
    inactive = students["is_active"].str.strip().str.lower().isin(["false", "f", "0", "no"])
    assert inactive.any()  # inactive students are left out of the batches and of the numbering
    student_order = students.loc[~inactive, "student_id"].tolist()
    position = {s: i for i, s in enumerate(student_order)}
    first_member = members.groupby("batch_id")["student_id"].agg(lambda ids: min(position[s] for s in ids))
    for _, group in batches.groupby("group_key"):
        by_code = group.sort_values("batch_code")
        firsts = first_member.loc[by_code["batch_id"]].tolist()
        assert firsts == sorted(firsts), "B01, B02, ... must follow each batch's first student in input order"
        prefix = "-".join([by_code["program_id"].iloc[0], by_code["academic_year"].iloc[0],
                           str(by_code["semester"].iloc[0])])
        assert by_code["batch_code"].tolist() == [f"{prefix}-B{n:02d}" for n in range(1, len(group) + 1)]
    written = pd.read_csv(tmp_path / "student_batches.csv", dtype=str, keep_default_na=False)
    assert written["batch_id"].tolist() == [expected_batch_id(t, c) for t, c in
                                            zip(written["tenant_id"], written["batch_code"], strict=True)]
    written_members = pd.read_csv(tmp_path / "batch_student_membership.csv", dtype=str, keep_default_na=False)
    assert written_members["membership_id"].tolist() == [
        expected_membership_id(b, s)
        for b, s in zip(written_members["batch_id"], written_members["student_id"], strict=True)]
    assert sorted(written_members["student_id"]) == sorted(student_order)


@pytest.mark.parametrize("semester", [None, "4"])
def test_semester_is_an_integer_or_empty(semester):
    students = STUDENTS.assign(semester=semester)
    batches = batches_frame(students=students)
    if semester is None:
        assert batches["semester"].isna().all()
        assert batches["batch_name"].iloc[0] == "B.Tech CSE 2024-25 — B01"
    else:
        assert batches["semester"].tolist() == [4, 4, 4]


def reference_mode(values: pd.Series, batch_of_student: np.ndarray, n_batches: int) -> list:
    frame = pd.DataFrame({"batch": batch_of_student, "value": values.to_numpy()}).dropna()
    if frame.empty:
        return [None] * n_batches
    frame["text"] = frame["value"].astype(str)
    counts = frame.groupby(["batch", "text"], sort=True).size().reset_index(name="n")
    counts = counts.sort_values(["batch", "n", "text"], ascending=[True, False, True], kind="stable")
    top = counts.drop_duplicates("batch").set_index("batch")["text"]
    return [top.get(b) for b in range(n_batches)]


@pytest.mark.parametrize("kind", ["str", "string", "Int64", "float", "object"])
def test_mode_per_batch_is_the_most_frequent_text_and_the_smallest_among_ties(kind):
    from stage2.membership import _mode_per_batch

    rng = np.random.default_rng(5)
    pool = {"str": ["b", "B", "a", "ä"], "string": ["b", "B", "a", "ä"], "Int64": [7, 8, 10, 9],
            "float": [7.0, 8.5, 10.0, -0.0], "object": [1, "1", 2.5, "x"]}[kind]
    for trial in range(30):
        n = int(rng.integers(0, 40))
        picked = [pool[i] for i in rng.integers(0, 4, n)]
        values = pd.Series(picked, dtype=kind if kind != "float" else np.float64)
        values = values.mask(rng.random(n) < 0.2) if n else values
        batch = rng.integers(0, 6, n)
        assert _mode_per_batch(values, batch, 7) == reference_mode(values, batch, 7), (kind, trial)
