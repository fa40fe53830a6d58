"""pandera schemas of the contract's tables, and the conversion of their failures into issues.

Input schemas describe a table *after* the loader's coercion (ids and text as nullable
``string``, numbers as ``Int64``/``Float64``, booleans as ``boolean``/``bool``, enumerations
upper case). All are non-strict: unknown extra columns are kept.

Output schemas describe the three tables the pipeline writes; their leading columns must be
exactly :data:`STUDENT_BATCHES_COLUMNS`, :data:`MEMBERSHIP_COLUMNS` and
:data:`BATCH_COURSE_ENROLLMENT_COLUMNS`, in that order (more may follow).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa

from stage2.contract.csvio import MAX_ISSUES_PER_CHECK, row_number
from stage2.errors import InvariantViolation, ValidationIssue

# --------------------------------------------------------------------------------------------
# contract values

COURSE_TYPES: tuple[str, ...] = ("CORE", "ELECTIVE", "SKILL_ENHANCEMENT", "VALUE_ADDED", "PRACTICAL")
DEFAULT_COURSE_TYPE = "CORE"
SHIFT_TYPES: tuple[str, ...] = ("MORNING", "AFTERNOON", "EVENING", "NIGHT", "FLEXIBLE", "WEEKEND")
ENROLLMENT_STATUSES: tuple[str, ...] = ("ENROLLED", "PARTIAL")

ROOM_CAPACITY_MIN, ROOM_CAPACITY_MAX = 1, 1000
CREDITS_EXCLUSIVE_MIN, CREDITS_MAX = 0, 20
SEMESTER_MIN, SEMESTER_MAX = 1, 12
SESSIONS_PER_WEEK_MIN, SESSIONS_PER_WEEK_MAX = 1, 10
ACADEMIC_YEAR_MIN_CHARS = 4
FACULTY_HOURS_MIN, FACULTY_HOURS_MAX = 1, 60
#: ``faculty.max_hours_per_week`` of a row that leaves it empty
DEFAULT_FACULTY_HOURS = 18
COMPETENCY_MIN, COMPETENCY_MAX = 1, 10
#: ``faculty_course_competency.competency_level`` of a row that leaves it empty
DEFAULT_COMPETENCY = 6

#: The value columns of an entity_parameter_values row: exactly one must be set.
EAV_VALUE_COLUMNS: tuple[str, ...] = (
    "parameter_value",
    "numeric_value",
    "integer_value",
    "boolean_value",
    "json_value",
)

#: columns of student_batches.csv after the contract's, for Stage 3 and the audit
EXTRA_BATCH_COLUMNS: tuple[str, ...] = ("group_key", "group_status", "size_min", "size_max")

# --------------------------------------------------------------------------------------------
# output column order (the pipeline writes frames in exactly this order)

STUDENT_BATCHES_COLUMNS: tuple[str, ...] = (
    "batch_id", "tenant_id", "institution_id", "program_id", "batch_code", "batch_name",
    "student_count", "academic_year", "semester", "preferred_shift", "capacity_allocated",
    "generation_timestamp", "is_active", "room_id", "shift_id",
)  # fmt: skip
MEMBERSHIP_COLUMNS: tuple[str, ...] = (
    "membership_id", "batch_id", "student_id", "student_name", "program_id", "academic_year",
    "enrollment_date", "membership_status", "assignment_timestamp", "is_active",
)  # fmt: skip
BATCH_COURSE_ENROLLMENT_COLUMNS: tuple[str, ...] = (
    "enrollment_id", "batch_id", "course_id", "course_name", "credit_hours", "enrollment_status",
    "expected_students", "capacity_utilization", "credits_allocated", "is_mandatory",
    "priority_level", "sessions_per_week", "is_active", "created_at",
)  # fmt: skip

# Tables are pandera's object API (DataFrameSchema/Column), not DataFrameModel classes: turning
# a model into a schema resolves its annotations through pandera.typing, which imports every
# backend pandera knows (dask.dataframe, ...) — half a second of a small run's start-up.

_STRING = pd.StringDtype()
#: an enrollment is one (student, course) of one term: the same pair in an earlier term is history
ENROLLMENT_TERM_KEY: tuple[str, ...] = ("student_id", "course_id", "academic_year", "semester")
_INT = pd.Int64Dtype()
_FLOAT = pd.Float64Dtype()
_BOOLEAN = pd.BooleanDtype()


def _column(
    dtype: Any = None, *checks: pa.Check, nullable: bool = True, required: bool = True, unique: bool = False
) -> pa.Column:
    """A column; an input table's optional columns are ``required=False`` (absent is fine)."""
    return pa.Column(dtype, list(checks), nullable=nullable, required=required, unique=unique)


