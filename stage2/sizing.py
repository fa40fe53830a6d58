"""Batch sizing stage: split active students into mixable groups and choose, per group, how many
batches to form and how large each is.

A *mixable group* is a set of students equal on every hard ``no_mix`` field that applies to
them (by default ``program_id``, ``academic_year`` and ``semester``). Batches never cross
groups, so every hard ``no_mix`` rule holds by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stage2.config.settings import BatchingSettings, SizeBounds, seats_admitted
from stage2.errors import InfeasibleError, Stage2Error

#: value a group key carries for a hard no_mix field that does not apply to the student
NOT_APPLICABLE = "*"
#: group statuses reported to the user
STATUS_OK = "ok"
STATUS_UNDERSIZED = "undersized"  # fewer students than min: one batch
STATUS_NO_FEASIBLE_COUNT = "no_feasible_count"  # no k keeps every batch in [min, max]


@dataclass(frozen=True)
class GroupPlan:
    """The batches to form in one mixable group."""

    #: position of the group in the plan (groups are sorted by key)
    group_index: int
    #: values of the hard no_mix fields, in ``BatchPlan.key_fields`` order
    key: tuple[str, ...]
    #: positions of the group's students in the active-student frame, ascending
    student_index: np.ndarray
    bounds: SizeBounds
    #: exact size of each batch, non-increasing, summing to the group size
    batch_sizes: np.ndarray
    status: str = STATUS_OK
    reason: str = ""

    @property
    def n_students(self) -> int:
        return int(self.student_index.size)

    @property
    def n_batches(self) -> int:
        return int(self.batch_sizes.size)


@dataclass
class BatchPlan:
    key_fields: list[str]
    groups: list[GroupPlan]
    warnings: list[str] = field(default_factory=list)
    #: under ``strict``: one ``CONSTRAINT_VIOLATION`` per group that is not ok, recorded (not
    #: raised) so that the run goes on to find its other problems and fails once with all
    problems: list[Stage2Error] = field(default_factory=list)

    def label(self, group: GroupPlan) -> str:
        if not self.key_fields:
            return "all students"
        return ", ".join(
            f"{f}={v}" for f, v in zip(self.key_fields, group.key, strict=True) if v not in (NOT_APPLICABLE, "")
        )

    @property
    def n_batches(self) -> int:
        return sum(g.n_batches for g in self.groups)


def group_keys(students: pd.DataFrame, settings: BatchingSettings) -> tuple[list[str], pd.DataFrame]:
    """Per student, the value of each hard no_mix field in force for its programme (else
    ``*``), so that programme-scoped rules can add or replace institution-wide ones."""
    program = students["program_id"].astype("string")
    hard_fields = {
        p: {r.field_name for r in settings.rules_for_program(p) if r.is_hard and r.rule_type == "no_mix"}
        for p in program.dropna().unique()
    }
    key_fields = [f for f in settings.hard_no_mix_fields if any(f in fields for fields in hard_fields.values())]
    keys = pd.DataFrame(index=students.index)
    for field_name in key_fields:
        programs_in_force = [p for p, fields in hard_fields.items() if field_name in fields]
        values = students[field_name].astype("string").fillna("")
        keys[field_name] = values.where(program.isin(programs_in_force), NOT_APPLICABLE)
    return key_fields, keys


def choose_batch_count(n_students: int, bounds: SizeBounds) -> int | None:
    """The feasible number of batches whose mean size is closest to ``bounds.target``
    (ties: fewer batches); ``None`` when no k keeps every batch within [min, max]."""
    counts = bounds.feasible_counts(n_students)
    if len(counts) == 0:
        return None
    k = np.asarray(counts)
    distance = np.abs(n_students / k - bounds.target)
    return int(k[np.argmin(distance)])


def balanced_sizes(n_students: int, n_batches: int) -> np.ndarray:
    """Sizes differing by at most one, larger first, summing to ``n_students``."""
    base, extra = divmod(n_students, n_batches)
    return np.array([base + 1] * extra + [base] * (n_batches - extra), dtype=np.int64)


def effective_bounds(bounds: SizeBounds, settings: BatchingSettings, largest_room: int | None) -> SizeBounds:
    """Cap ``max`` by hard ``capacity_limit`` rules: a batch must fit ``threshold`` × the
    largest home room."""
    cap = bounds.max
    for rule in settings.rules:
        if rule.rule_type == "capacity_limit" and rule.is_hard and rule.is_global and largest_room:
            cap = min(cap, int(seats_admitted(largest_room, rule.threshold)))
    if cap >= bounds.max:
        return bounds
    cap = max(cap, 1)
    return SizeBounds(min=min(bounds.min, cap), target=min(bounds.target, cap), max=cap)


def plan_batches(
    students: pd.DataFrame, settings: BatchingSettings, largest_room: int | None = None
) -> BatchPlan:
    """Group ``students`` (the active-student frame) and size each group's batches.

    A group smaller than ``min`` becomes one batch; a group for which no batch count keeps
    every size in [min, max] gets ``ceil(n / max)`` balanced batches. Both are reported in
    ``warnings`` with the group's key; under ``settings.strict`` they are ``problems``
    (``CONSTRAINT_VIOLATION``, exit 4), which the stage runner raises with the run's others.
    """
    key_fields, keys = group_keys(students, settings)
    if key_fields:
        codes, uniques = pd.MultiIndex.from_frame(keys).factorize(sort=True)
        group_values = [tuple(str(v) for v in u) for u in uniques]
    else:
        codes = np.zeros(len(students), dtype=np.int64)
        group_values = [()]
    order = np.argsort(codes, kind="stable")
    boundaries = np.flatnonzero(np.diff(codes[order])) + 1
    members = np.split(order, boundaries) if len(order) else []
    program_col = key_fields.index("program_id") if "program_id" in key_fields else None

    plan = BatchPlan(key_fields=key_fields, groups=[])
    for group_index, index in enumerate(members):
        key = group_values[codes[index[0]]]
        program_id = key[program_col] if program_col is not None else None
        bounds = effective_bounds(settings.bounds_for(program_id), settings, largest_room)
        n = int(index.size)
        status, reason = STATUS_OK, ""
        if n < bounds.min:
            sizes = np.array([n], dtype=np.int64)
            status = STATUS_UNDERSIZED
            reason = f"{n} students < min {bounds.min}: kept as one batch"
        else:
            k = choose_batch_count(n, bounds)
            if k is None:
                k = math.ceil(n / bounds.max)
                status = STATUS_NO_FEASIBLE_COUNT
                reason = (
                    f"no number of batches keeps {n} students within [{bounds.min}, {bounds.max}]: "
                    f"formed {k} batches of {n // k}-{math.ceil(n / k)}"
                )
            sizes = balanced_sizes(n, k)
        group = GroupPlan(group_index, key, np.sort(index), bounds, sizes, status, reason)
        plan.groups.append(group)
        if status != STATUS_OK:
            message = f"group ({plan.label(group)}): {reason}"
            if settings.strict:
                plan.problems.append(InfeasibleError(
                    message, code="CONSTRAINT_VIOLATION", where=f"group {plan.label(group)}",
                    fix="relax batch_size bounds for this group, or run with strict=false"))
            else:
                plan.warnings.append(message)
    return plan
