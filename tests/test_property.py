"""Property tests: random valid institutions through the real pipeline keep every invariant.

Hypothesis draws the structure of an institution (programmes, semesters, years, students,
catalogue, shift preferences, rooms, batch size bounds, input format); a numpy generator seeded
by hypothesis fills in the per-student details. The institution is written as contract CSV
files with the standard ``csv`` module (not stage2's writer), the pipeline runs with tracking
and the notebook off, and every invariant of the data contract is re-derived from the output
and input files alone, with the quality measures recomputed (``assert_outputs_valid``, conftest.py).
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import STAGE3_TABLES, assert_outputs_valid, run_batching
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

#: a small course catalogue: (course_id, course_type, credits, max_sessions_per_week)
CATALOGUE = [
    (f"C{i:02d}", ctype, credits, sessions)
    for i, (ctype, credits, sessions) in enumerate(
        [("CORE", 4, 4), ("CORE", 3, 3), ("CORE", 4, 4), ("PRACTICAL", 2, 2), ("ELECTIVE", 3, 3),
         ("ELECTIVE", 3, 2), ("ELECTIVE", 2, 2), ("SKILL_ENHANCEMENT", 2, 1), ("VALUE_ADDED", 1, 1),
         ("CORE", 4, 4), ("ELECTIVE", 3, 3), ("PRACTICAL", 1, 2)],
        start=1,
    )
]
SHIFTS = [("SH-M", "MOR", "Morning", "MORNING"), ("SH-A", "AFT", "Afternoon", "AFTERNOON"),
          ("SH-E", "EVE", "Evening", "EVENING")]
LANGUAGES = ["English", "Hindi", "Tamil", "Bengali"]


# ------------------------------------------------------------------------------------------
# drawing and writing an institution


@dataclass(frozen=True)
class Institution:
    seed: int
    n_programs: int
    semesters: tuple[tuple[int, ...], ...]  # per programme
    years: tuple[str, ...]
    n_students: int
    courses_per_group: int
    elective_rate: float
    n_shifts: int  # 0: no shifts.csv (one default shift)
    preference_rate: float
    capacities: tuple[int, ...]
    inactive_rate: float
    size_min: int
    size_max: int
    size_target: int
    list_column: bool


@st.composite
def institutions(draw, max_students: int = 300) -> Institution:
    n_programs = draw(st.integers(1, 3))
    semesters = tuple(
        tuple(sorted(draw(st.sets(st.integers(1, 8), min_size=1, max_size=2)))) for _ in range(n_programs)
    )
    years = tuple(sorted(draw(st.sets(st.sampled_from(["2024-25", "2025-26"]), min_size=1, max_size=2))))
    n_students = draw(st.integers(20, max_students))
    n_shifts = draw(st.integers(0, 3))
    size_min = draw(st.integers(5, 20))
    size_max = draw(st.integers(2 * size_min, 2 * size_min + 40))
    if draw(st.booleans()):
        # enough rooms: a slot for every batch there can be (each group gives at most n/min
        # batches, or one), each room as large as any batch
        n_groups = sum(len(s) for s in semesters) * len(years)
        slots_needed = n_students // size_min + n_groups
        n_rooms = math.ceil(slots_needed / max(n_shifts, 1))
        capacities = tuple(draw(st.lists(st.integers(size_max, size_max + 60), min_size=n_rooms, max_size=n_rooms)))
    else:
        # too few or too small rooms: some batches stay unplaced (a warning, strict=false)
        n_rooms = draw(st.integers(1, 3))
        capacities = tuple(draw(st.lists(st.integers(5, 120), min_size=n_rooms, max_size=n_rooms)))
    return Institution(
        seed=draw(st.integers(0, 2**32 - 1)),
        n_programs=n_programs,
        semesters=semesters,
        years=years,
        n_students=n_students,
        courses_per_group=draw(st.integers(1, 5)),
        elective_rate=draw(st.sampled_from([0.0, 0.2, 0.5])),
        n_shifts=n_shifts,
        preference_rate=draw(st.sampled_from([0.0, 0.5, 1.0])),
        capacities=capacities,
        inactive_rate=draw(st.sampled_from([0.0, 0.05])),
        size_min=size_min,
        size_max=size_max,
        size_target=draw(st.integers(size_min, size_max)),
        list_column=draw(st.booleans()),
    )


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def write_institution(inst: Institution, directory: Path) -> Path:
    """Write ``inst`` as contract CSV files into ``directory``."""
    rng = np.random.default_rng(inst.seed)
    directory.mkdir(parents=True, exist_ok=True)
    programs = [f"P{p + 1}" for p in range(inst.n_programs)]
    _write(directory / "programs.csv", ["program_id", "program_name"], [[p, f"Programme {p}"] for p in programs])
    _write(directory / "courses.csv", ["course_id", "course_name", "course_type", "credits", "max_sessions_per_week"],
           [[c, f"Course {c}", t, cr, s] for c, t, cr, s in CATALOGUE])
    course_ids = [c for c, *_ in CATALOGUE]
    # each (programme, semester) group has its own core set; students add random electives
    core = {
        (p, s): list(rng.choice(course_ids, size=inst.courses_per_group, replace=False))
        for p, sems in zip(programs, inst.semesters, strict=True) for s in sems
    }
    shifts = SHIFTS[: inst.n_shifts]
    if shifts:
        _write(directory / "shifts.csv", ["shift_id", "shift_code", "shift_name", "shift_type"],
               [list(s) for s in shifts])
    students, enrollments = [], []
    for i in range(inst.n_students):
        sid = f"S{i + 1:04d}"
        p = int(rng.integers(inst.n_programs))
        program = programs[p]
        semester = int(rng.choice(inst.semesters[p]))
        year = str(rng.choice(inst.years))
        courses = list(core[(program, semester)])
        courses += [c for c in course_ids if c not in courses and rng.random() < inst.elective_rate / 3]
        preference = None
        if shifts and rng.random() < inst.preference_rate:
            shift = shifts[int(rng.integers(len(shifts)))]
            # a shift_id, a shift_code or a shift_type (in any case): all resolve to the shift
            preference = [shift[0], shift[1].lower(), shift[3].capitalize()][int(rng.integers(3))]
        languages = ";".join(rng.choice(LANGUAGES, size=int(rng.integers(0, 3)), replace=False))
        active = "false" if rng.random() < inst.inactive_rate else "true"
        students.append([sid, program, year, semester, f"Student {i + 1}", preference, languages, active,
                         ";".join(courses)])
        enrollments += [[sid, c, year, semester] for c in courses]
    if not any(s[7] == "true" for s in students):
        students[0][7] = "true"
    header = ["student_id", "program_id", "academic_year", "semester", "student_name", "preferred_shift",
              "preferred_languages", "is_active", "enrolled_courses"]
    if inst.list_column:
        _write(directory / "student_data.csv", header, students)
    else:
        _write(directory / "student_data.csv", header[:-1], [s[:-1] for s in students])
        _write(directory / "student_course_enrollment.csv", ["student_id", "course_id", "academic_year", "semester"],
               enrollments)
    _write(directory / "rooms.csv", ["room_id", "capacity", "room_type"],
           [[f"R{r + 1:02d}", cap, "CLASSROOM"] for r, cap in enumerate(inst.capacities)])
    return directory


# ------------------------------------------------------------------------------------------
# the invariants, from the files alone (assert_outputs_valid, conftest.py)


def bounds_in_force(inst: Institution) -> tuple[int, int]:
    """The (min, max) every batch must carry: the configured bounds, max capped by the largest
    room (the default constraint set has a hard ``capacity_limit`` rule, threshold 1)."""
    largest = max(inst.capacities)
    size_max = min(inst.size_max, largest)
    return min(inst.size_min, size_max), size_max


def bounds_overrides(inst: Institution) -> list[str]:
    return [f"batch_size.min={inst.size_min}", f"batch_size.target={inst.size_target}",
            f"batch_size.max={inst.size_max}"]


# ------------------------------------------------------------------------------------------
# properties


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(inst=institutions())
def test_random_institutions_keep_every_invariant(inst: Institution, compose_config) -> None:
    work = Path(tempfile.mkdtemp(prefix="stage2-prop-"))
    try:
        input_dir = write_institution(inst, work / "in")
        result = run_batching(compose_config, input_dir, work / "out", bounds_overrides(inst))
        assert_outputs_valid(work / "out", input_dir, size_bounds=bounds_in_force(inst))
        assert result.metrics["hard_constraint_violations"] == 0
        n_unplaced = int((result.batches["room_id"].isna()).sum())
        for status in sorted(set(result.batches["group_status"])):
            event(f"group status {status}")
        event("some batch unplaced" if n_unplaced else "every batch placed")
        slots = len(inst.capacities) * max(inst.n_shifts, 1)
        # as many batches placed as the slots allow when every room fits every batch
        if min(inst.capacities) >= int(result.batches["student_count"].max()):
            assert n_unplaced == max(0, len(result.batches) - slots)
        if min(inst.capacities) >= inst.size_max and slots >= inst.n_students // inst.size_min + 12:
            assert n_unplaced == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# determinism

ONE_GROUP = Institution(
    seed=11, n_programs=1, semesters=((3,),), years=("2024-25",), n_students=240, courses_per_group=3,
    elective_rate=0.5, n_shifts=2, preference_rate=0.5, capacities=(60, 60, 50, 45, 40), inactive_rate=0.05,
    size_min=15, size_max=60, size_target=30, list_column=False,
)


@pytest.fixture(scope="module")
def one_group_dir(tmp_path_factory) -> Path:
    return write_institution(ONE_GROUP, tmp_path_factory.mktemp("one-group") / "in")


def test_same_input_config_seed_and_as_of_give_byte_identical_csvs(one_group_dir, compose_config, tmp_path):
    overrides = [*bounds_overrides(ONE_GROUP), "seed=3"]
    for name in ("a", "b"):
        run_batching(compose_config, one_group_dir, tmp_path / name, overrides)
    for table in STAGE3_TABLES:
        first, second = (tmp_path / "a" / f"{table}.csv").read_bytes(), (tmp_path / "b" / f"{table}.csv").read_bytes()
        assert first == second, table
    assert_outputs_valid(tmp_path / "a", one_group_dir, size_bounds=bounds_in_force(ONE_GROUP))


def test_every_seed_keeps_every_invariant_and_the_planned_batch_count(one_group_dir, compose_config, tmp_path):
    counts = set()
    for seed in (0, 1, 2):
        out = tmp_path / f"seed{seed}"
        run_batching(compose_config, one_group_dir, out, [*bounds_overrides(ONE_GROUP), f"seed={seed}"])
        batches = assert_outputs_valid(out, one_group_dir, size_bounds=bounds_in_force(ONE_GROUP))["student_batches"]
        assert len(batches) > 1 and batches["group_key"].nunique() == 1  # one group of several batches
        counts.add(len(batches))
    # the number of batches is planned before clustering, so it never depends on the seed (their
    # exact sizes may: the size model trades deviations from the planned size against course SSE)
    assert len(counts) == 1


def _write_equidistant(directory: Path, n_students: int) -> Path:
    """One group of students who each take a course nobody else takes: every two students are
    equally far apart, so every partition into batches of equal size has the same course SSE."""
    directory.mkdir(parents=True)
    _write(directory / "programs.csv", ["program_id"], [["P1"]])
    _write(directory / "courses.csv", ["course_id", "course_type"],
           [[f"C{i:03d}", "ELECTIVE"] for i in range(n_students)])
    _write(directory / "student_data.csv", ["student_id", "program_id", "academic_year", "semester"],
           [[f"S{i:03d}", "P1", "2024-25", 1] for i in range(n_students)])
    _write(directory / "student_course_enrollment.csv", ["student_id", "course_id"],
           [[f"S{i:03d}", f"C{i:03d}"] for i in range(n_students)])
    _write(directory / "rooms.csv", ["room_id", "capacity"], [[f"R{i}", 60] for i in range(6)])
    return directory


def test_another_seed_gives_other_batches_where_every_partition_is_optimal(compose_config, tmp_path):
    """Where every partition is an optimum (equidistant students, equal sizes), the seed alone
    decides the batches: seeds 0, 1, 2 give three valid batchings of the same cost, pairwise
    different in membership."""
    input_dir = _write_equidistant(tmp_path / "in", 60)
    partitions = {}
    for seed in (0, 1, 2):
        out = tmp_path / f"seed{seed}"
        result = run_batching(compose_config, input_dir, out, ["constraints=minimal", "batch_size.min=15",
                                                              "batch_size.target=15", "batch_size.max=15",
                                                              f"seed={seed}"])
        members = assert_outputs_valid(out, input_dir, size_bounds=(15, 15))["batch_student_membership"]
        # each batch of 15: 15 courses of one student each, SSE 15 * (1 - 1/15) = 14; 4 batches
        assert result.metrics["course_sse"] == pytest.approx(4 * 14)
        partitions[seed] = frozenset(frozenset(g["student_id"]) for _, g in members.groupby("batch_id"))
        assert len(partitions[seed]) == 4
    assert partitions[0] != partitions[1] and partitions[0] != partitions[2] and partitions[1] != partitions[2]
