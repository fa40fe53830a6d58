"""The optimality oracle of ``experiments/optimality`` is exact, and stage2 never beats it.

Fast (a few seconds): tiny instances only (n ≤ 11), where exhaustive search is instant.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "optimality"
sys.path.insert(0, str(EXPERIMENT))

from instances import ITC_DIR, Instance, synthetic_instance, tiny_instances  # noqa: E402
from oracle import (  # noqa: E402
    exhaustive_min_sse,
    iter_partitions,
    milp_min_sse,
    n_partitions,
    solve,
    sse_of,
)

from stage2.clustering import ALGORITHMS, BatchingProblem, make_batcher, within_batch_sse  # noqa: E402

TOL = 1e-9


def _handmade() -> list[Instance]:
    """Instances the sampled ones may miss: heavy duplicates with unequal sizes, and real-valued
    features whose Gram matrix has negative entries (like z-scored soft-rule columns)."""
    dup = np.array([[1, 1, 0, 0]] * 3 + [[1, 0, 1, 0]] * 3 + [[0, 1, 1, 1]] * 2 + [[0, 0, 1, 1]] * 2, float)
    rng = np.random.default_rng(11)
    real = np.hstack([(rng.random((9, 4)) < 0.5).astype(float), rng.normal(size=(9, 2))])
    return [
        Instance("dup-n10-k4", "handmade", dup, np.array([3, 3, 2, 2]), 0),
        Instance("real-n9-k3", "handmade", real, np.array([3, 3, 3]), 0),
    ]


TINY = tiny_instances() + _handmade()
SYNTHETIC_TINY = [i for i in TINY if i.source == "synthetic"]


def _ids(instances):
    return [i.id for i in instances]


def test_tiny_instances_are_tiny_and_deterministic():
    assert len(SYNTHETIC_TINY) >= 5
    for inst in TINY:
        assert inst.n <= 11 and int(inst.batch_sizes.sum()) == inst.n
        assert n_partitions(inst.batch_sizes) <= 20_000
    again = synthetic_instance(10, 3, seed=4)
    same = next(i for i in TINY if i.id == again.id)
    assert np.array_equal(again.features, same.features)


@pytest.mark.parametrize(("n", "sizes"), [(6, [3, 3]), (7, [3, 2, 2]), (8, [2, 2, 2, 2]), (9, [4, 3, 2])])
def test_iter_partitions_lists_each_partition_once(n, sizes):
    seen = {frozenset(map(frozenset, p)) for p in iter_partitions(n, np.array(sizes))}
    count = sum(1 for _ in iter_partitions(n, np.array(sizes)))
    assert count == len(seen) == n_partitions(np.array(sizes))
    # against brute force over all labellings
    brute = {
        frozenset(frozenset(np.flatnonzero(np.array(lab) == b)) for b in range(len(sizes)))
        for lab in itertools.product(range(len(sizes)), repeat=n)
        if sorted(np.bincount(lab, minlength=len(sizes)).tolist()) == sorted(sizes)
    }
    assert seen == brute


def test_exhaustive_matches_brute_force_over_all_labellings():
    inst = TINY[0]  # n = 8, k = 2: 256 labellings
    best = min(
        sse_of(inst.features, np.array(lab), inst.k)
        for lab in itertools.product(range(inst.k), repeat=inst.n)
        if np.array_equal(np.bincount(lab, minlength=inst.k), inst.batch_sizes)
    )
    assert exhaustive_min_sse(inst.features, inst.batch_sizes).sse == pytest.approx(best, abs=TOL)


@pytest.mark.parametrize("inst", TINY, ids=_ids(TINY))
def test_milp_optimum_equals_exhaustive_search(inst):
    exact = exhaustive_min_sse(inst.features, inst.batch_sizes)
    milp = milp_min_sse(inst.features, inst.batch_sizes, time_limit=30)
    assert milp.proven and milp.method == "milp"
    assert milp.sse == pytest.approx(exact.sse, abs=1e-7)
    assert milp.lower_bound == pytest.approx(milp.sse, abs=1e-6)
    for result in (exact, milp):
        assert np.array_equal(np.bincount(result.labels, minlength=inst.k), inst.batch_sizes)
        assert sse_of(inst.features, result.labels, inst.k) == pytest.approx(result.sse, abs=TOL)
    # the symmetry-breaking constraints keep an optimum
    plain = milp_min_sse(inst.features, inst.batch_sizes, time_limit=30, symmetry_breaking=False)
    assert plain.sse == pytest.approx(exact.sse, abs=1e-7)


@pytest.mark.parametrize("inst", TINY, ids=_ids(TINY))
def test_no_algorithm_beats_the_oracle(inst):
    opt = solve(inst.features, inst.batch_sizes)
    assert opt.proven
    configs = [{"name": name} for name in ALGORITHMS] + [{"name": "balanced", "n_init": 10}]
    for params in configs:
        labels = make_batcher(params).fit_predict(BatchingProblem(inst.features, inst.batch_sizes.copy(), 0))
        assert np.array_equal(np.bincount(labels, minlength=inst.k), inst.batch_sizes), params
        assert within_batch_sse(inst.features, labels, inst.k) >= opt.sse - 1e-7, params


@pytest.mark.parametrize("inst", SYNTHETIC_TINY, ids=_ids(SYNTHETIC_TINY))
def test_balanced_reaches_the_optimum_on_tiny_instances(inst):
    opt = solve(inst.features, inst.batch_sizes)
    labels = make_batcher({"name": "balanced"}).fit_predict(BatchingProblem(inst.features, inst.batch_sizes.copy(), 0))
    sse = within_batch_sse(inst.features, labels, inst.k)
    assert sse <= opt.sse + TOL * max(1.0, opt.sse), f"balanced {sse} > optimum {opt.sse}"


@pytest.mark.skipif(not ITC_DIR.is_dir(), reason="ITC 2019 data not available")
def test_itc_sampling_is_deterministic_and_overlapping():
    from instances import itc_instance, itc_students

    a = itc_instance("yach-fal17", 12, 3, seed=5)
    b = itc_instance("yach-fal17", 12, 3, seed=5)
    assert a.meta["students"] == b.meta["students"] and np.array_equal(a.features, b.features)
    assert len(set(a.meta["students"])) == a.n == 12
    assert set(np.unique(a.features)) <= {0.0, 1.0} and a.features.sum(axis=0).min() >= 1
    students = itc_students("yach-fal17")
    seed_courses = set(students[a.meta["seed_student"]])
    assert all(seed_courses & set(students[s]) for s in a.meta["students"])
