"""The contract's output invariants, checked from the tables alone.

A run whose outputs break one of these raises :class:`~stage2.errors.InvariantViolation` and
writes no CSV. The audit notebook re-runs the same checks on the files of a finished run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stage2.contract.csvio import string_positions
from stage2.errors import InvariantViolation

#: group statuses whose batches may fall outside [size_min, size_max] (and are reported)
EXEMPT_GROUP_STATUSES = ("undersized", "no_feasible_count")


def invariant_failures(
    batches: pd.DataFrame,
    membership: pd.DataFrame,
    batch_courses: pd.DataFrame,
    active_students: pd.DataFrame,
    active_enrollments: pd.DataFrame,
    hard_rule_failures: int = 0,
) -> list[str]:
    """Every broken invariant, as a sentence naming the batches or students involved."""
    failures: list[str] = []

    def named(values, limit: int = 10) -> str:
        values = list(values)
        return ", ".join(map(str, values[:limit])) + (f" ... ({len(values)} in all)" if len(values) > limit else "")

    # every active student in exactly one batch, nobody else
    members_are_active = _is_permutation(string_positions(membership["student_id"], active_students["student_id"]),
                                         len(active_students))
    if not members_are_active:
        counts = membership["student_id"].astype(str).value_counts()
        twice = counts[counts > 1]
        if len(twice):
            failures.append(f"students in more than one batch: {named(twice.index)}")
        active_ids = set(active_students["student_id"].astype(str))
        members = set(counts.index)
        if missing := active_ids - members:
            failures.append(f"active students in no batch: {named(sorted(missing))}")
        if unknown := members - active_ids:
            failures.append(f"members who are not active input students: {named(sorted(unknown))}")

    # batch sizes
    per_batch = membership.groupby("batch_id").size()
    counted = per_batch.reindex(batches["batch_id"]).fillna(0).astype(int).to_numpy()
    wrong = batches.loc[counted != batches["student_count"].to_numpy(), "batch_code"]
    if len(wrong):
        failures.append(f"student_count differs from the membership rows: {named(wrong)}")
    batch_of_member = string_positions(membership["batch_id"], batches["batch_id"])
    if (batch_of_member < 0).any():
        if unknown_batches := set(membership["batch_id"]) - set(batches["batch_id"]):
            failures.append(f"membership rows name unknown batches: {named(sorted(unknown_batches))}")
    sizes = batches["student_count"].to_numpy()
    outside = (sizes < batches["size_min"].to_numpy()) | (sizes > batches["size_max"].to_numpy())
    outside &= ~batches["group_status"].isin(EXEMPT_GROUP_STATUSES).to_numpy()
    if outside.any():
        failures.append(f"batches outside their size bounds: {named(batches.loc[outside, 'batch_code'])}")
    if batches["batch_code"].duplicated().any() or batches["batch_id"].duplicated().any():
        failures.append("batch codes or ids are not unique")

    # hard rules (counted by the metrics stage's rule checks)
    if hard_rule_failures:
        failures.append(f"{hard_rule_failures} (batch, hard rule) checks fail")

    # rooms
    placed = batches.loc[batches["room_id"].notna()]
    double = placed.duplicated(["room_id", "shift_id"], keep=False)
    if double.any():
        failures.append(f"rooms given twice in one shift: {named(placed.loc[double, 'batch_code'])}")
    too_small = placed["capacity_allocated"].astype("Int64") < placed["student_count"]
    if too_small.fillna(True).any():
        failures.append(f"batches larger than their room: {named(placed.loc[too_small.fillna(True), 'batch_code'])}")

    # course enrollment counts, recounted from the membership and the input enrollments; the
    # integer recount decides only that they agree, any doubt is settled by the full comparison
    if not (members_are_active and not batches["batch_id"].duplicated().any()
            and _counts_agree(batch_of_member, membership, batch_courses, batches, active_enrollments)):
        expected = _expected_students(membership, active_enrollments)
        got = pd.Series(batch_courses["expected_students"].to_numpy(),
                        index=pd.MultiIndex.from_arrays([batch_courses["batch_id"].to_numpy(),
                                                         batch_courses["course_id"].astype(str).to_numpy()]))
        if len(expected) != len(got) or not expected.sort_index().equals(got.sort_index()):
            joined = pd.concat([expected.rename("expected"), got.rename("got")], axis=1).fillna(0)
            bad = joined.index[joined["expected"].to_numpy() != joined["got"].to_numpy()]
            failures.append(f"batch_course_enrollment.expected_students disagrees with the members for {named(bad)}")
    return failures


def _is_permutation(positions: np.ndarray, n: int) -> bool:
    """Whether ``positions`` holds every one of ``0 .. n - 1`` exactly once (nothing absent)."""
    return len(positions) == n and bool((positions >= 0).all()) and bool(
        (np.bincount(positions, minlength=n) == 1).all()
    )


def _counts_agree(batch_of_member: np.ndarray, membership: pd.DataFrame, batch_courses: pd.DataFrame,
                  batches: pd.DataFrame, enrollments: pd.DataFrame) -> bool:
    """Whether ``batch_courses`` has exactly one row per (batch, course) some member takes, with
    ``expected_students`` its member count: :func:`_expected_students` in integer codes.
    ``batch_of_member``: each membership row's batch row, all found; member ids unique."""
    got_counts = batch_courses["expected_students"].to_numpy()
    if got_counts.dtype != np.int64 or (batch_of_member < 0).any():
        return False
    member = string_positions(enrollments["student_id"], membership["student_id"])
    taken = member >= 0
    course_code, course_ids = pd.factorize(enrollments["course_id"].astype(str))
    course_code = course_code[taken]
    if (course_code < 0).any():
        return False
    n_courses = max(len(course_ids), 1)
    keys, counts = np.unique(batch_of_member[member[taken]] * n_courses + course_code, return_counts=True)
    got_batch = string_positions(batch_courses["batch_id"], batches["batch_id"])
    got_course = string_positions(batch_courses["course_id"].astype(str), pd.Series(course_ids))
    if len(got_batch) != len(keys) or (got_batch < 0).any() or (got_course < 0).any():
        return False
    got_keys = got_batch * n_courses + got_course
    order = np.argsort(got_keys, kind="stable")
    return bool(np.array_equal(got_keys[order], keys) and np.array_equal(got_counts[order], counts))


