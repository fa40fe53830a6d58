"""``python -m stage2`` in a subprocess: the entrypoint users run, with its exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_no_outputs, assert_outputs_valid, subprocess_env

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent


def run_stage2(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stage2", *overrides], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)


def test_default_demo_run(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    proc = run_stage2(f"hydra.run.dir={run_dir}", f"tracking.uri={mlflow_uri}", "tracking.experiment_name=cli-demo",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_outputs_valid(run_dir)  # the demo institution, as the report names it
    assert (run_dir / "stage2.log").exists()
    assert (run_dir / ".hydra" / "config.yaml").exists()
    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cli-demo").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["hard_constraint_violations"] == 0


def test_default_store_is_an_absolute_sqlite_file_in_the_launch_directory(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_stage2(f"hydra.run.dir={run_dir}", "+institution=xyz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mlflow.db").exists() and not (run_dir / "mlflow.db").exists()
    batches = assert_outputs_valid(run_dir)["student_batches"]
    assert set(batches["tenant_id"]) == {"TENANT-XYZ"}


def test_bad_input_exits_3_names_the_problem_and_writes_no_csv(tmp_path, make_institution_dir):
    broken = tmp_path / "broken"
    shutil.copytree(make_institution_dir(300, seed=1), broken)
    text = (broken / "student_data.csv").read_text().splitlines()
    header = text[0].split(",")
    text[0] = ",".join("progam_id" if c == "program_id" else c for c in header)
    (broken / "student_data.csv").write_text("\n".join(text) + "\n")
    run_dir = tmp_path / "run"
    proc = run_stage2(f"data.input_dir={broken}", f"hydra.run.dir={run_dir}", "tracking.enabled=false", cwd=tmp_path)
    assert proc.returncode == 3
    assert "MISSING_COLUMN" in proc.stderr and "student_data.csv" in proc.stderr and "program_id" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_outputs(run_dir)


def test_impossible_size_configuration_exits_2(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_stage2("batch_size.min=50", "batch_size.target=40", f"hydra.run.dir={run_dir}", "tracking.enabled=false",
                      cwd=tmp_path)
    assert proc.returncode == 2
    assert "BATCH_SIZE_BOUNDS_VIOLATED" in proc.stderr and "Traceback" not in proc.stderr
    assert_no_outputs(run_dir)


def test_sweep_set_by_hydra_mode_runs_and_a_bad_job_keeps_its_exit_status(tmp_path, make_institution_dir):
    """``hydra.mode=MULTIRUN`` (the spelling of ``-m`` in an override) is left to Hydra: its
    ``a,b`` values are not composed as one job, and a job that fails on its input does not
    turn into a configuration error."""
    data = make_institution_dir(300, seed=2)
    sweep_dir = tmp_path / "sweep"
    common = ("hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}", "tracking.enabled=false", "report.notebook=false")
    proc = run_stage2(*common, f"data.input_dir={data}", "seed=0,1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert_outputs_valid(sweep_dir / job, data)
    proc = run_stage2(*common, f"data.input_dir={tmp_path / 'missing'}", "seed=0,1", cwd=tmp_path)
    assert proc.returncode == 3 and "INVALID_CONFIGURATION" not in proc.stderr, proc.stderr[-3000:]


def test_the_package_imports_the_pipeline_only_when_asked():
    """``python -m stage2`` imports the package first; the entrypoint keeps the garbage
    collector off while the heavy libraries load, which works only if the package itself
    loads none of them."""
    code = ("import sys, gc, stage2; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'numba', 'pandera'}); "
            "print(heavy, gc.isenabled(), stage2.process_student_batching.__module__, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True", "stage2.pipeline", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import stage2

        stage2.nothing  # noqa: B018
