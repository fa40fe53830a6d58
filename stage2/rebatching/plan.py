"""Who is affected by the changes since the previous run, and which batches each group keeps.

Every active student gets a class:

- ``unchanged``: same mixable group and course set as before, previous batch kept;
- ``changed``: its course set changed (previous batch kept);
- ``new``: not in the previous run;
- ``forced``: its previous batch is no longer admissible for it: the student's group changed
  (a hard ``no_mix`` field such as the programme or the semester), or the batch is dissolved.

Per group, the previous batches whose students mostly still belong to it are kept, as many as
the size bounds allow: a group that outgrew ``count × max`` gets the fewest new batches that fit
it; one that shrank below ``count × min`` dissolves the batches with the fewest remaining
students (the fewest moves). A group with no previous batch is batched afresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stage2.clustering.assignment import SizeModel
from stage2.clustering.groups import size_model
from stage2.config.settings import BatchingSettings
from stage2.sizing import BatchPlan, GroupPlan, balanced_sizes

UNCHANGED, CHANGED, NEW, FORCED = "unchanged", "changed", "new", "forced"
CLASSES = (UNCHANGED, CHANGED, NEW, FORCED)
#: why a student is ``changed`` or ``forced``, or why a batch was dissolved
COURSES_CHANGED = "course_set_changed"
GROUP_CHANGED = "group_changed"
BATCH_DISSOLVED = "batch_dissolved"
NO_STUDENTS_LEFT = "no_students_left"
#: none of the batch's students is in its group any more (e.g. they all moved up a semester)
GROUP_GONE = "group_gone"
GROUP_SHRANK = "group_below_min"


@dataclass(frozen=True)
class GroupRebatch:
    """The batches of one mixable group in a re-batch: the previous batches it keeps (rows of
    the previous ``student_batches``, in file order), then ``n_new`` new ones."""

    group: GroupPlan
    kept: np.ndarray
    n_new: int
    #: sizes of the kept batches then the new ones
    sizes: SizeModel

    @property
    def n_batches(self) -> int:
        return int(self.kept.size) + self.n_new

    @property
    def is_fresh(self) -> bool:
        """No previous batch: the group is batched as a fresh run would."""
        return self.kept.size == 0


@dataclass(frozen=True)
class RebatchPlan:
    """Per active student (row order of the active students): its previous batch row (-1:
    none), class and reason; per group the batches to form; the dissolved batches."""

    previous_batch: np.ndarray
    student_class: np.ndarray
    reason: np.ndarray
    #: students who must stay in their previous batch (``rebatch.pinned``)
    pinned: np.ndarray
    groups: list[GroupRebatch]
    #: previous batch row -> why it was dissolved
    dissolved: dict[int, str]
    #: previous batch row -> group index of the batch (-1: none of its students is active)
    batch_group: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def count(self, student_class: str) -> int:
        return int(np.count_nonzero(self.student_class == student_class))


def _mode_group(previous_batch: np.ndarray, group_of_student: np.ndarray, n_previous: int) -> np.ndarray:
    """Per previous batch, the group most of its continuing students belong to now (ties: the
    lowest group index); -1 when none is active."""
    present = previous_batch >= 0
    if not present.any():
        return np.full(n_previous, -1, dtype=np.int64)
    pairs = pd.DataFrame({"batch": previous_batch[present], "group": group_of_student[present]})
    counts = pairs.groupby(["batch", "group"], sort=True).size().reset_index(name="n")
    counts = counts.sort_values(["batch", "n", "group"], ascending=[True, False, True], kind="stable")
    top = counts.drop_duplicates("batch")
    result = np.full(n_previous, -1, dtype=np.int64)
    result[top["batch"].to_numpy()] = top["group"].to_numpy()
    return result


def _batch_count(n_students: int, n_kept: int, group: GroupPlan) -> int:
    """Keep the previous count if the group's students fit it within the bounds; else the
    count closest to it that does (more batches if it outgrew them, fewer if it shrank)."""
    lo, hi = group.bounds.min, group.bounds.max
    if n_students < lo:
        return 1
    count = n_kept
    if n_students > count * hi:
        count = math.ceil(n_students / hi)
    if n_students < count * lo:
        count = max(1, n_students // lo)
    return count


def _group_sizes(group: GroupPlan, n_students: int, staying: np.ndarray, n_batches: int,
                 settings: BatchingSettings, caps: np.ndarray, cap_cost: float) -> SizeModel:
    """Sizes within the group's bounds, priced by the weights' deviation cost (0 where the
    weights ask for exact sizes: a re-batch keeps batches as they are rather than move students
    to equalise them) around equal planned sizes, the larger ones planned for the fuller
    batches; a kept batch's students beyond its room's seats (``caps``) cost ``cap_cost``
    each, so that it keeps its room where it can."""
    planned = balanced_sizes(n_students, n_batches)
    order = np.argsort(-np.concatenate([staying, np.zeros(n_batches - staying.size, np.int64)]), kind="stable")
    by_batch = np.empty(n_batches, dtype=np.int64)
    by_batch[order] = planned
    lo, hi = group.bounds.min, group.bounds.max
    if not n_batches * lo <= n_students <= n_batches * hi:  # undersized group or no feasible count
        lo, hi = n_students // n_batches, -(-n_students // n_batches)
    cost = settings.deviation_cost if math.isfinite(settings.deviation_cost) else 0.0
    all_caps = np.concatenate([caps, np.full(n_batches - caps.size, hi, dtype=np.int64)])
    if lo >= hi or np.all(all_caps >= hi):
        return SizeModel(by_batch, lo, hi, cost)
    return SizeModel(by_batch, lo, hi, cost, all_caps, cap_cost)


def plan_rebatch(
    active: pd.DataFrame,
    plan: BatchPlan,
    settings: BatchingSettings,
    previous_batch: np.ndarray,
    courses_changed: np.ndarray,
    n_previous: int,
    pinned: np.ndarray,
    room_seats: np.ndarray | None = None,
    room_overflow_penalty: float = 0.0,
    previous_groups: np.ndarray | None = None,
) -> RebatchPlan:
    """Classify the active students and choose each group's batches.

    ``previous_batch``: per active student, its previous batch row (-1: new);
    ``courses_changed``: per active student, whether its course set differs from the previous
    run's; ``n_previous``: rows of the previous ``student_batches``; ``pinned``: per active
    student, whether ``rebatch.pinned`` names it; ``room_seats``: per previous batch, the
    seats of its room if it is still a home room (-1: none), each student above them priced
    ``room_overflow_penalty``; ``previous_groups``: per previous batch, the label of its mixable
    group (``student_batches.group_key``): the batch belongs to the group of that label now, and
    when no group has it any more the batch is dissolved and its students forced (without the
    labels, the group most of its students are in now).
    """
    seats = np.full(n_previous, -1, dtype=np.int64) if room_seats is None else np.asarray(room_seats, np.int64)
    n = len(active)
    group_of_student = np.empty(n, dtype=np.int64)
    for group in plan.groups:
        group_of_student[group.student_index] = group.group_index
    if previous_groups is None:
        batch_group = _mode_group(previous_batch, group_of_student, n_previous)
    else:
        labels = {plan.label(group): group.group_index for group in plan.groups}
        batch_group = np.array([labels.get(str(label), -1) for label in previous_groups], dtype=np.int64)

    student_class = np.full(n, UNCHANGED, dtype=object)
    reason = np.full(n, "", dtype=object)
    student_class[previous_batch < 0] = NEW
    returning = previous_batch >= 0
    moved_group = returning & (batch_group[np.maximum(previous_batch, 0)] != group_of_student)
    student_class[returning & courses_changed] = CHANGED
    reason[returning & courses_changed] = COURSES_CHANGED
    student_class[moved_group] = FORCED
    reason[moved_group] = GROUP_CHANGED

    # students still in their previous batch's group, per previous batch
    staying_all = np.bincount(previous_batch[returning & ~moved_group], minlength=n_previous)
    has_students = np.bincount(previous_batch[returning], minlength=n_previous) > 0
    batch_group = np.where(staying_all > 0, batch_group, -1)  # a batch nobody stays in is dissolved
    dissolved: dict[int, str] = {row: GROUP_GONE if has_students[row] else NO_STUDENTS_LEFT
                                 for row in np.flatnonzero(batch_group < 0).tolist()}
    groups: list[GroupRebatch] = []
    for group in plan.groups:
        candidates = np.flatnonzero(batch_group == group.group_index)
        if candidates.size == 0:
            groups.append(GroupRebatch(group, candidates, group.n_batches, size_model(group, settings)))
            continue
        count = _batch_count(group.n_students, int(candidates.size), group)
        kept = candidates
        if count < candidates.size:
            # dissolve the batches with the fewest staying students (ties: the later ones)
            order = np.lexsort((-candidates, -staying_all[candidates]))
            kept = np.sort(candidates[order[:count]])
            for row in candidates[order[count:]].tolist():
                dissolved[row] = GROUP_SHRANK
        n_new = max(count - int(kept.size), 0)
        caps = np.where(seats[kept] >= 0, seats[kept], group.bounds.max)
        sizes = _group_sizes(group, group.n_students, staying_all[kept], int(kept.size) + n_new, settings, caps,
                             room_overflow_penalty)
        groups.append(GroupRebatch(group, kept, n_new, sizes))

    dissolved_rows = np.zeros(n_previous, dtype=bool)
    dissolved_rows[list(dissolved)] = True
    lost_batch = returning & ~moved_group & dissolved_rows[np.maximum(previous_batch, 0)]
    student_class[lost_batch] = FORCED
    reason[lost_batch] = BATCH_DISSOLVED

    warnings: list[str] = []
    unpinnable = pinned & np.isin(student_class, (NEW, FORCED))
    if unpinnable.any():
        ids = active["student_id"].astype(str).to_numpy()[unpinnable]
        warnings.append(f"{unpinnable.sum()} pinned student(s) have no previous batch to stay in (new, or their batch "
                        f"or group changed): {', '.join(ids[:10])}{' ...' if ids.size > 10 else ''}")
    return RebatchPlan(previous_batch, student_class, reason, pinned & ~unpinnable, groups, dissolved, batch_group,
                       warnings)