def _key() -> pa.Column:
    """A non-blank, unique identifier."""
    return _column(_STRING, nullable=False, unique=True)


def _text() -> pa.Column:
    """An optional, nullable text column."""
    return _column(_STRING, required=False)


def _semester(*, required: bool) -> pa.Column:
    return _column(_INT, pa.Check.in_range(min_value=SEMESTER_MIN, max_value=SEMESTER_MAX), required=required)


def _academic_year(*, nullable: bool) -> pa.Column:
    return _column(_STRING, pa.Check.str_length(min_value=ACADEMIC_YEAR_MIN_CHARS), nullable=nullable)


def _input(name: str, columns: dict[str, pa.Column], **options: Any) -> pa.DataFrameSchema:
    """An input table's schema: non-strict (unknown extra columns are kept), and no coercion
    (the loader coerces and reports unparseable cells itself)."""
    return pa.DataFrameSchema(columns, strict=False, coerce=False, name=name, **options)


# --------------------------------------------------------------------------------------------
# input tables

StudentData = _input(
    "StudentData",
    {
        "student_id": _key(),
        "program_id": _column(_STRING, nullable=False),
        "academic_year": _academic_year(nullable=False),
        "semester": _semester(required=False),
        "student_name": _text(),
        "roll_number": _text(),
        "email": _text(),
        "preferred_shift": _text(),
        "preferred_languages": _column(object, nullable=False, required=False),
        "enrolled_courses": _column(object, nullable=False, required=False),
        "tenant_id": _text(),
        "institution_id": _text(),
        "is_active": _column(bool, nullable=False),
    },
)

Programs = _input(
    "Programs",
    {
        "program_id": _key(),
        "program_code": _text(),
        "program_name": _text(),
        "program_type": _text(),
        "department_id": _text(),
        "duration_years": _column(_FLOAT, pa.Check.ge(0), required=False),
        "total_credits": _column(_FLOAT, pa.Check.ge(0), required=False),
    },
)

Courses = _input(
    "Courses",
    {
        "course_id": _key(),
        "course_code": _text(),
        "course_name": _text(),
        "course_type": _column(_STRING, pa.Check.isin(list(COURSE_TYPES)), nullable=False),
        "credits": _column(
            _FLOAT, pa.Check.gt(CREDITS_EXCLUSIVE_MIN), pa.Check.le(CREDITS_MAX), required=False
        ),
        "theory_hours": _column(_FLOAT, pa.Check.ge(0), required=False),
        "practical_hours": _column(_FLOAT, pa.Check.ge(0), required=False),
        "max_sessions_per_week": _column(
            _INT,
            pa.Check.in_range(min_value=SESSIONS_PER_WEEK_MIN, max_value=SESSIONS_PER_WEEK_MAX),
            required=False,
        ),
        "program_id": _text(),
        "semester": _semester(required=False),
    },
)

