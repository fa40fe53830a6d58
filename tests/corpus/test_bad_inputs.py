"""A corpus of broken inputs and configurations, each run through the REAL pipeline.

Every case copies one small valid synthetic institution (300 students), breaks it in exactly one
way (a file edit and/or configuration overrides), runs ``process_student_batching`` and checks:

- a failure: the exception class, its ``code`` and ``exit_code``; that the message names the
  file/row/column (or group, or EAV row) with concrete substrings; that ``errors.json`` in the
  output directory records the code; and that no Stage 3 CSV exists in the output directory;
- a success: the three Stage 3 CSVs keep every invariant of the data contract and the report's
  quality measures are those recomputed from the files (``assert_outputs_valid``, conftest.py).

Row numbers follow the contract: the header is row 1, so the file's 5th line is ``row 5``.
Mutations pick the row themselves, so the expected locations do not depend on the generator.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import (
    OFFLINE_OVERRIDES,
    active_student_ids,
    assert_no_outputs,
    assert_outputs_valid,
    read_output,
    run_batching,
    subprocess_env,
)

from stage2.errors import ConfigurationError, EnvironmentFault, InfeasibleError, InputValidationError, Stage2Error
from stage2.outputs import ERRORS_FILE
from stage2.reporting import audit

SEED = 1
N_STUDENTS = 300
#: an MLflow server that is down (nothing listens on the discard port), and a SQLite store
#: that cannot be created
DOWN_SERVER = "http://127.0.0.1:9"
UNCREATABLE_STORE = "sqlite:////proc/nonexistent/x.db"


# ------------------------------------------------------------------------------------------
# file editing helpers (csv module: quoting and newlines round-trip exactly)


def read_rows(directory: Path, file: str, *, delimiter: str = ",") -> list[list[str]]:
    with open(directory / file, newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


def write_rows(directory: Path, file: str, rows: Sequence[Sequence[str]], *, delimiter: str = ",",
               terminator: str = "\n", encoding: str = "utf-8", bom: bool = False) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=terminator).writerows(rows)
    data = buffer.getvalue().encode(encoding)
    (directory / file).write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)


def set_cell(directory: Path, file: str, row: int, column: str, value: str) -> None:
    """Set one cell; ``row`` is the contract's row number (header = 1)."""
    rows = read_rows(directory, file)
    rows[row - 1][rows[0].index(column)] = value
    write_rows(directory, file, rows)


def cell(directory: Path, file: str, row: int, column: str) -> str:
    rows = read_rows(directory, file)
    return rows[row - 1][rows[0].index(column)]


def set_column(directory: Path, file: str, column: str, value: Callable[[str], str]) -> None:
    rows = read_rows(directory, file)
    i = rows[0].index(column)
    for r in rows[1:]:
        r[i] = value(r[i])
    write_rows(directory, file, rows)


def drop_column(directory: Path, file: str, column: str) -> None:
    rows = read_rows(directory, file)
    i = rows[0].index(column)
    write_rows(directory, file, [r[:i] + r[i + 1:] for r in rows])


def append_eav(directory: Path, **values: str) -> int:
    """Append one entity_parameter_values row; return its row number."""
    rows = read_rows(directory, "entity_parameter_values.csv")
    header = rows[0]
    new = [""] * len(header)
    for column, value in values.items():
        new[header.index(column)] = value
    rows.append(new)
    write_rows(directory, "entity_parameter_values.csv", rows)
    return len(rows)


def parameter_id(directory: Path, code: str) -> str:
    rows = read_rows(directory, "dynamic_parameters.csv")
    h = rows[0]
    return next(r[h.index("parameter_id")] for r in rows[1:] if r[h.index("parameter_code")] == code)


def eav_row_of(directory: Path, code: str) -> int:
    """Row number of the first entity_parameter_values row setting parameter ``code``."""
    pid = parameter_id(directory, code)
    rows = read_rows(directory, "entity_parameter_values.csv")
    i = rows[0].index("parameter_id")
    return next(n for n, r in enumerate(rows, start=1) if n > 1 and r[i] == pid)


def one_room_one_shift(directory: Path) -> None:
    """Keep the first room and the first shift; preferences naming another shift are cleared."""
    rooms = read_rows(directory, "rooms.csv")
    write_rows(directory, "rooms.csv", rooms[:2])
    shifts = read_rows(directory, "shifts.csv")
    write_rows(directory, "shifts.csv", shifts[:2])
    h = shifts[0]
    kept = {shifts[1][h.index(c)].upper() for c in ("shift_id", "shift_code", "shift_type")}
    set_column(directory, "student_data.csv", "preferred_shift", lambda v: v if v.upper() in kept else "")


# ------------------------------------------------------------------------------------------
# the corpus


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Path], None] = lambda d: None
    overrides: tuple[str, ...] = ()
    #: None: the run must succeed
    error: type[Stage2Error] | None = None
    code: str | None = None
    exit_code: int | None = None
    #: substrings the exception's text must contain (file/row/column, group or EAV row)
    where: tuple[str, ...] = ()
    #: extra check on the output directory of a successful run
    check: Callable[[Path, Path], None] | None = field(default=None, compare=False)


def _bom(d: Path) -> None:
    for name in ("student_data.csv", "rooms.csv", "courses.csv"):
        path = d / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _semicolons(d: Path) -> None:
    for name in [p.name for p in d.glob("*.csv")]:
        rows = read_rows(d, name)
        if name == "student_data.csv":  # list cells: a;b would clash with the delimiter (quoted anyway)
            i = rows[0].index("preferred_languages")
            for r in rows[1:]:
                r[i] = r[i].replace(";", "|")
        write_rows(d, name, rows, delimiter=";")


def _crlf(d: Path) -> None:
    for name in [p.name for p in d.glob("*.csv")]:
        write_rows(d, name, read_rows(d, name), terminator="\r\n")


def _quoted_newline(d: Path) -> None:
    set_cell(d, "student_data.csv", 5, "student_name", 'Ann\nMarie, "Jr"')
    set_cell(d, "student_data.csv", 5, "is_active", "true")


def _check_quoted_newline(inp: Path, out: Path) -> None:
    members = read_output(out, "batch_student_membership")
    student = cell(inp, "student_data.csv", 5, "student_id")
    assert members.loc[members["student_id"] == student, "student_name"].tolist() == ['Ann\nMarie, "Jr"']


