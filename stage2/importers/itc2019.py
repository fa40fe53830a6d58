"""Import an ITC 2019 / UniTime course-timetabling problem (XML) as Stage 2 input tables.

>>> tables = read_itc2019("pu-cs-fal07.xml")          # dict: table name -> DataFrame
>>> import_itc2019("pu-cs-fal07.xml", "in/pu-cs")      # in/pu-cs/<table>.csv

``python -m stage2.importers.itc2019 FILE OUT_DIR`` does the second from the command line.

What batching needs from a problem is its students' course demands and its rooms. The XML has
(every file of the competition starts with a UTF-8 byte-order mark)::

    <problem name="yach-fal17" ...>
      <rooms><room id="1" capacity="35"> ... </room></rooms>
      <courses><course id="1"> ... </course></courses>
      <distributions> ... </distributions>
      <students><student id="1"><course id="16"/><course id="17"/></student></students>
    </problem>

Mapping (``<name>`` = the problem's ``name`` attribute, ``<id>`` = an XML id):

- ``student_data``: one row per ``<student>`` with at least one course demand; ``student_id``
  ``S<id>``, ``roll_number`` ``<id>``, all in one programme ``ITC-<name>``, ``semester`` 1,
  ``is_active`` true, ``tenant_id`` = ``institution_id`` = ``<name>``. ``academic_year`` comes
  from the term in the name (:func:`academic_year_of`): ``fal17`` -> ``2017-18``, ``spr17`` /
  ``sum17`` / ``win17`` -> ``2016-17``; ``ITC`` when the name carries no term. Students
  without a course demand are left out (the contract requires every active student to take a
  course) and counted in a warning. ``preferred_shift`` / ``preferred_languages`` and the
  other optional columns are present and empty: the problem carries no such data.
- ``programs``: that one programme.
- ``courses``: ``C<id>`` for every ``<course>`` of ``<courses>`` and every course a student
  demands (one only demanded is added, with a warning); ``course_code`` = ``course_id``,
  ``course_name`` ``<name> course <id>``, ``course_type`` CORE, ``program_id`` the programme,
  ``semester`` 1; credits and hours are unknown (empty).
- ``student_course_enrollment``: one row per (student, course) demand, repeats dropped (with a
  warning); ``is_mandatory`` and ``enrollment_date`` empty.
- ``rooms``: ``R<id>`` for every ``<room>`` of ``<rooms>`` (not the room options of classes),
  ``capacity`` clipped to the contract's 1-1000 (with a warning), ``room_type`` CLASSROOM.
- no ``shifts`` table: the contract then uses one default shift.

Warnings (clipped capacities, students without courses, repeated demands, ...) are logged on
this module's logger and, when :func:`read_itc2019` is given a ``warnings`` list, appended to it.
A file that is not XML, whose root is not ``<problem>``, or that has no ``<students>`` (or no
student with a course demand) raises :class:`~stage2.errors.InputValidationError` with
``PARSE_ERROR`` issues naming the file. The file is read with ``xml.etree.ElementTree.iterparse``
and each section is discarded once read, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stage2.errors import InputValidationError, ValidationIssue

logger = logging.getLogger(__name__)

__all__ = ["academic_year_of", "import_itc2019", "read_itc2019"]

#: the contract tables this importer writes, in order
TABLE_NAMES = ("student_data", "programs", "courses", "student_course_enrollment", "rooms")
#: academic_year when the problem name carries no term
DEFAULT_ACADEMIC_YEAR = "ITC"
SEMESTER = 1
COURSE_TYPE = "CORE"
ROOM_TYPE = "CLASSROOM"
ROOM_CAPACITY_MIN, ROOM_CAPACITY_MAX = 1, 1000  # the contract's range (stage2.contract.schemas)
PARSE_ERROR = "PARSE_ERROR"
DUPLICATE_KEY = "DUPLICATE_KEY"
MAX_ISSUES = 50  # per file: enough to fix an export without flooding the report

# a term token at the end of a dash-separated name part: fal17, spr2017, fall07, spr17c
_TERM = re.compile(r"(?:^|[-_])(fall?|aut|spr(?:ing)?|sum(?:mer)?|win(?:ter)?)(\d{4}|\d{2})[a-z]*$",
                   re.IGNORECASE)
# terms that start an academic year; the others (spring, summer, winter) end the one begun the
# previous autumn
_AUTUMN_TERMS = ("fal", "aut")


def academic_year_of(problem_name: str) -> str:
    """The academic year of an ITC problem from the term at the end of its name.

    ``pu-cs-fal07`` -> ``2007-08``, ``yach-fal17`` -> ``2017-18``, ``muni-fsps-spr17`` ->
    ``2016-17`` (a spring, summer or winter term ends the year begun the autumn before; two-digit
    years are 20yy); :data:`DEFAULT_ACADEMIC_YEAR` (``ITC``) when no term is recognised.
    """
    match = _TERM.search(problem_name.strip())
    if not match:
        return DEFAULT_ACADEMIC_YEAR
    term, digits = match.group(1).lower(), match.group(2)
    year = int(digits) if len(digits) == 4 else 2000 + int(digits)
    start = year if term.startswith(_AUTUMN_TERMS) else year - 1
    return f"{start}-{(start + 1) % 100:02d}"


# --------------------------------------------------------------------------------------------
# parsing


@dataclass
class _Problem:
    """What the parser collects from one XML file (XML ids, in document order)."""

    name: str | None = None
    rooms: list[tuple[str, str | None]] = field(default_factory=list)  # (id, capacity attribute)
    courses: list[str] = field(default_factory=list)
    students: list[tuple[str, list[str]]] = field(default_factory=list)  # (id, demanded courses)
    has_students: bool = False
    issues: list[ValidationIssue] = field(default_factory=list)


def _parse(path: Path) -> _Problem:
    """Stream the XML once; keep rooms, course ids and student demands, discard the rest."""
    problem = _Problem()
    try:
        with open(path, "rb") as stream:
            # bytes in: expat honours the encoding declaration and skips a UTF-8 BOM
            _collect(ET.iterparse(stream, events=("start", "end")), problem, path.name)
    except _NotItc as exc:
        issue = ValidationIssue(PARSE_ERROR, path.name, str(exc))
        raise InputValidationError([issue], input_dir=str(path)) from None
    except ET.ParseError as exc:
        issue = ValidationIssue(PARSE_ERROR, path.name, f"not well-formed XML: {exc}")
        raise InputValidationError([issue], input_dir=str(path)) from None
    return problem


def _collect(events, problem: _Problem, file: str) -> None:
    """Fill ``problem`` from iterparse ``events``; elements are cleared once read."""

    def issue(message: str) -> None:
        if len(problem.issues) < MAX_ISSUES:
            problem.issues.append(ValidationIssue(PARSE_ERROR, file, message))

    stack: list[str] = []  # tags from the root down to the current element
    student: tuple[str, list[str]] | None = None
    for event, elem in events:
        if event == "start":
            stack.append(elem.tag)
            depth = len(stack)
            if depth == 1:
                if elem.tag != "problem":
                    raise _NotItc(f"root element is <{elem.tag}>, not an ITC 2019 <problem>")
                problem.name = (elem.get("name") or "").strip() or None
            elif depth == 2 and elem.tag == "students":
                problem.has_students = True
            elif depth == 3 and stack[1] == "courses" and elem.tag == "course":
                course_id = _xml_id(elem)
                if course_id is None:
                    issue("a <course> in <courses> has no id")
                else:
                    problem.courses.append(course_id)
            elif depth == 3 and stack[1] == "students" and elem.tag == "student":
                student_id = _xml_id(elem)
                student = None if student_id is None else (student_id, [])
                if student is None:
                    issue("a <student> has no id")
                else:
                    problem.students.append(student)
            elif depth == 4 and stack[1] == "students" and elem.tag == "course" and student:
                course_id = _xml_id(elem)
                if course_id is None:
                    issue(f"student {student[0]} has a <course> without an id")
                else:
                    student[1].append(course_id)
            continue
        depth = len(stack)
        if depth == 3 and stack[1] == "rooms" and elem.tag == "room":
            room_id = _xml_id(elem)
            if room_id is None:
                issue("a <room> in <rooms> has no id")
            else:
                problem.rooms.append((room_id, elem.get("capacity")))
        if depth <= 3:
            elem.clear()  # read: its subtree (travel times, classes, ...) is not needed
        stack.pop()


class _NotItc(Exception):
    """The document's root is not ``<problem>``."""