StudentCourseEnrollment = _input(
    "StudentCourseEnrollment",
    {
        "student_id": _column(_STRING, nullable=False),
        "course_id": _column(_STRING, nullable=False),
        "is_mandatory": _column(_BOOLEAN),
        "academic_year": _academic_year(nullable=True),
        "semester": _semester(required=True),
        "enrollment_date": _column(_STRING),
    },
    unique=list(ENROLLMENT_TERM_KEY),
)

Rooms = _input(
    "Rooms",
    {
        "room_id": _key(),
        "capacity": _column(
            _INT, pa.Check.in_range(min_value=ROOM_CAPACITY_MIN, max_value=ROOM_CAPACITY_MAX), nullable=False
        ),
        "room_code": _text(),
        "room_name": _text(),
        "room_type": _text(),
        "building_name": _text(),
        "floor_number": _column(_INT, required=False),
        "preferred_shift": _text(),
    },
)

Shifts = _input(
    "Shifts",
    {
        "shift_id": _key(),
        "shift_code": _text(),
        "shift_name": _text(),
        "shift_type": _column(_STRING, pa.Check.isin(list(SHIFT_TYPES)), required=False),
        "start_time": _text(),
        "end_time": _text(),
    },
)


Faculty = _input(
    "Faculty",
    {
        "faculty_id": _key(),
        "faculty_code": _text(),
        "faculty_name": _text(),
        "department_id": _text(),
        "max_hours_per_week": _column(
            _FLOAT, pa.Check.in_range(min_value=FACULTY_HOURS_MIN, max_value=FACULTY_HOURS_MAX), nullable=False
        ),
        "preferred_shift": _text(),
        "is_active": _column(bool, nullable=False),
    },
)

FacultyCourseCompetency = _input(
    "FacultyCourseCompetency",
    {
        "faculty_id": _column(_STRING, nullable=False),
        "course_id": _column(_STRING, nullable=False),
        "competency_level": _column(
            _INT, pa.Check.in_range(min_value=COMPETENCY_MIN, max_value=COMPETENCY_MAX), nullable=False
        ),
        "preference_score": _column(_FLOAT, required=False),
        "is_active": _column(bool, nullable=False),
    },
    unique=["faculty_id", "course_id"],
)


def _not_own_prerequisite(df: pd.DataFrame) -> pd.Series:
    return (df["course_id"] != df["prerequisite_course_id"]).fillna(True)


CoursePrerequisites = _input(
    "CoursePrerequisites",
    {
        "course_id": _column(_STRING, nullable=False),
        "prerequisite_course_id": _column(_STRING, nullable=False),
        "is_mandatory": _column(_BOOLEAN, required=False),
        "minimum_grade": _text(),
    },
    unique=["course_id", "prerequisite_course_id"],
    checks=[pa.Check(_not_own_prerequisite, name="not_own_prerequisite")],
)

DynamicParameters = _input(
    "DynamicParameters",
    {
        "parameter_id": _key(),
        "parameter_code": _column(_STRING, nullable=False),
        "parameter_name": _text(),
        "parameter_path": _text(),
        "data_type": _text(),
        "default_value": _text(),
        "validation_rules": _text(),
        "tenant_id": _text(),
    },
)


def _exactly_one_value(df: pd.DataFrame) -> pd.Series:
    filled = sum((df[c].notna().astype(int) for c in EAV_VALUE_COLUMNS if c in df), pd.Series(0, index=df.index))
    return filled == 1


def _effective_window(df: pd.DataFrame) -> pd.Series:
    if "effective_from" not in df or "effective_to" not in df:
        return pd.Series(True, index=df.index)
    start, end = df["effective_from"], df["effective_to"]
    # an empty bound is open (NaT compares False, so test for it explicitly)
    return (start.isna() | end.isna() | (start < end)).fillna(True).astype(bool)


