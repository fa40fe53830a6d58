"""Tests of the ITC 2019 importer (stage2.importers.itc2019)."""

from __future__ import annotations

import logging
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stage2.contract import load_institution
from stage2.errors import InputValidationError
from stage2.importers import import_itc2019, read_itc2019
from stage2.importers.itc2019 import academic_year_of, main

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the real instances: ../shared/data relative to the repo (never copied into it)
ITC_DATA = REPO_ROOT.parent / "shared" / "data" / "itc2019"
BOM = b"\xef\xbb\xbf"

#: the data contract's columns of the tables the importer writes, in the contract's order
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
}

# A small problem in the competition's shape: rooms with travel times and unavailabilities,
# classes listing room options (<room> elements that are not rooms of the problem),
# distributions, and students. Student 3 demands course 2 twice, student 4 demands nothing,
# course 9 is demanded but not defined, room 3 has capacity 0 and room 4 capacity 2000.
SMALL_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE problem PUBLIC "-//ITC 2019//DTD Problem Format/EN" "http://www.itc2019.org/competition-format.dtd">
<problem name="demo-fal17" nrDays="7" slotsPerDay="288" nrWeeks="15">
  <optimization time="1" room="1" distribution="10" student="10"/>
  <rooms>
    <room id="1" capacity="40">
      <travel room="2" value="12"/>
      <unavailable days="0010000" start="222" length="36" weeks="111111111111111"/>
    </room>
    <room id="2" capacity="25"/>
    <room id="3" capacity="0"/>
    <room id="4" capacity="2000"/>
  </rooms>
  <courses>
    <course id="1">
      <config id="1">
        <subpart id="1">
          <class id="1" limit="35">
            <room id="1" penalty="0"/>
            <room id="2" penalty="2"/>
            <time days="1010100" start="90" length="10" weeks="111111111111111" penalty="0"/>
          </class>
        </subpart>
      </config>
    </course>
    <course id="2">
      <config id="2"><subpart id="2"><class id="2" limit="30" room="false">
        <time days="0101000" start="102" length="22" weeks="111111111111111" penalty="0"/>
      </class></subpart></config>
    </course>
    <course id="3"/>
  </courses>
  <distributions>
    <distribution type="SameAttendees" required="true"><class id="1"/><class id="2"/></distribution>
  </distributions>
  <students>
    <student id="1"><course id="1"/><course id="2"/></student>
    <student id="2"><course id="2"/></student>
    <student id="3">
      <course id="2"/>
      <course id="2"/>
      <course id="9"/>
    </student>
    <student id="4"/>
  </students>
</problem>
"""


def write_xml(directory: Path, name: str, text: str, *, bom: bool = False) -> Path:
    path = directory / name
    path.write_bytes((BOM if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture
def small_xml(tmp_path) -> Path:
    return write_xml(tmp_path, "demo-fal17.xml", SMALL_XML, bom=True)


# --------------------------------------------------------------------------- tables


def test_tables_have_the_contract_columns(small_xml):
    tables = read_itc2019(small_xml)
    assert set(tables) == set(CONTRACT_COLUMNS)  # no shifts table: one default shift
    for name, columns in CONTRACT_COLUMNS.items():
        assert list(tables[name].columns) == columns, name


def test_ids_programme_and_year(small_xml):
    tables = read_itc2019(small_xml)
    students = tables["student_data"]
    assert students["student_id"].tolist() == ["S1", "S2", "S3"]  # S4 has no course
    assert students["roll_number"].tolist() == ["1", "2", "3"]
    assert set(students["program_id"]) == {"ITC-demo-fal17"}
    assert set(students["academic_year"]) == {"2017-18"}
    assert set(students["semester"]) == {1}
    assert students["is_active"].all()
    assert set(students["tenant_id"]) == set(students["institution_id"]) == {"demo-fal17"}

    programs = tables["programs"]
    assert programs["program_id"].tolist() == ["ITC-demo-fal17"]

    courses = tables["courses"]
    # the defined courses (also those nobody demands) in XML order, then the undefined one
    assert courses["course_id"].tolist() == ["C1", "C2", "C3", "C9"]
    assert set(courses["course_type"]) == {"CORE"}
    assert courses["course_code"].notna().all() and courses["course_name"].notna().all()
    assert set(courses["program_id"]) == {"ITC-demo-fal17"}

    rooms = tables["rooms"]  # only <rooms>' rooms, not the room options of classes
    assert rooms["room_id"].tolist() == ["R1", "R2", "R3", "R4"]
    assert set(rooms["room_type"]) == {"CLASSROOM"}


def test_enrollments_are_deduplicated(small_xml):
    enrollments = read_itc2019(small_xml)["student_course_enrollment"]
    pairs = list(zip(enrollments["student_id"], enrollments["course_id"], strict=True))
    assert pairs == [("S1", "C1"), ("S1", "C2"), ("S2", "C2"), ("S3", "C2"), ("S3", "C9")]
    assert not enrollments.duplicated(["student_id", "course_id"]).any()
    assert set(enrollments["academic_year"]) == {"2017-18"}


def test_capacities_clipped_and_every_finding_warned(small_xml, caplog):
    warnings: list[str] = []
    with caplog.at_level(logging.WARNING, logger="stage2.importers.itc2019"):
        rooms = read_itc2019(small_xml, warnings=warnings)["rooms"]
    assert rooms["capacity"].tolist() == [40, 25, 1, 1000]
    text = "\n".join(warnings)
    assert "1 student(s) without a course demand" in text
    assert "1 repeated (student, course) demand(s) dropped" in text
    assert "1 demanded course(s) not defined in <courses>" in text
    assert "2 room capacity value(s)" in text and "R3: 0" in text and "R4: 2000" in text
    assert len(warnings) == 4
    assert [r.getMessage() for r in caplog.records] == [f"demo-fal17.xml: {w}" for w in warnings]


def test_a_clean_problem_without_bom_gives_no_warnings(tmp_path):
    xml = """<?xml version="1.0" encoding="UTF-8"?>