def _xml_id(elem: ET.Element) -> str | None:
    value = (elem.get("id") or "").strip()
    return value or None


def _capacity(raw: str | None) -> int | None:
    """An integer capacity attribute (``35``, ``35.0``), else None."""
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


# --------------------------------------------------------------------------------------------
# tables


def read_itc2019(path: str | Path, *, warnings: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Parse an ITC 2019 problem into the contract tables (see the module docstring).

    Returns ``student_data``, ``programs``, ``courses``, ``student_course_enrollment`` and
    ``rooms``. Non-fatal findings are logged and, if ``warnings`` is given, appended to it.
    Raises :class:`~stage2.errors.InputValidationError` (issues ``PARSE_ERROR`` or
    ``DUPLICATE_KEY``, ``file`` = the XML's name) when the file is not XML or not an ITC
    problem, has no ``<students>`` or no student with a course demand, or has ids or
    capacities that are missing, repeated or not integers.
    """
    path = Path(path)
    file = path.name
    problem = _parse(path)
    issues = list(problem.issues)
    found: list[str] = []

    def warn(message: str) -> None:
        found.append(message)
        logger.warning("%s: %s", file, message)

    if problem.name is None:
        issues.append(ValidationIssue(PARSE_ERROR, file, "<problem> has no name attribute"))
    with_demand = [(s, courses) for s, courses in problem.students if courses]
    if not problem.has_students:
        issues.append(ValidationIssue(
            PARSE_ERROR, file,
            "no <students> section: the problem has no student course demands to batch",
        ))
    elif not with_demand:
        issues.append(ValidationIssue(
            PARSE_ERROR, file, "no <student> in <students> has a <course> demand",
        ))
    for kind, ids in (("student", [s for s, _ in problem.students]),
                      ("room", [r for r, _ in problem.rooms]),
                      ("course", problem.courses)):
        index = pd.Index(ids, dtype="str")
        repeated = index[index.duplicated()].unique()
        if len(repeated):
            issues.append(ValidationIssue(
                DUPLICATE_KEY, file,
                f"{len(repeated)} {kind} id(s) appear more than once "
                f"(first: {', '.join(repeated[:5])})",
            ))
    capacities = [_capacity(raw) for _, raw in problem.rooms]
    for (room_id, raw), capacity in zip(problem.rooms, capacities, strict=True):
        if capacity is None and len(issues) < MAX_ISSUES:
            issues.append(ValidationIssue(
                PARSE_ERROR, file, f"room {room_id} has no integer capacity",
                column="capacity", value=raw,
            ))
    if issues:
        raise InputValidationError(issues, input_dir=str(path))

    name = problem.name
    assert name is not None
    academic_year = academic_year_of(name)
    if academic_year == DEFAULT_ACADEMIC_YEAR:
        warn(f"no term (fal17, spr17, ...) at the end of the problem name {name!r}: "
             f"academic_year is {DEFAULT_ACADEMIC_YEAR!r}")
    program_id = f"ITC-{name}"

    n_without = len(problem.students) - len(with_demand)
    if n_without:
        warn(f"{n_without} student(s) without a course demand left out "
             f"(the contract requires every active student to take a course)")

    # enrolments: one row per (student, course), the first occurrence kept
    demands = [(s, c) for s, courses in with_demand for c in courses]
    pairs = list(dict.fromkeys(demands))
    if len(pairs) < len(demands):
        warn(f"{len(demands) - len(pairs)} repeated (student, course) demand(s) dropped")

    # courses: those of <courses>, then any only demanded, in order of first appearance
    course_ids = list(problem.courses)
    defined = set(course_ids)
    undefined = list(dict.fromkeys(c for _, c in pairs if c not in defined))
    if undefined:
        warn(f"{len(undefined)} demanded course(s) not defined in <courses> added "
             f"(first: {', '.join(undefined[:5])})")
    course_ids += undefined

    capacities_ok = [c for c in capacities if c is not None]
    clipped = [(r, c) for (r, _), c in zip(problem.rooms, capacities_ok, strict=True)
               if not ROOM_CAPACITY_MIN <= c <= ROOM_CAPACITY_MAX]
    if clipped:
        shown = ", ".join(f"R{r}: {c}" for r, c in clipped[:5])
        warn(f"{len(clipped)} room capacity value(s) outside the contract's "
             f"{ROOM_CAPACITY_MIN}-{ROOM_CAPACITY_MAX} clipped to it ({shown})")
    if not problem.rooms:
        warn("no <room> in <rooms>: rooms.csv is empty, and the contract needs at least one room")

    tables = {
        "student_data": _students(with_demand, name, program_id, academic_year),
        "programs": _programs(name, program_id),
        "courses": _courses(course_ids, name, program_id),
        "student_course_enrollment": _enrollments(pairs, academic_year),
        "rooms": _rooms(problem.rooms, capacities_ok),
    }
    assert tuple(tables) == TABLE_NAMES
    if warnings is not None:
        warnings.extend(found)
    return tables


def _nulls(n: int, dtype: str = "str") -> pd.Series:
    return pd.Series([None] * n, dtype=dtype)


def _students(students: list[tuple[str, list[str]]], name: str, program_id: str,
              academic_year: str) -> pd.DataFrame:
    ids = [s for s, _ in students]
    n = len(ids)
    return pd.DataFrame({
        "student_id": pd.Series([f"S{s}" for s in ids], dtype="str"),
        "program_id": program_id,
        "academic_year": academic_year,
        "semester": pd.Series([SEMESTER] * n, dtype="int64"),
        "student_name": _nulls(n),
        "roll_number": pd.Series(ids, dtype="str"),
        "email": _nulls(n),
        "preferred_shift": _nulls(n),
        "preferred_languages": _nulls(n),
        "tenant_id": name,
        "institution_id": name,
        "is_active": pd.Series([True] * n, dtype="bool"),
    })


def _programs(name: str, program_id: str) -> pd.DataFrame:
    return pd.DataFrame({
        "program_id": pd.Series([program_id], dtype="str"),
        "program_code": pd.Series([name], dtype="str"),
        "program_name": pd.Series([f"ITC 2019 problem {name}"], dtype="str"),
        "program_type": _nulls(1),
        "department_id": _nulls(1),
        "duration_years": _nulls(1, "float64"),
        "total_credits": _nulls(1, "float64"),
    })


def _courses(course_ids: list[str], name: str, program_id: str) -> pd.DataFrame:
    n = len(course_ids)
    ids = pd.Series([f"C{c}" for c in course_ids], dtype="str")
    return pd.DataFrame({
        "course_id": ids,
        "course_code": ids,
        "course_name": pd.Series([f"{name} course {c}" for c in course_ids], dtype="str"),
        "course_type": COURSE_TYPE,
        "credits": _nulls(n, "float64"),
        "theory_hours": _nulls(n, "float64"),
        "practical_hours": _nulls(n, "float64"),
        "max_sessions_per_week": _nulls(n, "Int64"),
        "program_id": program_id,
        "semester": pd.Series([SEMESTER] * n, dtype="int64"),
    })


def _enrollments(pairs: list[tuple[str, str]], academic_year: str) -> pd.DataFrame:
    n = len(pairs)
    return pd.DataFrame({
        "student_id": pd.Series([f"S{s}" for s, _ in pairs], dtype="str"),
        "course_id": pd.Series([f"C{c}" for _, c in pairs], dtype="str"),
        "academic_year": academic_year,
        "semester": pd.Series([SEMESTER] * n, dtype="int64"),
        "is_mandatory": _nulls(n, "boolean"),
        "enrollment_date": _nulls(n),
    })


def _rooms(rooms: list[tuple[str, str | None]], capacities: list[int]) -> pd.DataFrame:
    n = len(rooms)
    ids = pd.Series([f"R{r}" for r, _ in rooms], dtype="str")
    clipped = [min(max(c, ROOM_CAPACITY_MIN), ROOM_CAPACITY_MAX) for c in capacities]
    return pd.DataFrame({
        "room_id": ids,
        "capacity": pd.Series(clipped, dtype="int64"),
        "room_code": ids,
        "room_name": pd.Series([f"Room {r}" for r, _ in rooms], dtype="str"),
        "room_type": ROOM_TYPE,
        "building_name": _nulls(n),
        "floor_number": _nulls(n, "Int64"),
        "preferred_shift": _nulls(n),
    })


# --------------------------------------------------------------------------------------------
# writing


def import_itc2019(path: str | Path, out_dir: str | Path, *,
                   warnings: list[str] | None = None) -> Path:
    """Read an ITC 2019 problem and write it as contract CSVs into ``out_dir``; return it.

    Written by :func:`stage2.synth.write_institution` (UTF-8 without BOM, ``,``). Contract
    tables this import does not write but an earlier run left in ``out_dir`` (``shifts.csv``,
    ``course_prerequisites.csv``, the EAV pair) would mix into this institution: they are
    removed, with a warning. ``warnings``, if given, receives the non-fatal findings.
    """
    return _import(path, out_dir, warnings)[0]


def _import(path: str | Path, out_dir: str | Path,
            warnings: list[str] | None) -> tuple[Path, dict[str, pd.DataFrame]]:
    from stage2.synth import TABLES, write_institution

    found: list[str] = []
    tables = read_itc2019(path, warnings=found)
    out = Path(out_dir)
    for name in TABLES:
        stale = out / f"{name}.csv"
        if name not in tables and stale.is_file():
            stale.unlink()
            message = f"removed {stale}, left by an earlier run (an ITC import has no {name})"
            found.append(message)
            logger.warning(message)
    write_institution(out, tables)
    if warnings is not None:
        warnings.extend(found)
    return out, tables


# --------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stage2.importers.itc2019",
        description="Convert an ITC 2019 / UniTime problem (XML) into Stage 2 input CSVs.",
    )
    parser.add_argument("file", help="the problem's XML file")
    parser.add_argument("out_dir", help="directory to write <table>.csv into (created)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Import FILE into OUT_DIR; print what was written. Exit status 3 on bad input."""
    args = build_parser().parse_args(argv)
    found: list[str] = []
    logger.propagate = False  # the warnings are printed below, once
    try:
        out, tables = _import(args.file, args.out_dir, found)
    except InputValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return InputValidationError.exit_code
    finally:
        logger.propagate = True
    enrollments = tables["student_course_enrollment"]
    print(f"wrote {out}/ from {Path(args.file).name}:")
    print(f"  {len(tables['student_data']):>7,} students")
    print(f"  {len(tables['courses']):>7,} courses ({enrollments['course_id'].nunique():,} "
          f"with demand)")
    print(f"  {len(enrollments):>7,} enrolments")
    print(f"  {len(tables['rooms']):>7,} rooms")
    print("  (no shifts.csv: one default shift)")
    for message in found:
        print(f"warning: {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
