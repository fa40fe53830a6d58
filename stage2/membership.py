"""Membership stage: turn labels and allocation into the ``student_batches`` and
``batch_student_membership`` tables of the contract."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import numpy as np
import pandas as pd

from stage2.allocation import Allocation
from stage2.contract.schemas import EXTRA_BATCH_COLUMNS, MEMBERSHIP_COLUMNS, STUDENT_BATCHES_COLUMNS
from stage2.identifiers import batch_id, code_fragment, uuid_texts
from stage2.sizing import NOT_APPLICABLE, BatchPlan

MEMBERSHIP_STATUS = "ACTIVE"
#: the membership column after the contract's: each student's course-set digest
COURSE_SET_COLUMN = "course_set_digest"
DEFAULT_TENANT = "default"
#: the student columns a membership row copies
MEMBER_FIELDS = ("student_id", "student_name", "program_id", "academic_year")


def _mode_per_batch(values: pd.Series, batch_of_student: np.ndarray, n_batches: int) -> list:
    """Most frequent non-null value per batch, as text (ties: smallest text); None if all null."""
    present = values.notna().to_numpy()
    if not present.any():
        return [None] * n_batches
    if isinstance(values.dtype, pd.StringDtype):
        text = values[present]
    else:  # the text of the values as numpy holds them (an integer column with gaps is float)
        text = pd.Series(values.to_numpy()[present]).astype(str)
    value, texts = pd.factorize(text, sort=True)
    batch = batch_of_student[present]
    keys, counts = np.unique(batch * len(texts) + value, return_counts=True)
    key_batch, key_value = np.divmod(keys, len(texts))
    # per batch the most frequent value first, the smallest text (the lowest code) among equals
    first = np.lexsort((key_value, -counts, key_batch))
    first = first[np.r_[True, key_batch[first][1:] != key_batch[first][:-1]]]
    mode: list = [None] * n_batches
    for b, text_of_mode in zip(key_batch[first].tolist(), texts[key_value[first]].tolist(), strict=True):
        mode[b] = text_of_mode
    return mode


def batch_codes(plan: BatchPlan, batch_group: np.ndarray) -> list[str]:
    """``<key values>-B<nn>`` per batch, numbered within its group; unique by construction
    (a group index is appended if two keys sanitise to the same text)."""
    prefixes = []
    for group in plan.groups:
        parts = [code_fragment(v) for v in group.key if v not in (NOT_APPLICABLE, "")]
        prefixes.append("-".join(parts) if parts else "ALL")
    if len(set(prefixes)) < len(prefixes):
        prefixes = [f"{p}-G{i:03d}" for i, p in enumerate(prefixes)]
    codes: list[str] = []
    seen: dict[int, int] = {}
    for g in batch_group:
        seen[g] = seen.get(g, 0) + 1
        codes.append(f"{prefixes[g]}-B{seen[g]:02d}")
    return codes


def build_batches(
    students: pd.DataFrame,
    programs: pd.DataFrame,
    batch_of_student: np.ndarray,
    batch_group: np.ndarray,
    plan: BatchPlan,
    allocation: Allocation,
    *,
    timestamp: datetime,
    tenant_id: str | None = None,
    institution_id: str | None = None,
    codes: list[str] | None = None,
) -> pd.DataFrame:
    """One row per batch, columns in contract order, then :data:`EXTRA_BATCH_COLUMNS`: the
    batch's mixable group, its status (``ok``/``undersized``/``no_feasible_count``) and the
    size bounds in force for it, so the table alone suffices to audit sizes. ``codes``: the
    batches' codes (a re-batch keeps the previous ones); default :func:`batch_codes`."""
    n_batches = int(batch_group.size)
    sizes = np.bincount(batch_of_student, minlength=n_batches)
    mode = {
        column: _mode_per_batch(students[column], batch_of_student, n_batches)
        if column in students.columns else [None] * n_batches
        for column in ("program_id", "academic_year", "semester", "tenant_id", "institution_id")
    }
    tenants = [tenant_id or t or DEFAULT_TENANT for t in mode["tenant_id"]]
    institutions = [institution_id or i for i in mode["institution_id"]]
    codes = batch_codes(plan, batch_group) if codes is None else codes
    names_by_program: dict = {}
    if "program_name" in programs.columns:
        # a programme id listed twice names no programme (its batches take the id)
        listed = programs["program_id"].tolist()
        times_listed = Counter(listed)
        names_by_program = {p: n for p, n in zip(listed, programs["program_name"].tolist(), strict=True)
                            if times_listed[p] == 1}
    names = []
    for b in range(n_batches):
        program = mode["program_id"][b]
        label = names_by_program.get(program) if program is not None else None
        label = label if isinstance(label, str) and label else (program or "Batch")
        parts = [label, mode["academic_year"][b], f"Sem {mode['semester'][b]}" if mode["semester"][b] else None]
        names.append(" ".join(p for p in parts if p) + f" — {codes[b].rsplit('-', 1)[-1]}")
    stamp = timestamp.isoformat()
    frame = pd.DataFrame(
        {
            "batch_id": [batch_id(t, c) for t, c in zip(tenants, codes, strict=True)],
            "tenant_id": tenants,
            "institution_id": institutions,
            "program_id": mode["program_id"],
            "batch_code": codes,
            "batch_name": names,
            "student_count": sizes.astype(np.int64),
            "academic_year": mode["academic_year"],
            "semester": pd.array([None if s is None else int(float(s)) for s in mode["semester"]], dtype="Int64"),
            "preferred_shift": allocation.shift_id,
            "capacity_allocated": pd.array([c if c > 0 else None for c in allocation.capacity.tolist()], dtype="Int64"),
            "generation_timestamp": stamp,
            "is_active": True,
            "room_id": allocation.room_id,
            "shift_id": allocation.shift_id,
            "group_key": [plan.label(plan.groups[g]) for g in batch_group],
            "group_status": [plan.groups[g].status for g in batch_group],
            "size_min": [plan.groups[g].bounds.min for g in batch_group],
            "size_max": [plan.groups[g].bounds.max for g in batch_group],
        }
    )
    return frame[[*STUDENT_BATCHES_COLUMNS, *EXTRA_BATCH_COLUMNS]]


