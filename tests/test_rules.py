"""Per-batch rule checks (``stage2.metrics.check_rules``) on tiny hand-made batches.

Every expected verdict is worked out by hand in the comments, including batches exactly at
the threshold (which satisfy the rule) and batches with no member holding a value (which are
not checked at all).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from stage2.config.settings import BatchingSettings, ConstraintRule, SizeBounds, Weights
from stage2.metrics import check_rules


def rule(name, field_name, rule_type, threshold, *, level="soft", weight=1.0,
         entity_type="INSTITUTION", entity_id=None, source="yaml") -> ConstraintRule:
    return ConstraintRule(name=name, field_name=field_name, rule_type=rule_type, level=level, weight=weight,
                          threshold=threshold, entity_type=entity_type, entity_id=entity_id, source=source)


def settings_with(*rules: ConstraintRule) -> BatchingSettings:
    return BatchingSettings(
        bounds=SizeBounds(1, 5, 10), weights=Weights(0.4, 0.3, 0.3), rules=tuple(rules), shared_threshold=0.5,
        seed=0, strict=False, as_of=datetime(2025, 1, 1, tzinfo=UTC), soft_rule_scale=0.1,
        deviation_cost=1.0,
    )


def run_checks(field_name: str, batches: list[list], rules: list[ConstraintRule], *, program_ids=None,
               group_keys=None, enrollments=None, dtype=object) -> dict[tuple[str, int], bool]:
    """``batches[b]`` lists the ``field_name`` values of batch b's members; returns
    {(rule name, batch): satisfied}, one entry per check made."""
    n_batches = len(batches)
    program_ids = program_ids or ["P1"] * n_batches
    group_keys = group_keys or [f"{p}|2024|1" for p in program_ids]
    values = [v for members in batches for v in members]
    batch_of_student = np.repeat(np.arange(n_batches), [len(m) for m in batches])
    students = pd.DataFrame(
        {
            "student_id": [f"s{i}" for i in range(len(values))],
            "program_id": [program_ids[b] for b in batch_of_student],
            field_name: pd.Series(values, dtype=dtype),
        }
    )
    frame = pd.DataFrame({"batch_code": [f"B{b}" for b in range(n_batches)], "program_id": program_ids,
                          "group_key": group_keys, "student_count": [len(m) for m in batches]})
    if enrollments is None:
        enrollments = pd.DataFrame({"student_id": pd.Series(dtype=object), "course_id": pd.Series(dtype=object)})
    checks = check_rules(frame, students, batch_of_student, enrollments, settings_with(*rules))
    result = {(r.rule, int(r.batch)): bool(r.satisfied) for r in checks.itertuples()}
    assert len(result) == len(checks), "one check per (rule, batch)"
    return result


def test_homogeneous_share_of_the_most_common_value_among_members_with_a_value():
    """satisfied iff (most common value's count) / (members with a value) >= threshold."""
    checks = run_checks(
        "preferred_shift",
        [
            ["M", "M", "M", "E"],        # 3/4 = 0.75: exactly the threshold -> satisfied
            ["E", "E", "E", None, None],  # 3/3 (nulls do not count; 3/5 would fail) -> satisfied
            ["M", "E", "N"],             # 1/3 -> broken
            [None, None],                # nobody has a value -> not checked
            ["M", "M", "M", "E", "E"],   # 3/5 = 0.6 -> broken
        ],
        [rule("shift_homogeneous", "preferred_shift", "homogeneous", 0.75)],
    )
    assert checks == {("shift_homogeneous", 0): True, ("shift_homogeneous", 1): True,
                      ("shift_homogeneous", 2): False, ("shift_homogeneous", 4): False}


@pytest.mark.parametrize("n_same, expected", [(7, True), (6, False)])
def test_homogeneous_threshold_is_inclusive(n_same, expected):
    """7 of 10 members sharing a value satisfy a 0.7 threshold; 6 of 10 do not."""
    checks = run_checks("preferred_shift", [["M"] * n_same + ["E"] * (10 - n_same)],
                        [rule("shift_homogeneous", "preferred_shift", "homogeneous", 0.7)])
    assert checks == {("shift_homogeneous", 0): expected}


def test_homogeneous_on_a_list_field_counts_the_element_most_members_share():
    """For tuple cells the share is (members holding the commonest element) / (members with a
    non-empty list): ('en', 'hi') and ('hi', 'en') both hold 'en'."""
    checks = run_checks(
        "preferred_languages",
        [
            [("en", "hi"), ("en",), ("hi", "en"), ("en", "ta"), ("ta",)],  # en: 4/5 = 0.8 -> satisfied
            [("hi",), ("hi", "ta"), ("hi",), (), None],                    # hi: 3/3 (empty/null excluded) -> satisfied
            [("en",), ("hi",), ("en", "hi"), ("ta",)],                      # en or hi: 2/4 -> broken
            [(), ()],                                                      # no values -> not checked
            [("hi", "ta"), ("ta", "hi"), ("en",), ("te",), ("hi", "en")],   # hi: 3/5 = 0.6 -> broken
        ],
        [rule("language_homogeneous", "preferred_languages", "homogeneous", 0.8)],
    )
    assert checks == {("language_homogeneous", 0): True, ("language_homogeneous", 1): True,
                      ("language_homogeneous", 2): False, ("language_homogeneous", 4): False}


def test_max_variance_compares_the_batch_with_its_own_group():
    """satisfied iff var(batch) <= threshold × var(its mixable group), population variances,
    missing values ignored; threshold 0.4."""
    nan = np.nan
    checks = run_checks(
        "cgpa",
        [
            [6, 6, 8, 8, nan],  # g1: var 1;  g1 = {6,6,8,8,4,10}: mean 7, var 22/6 -> limit 1.467 -> satisfied
            [0, 2],             # g2: var 1;  g2 = {0,2,-1,3}: mean 1, var 10/4 = 2.5 -> limit 1.0 -> exactly, satisfied
            [4, 10],            # g1: var 9 > 1.467 -> broken
            [-1, 3],            # g2: var 4 > 1.0 -> broken
            [nan, nan],         # g3: no values -> not checked
            [5],                # g3: var 0 <= 0.4 × 0 -> satisfied
        ],
        [rule("cgpa_spread", "cgpa", "max_variance", 0.4)],
        group_keys=["g1", "g2", "g1", "g2", "g3", "g3"],
        dtype=float,
    )
    assert checks == {("cgpa_spread", 0): True, ("cgpa_spread", 1): True, ("cgpa_spread", 2): False,
                      ("cgpa_spread", 3): False, ("cgpa_spread", 5): True}


def test_soft_no_mix_needs_one_value_and_is_reported_soft():
    """A soft no_mix rule (threshold 1.0) holds iff every member with a value has the same one;
    the check carries the rule's level and type."""
    settings_rule = rule("one_semester", "semester", "no_mix", 1.0, weight=2.0)
    checks = run_checks("semester", [[1, 1, 1], [1, 1, 2], [2, None], [None]], [settings_rule], dtype="Int64")
    assert checks == {("one_semester", 0): True, ("one_semester", 1): False, ("one_semester", 2): True}
    frame = check_rules(
        pd.DataFrame({"program_id": ["P1"], "group_key": ["g"], "student_count": [2]}),
        pd.DataFrame({"student_id": ["a", "b"], "program_id": ["P1", "P1"],
                      "semester": pd.array([1, 2], dtype="Int64")}),
        np.array([0, 0]), pd.DataFrame({"student_id": [], "course_id": []}), settings_with(settings_rule),
    )
    assert frame[["rule", "level", "rule_type", "satisfied"]].to_dict("records") == [
        {"rule": "one_semester", "level": "soft", "rule_type": "no_mix", "satisfied": False}
    ]


def test_soft_no_mix_with_a_lower_threshold():
    """A soft no_mix at 0.6: 3 of 5 sharing a value suffice, 2 of 4 do not."""
    checks = run_checks("semester", [[1, 1, 1, 2, 3], [1, 1, 2, 2]],
                        [rule("mostly_one_semester", "semester", "no_mix", 0.6)], dtype="Int64")
    assert checks == {("mostly_one_semester", 0): True, ("mostly_one_semester", 1): False}


def test_program_scoped_rule_replaces_the_global_rule_for_its_programme_only():
    """CSE batches are checked by the CSE rule (threshold 0.5) and not by the global rule of the
    same name (0.75); other programmes' batches only by the global rule."""
    rules = [
        rule("shift_homogeneous", "preferred_shift", "homogeneous", 0.75),
        rule("shift_homogeneous", "preferred_shift", "homogeneous", 0.5, entity_type="PROGRAM", entity_id="CSE",
             source="eav:v1"),
    ]
    checks = run_checks(
        "preferred_shift",
        [["M", "M", "E", "E"],       # CSE: 2/4 >= 0.5 -> satisfied (the global rule would break it)
         ["M", "M", "E", "E"],       # ECE: 2/4 < 0.75 -> broken
         ["M", "E", "N", "A"],       # CSE: 1/4 -> broken
         ["M", "M", "M", "E"]],      # ECE: 3/4 -> satisfied
        rules,
        program_ids=["CSE", "ECE", "CSE", "ECE"],
    )
    assert checks == {("shift_homogeneous", 0): True, ("shift_homogeneous", 1): False,
                      ("shift_homogeneous", 2): False, ("shift_homogeneous", 3): True}


def test_course_scoped_rule_only_counts_the_course_takers():
    """A COURSE-scoped rule looks at the members taking that course; a batch without takers is
    not checked."""
    enrollments = pd.DataFrame({"student_id": ["s0", "s1", "s2", "s3", "s4", "s5"],
                                "course_id": ["C1", "C1", "C2", "C1", "C1", "C2"]})
    checks = run_checks(
        "preferred_shift",
        [["M", "M", "E"],   # takers s0, s1: M, M -> satisfied (s2's E does not count)
         ["E", "M"],        # takers s3, s4: E, M -> broken
         ["E"]],            # s5 does not take C1 -> not checked
        [rule("c1_shift", "preferred_shift", "homogeneous", 1.0, entity_type="COURSE", entity_id="C1")],
        enrollments=enrollments,
    )
    assert checks == {("c1_shift", 0): True, ("c1_shift", 1): False}


def test_capacity_limit_checks_placed_batches_against_threshold_times_capacity():
    """student_count <= threshold × capacity_allocated, inclusive; unplaced batches unchecked."""
    batches = pd.DataFrame({"program_id": ["P1"] * 4, "group_key": ["g"] * 4, "student_count": [27, 28, 20, 9],
                            "capacity_allocated": pd.array([30, 30, None, 10], dtype="Int64")})
    students = pd.DataFrame({"student_id": ["a"], "program_id": ["P1"]})
    checks = check_rules(batches, students, np.array([0]), pd.DataFrame({"student_id": [], "course_id": []}),
                         settings_with(rule("room_capacity", "capacity", "capacity_limit", 0.9, level="hard")))
    # 27 <= 27 yes; 28 > 27 no; no room: unchecked; 9 <= 9 yes
    assert {int(r.batch): bool(r.satisfied) for r in checks.itertuples()} == {0: True, 1: False, 3: True}
    assert set(checks["level"]) == {"hard"}


def test_list_field_share_counts_each_member_once():
    """A member listing the same language twice still counts once: ('en', 'en') and ('hi',)
    share no language, so the best share is 1/2 and a 0.8 threshold is broken."""
    checks = run_checks("preferred_languages", [[("en", "en"), ("hi",)]],
                        [rule("language_homogeneous", "preferred_languages", "homogeneous", 0.8)])
    assert checks == {("language_homogeneous", 0): False}
