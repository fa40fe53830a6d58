"""Tests of the data contract: reading rules, the loader's normalisation and its error reports."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from stage2.contract import (
    BATCH_COURSE_ENROLLMENT_COLUMNS,
    MEMBERSHIP_COLUMNS,
    STUDENT_BATCHES_COLUMNS,
    InstitutionData,
    load_institution,
    parse_list_cell,
    read_table,
    validate_output_tables,
)
from stage2.contract.csvio import parse_bool_series
from stage2.contract.loader import ENROLLMENT_COLUMNS
from stage2.errors import InputValidationError, InvariantViolation, ValidationIssue

# A valid minimal institution. Row numbers in the tests refer to these lines (header = row 1).
BASE: dict[str, str] = {
    "student_data.csv": (
        "student_id,program_id,academic_year,semester,student_name,preferred_shift,preferred_languages,is_active,hostel\n"
        "S1,P1,2024-25,1,Ann,MORNING,en;hi,true,yes\n"
        'S2,P1,2024-25,1,Bob,eve,"[""en""]",,no\n'
        "S3,P2,2024-25,3,Cy,SH1,,false,\n"
    ),
    "programs.csv": "program_id,program_name\nP1,BSc\nP2,BA\n",
    "courses.csv": (
        "course_id,course_name,course_type,credits,max_sessions_per_week\n"
        "C1,Maths,core,4,3\n"
        "C2,Physics,,3.5,2\n"
        "C3,Art,Elective,2,1\n"
    ),
    "student_course_enrollment.csv": (
        "student_id,course_id,is_mandatory,academic_year,semester,enrollment_date\n"
        "S1,C1,true,2024-25,1,2024-07-01\n"
        "S1,C2,no,2024-25,1,\n"
        "S2,C1,,2024-25,1,\n"
        "S3,C3,F,2024-25,3,\n"
    ),
    "rooms.csv": "room_id,capacity,room_type\nR1,60,lecture hall\nR2,30,Lab\n",
    "shifts.csv": "shift_id,shift_code,shift_name,shift_type\nSH1,MOR,Morning,morning\nSH2,EVE,Evening,Evening\n",
}


def write_institution(directory: Path, **changes: str | bytes | None) -> Path:
    """Write :data:`BASE` into ``directory``; a change replaces a file (``name_csv=...``) or, if
    ``None``, leaves it out."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | bytes | None] = dict(BASE)
    files.update({name.replace("_csv", ".csv"): content for name, content in changes.items()})
    for name, content in files.items():
        if content is None:
            continue
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (directory / name).write_bytes(data)
    return directory


def load(tmp_path: Path, **changes: str | bytes | None) -> InstitutionData:
    return load_institution(write_institution(tmp_path / "in", **changes))


def problems(tmp_path: Path, **changes: str | bytes | None) -> InputValidationError:
    with pytest.raises(InputValidationError) as caught:
        load(tmp_path, **changes)
    return caught.value


def only(error: InputValidationError, code: str) -> list[ValidationIssue]:
    found = [issue for issue in error.issues if issue.code == code]
    assert found, f"no {code} in {[str(i) for i in error.issues]}"
    return found


def assert_names(issue: ValidationIssue, file: str, *, row: int | None = None, column: str | None = None) -> None:
    """The issue and its message name the file and, when given, the row and column."""
    text = str(issue)
    assert issue.file == file and file in text
    if row is not None:
        assert issue.row == row and f"row {row}" in text
    if column is not None:
        assert issue.column == column and f"'{column}'" in text


# ------------------------------------------------------------------------------ valid input


