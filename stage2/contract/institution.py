"""The validated, normalised content of one institution's input directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from stage2.contract.csvio import string_isin


@dataclass
class InstitutionData:
    """Every input table after reading, type coercion and cross-table validation.

    Column conventions (all frames use a fresh RangeIndex):

    - identifiers are ``str`` (white space stripped), nulls are ``pd.NA``/``None``;
    - enumerations are upper case (``course_type``, ``shift_type``, ``room_type``);
    - booleans are ``bool`` (nullable ``boolean`` where the contract allows a null);
    - list cells (``preferred_languages``) are tuples of ``str``;
    - ``students.preferred_shift`` is resolved to a ``shift_id`` of ``shifts`` (or null),
      whatever form (id, code or type) the file used; the raw value is kept in
      ``preferred_shift_raw``.

    ``students`` holds *all* rows, active or not; ``active_students`` only those batched.
    The active views are computed once and cached: treat the frames as read-only.
    ``enrollments`` always has one row per (student, course), whether the input came as
    ``student_course_enrollment.csv`` or as the ``enrolled_courses`` list column.
    """

    input_dir: Path
    students: pd.DataFrame
    programs: pd.DataFrame
    courses: pd.DataFrame
    enrollments: pd.DataFrame
    rooms: pd.DataFrame
    shifts: pd.DataFrame
    prerequisites: pd.DataFrame | None = None
    dynamic_parameters: pd.DataFrame | None = None
    entity_parameter_values: pd.DataFrame | None = None
    #: faculty.csv (``max_hours_per_week`` and ``is_active`` filled in), or None when absent
    faculty: pd.DataFrame | None = None
    #: faculty_course_competency.csv (``competency_level`` and ``is_active`` filled in), or None
    #: when absent (also when faculty.csv is absent: its faculty could not be checked)
    faculty_competencies: pd.DataFrame | None = None
    #: tables validated for their keys only (institutions, departments, timeslots)
    passthrough: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: sha256 over the input files' bytes, in file-name order: identifies the data of a run
    digest: str = ""
    #: file name -> sha256 of that file
    file_digests: dict[str, str] = field(default_factory=dict)
    #: non-fatal findings (e.g. ignored rows), as human-readable strings
    warnings: list[str] = field(default_factory=list)

    @cached_property
    def active_students(self) -> pd.DataFrame:
        return self.students.loc[self.students["is_active"]].reset_index(drop=True)

    @property
    def n_inactive(self) -> int:
        return int((~self.students["is_active"]).sum())

    @cached_property
    def active_enrollments(self) -> pd.DataFrame:
        """(student_id, course_id) of the active students' current-term enrollments: what is
        batched (the full rows stay in ``enrollments``; copying all columns of millions of rows
        would cost hundreds of MB). History rows (``is_history``) are left out."""
        return self._active_pairs(history=False)

    @cached_property
    def history(self) -> pd.DataFrame:
        """(student_id, course_id[, grade]) of the active students' enrollments of an earlier
        term than their own: the courses they took before (for prerequisites)."""
        return self._active_pairs(history=True)

    def _active_pairs(self, *, history: bool) -> pd.DataFrame:
        columns = ["student_id", "course_id"] + (["grade"] if history and "grade" in self.enrollments else [])
        pairs = self.enrollments[columns]
        keep = None
        if "is_history" in self.enrollments:
            is_history = self.enrollments["is_history"].to_numpy(dtype=bool)
            if history or is_history.any():
                keep = is_history if history else ~is_history
        elif history:
            keep = np.zeros(len(pairs), dtype=bool)
        active = self.students["is_active"]
        if not bool(active.all()):
            in_active = string_isin(pairs["student_id"], self.students.loc[active, "student_id"])
            keep = in_active if keep is None else keep & in_active
        return pairs if keep is None else pairs.loc[keep].reset_index(drop=True)
