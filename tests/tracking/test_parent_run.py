"""Sweep bookkeeping in-process: a job's run becomes the child of ``$STAGE2_PARENT_RUN_ID``,
and the callback opens the parent, picks the best child and closes the parent."""

from __future__ import annotations

import os
import warnings

import pytest
from conftest import compose_with_hydra

from stage2.tracking.hydra_callback import MLflowSweepCallback, filter_overrides, swept_keys
from stage2.tracking.mlflow_tracking import PARENT_RUN_ENV, PARENT_URI_ENV, tracking_run


def job(uri: str | None, experiment: str, coherence: float) -> str:
    with tracking_run(True, uri=uri, experiment_name=experiment, run_name=None, params={"a": {"b": 1}},
                      tags={"k": "v"}) as run:
        run.log_metrics({"academic_coherence": coherence})
    return run.run_id


def test_job_run_is_a_child_of_the_exported_parent(clean_env, mlflow_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = client.create_experiment("parent-env")
    parent = client.create_run(experiment_id).info.run_id
    os.environ[PARENT_RUN_ENV] = parent
    os.environ[PARENT_URI_ENV] = mlflow_uri
    child = client.get_run(job(None, "parent-env", 0.5))  # uri unset: the parent's store
    assert child.data.tags["mlflow.parentRunId"] == parent and child.data.tags["k"] == "v"

    os.environ[PARENT_RUN_ENV] = "f" * 32
    with pytest.warns(UserWarning, match="no such run"):
        orphan = client.get_run(job(mlflow_uri, "parent-env", 0.5))
    assert "mlflow.parentRunId" not in orphan.data.tags and orphan.info.status == "FINISHED"

    os.environ[PARENT_RUN_ENV] = parent
    os.environ[PARENT_URI_ENV] = "sqlite:////nonexistent/other.db"
    with pytest.warns(UserWarning, match="recorded without a parent"):
        other = client.get_run(job(mlflow_uri, "parent-env", 0.5))
    assert "mlflow.parentRunId" not in other.data.tags


def test_without_a_parent_nothing_changes(clean_env, mlflow_uri):
    from mlflow.tracking import MlflowClient

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = MlflowClient(tracking_uri=mlflow_uri).get_run(job(mlflow_uri, "no-parent", 0.5))
    assert not [w for w in caught if PARENT_RUN_ENV in str(w.message)]
    assert "mlflow.parentRunId" not in run.data.tags and "hydra.overrides" not in run.data.tags


def sweep_config(overrides: list[str], sweep: tuple[str, ...] = ()):
    """The configuration ``on_multirun_start`` gets: composed with the hydra node, the sweep
    overrides (which the compose API refuses) added to ``hydra.overrides.task``."""
    from omegaconf import open_dict, read_write

    cfg = compose_with_hydra(overrides)
    with read_write(cfg), open_dict(cfg):
        cfg.hydra.overrides.task.extend(sweep)
    return cfg


@pytest.mark.parametrize("direction, best", [("maximize", 0.9), ("minimize", 0.2)])
def test_callback_records_the_best_child_and_ends_the_parent(clean_env, mlflow_uri, tmp_path, direction, best):
    from mlflow.tracking import MlflowClient

    experiment = f"callback-{direction}"
    # ++: tracking.sweep_direction is added when the schema lacks it, set when it has it
    cfg = sweep_config([f"tracking.uri={mlflow_uri}", f"tracking.experiment_name={experiment}",
                        f"++tracking.sweep_direction={direction}", f"hydra.sweep.dir={tmp_path}", "seed=1"],
                       sweep=("algorithm=kmeans,balanced",))
    callback = MLflowSweepCallback()
    callback.on_multirun_start(cfg)
    parent = callback.parent_run_id
    assert parent and os.environ[PARENT_RUN_ENV] == parent
    children = [job(None, experiment, value) for value in (0.5, 0.9, 0.2)]
    callback.on_multirun_end(cfg)
    assert PARENT_RUN_ENV not in os.environ

    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweep.swept_keys"] == "algorithm"
    assert run.data.tags["sweep.dir"] == str(tmp_path)
    assert "algorithm=kmeans,balanced" in run.data.tags["sweep.overrides"]
    assert run.data.tags["sweep.n_children"] == "3" and run.data.tags["sweep.direction"] == direction
    assert run.data.metrics["best_value"] == pytest.approx(best)
    assert run.data.tags["best_run_id"] == children[(0.5, 0.9, 0.2).index(best)]


def test_a_sweep_that_dies_leaves_its_parent_failed(clean_env, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = sweep_config([f"tracking.uri={mlflow_uri}", "tracking.experiment_name=callback-abort",
                        f"hydra.sweep.dir={tmp_path}"])
    callback = MLflowSweepCallback()
    callback.on_multirun_start(cfg)
    callback._abort()  # what the atexit hook does when on_multirun_end never came
    assert MlflowClient(tracking_uri=mlflow_uri).get_run(callback.parent_run_id).info.status == "FAILED"
    import atexit

    atexit.unregister(callback._abort)


def test_callback_is_inert_when_tracking_is_off(clean_env, tmp_path):
    cfg = sweep_config(["tracking=off", f"hydra.sweep.dir={tmp_path}"])
    callback = MLflowSweepCallback()
    callback.on_multirun_start(cfg)
    callback.on_multirun_end(cfg)
    assert callback.parent_run_id is None and PARENT_RUN_ENV not in os.environ


def test_swept_keys_and_their_overrides():
    keys = swept_keys(["algorithm=kmeans,balanced", "batch_size.target=range(30,50,10)", "seed=1",
                       "data.input_dir=/x"], {"weights.homogeneity": "interval(0.2, 0.9)"})
    assert keys == ["algorithm", "batch_size.target", "weights.homogeneity"]
    text = "weights.homogeneity=0.5 algorithm=kmeans data.input_dir=/x batch_size.target=40"
    assert filter_overrides(text, keys) == "algorithm=kmeans batch_size.target=40 weights.homogeneity=0.5"
    assert filter_overrides("seed=1", keys) == "seed=1"  # a swept key missing: everything
