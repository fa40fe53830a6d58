"""pandera schemas of the contract's tables, and the conversion of their failures into issues.

Input models describe a table *after* the loader's coercion (ids and text as nullable
``string``, numbers as ``Int64``/``Float64``, booleans as ``boolean``/``bool``, enumerations
upper case). All are non-strict: unknown extra columns are kept.

Output models describe the three tables the pipeline writes; their leading columns must be
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
from pandera.typing import Series

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

_String = Series[pd.StringDtype]
_OptString = Series[pd.StringDtype] | None
_KEY: dict[str, Any] = {"nullable": False, "unique": True}
_SEMESTER: dict[str, Any] = {"in_range": {"min_value": SEMESTER_MIN, "max_value": SEMESTER_MAX}, "nullable": True}
_ACADEMIC_YEAR: dict[str, Any] = {"str_length": {"min_value": ACADEMIC_YEAR_MIN_CHARS}}


class _Input(pa.DataFrameModel):
    class Config:
        strict = False  # unknown extra columns are kept
        coerce = False  # the loader coerces and reports unparseable cells itself


# --------------------------------------------------------------------------------------------
# input tables


class StudentData(_Input):
    student_id: _String = pa.Field(**_KEY)
    program_id: _String = pa.Field(nullable=False)
    academic_year: _String = pa.Field(nullable=False, **_ACADEMIC_YEAR)
    semester: Series[pd.Int64Dtype] | None = pa.Field(**_SEMESTER)
    student_name: _OptString = pa.Field(nullable=True)
    roll_number: _OptString = pa.Field(nullable=True)
    email: _OptString = pa.Field(nullable=True)
    preferred_shift: _OptString = pa.Field(nullable=True)
    preferred_languages: Series[object] | None = pa.Field(nullable=False)
    enrolled_courses: Series[object] | None = pa.Field(nullable=False)
    tenant_id: _OptString = pa.Field(nullable=True)
    institution_id: _OptString = pa.Field(nullable=True)
    is_active: Series[bool] = pa.Field(nullable=False)


class Programs(_Input):
    program_id: _String = pa.Field(**_KEY)
    program_code: _OptString = pa.Field(nullable=True)
    program_name: _OptString = pa.Field(nullable=True)
    program_type: _OptString = pa.Field(nullable=True)
    department_id: _OptString = pa.Field(nullable=True)
    duration_years: Series[pd.Float64Dtype] | None = pa.Field(ge=0, nullable=True)
    total_credits: Series[pd.Float64Dtype] | None = pa.Field(ge=0, nullable=True)


class Courses(_Input):
    course_id: _String = pa.Field(**_KEY)
    course_code: _OptString = pa.Field(nullable=True)
    course_name: _OptString = pa.Field(nullable=True)
    course_type: _String = pa.Field(isin=list(COURSE_TYPES), nullable=False)
    credits: Series[pd.Float64Dtype] | None = pa.Field(gt=CREDITS_EXCLUSIVE_MIN, le=CREDITS_MAX, nullable=True)
    theory_hours: Series[pd.Float64Dtype] | None = pa.Field(ge=0, nullable=True)
    practical_hours: Series[pd.Float64Dtype] | None = pa.Field(ge=0, nullable=True)
    max_sessions_per_week: Series[pd.Int64Dtype] | None = pa.Field(
        in_range={"min_value": SESSIONS_PER_WEEK_MIN, "max_value": SESSIONS_PER_WEEK_MAX}, nullable=True
    )
    program_id: _OptString = pa.Field(nullable=True)
    semester: Series[pd.Int64Dtype] | None = pa.Field(**_SEMESTER)


class StudentCourseEnrollment(_Input):
    student_id: _String = pa.Field(nullable=False)
    course_id: _String = pa.Field(nullable=False)
    is_mandatory: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    academic_year: _String = pa.Field(nullable=True, **_ACADEMIC_YEAR)
    semester: Series[pd.Int64Dtype] = pa.Field(**_SEMESTER)
    enrollment_date: _String = pa.Field(nullable=True)

    class Config:
        unique = ["student_id", "course_id"]


class Rooms(_Input):
    room_id: _String = pa.Field(**_KEY)
    capacity: Series[pd.Int64Dtype] = pa.Field(
        in_range={"min_value": ROOM_CAPACITY_MIN, "max_value": ROOM_CAPACITY_MAX}, nullable=False
    )
    room_code: _OptString = pa.Field(nullable=True)
    room_name: _OptString = pa.Field(nullable=True)
    room_type: _OptString = pa.Field(nullable=True)
    building_name: _OptString = pa.Field(nullable=True)
    floor_number: Series[pd.Int64Dtype] | None = pa.Field(nullable=True)
    preferred_shift: _OptString = pa.Field(nullable=True)


class Shifts(_Input):
    shift_id: _String = pa.Field(**_KEY)
    shift_code: _OptString = pa.Field(nullable=True)
    shift_name: _OptString = pa.Field(nullable=True)
    shift_type: _OptString = pa.Field(isin=list(SHIFT_TYPES), nullable=True)
    start_time: _OptString = pa.Field(nullable=True)
    end_time: _OptString = pa.Field(nullable=True)


class CoursePrerequisites(_Input):
    course_id: _String = pa.Field(nullable=False)
    prerequisite_course_id: _String = pa.Field(nullable=False)
    is_mandatory: Series[pd.BooleanDtype] | None = pa.Field(nullable=True)
    minimum_grade: _OptString = pa.Field(nullable=True)

    class Config:
        unique = ["course_id", "prerequisite_course_id"]

    @pa.dataframe_check(name="not_own_prerequisite")
    def _not_own_prerequisite(cls, df: pd.DataFrame) -> pd.Series:
        return (df["course_id"] != df["prerequisite_course_id"]).fillna(True)


class DynamicParameters(_Input):
    parameter_id: _String = pa.Field(**_KEY)
    parameter_code: _String = pa.Field(nullable=False)
    parameter_name: _OptString = pa.Field(nullable=True)
    parameter_path: _OptString = pa.Field(nullable=True)
    data_type: _OptString = pa.Field(nullable=True)
    default_value: _OptString = pa.Field(nullable=True)
    validation_rules: _OptString = pa.Field(nullable=True)
    tenant_id: _OptString = pa.Field(nullable=True)


class EntityParameterValues(_Input):
    value_id: _OptString = pa.Field(nullable=True, unique=True)
    entity_type: _String = pa.Field(nullable=False)
    entity_id: _String = pa.Field(nullable=False)
    parameter_id: _String = pa.Field(nullable=False)
    parameter_value: _OptString = pa.Field(nullable=True)
    numeric_value: Series[pd.Float64Dtype] | None = pa.Field(nullable=True)
    integer_value: Series[pd.Int64Dtype] | None = pa.Field(nullable=True)
    boolean_value: Series[pd.BooleanDtype] | None = pa.Field(nullable=True)
    json_value: _OptString = pa.Field(nullable=True)
    effective_from: Series[Any] | None = pa.Field(nullable=True)
    effective_to: Series[Any] | None = pa.Field(nullable=True)
    tenant_id: _OptString = pa.Field(nullable=True)

    @pa.dataframe_check(name="exactly_one_value")
    def _exactly_one_value(cls, df: pd.DataFrame) -> pd.Series:
        filled = sum((df[c].notna().astype(int) for c in EAV_VALUE_COLUMNS if c in df), pd.Series(0, index=df.index))
        return filled == 1

    @pa.dataframe_check(name="effective_window")
    def _effective_window(cls, df: pd.DataFrame) -> pd.Series:
        if "effective_from" not in df or "effective_to" not in df:
            return pd.Series(True, index=df.index)
        start, end = df["effective_from"], df["effective_to"]
        # an empty bound is open (NaT compares False, so test for it explicitly)
        return (start.isna() | end.isna() | (start < end)).fillna(True).astype(bool)


def key_schema(key: str) -> pa.DataFrameSchema:
    """Schema of a pass-through table: a non-blank, unique ``key`` column; anything else goes."""
    return pa.DataFrameSchema(
        {key: pa.Column(pd.StringDtype(), nullable=False, unique=True)}, strict=False, name=key
    )


# --------------------------------------------------------------------------------------------
# output tables


class _Output(pa.DataFrameModel):
    class Config:
        strict = False  # more columns may follow the contract's
        ordered = True
        coerce = False


class StudentBatches(_Output):
    batch_id: Series[Any] = pa.Field(**_KEY)
    tenant_id: Series[Any] = pa.Field(nullable=True)
    institution_id: Series[Any] = pa.Field(nullable=True)
    program_id: Series[Any] = pa.Field(nullable=True)
    batch_code: Series[Any] = pa.Field(nullable=False)
    batch_name: Series[Any] = pa.Field(nullable=True)
    student_count: Series[Any] = pa.Field(ge=1, nullable=False)
    academic_year: Series[Any] = pa.Field(nullable=True)
    semester: Series[Any] = pa.Field(nullable=True)
    preferred_shift: Series[Any] = pa.Field(nullable=True)
    capacity_allocated: Series[Any] = pa.Field(ge=0, nullable=True)
    generation_timestamp: Series[Any] = pa.Field(nullable=False)
    is_active: Series[Any] = pa.Field(nullable=False)
    room_id: Series[Any] = pa.Field(nullable=True)
    shift_id: Series[Any] = pa.Field(nullable=True)

    class Config:
        unique = ["tenant_id", "batch_code"]


class BatchStudentMembership(_Output):
    membership_id: Series[Any] = pa.Field(**_KEY)
    batch_id: Series[Any] = pa.Field(nullable=False)
    student_id: Series[Any] = pa.Field(**_KEY)  # every active student in exactly one row
    student_name: Series[Any] = pa.Field(nullable=True)
    program_id: Series[Any] = pa.Field(nullable=True)
    academic_year: Series[Any] = pa.Field(nullable=True)
    enrollment_date: Series[Any] = pa.Field(nullable=True)
    membership_status: Series[Any] = pa.Field(nullable=False, str_length={"min_value": 1})
    assignment_timestamp: Series[Any] = pa.Field(nullable=False)
    is_active: Series[Any] = pa.Field(nullable=False)


class BatchCourseEnrollment(_Output):
    enrollment_id: Series[Any] = pa.Field(**_KEY)
    batch_id: Series[Any] = pa.Field(nullable=False)
    course_id: Series[Any] = pa.Field(nullable=False)
    course_name: Series[Any] = pa.Field(nullable=True)
    credit_hours: Series[Any] = pa.Field(nullable=True)
    enrollment_status: Series[Any] = pa.Field(isin=list(ENROLLMENT_STATUSES), nullable=False)
    expected_students: Series[Any] = pa.Field(ge=1, nullable=False)
    capacity_utilization: Series[Any] = pa.Field(ge=0, nullable=True)
    credits_allocated: Series[Any] = pa.Field(nullable=True)
    is_mandatory: Series[Any] = pa.Field(nullable=False)
    priority_level: Series[Any] = pa.Field(nullable=True)
    sessions_per_week: Series[Any] = pa.Field(nullable=True)
    is_active: Series[Any] = pa.Field(nullable=False)
    created_at: Series[Any] = pa.Field(nullable=False)

    class Config:
        unique = ["batch_id", "course_id"]


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
    schema: type[pa.DataFrameModel] | pa.DataFrameSchema,
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
    tables: tuple[tuple[str, pd.DataFrame, type[pa.DataFrameModel], tuple[str, ...]], ...] = (
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