EntityParameterValues = _input(
    "EntityParameterValues",
    {
        "value_id": _column(_STRING, required=False, unique=True),
        "entity_type": _column(_STRING, nullable=False),
        "entity_id": _column(_STRING, nullable=False),
        "parameter_id": _column(_STRING, nullable=False),
        "parameter_value": _text(),
        "numeric_value": _column(_FLOAT, required=False),
        "integer_value": _column(_INT, required=False),
        "boolean_value": _column(_BOOLEAN, required=False),
        "json_value": _text(),
        "effective_from": _column(required=False),
        "effective_to": _column(required=False),
        "tenant_id": _text(),
    },
    checks=[
        pa.Check(_exactly_one_value, name="exactly_one_value"),
        pa.Check(_effective_window, name="effective_window"),
    ],
)


def key_schema(key: str) -> pa.DataFrameSchema:
    """Schema of a pass-through table: a non-blank, unique ``key`` column; anything else goes."""
    return pa.DataFrameSchema(
        {key: pa.Column(pd.StringDtype(), nullable=False, unique=True)}, strict=False, name=key
    )


# --------------------------------------------------------------------------------------------
# output tables


def _output(name: str, columns: dict[str, pa.Column], unique: list[str] | None = None) -> pa.DataFrameSchema:
    """An output table's schema: its contract columns lead, in order; more may follow."""
    return pa.DataFrameSchema(columns, strict=False, ordered=True, coerce=False, unique=unique, name=name)


StudentBatches = _output(
    "StudentBatches",
    {
        "batch_id": _column(nullable=False, unique=True),
        "tenant_id": _column(),
        "institution_id": _column(),
        "program_id": _column(),
        "batch_code": _column(nullable=False),
        "batch_name": _column(),
        "student_count": _column(None, pa.Check.ge(1), nullable=False),
        "academic_year": _column(),
        "semester": _column(),
        "preferred_shift": _column(),
        "capacity_allocated": _column(None, pa.Check.ge(0)),
        "generation_timestamp": _column(nullable=False),
        "is_active": _column(nullable=False),
        "room_id": _column(),
        "shift_id": _column(),
    },
    unique=["tenant_id", "batch_code"],
)

BatchStudentMembership = _output(
    "BatchStudentMembership",
    {
        "membership_id": _column(nullable=False, unique=True),
        "batch_id": _column(nullable=False),
        "student_id": _column(nullable=False, unique=True),  # every active student in exactly one row
        "student_name": _column(),
        "program_id": _column(),
        "academic_year": _column(),
        "enrollment_date": _column(),
        "membership_status": _column(None, pa.Check.str_length(min_value=1), nullable=False),
        "assignment_timestamp": _column(nullable=False),
        "is_active": _column(nullable=False),
    },
)

BatchCourseEnrollment = _output(
    "BatchCourseEnrollment",
    {
        "enrollment_id": _column(nullable=False, unique=True),
        "batch_id": _column(nullable=False),
        "course_id": _column(nullable=False),
        "course_name": _column(),
        "credit_hours": _column(),
        "enrollment_status": _column(None, pa.Check.isin(list(ENROLLMENT_STATUSES)), nullable=False),
        "expected_students": _column(None, pa.Check.ge(1), nullable=False),
        "capacity_utilization": _column(None, pa.Check.ge(0)),
        "credits_allocated": _column(),
        "is_mandatory": _column(nullable=False),
        "priority_level": _column(),
        "sessions_per_week": _column(),
        "is_active": _column(nullable=False),
        "created_at": _column(nullable=False),
    },
    unique=["batch_id", "course_id"],
)


# --------------------------------------------------------------------------------------------
# failures -> issues

@dataclass(frozen=True)
class _FrameCheck:
    code: str
    message: str
    columns: tuple[str, ...]  # the columns the check reads


