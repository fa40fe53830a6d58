"""A sweep optimises the configured objective: the value each job returns to the sweeper and
the parent run's best child both follow ``tracking.sweep_objective`` and
``tracking.sweep_direction`` (here ``course_sse``, minimised), not a fixed metric."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

TIMEOUT_S = 600  # generous: CI runs two test workers on two cores


def test_sweep_returns_and_ranks_by_the_configured_objective(tmp_path, make_institution_dir, mlflow_uri):
    from mlflow.tracking import MlflowClient

    experiment = "sweep-objective-course-sse"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "STAGE2_PARENT_RUN_ID", "STAGE2_PARENT_TRACKING_URI")}
    # three batch sizes: children whose course_sse differs
    command = [
        sys.executable, "-m", "stage2", "-m", "batch_size.target=20,30,40",
        f"data.input_dir={make_institution_dir(300, seed=4)}", f"tracking.uri={mlflow_uri}",
        f"tracking.experiment_name={experiment}", "tracking.sweep_objective=course_sse",
        "tracking.sweep_direction=minimize", "report.notebook=false", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3
    for child in children:  # what each job handed the sweeper is its course_sse
        assert child.data.metrics["sweep.return_value"] == pytest.approx(child.data.metrics["course_sse"])
    sse = {c.info.run_id: c.data.metrics["course_sse"] for c in children}
    assert parent.data.tags["sweep.objective"] == "course_sse"
    assert parent.data.tags["sweep.direction"] == "minimize"
    assert sse[parent.data.tags["best_run_id"]] == pytest.approx(min(sse.values()))  # ties: any of them
    assert parent.data.metrics["best_value"] == pytest.approx(min(sse.values()))
    # the direction mattered: maximising would have picked another child
    assert max(sse.values()) > min(sse.values())