def test_valid_minimal_institution_loads_with_normalised_types(tmp_path: Path) -> None:
    data = load(tmp_path)

    students = data.students
    assert students["student_id"].tolist() == ["S1", "S2", "S3"]
    assert isinstance(students["student_id"].dtype, pd.StringDtype)
    assert students["semester"].dtype == "Int64"
    assert students["is_active"].dtype == bool
    assert students["is_active"].tolist() == [True, True, False]  # empty cell -> default true
    assert students["preferred_shift"].tolist() == ["SH1", "SH2", "SH1"]  # type, code, id
    assert students["preferred_shift_raw"].tolist() == ["MORNING", "eve", "SH1"]
    assert students["preferred_languages"].tolist() == [("en", "hi"), ("en",), ()]
    assert students["hostel"].tolist()[:2] == ["yes", "no"]  # unknown extra column kept
    assert pd.isna(students["hostel"].iloc[2])
    assert isinstance(students.index, pd.RangeIndex)
    assert data.active_students["student_id"].tolist() == ["S1", "S2"]
    assert data.n_inactive == 1

    assert data.courses["course_type"].tolist() == ["CORE", "CORE", "ELECTIVE"]  # default CORE
    assert data.courses["credits"].dtype == "Float64"
    assert data.courses["max_sessions_per_week"].tolist() == [3, 2, 1]
    assert data.rooms["capacity"].dtype == "Int64"
    assert data.rooms["room_type"].tolist() == ["LECTURE_HALL", "LAB"]
    assert data.shifts["shift_type"].tolist() == ["MORNING", "EVENING"]

    enrollments = data.enrollments
    assert tuple(enrollments.columns) == (*ENROLLMENT_COLUMNS, "is_history")
    assert list(zip(enrollments["student_id"], enrollments["course_id"], strict=True)) == [
        ("S1", "C1"),
        ("S1", "C2"),
        ("S2", "C1"),
        ("S3", "C3"),
    ]
    assert enrollments["is_mandatory"].dtype == "boolean"
    assert enrollments["is_mandatory"].tolist()[:2] == [True, False]
    assert pd.isna(enrollments["is_mandatory"].iloc[2])
    assert enrollments["enrollment_date"].iloc[0] == "2024-07-01"

    assert re.fullmatch(r"[0-9a-f]{64}", data.digest)
    assert sorted(data.file_digests) == sorted(BASE)
    assert data.warnings == []


def test_digest_changes_with_any_file_byte(tmp_path: Path) -> None:
    first = load_institution(write_institution(tmp_path / "a"))
    second = load_institution(write_institution(tmp_path / "b", rooms_csv=BASE["rooms.csv"].replace("60", "61")))
    same = load_institution(write_institution(tmp_path / "c"))
    assert first.digest == same.digest
    assert first.digest != second.digest
    assert first.file_digests["rooms.csv"] != second.file_digests["rooms.csv"]
    assert first.file_digests["courses.csv"] == second.file_digests["courses.csv"]


def test_enrollments_from_enrolled_courses_column(tmp_path: Path) -> None:
    students = (
        "student_id,program_id,academic_year,semester,enrolled_courses\n"
        "S1,P1,2024-25,1,C1;C2\n"
        "S2,P1,2024-25,2,C1 | C3\n"
        'S3,P2,2024-25,3,"[""C2"", ""C3""]"\n'
    )
    data = load(tmp_path, student_data_csv=students, student_course_enrollment_csv=None)
    pairs = list(zip(data.enrollments["student_id"], data.enrollments["course_id"], strict=True))
    assert pairs == [("S1", "C1"), ("S1", "C2"), ("S2", "C1"), ("S2", "C3"), ("S3", "C2"), ("S3", "C3")]
    assert data.enrollments["semester"].tolist() == [1, 1, 2, 2, 3, 3]  # from the student's row
    assert data.enrollments["is_mandatory"].isna().all()
    assert data.students["enrolled_courses"].tolist() == [("C1", "C2"), ("C1", "C3"), ("C2", "C3")]
    assert data.students["is_active"].all()  # no is_active column: everyone active


def test_both_enrollment_sources_use_the_file_and_warn(tmp_path: Path) -> None:
    students = ("student_id,program_id,academic_year,enrolled_courses\n"
                "S1,P1,2024-25,C3\nS2,P1,2024-25,C3\nS3,P2,2024-25,C3\n")
    data = load(tmp_path, student_data_csv=students)
    assert data.enrollments["course_id"].tolist() == ["C1", "C2", "C1", "C3"]
    assert any("enrolled_courses" in w and "student_course_enrollment.csv" in w for w in data.warnings)


def test_duplicate_enrollments_are_dropped_with_a_warning(tmp_path: Path) -> None:
    enrollment = BASE["student_course_enrollment.csv"] + "S1,C1,true,2024-25,1,\n"
    data = load(tmp_path, student_course_enrollment_csv=enrollment)
    assert len(data.enrollments) == 4
    assert any("row 6" in w for w in data.warnings)