def _latin1(d: Path) -> None:
    rows = read_rows(d, "student_data.csv")
    rows[6][rows[0].index("student_name")] = "José Müller"
    write_rows(d, "student_data.csv", rows, encoding="latin-1")


def _duplicate_student(d: Path) -> None:
    rows = read_rows(d, "student_data.csv")
    rows.append(list(rows[3]))  # row 4 again, as row 302
    write_rows(d, "student_data.csv", rows)


def _no_courses(d: Path) -> None:
    set_cell(d, "student_data.csv", 5, "is_active", "true")
    student = cell(d, "student_data.csv", 5, "student_id")
    rows = read_rows(d, "student_course_enrollment.csv")
    write_rows(d, "student_course_enrollment.csv", [r for r in rows if r[0] != student])


def _all_inactive(d: Path) -> None:
    set_column(d, "student_data.csv", "is_active", lambda v: "false")


def _huge_name(d: Path) -> None:
    set_cell(d, "student_data.csv", 5, "student_name", "x" * 100_000)
    set_cell(d, "student_data.csv", 5, "is_active", "true")


def _check_huge_name(inp: Path, out: Path) -> None:
    members = read_output(out, "batch_student_membership")
    student = cell(inp, "student_data.csv", 5, "student_id")
    assert members.loc[members["student_id"] == student, "student_name"].str.len().tolist() == [100_000]


def _formulas(d: Path) -> None:
    for row, text in ((5, '=HYPERLINK("http://evil.example","click")'), (6, "+1+1"), (7, "@SUM(A1:A9)"), (8, "-2+3")):
        set_cell(d, "student_data.csv", row, "student_name", text)
        set_cell(d, "student_data.csv", row, "is_active", "true")


def _check_formulas(inp: Path, out: Path) -> None:
    members = read_output(out, "batch_student_membership").set_index("student_id")["student_name"]
    for row, text in ((5, '=HYPERLINK("http://evil.example","click")'), (6, "+1+1"), (7, "@SUM(A1:A9)"), (8, "-2+3")):
        assert members[cell(inp, "student_data.csv", row, "student_id")] == "'" + text
    assert not members.str.match(r"^[=+\-@\t\r]").any()


def _append_eav_code(d: Path, code: str, **value: str) -> None:
    """Append an INSTITUTION-wide EAV row for parameter ``code`` (added to dynamic_parameters if new)."""
    rows = read_rows(d, "dynamic_parameters.csv")
    h = rows[0]
    if code not in [r[h.index("parameter_code")] for r in rows[1:]]:
        new = [""] * len(h)
        new[h.index("parameter_id")], new[h.index("parameter_code")] = f"DP-{code}", code
        rows.append(new)
        write_rows(d, "dynamic_parameters.csv", rows)
    append_eav(d, value_id=f"EPV-{code}", entity_type="INSTITUTION", entity_id="INST-1",
               parameter_id=parameter_id(d, code), **value)


def _blank_line_in_eav(d: Path) -> None:
    """A spreadsheet's delimiter-only line after the header: ignored, but it still is a row."""
    rows = read_rows(d, "entity_parameter_values.csv")
    rows.insert(1, [""] * len(rows[0]))
    write_rows(d, "entity_parameter_values.csv", rows)


def _eav_min_above_max(d: Path) -> None:
    append_eav(d, value_id="EPV-900", entity_type="INSTITUTION", entity_id="INST-1",
               parameter_id=parameter_id(d, "batch_size.min"), integer_value="70", effective_from="2024-01-01")


def _eav_program_max_below_min(d: Path) -> None:
    append_eav(d, value_id="EPV-901", entity_type="PROGRAM", entity_id="PRG-CSE",
               parameter_id=parameter_id(d, "batch_size.max"), integer_value="5", effective_from="2024-01-01")


def _eav_two_values(d: Path) -> None:
    set_cell(d, "entity_parameter_values.csv", 2, "numeric_value", "40")


def _eav_bad_json(d: Path) -> None:
    row = eav_row_of(d, "constraint.shift_homogeneous")
    assert row == 3
    set_cell(d, "entity_parameter_values.csv", row, "json_value", "{field_name: preferred_shift")


def _eav_rule_weight_12(d: Path) -> None:
    set_cell(d, "entity_parameter_values.csv", 3, "json_value",
             '{"field_name": "cgpa", "rule_type": "max_variance", "weight": 12}')


def _eav_rule_unknown_field(d: Path) -> None:
    set_cell(d, "entity_parameter_values.csv", 3, "json_value",
             '{"field_name": "hostel", "rule_type": "homogeneous", "weight": 1}')


def _eav_fractional_bound(d: Path) -> None:
    append_eav(d, value_id="EPV-902", entity_type="INSTITUTION", entity_id="INST-1",
               parameter_id=parameter_id(d, "batch_size.min"), numeric_value="12.7")


def _under_by_three(d: Path) -> None:
    """Three CSE students move to semester 12 with their courses: a group of 3, below any min >= 4.
    (Their enrollment rows move too: rows of an earlier term are history, not batched.)"""
    rows = read_rows(d, "student_data.csv")
    h = rows[0]
    moved = [r for r in rows[1:] if r[h.index("program_id")] == "PRG-CSE"][:3]
    for r in moved:
        r[h.index("semester")] = "12"
        r[h.index("is_active")] = "true"
    write_rows(d, "student_data.csv", rows)
    ids = {r[h.index("student_id")] for r in moved}
    rows = read_rows(d, "student_course_enrollment.csv")
    h = rows[0]
    for r in rows[1:]:
        if r[h.index("student_id")] in ids:
            r[h.index("semester")] = "12"
    write_rows(d, "student_course_enrollment.csv", rows)


def _minimal_export(d: Path) -> None:
    """Only the contract's required files and columns (required: *), nothing optional."""
    required = {
        "student_data.csv": ("student_id", "program_id", "academic_year"),
        "programs.csv": ("program_id",),
        "courses.csv": ("course_id",),
        "student_course_enrollment.csv": ("student_id", "course_id"),
        "rooms.csv": ("room_id", "capacity"),
    }
    for path in d.glob("*.csv"):
        if path.name not in required:
            path.unlink()
    for name, columns in required.items():
        rows = read_rows(d, name)
        keep = [rows[0].index(c) for c in columns]
        write_rows(d, name, [[r[i] for i in keep] for r in rows])


