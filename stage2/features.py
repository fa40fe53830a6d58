"""Feature extraction: the vectors the clustering compares students by.

- Course vectors: a student's 0/1 vector over courses (sparse CSR), the space in which
  ``course_sse`` is measured.
- Soft-rule features (:class:`SoftRuleFeatures`): for each soft ``homogeneous``/``no_mix``
  rule a one-hot (multi-hot for list fields) of the rule's field, for each ``max_variance``
  rule the z-scored field, each scaled by ``sqrt(weight * soft_rule_scale)``, so that the k-means cost on the stacked
  features is ``course_sse + Σ_rules weight * soft_rule_scale * SS_rule``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stage2.config.settings import ConstraintRule
from stage2.contract.csvio import string_positions


@dataclass(frozen=True)
class CourseMatrix:
    """``matrix[i, j] = 1`` when student ``i`` (row order of the students frame) takes
    course ``course_ids[j]``."""

    matrix: sp.csr_matrix
    course_ids: np.ndarray


def course_matrix(student_ids: pd.Series, enrollments: pd.DataFrame) -> CourseMatrix:
    """Build the student × course 0/1 matrix; enrollments of unknown students are ignored."""
    course_codes, course_ids = pd.factorize(enrollments["course_id"], sort=True)
    rows = string_positions(enrollments["student_id"], student_ids)
    keep = rows >= 0
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], course_codes[keep])),
        shape=(len(student_ids), len(course_ids)),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return CourseMatrix(matrix=matrix, course_ids=np.asarray(course_ids, dtype=object))


def course_set_digests(courses: CourseMatrix) -> np.ndarray:
    """Per student (row of ``courses``), 16 hex digits identifying its set of course ids: the
    sum modulo 2**64 of a 64-bit BLAKE2b hash of each course id, so equal sets give equal
    digests whatever the row or column order. A re-batch compares them with the previous run's
    to find the students whose courses changed."""
    course_hash = np.array(
        [int.from_bytes(hashlib.blake2b(str(c).encode("utf-8"), digest_size=8).digest(), "little")
         for c in courses.course_ids],
        dtype=np.uint64,
    )
    matrix = courses.matrix
    sums = np.zeros(matrix.shape[0], dtype=np.uint64)
    nonempty = np.diff(matrix.indptr) > 0
    if matrix.indices.size:  # uint64 additions wrap: the sums are modulo 2**64
        sums[nonempty] = np.add.reduceat(course_hash[matrix.indices], matrix.indptr[:-1][nonempty])
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = sums.astype(">u8").view(np.uint8).reshape(-1, 8)
    text = np.stack([hex_digits[nibbles >> 4], hex_digits[nibbles & 15]], axis=2).reshape(-1, 16)
    return np.frombuffer(text.tobytes(), dtype="S16").astype("U16")


def _category_codes(values: pd.Series) -> sp.csr_matrix:
    """One-hot (multi-hot for tuple cells) of a categorical column; nulls give a zero row."""
    n = len(values)
    if values.map(lambda v: isinstance(v, (tuple, list))).any():
        exploded = values.map(lambda v: tuple(v) if isinstance(v, (tuple, list)) else (() if pd.isna(v) else (v,)))
        exploded = exploded.explode().dropna()
        rows = np.asarray(values.index.get_indexer(exploded.index))
        codes, _ = pd.factorize(exploded.astype(str), sort=True)
    else:
        present = values.notna()
        rows = np.flatnonzero(present.to_numpy())
        codes, _ = pd.factorize(values[present].astype(str), sort=True)
    width = int(codes.max()) + 1 if len(codes) else 0
    onehot = sp.csr_matrix((np.ones(len(codes), dtype=np.float32), (rows, codes)), shape=(n, width))
    onehot.sum_duplicates()
    onehot.data[:] = 1.0
    return onehot


class SoftRuleFeatures:
    """Scaled features of the soft rules that shape batches, for one group at a time.

    Encodings are computed once over all active students (``students``, the row order every
    group's ``index`` refers to) and sliced per group; ``max_variance`` fields are z-scored
    within the group, since the rule compares a batch with its group. Course-scoped rules
    are only checked afterwards and add no features.
    """

    def __init__(self, students: pd.DataFrame, soft_rule_scale: float) -> None:
        self.students = students.reset_index(drop=True)
        self.soft_rule_scale = soft_rule_scale
        self._onehot: dict[str, sp.csr_matrix] = {}
        self._numeric: dict[str, np.ndarray] = {}

    def onehot(self, field_name: str) -> sp.csr_matrix:
        if field_name not in self._onehot:
            self._onehot[field_name] = _category_codes(self.students[field_name])
        return self._onehot[field_name]

    def numeric(self, field_name: str) -> np.ndarray:
        if field_name not in self._numeric:
            values = pd.to_numeric(self.students[field_name], errors="coerce")
            self._numeric[field_name] = values.to_numpy(dtype=float, na_value=np.nan)
        return self._numeric[field_name]

    def for_group(self, index: np.ndarray, rules: Sequence[ConstraintRule]) -> sp.csr_matrix | None:
        blocks = []
        for rule in rules:
            if rule.is_hard or rule.weight == 0 or rule.entity_type == "COURSE":
                continue
            scale = np.sqrt(rule.weight * self.soft_rule_scale)
            if rule.rule_type in ("homogeneous", "no_mix"):
                blocks.append(self.onehot(rule.field_name)[index] * scale)
            elif rule.rule_type == "max_variance":
                values = self.numeric(rule.field_name)[index]
                finite = np.isfinite(values)
                z = np.zeros(values.size)
                if finite.any() and np.nanstd(values) > 0:
                    z[finite] = (values[finite] - np.nanmean(values)) / np.nanstd(values)
                blocks.append(sp.csr_matrix(z.reshape(-1, 1) * scale))
        if not blocks:
            return None
        return sp.hstack(blocks, format="csr")


def group_features(
    courses: sp.csr_matrix, soft: sp.csr_matrix | None
) -> np.ndarray:
    """Dense feature rows for one group: its non-empty course columns, then soft features."""
    used = np.flatnonzero(np.asarray(courses.getnnz(axis=0)) > 0)
    parts = [courses[:, used]]
    if soft is not None and soft.shape[1]:
        parts.append(soft)
    return sp.hstack(parts, format="csr").toarray().astype(np.float64)
