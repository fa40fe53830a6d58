"""``python -m stage2 -m`` with Hydra's submitit launcher: every job runs in a process submitit
starts from a pickle (``submitit_local``: a subprocess; ``submitit_slurm``: a SLURM array task
on a single-node cluster started by ``tests/cluster/start_slurm.sh``), and still records its
MLflow run as a child of the parent run the launching process opened."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_outputs_valid, compose_with_hydra, finished_sweep_runs, subprocess_env

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPTS = REPO_ROOT / "tests" / "cluster"
#: the programs tests/cluster/start_slurm.sh runs (Debian: slurmctld slurmd slurm-client munge)
SLURM_PROGRAMS = ("sbatch", "sinfo", "slurmctld", "slurmd", "munged")
#: each sweep takes 15-30 s here (two jobs of 300 students; submitit polls every second)
TIMEOUT_S = 300  # generous: CI runs two test workers on two cores
#: seconds for the single-node cluster to start, then to stop
CLUSTER_START_TIMEOUT_S = 60
CLUSTER_STOP_TIMEOUT_S = 30
#: the partition tests/cluster/start_slurm.sh defines
PARTITION = "debug"
SWEPT = ("algorithm=kmeans", "algorithm=balanced")
N_STUDENTS = 300
LAUNCHER_MODULE = "hydra_plugins.hydra_submitit_launcher.submitit_launcher"


def run_sweep(tmp_path: Path, uri: str, experiment: str, input_dir: Path, *launcher: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "stage2", "-m", "algorithm=kmeans,balanced", f"data.input_dir={input_dir}",
        f"tracking.uri={uri}", f"tracking.experiment_name={experiment}", "report.notebook=false",
        f"hydra.sweep.dir={tmp_path / 'multirun'}", *launcher,
    ]
    try:
        return subprocess.run(command, cwd=tmp_path, env=env or subprocess_env(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the sweep did not end within {TIMEOUT_S} s; the jobs' logs:\n{job_logs(tmp_path)}\n"
                    f"{(exc.stderr or b'')[-3000:]!r}")


def job_logs(tmp_path: Path) -> str:
    """The tail of every submitit job's stderr (where a job that died says why)."""
    logs = sorted((tmp_path / "multirun" / ".submitit").glob("*/*_log.err"))
    return "\n".join(f"--- {path}\n{path.read_text()[-2000:]}" for path in logs) or "(no job log)"


def check_sweep(tmp_path: Path, uri: str, experiment: str, input_dir: Path, launcher_class: str) -> None:
    """One FINISHED parent tagged with the launcher, one FINISHED child per job linked to it by
    ``mlflow.parentRunId``, each child scored in its job's process; each job's outputs valid."""
    parent, children = finished_sweep_runs(uri, experiment, len(SWEPT))
    assert parent.data.tags["sweep.launcher"] == f"{LAUNCHER_MODULE}.{launcher_class}"
    assert parent.data.tags["sweep.n_children"] == str(len(SWEPT))
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert {c.data.tags["hydra.job.num"] for c in children} == {str(n) for n in range(len(SWEPT))}
    assert {f"algorithm={c.data.params['algorithm.name']}" for c in children} == set(SWEPT)
    for child in children:
        # logged by the callback's on_job_end, which runs in the job's (submitit's) process
        assert child.data.metrics["sweep.return_value"] == pytest.approx(child.data.metrics["academic_coherence"])

    # the jobs ran in processes submitit started: each left its pickled result
    assert len(list((tmp_path / "multirun" / ".submitit").glob("*/*_result.pkl"))) == len(SWEPT)
    for job in range(len(SWEPT)):
        assert_outputs_valid(tmp_path / "multirun" / str(job), input_dir)