def _one_line_prefix(path: Path) -> str:
    return path.read_text(encoding="utf-8-sig").splitlines()[0]


def _edit_line(path: Path, line: int, edit: Callable[[str], str]) -> None:
    """Edit one physical line (1-based) of a file as text."""
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = edit(lines[line - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def _unbalanced_quote(d: Path) -> None:
    """An opening quote that never closes, in the room_code of row 3 (no other quote in the file)."""
    code = cell(d, "rooms.csv", 3, "room_code")
    assert '"' not in (d / "rooms.csv").read_text()
    _edit_line(d / "rooms.csv", 3, lambda line: line.replace(f",{code},", f',"{code},', 1))


def _cut_mid_row(d: Path) -> None:
    """An interrupted export: programs.csv ends inside its last record (row 6), no final newline."""
    text = (d / "programs.csv").read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1]
    assert text.count("\n") == 6 and last.count(",") == 6
    (d / "programs.csv").write_text(text[: text.rindex(last) + last.index(",", last.index(",") + 1) + 3])


CASES: list[Case] = [
    # --- reading rules that must succeed
    Case("utf8-bom", _bom),
    Case("semicolon-delimiter", _semicolons),
    Case("crlf-line-endings", _crlf),
    Case("quoted-newline-in-name", _quoted_newline, check=_check_quoted_newline),
    Case("formula-injection-in-names", _formulas, check=_check_formulas),
    Case("100k-character-name", _huge_name, check=_check_huge_name),
    Case("100k-character-language-list",
         lambda d: set_cell(d, "student_data.csv", 5, "preferred_languages", ";".join(f"L{i}" for i in range(20_000)))),
    Case("blank-delimiter-only-lines", lambda d: (d / "rooms.csv").write_text(
        (d / "rooms.csv").read_text().replace("\n", "\n,,,,,,,\n", 2))),
    Case("no-final-newline", lambda d: [(d / name).write_text((d / name).read_text().rstrip("\n"))
                                        for name in ("programs.csv", "rooms.csv", "student_course_enrollment.csv")]),
    Case("no-optional-student-columns", lambda d: [drop_column(d, "student_data.csv", c) for c in
                                                  ("semester", "preferred_languages", "preferred_shift", "is_active")]),
    Case("minimal-export-required-columns-only", _minimal_export),
    # --- bytes and structure
    Case("latin-1-bytes", _latin1, error=InputValidationError, code="ENCODING_ERROR", exit_code=3,
         where=("student_data.csv, row 7", "byte 0xE9 on line 7")),
    Case("utf-16-without-bom",
         lambda d: (d / "programs.csv").write_bytes((d / "programs.csv").read_text().encode("utf-16-le")),
         error=InputValidationError, code="ENCODING_ERROR", exit_code=3, where=("programs.csv, row 1", "NUL byte")),
    Case("nul-byte-in-a-cell", lambda d: set_cell(d, "student_data.csv", 5, "student_name", "Ann\x00Bob"),
         error=InputValidationError, code="ENCODING_ERROR", exit_code=3, where=("student_data.csv, row 5",)),
    Case("empty-file", lambda d: (d / "rooms.csv").write_bytes(b""),
         error=InputValidationError, code="EMPTY_TABLE", exit_code=3, where=("rooms.csv: the file is empty",)),
    Case("header-only", lambda d: (d / "rooms.csv").write_text(_one_line_prefix(d / "rooms.csv") + "\n"),
         error=InputValidationError, code="EMPTY_TABLE", exit_code=3,
         where=("rooms.csv: the file has a header row but no data rows",)),
    Case("header-only-students-with-bom",
         lambda d: (d / "student_data.csv").write_bytes(
             b"\xef\xbb\xbf" + (_one_line_prefix(d / "student_data.csv") + "\r\n").encode()),
         error=InputValidationError, code="EMPTY_TABLE", exit_code=3, where=("student_data.csv",)),
    Case("unbalanced-quote", _unbalanced_quote,
         error=InputValidationError, code="PARSE_ERROR", exit_code=3,
         where=("rooms.csv, row 3", "EOF inside string starting at row 3")),
    Case("row-longer-than-header", lambda d: _edit_line(d / "rooms.csv", 4, lambda line: line + ",extra"),
         error=InputValidationError, code="PARSE_ERROR", exit_code=3,
         where=("rooms.csv, row 4", "Expected 8 fields in line 4, saw 9")),
    Case("file-cut-mid-row", _cut_mid_row, error=InputValidationError, code="PARSE_ERROR", exit_code=3,
         where=("programs.csv, row 6: the record has 3 of the header's 7 fields: no program_type, department_id, "
                "duration_years, total_credits",)),
    Case("duplicate-header-name", lambda d: (d / "rooms.csv").write_text(
        (d / "rooms.csv").read_text().replace("room_name", "room_code", 1)),
         error=InputValidationError, code="PARSE_ERROR", exit_code=3, where=("rooms.csv, row 1", "room_code")),
    Case("missing-required-column", lambda d: drop_column(d, "student_data.csv", "academic_year"),
         error=InputValidationError, code="MISSING_COLUMN", exit_code=3,
         where=("student_data.csv, column 'academic_year'",)),
    Case("missing-required-file", lambda d: (d / "courses.csv").unlink(),
         error=InputValidationError, code="MISSING_FILE", exit_code=3,
         where=("courses.csv: required file is missing",)),
    Case("missing-directory", lambda d: shutil.rmtree(d),
         error=InputValidationError, code="MISSING_FILE", exit_code=3, where=("the input directory does not exist",)),
    # --- keys and references
    Case("duplicate-student-id", _duplicate_student, error=InputValidationError, code="DUPLICATE_KEY", exit_code=3,
         where=("student_data.csv, row 4, column 'student_id'", "student_data.csv, row 302, column 'student_id'",
                "the same value is on row(s) 302")),
    Case("blank-room-id", lambda d: set_cell(d, "rooms.csv", 3, "room_id", "  "),
         error=InputValidationError, code="BLANK_KEY", exit_code=3,
         where=("rooms.csv, row 3, column 'room_id': the identifier is empty",)),
    Case("dangling-program", lambda d: set_cell(d, "student_data.csv", 5, "program_id", "PRG-NOPE"),
         error=InputValidationError, code="DANGLING_REFERENCE", exit_code=3,
         where=("student_data.csv, row 5, column 'program_id': not a program_id of programs.csv (value 'PRG-NOPE')",)),
    Case("dangling-course", lambda d: set_cell(d, "student_course_enrollment.csv", 7, "course_id", "NOPE-101"),
         error=InputValidationError, code="DANGLING_REFERENCE", exit_code=3,
         where=("student_course_enrollment.csv, row 7, column 'course_id': "
                "not a course_id of courses.csv (value 'NOPE-101')",)),
    Case("dangling-student", lambda d: set_cell(d, "student_course_enrollment.csv", 7, "student_id", "S999999"),
         error=InputValidationError, code="DANGLING_REFERENCE", exit_code=3,
         where=("student_course_enrollment.csv, row 7, column 'student_id': "
                "not a student_id of student_data.csv (value 'S999999')",)),
    Case("dangling-shift", lambda d: set_cell(d, "student_data.csv", 5, "preferred_shift", "MIDNIGHT"),
         error=InputValidationError, code="DANGLING_REFERENCE", exit_code=3,
         where=("student_data.csv, row 5, column 'preferred_shift'", "(value 'MIDNIGHT')")),
    Case("dangling-eav-parameter", lambda d: set_cell(d, "entity_parameter_values.csv", 3, "parameter_id", "DP-999"),
         error=InputValidationError, code="DANGLING_REFERENCE", exit_code=3,
         where=("entity_parameter_values.csv, row 3, column 'parameter_id'",)),
    # --- values
    Case("negative-capacity", lambda d: set_cell(d, "rooms.csv", 3, "capacity", "-5"),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("rooms.csv, row 3, column 'capacity': must be between 1 and 1000 (value '-5')",)),
    Case("capacity-5000", lambda d: set_cell(d, "rooms.csv", 3, "capacity", "5000"),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("rooms.csv, row 3, column 'capacity': must be between 1 and 1000 (value '5000')",)),
    Case("capacity-abc", lambda d: set_cell(d, "rooms.csv", 3, "capacity", "abc"),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("rooms.csv, row 3, column 'capacity': not a whole number (value 'abc')",)),
    Case("capacity-100k-digits", lambda d: set_cell(d, "rooms.csv", 3, "capacity", "1" * 100_000),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("rooms.csv, row 3, column 'capacity'",)),
    Case("semester-30-digits", lambda d: set_cell(d, "student_data.csv", 5, "semester", "9" * 30),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("student_data.csv, row 5, column 'semester': whole number too large", "(value '" + "9" * 30 + "')")),
    Case("bad-course-type", lambda d: set_cell(d, "courses.csv", 4, "course_type", "MANDATORY"),
         error=InputValidationError, code="INVALID_ENUM", exit_code=3,
         where=("courses.csv, row 4, column 'course_type': must be one of CORE, ELECTIVE", "(value 'MANDATORY')")),
    Case("non-numeric-semester", lambda d: set_cell(d, "student_data.csv", 5, "semester", "fifth"),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("student_data.csv, row 5, column 'semester': not a whole number (value 'fifth')",)),
    Case("semester-zero", lambda d: set_cell(d, "student_data.csv", 5, "semester", "0"),
         error=InputValidationError, code="INVALID_NUMBER", exit_code=3,
         where=("student_data.csv, row 5, column 'semester': must be between 1 and 12",)),
    Case("short-academic-year", lambda d: set_cell(d, "student_data.csv", 5, "academic_year", "24"),
         error=InputValidationError, code="INVALID_VALUE", exit_code=3,
         where=("student_data.csv, row 5, column 'academic_year': must be at least 4 characters",)),
    Case("bad-is-active", lambda d: set_cell(d, "student_data.csv", 5, "is_active", "maybe"),
         error=InputValidationError, code="INVALID_BOOLEAN", exit_code=3,
         where=("student_data.csv, row 5, column 'is_active'", "(value 'maybe')")),
    Case("bad-enrollment-date",
         lambda d: set_cell(d, "student_course_enrollment.csv", 6, "enrollment_date", "yesterday"),
         error=InputValidationError, code="INVALID_DATE", exit_code=3,
         where=("student_course_enrollment.csv, row 6, column 'enrollment_date'", "(value 'yesterday')")),
    Case("bad-effective-from", lambda d: set_cell(d, "entity_parameter_values.csv", 3, "effective_from", "2024-13-45"),
         error=InputValidationError, code="INVALID_DATE", exit_code=3,
         where=("entity_parameter_values.csv, row 3, column 'effective_from'", "(value '2024-13-45')")),
    Case("active-student-without-courses", _no_courses, error=InputValidationError, code="FEATURE_EXTRACTION_ERROR",
         exit_code=3, where=("student_data.csv, row 5, column 'student_id': active student has no course enrollment",)),
    Case("every-student-inactive", _all_inactive, error=InputValidationError, code="EMPTY_TABLE", exit_code=3,
         where=("student_data.csv, column 'is_active': every student is inactive",)),
    # --- EAV
    Case("eav-two-value-columns", _eav_two_values, error=InputValidationError, code="INVALID_VALUE", exit_code=3,
         where=("entity_parameter_values.csv, row 2: exactly one of parameter_value",)),
    Case("eav-json-not-json", _eav_bad_json, error=InputValidationError, code="INVALID_VALUE", exit_code=3,
         where=("entity_parameter_values.csv, row 3, column 'json_value': not valid JSON",)),
    Case("eav-effective-window-reversed",
         lambda d: set_cell(d, "entity_parameter_values.csv", 3, "effective_to", "2023-01-01"),
         error=InputValidationError, code="INVALID_VALUE", exit_code=3,
         where=("entity_parameter_values.csv, row 3: effective_to must be later than effective_from",)),
    Case("eav-min-above-max", _eav_min_above_max, error=ConfigurationError, code="BATCH_SIZE_BOUNDS_VIOLATED",
         exit_code=2,
         where=("entity_parameter_values.csv, row 5 (parameter 'batch_size.min')", "min=70")),
    Case("eav-program-max-below-min", _eav_program_max_below_min, error=ConfigurationError,
         code="BATCH_SIZE_BOUNDS_VIOLATED", exit_code=2,
         where=("program 'PRG-CSE'", "entity_parameter_values.csv, row 5 (parameter 'batch_size.max')", "max=5")),
    Case("eav-fractional-batch-size", _eav_fractional_bound, error=ConfigurationError,
         code="BATCH_SIZE_BOUNDS_VIOLATED",
         exit_code=2, where=("entity_parameter_values.csv, row 5 (parameter 'batch_size.min')", "12.7")),
    Case("eav-rule-weight-12", _eav_rule_weight_12, error=ConfigurationError, code="INVALID_CONSTRAINT_RULE",
         exit_code=2,
         where=("entity_parameter_values.csv, row 3 (parameter 'constraint.shift_homogeneous')", "weight 12.0")),
    Case("eav-rule-unknown-field", _eav_rule_unknown_field, error=ConfigurationError, code="INVALID_CONSTRAINT_RULE",
         exit_code=2, where=("entity_parameter_values.csv, row 3", "'hostel' is not a column of student_data.csv")),
    Case("eav-row-after-blank-line", lambda d: (_blank_line_in_eav(d), _eav_min_above_max(d)),
         error=ConfigurationError, code="BATCH_SIZE_BOUNDS_VIOLATED", exit_code=2,
         where=("entity_parameter_values.csv, row 6 (parameter 'batch_size.min')",)),
    Case("eav-weight-not-a-number", lambda d: _append_eav_code(d, "weights.size", parameter_value="heavy"),
         error=ConfigurationError, code="WEIGHT_NORMALIZATION_FAILED", exit_code=2,
         where=("entity_parameter_values.csv, row 5 (parameter 'weights.size')", "'heavy'")),
    Case("eav-weights-do-not-sum-to-1", lambda d: _append_eav_code(d, "weights.size", numeric_value="0.9"),
         error=ConfigurationError, code="WEIGHT_NORMALIZATION_FAILED", exit_code=2,
         where=("set by entity_parameter_values.csv, row 5 (parameter 'weights.size')", "size=0.9")),
    Case("eav-shared-threshold-above-1",
         lambda d: _append_eav_code(d, "enrollment.shared_threshold", numeric_value="1.5"),
         error=ConfigurationError, code="INVALID_CONFIGURATION", exit_code=2,
         where=("set by entity_parameter_values.csv, row 5 (parameter 'enrollment.shared_threshold')",)),
    Case("eav-boolean-batch-size", lambda d: _append_eav_code(d, "batch_size.max", boolean_value="true"),
         error=ConfigurationError, code="BATCH_SIZE_BOUNDS_VIOLATED", exit_code=2,
         where=("entity_parameter_values.csv, row 5 (parameter 'batch_size.max')", "whole number")),
    # --- configuration
    Case("weights-do-not-sum-to-1", overrides=("weights.homogeneity=0.9",), error=ConfigurationError,
         code="WEIGHT_NORMALIZATION_FAILED", exit_code=2, where=("weights", "sum 1.5")),
    Case("negative-weight", overrides=("weights.homogeneity=-0.2", "weights.balance=0.9", "weights.size=0.3"),
         error=ConfigurationError, code="WEIGHT_NORMALIZATION_FAILED", exit_code=2,
         where=("negative: ['homogeneity']",)),
    Case("min-above-max", overrides=("batch_size.min=70",), error=ConfigurationError, code="BATCH_SIZE_BOUNDS_VIOLATED",
         exit_code=2, where=("batch_size", "min=70, target=35, max=60")),
    Case("unknown-rule-type", overrides=("+constraints.rules.bad={field_name: cgpa, rule_type: bogus}",),
         error=ConfigurationError, code="INVALID_CONSTRAINT_RULE", exit_code=2,
         where=("constraints.rules.bad", "'bogus'")),
    Case("rule-weight-12",
         overrides=("+constraints.rules.bad={field_name: cgpa, rule_type: max_variance, weight: 12}",),
         error=ConfigurationError, code="INVALID_CONSTRAINT_RULE", exit_code=2,
         where=("constraints.rules.bad", "weight 12.0")),
    Case("rule-threshold-1.5",
         overrides=("+constraints.rules.bad={field_name: cgpa, rule_type: max_variance, threshold: 1.5}",),
         error=ConfigurationError, code="INVALID_CONSTRAINT_RULE", exit_code=2,
         where=("constraints.rules.bad", "threshold 1.5")),
    Case("hard-homogeneous-rule",
         overrides=("+constraints.rules.bad={field_name: gender, rule_type: homogeneous, constraint_level: hard}",),
         error=ConfigurationError, code="INVALID_CONSTRAINT_RULE", exit_code=2,
         where=("constraints.rules.bad",)),
    Case("rule-on-missing-column", overrides=("+constraints.rules.bad={field_name: hostel, rule_type: homogeneous}",),
         error=ConfigurationError, code="INVALID_CONSTRAINT_RULE", exit_code=2,
         where=("constraint rule 'bad'", "'hostel' is not a column of student_data.csv")),
    Case("as-of-not-a-time", overrides=("as_of=notadate",), error=ConfigurationError, code="INVALID_CONFIGURATION",
         exit_code=2, where=("as_of",)),
    # --- infeasible under strict
    Case("too-few-rooms-strict", one_room_one_shift,
         overrides=("strict=true", "batch_size.min=5", "batch_size.target=20"),
         error=InfeasibleError, code="INSUFFICIENT_ROOMS", exit_code=4,
         where=("rooms.csv / shifts.csv", "1 (room, shift) slots")),
    Case("no-home-room-type-strict",
         overrides=("strict=true", "batch_size.min=5", "resources.room_types=[NO_SUCH_TYPE]"),
         error=InfeasibleError, code="INSUFFICIENT_ROOMS", exit_code=4, where=("0 (room, shift) slots",)),
    Case("undersized-group-strict", _under_by_three,
         overrides=("strict=true", "batch_size.min=5", "batch_size.target=20"),
         error=InfeasibleError, code="CONSTRAINT_VIOLATION", exit_code=4,
         where=("group program_id=PRG-CSE, academic_year=2024-25, semester=12", "3 students < min 5")),
    # --- the same inputs without strict succeed (and say so in warnings)
    Case("too-few-rooms-not-strict", one_room_one_shift, overrides=("batch_size.min=5", "batch_size.target=20")),
    Case("undersized-group-not-strict", _under_by_three, overrides=("batch_size.min=5", "batch_size.target=20")),
    # --- the environment (exit 5): checked before the data is read (here also broken: not reported)
    Case("tracking-server-down", lambda d: (d / "rooms.csv").write_bytes(b""),
         overrides=("tracking.enabled=true", f"tracking.uri={DOWN_SERVER}"),
         error=EnvironmentFault, code="TRACKING_UNAVAILABLE", exit_code=5,
         where=(f"the MLflow tracking store {DOWN_SERVER} cannot be used", "start the MLflow server")),
    Case("tracking-store-uncreatable", lambda d: (d / "rooms.csv").write_bytes(b""),
         overrides=("tracking.enabled=true", f"tracking.uri={UNCREATABLE_STORE}"),
         error=EnvironmentFault, code="TRACKING_UNAVAILABLE", exit_code=5,
         where=(f"the MLflow tracking store {UNCREATABLE_STORE} cannot be used", "/proc/nonexistent")),
]


def _faculty(d: Path, *, hours: str = "2", level: str = "7", teacher: str = "F1") -> None:
    """One teacher of ``hours`` a week (faculty.csv row 2), competent in every course; the
    competency of the first course (row 2) names ``teacher`` and has ``level``."""
    courses = [r[0] for r in read_rows(d, "courses.csv")[1:]]
    write_rows(d, "faculty.csv", [["faculty_id", "faculty_name", "max_hours_per_week"], ["F1", "Ada", hours]])
    rows = [["faculty_id", "course_id", "competency_level"]] + [["F1", c, "7"] for c in courses]
    rows[1] = [teacher, courses[0], level]
    write_rows(d, "faculty_course_competency.csv", rows)


def _check_faculty_warning(_: Path, out: Path) -> None:
    report = json.loads((out / "quality_report.json").read_text())
    assert any(w.startswith("[INSUFFICIENT_FACULTY] the competent faculty can cover 2 of") for w in report["warnings"])
    assert 0 < report["metrics"]["faculty_coverage"] < 1
    assert (out / "faculty_report.csv").exists() and (out / "faculty_load.csv").exists()


# the faculty tables and the faculty check (issue 16, part 2)
CASES += [
    Case("faculty-short-strict", _faculty, overrides=("strict=true", "batch_size.min=5"), error=InfeasibleError,
         code="INSUFFICIENT_FACULTY", exit_code=4,
         where=("faculty.csv / faculty_course_competency.csv", "cover 2 of", "section-hours")),
    Case("faculty-short-not-strict", _faculty, check=_check_faculty_warning),
    Case("competency-of-unknown-teacher", lambda d: _faculty(d, teacher="F9"), error=InputValidationError,
         code="DANGLING_REFERENCE", exit_code=3,
         where=("faculty_course_competency.csv, row 2, column 'faculty_id': not a faculty_id of faculty.csv",)),
    Case("competency-level-11", lambda d: _faculty(d, level="11"), error=InputValidationError,
         code="INVALID_NUMBER", exit_code=3,
         where=("faculty_course_competency.csv, row 2, column 'competency_level': must be between 1 and 10",)),
    Case("faculty-hours-61", lambda d: _faculty(d, hours="61"), error=InputValidationError, code="INVALID_NUMBER",
         exit_code=3, where=("faculty.csv, row 2, column 'max_hours_per_week': must be between 1 and 60",)),
    Case("faculty-session-hours-0", overrides=("resources.faculty.session_hours=0",), error=ConfigurationError,
         code="INVALID_CONFIGURATION", exit_code=2, where=("resources.faculty.session_hours",)),
]


# ------------------------------------------------------------------------------------------
# running a case


@pytest.fixture
def base_dir(make_institution_dir, tmp_path) -> Path:
    target = tmp_path / "input"
    shutil.copytree(make_institution_dir(N_STUDENTS, seed=SEED), target)
    return target


def assert_failure(case: Case, error: Stage2Error, out: Path) -> None:
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    assert error.code == case.code, str(error)
    assert error.exit_code == case.exit_code
    text = str(error)
    for fragment in case.where:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert error.fix, "every error says how to fix it"
    if isinstance(error, InputValidationError):
        assert error.issues and all(i.code == case.code for i in error.issues), [str(i) for i in error.issues]
    record = json.loads((out / ERRORS_FILE).read_text())
    assert record["status"] == "failed" and record["error"]["code"] == case.code
    assert record["error"]["exit_code"] == case.exit_code
    assert_no_outputs(out)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_case(case: Case, base_dir: Path, compose_config, tmp_path: Path) -> None:
    case.mutate(base_dir)
    out = tmp_path / "out"
    out.mkdir()
    # a stale output of an earlier run must not survive a failed run
    (out / "student_batches.csv").write_text("stale\n")
    if case.error is None:
        run_batching(compose_config, base_dir, out, case.overrides)
        assert_outputs_valid(out, base_dir)
        if case.check is not None:
            case.check(base_dir, out)
    else:
        with pytest.raises(Stage2Error) as caught:
            run_batching(compose_config, base_dir, out, case.overrides)
        assert_failure(case, caught.value, out)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.error is None for c in CASES) >= 5


