"""The balanced batcher's effort fits the group's shape: no random swap where batches hold many
distinct feature rows (continuous data, large clusters), unchanged on course-set groups."""

from __future__ import annotations

import numpy as np
import pytest

import stage2.clustering.balanced as balanced_module
from stage2.clustering import BatchingProblem, make_batcher, within_batch_sse
from stage2.clustering.balanced import BalancedBatcher
from stage2.config.schema import BalancedConfig, BatchSizeConfig
from stage2.sizing import balanced_sizes

N_BATCHES = 20


def blobs(points_per_batch: int, seed: int = 0) -> np.ndarray:
    """2-D points, every one distinct, around ``N_BATCHES`` centres."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 100, size=(N_BATCHES, 2))
    return np.vstack([c + rng.normal(0, 3, size=(points_per_batch, 2)) for c in centres])


def course_sets(n_students: int, seed: int = 0) -> np.ndarray:
    """0/1 course rows drawn from a few course sets (many students share a row)."""
    rng = np.random.default_rng(seed)
    patterns = (rng.random((30, 12)) < 0.3).astype(np.float64)
    return patterns[rng.integers(0, patterns.shape[0], size=n_students)]


@pytest.fixture
def swap_calls(monkeypatch):
    """Counts the calls of random swap made by the balanced batcher."""
    calls = []
    original = balanced_module.random_swap

    def counting(*args, **kwargs):
        calls.append(kwargs["n_trials"])
        return original(*args, **kwargs)

    monkeypatch.setattr(balanced_module, "random_swap", counting)
    return calls


def test_swap_trials_stop_above_the_rows_per_batch_cap():
    batcher = BalancedBatcher(swap_max_rows_per_batch=10.0)
    assert batcher._swap_trials(N_BATCHES, 1.0, n_rows=10 * N_BATCHES) > 0
    assert batcher._swap_trials(N_BATCHES, 1.0, n_rows=10 * N_BATCHES + 1) == 0
    assert BalancedBatcher(swap_max_rows_per_batch=np.inf)._swap_trials(N_BATCHES, 1.0, n_rows=10**9) > 0


def test_default_cap_never_binds_on_default_batch_sizes():
    """A batch holds at most as many distinct rows as students: with the default size bounds,
    course-set groups keep their random swap."""
    assert BalancedConfig().swap_max_rows_per_batch >= BatchSizeConfig().max


def test_continuous_large_clusters_get_restarts_only(swap_calls):
    X = blobs(points_per_batch=80)
    sizes = balanced_sizes(X.shape[0], N_BATCHES)
    batcher = make_batcher({"name": "balanced"})
    labels = batcher.fit_predict(BatchingProblem(X, sizes, seed=0))
    assert swap_calls == []
    assert np.array_equal(np.sort(np.bincount(labels, minlength=N_BATCHES)), np.sort(sizes))
    again = make_batcher({"name": "balanced"}).fit_predict(BatchingProblem(X, sizes, seed=0))
    assert np.array_equal(labels, again)
    # the restarts recover the planted clusters: no worse than the centres' own partition
    planted = np.repeat(np.arange(N_BATCHES), 80)
    assert within_batch_sse(X, labels, N_BATCHES) <= within_batch_sse(X, planted, N_BATCHES) + 1e-6


def test_raising_the_cap_brings_the_trials_back(swap_calls):
    X = blobs(points_per_batch=80)
    sizes = balanced_sizes(X.shape[0], N_BATCHES)
    params = {"name": "balanced", "swap_max_rows_per_batch": 1e9, "swap_min_trials": 6, "swap_max_trials": 6,
              "tight_effort": 1.0, "n_init": 1}
    make_batcher(params).fit_predict(BatchingProblem(X, sizes, seed=0))
    assert sum(swap_calls) == 6


def test_course_set_groups_keep_their_random_swap(swap_calls):
    X = course_sets(N_BATCHES * 40)
    sizes = balanced_sizes(X.shape[0], N_BATCHES)
    make_batcher({"name": "balanced", "tight_effort": 1.0}).fit_predict(BatchingProblem(X, sizes, seed=0))
    assert sum(swap_calls) == BalancedConfig().swap_min_trials