def test_pickled_callback_carries_the_parent_into_the_job(mlflow_uri, clean_env):
    """submitit pickles the launcher with Hydra's callbacks: the unpickled callback exports the
    parent run in the job's process even when that process did not inherit the environment."""
    import cloudpickle

    from stage2.tracking.hydra_callback import MLflowSweepCallback
    from stage2.tracking.mlflow_tracking import PARENT_RUN_ENV, PARENT_URI_ENV

    config = compose_with_hydra([f"tracking.uri={mlflow_uri}", "tracking.experiment_name=submitit-pickle"])
    callback = MLflowSweepCallback()
    callback.on_multirun_start(config)
    try:
        assert callback.parent_run_id is not None
        in_job = cloudpickle.loads(cloudpickle.dumps(callback))
        for name in (PARENT_RUN_ENV, PARENT_URI_ENV):
            os.environ.pop(name)
        in_job.on_job_start(config)
        assert os.environ[PARENT_RUN_ENV] == callback.parent_run_id
        assert os.environ[PARENT_URI_ENV] == mlflow_uri
    finally:
        callback.on_multirun_end(config)


@pytest.mark.slow
def test_submitit_local_sweep_one_child_per_job(tmp_path, mlflow_uri, make_institution_dir):
    input_dir = make_institution_dir(N_STUDENTS, seed=2)
    proc = run_sweep(tmp_path, mlflow_uri, "sweep-submitit-local", input_dir, "hydra/launcher=submitit_local",
                     # the jobs end in seconds: a hung one fails the test long before the sweep's timeout
                     "hydra.launcher.timeout_min=5")
    assert proc.returncode == 0, proc.stderr[-3000:] + job_logs(tmp_path)
    assert "Callback MLflowSweepCallback" not in proc.stderr, proc.stderr[-3000:]
    check_sweep(tmp_path, mlflow_uri, "sweep-submitit-local", input_dir, "LocalLauncher")


@pytest.fixture
def slurm_cluster() -> Iterator[dict[str, str]]:
    """A single-node SLURM cluster of this machine, for one test: the environment for its
    clients (``SLURM_CONF``)."""
    missing = [name for name in SLURM_PROGRAMS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): "
                    "apt-get install --no-install-recommends slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root (CI runs as root)")
    # a short path: munged's socket lives in it (a Unix socket's path has at most 107 bytes)
    cluster_dir = Path(tempfile.mkdtemp(prefix="stage2-slurm-", dir="/tmp"))
    try:
        started = subprocess.run([str(CLUSTER_SCRIPTS / "start_slurm.sh"), str(cluster_dir)], capture_output=True,
                                 text=True, timeout=CLUSTER_START_TIMEOUT_S)
        assert started.returncode == 0, f"the SLURM cluster did not start:\n{started.stdout}\n{started.stderr}"
        yield {"SLURM_CONF": str(cluster_dir / "slurm.conf")}
    finally:
        subprocess.run([str(CLUSTER_SCRIPTS / "stop_slurm.sh"), str(cluster_dir)], timeout=CLUSTER_STOP_TIMEOUT_S)
        shutil.rmtree(cluster_dir, ignore_errors=True)


@pytest.mark.slow
def test_submitit_slurm_sweep_with_the_example_config(tmp_path, mlflow_uri, make_institution_dir, slurm_cluster):
    """conf/hydra/launcher/slurm_example.yaml submits a SLURM array whose tasks reserve
    parallel.n_workers CPUs; the test cluster has no accounting database, so submitit's sacct
    calls fail (it says so and watches for the jobs' result files instead)."""
    input_dir = make_institution_dir(N_STUDENTS, seed=2)
    n_workers = min(2, os.cpu_count() or 1)  # the node has this machine's CPUs: a task must fit
    proc = run_sweep(tmp_path, mlflow_uri, "sweep-submitit-slurm", input_dir, "hydra/launcher=slurm_example",
                     f"hydra.launcher.partition={PARTITION}", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5",
                     f"parallel.n_workers={n_workers}", env=subprocess_env(**slurm_cluster))
    assert proc.returncode == 0, proc.stderr[-3000:] + job_logs(tmp_path)
    assert "Callback MLflowSweepCallback" not in proc.stderr, proc.stderr[-3000:]
    (script,) = (tmp_path / "multirun" / ".submitit").glob("*/*_submission.sh")
    directives = set(script.read_text().splitlines())
    expected = {f"#SBATCH --cpus-per-task={n_workers}", f"#SBATCH --partition={PARTITION}", "#SBATCH --mem=1GB"}
    assert expected <= directives, script.read_text()
    check_sweep(tmp_path, mlflow_uri, "sweep-submitit-slurm", input_dir, "SlurmLauncher")
