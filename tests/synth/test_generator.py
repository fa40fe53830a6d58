"""Tests of the synthetic institution generator (stage2.synth)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from stage2.contract import csvio
from stage2.synth import TABLES, make_institution, write_institution
from stage2.synth.__main__ import main as cli_main

N = 2000

#: required and optional columns of the data contract, per file
CONTRACT_COLUMNS = {
    "student_data": ["student_id", "program_id", "academic_year", "semester", "student_name",
                     "roll_number", "email", "preferred_shift", "preferred_languages",
                     "tenant_id", "institution_id", "is_active"],
    "programs": ["program_id", "program_code", "program_name", "program_type", "department_id",
                 "duration_years", "total_credits"],
    "courses": ["course_id", "course_code", "course_name", "course_type", "credits",
                "theory_hours", "practical_hours", "max_sessions_per_week", "program_id",
                "semester"],
    "student_course_enrollment": ["student_id", "course_id", "academic_year", "semester",
                                  "is_mandatory", "enrollment_date"],
    "rooms": ["room_id", "capacity", "room_code", "room_name", "room_type", "building_name",
              "floor_number", "preferred_shift"],
    "shifts": ["shift_id", "shift_code", "shift_name", "shift_type", "start_time", "end_time"],
    "course_prerequisites": ["course_id", "prerequisite_course_id", "is_mandatory",
                             "minimum_grade"],
    "dynamic_parameters": ["parameter_id", "parameter_code", "parameter_name", "parameter_path",
                           "data_type", "default_value", "validation_rules", "tenant_id"],
    "entity_parameter_values": ["value_id", "entity_type", "entity_id", "parameter_id",
                                "parameter_value", "numeric_value", "integer_value",
                                "boolean_value", "json_value", "effective_from", "effective_to",
                                "tenant_id"],
}
VALUE_COLUMNS = ["parameter_value", "numeric_value", "integer_value", "boolean_value",
                 "json_value"]


def read(directory, table, sep=",", bom=False) -> pd.DataFrame:
    return pd.read_csv(directory / f"{table}.csv", sep=sep, dtype=str, keep_default_na=False,
                       encoding="utf-8-sig" if bom else "utf-8")


def file_bytes(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return make_institution(N, seed=7)


@pytest.fixture(scope="module")
def written(tables, tmp_path_factory):
    return write_institution(tmp_path_factory.mktemp("institution"), tables)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tmp_path):
    a = write_institution(tmp_path / "a", make_institution(N, seed=3))
    b = write_institution(tmp_path / "b", make_institution(N, seed=3))
    assert file_bytes(a) == file_bytes(b)
    assert sorted(file_bytes(a)) == sorted(f"{t}.csv" for t in TABLES)


def test_different_seed_gives_different_files(tmp_path):
    a = file_bytes(write_institution(tmp_path / "a", make_institution(N, seed=3)))
    b = file_bytes(write_institution(tmp_path / "b", make_institution(N, seed=4)))
    assert a["student_data.csv"] != b["student_data.csv"]
    assert a["student_course_enrollment.csv"] != b["student_course_enrollment.csv"]


def test_same_seed_gives_identical_bytes_in_every_format(tmp_path):
    options = dict(delimiter=";", bom=True, enrollment_format="list_column")
    a = write_institution(tmp_path / "a", make_institution(500, seed=1, profile="college"),
                          **options)
    b = write_institution(tmp_path / "b", make_institution(500, seed=1, profile="college"),
                          **options)
    assert file_bytes(a) == file_bytes(b)


def test_fast_and_quoting_writers_give_the_same_bytes(tables, tmp_path, monkeypatch):
    fast = file_bytes(write_institution(tmp_path / "fast", tables))
    monkeypatch.setattr(csvio, "_needs_quoting", lambda arr, delimiter: True)
    quoting = file_bytes(write_institution(tmp_path / "pandas", tables))
    assert fast == quoting


# --------------------------------------------------------------------------- contract


def test_every_contract_file_and_column_is_written(written):
    for table, columns in CONTRACT_COLUMNS.items():
        frame = read(written, table)
        assert len(frame) > 0, table
        missing = set(columns) - set(frame.columns)
        assert not missing, f"{table}: {missing}"
    students = read(written, "student_data")
    assert {"cgpa", "gender"} <= set(students.columns)


def test_values_are_in_the_contract_ranges(tables):
    students, courses, rooms = tables["student_data"], tables["courses"], tables["rooms"]
    assert students["student_id"].is_unique and courses["course_id"].is_unique
    assert rooms["room_id"].is_unique
    assert (students["academic_year"].astype(str).str.len() >= 4).all()
    assert students["semester"].between(1, 12).all()
    assert set(students["semester"]) == {1, 3, 5, 7}
    assert courses["credits"].gt(0).all() and courses["credits"].le(20).all()
    assert courses["max_sessions_per_week"].between(1, 10).all()
    assert set(courses["course_type"]) == {"CORE", "ELECTIVE", "PRACTICAL", "SKILL_ENHANCEMENT",
                                           "VALUE_ADDED"}
    assert rooms["capacity"].between(1, 1000).all()
    assert set(rooms["capacity"]) <= {30, 40, 50, 60, 72, 90, 120}
    assert set(rooms["room_type"]) <= {"CLASSROOM", "LAB", "SEMINAR"}
    assert students["cgpa"].between(5.0, 10.0).all()
    assert students["email"].is_unique and students["roll_number"].is_unique


def test_referential_integrity(written):
    students = read(written, "student_data")
    programs = read(written, "programs")
    courses = read(written, "courses")
    enrollment = read(written, "student_course_enrollment")
    shifts = read(written, "shifts")
    prerequisites = read(written, "course_prerequisites")
    parameters = read(written, "dynamic_parameters")
    values = read(written, "entity_parameter_values")
    rooms = read(written, "rooms")

    assert enrollment["student_id"].isin(students["student_id"]).all()
    assert enrollment["course_id"].isin(courses["course_id"]).all()
    assert not enrollment.duplicated(["student_id", "course_id"]).any()
    assert students["program_id"].isin(programs["program_id"]).all()
    assert courses["program_id"].isin(programs["program_id"]).all()
    assert prerequisites["course_id"].isin(courses["course_id"]).all()
    assert prerequisites["prerequisite_course_id"].isin(courses["course_id"]).all()
    assert values["parameter_id"].isin(parameters["parameter_id"]).all()
    assert values.loc[values["entity_type"] == "PROGRAM", "entity_id"].isin(
        programs["program_id"]).all()
    for frame in (students, rooms):
        shift = frame.loc[frame["preferred_shift"] != "", "preferred_shift"]
        assert shift.isin(shifts["shift_code"]).all()
    # every student takes at least one course
    assert students["student_id"].isin(enrollment["student_id"]).all()


def test_preferences_and_shares(tables):
    students = tables["student_data"]
    has_shift = students["preferred_shift"].notna().mean()
    assert 0.6 < has_shift < 0.8
    inactive = (~students["is_active"]).mean()
    assert 0.002 < inactive < 0.025
    languages = set(students["preferred_languages"].astype(str))
    assert {"English", "English;Hindi"} <= languages
    assert students["tenant_id"].nunique() == 1 and students["institution_id"].nunique() == 1


# --------------------------------------------------------------------------- structure


def test_many_groups_have_cores_tracks_and_noise(tables):
    students, courses = tables["student_data"], tables["courses"]
    enrollment = tables["student_course_enrollment"]
    groups = students.groupby(["program_id", "academic_year", "semester"], observed=True).size()
    assert len(groups) >= 15 and groups.median() >= 40
    assert len(tables["programs"]) >= 5

    course_columns = courses[["course_id", "course_type", "program_id", "semester"]].rename(
        columns={"program_id": "program_id_course", "semester": "semester_course"})
    e = enrollment.merge(course_columns, on="course_id")
    e = e.merge(students[["student_id", "program_id"]], on="student_id")
    own = e["program_id"].astype(str) == e["program_id_course"].astype(str)
    current = own & (e["semester"] == e["semester_course"])
    # nearly all students of a group take each of its core courses
    group_size = {(str(p), s): size for (p, _, s), size in groups.items()}
    core = e[current & (e["course_type"] == "CORE")]
    for (program, semester, _), taken in core.groupby(
        [core["program_id"].astype(str), "semester", core["course_id"].astype(str)]
    ).size().items():
        assert taken / group_size[(program, semester)] > 0.9
    # backlog and cross-programme enrolments exist, for a few % of the students
    backlog = e.loc[own & (e["semester_course"] < e["semester"]), "student_id"].nunique()
    cross = e.loc[~own, "student_id"].nunique()
    assert 0.01 * N < backlog < 0.08 * N
    assert 0.005 * N < cross < 0.06 * N


def test_electives_follow_tracks():
    """In one group, a student's electives cluster in one track of the programme."""
    tables = make_institution(1500, seed=2, n_groups="one")
    courses = tables["courses"].set_index("course_id")
    e = tables["student_course_enrollment"]
    e = e[e["course_id"].map(courses["course_type"]) == "ELECTIVE"]
    e = e[e["course_id"].map(courses["program_id"]).astype(str) == "PRG-CSE"]
    track = e["course_id"].astype(str).str.extract(r"-ELE-([A-Z]+)-")[0]
    counts = pd.crosstab(e["student_id"].astype(str), track)
    top_share = counts.max(axis=1) / counts.sum(axis=1)
    assert top_share.median() >= 0.75
    assert counts.shape[1] == 3
    chosen = counts.idxmax(axis=1).value_counts(normalize=True)
    assert chosen.min() > 0.05  # every track is picked by some students


