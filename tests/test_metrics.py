"""The silhouette of quality.md: stage2's computation against scikit-learn's, and what a run
imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
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


def reference_majority_share(values: pd.Series, batch: np.ndarray) -> pd.Series:
    """The pandas group-by this module's integer-coded version must equal."""
    is_list = values.map(lambda v: isinstance(v, (tuple, list))).any()
    frame = pd.DataFrame({"batch": batch, "value": values.to_numpy()})
    if is_list:
        members = frame.loc[frame["value"].map(lambda v: isinstance(v, (tuple, list)) and len(v) > 0)]
        totals = members.groupby("batch").size()
        exploded = members.reset_index(names="member").explode("value").drop_duplicates(["member", "value"])
        counts = exploded.groupby(["batch", "value"]).size()
    else:
        members = frame.dropna(subset=["value"])
        members = members.assign(value=members["value"].astype(str))
        totals = members.groupby("batch").size()
        counts = members.groupby(["batch", "value"]).size()
    if counts.empty:
        return pd.Series(dtype=float)
    return counts.groupby(level="batch").max() / totals


@pytest.mark.parametrize("kind", ["text", "string", "integer", "float", "mixed", "list"])
def test_majority_share_equals_the_group_by(kind):
    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(0, 60))
        batch = np.sort(rng.integers(0, 8, n))
        pick = rng.integers(0, 4, n)
        missing = rng.random(n) < 0.2
        if kind in ("text", "string"):
            text = np.array(["a", "B", "b", "ä"], dtype=object)[pick]
            values = pd.Series(text, dtype="str" if kind == "text" else "string")
        elif kind == "integer":
            values = pd.Series(pd.array(pick, dtype="Int64"))
        elif kind == "float":
            values = pd.Series(np.array([0.5, 1.0, -0.0, 0.0])[pick])
        elif kind == "mixed":
            values = pd.Series(np.array([1, "1", 1.0, "x"], dtype=object)[pick], dtype=object)
        else:
            lists = [("en",), ("en", "hi"), ("hi", "hi"), ()]
            values = pd.Series([lists[p] for p in pick], dtype=object)
        values = values.mask(missing) if n else values
        got = metrics_module._majority_share(values, batch)
        expected = reference_majority_share(values, batch)
        assert got.index.tolist() == expected.index.tolist(), (kind, trial)
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def test_broken_rules_per_batch_are_sorted_distinct_and_joined():
    batch = np.array([3, 0, 3, 3, 0])
    rule = pd.Series(["same_year", "z_rule", "a_rule", "same_year", "z_rule"])
    assert metrics_module._broken_rules(batch, rule, 5).tolist() == ["z_rule", "", "", "a_rule;same_year", ""]
    assert metrics_module._broken_rules(np.array([], dtype=np.int64), pd.Series([], dtype=object), 2).tolist() == [
        "", ""]