# ------------------------------------------------------------------------------------------
# specific cases


def test_blank_student_id_is_reported_with_its_consequences_only(base_dir, compose_config, tmp_path):
    """A blank student_id: BLANK_KEY on its row; its enrollments now dangle (reported), but the
    blank row is not also reported as an active student without courses."""
    student = cell(base_dir, "student_data.csv", 5, "student_id")
    set_cell(base_dir, "student_data.csv", 5, "student_id", "")
    out = tmp_path / "out"
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, base_dir, out)
    error = caught.value
    assert error.code == "INPUT_VALIDATION_FAILED" and error.exit_code == 3
    assert "student_data.csv, row 5, column 'student_id': the identifier is empty" in str(error)
    assert {i.code for i in error.issues} == {"BLANK_KEY", "DANGLING_REFERENCE"}
    dangling = [i for i in error.issues if i.code == "DANGLING_REFERENCE"]
    assert {i.value for i in dangling} == {student}
    assert json.loads((out / ERRORS_FILE).read_text())["error"]["code"] == "INPUT_VALIDATION_FAILED"
    assert_no_outputs(out)


def test_several_problems_in_several_files_are_reported_in_one_error(base_dir, compose_config, tmp_path):
    set_cell(base_dir, "student_data.csv", 5, "program_id", "PRG-NOPE")
    set_cell(base_dir, "rooms.csv", 3, "capacity", "abc")
    set_cell(base_dir, "courses.csv", 4, "course_type", "MANDATORY")
    out = tmp_path / "out"
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, base_dir, out)
    error = caught.value
    assert error.code == "INPUT_VALIDATION_FAILED" and error.exit_code == 3
    text = str(error)
    for fragment in ("student_data.csv, row 5, column 'program_id'", "rooms.csv, row 3, column 'capacity'",
                     "courses.csv, row 4, column 'course_type'"):
        assert fragment in text
    issues = json.loads((out / ERRORS_FILE).read_text())["error"]["details"]["issues"]
    assert {i["code"] for i in issues} == {"DANGLING_REFERENCE", "INVALID_NUMBER", "INVALID_ENUM"}