def _values(column: pd.Series):
    """A column's values for a new frame: text stays in Arrow (as ``str``, the dtype numpy's
    objects would be inferred as), anything else as numpy holds it."""
    return column.astype("str").array if isinstance(column.dtype, pd.StringDtype) else column.to_numpy()


def build_membership(
    students: pd.DataFrame, batches: pd.DataFrame, batch_of_student: np.ndarray, *, timestamp: datetime,
    course_sets: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per active student, ordered by batch then student position; the contract's
    columns, then ``course_set_digest`` (:func:`stage2.features.course_set_digests` of each
    student, from ``course_sets`` in student order), which a later re-batch compares."""
    order = np.lexsort((np.arange(batch_of_student.size), batch_of_student))
    batch_ids = batches["batch_id"].to_numpy()[batch_of_student[order]]
    picked = students[[c for c in students.columns if c in MEMBER_FIELDS]].iloc[order]
    student_ids = picked["student_id"].astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "membership_id": pd.array(uuid_texts("membership", batch_ids, student_ids), dtype="str"),
            "batch_id": batch_ids,
            "student_id": student_ids,
            "student_name": _values(picked["student_name"]) if "student_name" in picked.columns else None,
            "program_id": _values(picked["program_id"]),
            "academic_year": _values(picked["academic_year"]),
            "enrollment_date": timestamp.date().isoformat(),
            "membership_status": MEMBERSHIP_STATUS,
            "assignment_timestamp": timestamp.isoformat(),
            "is_active": True,
        }
    )
    columns = list(MEMBERSHIP_COLUMNS)
    if course_sets is not None:
        frame[COURSE_SET_COLUMN] = np.asarray(course_sets)[order]
        columns.append(COURSE_SET_COLUMN)
    return frame[columns]
