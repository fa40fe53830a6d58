"""stage2's experiment is a model-development experiment: MLflow 3's experiment tag
``mlflow.experimentKind`` is ``custom_model_development`` on an experiment stage2 creates (a
run through the public API, a sweep's parent), and is added to an existing experiment without
it (made by an older stage2); a kind someone already chose is left alone."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stage2.tracking.hydra_callback import MLflowSweepCallback
from stage2.tracking.mlflow_tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    PARENT_RUN_ENV,
    PARENT_URI_ENV,
    ensure_experiment,
)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CALLBACK_OVERRIDE = "++hydra.callbacks.mlflow_sweep._target_=stage2.tracking.hydra_callback.MLflowSweepCallback"
TIMEOUT_S = 600  # generous: CI runs two test workers on two cores


@pytest.fixture(scope="module")
def kind_uri(tmp_path_factory) -> str:
    """This module's own store, opened once from a temporary directory: a SQLite store's
    default artifact root is ``./mlruns`` of the directory it is first opened from (MLflow
    caches the store per process), so the runs' artifacts land there, not in the checkout."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("kind-store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        os.chdir(cwd)
    return uri


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def kind_of(uri: str, experiment: str) -> str | None:
    return client_for(uri).get_experiment_by_name(experiment).tags.get(EXPERIMENT_KIND_TAG)


def run_pipeline(uri: str, experiment: str, input_dir: Path, out: Path):
    from stage2 import load_config, process_student_batching

    cfg = load_config([f"data.input_dir={input_dir}", f"tracking.uri={uri}",
                       f"tracking.experiment_name={experiment}", "report.notebook=false"])
    return process_student_batching(cfg, output_dir=out)


def test_a_run_creates_a_model_development_experiment(clean_env, kind_uri, make_institution_dir, tmp_path):
    experiment = "kind-new"
    assert client_for(kind_uri).get_experiment_by_name(experiment) is None
    result = run_pipeline(kind_uri, experiment, make_institution_dir(120, seed=7), tmp_path / "out")
    assert kind_of(kind_uri, experiment) == EXPERIMENT_KIND == "custom_model_development"
    run = client_for(kind_uri).get_run(result.run_id)  # the run went there, with its measures
    assert run.info.experiment_id == client_for(kind_uri).get_experiment_by_name(experiment).experiment_id
    assert "academic_coherence" in run.data.metrics


def test_an_experiment_of_an_older_stage2_gets_the_kind_and_a_chosen_kind_stays(
        clean_env, kind_uri, make_institution_dir, tmp_path):
    client = client_for(kind_uri)
    client.create_experiment("kind-old", tags={"team": "timetabling"})  # as stage2 < this change did
    client.create_experiment("kind-chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    input_dir = make_institution_dir(120, seed=7)
    run_pipeline(kind_uri, "kind-old", input_dir, tmp_path / "old")
    run_pipeline(kind_uri, "kind-chosen", input_dir, tmp_path / "chosen")
    old = client.get_experiment_by_name("kind-old")
    assert old.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND and old.tags["team"] == "timetabling"
    assert kind_of(kind_uri, "kind-chosen") == "genai_development"


def test_ensure_experiment_is_idempotent_and_leaves_a_deleted_experiment_alone(clean_env, kind_uri):
    client = client_for(kind_uri)
    first = ensure_experiment(client, "kind-twice")
    assert ensure_experiment(client, "kind-twice") == first
    assert client.get_experiment(first).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND

    deleted = client.create_experiment("kind-deleted")
    client.delete_experiment(deleted)
    assert ensure_experiment(client, "kind-deleted") == deleted
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(deleted).tags


def sweep_config(overrides: list[str]):
    """What ``on_multirun_start`` gets (see test_parent_run.py)."""
    from hydra import compose, initialize_config_dir

    from stage2.config import register_configs, register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="stage2"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_the_sweep_callback_creates_or_tags_a_model_development_experiment(clean_env, kind_uri, tmp_path):
    client = client_for(kind_uri)
    client.create_experiment("kind-sweep-old")
    for experiment in ("kind-sweep-new", "kind-sweep-old"):
        cfg = sweep_config([f"tracking.uri={kind_uri}", f"tracking.experiment_name={experiment}",
                            f"hydra.sweep.dir={tmp_path / experiment}"])
        callback = MLflowSweepCallback()
        callback.on_multirun_start(cfg)
        try:
            assert kind_of(kind_uri, experiment) == EXPERIMENT_KIND
            assert client.get_run(callback.parent_run_id).info.experiment_id == callback.experiment_id
        finally:
            callback.on_multirun_end(cfg)
            atexit.unregister(callback._abort)


@pytest.mark.slow
def test_a_real_sweep_leaves_one_model_development_experiment(tmp_path, kind_uri, make_institution_dir):
    experiment = "kind-sweep-cli"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", PARENT_RUN_ENV, PARENT_URI_ENV)}
    command = [
        sys.executable, "-m", "stage2", "-m", "batch_size.target=30,40",
        f"data.input_dir={make_institution_dir(120, seed=7)}", f"tracking.uri={kind_uri}",
        f"tracking.experiment_name={experiment}", "report.notebook=false",
        f"hydra.sweep.dir={tmp_path / 'multirun'}", CALLBACK_OVERRIDE,
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    client = client_for(kind_uri)
    found = client.search_experiments(filter_string=f"name = '{experiment}'")
    assert len(found) == 1 and found[0].tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    runs = client.search_runs([found[0].experiment_id])
    assert len(runs) == 3  # the parent and its two children, all in it