def test_dangling_course_in_enrolled_courses_list_column(make_institution_dir, compose_config, tmp_path):
    source = make_institution_dir(N_STUDENTS, seed=SEED, enrollment_format="list_column")
    inp = tmp_path / "input"
    shutil.copytree(source, inp)
    courses = cell(inp, "student_data.csv", 5, "enrolled_courses")
    set_cell(inp, "student_data.csv", 5, "enrolled_courses", courses + ";NOPE-101")
    out = tmp_path / "out"
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, inp, out)
    assert caught.value.code == "DANGLING_REFERENCE"
    assert ("student_data.csv, row 5, column 'enrolled_courses': "
            "not a course_id of courses.csv (value 'NOPE-101')") in str(caught.value)
    assert_no_outputs(out)


def test_100k_character_cell_is_accepted_and_a_100k_number_is_reported_short(base_dir, compose_config, tmp_path):
    """What a 100,000-character cell does: in a text column it is accepted and written back
    unchanged; in a number column it is an INVALID_NUMBER whose message quotes the value cut to
    80 characters (the message stays short)."""
    set_cell(base_dir, "student_data.csv", 5, "student_name", "n" * 100_000)
    set_cell(base_dir, "student_data.csv", 6, "roll_number", "r" * 100_000)
    run_batching(compose_config, base_dir, tmp_path / "ok")
    assert_outputs_valid(tmp_path / "ok", base_dir)

    set_cell(base_dir, "rooms.csv", 3, "capacity", "7" * 100_000)
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, base_dir, tmp_path / "bad")
    assert caught.value.code == "INVALID_NUMBER"
    assert len(str(caught.value)) < 1000
    assert "rooms.csv, row 3, column 'capacity'" in str(caught.value) and "777..." in str(caught.value)