def _expected_students(membership: pd.DataFrame, enrollments: pd.DataFrame) -> pd.Series:
    """Members of each batch enrolled in each course, by (batch_id, course_id), counted here
    from the tables (independently of the enrollment stage that wrote them)."""
    members = membership.drop_duplicates("student_id")
    position = pd.Index(members["student_id"].astype(str)).get_indexer(pd.Index(enrollments["student_id"].astype(str)))
    enrolled = position >= 0
    batch_codes, batch_ids = pd.factorize(members["batch_id"].to_numpy()[position[enrolled]])
    course_codes, course_ids = pd.factorize(enrollments["course_id"].astype(str).to_numpy()[enrolled])
    n_courses = max(len(course_ids), 1)
    keys, counts = np.unique(batch_codes.astype(np.int64) * n_courses + course_codes, return_counts=True)
    index = pd.MultiIndex.from_arrays(
        [np.asarray(batch_ids)[keys // n_courses], np.asarray(course_ids)[keys % n_courses]]
    )
    return pd.Series(counts.astype(np.int64), index=index)


def check_invariants(*args, **kwargs) -> None:
    """Raise :class:`InvariantViolation` listing every broken invariant (see
    :func:`invariant_failures` for the arguments)."""
    failures = invariant_failures(*args, **kwargs)
    if failures:
        raise InvariantViolation(
            "the outputs break the data contract: " + "; ".join(failures),
            where="outputs",
            fix="this is a bug in stage2; please report it with the input and configuration",
        )


__all__ = ["check_invariants", "invariant_failures"]
