"""Clustering stage: exact sizes, determinism, exact assignment, planted structure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from stage2.clustering import ALGORITHMS, BatchingProblem, make_batcher, within_batch_sse
from stage2.clustering.assignment import assign_exact, flows_to_labels, squared_distances
from stage2.errors import ConfigurationError
from stage2.sizing import balanced_sizes


def planted(n_per_track: int, n_tracks: int, n_courses_per_track: int = 5, noise: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_per_track * n_tracks
    track = np.repeat(np.arange(n_tracks), n_per_track)
    features = (rng.random((n, n_tracks * n_courses_per_track)) < noise).astype(float)
    for t in range(n_tracks):
        features[track == t, t * n_courses_per_track:(t + 1) * n_courses_per_track] = 1.0
    perm = rng.permutation(n)
    return features[perm], track[perm]


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_returns_exact_sizes_and_is_deterministic(name):
    features, _ = planted(30, 4)
    sizes = balanced_sizes(len(features), 5)
    batcher = make_batcher({"name": name})
    labels = batcher.fit_predict(BatchingProblem(features, sizes, seed=3))
    assert np.array_equal(np.bincount(labels, minlength=5), sizes)
    again = make_batcher({"name": name}).fit_predict(BatchingProblem(features, sizes, seed=3))
    assert np.array_equal(labels, again)


@pytest.mark.parametrize("name", ["balanced", "kmeans"])
def test_planted_tracks_are_recovered(name):
    features, track = planted(40, 4, noise=0.0)
    labels = make_batcher({"name": name}).fit_predict(BatchingProblem(features, np.full(4, 40), seed=0))
    # each batch is exactly one track
    for b in range(4):
        assert len(set(track[labels == b])) == 1
    assert within_batch_sse(features, labels, 4) == pytest.approx(0.0)


def test_balanced_is_no_worse_than_kmeans_plus_repair_on_noisy_tracks():
    features, _ = planted(60, 5, noise=0.08, seed=1)
    sizes = balanced_sizes(len(features), 8)
    problem = BatchingProblem(features, sizes, seed=0)
    sse = {n: within_batch_sse(features, make_batcher({"name": n}).fit_predict(problem), 8) for n in ("balanced", "kmeans")}
    assert sse["balanced"] <= sse["kmeans"] * 1.001


def test_single_batch_and_identical_students():
    features = np.ones((17, 3))
    for name in ALGORITHMS:
        batcher = make_batcher({"name": name})
        assert np.all(batcher.fit_predict(BatchingProblem(features, np.array([17]))) == 0)
        labels = batcher.fit_predict(BatchingProblem(features, np.array([9, 8])))
        assert np.bincount(labels).tolist() == [9, 8]


def test_assign_exact_matches_brute_force_assignment():
    rng = np.random.default_rng(0)
    for trial in range(5):
        points = rng.random((7, 3))
        counts = rng.integers(1, 4, size=7)
        centroids = rng.random((3, 3))
        total = counts.sum()
        sizes = balanced_sizes(int(total), 3)
        flows = assign_exact(points, counts, centroids, sizes)
        assert np.array_equal(flows.sum(axis=1), counts) and np.array_equal(flows.sum(axis=0), sizes)
        d2 = squared_distances(points, centroids)
        # reference: Hungarian on expanded students x seats
        student_point = np.repeat(np.arange(7), counts)
        seat_batch = np.repeat(np.arange(3), sizes)
        rows, cols = linear_sum_assignment(d2[student_point][:, seat_batch])
        optimum = d2[student_point[rows], seat_batch[cols]].sum()
        assert (flows * d2).sum() == pytest.approx(optimum, abs=1e-3)


def test_candidate_restricted_assignment_stays_feasible():
    rng = np.random.default_rng(1)
    points = rng.random((3000, 4))
    counts = np.ones(3000, dtype=np.int64)
    centroids = rng.random((100, 4))
    sizes = balanced_sizes(3000, 100)
    flows = assign_exact(points, counts, centroids, sizes, n_candidates=3)
    assert np.array_equal(flows.sum(axis=0), sizes) and np.array_equal(flows.sum(axis=1), counts)
    labels = flows_to_labels(flows, np.arange(3000))
    assert np.array_equal(np.bincount(labels, minlength=100), sizes)


def test_unknown_algorithm_and_bad_parameter_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="unknown algorithm"):
        make_batcher({"name": "magic"})
    with pytest.raises(ConfigurationError, match="bad parameters"):
        make_batcher({"name": "balanced", "n_trees": 3})


def test_within_batch_sse_equals_course_sse_formula():
    rng = np.random.default_rng(2)
    features = (rng.random((50, 6)) < 0.4).astype(float)
    labels = rng.integers(0, 4, 50)
    formula = 0.0
    for b in range(4):
        members = features[labels == b]
        e = members.sum(axis=0)
        formula += float(np.sum(e * (1 - e / len(members))))
    assert within_batch_sse(features, labels, 4) == pytest.approx(formula)
