"""What a re-batch changed: ``rebatch_diff.csv`` (one row per student who moved, joined or
left) and the ``rebatch`` figures of ``quality_report.json`` (``docs``: the spec's quality
measures, "Re-batching against a previous run")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stage2.outputs import REBATCH_DIFF_TABLE
from stage2.rebatching.plan import CHANGED, FORCED, NEW, UNCHANGED, RebatchPlan
from stage2.rebatching.previous import PreviousRun

#: ``rebatch_diff.csv``
REBATCH_DIFF = f"{REBATCH_DIFF_TABLE}.csv"
DIFF_COLUMNS = ("student_id", "previous_batch_id", "previous_batch_code", "batch_id", "batch_code",
                "student_class", "reason")
#: class of a previous student who is no longer batched
LEFT = "left"
#: reasons in the diff besides the plan's
NEW_STUDENT, INACTIVE, NOT_IN_INPUT = "new_student", "inactive", "not_in_input"
MOVED_BY_OBJECTIVE = "moved_by_objective"


@dataclass(frozen=True)
class RebatchOutcome:
    """``rebatch_diff.csv`` and the figures of the ``rebatch`` report section."""

    diff: pd.DataFrame
    metrics: dict[str, Any]
    #: codes of the dissolved previous batches, with why
    dissolved: list[dict[str, str]]


def course_sse(courses: sp.csr_matrix, labels: np.ndarray) -> float:
    """Σ_b Σ_c e_bc (1 − e_bc / s_b) of a labelling (students labelled -1 left out): the
    quality measure ``course_sse`` (docs: spec quality.md)."""
    keep = np.flatnonzero(labels >= 0)
    if keep.size == 0:
        return 0.0
    batches, compact = np.unique(labels[keep], return_inverse=True)
    onehot = sp.csr_matrix((np.ones(keep.size), (compact, keep)), shape=(batches.size, courses.shape[0]))
    counts = (onehot @ courses).tocsr()
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    squares = np.asarray(counts.multiply(counts).sum(axis=1)).ravel()
    return float(counts.sum() - np.sum(squares / sizes))


def rebatch_outcome(
    students: pd.DataFrame,
    active: pd.DataFrame,
    courses: sp.csr_matrix,
    batches: pd.DataFrame,
    batch_of_student: np.ndarray,
    batch_previous_row: np.ndarray,
    plan: RebatchPlan,
    previous: PreviousRun,
    *,
    fresh_course_sse: float | None = None,
) -> RebatchOutcome:
    """Compare this run with the previous one. ``students``: every input student (active or
    not); ``active``/``courses``: the active ones and their course matrix; ``batches`` and
    ``batch_of_student``: this run's; ``batch_previous_row``: per batch its previous row (-1:
    created)."""
    old = previous.batches
    old_ids = old["batch_id"].astype(str).to_numpy()
    old_codes = old["batch_code"].astype(str).to_numpy()
    new_ids = batches["batch_id"].astype(str).to_numpy()
    new_codes = batches["batch_code"].astype(str).to_numpy()
    student_ids = active["student_id"].astype(str).to_numpy()
    now_batch = batch_of_student
    was_row = plan.previous_batch
    now_row = batch_previous_row[now_batch]  # previous row of the batch each student is in now (-1: created)
    moved = (was_row >= 0) & (now_row != was_row)
    classes = plan.student_class

    reasons = plan.reason.copy()
    reasons[moved & (classes == UNCHANGED)] = MOVED_BY_OBJECTIVE
    reasons[classes == NEW] = NEW_STUDENT
    rows = np.flatnonzero(moved | (classes == NEW))
    diff = pd.DataFrame({
        "student_id": student_ids[rows],
        "previous_batch_id": np.where(was_row[rows] >= 0, old_ids[np.maximum(was_row[rows], 0)], None),
        "previous_batch_code": np.where(was_row[rows] >= 0, old_codes[np.maximum(was_row[rows], 0)], None),
        "batch_id": new_ids[now_batch[rows]],
        "batch_code": new_codes[now_batch[rows]],
        "student_class": classes[rows],
        "reason": reasons[rows],
    })
    # previous students no longer batched
    active_set = pd.Index(student_ids)
    gone = ~previous.membership["student_id"].astype(str).isin(active_set).to_numpy()
    gone_ids = previous.membership["student_id"].astype(str).to_numpy()[gone]
    inactive = set(students["student_id"].astype(str)) - set(student_ids)
    gone_rows = previous.batch_row[gone]
    left = pd.DataFrame({
        "student_id": gone_ids,
        "previous_batch_id": old_ids[gone_rows],
        "previous_batch_code": old_codes[gone_rows],
        "batch_id": None,
        "batch_code": None,
        "student_class": LEFT,
        "reason": [INACTIVE if s in inactive else NOT_IN_INPUT for s in gone_ids],
    })
    diff = pd.concat([diff, left], ignore_index=True) if len(left) else diff
    diff = diff[list(DIFF_COLUMNS)]

    present = np.flatnonzero(batch_previous_row >= 0)
    kept_rows = batch_previous_row[present]
    same_room = (batches["room_id"].astype("string").fillna("").to_numpy()[present]
                 == old["room_id"].astype("string").fillna("").to_numpy()[kept_rows])
    same_shift = (batches["shift_id"].astype("string").fillna("").to_numpy()[present]
                  == old["shift_id"].astype("string").fillna("").to_numpy()[kept_rows])
    # a kept batch's membership changed if anyone joined or left it
    touched = np.zeros(len(old), dtype=bool)
    touched[was_row[moved]] = True
    touched[now_row[(moved | (classes == NEW)) & (now_row >= 0)]] = True
    touched[gone_rows] = True

    n_students = int(len(active))
    n_moved = int(moved.sum())
    n_new = int(np.count_nonzero(classes == NEW))
    metrics: dict[str, Any] = {
        "n_previous_batches": int(len(old)),
        "n_unchanged": plan.count(UNCHANGED),
        "n_changed": plan.count(CHANGED),
        "n_new": n_new,
        "n_forced": plan.count(FORCED),
        "n_left": int(gone.sum()),
        "moved_unchanged": int(np.count_nonzero(moved & (classes == UNCHANGED))),
        "moved_changed": int(np.count_nonzero(moved & (classes == CHANGED))),
        "moved_forced": int(np.count_nonzero(moved & (classes == FORCED))),
        "moved_unchanged_share": (int(np.count_nonzero(moved & (classes == UNCHANGED))) / plan.count(UNCHANGED)
                                  if plan.count(UNCHANGED) else 0.0),
        "perturbation_share": (n_moved + n_new) / n_students if n_students else 0.0,
        "batches_kept": int(np.count_nonzero(same_room & same_shift)),
        "batches_kept_share": float(np.count_nonzero(same_room & same_shift)) / len(old) if len(old) else 1.0,
        "batches_changed": int(np.count_nonzero(~(same_room & same_shift))),
        "batches_with_member_changes": int(np.count_nonzero(touched[kept_rows])),
        "batches_created": int(np.count_nonzero(batch_previous_row < 0)),
        "batches_dissolved": len(plan.dissolved),
        "room_changes": int(np.count_nonzero(~same_room)),
        "shift_changes": int(np.count_nonzero(~same_shift)),
        "course_sse_previous": course_sse(courses, plan.previous_batch),
        "course_sse": course_sse(courses, now_batch),
        "course_sse_fresh": fresh_course_sse,
    }
    dissolved = [{"batch_id": old_ids[row], "batch_code": old_codes[row], "reason": why}
                 for row, why in sorted(plan.dissolved.items())]
    return RebatchOutcome(diff, metrics, dissolved)