def test_default_shift_when_shifts_file_absent(tmp_path: Path) -> None:
    students = BASE["student_data.csv"].replace("MORNING", "flexible")
    data = load(tmp_path, student_data_csv=students, shifts_csv=None)
    assert data.shifts.to_dict("records") == [
        {"shift_id": "DEFAULT", "shift_code": "DEFAULT", "shift_name": "Default shift", "shift_type": "FLEXIBLE"}
    ]
    # 'flexible' is the default shift's type; 'eve' and 'SH1' name no shift and are ignored
    assert data.students["preferred_shift"].iloc[0] == "DEFAULT"
    assert data.students["preferred_shift"].iloc[1:].isna().all()
    assert any("preferred_shift" in w for w in data.warnings)


def test_header_only_shifts_file_gives_the_default_shift(tmp_path: Path) -> None:
    data = load(tmp_path, shifts_csv="shift_id,shift_code,shift_type\n")
    assert data.shifts["shift_id"].tolist() == ["DEFAULT"]
    assert any("shifts.csv" in w for w in data.warnings)


def test_optional_tables_are_loaded(tmp_path: Path) -> None:
    data = load(
        tmp_path,
        course_prerequisites_csv="course_id,prerequisite_course_id,is_mandatory\nC2,C1,yes\n",
        dynamic_parameters_csv="parameter_id,parameter_code,data_type\nDP1,batch_size.max,INTEGER\n",
        entity_parameter_values_csv=(
            "value_id,entity_type,entity_id,parameter_id,integer_value,parameter_value,effective_from\n"
            "V1,PROGRAM,P1,DP1,40,,2024-01-01\n"
        ),
        faculty_csv="faculty_id,name\nF1,Dr A\nF2,Dr B\n",
    )
    assert data.prerequisites is not None and data.prerequisites["is_mandatory"].tolist() == [True]
    assert data.dynamic_parameters is not None
    values = data.entity_parameter_values
    assert values is not None and values["integer_value"].tolist() == [40]
    assert values["effective_from"].iloc[0] == pd.Timestamp("2024-01-01")
    assert data.faculty is not None and data.faculty["faculty_id"].tolist() == ["F1", "F2"]


def test_header_only_optional_file_is_treated_as_absent(tmp_path: Path) -> None:
    data = load(tmp_path, course_prerequisites_csv="course_id,prerequisite_course_id\n")
    assert data.prerequisites is None
    assert any("course_prerequisites.csv" in w for w in data.warnings)


# ------------------------------------------------------------------------------ reading rules