#: Custom row checks: the issue of a failing row.
_FRAME_CHECKS: dict[str, _FrameCheck] = {
    "exactly_one_value": _FrameCheck(
        "INVALID_VALUE", "exactly one of " + ", ".join(EAV_VALUE_COLUMNS) + " must be filled in", EAV_VALUE_COLUMNS
    ),
    "effective_window": _FrameCheck(
        "INVALID_VALUE", "effective_to must be later than effective_from", ("effective_from", "effective_to")
    ),
    "not_own_prerequisite": _FrameCheck(
        "INVALID_VALUE", "a course cannot be its own prerequisite", ("course_id", "prerequisite_course_id")
    ),
}
_UNIQUENESS_CHECKS = frozenset({"field_uniqueness", "multiple_fields_uniqueness", "unique"})
_COMPARISONS: dict[str, str] = {
    "greater_than": "must be greater than {0}",
    "greater_than_or_equal_to": "must be at least {0}",
    "less_than": "must be less than {0}",
    "less_than_or_equal_to": "must be at most {0}",
    "in_range": "must be between {0} and {1}",
}
_CHECK_CALL = re.compile(r"^(\w+)\((.*)\)$", re.DOTALL)


def validate_frame(
    frame: pd.DataFrame,
    schema: pa.DataFrameSchema,
    file: str,
    *,
    column_names: dict[str, str] | None = None,
    reported: Collection[tuple[int, str]] = (),
) -> list[ValidationIssue]:
    """Validate ``frame`` (indexed by record position) lazily; return every failure as an issue.

    ``column_names`` renames columns in the issues (e.g. the enrollments built from
    ``student_data.enrolled_courses`` report ``course_id`` problems under that column).
    ``reported`` holds (row, column) cells already reported (e.g. unparseable numbers the
    loader turned into nulls): failures there, or of a row check reading them, are left out.
    """
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return failure_cases_to_issues(
            errors.failure_cases, frame, file, column_names=column_names, reported=reported
        )
    return []


def failure_cases_to_issues(
    failure_cases: pd.DataFrame,
    frame: pd.DataFrame,
    file: str,
    *,
    column_names: dict[str, str] | None = None,
    reported: Collection[tuple[int, str]] = (),
) -> list[ValidationIssue]:
    """Turn pandera's ``failure_cases`` into issues: one per failing row, capped per check.

    ``column_names`` and ``reported`` as in :func:`validate_frame`.
    """
    names = column_names or {}
    issues: list[ValidationIssue] = []
    cases = _without_reported(failure_cases.astype({"check": str}), set(reported))
    is_multi_unique = cases["check"].eq("multiple_fields_uniqueness")
    if is_multi_unique.any():
        multi = cases[is_multi_unique]
        columns = [str(c) for c in dict.fromkeys(multi["column"].dropna())]
        issues += _duplicate_issues(columns, multi["index"], frame, file, names)
    cases = cases[~is_multi_unique]
    is_frame_check = cases["schema_context"].ne("Column")
    # Frame-level checks report each failing row once per column: keep one per (check, row).
    frame_level = cases[is_frame_check].drop_duplicates(subset=["check", "index"])
    column_level = cases[~is_frame_check]
    for (check, column), group in column_level.groupby(["check", "column"], sort=False, dropna=False):
        issues += _column_issues(str(check), str(column), group, frame, file, names)
    for check, group in frame_level.groupby("check", sort=False):
        issues += _frame_issues(str(check), group, frame, file, names)
    return issues


def _without_reported(cases: pd.DataFrame, reported: set[tuple[int, str]]) -> pd.DataFrame:
    """Drop failures at already-reported cells, and row checks that read such a cell."""
    if not reported or cases.empty:
        return cases

    def already(label: Any, column: object, check: str) -> bool:
        if label is None or pd.isna(label):
            return False
        row = row_number(label)
        frame_check = _FRAME_CHECKS.get(check)
        read = frame_check.columns if frame_check else (str(column),)
        return any((row, c) in reported for c in read)

    keep = [
        not already(label, column, check)
        for label, column, check in zip(cases["index"], cases["column"], cases["check"], strict=True)
    ]
    return cases.loc[keep]