def test_tab_delimited_bom_crlf_export_succeeds(base_dir, compose_config, tmp_path):
    for name in [p.name for p in base_dir.glob("*.csv")]:
        write_rows(base_dir, name, read_rows(base_dir, name), delimiter="\t", terminator="\r\n", bom=True)
    out = tmp_path / "out"
    run_batching(compose_config, base_dir, out)
    members = assert_outputs_valid(out, base_dir)["batch_student_membership"]
    rows = read_rows(base_dir, "student_data.csv", delimiter="\t")
    assert len(rows[0]) > 5 and len(members) == len(active_student_ids(base_dir)) > 250  # read as tab-delimited


def test_warnings_of_the_non_strict_runs_name_the_group_and_the_rooms(base_dir, compose_config, tmp_path):
    _under_by_three(base_dir)
    one_room_one_shift(base_dir)
    result = run_batching(compose_config, base_dir, tmp_path / "out", ["batch_size.min=5", "batch_size.target=20"])
    text = "\n".join(result.warnings)
    assert "group (program_id=PRG-CSE, academic_year=2024-25, semester=12): 3 students < min 5" in text
    assert "[INSUFFICIENT_ROOMS]" in text
    batches = read_output(tmp_path / "out", "student_batches")
    assert (batches["room_id"] != "").sum() == 1  # one slot: one batch placed, the others reported unplaced