def test_one_group(tmp_path):
    tables = make_institution(1200, seed=5, n_groups="one")
    students = tables["student_data"]
    keys = students[["program_id", "academic_year", "semester"]].drop_duplicates()
    assert len(keys) == 1
    assert len(tables["programs"]) == 1
    types = set(tables["courses"]["course_type"])
    assert {"CORE", "ELECTIVE"} <= types
    written = write_institution(tmp_path, tables)
    assert read(written, "student_data")["program_id"].nunique() == 1


def test_college_profile_is_smaller():
    college = make_institution(3000, seed=0, profile="college")
    university = make_institution(3000, seed=0, profile="university")
    assert 2 <= len(college["programs"]) <= 3
    assert len(make_institution(300, seed=0, profile="college")["programs"]) == 2
    electives = college["courses"]["course_type"].eq("ELECTIVE").sum()
    per_program = electives / len(college["programs"])
    uni_per_program = (university["courses"]["course_type"].eq("ELECTIVE").sum()
                       / len(university["programs"]))
    assert per_program < uni_per_program


def test_programmes_scale_with_students():
    small = make_institution(1000, seed=0)
    large = make_institution(20000, seed=0)
    assert len(small["programs"]) == 5
    assert len(large["programs"]) > len(small["programs"])
    assert large["programs"]["program_id"].is_unique
    groups = large["student_data"].groupby(["program_id", "semester"], observed=True).size()
    assert groups.between(40, 400).mean() >= 0.8


