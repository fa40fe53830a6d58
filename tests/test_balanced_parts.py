"""Large groups solved in parts: a size-constrained split of the group into sub-problems, each
solved as a group of its own, then k-means rounds and the polish on the whole group."""

from __future__ import annotations

import numpy as np
import pytest

import stage2.clustering.balanced as balanced_module
from stage2.clustering import BatchingProblem, make_batcher, within_batch_sse
from stage2.clustering.assignment import SizeModel
from stage2.clustering.balanced import BalancedBatcher
from stage2.errors import ConfigurationError
from stage2.sizing import balanced_sizes

REGIONS, BATCHES_PER_REGION, STUDENTS_PER_BATCH = 4, 6, 30


def planted_regions(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points in ``REGIONS`` far-apart regions, each of ``BATCHES_PER_REGION`` tight clusters of
    ``STUDENTS_PER_BATCH`` points; returns the points and their planted cluster."""
    rng = np.random.default_rng(seed)
    rows, planted = [], []
    for region in range(REGIONS):
        centre = np.array([1000.0 * region, 0.0])
        for cluster in range(BATCHES_PER_REGION):
            offset = centre + np.array([0.0, 50.0 * cluster])
            rows.append(offset + rng.normal(0, 1, size=(STUDENTS_PER_BATCH, 2)))
            planted += [region * BATCHES_PER_REGION + cluster] * STUDENTS_PER_BATCH
    order = rng.permutation(len(planted))  # the parts must not rely on the input order
    return np.vstack(rows)[order], np.asarray(planted)[order]


def course_sets(n_students: int, n_courses: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    patterns = (rng.random((40, n_courses)) < 0.3).astype(np.float64)
    return patterns[rng.integers(0, patterns.shape[0], size=n_students)]


@pytest.fixture
def part_calls(monkeypatch):
    """The number of parts of every group the batcher solves in parts."""
    calls: list[int] = []
    original = BalancedBatcher._fit_parts

    def recording(self, features, data, sizes, seed, n_parts):
        calls.append(n_parts)
        return original(self, features, data, sizes, seed, n_parts)

    monkeypatch.setattr(BalancedBatcher, "_fit_parts", recording)
    return calls


def test_number_of_parts():
    batcher = BalancedBatcher(part_max_students=1000, part_min_batches=10)
    assert batcher._n_parts(1000, 40) == 1  # not above the limit: whole
    assert batcher._n_parts(1001, 40) == 2
    assert batcher._n_parts(5000, 200) == 5
    assert batcher._n_parts(5000, 25) == 2  # every part keeps at least part_min_batches
    assert batcher._n_parts(5000, 15) == 1
    assert BalancedBatcher(part_max_students=0)._n_parts(10**7, 10**5) == 1


@pytest.mark.parametrize("bad", [{"part_max_students": -1}, {"part_min_batches": 0}, {"part_repair_iter": -1}])
def test_bad_part_settings_are_rejected(bad):
    with pytest.raises(ConfigurationError, match="part_"):
        make_batcher({"name": "balanced", **bad})


def test_parts_recover_planted_clusters_across_regions(part_calls):
    X, planted = planted_regions()
    k = REGIONS * BATCHES_PER_REGION
    sizes = np.full(k, STUDENTS_PER_BATCH)
    batcher = make_batcher({"name": "balanced", "part_max_students": 2 * BATCHES_PER_REGION * STUDENTS_PER_BATCH,
                            "part_min_batches": 4})
    labels = batcher.fit_predict(BatchingProblem(X, sizes, seed=3))
    assert part_calls == [2]
    assert np.array_equal(np.bincount(labels, minlength=k), sizes)
    assert within_batch_sse(X, labels, k) <= within_batch_sse(X, planted, k) + 1e-6
    # every batch is one planted cluster
    assert all(np.unique(planted[labels == b]).size == 1 for b in range(k))


@pytest.mark.parametrize("model", ["flexible", "exact", "equal"])
def test_parts_keep_every_size_model_and_are_deterministic(model, part_calls):
    X = course_sets(2400)
    if model == "flexible":
        sizes = SizeModel(balanced_sizes(2400, 60), 15, 60, 0.03)
    elif model == "exact":
        sizes = SizeModel.exact(np.repeat([30, 50], 30))
    else:  # equal sizes up to one student: the flow picks which batches get the extra one
        sizes = SizeModel.exact(balanced_sizes(2400, 70))
    params = {"name": "balanced", "part_max_students": 700, "part_min_batches": 10}
    labels = make_batcher(params).fit_predict(BatchingProblem(X, sizes, seed=5))
    assert part_calls and part_calls[0] == 4
    assert sizes.admits(np.bincount(labels, minlength=sizes.n_batches))
    again = make_batcher(params).fit_predict(BatchingProblem(X, sizes, seed=5))
    assert np.array_equal(labels, again)


def test_whole_group_rounds_never_raise_the_objective():
    """Without the polish, the result is the parts' flows or the repair's rounds from their
    means, whichever is lower."""
    X = course_sets(2400)
    sizes = SizeModel(balanced_sizes(2400, 60), 15, 60, 0.03)
    params = {"name": "balanced", "part_max_students": 700, "part_min_batches": 10, "local_search": False}
    unrepaired = make_batcher({**params, "part_repair_iter": 0}).fit_predict(BatchingProblem(X, sizes, seed=1))
    repaired = make_batcher(params).fit_predict(BatchingProblem(X, sizes, seed=1))
    objective = balanced_module.objective
    assert objective(X, repaired, sizes) <= objective(X, unrepaired, sizes) + 1e-9


def test_a_part_is_collapsed_as_its_own_rows_would_be():
    X = course_sets(500)
    rows = np.flatnonzero(np.random.default_rng(0).random(500) < 0.3)
    whole = balanced_module.collapse(X)
    direct, derived = balanced_module.collapse(X[rows]), balanced_module.sub_collapse(whole, rows)
    assert np.array_equal(direct.points, derived.points)
    assert np.array_equal(direct.counts, derived.counts)
    assert np.array_equal(direct.inverse, derived.inverse)
