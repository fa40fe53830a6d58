"""The silhouette of quality.md: stage2's computation against scikit-learn's, and what a run
imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import silhouette_score

import stage2.metrics as metrics_module
from stage2.metrics import binary_silhouette


def sklearn_silhouette(matrix, labels, sample_size, seed):
    try:
        return float(silhouette_score(matrix, labels, metric="euclidean", sample_size=sample_size, random_state=seed))
    except ValueError:  # fewer than 2 or more than n - 1 labels
        return None


@pytest.mark.parametrize("chunk_mb, dense_courses", [(64, 64), (1e-4, 64), (64, 0), (1e-4, 0)])
def test_binary_silhouette_equals_scikit_learn(monkeypatch, chunk_mb, dense_courses):
    """Same value (float64 rounding) and same sample as silhouette_score, on random 0/1 rows
    with many duplicates, single-member labels and samples of any size; whether the rows are
    dense or sparse and however the work is chunked."""
    monkeypatch.setattr(metrics_module, "SILHOUETTE_WORKING_MEMORY_MB", chunk_mb)
    monkeypatch.setattr(metrics_module, "SILHOUETTE_DENSE_MAX_COURSES", dense_courses)
    rng = np.random.default_rng(7)
    compared = 0
    for trial in range(60):
        n_rows, n_courses = int(rng.integers(3, 200)), int(rng.integers(1, 12))
        matrix = (rng.random((n_rows, n_courses)) < rng.random()).astype(np.float64)
        labels = rng.integers(0, int(rng.integers(1, n_rows + 1)), n_rows) * 7 + 3
        sample_size = None if trial % 2 else int(rng.integers(2, n_rows + 3))
        expected = sklearn_silhouette(matrix, labels, sample_size, trial)
        got = binary_silhouette(sp.csr_matrix(matrix), labels, sample_size=sample_size, seed=trial)
        if expected is None:
            assert got is None, (trial, got)
        else:
            assert got == pytest.approx(expected, abs=1e-12), trial
            compared += 1
    assert compared > 30


def test_binary_silhouette_of_well_separated_batches_is_near_one():
    rows = np.repeat(np.eye(4), 25, axis=0)  # four course sets, one batch each
    rows[::10, :] = np.roll(rows[::10, :], 1, axis=1)  # a few students in the wrong batch
    labels = np.repeat(np.arange(4), 25)
    got = binary_silhouette(sp.csr_matrix(rows), labels)
    assert got == pytest.approx(sklearn_silhouette(rows, labels, None, 0), abs=1e-12)
    assert 0.5 < got < 1.0


def test_a_default_run_does_not_import_scikit_learn():
    """scikit-learn (via scipy.stats) costs ~1 s per process; only its algorithms need it."""
    code = ("import sys, stage2.__main__, stage2.metrics, stage2.clustering; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