def test_room_count_follows_the_batches(tables):
    groups = tables["student_data"].groupby(["program_id", "semester"], observed=True).size()
    batches = np.maximum(1, np.ceil(groups / 35)).sum()
    n_shifts = len(tables["shifts"])
    assert len(tables["rooms"]) == math.ceil(batches / n_shifts * 1.3)
    assert len(tables["rooms"]) >= math.ceil(N / 35 / n_shifts * 1.3)


# --------------------------------------------------------------------------- formats


def test_list_column_round_trips_the_enrollments(tables, tmp_path):
    out = write_institution(tmp_path, tables, enrollment_format="list_column")
    assert not (out / "student_course_enrollment.csv").exists()
    students = read(out, "student_data")
    pairs = (
        students.assign(course_id=students["enrolled_courses"].str.split(";"))
        .explode("course_id")[["student_id", "course_id"]]
    )
    expected = tables["student_course_enrollment"][["student_id", "course_id"]].astype(str)
    key = ["student_id", "course_id"]
    got = pairs.sort_values(key).to_numpy().tolist()
    assert got == expected.sort_values(key).to_numpy().tolist()


def test_list_column_removes_a_stale_enrollment_file(tables, tmp_path):
    write_institution(tmp_path, tables)
    write_institution(tmp_path, tables, enrollment_format="list_column")
    assert not (tmp_path / "student_course_enrollment.csv").exists()


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("bom", [False, True])
def test_delimiters_and_bom_are_readable(tables, tmp_path, delimiter, bom):
    out = write_institution(tmp_path, tables, delimiter=delimiter, bom=bom,
                            enrollment_format="list_column")
    raw = (out / "student_data.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == bom
    for table in CONTRACT_COLUMNS:
        if table == "student_course_enrollment":
            continue
        frame = read(out, table, sep=delimiter, bom=bom)
        assert list(frame.columns)[0] == CONTRACT_COLUMNS[table][0]
        assert len(frame) == len(tables[table]), table
    students = read(out, "student_data", sep=delimiter, bom=bom)
    list_sep = "|" if delimiter == ";" else ";"
    first = students["enrolled_courses"].iloc[0].split(list_sep)
    assert set(first) <= set(tables["courses"]["course_id"])
    languages = set(students["preferred_languages"])
    assert f"English{list_sep}Hindi" in languages
    values = read(out, "entity_parameter_values", sep=delimiter, bom=bom)
    assert json.loads(values.loc[values["value_id"] == "EPV-002", "json_value"].iloc[0])


# --------------------------------------------------------------------------- EAV


def test_eav_rows_set_exactly_one_value(written):
    values = read(written, "entity_parameter_values")
    assert (values[VALUE_COLUMNS] != "").sum(axis=1).eq(1).all()
    assert (values["effective_from"] == "2024-01-01").all()
    assert (values["effective_to"] == "").all()


def test_eav_parameters_and_overrides(written):
    parameters = read(written, "dynamic_parameters").set_index("parameter_code")
    for code in ("batch_size.min", "batch_size.target", "batch_size.max"):
        assert parameters.loc[code, "data_type"] == "integer"
    for code in ("constraint.shift_homogeneous", "constraint.language_homogeneous"):
        assert parameters.loc[code, "data_type"] == "json"

    values = read(written, "entity_parameter_values")
    code_of = dict(zip(parameters["parameter_id"], parameters.index, strict=True))
    values["code"] = values["parameter_id"].map(code_of)
    target = values[values["code"] == "batch_size.target"]
    assert len(target) == 1 and target["entity_type"].iloc[0] == "PROGRAM"
    assert target["integer_value"].iloc[0] == "40"

    shift = values[values["code"] == "constraint.shift_homogeneous"].iloc[0]
    assert shift["entity_type"] == "INSTITUTION"
    assert json.loads(shift["json_value"]) == {
        "field_name": "preferred_shift", "rule_type": "homogeneous",
        "constraint_level": "soft", "weight": 3, "threshold": 0.8,
    }
    language = values[values["code"] == "constraint.language_homogeneous"].iloc[0]
    assert language["entity_type"] == "PROGRAM"
    assert json.loads(language["json_value"]) == {
        "field_name": "preferred_languages", "rule_type": "homogeneous",
        "constraint_level": "soft", "weight": 2, "threshold": 0.7,
    }


# --------------------------------------------------------------------------- API and CLI


@pytest.mark.parametrize(
    "kwargs",
    [dict(n_students=0), dict(n_students=10, profile="school"), dict(n_students=10, n_groups="2")],
)
def test_bad_arguments_are_rejected(kwargs):
    n = kwargs.pop("n_students")
    with pytest.raises(ValueError):
        make_institution(n, **kwargs)


def test_tiny_institution_still_works(tmp_path):
    tables = make_institution(3, seed=0)
    out = write_institution(tmp_path, tables)
    assert len(read(out, "student_data")) == 3
    assert len(read(out, "rooms")) >= 1


def test_cli_writes_the_files(tmp_path, capsys):
    assert cli_main([str(tmp_path / "out"), "--students", "300", "--seed", "1",
                     "--delimiter", "tab", "--bom", "--profile", "college"]) == 0
    printed = capsys.readouterr().out
    assert "student_data.csv" in printed and "300 rows" in printed
    students = read(tmp_path / "out", "student_data", sep="\t", bom=True)
    assert len(students) == 300
    direct = write_institution(tmp_path / "direct",
                               make_institution(300, seed=1, profile="college"),
                               delimiter="\t", bom=True)
    assert file_bytes(tmp_path / "out") == file_bytes(direct)