def _column_issues(
    check: str, column: str, group: pd.DataFrame, frame: pd.DataFrame, file: str, names: dict[str, str]
) -> list[ValidationIssue]:
    shown = names.get(column, column)
    if check in _UNIQUENESS_CHECKS:
        return _duplicate_issues([column], group["index"], frame, file, names)
    code, message = _describe(check, column, frame)
    rows = group.iloc[:MAX_ISSUES_PER_CHECK]
    issues = [
        ValidationIssue(
            code=code,
            file=file,
            message=message,
            row=None if pd.isna(label) else row_number(label),
            column=shown,
            value=None if code in {"BLANK_KEY"} or pd.isna(value) else value,
        )
        for label, value in zip(rows["index"], rows["failure_case"], strict=True)
    ]
    if len(group) > MAX_ISSUES_PER_CHECK:
        more = len(group) - MAX_ISSUES_PER_CHECK
        issues.append(ValidationIssue(code, file, f"{message}: {more} more row(s) like the ones above", column=shown))
    return issues


def _frame_issues(
    check: str, group: pd.DataFrame, frame: pd.DataFrame, file: str, names: dict[str, str]
) -> list[ValidationIssue]:
    if check == "column_ordered":
        return [ValidationIssue("INVALID_VALUE", file, "columns are not in the contract's order")]
    if check in {"column_in_dataframe", "column_in_schema"}:
        return [
            ValidationIssue("MISSING_COLUMN", file, "required column is missing", column=names.get(str(c), str(c)))
            for c in group["failure_case"]
        ]
    known = _FRAME_CHECKS.get(check)
    code, message = (known.code, known.message) if known else ("INVALID_VALUE", f"fails the check {check}")
    labels = group["index"]
    issues = [
        ValidationIssue(code, file, message, row=row_number(label)) for label in labels.iloc[:MAX_ISSUES_PER_CHECK]
    ]
    if len(labels) > MAX_ISSUES_PER_CHECK:
        issues.append(ValidationIssue(code, file, f"{message}: {len(labels) - MAX_ISSUES_PER_CHECK} more row(s)"))
    return issues


def _duplicate_issues(
    columns: Sequence[str], labels: pd.Series, frame: pd.DataFrame, file: str, names: dict[str, str]
) -> list[ValidationIssue]:
    """One DUPLICATE_KEY issue per duplicated row, naming the other rows with the same key."""
    labels = pd.Series(labels.to_numpy()).drop_duplicates()
    keys = frame.loc[labels.to_list(), list(columns)]
    keys = keys.assign(_row=[row_number(label) for label in labels])
    shown = ", ".join(names.get(c, c) for c in columns)
    issues: list[ValidationIssue] = []
    for key, rows in keys.groupby(list(columns), sort=False, dropna=False)["_row"]:
        value = key if len(columns) > 1 else (key[0] if isinstance(key, tuple) else key)
        all_rows = sorted(rows.to_list())
        for row in all_rows:
            others = ", ".join(str(r) for r in all_rows if r != row)
            issues.append(
                ValidationIssue(
                    "DUPLICATE_KEY",
                    file,
                    f"{shown} must be unique; the same value is on row(s) {others}",
                    row=row,
                    column=shown,
                    value=value,
                )
            )
    if len(issues) > MAX_ISSUES_PER_CHECK:
        more = len(issues) - MAX_ISSUES_PER_CHECK
        issues = issues[:MAX_ISSUES_PER_CHECK]
        issues.append(ValidationIssue("DUPLICATE_KEY", file, f"{more} more duplicated row(s)", column=shown))
    return issues