<problem name="tiny-spr18"><rooms><room id="7" capacity="30"/></rooms>
<courses><course id="5"/></courses>
<students><student id="11"><course id="5"/></student></students></problem>"""
    warnings: list[str] = []
    tables = read_itc2019(write_xml(tmp_path, "tiny.xml", xml), warnings=warnings)
    assert warnings == []
    assert tables["student_data"]["student_id"].tolist() == ["S11"]
    assert tables["student_data"]["academic_year"].tolist() == ["2017-18"]  # spring 2018
    assert tables["rooms"]["room_id"].tolist() == ["R7"]


@pytest.mark.parametrize(
    ("name", "year"),
    [
        ("pu-cs-fal07", "2007-08"),
        ("yach-fal17", "2017-18"),
        ("muni-fsps-spr17", "2016-17"),
        ("muni-fsps-spr17c", "2016-17"),   # competition variants carry a letter suffix
        ("lums-sum17", "2016-17"),
        ("x-fall2019", "2019-20"),
        ("x-spring2020", "2019-20"),
        ("bet-FAL99", "2099-00"),
        ("wbg-fal10", "2010-11"),
        ("itc-instance", "ITC"),
        ("fallback", "ITC"),               # a term must be a whole name part
        ("", "ITC"),
    ],
)
def test_academic_year_of(name, year):
    assert academic_year_of(name) == year


def test_a_name_without_term_gives_year_itc_with_a_warning(tmp_path):
    xml = SMALL_XML.replace('name="demo-fal17"', 'name="demo"')
    warnings: list[str] = []
    students = read_itc2019(write_xml(tmp_path, "demo.xml", xml), warnings=warnings)["student_data"]
    assert set(students["academic_year"]) == {"ITC"}
    assert any("academic_year is 'ITC'" in w for w in warnings)


# --------------------------------------------------------------------------- writing


def test_imported_directory_loads_with_the_contract_loader(small_xml, tmp_path):
    out = tmp_path / "out"
    assert import_itc2019(small_xml, out) == out
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.csv" for t in CONTRACT_COLUMNS)
    data = load_institution(out)
    assert data.students["student_id"].tolist() == ["S1", "S2", "S3"]
    assert len(data.enrollments) == 5
    assert data.courses["course_id"].tolist() == ["C1", "C2", "C3", "C9"]
    assert data.rooms["capacity"].tolist() == [40, 25, 1, 1000]
    assert data.shifts["shift_id"].tolist() == ["DEFAULT"]  # the contract's one shift
    assert data.warnings == []


def test_import_removes_stale_contract_tables(small_xml, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "shifts.csv").write_text("shift_id\nSH-OLD\n")
    (out / "notes.txt").write_text("kept")
    warnings: list[str] = []
    import_itc2019(small_xml, out, warnings=warnings)
    assert not (out / "shifts.csv").exists()
    assert (out / "notes.txt").exists()
    assert any("shifts.csv" in w for w in warnings)


def test_cli_prints_what_it_wrote(small_xml, tmp_path, capsys):
    assert main([str(small_xml), str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "3 students" in captured.out
    assert "4 courses (3 with demand)" in captured.out
    assert "5 enrolments" in captured.out
    assert "4 rooms" in captured.out
    assert "warning: 1 student(s) without a course demand" in captured.err


def test_cli_exits_3_on_a_bad_file(tmp_path, capsys):
    bad = write_xml(tmp_path, "solution.xml", '<solution name="x"/>')
    assert main([str(bad), str(tmp_path / "out")]) == 3
    assert "solution.xml" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([str(tmp_path / "missing.xml"), str(tmp_path / "out")]) == 3


@pytest.mark.slow
def test_python_dash_m_runs_without_warnings(small_xml, tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "stage2.importers.itc2019",
         str(small_xml), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3 students" in result.stdout
    assert (tmp_path / "out" / "student_data.csv").exists()


# --------------------------------------------------------------------------- errors


def _issues(excinfo) -> list:
    return excinfo.value.issues


def test_not_an_itc_problem_raises_naming_the_file(tmp_path):
    path = write_xml(tmp_path, "timetable.xml", '<?xml version="1.0"?><solution name="x"/>')
    with pytest.raises(InputValidationError) as excinfo:
        read_itc2019(path)
    (issue,) = _issues(excinfo)
    assert issue.code == "PARSE_ERROR"
    assert issue.file == "timetable.xml"
    assert "<solution>" in issue.message and "<problem>" in issue.message
    assert "timetable.xml" in str(excinfo.value)


def test_a_problem_without_students_raises(tmp_path):
    xml = SMALL_XML.split("  <students>")[0] + "</problem>\n"
    path = write_xml(tmp_path, "no-students.xml", xml, bom=True)
    with pytest.raises(InputValidationError) as excinfo:
        read_itc2019(path)
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.file) == ("PARSE_ERROR", "no-students.xml")
    assert "<students>" in issue.message


def test_students_without_any_demand_raise(tmp_path):
    xml = '<problem name="p-fal17"><rooms/><students><student id="1"/></students></problem>'
    with pytest.raises(InputValidationError) as excinfo:
        read_itc2019(write_xml(tmp_path, "empty.xml", xml))
    assert "no <student> in <students> has a <course> demand" in _issues(excinfo)[0].message


@pytest.mark.parametrize("text", ["", "not xml at all", "<problem name='x'><students>"])
def test_malformed_xml_raises_a_parse_error(tmp_path, text):
    with pytest.raises(InputValidationError) as excinfo:
        read_itc2019(write_xml(tmp_path, "broken.xml", text))
    (issue,) = _issues(excinfo)
    assert (issue.code, issue.file) == ("PARSE_ERROR", "broken.xml")
    assert "not well-formed XML" in issue.message


def test_bad_ids_and_capacities_are_all_reported(tmp_path):
    xml = """<problem name="p-fal17">
  <rooms><room id="1" capacity="big"/><room id="1" capacity="20"/><room capacity="5"/></rooms>
  <students><student id="1"><course id="1"/></student><student id="1"><course/></student></students>