# ------------------------------------------------------------------------------------------
# the same through ``python -m stage2`` (the entrypoint users run)

#: one per exit status: 3 input, 2 configuration (from the EAV table), 4 infeasible, 5 environment, 0 ok
SUBPROCESS_CASES = ["latin-1-bytes", "eav-min-above-max", "too-few-rooms-strict", "faculty-short-strict",
                    "tracking-server-down", "utf8-bom"]


@pytest.mark.slow
@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_cli_exit_code_and_message(case_id: str, base_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    case = next(c for c in CASES if c.id == case_id)
    case.mutate(base_dir)
    run_dir = tmp_path / "run"
    env = subprocess_env()
    proc = subprocess.run(
        [sys.executable, "-m", "stage2", f"data.input_dir={base_dir}", *OFFLINE_OVERRIDES, f"hydra.run.dir={run_dir}",
         *case.overrides],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    if case.error is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert_outputs_valid(run_dir, base_dir)
        return
    assert proc.returncode == case.exit_code, proc.stderr[-3000:]
    assert f"[{case.code}]" in proc.stderr
    for fragment in case.where:
        assert fragment in proc.stderr, f"{fragment!r} not in:\n{proc.stderr[-3000:]}"
    assert json.loads((run_dir / ERRORS_FILE).read_text())["error"]["code"] == case.code
    assert_no_outputs(run_dir)


# ------------------------------------------------------------------------------------------
# messages of the pipeline and the entrypoint


def test_insufficient_rooms_message_names_the_batches(base_dir, compose_config, tmp_path):
    one_room_one_shift(base_dir)
    with pytest.raises(InfeasibleError) as caught:
        run_batching(compose_config, base_dir, tmp_path / "out",
                     ["strict=true", "batch_size.min=5", "batch_size.target=20"])
    assert "PRG-" in caught.value.message  # a batch code or group key, e.g. PRG-CSE-2024-25-7-B01


@pytest.mark.slow
@pytest.mark.parametrize("hydra_full_error", ["0", "1"])  # with 1 Hydra raises instead of exiting
def test_cli_mistyped_configuration_exits_2(base_dir, tmp_path, hydra_full_error):
    import subprocess
    import sys

    env = subprocess_env(HYDRA_FULL_ERROR=hydra_full_error)
    proc = subprocess.run(
        [sys.executable, "-m", "stage2", f"data.input_dir={base_dir}", *OFFLINE_OVERRIDES,
         f"hydra.run.dir={tmp_path / 'run'}",
         "batch_size.min=abc"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2 and "INVALID_CONFIGURATION" in proc.stderr, (proc.returncode, proc.stderr[-2000:])


# ------------------------------------------------------------------------------------------
# faults of the environment that need a path of their own: a damaged store file, warn mode,
# an output directory that cannot be written


def _corrupt_store(tmp_path: Path) -> str:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an SQLite database, but a damaged copy of one\n" * 64)
    return f"sqlite:///{path}"


def test_a_damaged_store_file_is_tracking_unavailable(base_dir, compose_config, tmp_path, clean_env):
    uri = _corrupt_store(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(Stage2Error) as caught:
        run_batching(compose_config, base_dir, out, ["tracking.enabled=true", f"tracking.uri={uri}"])
    case = Case("tracking-store-damaged", error=EnvironmentFault, code="TRACKING_UNAVAILABLE", exit_code=5,
                where=(f"the MLflow tracking store {uri} cannot be used", "file is not a database",
                       "move a damaged file aside"))
    assert_failure(case, caught.value, out)


def test_the_store_credentials_are_never_printed(base_dir, compose_config, tmp_path, clean_env):
    uri = DOWN_SERVER.replace("://", "://alice:s3cret-pw@")
    out = tmp_path / "out"
    with pytest.raises(EnvironmentFault) as caught:
        run_batching(compose_config, base_dir, out, ["tracking.enabled=true", f"tracking.uri={uri}"])
    assert caught.value.code == "TRACKING_UNAVAILABLE" and DOWN_SERVER in str(caught.value)
    for text in (str(caught.value), (out / ERRORS_FILE).read_text(), (out / "stage2.log").read_text()):
        assert "s3cret-pw" not in text and "alice" not in text


def test_the_store_credentials_are_not_in_the_outputs_of_a_run(base_dir, compose_config, tmp_path, clean_env):
    uri = DOWN_SERVER.replace("://", "://alice:s3cret-pw@")
    out = tmp_path / "out"
    run_batching(compose_config, base_dir, out,
                 ["tracking.enabled=true", f"tracking.uri={uri}", "tracking.on_unavailable=warn"])
    report = json.loads((out / "quality_report.json").read_text())
    assert report["config"]["tracking"]["uri"] == DOWN_SERVER
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        assert b"s3cret-pw" not in path.read_bytes(), path


@pytest.mark.parametrize("store", ["server-down", "damaged-file", "uncreatable"])
def test_warn_mode_runs_untracked_and_says_so(store, base_dir, compose_config, tmp_path, clean_env):
    uri = {"server-down": DOWN_SERVER, "damaged-file": _corrupt_store(tmp_path),
           "uncreatable": UNCREATABLE_STORE}[store]
    out = tmp_path / "out"
    result = run_batching(compose_config, base_dir, out,
                          ["tracking.enabled=true", f"tracking.uri={uri}", "tracking.on_unavailable=warn"])
    assert result.run_id is None
    assert_outputs_valid(out, base_dir)
    report = json.loads((out / "quality_report.json").read_text())
    assert report["tracking"]["status"] == "unavailable" and report["tracking"]["store"] == uri
    assert report["tracking"]["reason"].startswith("[TRACKING_UNAVAILABLE]")
    assert report["warnings"][0] == report["tracking"]["reason"] == result.warnings[0]
    assert "this run is not tracked (tracking.on_unavailable=warn)" in report["warnings"][0]
    log = (out / "stage2.log").read_text()
    assert log.count("this run is not tracked") == 1, log
    assert "not tracked: the tracking store was unavailable" in (out / "report.txt").read_text()
    assert not (out / ERRORS_FILE).exists()
    setting = audit.config_frame(audit.load_run(out)).set_index("setting")["value"]["tracking"]
    assert setting == f"unavailable, not tracked: {report['tracking']['reason']}"


def test_a_tracked_run_reports_its_store(base_dir, compose_config, tmp_path, clean_env):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result = run_batching(compose_config, base_dir, tmp_path / "out", ["tracking.enabled=true", f"tracking.uri={uri}"])
    report = json.loads((tmp_path / "out" / "quality_report.json").read_text())
    assert report["tracking"] == {"status": "tracked", "store": uri, "run_id": result.run_id, "reason": None}
    setting = audit.config_frame(audit.load_run(tmp_path / "out")).set_index("setting")["value"]["tracking"]
    assert setting == f"tracked in {uri} (MLflow run {result.run_id})"
    assert not any("TRACKING_UNAVAILABLE" in w for w in result.warnings)
    run_batching(compose_config, base_dir, tmp_path / "off")  # tracking.enabled=false
    assert json.loads((tmp_path / "off" / "quality_report.json").read_text())["tracking"]["status"] == "off"


def test_an_unknown_on_unavailable_is_a_configuration_error(base_dir, compose_config, tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        run_batching(compose_config, base_dir, tmp_path / "out", ["tracking.on_unavailable=ignore"])
    assert caught.value.code == "INVALID_CONFIGURATION" and "tracking.on_unavailable='ignore'" in str(caught.value)


@pytest.mark.parametrize("where", ["uncreatable", "under-a-file"])
def test_an_output_directory_that_cannot_be_written_is_output_not_writable(where, base_dir, compose_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    out = Path("/proc/nonexistent/out") if where == "uncreatable" else blocker / "out"
    with pytest.raises(EnvironmentFault) as caught:
        run_batching(compose_config, base_dir, out)
    error = caught.value
    assert (error.code, error.exit_code) == ("OUTPUT_NOT_WRITABLE", 5)
    assert f"the output directory {out} cannot be written" in str(error) and error.fix


@pytest.mark.slow
def test_cli_unwritable_run_directory_exits_5_without_a_traceback(base_dir, tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    for run_dir in (blocker / "run", None):  # named by hydra.run.dir; Hydra's default under the launch directory
        cwd = tmp_path if run_dir is not None else blocker.parent / "launch"
        if run_dir is None:  # "outputs" is a file there: Hydra cannot create outputs/<date>/<time>
            cwd.mkdir()
            (cwd / "outputs").write_text("a file\n")
        proc = subprocess.run(
            [sys.executable, "-m", "stage2", f"data.input_dir={base_dir}", *OFFLINE_OVERRIDES,
             *([f"hydra.run.dir={run_dir}"] if run_dir is not None else [])],
            cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 5, proc.stderr[-3000:]
        assert "[OUTPUT_NOT_WRITABLE]" in proc.stderr and "cannot be written" in proc.stderr
        if run_dir is not None:
            assert "Traceback" not in proc.stderr and str(run_dir) in proc.stderr
