"""Load one institution's input directory into :class:`InstitutionData` (contract "Input tables").

:func:`load_institution` reads every contract file, coerces its columns, validates each table
against its pandera schema and the tables against each other, and collects *every* problem:
it raises one :class:`InputValidationError` at the end, never on the first problem.

Resolved points the contract leaves open (also in ``stage2/contract/README.md``):

- An optional file that is empty or header-only is treated as absent (with a warning).
- Without ``shifts.csv`` there is one shift, ``DEFAULT`` (type ``FLEXIBLE``); a
  ``preferred_shift`` naming no shift is then ignored with a warning instead of an error.
- A ``shift_type`` shared by several shifts resolves to the first such shift in file order.
- Enrollments from ``enrolled_courses`` take ``academic_year`` and ``semester`` from the
  student's row; ``is_mandatory`` and ``enrollment_date`` are null.
- ``entity_parameter_values.effective_from``/``effective_to`` become naive UTC timestamps.
- ``entity_parameter_values`` gets a ``source_row`` column: the file row of each value, for
  the configuration stage's messages.
- ``student_course_enrollment.enrollment_date`` must be an ISO date (``INVALID_DATE``) but is
  kept as written.
- ``student_data`` always has the optional columns ``semester`` (null), ``preferred_languages``
  (empty tuples), ``preferred_shift`` (null) and ``is_active`` (true) when the file lacks them,
  so a configuration naming them works on a minimal export.
- A student table whose rows are all inactive is an ``EMPTY_TABLE`` error (nothing to batch),
  not an empty run.
- ``faculty.csv`` and ``faculty_course_competency.csv``: an empty cell takes the contract's
  default (``max_hours_per_week`` 18, ``competency_level`` 6, ``is_active`` true). Competencies
  without ``faculty.csv`` cannot be checked against it: they are ignored with a warning (the
  faculty check is then skipped).
- Enrollment rows of a term earlier than their student's are history (``is_history``), used
  only for prerequisites; a later term is ``LATER_TERM_ENROLLMENT`` (term order:
  :mod:`stage2.contract.history`). An active student needs a current-term enrollment. An
  optional numeric ``grade`` column of the enrollments is kept (``Float64``).
- A cycle in ``course_prerequisites.csv`` is a ``PREREQUISITE_CYCLE`` naming its courses.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa

from stage2.contract import schemas
from stage2.contract.csvio import (
    STRING_DTYPE,
    coerce_datetime,
    coerce_float,
    coerce_integer,
    explode_list_series,
    parse_bool_series,
    parse_list_series,
    read_table,
    row_issues,
    row_number,
    string_categorical,
    string_isin,
    string_positions,
    take_strings,
    tuples_by_label,
    upper_enum,
)
from stage2.contract.history import HISTORY, LATER, UNORDERED, classify_terms, prerequisite_cycles
from stage2.contract.institution import InstitutionData
from stage2.contract.schemas import ENROLLMENT_TERM_KEY
from stage2.errors import InputValidationError, ValidationIssue

STUDENTS = "student_data.csv"
PROGRAMS = "programs.csv"
COURSES = "courses.csv"
ENROLLMENTS = "student_course_enrollment.csv"
ROOMS = "rooms.csv"
SHIFTS = "shifts.csv"
PREREQUISITES = "course_prerequisites.csv"
PARAMETERS = "dynamic_parameters.csv"
PARAMETER_VALUES = "entity_parameter_values.csv"
FACULTY = "faculty.csv"
COMPETENCIES = "faculty_course_competency.csv"
#: Tables only checked for a non-blank, unique key, then passed through (name -> key column).
PASSTHROUGH_KEYS: dict[str, str] = {
    "institutions.csv": "institution_id",
    "departments.csv": "department_id",
    "timeslots.csv": "timeslot_id",
}
ENROLLED_COURSES = "enrolled_courses"
#: Column of ``entity_parameter_values``: the row of the file each value came from (header = 1).
SOURCE_ROW = "source_row"
PREFERRED_LANGUAGES = "preferred_languages"
#: Columns of :attr:`InstitutionData.enrollments`, in this order.
ENROLLMENT_COLUMNS: tuple[str, ...] = (
    "student_id",
    "course_id",
    "is_mandatory",
    "academic_year",
    "semester",
    "enrollment_date",
)
#: Columns of :attr:`InstitutionData.enrollments` kept as categoricals: a handful of distinct
#: values over millions of rows, only passed on once validated.
ENROLLMENT_CATEGORIES: tuple[str, ...] = ("academic_year", "enrollment_date")
#: Column of :attr:`InstitutionData.enrollments`: the row is of an earlier term than its student's.
IS_HISTORY = "is_history"
#: Optional numeric column of ``student_course_enrollment.csv``: the grade of a history row.
GRADE = "grade"
#: The one shift used when ``shifts.csv`` is absent.
DEFAULT_SHIFT: dict[str, str] = {
    "shift_id": "DEFAULT",
    "shift_code": "DEFAULT",
    "shift_name": "Default shift",
    "shift_type": "FLEXIBLE",
}


@dataclass(frozen=True)
class TableSpec:
    """How to coerce one input table before its schema check."""

    file: str
    schema: pa.DataFrameSchema
    required: tuple[str, ...]
    integers: tuple[str, ...] = ()
    floats: tuple[str, ...] = ()
    booleans: tuple[str, ...] = ()
    enums: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    #: (column, value) filled in where the cell is empty or the column absent, after coercion
    defaults: tuple[tuple[str, bool | int | float], ...] = ()


SPECS: dict[str, TableSpec] = {
    spec.file: spec
    for spec in (
        TableSpec(STUDENTS, schemas.StudentData, ("student_id", "program_id", "academic_year"), integers=("semester",)),
        TableSpec(PROGRAMS, schemas.Programs, ("program_id",), floats=("duration_years", "total_credits")),
        TableSpec(
            COURSES,
            schemas.Courses,
            ("course_id",),
            integers=("max_sessions_per_week", "semester"),
            floats=("credits", "theory_hours", "practical_hours"),
            enums=("course_type",),
        ),
        TableSpec(
            ENROLLMENTS,
            schemas.StudentCourseEnrollment,
            ("student_id", "course_id"),
            integers=("semester",),
            floats=(GRADE,),
            booleans=("is_mandatory",),
        ),
        TableSpec(
            ROOMS,
            schemas.Rooms,
            ("room_id", "capacity"),
            integers=("capacity", "floor_number"),
            enums=("room_type",),
        ),
        TableSpec(SHIFTS, schemas.Shifts, ("shift_id",), enums=("shift_type",)),
        TableSpec(
            PREREQUISITES,
            schemas.CoursePrerequisites,
            ("course_id", "prerequisite_course_id"),
            booleans=("is_mandatory",),
        ),
        TableSpec(PARAMETERS, schemas.DynamicParameters, ("parameter_id", "parameter_code")),
        TableSpec(
            PARAMETER_VALUES,
            schemas.EntityParameterValues,
            ("entity_type", "entity_id", "parameter_id"),
            integers=("integer_value",),
            floats=("numeric_value",),
            booleans=("boolean_value",),
            dates=("effective_from", "effective_to"),
        ),
        TableSpec(
            FACULTY,
            schemas.Faculty,
            ("faculty_id",),
            floats=("max_hours_per_week",),
            booleans=("is_active",),
            defaults=(("max_hours_per_week", float(schemas.DEFAULT_FACULTY_HOURS)), ("is_active", True)),
        ),
        TableSpec(
            COMPETENCIES,
            schemas.FacultyCourseCompetency,
            ("faculty_id", "course_id"),
            integers=("competency_level",),
            floats=("preference_score",),
            booleans=("is_active",),
            defaults=(("competency_level", schemas.DEFAULT_COMPETENCY), ("is_active", True)),
        ),
    )
}
#: every file name the contract knows (what an upload to the service may be called)
CONTRACT_FILES: tuple[str, ...] = (*SPECS, *PASSTHROUGH_KEYS)
#: Bytes :func:`directory_digest` reads at a time.
DIGEST_CHUNK_BYTES = 1 << 20

_Coercer = Callable[..., tuple[pd.Series, list[ValidationIssue]]]

#: The enrollments' schema without its (student_id, course_id) uniqueness check, for frames
#: whose repeated pairs are already dropped (with a warning): there it cannot fail, and on
#: millions of rows it costs seconds.
_DEDUPLICATED_ENROLLMENTS = copy.deepcopy(schemas.StudentCourseEnrollment)
_DEDUPLICATED_ENROLLMENTS.unique = None


def load_institution(input_dir: str | Path) -> InstitutionData:
    """Read, coerce and validate every contract CSV in ``input_dir``.

    Returns the normalised tables (see :class:`InstitutionData` for the column conventions).
    Raises :class:`InputValidationError` listing every problem in every file if the directory
    breaks the contract.
    """
    root = Path(input_dir)
    if not root.is_dir():
        issue = ValidationIssue("MISSING_FILE", str(root), "the input directory does not exist")
        raise InputValidationError([issue], input_dir=str(root))
    files = {path.name: path for path in sorted(root.glob("*.csv")) if path.is_file()}
    # hashing the files takes a core for a while: it runs beside the (mostly single-threaded)
    # checks, and streams the files, so no file's bytes outlive its own parsing
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="input-digest") as pool:
        return _Loader(root, files, pool.submit(directory_digest, files)).run()


def directory_digest(files: dict[str, Path]) -> tuple[str, dict[str, str]]:
    """sha256 over every file's name, size and bytes in name order; and each file's own sha256.

    Name and size are framed (``name NUL size NUL bytes``) so that no two directories hash alike
    by moving bytes from one file to the next. Reads each file in chunks (constant memory).
    """
    total = hashlib.sha256()
    per_file: dict[str, str] = {}
    for name in sorted(files):
        own = hashlib.sha256()
        with open(files[name], "rb") as stream:
            total.update(f"{name}\0{os.fstat(stream.fileno()).st_size}\0".encode())
            while chunk := stream.read(DIGEST_CHUNK_BYTES):
                total.update(chunk)
                own.update(chunk)
        per_file[name] = own.hexdigest()
    return total.hexdigest(), per_file


@dataclass
class _Loader:
    """One load: the files in (name -> path), issues and warnings collected along the way."""

    root: Path
    files: dict[str, Path]
    #: :func:`directory_digest` of :attr:`files`, computed alongside
    digest: Future[tuple[str, dict[str, str]]]
    issues: list[ValidationIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: file -> (row, column) cells already reported by coercion: the schema's follow-on
    #: failures there (a null left by an unparseable cell) are not reported again.
    _reported: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    #: True when shifts.csv is absent (or empty) and the one default shift stands in for it
    _default_shift: bool = False

    # ---------------------------------------------------------------------------- driver

    def run(self) -> InstitutionData:
        programs = self._table(PROGRAMS, required=True)
        courses = self._table(COURSES, required=True)
        rooms = self._table(ROOMS, required=True)
        shifts = self._shifts()
        students, enrolled_items = self._students(shifts)
        enrollments = self._enrollments(students, enrolled_items, courses)
        prerequisites = self._table(PREREQUISITES, required=False)
        parameters = self._table(PARAMETERS, required=False)
        parameter_values = self._parameter_values(parameters)
        faculty = self._table(FACULTY, required=False)
        competencies = self._table(COMPETENCIES, required=False)
        passthrough = self._passthrough()

        self._references(students, programs, "program_id", STUDENTS, PROGRAMS)
        self._no_active_students(students)
        if enrollments is not None:
            frame, file, names = enrollments.frame, enrollments.file, enrollments.names
            self._references(frame, students, "student_id", file, STUDENTS, names, rows=enrollments.student_rows)
            self._references(frame, courses, "course_id", file, COURSES, names, rows=enrollments.course_rows)
            current = self._enrollment_terms(students, enrollments)
            enrollments, current = self._one_current_row_per_pair(enrollments, current)
            frame = enrollments.frame
            self._students_without_courses(students, frame.loc[current], _masked(enrollments.student_rows, current))
        if prerequisites is not None:
            self._references(prerequisites, courses, "course_id", PREREQUISITES, COURSES)
            self._references(
                prerequisites, courses, "prerequisite_course_id", PREREQUISITES, COURSES, target_column="course_id"
            )
            self._prerequisite_cycles(prerequisites)
        if competencies is not None:
            self._references(competencies, faculty, "faculty_id", COMPETENCIES, FACULTY)
            self._references(competencies, courses, "course_id", COMPETENCIES, COURSES)
            if FACULTY not in self.files:
                self.warnings.append(f"{COMPETENCIES}: {FACULTY} is absent, so its faculty_id values cannot be "
                                     "checked; the file is ignored and the faculty check skipped")
                competencies = None

        if self.issues:
            raise InputValidationError(self.issues, input_dir=str(self.root))
        assert students is not None and programs is not None and courses is not None
        assert rooms is not None and shifts is not None and enrollments is not None
        digest, file_digests = self.digest.result()
        return InstitutionData(
            input_dir=self.root,
            students=_fresh(students),
            programs=_fresh(programs),
            courses=_fresh(courses),
            enrollments=_with_categories(
                _fresh(enrollments.frame.loc[:, [*ENROLLMENT_COLUMNS, IS_HISTORY,
                                                 *([GRADE] if GRADE in enrollments.frame else [])]]),
                ENROLLMENT_CATEGORIES,
            ),
            rooms=_fresh(rooms),
            shifts=_fresh(shifts),
            prerequisites=_fresh_or_none(prerequisites),
            dynamic_parameters=_fresh_or_none(parameters),
            entity_parameter_values=_fresh_or_none(parameter_values),
            faculty=_fresh_or_none(faculty),
            faculty_competencies=_fresh_or_none(competencies),
            passthrough={name: _fresh(frame) for name, frame in passthrough.items()},
            digest=digest,
            file_digests=file_digests,
            warnings=self.warnings,
        )

    # ---------------------------------------------------------------------------- reading

    def _read(self, file: str, *, required: bool, columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
        """The file's cells as strings, or ``None`` (issue recorded) if absent or unreadable.

        An optional file that is empty is treated as absent, with a warning.
        """
        if file not in self.files:
            if required:
                self._issue("MISSING_FILE", file, "required file is missing from the input directory")
            return None
        try:
            frame = read_table(self.files[file])
        except InputValidationError as error:
            if not required and all(i.code == "EMPTY_TABLE" for i in error.issues):
                self.warnings.append(f"{file}: the file has no data rows and is ignored")
            else:
                self.issues += error.issues
            return None
        missing = [c for c in columns if c not in frame.columns]
        for column in missing:
            self._issue("MISSING_COLUMN", file, "required column is missing from the header row", column=column)
        return None if missing else frame

    def _table(self, file: str, *, required: bool) -> pd.DataFrame | None:
        """Read, coerce and schema-check one table of :data:`SPECS`."""
        spec = SPECS[file]
        frame = self._read(file, required=required, columns=spec.required)
        if frame is None:
            return None
        frame = self._coerce(frame, spec)
        self._validate(frame, spec.schema, file)
        return frame

    def _coerce(self, frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
        coercers: tuple[tuple[tuple[str, ...], _Coercer], ...] = (
            (spec.integers, coerce_integer),
            (spec.floats, coerce_float),
            (spec.booleans, parse_bool_series),
            (spec.dates, coerce_datetime),
        )
        for columns, coerce in coercers:
            for column in columns:
                if column in frame.columns:
                    frame[column], issues = coerce(frame[column], file=spec.file, column=column)
                    self._coercion_issues(issues)
        for column in spec.enums:
            if column in frame.columns:
                frame[column] = upper_enum(frame[column])
        for column, value in spec.defaults:
            frame[column] = _with_default(frame[column] if column in frame else None, value, frame.index)
        if spec.file == COURSES:
            default = pd.Series(schemas.DEFAULT_COURSE_TYPE, index=frame.index, dtype=STRING_DTYPE)
            frame["course_type"] = frame["course_type"].fillna(default) if "course_type" in frame else default
        return frame

    def _validate(
        self,
        frame: pd.DataFrame,
        schema: pa.DataFrameSchema,
        file: str,
        column_names: dict[str, str] | None = None,
    ) -> None:
        reported = self._reported.get(file, set())
        self.issues += schemas.validate_frame(frame, schema, file, column_names=column_names, reported=reported)

    # ---------------------------------------------------------------------------- tables

    def _shifts(self) -> pd.DataFrame | None:
        """shifts.csv, or the default shift if it is absent or empty; ``None`` if it is invalid."""
        shifts = self._table(SHIFTS, required=False)
        if shifts is not None or any(issue.file == SHIFTS for issue in self.issues):
            return shifts
        self._default_shift = True
        return pd.DataFrame({k: pd.Series([v], dtype=STRING_DTYPE) for k, v in DEFAULT_SHIFT.items()})

    def _students(self, shifts: pd.DataFrame | None) -> tuple[pd.DataFrame | None, pd.Series | None]:
        """The students, and the items of their ``enrolled_courses`` in long form (if present)."""
        spec = SPECS[STUDENTS]
        students = self._read(STUDENTS, required=True, columns=spec.required)
        enrolled_items: pd.Series | None = None
        if students is None:
            return None, None
        students = self._coerce(students, spec)
        if "is_active" in students:
            active, issues = parse_bool_series(students["is_active"], file=STUDENTS, column="is_active")
            self._coercion_issues(issues)
            students["is_active"] = active.fillna(True).astype(bool)
        else:
            students["is_active"] = True
        # optional contract columns the shipped constraint sets name (hard no_mix on semester,
        # soft homogeneous on preferred_languages): absent means no values, not a broken rule
        if "semester" not in students:
            students["semester"] = pd.Series(pd.NA, index=students.index, dtype="Int64")
        if PREFERRED_LANGUAGES not in students:
            students[PREFERRED_LANGUAGES] = pd.Series([()] * len(students), index=students.index, dtype=object)
        students[PREFERRED_LANGUAGES], issues = parse_list_series(
            students[PREFERRED_LANGUAGES], file=STUDENTS, column=PREFERRED_LANGUAGES
        )
        self._coercion_issues(issues)
        if ENROLLED_COURSES in students:
            items, issues = explode_list_series(students[ENROLLED_COURSES], file=STUDENTS, column=ENROLLED_COURSES)
            self._coercion_issues(issues)
            students[ENROLLED_COURSES] = tuples_by_label(items, students.index)
            enrolled_items = items
        raw = students["preferred_shift"] if "preferred_shift" in students else _nulls(students.index)
        students["preferred_shift_raw"] = raw
        students["preferred_shift"] = self._resolve_shifts(raw, shifts)
        self._validate(students, spec.schema, STUDENTS)
        return students, enrolled_items

    def _resolve_shifts(self, raw: pd.Series, shifts: pd.DataFrame | None) -> pd.Series:
        """Map each preferred shift (a shift_id, or a shift_code/shift_type in any case) to its shift_id."""
        if shifts is None or raw.isna().all():
            return _nulls(raw.index)
        # each distinct value is resolved once: millions of rows name a handful of shifts
        codes, distinct = pd.factorize(raw)
        resolved = take_strings(self._resolve_distinct_shifts(pd.Series(distinct, dtype=STRING_DTYPE), shifts), codes)
        resolved.index = raw.index
        unresolved = raw.notna() & resolved.isna()
        if not unresolved.any():
            return resolved
        if not self._default_shift:
            self.issues += row_issues(
                "DANGLING_REFERENCE",
                STUDENTS,
                "preferred_shift",
                raw[unresolved],
                f"not a shift_id, shift_code or shift_type of {SHIFTS}",
            )
        else:
            self.warnings.append(
                f"{STUDENTS}: {int(unresolved.sum())} preferred_shift value(s) name no shift and are "
                f"ignored ({SHIFTS} is absent, so every batch shares the default shift)"
            )
        return resolved

    def _resolve_distinct_shifts(self, raw: pd.Series, shifts: pd.DataFrame) -> pd.Series:
        """:meth:`_resolve_shifts` of distinct, non-null values (null: unresolved), warning about
        shift types shared by several shifts."""
        ids = shifts["shift_id"].dropna()
        by_id = dict(zip(ids, ids, strict=True))
        by_code = _first_id_by(shifts, "shift_code", lambda s: s.str.upper())
        by_type = _first_id_by(shifts, "shift_type", upper_enum)
        # each later form is looked up only for the values the earlier ones left unresolved
        resolved = _lookup(raw, by_id)
        resolved = resolved.fillna(_lookup(raw[resolved.isna()].str.upper(), by_code))
        as_type = upper_enum(raw[resolved.isna()]).reindex(raw.index)
        resolved = resolved.fillna(_lookup(as_type, by_type))
        if "shift_type" in shifts:
            per_type = shifts["shift_type"].value_counts()
            for shift_type in sorted(set(as_type.dropna()) & set(per_type[per_type > 1].index)):
                self.warnings.append(
                    f"{STUDENTS}: preferred_shift {shift_type!r} matches several shifts; "
                    f"resolved to the first in {SHIFTS}, {by_type[shift_type]!r}"
                )
        return resolved

    def _enrollments(
        self, students: pd.DataFrame | None, enrolled_items: pd.Series | None, courses: pd.DataFrame | None
    ) -> _Enrollments | None:
        """Enrollment rows, the file they came from, issue column names and the rows of students
        and courses their ids name (or ``None``).

        ``student_course_enrollment.csv`` wins over the ``enrolled_courses`` column.
        """
        if ENROLLMENTS in self.files:
            if enrolled_items is not None:
                self.warnings.append(
                    f"{ENROLLMENTS} and the {ENROLLED_COURSES} column of {STUDENTS} are both present; "
                    f"using {ENROLLMENTS}"
                )
            frame = self._read(ENROLLMENTS, required=True, columns=SPECS[ENROLLMENTS].required)
            if frame is None:
                return None
            frame = self._coerce(frame, SPECS[ENROLLMENTS])
            if "enrollment_date" in frame:
                # checked as an ISO date, kept as written (the pipeline only passes it on)
                _, issues = coerce_datetime(frame["enrollment_date"], file=ENROLLMENTS, column="enrollment_date")
                self._coercion_issues(issues)
            file, names = ENROLLMENTS, {}
        elif students is not None and enrolled_items is not None:
            frame = _enrollments_from_list(students, enrolled_items)
            file, names = STUDENTS, {"course_id": ENROLLED_COURSES}
        else:
            if students is not None:  # else unknown whether the list column would have been there
                self._issue(
                    "MISSING_FILE",
                    ENROLLMENTS,
                    f"required file is missing (or give {STUDENTS} an {ENROLLED_COURSES} column)",
                )
            return None
        for column in ENROLLMENT_COLUMNS:
            if column not in frame:
                frame[column] = _typed_nulls(frame.index, column)
        student_rows = (
            None if students is None else string_positions(frame["student_id"], students["student_id"], runs=True)
        )
        course_rows = None if courses is None else string_positions(frame["course_id"], courses["course_id"])
        duplicated = _repeated_pairs(frame, student_rows, course_rows)
        if duplicated is not None:
            first = row_number(frame.index[duplicated][0])
            self.warnings.append(
                f"{file}: {int(duplicated.sum())} repeated (student_id, course_id) enrollment(s) of the same "
                f"term ignored, the first on row {first}"
            )
            frame = frame.loc[~duplicated]
            student_rows = None if student_rows is None else student_rows[~duplicated]
            course_rows = None if course_rows is None else course_rows[~duplicated]
        self._validate(frame, _DEDUPLICATED_ENROLLMENTS, file, names)
        return _Enrollments(frame, file, names, student_rows, course_rows)

    def _parameter_values(self, parameters: pd.DataFrame | None) -> pd.DataFrame | None:
        values = self._table(PARAMETER_VALUES, required=False)
        if values is None:
            return None
        if "json_value" in values:
            cells = values["json_value"].dropna()
            bad = cells[[not _is_json(text) for text in cells]]
            self._coercion_issues(row_issues("INVALID_VALUE", PARAMETER_VALUES, "json_value", bad, "not valid JSON"))
        if parameters is not None:
            self._references(values, parameters, "parameter_id", PARAMETER_VALUES, PARAMETERS)
        elif PARAMETERS not in self.files:
            self._issue("MISSING_FILE", PARAMETERS, f"required by {PARAMETER_VALUES} (its parameter_id column)")
        # the configuration stage reports a bad override at its file row: keep it, since the
        # record position changes when blank (``,,,``) lines are dropped
        values[SOURCE_ROW] = [row_number(label) for label in values.index]
        return values

    def _passthrough(self) -> dict[str, pd.DataFrame]:
        tables: dict[str, pd.DataFrame] = {}
        for file, key in PASSTHROUGH_KEYS.items():
            frame = self._read(file, required=False, columns=(key,))
            if frame is not None:
                self._validate(frame, schemas.key_schema(key), file)
                tables[file.removesuffix(".csv")] = frame
        return tables

    # ---------------------------------------------------------------------------- cross-table

    def _references(
        self,
        frame: pd.DataFrame | None,
        target_frame: pd.DataFrame | None,
        column: str,
        file: str,
        target_file: str,
        column_names: dict[str, str] | None = None,
        *,
        target_column: str | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        """DANGLING_REFERENCE for every non-null ``frame[column]`` not in ``target_frame``.

        ``target_column`` defaults to ``column``; both frames may be ``None`` (already reported).
        ``rows``, if known, is :func:`string_positions` of the column in the target's keys.
        """
        if frame is None or target_frame is None:
            return
        keys = target_frame[target_column or column]
        found = rows >= 0 if rows is not None else string_isin(frame[column], keys)
        dangling = frame[column].notna().to_numpy() & ~found
        shown = (column_names or {}).get(column, column)
        self.issues += row_issues(
            "DANGLING_REFERENCE",
            file,
            shown,
            frame.loc[dangling, column],
            f"not a {target_column or column} of {target_file}",
        )

    def _enrollment_terms(self, students: pd.DataFrame | None, enrollments: _Enrollments) -> np.ndarray:
        """Mark each enrollment row of an earlier term than its student's as history (column
        :data:`IS_HISTORY`), report rows of a later term or of a year that cannot be ordered, and
        return the mask of the current rows."""
        frame = enrollments.frame
        rows = enrollments.student_rows
        if students is None or rows is None or enrollments.file != ENROLLMENTS:
            # the list column's rows take the student's own term: all current
            frame[IS_HISTORY] = False
            return np.ones(len(frame), dtype=bool)
        term_columns = ("academic_year", "semester")
        if any(i.file in (STUDENTS, ENROLLMENTS) and i.column in term_columns for i in self.issues):
            # a term already reported as broken cannot be ordered: its rows are checked once it is fixed
            frame[IS_HISTORY] = False
            return np.ones(len(frame), dtype=bool)
        # an unknown student (negative row) is a DANGLING_REFERENCE already: its rows are current
        term = classify_terms(frame["academic_year"], frame["semester"],
                              students["academic_year"], students["semester"], student_rows=rows)
        frame[IS_HISTORY] = term == HISTORY
        later = term == LATER
        if later.any():
            self.issues += row_issues(
                "LATER_TERM_ENROLLMENT", ENROLLMENTS, "academic_year", _term_text(frame.loc[later]),
                "enrollment of a later term than the student's current academic_year/semester in student_data.csv",
            )
        unordered = term == UNORDERED
        if unordered.any():
            self.issues += row_issues(
                "INVALID_VALUE", ENROLLMENTS, "academic_year", frame.loc[unordered, "academic_year"],
                "cannot be ordered against the student's academic_year (different text, and not both with a "
                "four-digit starting year)",
            )
        return term != HISTORY

    def _one_current_row_per_pair(self, enrollments: _Enrollments,
                                  current: np.ndarray) -> tuple[_Enrollments, np.ndarray]:
        """Drop the current rows repeating an earlier current (student_id, course_id) pair (a
        row without a term beside one of the student's term), with a warning. History rows of
        the same pair stay: a course taken before and taken again now is a retake."""
        frame = enrollments.frame
        in_current = _repeated_pairs(frame.loc[current], _masked(enrollments.student_rows, current),
                                     _masked(enrollments.course_rows, current), key=("student_id", "course_id"))
        if in_current is None:
            return enrollments, current
        repeated = np.zeros(len(frame), dtype=bool)
        repeated[current] = in_current
        self.warnings.append(
            f"{enrollments.file}: {int(repeated.sum())} current enrollment(s) repeating the same (student_id, "
            f"course_id) ignored, the first on row {row_number(frame.index[repeated][0])}")
        keep = ~repeated
        return (replace(enrollments, frame=frame.loc[keep], student_rows=_masked(enrollments.student_rows, keep),
                        course_rows=_masked(enrollments.course_rows, keep)), current[keep])

    def _prerequisite_cycles(self, prerequisites: pd.DataFrame) -> None:
        """PREREQUISITE_CYCLE for every set of courses that (directly or not) require each other."""
        for cycle in prerequisite_cycles(prerequisites["course_id"], prerequisites["prerequisite_course_id"]):
            self._issue("PREREQUISITE_CYCLE", PREREQUISITES,
                        f"the prerequisites form a cycle: {' -> '.join(cycle)} (each is a prerequisite of the next)",
                        column="prerequisite_course_id")

    def _no_active_students(self, students: pd.DataFrame | None) -> None:
        """Nothing to batch is an error, not an empty success: Stage 3 would get empty tables."""
        if students is None or students["is_active"].any():
            return
        if any(i.file == STUDENTS and i.column == "is_active" for i in self.issues):
            return  # unreadable is_active cells are already reported
        self.issues.append(
            ValidationIssue(
                "EMPTY_TABLE",
                STUDENTS,
                f"every student is inactive (is_active = false on all {len(students)} rows): there is no one to batch",
                column="is_active",
            )
        )

    def _students_without_courses(
        self, students: pd.DataFrame | None, enrollments: pd.DataFrame, student_rows: np.ndarray | None
    ) -> None:
        """FEATURE_EXTRACTION_ERROR for every active student without an enrollment.

        ``student_rows`` (if known) is :func:`string_positions` of the enrollments' student_id in
        ``students``: the rows named, without looking millions of ids up again.
        """
        if students is None:
            return
        if student_rows is None:
            enrolled = string_isin(students["student_id"], enrollments["student_id"])
        else:
            # a student_id's position is that of one of its rows: map every row to it, so that
            # a repeated student_id (a DUPLICATE_KEY) counts as enrolled on each of its rows
            has_enrollment = np.zeros(len(students) + 1, dtype=bool)  # the last for -1, an unknown id
            has_enrollment[student_rows] = True
            enrolled = has_enrollment[string_positions(students["student_id"], students["student_id"])]
        # a blank student_id is already a BLANK_KEY; that it has no enrollment follows from it
        named = students["student_id"].notna().to_numpy()
        without = students["is_active"].to_numpy() & ~enrolled & named
        self.issues += row_issues(
            "FEATURE_EXTRACTION_ERROR",
            STUDENTS,
            "student_id",
            students.loc[without, "student_id"],
            "active student has no course enrollment of its current term",
        )

    # ---------------------------------------------------------------------------- issues

    def _issue(self, code: str, file: str, message: str, *, column: str | None = None) -> None:
        self.issues.append(ValidationIssue(code, file, message, column=column))

    def _coercion_issues(self, issues: list[ValidationIssue]) -> None:
        self.issues += issues
        for issue in issues:
            if issue.row is not None and issue.column is not None:
                self._reported.setdefault(issue.file, set()).add((issue.row, issue.column))


@dataclass(frozen=True)
class _Enrollments:
    """The enrollment rows, where they came from, and the rows their ids name."""

    frame: pd.DataFrame
    #: the file issues name
    file: str
    #: column -> name in issues (``course_id`` is ``enrolled_courses`` for the list column)
    names: dict[str, str]
    #: per row, :func:`string_positions` of its student_id in the students (None: unreadable)
    student_rows: np.ndarray | None
    #: per row, :func:`string_positions` of its course_id in the courses (None: unreadable)
    course_rows: np.ndarray | None


def _repeated_pairs(
    frame: pd.DataFrame, student_rows: np.ndarray | None, course_rows: np.ndarray | None,
    key: tuple[str, ...] = ENROLLMENT_TERM_KEY,
) -> np.ndarray | None:
    """Mask of the rows repeating an earlier row's ``key`` (default: the same (student_id,
    course_id) pair of the same term, academic_year and semester); ``None`` if none does. The
    same pair in two terms is a retake: the history row and the current one both stay. No
    repeated pair at all is decided on the rows' integer positions, without hashing strings."""
    if student_rows is not None and course_rows is not None and (student_rows >= 0).all() and (course_rows >= 0).all():
        # every id names a row of its table, so a pair of positions stands for a pair of ids,
        # and sorted numbers show repeats far faster than hashing millions of string pairs
        pairs = np.sort(student_rows * (int(course_rows.max(initial=0)) + 1) + course_rows)
        if not (pairs[1:] == pairs[:-1]).any():
            return None
    duplicated = frame.duplicated(subset=list(key), keep="first").to_numpy()
    return duplicated if duplicated.any() else None