def test_read_table_strips_bom_and_white_space(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbf student_id , name \n  S1 ,  Ann  \n")
    frame = read_table(path)
    assert list(frame.columns) == ["student_id", "name"]
    assert frame.iloc[0].tolist() == ["S1", "Ann"]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_read_table_detects_delimiter(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(delimiter.join(["room_id", "capacity", "note"]) + "\n" + delimiter.join(["R1", "60", "a,b"]) + "\n")
    frame = read_table(path)
    assert list(frame.columns) == ["room_id", "capacity", "note"]
    assert frame.iloc[0].tolist() == ["R1", "60", "a,b"]


def test_read_table_quoted_comma_and_newline(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('course_id,course_name\nC1,"Maths, applied\nand pure"\nC2,"Say ""hi"""\n')
    frame = read_table(path)
    assert frame["course_name"].tolist() == ["Maths, applied\nand pure", 'Say "hi"']


def test_read_table_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"room_id,capacity\r\nR1,60\r\nR2,30\r\n")
    frame = read_table(path)
    assert frame.to_dict("list") == {"room_id": ["R1", "R2"], "capacity": ["60", "30"]}


def test_read_table_empty_cells_are_null_and_blank_records_dropped(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,\n,\n3,4\n")
    frame = read_table(path)
    assert frame["a"].tolist() == ["1", "3"]
    assert pd.isna(frame["b"].iloc[0])
    assert frame.index.tolist() == [0, 2]  # record positions kept: row = index + 2


def test_loader_accepts_bom_semicolons_and_crlf(tmp_path: Path) -> None:
    students = BASE["student_data.csv"].replace(",", ";").replace("en;hi", '"en;hi"').replace("\n", "\r\n")
    data = load(tmp_path, student_data_csv=b"\xef\xbb\xbf" + students.encode())
    assert data.students["student_id"].tolist() == ["S1", "S2", "S3"]
    assert data.students["preferred_languages"].iloc[0] == ("en", "hi")


def test_parse_list_cell_forms() -> None:
    assert parse_list_cell("a; b ;c") == ("a", "b", "c")
    assert parse_list_cell("a|b||") == ("a", "b")
    assert parse_list_cell('["a", " b"]') == ("a", "b")
    assert parse_list_cell(None) == ()
    with pytest.raises(ValueError):
        parse_list_cell('["a",')


def test_parse_bool_series_tokens() -> None:
    series = pd.Series(["TRUE", "f", "1", "No", "yes", None, "maybe"], dtype="string")
    parsed, issues = parse_bool_series(series, file="x.csv", column="flag")
    assert parsed.iloc[:5].tolist() == [True, False, True, False, True]
    assert parsed.iloc[5:].isna().all()
    assert [(i.code, i.row, i.value) for i in issues] == [("INVALID_BOOLEAN", 8, "maybe")]


# ------------------------------------------------------------------------------ bad input


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError) as caught:
        load_institution(tmp_path / "nowhere")
    assert caught.value.issues[0].code == "MISSING_FILE"
    assert "nowhere" in str(caught.value)


def test_missing_required_file(tmp_path: Path) -> None:
    error = problems(tmp_path, rooms_csv=None)
    assert_names(only(error, "MISSING_FILE")[0], "rooms.csv")
    assert "rooms.csv" in str(error)


def test_missing_enrollment_file_without_list_column(tmp_path: Path) -> None:
    error = problems(tmp_path, student_course_enrollment_csv=None)
    issue = only(error, "MISSING_FILE")[0]
    assert_names(issue, "student_course_enrollment.csv")
    assert "enrolled_courses" in issue.message


def test_missing_required_column(tmp_path: Path) -> None:
    error = problems(tmp_path, rooms_csv="room_id,room_type\nR1,LAB\n")
    assert_names(only(error, "MISSING_COLUMN")[0], "rooms.csv", column="capacity")


def test_duplicate_ids_name_every_row(tmp_path: Path) -> None:
    students = BASE["student_data.csv"] + "S1,P1,2024-25,1,Ann again,,,,\n"
    issues = only(problems(tmp_path, student_data_csv=students), "DUPLICATE_KEY")
    assert sorted(i.row for i in issues) == [2, 5]
    for issue in issues:
        assert_names(issue, "student_data.csv", column="student_id")
        assert issue.value == "S1"
    assert "row(s) 5" in issues[0].message or "row(s) 2" in issues[0].message


def test_blank_id(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, rooms_csv="room_id,capacity\nR1,60\n ,30\n"), "BLANK_KEY")[0]
    assert_names(issue, "rooms.csv", row=3, column="room_id")


def test_blank_passthrough_key_and_duplicate(tmp_path: Path) -> None:
    error = problems(tmp_path, departments_csv="department_id,name\nD1,A\n,B\nD1,C\n")
    assert_names(only(error, "BLANK_KEY")[0], "departments.csv", row=3, column="department_id")
    assert sorted(i.row for i in only(error, "DUPLICATE_KEY")) == [2, 4]


def test_dangling_program(tmp_path: Path) -> None:
    students = BASE["student_data.csv"].replace("S3,P2", "S3,P9")
    issue = only(problems(tmp_path, student_data_csv=students), "DANGLING_REFERENCE")[0]
    assert_names(issue, "student_data.csv", row=4, column="program_id")
    assert issue.value == "P9" and "programs.csv" in issue.message


def test_dangling_course_and_student_in_enrollments(tmp_path: Path) -> None:
    enrollment = BASE["student_course_enrollment.csv"] + "S1,C9,,,,\nS7,C1,,,,\n"
    issues = only(problems(tmp_path, student_course_enrollment_csv=enrollment), "DANGLING_REFERENCE")
    by_column = {i.column: i for i in issues}
    assert_names(by_column["course_id"], "student_course_enrollment.csv", row=6, column="course_id")
    assert by_column["course_id"].value == "C9"
    assert_names(by_column["student_id"], "student_course_enrollment.csv", row=7, column="student_id")
    assert by_column["student_id"].value == "S7"


def test_dangling_course_in_enrolled_courses_column(tmp_path: Path) -> None:
    students = "student_id,program_id,academic_year,enrolled_courses\nS1,P1,2024-25,C1\nS2,P1,2024-25,C1;C9\n"
    error = problems(tmp_path, student_data_csv=students, student_course_enrollment_csv=None)
    issue = only(error, "DANGLING_REFERENCE")[0]
    assert_names(issue, "student_data.csv", row=3, column="enrolled_courses")
    assert issue.value == "C9"


def test_dangling_preferred_shift(tmp_path: Path) -> None:
    students = BASE["student_data.csv"].replace("MORNING", "NIGHT")
    issue = only(problems(tmp_path, student_data_csv=students), "DANGLING_REFERENCE")[0]
    assert_names(issue, "student_data.csv", row=2, column="preferred_shift")
    assert issue.value == "NIGHT"


def test_dangling_prerequisite(tmp_path: Path) -> None:
    error = problems(tmp_path, course_prerequisites_csv="course_id,prerequisite_course_id\nC2,C1\nC3,C8\n")
    assert_names(only(error, "DANGLING_REFERENCE")[0], "course_prerequisites.csv", row=3,
                 column="prerequisite_course_id")


def test_dangling_parameter(tmp_path: Path) -> None:
    error = problems(
        tmp_path,
        dynamic_parameters_csv="parameter_id,parameter_code\nDP1,batch_size.max\n",
        entity_parameter_values_csv="entity_type,entity_id,parameter_id,integer_value\nPROGRAM,P1,DP1,40\nPROGRAM,P1,DP2,30\n",
    )
    issue = only(error, "DANGLING_REFERENCE")[0]
    assert_names(issue, "entity_parameter_values.csv", row=3, column="parameter_id")
    assert issue.value == "DP2"


def test_empty_file(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, programs_csv=b""), "EMPTY_TABLE")[0]
    assert_names(issue, "programs.csv")
    assert "empty" in issue.message


