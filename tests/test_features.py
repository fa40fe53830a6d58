"""Feature extraction: course vectors and the soft-rule feature blocks the clustering adds.

Expected values are written out by hand (or computed with plain numpy/pandas), never by the
functions under test. Column order inside the soft features is not part of the contract, so
matrices are compared up to a permutation of their columns.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from stage2.config.settings import ConstraintRule
from stage2.features import SoftRuleFeatures, course_matrix, group_features

SQ2 = math.sqrt(2.0)


def rule(name, field_name, rule_type, *, level="soft", weight=1.0, threshold=0.8,
         entity_type="INSTITUTION", entity_id=None) -> ConstraintRule:
    return ConstraintRule(name=name, field_name=field_name, rule_type=rule_type, level=level, weight=weight,
                          threshold=threshold, entity_type=entity_type, entity_id=entity_id)


def dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float64)


def sorted_columns(matrix: np.ndarray) -> np.ndarray:
    """The columns in lexicographic order (row 0 first): equal iff equal up to a column permutation."""
    order = np.lexsort(np.round(matrix, 6)[::-1])
    return matrix[:, order]


def assert_same_columns(actual, expected: np.ndarray) -> None:
    actual = dense(actual)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(sorted_columns(actual), sorted_columns(expected), rtol=1e-6, atol=1e-7)


def within_batch_ss(x: np.ndarray, labels: np.ndarray) -> float:
    """Σ over batches of the squared distances of the rows to their batch mean."""
    x = np.asarray(x, dtype=np.float64).reshape(len(labels), -1)
    total = 0.0
    for label in np.unique(labels):
        rows = x[labels == label]
        total += float(((rows - rows.mean(axis=0)) ** 2).sum())
    return total


@pytest.fixture
def five_students() -> pd.DataFrame:
    # preferred_languages: the loader's tuples; a list and a null cell must work the same way
    return pd.DataFrame(
        {
            "student_id": ["s0", "s1", "s2", "s3", "s4"],
            "preferred_shift": ["M", "M", "E", None, "E"],
            "preferred_languages": [("en", "hi"), ["en"], (), ("ta", "en"), None],
            "cgpa": [6.0, 7.0, 8.0, np.nan, 9.0],
        }
    )


FIVE_RULES = [
    rule("shift_homogeneous", "preferred_shift", "homogeneous", weight=2.0),
    rule("language_homogeneous", "preferred_languages", "homogeneous", weight=1.0),
    rule("cgpa_spread", "cgpa", "max_variance", weight=4.0, threshold=0.5),
]


def test_soft_features_exact_values_on_five_students(five_students):
    """One-hot (nulls: zero row), multi-hot of the tuple/list cells and the z-scored field
    (NaN -> 0), each block times sqrt(weight * soft_rule_scale)."""
    features = SoftRuleFeatures(five_students, soft_rule_scale=0.1).for_group(np.arange(5), FIVE_RULES)
    a, b = math.sqrt(2.0 * 0.1), math.sqrt(1.0 * 0.1)
    # cgpa 6, 7, 8, -, 9: mean 7.5, population std sqrt(1.25); z * sqrt(0.4) = (-0.6, -0.2, 0.2, 0, 0.6) * sqrt 2
    expected = np.array(
        [
            # shift E, M | languages en, hi, ta | cgpa
            [0, a, b, b, 0, -0.6 * SQ2],
            [0, a, b, 0, 0, -0.2 * SQ2],
            [a, 0, 0, 0, 0, 0.2 * SQ2],
            [0, 0, b, 0, b, 0.0],
            [a, 0, 0, 0, 0, 0.6 * SQ2],
        ]
    )
    assert_same_columns(features, expected)


def test_soft_features_of_a_group_slice_rows_and_zscore_within_the_group(five_students):
    """Rows follow the group's index order, the one-hot keeps the institution-wide categories,
    and the max_variance field is z-scored over the group's students only."""
    index = np.array([4, 0, 2])
    features = SoftRuleFeatures(five_students, soft_rule_scale=0.1).for_group(index, FIVE_RULES)
    a, b = math.sqrt(0.2), math.sqrt(0.1)
    # cgpa 9, 6, 8: mean 23/3, population std sqrt(14)/3 -> z = (4, -5, 1) / sqrt(14)
    c = math.sqrt(0.4) / math.sqrt(14.0)
    expected = np.array(
        [
            [a, 0, 0, 0, 0, 4 * c],
            [0, a, b, b, 0, -5 * c],
            [a, 0, 0, 0, 0, 1 * c],
        ]
    )
    assert_same_columns(features, expected)


def test_soft_rule_scale_multiplies_every_block(five_students):
    """Quadrupling soft_rule_scale doubles every feature (sqrt scaling)."""
    low = dense(SoftRuleFeatures(five_students, 0.1).for_group(np.arange(5), FIVE_RULES))
    high = dense(SoftRuleFeatures(five_students, 0.4).for_group(np.arange(5), FIVE_RULES))
    np.testing.assert_allclose(high, 2.0 * low, rtol=1e-6)


def test_soft_no_mix_is_a_one_hot_like_homogeneous(five_students):
    """A soft no_mix rule adds the same one-hot block as a homogeneous rule of equal weight."""
    no_mix = SoftRuleFeatures(five_students, 0.5).for_group(
        np.arange(5), [rule("r", "preferred_shift", "no_mix", weight=3.0, threshold=1.0)])
    s = math.sqrt(1.5)
    expected = np.array([[0, s], [0, s], [s, 0], [0, 0], [s, 0]])
    assert_same_columns(no_mix, expected)


