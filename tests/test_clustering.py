"""Clustering stage: exact sizes, determinism, exact assignment, planted structure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from stage2.clustering import ALGORITHMS, BatchingProblem, make_batcher, within_batch_sse
from stage2.clustering.assignment import (
    COST_SCALE,
    DENSE_MAX_BATCHES,
    SizeModel,
    as_size_model,
    assign_exact,
    assign_with_prices,
    flow_cost,
    flows_to_labels,
    labels_to_flows,
    lloyd_rounds,
    squared_distances,
)
from stage2.clustering.balanced import initial_centroids
from stage2.clustering.base import collapse, objective
from stage2.clustering.local_search import chunk_moves, chunk_swaps, local_search
from stage2.clustering.random_swap import random_swap
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
    sse = {n: within_batch_sse(features, make_batcher({"name": n}).fit_predict(problem), 8)
           for n in ("balanced", "kmeans")}
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
    for _ in range(5):
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


def test_candidate_restricted_assignment_is_still_the_exact_optimum():
    rng = np.random.default_rng(1)
    n_batches = DENSE_MAX_BATCHES + 22  # above it the restricted graph is used
    n_points = 20 * n_batches
    points = rng.random((n_points, 4))
    counts = np.ones(n_points, dtype=np.int64)
    centroids = rng.random((n_batches, 4))
    d2 = np.rint(squared_distances(points, centroids) * COST_SCALE)
    # tight sizes: most students cannot get one of their 3 nearest centroids, so the restricted
    # graph alone is far from optimal; pricing in the missing arcs must reach the full optimum
    equal = balanced_sizes(n_points, n_batches)
    for sizes in (equal, SizeModel(equal, 15, 25, 0.0)):
        flows, prices = assign_with_prices(points, counts, centroids, sizes, n_candidates=3)
        full = assign_exact(points, counts, centroids, sizes, n_candidates=None)
        assert prices is not None and prices.shape == (n_batches,)
        assert np.array_equal(flows.sum(axis=1), counts)
        assert as_size_model(sizes).admits(flows.sum(axis=0))
        assert (flows * d2).sum() == (full * d2).sum()
        # warm prices pick candidates good enough that the first restricted graph is near-right
        warm, _ = assign_with_prices(points, counts, centroids, sizes, n_candidates=3, batch_prices=prices)
        assert (warm * d2).sum() == (full * d2).sum()


def test_unknown_algorithm_and_bad_parameter_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="unknown algorithm"):
        make_batcher({"name": "magic"})
    with pytest.raises(ConfigurationError, match="bad parameters"):
        make_batcher({"name": "balanced", "n_trees": 3})
    with pytest.raises(ConfigurationError, match="n_candidates must be at least 1"):
        make_batcher({"name": "balanced", "n_candidates": 0})
    with pytest.raises(ConfigurationError, match="tight_effort must be positive"):
        make_batcher({"name": "balanced", "tight_effort": 0})


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


# ------------------------------------------------------------------ engine parts of `balanced`


def _flexible_problem(seed: int = 3, n: int = 240, k: int = 8, lo: int = 20, hi: int = 40):
    rng = np.random.default_rng(seed)
    # few distinct course sets, repeated: the structure of real enrolment data
    prototypes = (rng.random((12, 10)) < 0.35).astype(float)
    features = prototypes[rng.integers(0, 12, n)]
    return features, SizeModel(balanced_sizes(n, k), lo, hi, 0.0)


def test_lloyd_rounds_never_raise_the_objective_and_keep_sizes_admissible():
    features, sizes = _flexible_problem()
    data = collapse(features)
    centroids = initial_centroids(data.points, data.counts, sizes.n_batches, seed=0)
    first = assign_exact(data.points, data.counts, centroids, sizes)
    flows, cost = lloyd_rounds(data.points, data.counts, centroids, sizes, max_iter=30, n_candidates=None, tol=0.0)
    assert cost <= flow_cost(data.points, first, sizes) + 1e-9
    assert cost == pytest.approx(objective(features, flows_to_labels(flows, data.inverse), sizes))
    assert sizes.admits(flows.sum(axis=0))
    assert np.array_equal(flows.sum(axis=1), data.counts)


def test_labels_to_flows_inverts_flows_to_labels():
    features, sizes = _flexible_problem()
    data = collapse(features)
    flows = assign_exact(data.points, data.counts,
                         initial_centroids(data.points, data.counts, sizes.n_batches, 1), sizes)
    labels = flows_to_labels(flows, data.inverse)
    assert np.array_equal(labels_to_flows(labels, data.inverse, data.points.shape[0], sizes.n_batches), flows)


@pytest.mark.parametrize("exact", [False, True])
def test_random_swap_keeps_sizes_and_never_raises_the_objective(exact):
    features, sizes = _flexible_problem(n=400, k=20, lo=12, hi=30)
    if exact:
        sizes = SizeModel.exact(sizes.planned)
    data = collapse(features)
    flows, _ = lloyd_rounds(data.points, data.counts, initial_centroids(data.points, data.counts, sizes.n_batches, 0),
                            sizes, max_iter=30, n_candidates=None, tol=1e-6)
    labels = flows_to_labels(flows, data.inverse)
    before = objective(features, labels, sizes)
    swapped = random_swap(data, labels, sizes, n_trials=200, n_neighbors=3, n_iter=3,
                          tol=1e-6, rng=np.random.default_rng(0))
    assert sizes.admits(np.bincount(swapped, minlength=sizes.n_batches))
    assert objective(features, swapped, sizes) <= before + 1e-9
    again = random_swap(data, labels, sizes, n_trials=200, n_neighbors=3, n_iter=3,
                        tol=1e-6, rng=np.random.default_rng(0))
    assert np.array_equal(swapped, again)


def test_random_swap_separates_two_mixed_batches():
    # batches 2 and 3 each hold half of track 2 and half of track 3
    features, track = planted(20, 4, noise=0.0)
    sizes = SizeModel(np.full(4, 20), 10, 30, 0.0)
    data = collapse(features)
    stuck = np.where(track == 3, 2, track)
    stuck[np.flatnonzero(track == 2)[:10]] = 3
    stuck[np.flatnonzero(track == 3)[:10]] = 3
    assert sizes.admits(np.bincount(stuck, minlength=4))
    improved = random_swap(data, stuck, sizes, n_trials=40, n_neighbors=3, n_iter=3,
                           tol=1e-6, rng=np.random.default_rng(0))
    assert objective(features, improved, sizes) < objective(features, stuck, sizes) - 1.0


def test_chunk_moves_move_identical_students_together():
    # a batch holds 6 copies of course set A beside its 10 B students; the other batch is all
    # A: one student moved alone raises the cost, all 6 moved together lower it
    a, b = np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 1.0])
    features = np.vstack([np.tile(a, (6, 1)), np.tile(b, (10, 1)), np.tile(a, (14, 1))])
    labels = np.repeat([0, 0, 1], [6, 10, 14])
    sizes = SizeModel(np.array([15, 15]), 10, 20, 0.0)
    data = collapse(features)
    flows = labels_to_flows(labels, data.inverse, data.points.shape[0], 2)
    moved = chunk_moves(data.points, flows, sizes, n_neighbors=1, max_passes=5)
    new_labels = flows_to_labels(moved, data.inverse)
    assert sizes.admits(moved.sum(axis=0))
    assert objective(features, new_labels, sizes) < objective(features, labels, sizes)
    assert within_batch_sse(features, new_labels, 2) == pytest.approx(0.0)


def test_chunk_moves_respect_bounds_and_leave_exact_sizes_alone():
    features, sizes = _flexible_problem(n=240, k=8, lo=28, hi=32)
    data = collapse(features)
    flows, _ = lloyd_rounds(data.points, data.counts, initial_centroids(data.points, data.counts, 8, 0), sizes,
                            max_iter=30, n_candidates=None, tol=1e-6)
    moved = chunk_moves(data.points, flows, sizes)
    assert sizes.admits(moved.sum(axis=0))
    assert flow_cost(data.points, moved, sizes) <= flow_cost(data.points, flows, sizes) + 1e-9
    exact = SizeModel.exact(sizes.planned)
    assert chunk_moves(data.points, flows, exact) is flows


def test_chunk_swaps_exchange_groups_that_no_move_or_single_swap_improves():
    # batch 0: 4 of A beside 4 of C; batch 1: 4 of B beside 4 of D, with A close to B and C
    # close to D. Exchanging all 4 C for all 4 B pairs the close sets; moving either group
    # alone breaks the size bounds, and swapping one C for one B raises the cost
    a, b = np.array([1.0, 1, 0, 0, 0]), np.array([1.0, 1, 0, 0, 1])
    c, d = np.array([0.0, 0, 1, 1, 0]), np.array([0.0, 0, 1, 1, 1])
    features = np.vstack([np.tile(a, (4, 1)), np.tile(c, (4, 1)), np.tile(b, (4, 1)), np.tile(d, (4, 1))])
    labels = np.repeat([0, 0, 1, 1], 4)
    sizes = SizeModel.exact(np.array([8, 8]))
    data = collapse(features)
    flows = labels_to_flows(labels, data.inverse, data.points.shape[0], 2)
    assert objective(features, local_search(features, labels, sizes, n_neighbors=1), sizes) == pytest.approx(
        objective(features, labels, sizes))
    swapped = flows_to_labels(chunk_swaps(data.points, flows, sizes, n_neighbors=1), data.inverse)
    assert np.array_equal(np.bincount(swapped, minlength=2), [8, 8])
    assert within_batch_sse(features, swapped, 2) == pytest.approx(2 * 8 * (0.5 * 0.5))  # one mixed course each


@pytest.mark.parametrize("exact", [False, True])
def test_chunk_swaps_end_where_no_exchange_improves(exact):
    """After chunk swaps over every batch pair, brute force finds no improving exchange of
    m_p students of one point for m_q of another (other than one for one, which local_search
    tries); sizes stay admissible (unchanged when
    exact), every student stays placed, the cost never rises."""
    rng = np.random.default_rng(3)
    prototypes = (rng.random((6, 5)) < 0.5).astype(float)
    features = prototypes[rng.integers(0, 6, 60)]
    k = 5
    sizes = SizeModel.exact(balanced_sizes(60, k)) if exact else SizeModel(balanced_sizes(60, k), 8, 16, 0.05)
    data = collapse(features)
    start = np.repeat(np.arange(k), 12)
    flows = labels_to_flows(rng.permutation(start), data.inverse, data.points.shape[0], k)
    result = chunk_swaps(data.points, flows, sizes, n_neighbors=k - 1, max_passes=200, tol=0.0)
    assert np.array_equal(result.sum(axis=1), flows.sum(axis=1))
    assert sizes.admits(result.sum(axis=0))
    if exact:
        assert np.array_equal(result.sum(axis=0), flows.sum(axis=0))
    best = flow_cost(data.points, result, sizes)
    assert best <= flow_cost(data.points, flows, sizes) + 1e-9
    for a, b in itertools.permutations(range(k), 2):
        for p, q in itertools.product(np.flatnonzero(result[:, a]), np.flatnonzero(result[:, b])):
            if p == q:
                continue
            if result[p, a] == 1 and result[q, b] == 1:
                continue  # one student for one: local_search's swaps
            for mp, mq in itertools.product(range(1, result[p, a] + 1), range(1, result[q, b] + 1)):
                if exact and mp != mq:
                    continue
                trial = result.copy()
                trial[p, a] -= mp
                trial[p, b] += mp
                trial[q, b] -= mq
                trial[q, a] += mq
                if sizes.admits(trial.sum(axis=0)):
                    assert flow_cost(data.points, trial, sizes) >= best - 1e-9, (a, b, p, q, mp, mq)


def test_random_swap_lowers_the_cost_of_a_group_with_many_batches():
    # 30 batches (random swap runs: a trial re-solves fewer batches than the group has); noisy
    # course sets around 40 prototypes, so that restarts and local search alone stop short
    rng = np.random.default_rng(1)
    prototypes = (rng.random((40, 24)) < 0.3).astype(float)
    features = np.abs(prototypes[rng.integers(0, 40, 900)] - (rng.random((900, 24)) < 0.05))
    sizes = SizeModel(balanced_sizes(900, 30), 15, 45, 0.0)
    with_swaps = make_batcher({"name": "balanced"}).fit_predict(BatchingProblem(features, sizes, seed=0))
    without = make_batcher({"name": "balanced", "swap_trials": 0}).fit_predict(BatchingProblem(features, sizes, seed=0))
    assert sizes.admits(np.bincount(with_swaps, minlength=30))
    # the same restarts precede the swaps, so the swaps can only lower the cost; here they must
    assert objective(features, with_swaps, sizes) < objective(features, without, sizes) - 1.0


def test_tight_sizes_get_more_restarts_and_trials():
    planned = np.full(50, 40)
    assert SizeModel.exact(planned).is_tight and SizeModel(planned, 40, 41, 0.0).is_tight
    assert not SizeModel(planned, 15, 60, 0.0).is_tight
    batcher = make_batcher({"name": "balanced", "n_init": 6, "restart_budget": 5000, "swap_trials": 4,
                            "swap_min_trials": 150, "swap_max_trials": 1000, "tight_effort": 4})
    # 20,000 students: one restart and 200 trials with free sizes; 4 and 800 with tight ones
    assert batcher._restarts(20_000) == 1 and batcher._restarts(20_000, 4.0) == 4
    assert batcher._swap_trials(50) == 200 and batcher._swap_trials(50, 4.0) == 800
    assert batcher._swap_trials(500) == 1000 and batcher._swap_trials(500, 4.0) == 4000
    # small groups get at least swap_min_trials (trials are local there too); the smallest none
    assert batcher._swap_trials(20) == 150 and batcher._swap_trials(20, 4.0) == 600
    assert batcher._swap_trials(14) == 0
    assert batcher._restarts(500, 4.0) == 6  # the budget already allows n_init
    assert batcher._restarts(500, 12.0) == 12 and batcher._restarts(20_000, 12.0) == 12  # tight: above n_init