</problem>"""
    with pytest.raises(InputValidationError) as excinfo:
        read_itc2019(write_xml(tmp_path, "bad.xml", xml))
    messages = [(i.code, i.message) for i in _issues(excinfo)]
    assert ("PARSE_ERROR", "a <room> in <rooms> has no id") in messages
    assert ("PARSE_ERROR", "student 1 has a <course> without an id") in messages
    assert ("PARSE_ERROR", "room 1 has no integer capacity") in messages
    assert any(code == "DUPLICATE_KEY" and "1 student id(s)" in m for code, m in messages)
    assert any(code == "DUPLICATE_KEY" and "1 room id(s)" in m for code, m in messages)
    assert {i.file for i in _issues(excinfo)} == {"bad.xml"}


# --------------------------------------------------------------------------- real instances

#: /work/shared/data/README.md: students, course demands, courses with demand, rooms
#: (capacity min/median/max). The real files repeat no (student, course) demand, so the
#: README's "course demands" is both the number of <course> elements under <student> and the
#: number of deduplicated enrolments; the test checks both.
REAL = {
    "muni-fsps-spr17": (865, 6715, 186, 44, (20, 50, 126), "2016-17"),
    "yach-fal17": (821, 4163, 91, 33, (35, 35, 70), "2017-18"),
    "pu-cs-fal07": (2002, 2393, 34, 13, (22, 25, 61), "2007-08"),
}


@pytest.mark.skipif(not ITC_DATA.is_dir(), reason=f"ITC 2019 instances not found at {ITC_DATA}")
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_instances_match_the_data_readme(name, tmp_path):
    students, demands, courses_with_demand, n_rooms, capacity, year = REAL[name]
    path = ITC_DATA / f"{name}.xml"
    assert path.read_bytes()[:3] == BOM

    warnings: list[str] = []
    tables = read_itc2019(path, warnings=warnings)
    assert warnings == []
    enrollments = tables["student_course_enrollment"]
    assert len(tables["student_data"]) == students
    assert len(enrollments) == demands
    assert enrollments["course_id"].nunique() == courses_with_demand
    assert set(enrollments["course_id"]) <= set(tables["courses"]["course_id"])
    rooms = tables["rooms"]["capacity"]
    assert len(rooms) == n_rooms
    assert (rooms.min(), np.median(rooms), rooms.max()) == capacity
    assert set(tables["student_data"]["academic_year"]) == {year}

    # the raw demand count, independently of the importer
    root = ET.parse(path).getroot()
    raw = sum(len(s.findall("course")) for s in root.find("students"))
    assert raw == demands

    data = load_institution(import_itc2019(path, tmp_path / name))
    assert len(data.active_students) == students
    assert len(data.enrollments) == demands
    assert data.warnings == []


def test_importer_tables_frame_types(small_xml):
    """Ids are strings, numbers numeric: what write_institution and the loader expect."""
    tables = read_itc2019(small_xml)
    assert pd.api.types.is_string_dtype(tables["student_data"]["student_id"])
    assert pd.api.types.is_integer_dtype(tables["rooms"]["capacity"])
    assert tables["student_data"]["is_active"].dtype == bool
