"""The whole pipeline through the Python API and Hydra's compose API (no subprocess)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from stage2 import process_student_batching
from stage2.contract.schemas import BATCH_COURSE_ENROLLMENT_COLUMNS, MEMBERSHIP_COLUMNS, STUDENT_BATCHES_COLUMNS
from stage2.errors import ConfigurationError, InputValidationError
from stage2.outputs import STAGE3_TABLES

#: every measure quality.md requires in quality_report.json
QUALITY_MEASURES = [
    "n_students", "n_batches", "n_groups", "academic_coherence", "course_sse", "course_sse_per_student",
    "sections_per_batch", "size_balance", "size_bound_violations", "hard_constraint_violations",
    "constraint_satisfaction_rate", "shift_preference_satisfaction", "resource_utilization",
    "room_placement_rate", "silhouette_score", "runtime_s", "peak_memory_mb",
]
STAGES = ["validation", "configuration", "sizing", "clustering", "allocation", "membership", "enrollment", "metrics"]


def read_outputs(out):
    return {name: pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False) for name in STAGE3_TABLES}


def assert_contract_invariants(out, input_dir):
    """Re-derive every contract invariant from the files alone (independently of stage2's own check)."""
    tables = read_outputs(out)
    batches, members, courses = tables["student_batches"], tables["batch_student_membership"], tables["batch_course_enrollment"]
    assert list(batches.columns[: len(STUDENT_BATCHES_COLUMNS)]) == list(STUDENT_BATCHES_COLUMNS)
    assert list(members.columns[: len(MEMBERSHIP_COLUMNS)]) == list(MEMBERSHIP_COLUMNS)
    assert list(courses.columns[: len(BATCH_COURSE_ENROLLMENT_COLUMNS)]) == list(BATCH_COURSE_ENROLLMENT_COLUMNS)

    students = pd.read_csv(input_dir / "student_data.csv", dtype=str, keep_default_na=False, sep=None, engine="python",
                           encoding="utf-8-sig")
    active = students.loc[~students["is_active"].str.lower().isin(["false", "f", "0", "no"])]
    # every active student exactly once, nobody else
    assert members["student_id"].is_unique
    assert set(members["student_id"]) == set(active["student_id"])
    # student_count and size bounds
    counts = members.groupby("batch_id").size()
    assert (counts.reindex(batches["batch_id"]).to_numpy() == batches["student_count"].astype(int).to_numpy()).all()
    size = batches["student_count"].astype(int)
    ok_group = batches["group_status"] == "ok"
    assert ((size[ok_group] >= batches["size_min"].astype(int)[ok_group]) & (size[ok_group] <= batches["size_max"].astype(int)[ok_group])).all()
    # hard no_mix on program, year, semester
    merged = members.merge(active[["student_id", "semester"]], on="student_id")
    for column in ("program_id", "academic_year", "semester"):
        assert (merged.groupby("batch_id")[column].nunique() == 1).all()
    # rooms: no slot twice, capacity >= size
    placed = batches.loc[batches["room_id"] != ""]
    assert not placed.duplicated(["room_id", "shift_id"]).any()
    assert (placed["capacity_allocated"].astype(int) >= placed["student_count"].astype(int)).all()
    assert (placed["preferred_shift"] == placed["shift_id"]).all()
    # ids: unique UUIDs, codes unique per tenant
    assert batches["batch_id"].is_unique and members["membership_id"].is_unique and courses["enrollment_id"].is_unique
    assert not batches.duplicated(["tenant_id", "batch_code"]).any()
    assert set(courses["enrollment_status"]) <= {"ENROLLED", "PARTIAL"}
    # expected_students: members of the batch enrolled in the course, recounted with pandas
    enrollment_file = input_dir / "student_course_enrollment.csv"
    if enrollment_file.exists():
        demand = pd.read_csv(enrollment_file, dtype=str, keep_default_na=False, sep=None, engine="python",
                             encoding="utf-8-sig")[["student_id", "course_id"]].drop_duplicates()
        recount = demand.merge(members[["student_id", "batch_id"]], on="student_id").groupby(["batch_id", "course_id"]).size()
        got = courses.set_index(["batch_id", "course_id"])["expected_students"].astype(int)
        assert recount.sort_index().to_dict() == got.sort_index().to_dict()
        share = got / batches.set_index("batch_id")["student_count"].astype(int).reindex(got.index.get_level_values(0)).to_numpy()
        enrolled = courses.set_index(["batch_id", "course_id"])["enrollment_status"] == "ENROLLED"
        assert ((share >= 0.5) == enrolled).all()
    return tables


@pytest.fixture(scope="module")
def demo_run(make_institution_dir, mlflow_uri, tmp_path_factory):
    from stage2 import load_config

    input_dir = make_institution_dir(800, seed=5)
    out = tmp_path_factory.mktemp("demo-run")
    cfg = load_config([f"data.input_dir={input_dir}", f"tracking.uri={mlflow_uri}", "tracking.experiment_name=pipeline-tests",
                       "as_of=2025-08-01T00:00:00"])
    return input_dir, out, process_student_batching(cfg, output_dir=out)


def test_run_writes_contract_tables_that_keep_every_invariant(demo_run):
    input_dir, out, result = demo_run
    tables = assert_contract_invariants(out, input_dir)
    assert len(tables["student_batches"]) == result.metrics["n_batches"] > 10
    assert result.metrics["hard_constraint_violations"] == 0
    assert result.metrics["size_bound_violations"] == 0


def test_quality_report_has_every_measure_and_the_provenance(demo_run):
    input_dir, out, result = demo_run
    report = json.loads((out / "quality_report.json").read_text())
    for name in QUALITY_MEASURES:
        assert name in report["metrics"], name
    for stage in STAGES:
        assert report["metrics"][f"runtime_s.{stage}"] >= 0
    assert report["input_dir"] == str(input_dir.resolve())
    assert len(report["data_digest"]) == 64
    assert report["config"]["batch_size"]["target"] == 35
    assert 0 < report["metrics"]["academic_coherence"] <= 1
    assert (out / "resolved_config.yaml").exists() and (out / "stage2.log").exists()
    # the default run executes the audit notebook and writes the human-readable reports
    for name in ("audit_report.ipynb", "audit_report.html", "report.html", "report.txt", "metrics.csv"):
        assert (out / name).stat().st_size > 0, name
    # the EAV overrides of the synthetic institution were applied and recorded
    assert any(o["parameter_code"] == "batch_size.target" for o in report["eav_overrides"])


def test_metrics_recomputed_from_the_tables(demo_run):
    _, out, result = demo_run
    tables = read_outputs(out)
    courses = tables["batch_course_enrollment"]
    e = courses["expected_students"].astype(float)
    size = courses.merge(tables["student_batches"][["batch_id", "student_count"]], on="batch_id")["student_count"].astype(float)
    assert result.metrics["course_sse"] == pytest.approx(float((e * (1 - e / size)).sum()))
    coherence = e[courses["enrollment_status"] == "ENROLLED"].sum() / e.sum()
    assert result.metrics["academic_coherence"] == pytest.approx(coherence)


def test_run_is_tracked_in_mlflow(demo_run, mlflow_uri):
    from mlflow.tracking import MlflowClient

    _, _, result = demo_run
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size.target"] == "35" and run.data.params["algorithm.name"] == "balanced"
    for name in ("academic_coherence", "course_sse", "size_balance", "runtime_s", "runtime_s.clustering"):
        assert name in run.data.metrics
    assert run.data.tags["input_digest"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {f"{t}.csv" for t in STAGE3_TABLES} | {"quality_report.json", "resolved_config.yaml"} <= artifacts
    reports = {a.path for a in client.list_artifacts(result.run_id, "reports")}
    assert {"reports/audit_report.ipynb", "reports/audit_report.html", "reports/report.html"} <= reports
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest


def test_same_input_config_and_seed_give_identical_files(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=9)
    overrides = [f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", "as_of=2025-08-01T00:00:00"]
    for name in ("a", "b"):
        process_student_batching(compose_config(overrides), output_dir=tmp_path / name)
    for table in STAGE3_TABLES:
        assert (tmp_path / "a" / f"{table}.csv").read_bytes() == (tmp_path / "b" / f"{table}.csv").read_bytes()


@pytest.mark.parametrize("algorithm", ["kmeans", "spectral", "hierarchical"])
def test_every_algorithm_runs_end_to_end(make_institution_dir, compose_config, tmp_path, algorithm):
    input_dir = make_institution_dir(400, seed=2)
    result = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", f"algorithm={algorithm}"]),
        output_dir=tmp_path,
    )
    assert_contract_invariants(tmp_path, input_dir)
    assert result.metrics["hard_constraint_violations"] == 0


def test_list_column_semicolon_bom_export(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(300, seed=4, profile="college", delimiter=";", bom=True, enrollment_format="list_column")
    assert not (input_dir / "student_course_enrollment.csv").exists()
    result = process_student_batching(compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false"]), output_dir=tmp_path)
    assert_contract_invariants(tmp_path, input_dir)
    assert result.metrics["n_students"] > 250


def test_bad_input_raises_and_leaves_no_csv(make_institution_dir, compose_config, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(make_institution_dir(300, seed=1), broken)
    (broken / "rooms.csv").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "student_batches.csv").write_text("stale output of an earlier run\n")
    with pytest.raises(InputValidationError) as info:
        process_student_batching(compose_config([f"data.input_dir={broken}", "tracking.enabled=false", "report.notebook=false"]), output_dir=out)
    assert "rooms.csv" in str(info.value) and info.value.exit_code == 3
    assert not any((out / f"{t}.csv").exists() for t in STAGE3_TABLES)


def test_impossible_configuration_raises_before_reading_data(compose_config, tmp_path):
    with pytest.raises(ConfigurationError) as info:
        process_student_batching(
            compose_config(["data.input_dir=/does/not/exist", "tracking.enabled=false", "report.notebook=false", "batch_size.min=70"]),
            output_dir=tmp_path,
        )
    assert info.value.code == "BATCH_SIZE_BOUNDS_VIOLATED"
    assert not list(tmp_path.glob("*.csv"))


def test_failed_run_is_recorded_as_failed_in_mlflow(compose_config, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    with pytest.raises(InputValidationError):
        process_student_batching(
            compose_config([f"data.input_dir={tmp_path / 'missing'}", f"tracking.uri={mlflow_uri}",
                            "tracking.experiment_name=failures", "report.notebook=false"]),
            output_dir=tmp_path / "out",
        )
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("failures")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["error.code"] == "MISSING_FILE"


def test_inactive_students_are_left_out_and_counted(demo_run):
    input_dir, out, result = demo_run
    students = pd.read_csv(input_dir / "student_data.csv", dtype=str, keep_default_na=False)
    inactive = students["is_active"].str.lower().isin(["false", "0", "f", "no"])
    report = json.loads((out / "quality_report.json").read_text())
    assert report["n_inactive_students"] == int(inactive.sum()) > 0
    assert result.metrics["n_students"] == int((~inactive).sum())
    assert not set(students.loc[inactive, "student_id"]) & set(result.membership["student_id"])
