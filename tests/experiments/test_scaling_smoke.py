"""Smoke test of the scaling benchmark's harness (experiments/scaling) on a tiny institution."""

from __future__ import annotations

import sys
from pathlib import Path

import k_means_constrained  # noqa: F401  (the test extra installs it: a missing peer fails, not skips)
import numpy as np
import pandas as pd
import pytest

SCALING = Path(__file__).resolve().parents[2] / "experiments" / "scaling"
sys.path.insert(0, str(SCALING))

import kmc_process  # noqa: E402
import run  # noqa: E402
import runner  # noqa: E402

N_STUDENTS = 300


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scaling")


@pytest.fixture(scope="module")
def dataset(cache) -> Path:
    return run.synth_dataset(cache, N_STUDENTS, "one")


def test_measure_reports_wall_time_and_peak_memory(cache):
    m = run.measure([sys.executable, "-c", "x = bytearray(50 * 2**20)"], cwd=cache)
    assert m.ok and m.wall_s > 0 and m.peak_mb >= 50
    slow = run.measure([sys.executable, "-c", "import time; time.sleep(30)"], cwd=cache, timeout=0.5)
    assert slow.timed_out and not slow.ok


METHODS = ["stage2 balanced exact", "KMC n_init=10 equal"]


@pytest.fixture(scope="module")
def section(cache, dataset) -> tuple[run.Context, list[dict]]:
    ctx = run.Context(cache=cache, timeout_s=120, repeats=1)
    return ctx, run.section_clustering(ctx, dataset, "1", "tiny", METHODS)


def test_clustering_section_rows_respect_size_bounds(section):
    ctx, rows = section
    assert [r["method"] for r in rows] == METHODS and ctx.rows == rows
    lo, _, hi = (int(v) for v in rows[0]["bounds"].split("/"))
    for row in rows:
        assert row["status"] == "ok", row
        assert row["sizes_admissible"]
        assert lo <= row["batch_size_min"] <= row["batch_size_max"] <= hi
        assert row["fit_s"] > 0 and row["peak_mb"] > 0 and row["course_sse"] > 0
        assert 0 <= row["academic_coherence"] <= 1 and row["size_balance"] <= 1
    for row in rows:  # equal sizes: floor(n/k) or ceil(n/k)
        assert row["batch_size_max"] - row["batch_size_min"] <= 1
    exact = rows[0]
    assert exact["reference"] == "KMC n_init=10 equal"
    assert exact["sse_ratio_vs_kmc10"] == pytest.approx(exact["course_sse"] / rows[1]["course_sse"])
    assert "| stage2 balanced exact |" in run.clustering_table(rows)


def test_kmc_process_membership_and_evaluation(cache, dataset, section):
    X, planned, meta = runner.load_prepared(cache / "prepared" / f"{dataset.name}.npz")
    k = meta["k"]
    lo, _, hi = meta["bounds"]
    out = cache / "membership.csv"
    assert kmc_process.main([str(dataset), "--out", str(out), "--k", str(k), "--size-min", str(lo),
                             "--size-max", str(hi), "--n-init", "1"]) == 0
    membership = pd.read_csv(out, dtype={"student_id": str})
    assert len(membership) == meta["n_students"] == X.shape[0] == planned.sum()
    sizes = membership["batch"].value_counts()
    assert len(sizes) == k and sizes.min() >= lo and sizes.max() <= hi
    quality = run.evaluate_kmc_membership(dataset, out)
    assert quality["n_batches"] == k and quality["course_sse"] > 0
    # the CSV evaluation agrees with the matrix one (same students, same order as stage2's group)
    labels = membership["batch"].to_numpy(np.int64)
    assert quality["course_sse"] == pytest.approx(runner.course_sse(X, labels, k), rel=1e-9)
    assert quality["academic_coherence"] == pytest.approx(runner.academic_coherence(X, labels, k), rel=1e-9)


def test_fit_overrides_reach_the_method(cache, dataset, section):
    npz = cache / "prepared" / f"{dataset.name}.npz"
    assert runner.parse_overrides(["n_candidates=64", "random_state=3", "name=x"]) == {
        "n_candidates": 64, "random_state": 3, "name": "x"}
    with pytest.raises(SystemExit):
        runner.parse_overrides(["n_candidates"])
    plain = runner.fit(npz, "stage2 balanced pure-SSE")
    no_polish = runner.fit(npz, "stage2 balanced pure-SSE", {"local_search": False, "swap_trials": 0, "n_init": 1})
    assert "overrides" not in plain and no_polish["overrides"]["n_init"] == 1
    assert no_polish["course_sse"] > plain["course_sse"]  # the overrides took effect: less search, worse result
    seeds = {runner.fit(npz, "KMC n_init=1 [min,max]", {"random_state": s})["course_sse"] for s in range(3)}
    assert len(seeds) > 1  # and KMC's seed is really passed on