def test_rules_that_shape_nothing_add_no_features(five_students):
    """Hard rules, weight-0 rules, COURSE-scoped rules and capacity limits add no columns."""
    silent = [
        rule("same_shift", "preferred_shift", "no_mix", level="hard", threshold=1.0),
        rule("zero", "preferred_shift", "homogeneous", weight=0.0),
        rule("course_scoped", "preferred_shift", "homogeneous", weight=5.0, entity_type="COURSE", entity_id="C1"),
        rule("room_capacity", "capacity", "capacity_limit", level="hard", threshold=1.0),
    ]
    soft = SoftRuleFeatures(five_students, 0.1)
    assert soft.for_group(np.arange(5), silent) is None
    only_cgpa = soft.for_group(np.arange(5), silent + [FIVE_RULES[2]])
    assert only_cgpa.shape == (5, 1)
    np.testing.assert_allclose(dense(only_cgpa).ravel(), np.array([-0.6, -0.2, 0.2, 0.0, 0.6]) * SQ2, rtol=1e-9)


@pytest.mark.parametrize("cgpa", [[7.0] * 5, [np.nan] * 5, [7.0, np.nan, 7.0, 7.0, np.nan]])
def test_max_variance_without_spread_gives_a_zero_column(five_students, cgpa):
    """A constant (or all-missing) numeric field gives zeros, not NaN or inf."""
    students = five_students.assign(cgpa=cgpa)
    features = dense(SoftRuleFeatures(students, 0.1).for_group(np.arange(5), [FIVE_RULES[2]]))
    assert features.shape == (5, 1)
    assert np.array_equal(features, np.zeros((5, 1)))


def test_course_matrix_is_zero_one_over_known_students():
    """One row per student in frame order, sorted course columns, duplicates count once,
    enrollments of unknown students are dropped."""
    students = pd.Series(["s2", "s1", "s3"])
    enrollments = pd.DataFrame(
        {"student_id": ["s1", "s1", "s2", "s1", "ghost", "s3"], "course_id": ["C2", "C1", "C2", "C2", "C9", "C1"]}
    )
    result = course_matrix(students, enrollments)
    assert list(result.course_ids) == ["C1", "C2", "C9"]
    assert np.array_equal(dense(result.matrix), np.array([[0, 1, 0], [1, 1, 0], [1, 0, 0]]))


def test_group_features_drop_unused_courses_and_append_soft_columns():
    """Course columns nobody in the group takes are dropped; soft columns follow unchanged."""
    courses = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=np.float32))
    soft = sp.csr_matrix(np.array([[0.5], [-0.5], [0.0]]))
    result = group_features(courses, soft)
    assert np.array_equal(result, np.array([[1, 1, 0.5], [0, 1, -0.5], [1, 0, 0.0]]))
    assert np.array_equal(group_features(courses, None), np.array([[1, 1], [0, 1], [1, 0]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stacked_cost_is_course_sse_plus_weighted_rule_spreads(seed):
    """For any labelling, the k-means cost of the stacked features equals the course SSE plus
    Σ_rules weight × soft_rule_scale × the rule's own within-batch sum of squares."""
    rng = np.random.default_rng(seed)
    n_all, n_group, n_courses, n_batches, scale = 60, 35, 8, 5, 0.25
    taken = (rng.random((n_all, n_courses)) < 0.3).astype(float)
    shifts = rng.choice(np.array(["M", "E", "A", None], dtype=object), n_all)
    languages = np.empty(n_all, dtype=object)
    for i in range(n_all):
        languages[i] = tuple(lang for lang in ("en", "hi", "ta", "te") if rng.random() < 0.4)
    cgpa = np.round(rng.normal(7.0, 1.0, n_all), 2)
    cgpa[rng.random(n_all) < 0.1] = np.nan
    students = pd.DataFrame({"preferred_shift": shifts, "preferred_languages": languages, "cgpa": cgpa})
    weights = {"shift": 2.0, "languages": 1.5, "cgpa": 3.0}
    rules = [
        rule("same_program", "program_id", "no_mix", level="hard", threshold=1.0),
        rule("shift", "preferred_shift", "homogeneous", weight=weights["shift"]),
        rule("languages", "preferred_languages", "no_mix", weight=weights["languages"], threshold=1.0),
        rule("cgpa", "cgpa", "max_variance", weight=weights["cgpa"], threshold=0.5),
    ]
    index = rng.choice(n_all, n_group, replace=False)
    labels = rng.integers(0, n_batches, n_group)

    stacked = group_features(sp.csr_matrix(taken[index]),
                             SoftRuleFeatures(students, scale).for_group(index, rules))

    # course SSE from its own formula: Σ_batches Σ_courses e (1 - e / size)
    course_sse = 0.0
    for label in np.unique(labels):
        e = taken[index][labels == label].sum(axis=0)
        course_sse += float((e * (1.0 - e / (labels == label).sum())).sum())
    assert within_batch_ss(taken[index], labels) == pytest.approx(course_sse)
    # each rule's own encoding, by hand
    shift_onehot = pd.get_dummies(pd.Series(shifts[index]), dtype=float).to_numpy()
    vocabulary = sorted({lang for langs in languages for lang in langs})
    multihot = np.array([[float(lang in languages[i]) for lang in vocabulary] for i in index])
    x = cgpa[index]
    z = np.where(np.isnan(x), 0.0, (x - np.nanmean(x)) / np.nanstd(x))
    expected = (course_sse
                + weights["shift"] * scale * within_batch_ss(shift_onehot, labels)
                + weights["languages"] * scale * within_batch_ss(multihot, labels)
                + weights["cgpa"] * scale * within_batch_ss(z, labels))
    assert within_batch_ss(stacked, labels) == pytest.approx(expected, rel=1e-6)
    # and the soft part is not negligible, so a wrong scale would show
    assert expected - course_sse > 0.1 * course_sse