def test_header_only_file(tmp_path: Path) -> None:
    issue = only(problems(tmp_path, programs_csv="program_id,program_name\n"), "EMPTY_TABLE")[0]
    assert_names(issue, "programs.csv")
    assert "no data rows" in issue.message


def test_latin1_bytes(tmp_path: Path) -> None:
    rooms = "room_id,capacity,room_name\nR1,60,Hall\nR2,30,Salle \xe9t\xe9\n".encode("latin-1")
    issue = only(problems(tmp_path, rooms_csv=rooms), "ENCODING_ERROR")[0]
    assert_names(issue, "rooms.csv", row=3)
    assert "line 3" in issue.message


def test_bad_enum(tmp_path: Path) -> None:
    courses = BASE["courses.csv"].replace("Elective", "mandatory")
    issue = only(problems(tmp_path, courses_csv=courses), "INVALID_ENUM")[0]
    assert_names(issue, "courses.csv", row=4, column="course_type")
    assert "ELECTIVE" in issue.message


def test_non_numeric_semester(tmp_path: Path) -> None:
    students = BASE["student_data.csv"].replace("P2,2024-25,3", "P2,2024-25,third")
    error = problems(tmp_path, student_data_csv=students)
    issues = only(error, "INVALID_NUMBER")
    assert len(issues) == 1  # not reported again as a null by the schema
    assert_names(issues[0], "student_data.csv", row=4, column="semester")
    assert issues[0].value == "third"


def test_non_numeric_required_number_is_reported_once(tmp_path: Path) -> None:
    issues = problems(tmp_path, rooms_csv="room_id,capacity\nR1,60\nR2,sixty\n").issues
    assert [(i.code, i.row, i.column, i.value) for i in issues] == [("INVALID_NUMBER", 3, "capacity", "sixty")]


@pytest.mark.parametrize("capacity", ["0", "5000"])
def test_capacity_out_of_range(tmp_path: Path, capacity: str) -> None:
    issue = only(problems(tmp_path, rooms_csv=f"room_id,capacity\nR1,60\nR2,{capacity}\n"), "INVALID_NUMBER")[0]
    assert_names(issue, "rooms.csv", row=3, column="capacity")
    assert str(issue.value) == capacity
    assert "between 1 and 1000" in issue.message


def test_credits_above_maximum(tmp_path: Path) -> None:
    courses = BASE["courses.csv"].replace("C2,Physics,,3.5", "C2,Physics,,25")
    issue = only(problems(tmp_path, courses_csv=courses), "INVALID_NUMBER")[0]
    assert_names(issue, "courses.csv", row=3, column="credits")
    assert "at most 20" in issue.message