def _masked(rows: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    return None if rows is None else rows[mask]


def _term_text(frame: pd.DataFrame) -> pd.Series:
    """``<academic_year> semester <n>`` of each row, for messages."""
    semester = frame["semester"].astype("string").fillna("?")
    return frame["academic_year"].astype("string").fillna("") + " semester " + semester


def _enrollments_from_list(students: pd.DataFrame, items: pd.Series) -> pd.DataFrame:
    """One row per item of ``enrolled_courses``, indexed by the student's record label."""
    labels = items.index
    return pd.DataFrame(
        {
            "student_id": students.loc[labels, "student_id"].to_numpy(),
            "course_id": items.to_numpy(),
            "is_mandatory": _typed_nulls(labels, "is_mandatory"),
            "academic_year": students.loc[labels, "academic_year"].to_numpy(),
            "semester": (
                students.loc[labels, "semester"].to_numpy()
                if "semester" in students
                else _typed_nulls(labels, "semester")
            ),
            "enrollment_date": _typed_nulls(labels, "enrollment_date"),
        },
        index=labels,
    ).astype(
        {"student_id": STRING_DTYPE, "course_id": STRING_DTYPE, "academic_year": STRING_DTYPE, "semester": "Int64"}
    )


def _first_id_by(shifts: pd.DataFrame, column: str, normalise: Callable[[pd.Series], pd.Series]) -> dict[str, str]:
    if column not in shifts:
        return {}
    keys = normalise(shifts[column].astype(STRING_DTYPE))
    pairs = pd.DataFrame({"key": keys, "shift_id": shifts["shift_id"]}).dropna().drop_duplicates("key")
    return dict(zip(pairs["key"], pairs["shift_id"], strict=True))


def _lookup(keys: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """``keys.map(mapping)`` as ``string`` (null where a key is absent), without pandas' map,
    which converts millions of Arrow strings to Python objects one by one."""
    if not mapping:
        return _nulls(keys.index)
    positions = string_positions(keys, pd.Series(list(mapping), dtype=STRING_DTYPE))
    resolved = take_strings(pd.Series(list(mapping.values()), dtype=STRING_DTYPE), positions)
    resolved.index = keys.index
    return resolved


def _with_default(column: pd.Series | None, value: bool | int | float, index: pd.Index) -> pd.Series:
    """``column`` with its nulls (all of it, if ``None``) set to ``value``: plain ``bool`` for
    a boolean, else ``Int64``/``Float64`` as the value's type."""
    filled = pd.Series(value, index=index) if column is None else column.fillna(value)
    if isinstance(value, bool):
        return filled.astype(bool)
    return filled.astype("Int64" if isinstance(value, int) else "Float64")


def _nulls(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype=STRING_DTYPE)


_ENROLLMENT_DTYPES = {"is_mandatory": "boolean", "semester": "Int64"}


def _typed_nulls(index: pd.Index, column: str) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype=_ENROLLMENT_DTYPES.get(column, STRING_DTYPE))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _fresh(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a fresh RangeIndex (the record labels are only needed for issues)."""
    return frame.reset_index(drop=True)


def _with_categories(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` with its string ``columns`` as categoricals (the same values)."""
    for column in columns:
        if column in frame and not isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = string_categorical(frame[column])
    return frame


def _fresh_or_none(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if frame is None else _fresh(frame)
