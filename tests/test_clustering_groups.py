"""The clustering stage over every group: worker processes, their memory and their shutdown."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stage2.allocation import home_rooms
from stage2.clustering import groups as clustering_groups
from stage2.config import build_settings
from stage2.config.schema import ParallelConfig
from stage2.contract import load_institution
from stage2.sizing import plan_batches


def _worker_pids() -> set[int]:
    """Live loky worker processes started by this process, from /proc (the small resource
    tracker processes joblib keeps for the session are not workers)."""
    workers = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"LokyProcess" in cmdline:
            workers.add(int(stat.parent.name))
    return workers


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_parallel_groups_match_sequential_and_workers_are_shut_down(make_institution_dir, compose_config):
    input_dir = make_institution_dir(900, seed=4)
    cfg = compose_config([f"data.input_dir={input_dir}"])
    data = load_institution(input_dir)
    settings = build_settings(cfg, data)
    rooms = home_rooms(data.rooms, None)
    plan = plan_batches(data.active_students, settings, int(rooms["capacity"].max()))
    algorithm = {"name": "balanced"}

    sequential = clustering_groups.cluster_groups(data.active_students, data.active_enrollments, plan, settings,
                                                  algorithm, parallel=ParallelConfig(n_workers=1))
    # the stage parallelises from parallel.min_students students; lower it so 900 are enough
    parallel = clustering_groups.cluster_groups(data.active_students, data.active_enrollments, plan, settings,
                                                algorithm, parallel=ParallelConfig(n_workers=2, min_students=0))

    assert np.array_equal(parallel.batch_of_student, sequential.batch_of_student)
    assert np.array_equal(parallel.batch_group, sequential.batch_group)
    assert sequential.workers_peak_mb == 0.0
    # two worker processes, each at least an interpreter with numpy (> 20 MiB)
    assert parallel.workers_peak_mb > 40.0
    assert _worker_pids() == set()


def test_a_worker_imports_the_clustering_only():
    """A worker unpickling its task (the group fit, a batcher, a problem) and running it does
    not import pandas, pandera or the settings: its start-up is part of every parallel run."""
    from stage2.clustering import BatchingProblem, make_batcher
    from stage2.clustering.worker import fit_group_in_worker

    task = pickle.dumps((fit_group_in_worker, make_batcher({"name": "balanced"}),
                         BatchingProblem(np.repeat(np.eye(4), 10, axis=0), np.array([20, 20]))))
    code = ("import pickle, sys; function, *args = pickle.loads(sys.stdin.buffer.read()); "
            "labels, _ = function(*args); "
            "print(len(labels), sorted(m for m in ('pandas', 'pandera', 'sklearn', 'stage2.config.settings') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], input=task, capture_output=True, check=True).stdout
    assert out.decode().split(maxsplit=1) == ["40", "[]\n"]