def test_bad_boolean(tmp_path: Path) -> None:
    students = BASE["student_data.csv"].replace("en;hi,true", "en;hi,maybe")
    issue = only(problems(tmp_path, student_data_csv=students), "INVALID_BOOLEAN")[0]
    assert_names(issue, "student_data.csv", row=2, column="is_active")
    assert issue.value == "maybe"


def test_eav_row_with_two_values(tmp_path: Path) -> None:
    error = problems(
        tmp_path,
        dynamic_parameters_csv="parameter_id,parameter_code\nDP1,batch_size.max\n",
        entity_parameter_values_csv=(
            "entity_type,entity_id,parameter_id,integer_value,parameter_value\n"
            "PROGRAM,P1,DP1,40,\n"
            "PROGRAM,P2,DP1,40,forty\n"
        ),
    )
    issue = only(error, "INVALID_VALUE")[0]
    assert_names(issue, "entity_parameter_values.csv", row=3)
    assert "exactly one of" in issue.message


def test_active_student_without_courses(tmp_path: Path) -> None:
    enrollment = "\n".join(BASE["student_course_enrollment.csv"].splitlines()[:3]) + "\n"  # S1 only
    error = problems(tmp_path, student_course_enrollment_csv=enrollment)
    issues = only(error, "FEATURE_EXTRACTION_ERROR")
    assert [(i.row, i.value) for i in issues] == [(3, "S2")]  # S3 is inactive: not an error
    assert_names(issues[0], "student_data.csv", row=3)


def test_problems_in_several_files_are_reported_together(tmp_path: Path) -> None:
    error = problems(
        tmp_path,
        rooms_csv="room_id,capacity\nR1,0\n",
        courses_csv=BASE["courses.csv"].replace("core", "bogus"),
        programs_csv=None,
        student_data_csv=BASE["student_data.csv"].replace("en;hi,true", "en;hi,perhaps"),
    )
    located = {(i.code, i.file) for i in error.issues}
    assert {
        ("INVALID_NUMBER", "rooms.csv"),
        ("INVALID_ENUM", "courses.csv"),
        ("MISSING_FILE", "programs.csv"),
        ("INVALID_BOOLEAN", "student_data.csv"),
    } <= located
    assert error.code == "INPUT_VALIDATION_FAILED"
    for file in ("rooms.csv", "courses.csv", "programs.csv", "student_data.csv"):
        assert file in str(error)


# ------------------------------------------------------------------------------ output schemas


def _outputs() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    batches = pd.DataFrame(
        [["b1", "t", "i", "P1", "BC1", "Batch 1", 2, "2024-25", 1, "SH1", 60, "ts", True, "R1", "SH1"]],
        columns=list(STUDENT_BATCHES_COLUMNS),
    )
    membership = pd.DataFrame(
        [
            ["m1", "b1", "S1", "Ann", "P1", "2024-25", None, "ACTIVE", "ts", True],
            ["m2", "b1", "S2", "Bob", "P1", "2024-25", None, "ACTIVE", "ts", True],
        ],
        columns=list(MEMBERSHIP_COLUMNS),
    )
    enrollment = pd.DataFrame(
        [["e1", "b1", "C1", "Maths", 4, "ENROLLED", 2, 0.5, 4, True, 1, 3, True, "ts"]],
        columns=list(BATCH_COURSE_ENROLLMENT_COLUMNS),
    )
    return batches, membership, enrollment


def test_valid_outputs_pass() -> None:
    validate_output_tables(*_outputs())


def test_output_with_wrong_column_order_fails() -> None:
    batches, membership, enrollment = _outputs()
    with pytest.raises(InvariantViolation, match="student_batches.csv"):
        validate_output_tables(batches[list(reversed(batches.columns))], membership, enrollment)


def test_output_with_bad_status_and_count_fails() -> None:
    batches, membership, enrollment = _outputs()
    enrollment.loc[0, "enrollment_status"] = "MAYBE"
    with pytest.raises(InvariantViolation, match="enrollment_status"):
        validate_output_tables(batches, membership, enrollment)
    _, _, enrollment = _outputs()
    batches.loc[0, "student_count"] = 3
    with pytest.raises(InvariantViolation, match="student_count"):
        validate_output_tables(batches, membership, enrollment)
