"""Reading and checking the previous run a re-batch starts from.

A previous run is a stage2 output directory: ``student_batches.csv`` (its batches, their codes,
rooms and shifts) and ``batch_student_membership.csv`` (who was in which batch, with each
student's ``course_set_digest``). Anything else there is ignored. Problems are
``PREVIOUS_RUN_INVALID`` (exit 3) naming the file, row and column; a run of another tenant is
``PREVIOUS_RUN_TENANT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stage2.contract.csvio import read_table, row_number, string_positions
from stage2.errors import InputValidationError, ValidationIssue
from stage2.membership import COURSE_SET_COLUMN

STUDENT_BATCHES = "student_batches.csv"
MEMBERSHIP = "batch_student_membership.csv"
#: the columns a re-batch reads from the previous run (more may be present)
REQUIRED_BATCH_COLUMNS = ("batch_id", "tenant_id", "batch_code", "student_count", "room_id", "shift_id")
REQUIRED_MEMBERSHIP_COLUMNS = ("batch_id", "student_id")
INVALID = "PREVIOUS_RUN_INVALID"


@dataclass(frozen=True)
class PreviousRun:
    """The batches and memberships of a previous run, as read (strings)."""

    directory: Path
    #: one row per previous batch, in file order (the order batches are kept in)
    batches: pd.DataFrame
    #: ``batch_id``, ``student_id`` (and ``course_set_digest``, ``assignment_timestamp``,
    #: ``enrollment_date`` when present), one row per student
    membership: pd.DataFrame
    #: previous batch row (into ``batches``) of each membership row
    batch_row: np.ndarray

    @property
    def has_course_sets(self) -> bool:
        return COURSE_SET_COLUMN in self.membership.columns


def _issue(file: str, message: str, *, row: int | None = None, column: str | None = None,
           value: object = None, code: str = INVALID) -> ValidationIssue:
    return ValidationIssue(code=code, file=file, message=message, row=row, column=column, value=value)


def _read(directory: Path, name: str, required: tuple[str, ...], label: str) -> pd.DataFrame:
    path = directory / name
    file = f"{label}/{name}"
    if not path.is_file():
        raise InputValidationError([_issue(file, "the previous run has no such file: rebatch.previous_run must be "
                                                 "the output directory of a finished stage2 run")])
    try:
        frame = read_table(path)
    except InputValidationError as exc:  # name the file as the user gave it
        raise InputValidationError([_issue(file, issue.message, row=issue.row, column=issue.column)
                                    for issue in exc.issues]) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputValidationError([_issue(file, f"missing column {c!r}: not a stage2 run's output", column=c)
                                    for c in missing])
    return frame


def _duplicates(frame: pd.DataFrame, column: str, file: str) -> list[ValidationIssue]:
    values = frame[column]
    repeated = values.duplicated(keep="first") & values.notna()
    return [_issue(file, f"{column} appears more than once", row=row_number(label), column=column, value=values[label])
            for label in values.index[repeated][:20]]


def _blanks(frame: pd.DataFrame, columns: tuple[str, ...], file: str) -> list[ValidationIssue]:
    issues = []
    for column in columns:
        blank = frame[column].isna()
        issues += [_issue(file, f"{column} is empty", row=row_number(label), column=column)
                   for label in frame.index[blank][:20]]
    return issues


def load_previous_run(directory: str | Path, *, tenants: set[str]) -> PreviousRun:
    """Read and check a previous run's batches and memberships.

    Raises :class:`~stage2.errors.InputValidationError`: ``PREVIOUS_RUN_INVALID`` for a
    missing directory or file, a missing column, blank or duplicate keys, a membership row
    naming a batch the batches file lacks, or a batch's ``student_count`` that does not match
    its members; ``PREVIOUS_RUN_TENANT`` when the batches belong to another tenant than
    ``tenant_id``.
    """
    label = str(directory)
    path = Path(directory)
    if not path.is_dir():
        raise InputValidationError([_issue(label, "rebatch.previous_run is not a directory")])
    batches = _read(path, STUDENT_BATCHES, REQUIRED_BATCH_COLUMNS, label)
    membership = _read(path, MEMBERSHIP, REQUIRED_MEMBERSHIP_COLUMNS, label)
    batches_file, membership_file = f"{label}/{STUDENT_BATCHES}", f"{label}/{MEMBERSHIP}"
    issues = _blanks(batches, ("batch_id", "batch_code", "tenant_id"), batches_file)
    issues += _blanks(membership, REQUIRED_MEMBERSHIP_COLUMNS, membership_file)
    issues += _duplicates(batches, "batch_id", batches_file) + _duplicates(batches, "batch_code", batches_file)
    issues += _duplicates(membership, "student_id", membership_file)
    if issues:
        raise InputValidationError(issues)

    foreign = sorted(set(batches["tenant_id"].astype(str)) - tenants)
    if foreign:
        raise InputValidationError([_issue(
            batches_file, f"the previous run belongs to tenant(s) {foreign[:5]}, this run to {sorted(tenants)[:5]}: "
                          "a re-batch must start from a run of the same tenant",
            column="tenant_id", value=foreign[0], code="PREVIOUS_RUN_TENANT")])

    batch_row = string_positions(membership["batch_id"], batches["batch_id"])
    unknown = np.flatnonzero(batch_row < 0)
    if unknown.size:
        raise InputValidationError([
            _issue(membership_file, f"batch_id not in {STUDENT_BATCHES}: the two files are not from the same run",
                   row=row_number(membership.index[i]), column="batch_id", value=membership["batch_id"].iloc[i])
            for i in unknown[:20]])
    counts = pd.to_numeric(batches["student_count"], errors="coerce").to_numpy()
    members = np.bincount(batch_row, minlength=len(batches))
    wrong = np.flatnonzero(counts != members)
    if wrong.size:
        raise InputValidationError([
            _issue(batches_file, f"student_count is {batches['student_count'].iloc[b]} but the batch has {members[b]} "
                                 f"row(s) in {MEMBERSHIP}", row=row_number(batches.index[b]), column="student_count")
            for b in wrong[:20]])
    keep = [c for c in ("batch_id", "student_id", COURSE_SET_COLUMN, "assignment_timestamp", "enrollment_date")
            if c in membership.columns]
    return PreviousRun(path, batches.reset_index(drop=True), membership[keep].reset_index(drop=True),
                       batch_row.astype(np.int64))


def pinned_ids(path: Path) -> set[str]:
    """Student ids of a ``rebatch.pinned`` file: a CSV with a ``student_id`` column, or one id
    per line (blank lines and ``#`` comments ignored)."""
    if not path.is_file():
        raise InputValidationError([_issue(str(path), "rebatch.pinned names no readable file", code="MISSING_FILE")])
    text = path.read_text(encoding="utf-8-sig")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if "student_id" in first:
        frame = read_table(path)
        if "student_id" not in frame.columns:
            raise InputValidationError([_issue(str(path), "no student_id column", column="student_id",
                                               code="MISSING_COLUMN")])
        return set(frame["student_id"].dropna().astype(str))
    return {line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}