def _describe(check: str, column: str, frame: pd.DataFrame) -> tuple[str, str]:
    """Issue code and message for a failed column check."""
    numeric = column in frame and pd.api.types.is_numeric_dtype(frame[column])
    if check == "not_nullable":
        if column.endswith("_id"):
            return "BLANK_KEY", "the identifier is empty"
        return ("INVALID_NUMBER" if numeric else "INVALID_VALUE"), "a value is required"
    if check.startswith("dtype("):
        return "INVALID_VALUE", f"column has type {frame[column].dtype}, expected {check[6:-1]}"
    match = _CHECK_CALL.match(check)
    name, arguments = (match.group(1), match.group(2)) if match else (check, "")
    if name == "isin":
        allowed = ", ".join(re.findall(r"'([^']*)'", arguments))
        return "INVALID_ENUM", f"must be one of {allowed}"
    if name in _COMPARISONS:
        return "INVALID_NUMBER", _COMPARISONS[name].format(*[a.strip() for a in arguments.split(",")])
    if name == "str_length":
        low = arguments.split(",")[0].strip()
        return "INVALID_VALUE", f"must be at least {low} characters long"
    return "INVALID_VALUE", f"fails the check {check}"


# --------------------------------------------------------------------------------------------
# output validation


def validate_output_tables(batches: pd.DataFrame, membership: pd.DataFrame, enrollment: pd.DataFrame) -> None:
    """Check the three output frames against their schemas and each other.

    Raises :class:`InvariantViolation` (a stage2 bug, nothing is written) naming every broken
    rule: column order, schema checks, batch ids that do not exist, ``student_count`` not
    equal to the batch's membership rows.
    """
    problems: list[ValidationIssue] = []
    tables: tuple[tuple[str, pd.DataFrame, pa.DataFrameSchema, tuple[str, ...]], ...] = (
        ("student_batches.csv", batches, StudentBatches, STUDENT_BATCHES_COLUMNS),
        ("batch_student_membership.csv", membership, BatchStudentMembership, MEMBERSHIP_COLUMNS),
        ("batch_course_enrollment.csv", enrollment, BatchCourseEnrollment, BATCH_COURSE_ENROLLMENT_COLUMNS),
    )
    for file, frame, model, columns in tables:
        leading = tuple(frame.columns[: len(columns)])
        if leading != columns:
            problems.append(
                ValidationIssue(
                    "INVALID_VALUE", file, f"leading columns are {list(leading)}, expected {list(columns)}"
                )
            )
            continue
        problems += validate_frame(frame.reset_index(drop=True), model, file)
    if not problems:
        problems += _output_references(batches, membership, enrollment)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_ISSUES_PER_CHECK])
        raise InvariantViolation(
            f"the output breaks the data contract ({len(problems)} problem(s)):\n{shown}",
            where=problems[0].file,
            details={"issues": [p.to_dict() for p in problems]},
        )


def _output_references(
    batches: pd.DataFrame, membership: pd.DataFrame, enrollment: pd.DataFrame
) -> list[ValidationIssue]:
    problems: list[ValidationIssue] = []
    batch_ids = set(batches["batch_id"])
    for file, frame in (("batch_student_membership.csv", membership), ("batch_course_enrollment.csv", enrollment)):
        unknown = frame.loc[~frame["batch_id"].isin(batch_ids), "batch_id"].reset_index(drop=True)
        problems += [
            ValidationIssue(
                "DANGLING_REFERENCE",
                file,
                "batch_id not in student_batches",
                row=row_number(i),
                column="batch_id",
                value=v,
            )
            for i, v in unknown.iloc[:MAX_ISSUES_PER_CHECK].items()
        ]
    members = membership.groupby("batch_id").size()
    counts = batches.set_index("batch_id")["student_count"]
    wrong = counts[counts.astype("Int64") != members.reindex(counts.index, fill_value=0).astype("Int64")]
    problems += [
        ValidationIssue(
            "INVALID_VALUE",
            "student_batches.csv",
            f"student_count is {count} but the batch has {int(members.get(batch_id, 0))} membership row(s)",
            column="student_count",
            value=batch_id,
        )
        for batch_id, count in wrong.iloc[:MAX_ISSUES_PER_CHECK].items()
    ]
    return problems
