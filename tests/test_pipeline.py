"""The whole pipeline through the Python API and Hydra's compose API (no subprocess)."""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest
from conftest import RECOMPUTED_MEASURES, STAGE3_TABLES, assert_no_outputs, assert_outputs_valid, run_batching

from stage2 import process_student_batching
from stage2.errors import ConfigurationError, InputValidationError

#: every measure quality.md requires in quality_report.json
QUALITY_MEASURES = [
    "n_students", "n_batches", "n_groups", "academic_coherence", "course_sse", "course_sse_per_student",
    "sections_per_batch", "size_balance", "size_bound_violations", "hard_constraint_violations",
    "constraint_satisfaction_rate", "shift_preference_satisfaction", "resource_utilization",
    "room_placement_rate", "silhouette_score", "runtime_s", "peak_memory_mb",
]
#: the stages a full run times (README "The pipeline", plus writing the outputs), as runtime_s.<stage>
STAGES = ["validation", "configuration", "prerequisites", "sizing", "features", "clustering", "allocation",
          "membership", "enrollment", "faculty", "metrics", "outputs"]


@pytest.fixture(scope="module")
def demo_run(make_institution_dir, mlflow_uri, tmp_path_factory):
    from stage2 import load_config

    input_dir = make_institution_dir(800, seed=5)
    out = tmp_path_factory.mktemp("demo-run")
    cfg = load_config([f"data.input_dir={input_dir}", f"tracking.uri={mlflow_uri}",
                       "tracking.experiment_name=pipeline-tests", "as_of=2025-08-01T00:00:00"])
    return input_dir, out, process_student_batching(cfg, output_dir=out)


def test_run_writes_contract_tables_that_keep_every_invariant(demo_run):
    input_dir, out, result = demo_run
    tables = assert_outputs_valid(out, input_dir)
    assert len(tables["student_batches"]) == result.metrics["n_batches"] > 10
    assert result.metrics["hard_constraint_violations"] == 0
    assert result.metrics["size_bound_violations"] == 0


def test_quality_report_has_every_measure_and_the_provenance(demo_run):
    input_dir, out, result = demo_run
    report = json.loads((out / "quality_report.json").read_text())
    for name in QUALITY_MEASURES:
        assert name in report["metrics"], name
    # one runtime per stage run, nothing else; the stages run one after the other within the run
    stage_times = {k.removeprefix("runtime_s."): v for k, v in report["metrics"].items() if k.startswith("runtime_s.")}
    assert sorted(stage_times) == sorted(STAGES)
    assert sum(stage_times.values()) <= report["metrics"]["runtime_s"] + 1e-9, stage_times
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


def test_metrics_of_the_api_are_those_of_the_report_and_recomputed_from_the_tables(demo_run):
    """The measures assert_outputs_valid recomputes from the files (conftest) are those the
    report and the Python API return."""
    input_dir, out, result = demo_run
    assert_outputs_valid(out, input_dir)
    report = json.loads((out / "quality_report.json").read_text())
    for name in RECOMPUTED_MEASURES:
        assert result.metrics[name] == pytest.approx(report["metrics"][name], rel=1e-12, abs=1e-12), name
    # the demo exercises what the recomputation covers: shift preferences, rule breaches, rooms
    assert report["metrics"]["shift_preference_satisfaction"] is not None
    assert 0 < report["metrics"]["constraint_satisfaction_rate"] < 1 and report["rule_breaches"]
    assert report["metrics"]["room_placement_rate"] > 0


def test_run_is_tracked_in_mlflow(demo_run, mlflow_uri):
    from mlflow.tracking import MlflowClient

    _, _, result = demo_run
    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size.target"] == "35" and run.data.params["algorithm.name"] == "balanced"
    for name in ("academic_coherence", "course_sse", "size_balance", "runtime_s"):
        assert name in run.data.metrics
    # per-stage runtimes: the stages of the report, and the reports written after it
    assert sorted(k for k in run.data.metrics if k.startswith("runtime_s.")) == sorted(
        f"runtime_s.{stage}" for stage in [*STAGES, "reports"])
    assert run.data.tags["input_digest"]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {f"{t}.csv" for t in STAGE3_TABLES} | {"quality_report.json", "resolved_config.yaml"} <= artifacts
    reports = {a.path for a in client.list_artifacts(result.run_id, "reports")}
    assert {"reports/audit_report.ipynb", "reports/audit_report.html", "reports/report.html"} <= reports
    assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.digest


def test_same_input_config_and_seed_give_identical_files(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=9)
    for name in ("a", "b"):
        run_batching(compose_config, input_dir, tmp_path / name)
    for table in STAGE3_TABLES:
        assert (tmp_path / "a" / f"{table}.csv").read_bytes() == (tmp_path / "b" / f"{table}.csv").read_bytes()
    assert_outputs_valid(tmp_path / "a", input_dir)


@pytest.mark.parametrize("algorithm", ["kmeans", "spectral", "hierarchical"])
def test_every_algorithm_runs_end_to_end(make_institution_dir, compose_config, tmp_path, algorithm):
    input_dir = make_institution_dir(400, seed=2)
    result = run_batching(compose_config, input_dir, tmp_path, [f"algorithm={algorithm}"])
    assert_outputs_valid(tmp_path, input_dir)
    assert result.metrics["hard_constraint_violations"] == 0


def test_list_column_semicolon_bom_export(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(300, seed=4, profile="college", delimiter=";", bom=True,
                                     enrollment_format="list_column")
    assert not (input_dir / "student_course_enrollment.csv").exists()
    result = run_batching(compose_config, input_dir, tmp_path)
    assert_outputs_valid(tmp_path, input_dir)
    assert result.metrics["n_students"] > 250


def test_bad_input_raises_and_leaves_no_csv(make_institution_dir, compose_config, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(make_institution_dir(300, seed=1), broken)
    (broken / "rooms.csv").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "student_batches.csv").write_text("stale output of an earlier run\n")
    with pytest.raises(InputValidationError) as info:
        run_batching(compose_config, broken, out)
    assert "rooms.csv" in str(info.value) and info.value.exit_code == 3
    assert_no_outputs(out)


def test_impossible_configuration_raises_before_reading_data(compose_config, tmp_path):
    with pytest.raises(ConfigurationError) as info:
        process_student_batching(
            compose_config(["data.input_dir=/does/not/exist", "tracking.enabled=false", "report.notebook=false",
                            "batch_size.min=70"]),
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


# ------------------------------------------------------------------------------------------
# where stage2 and the specification (data-contract.md, quality.md) disagree

def _append_rows(path, rows):
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def _with_enrollment_of_term(source, target, academic_year):
    """A copy of ``source`` where one active student also has an enrollment in a new course
    ``HIST-101`` (taken by nobody else) in ``academic_year``, same semester; returns that student."""
    shutil.copytree(source, target)
    students = pd.read_csv(target / "student_data.csv", dtype=str, keep_default_na=False)
    student = students.loc[students["is_active"] == "true"].iloc[0]
    courses = pd.read_csv(target / "courses.csv", dtype=str, keep_default_na=False)
    _append_rows(target / "courses.csv", [["HIST-101" if c == "course_id" else "History" if c == "course_name" else
                                           "CORE" if c == "course_type" else
                                           "3" if c in ("credits", "max_sessions_per_week") else
                                           "" for c in courses.columns]])
    header = pd.read_csv(target / "student_course_enrollment.csv", dtype=str, nrows=0).columns
    values = {"student_id": student["student_id"], "course_id": "HIST-101", "academic_year": academic_year,
              "semester": student["semester"], "is_mandatory": "true", "enrollment_date": "2020-01-01"}
    _append_rows(target / "student_course_enrollment.csv", [[values.get(c, "") for c in header]])
    return student["student_id"]


def test_enrollments_of_an_earlier_term_are_history_not_batched(make_institution_dir, compose_config, tmp_path):
    input_dir = tmp_path / "input"
    _with_enrollment_of_term(make_institution_dir(300, seed=1), input_dir, "2020-21")
    out = tmp_path / "out"
    run_batching(compose_config, input_dir, out)
    courses = pd.read_csv(out / "batch_course_enrollment.csv", dtype=str, keep_default_na=False)
    assert "HIST-101" not in set(courses["course_id"])


def test_an_enrollment_of_a_later_term_is_an_input_error(make_institution_dir, compose_config, tmp_path):
    input_dir = tmp_path / "input"
    _with_enrollment_of_term(make_institution_dir(300, seed=1), input_dir, "2031-32")
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, input_dir, tmp_path / "out")
    assert "student_course_enrollment.csv" in str(caught.value)


def test_prerequisite_violations_are_reported_and_recomputed(demo_run):
    input_dir, out, _ = demo_run
    report = json.loads((out / "quality_report.json").read_text())
    reported = report["metrics"]["prerequisite_violations"]
    # recomputed: the demo has no history rows, so every current enrollment in a course with a
    # mandatory prerequisite misses it
    prerequisites = pd.read_csv(input_dir / "course_prerequisites.csv", dtype=str, keep_default_na=False)
    mandatory = prerequisites.loc[prerequisites["is_mandatory"].str.lower().isin(["", "true", "t", "1", "yes"])]
    students = pd.read_csv(input_dir / "student_data.csv", dtype=str, keep_default_na=False)
    active = set(students.loc[students["is_active"].str.lower() != "false", "student_id"])
    enrollments = pd.read_csv(input_dir / "student_course_enrollment.csv", dtype=str, keep_default_na=False)
    current = enrollments.loc[enrollments["student_id"].isin(active), ["student_id", "course_id"]].drop_duplicates()
    assert reported == int(current["course_id"].isin(set(mandatory["course_id"])).sum())


SOFT_SHIFT_NO_MIX = ("+constraints.rules.shift_mix="
                     "{field_name: preferred_shift, rule_type: no_mix, weight: 1, threshold: 0.5}")


def test_soft_no_mix_counts_the_members_with_a_value(make_institution_dir, compose_config, tmp_path):
    """A soft no_mix rule is satisfied when the most common value covers the threshold of the
    members that have a value (README's rule table), recomputed by the shared helper."""
    input_dir = make_institution_dir(400, seed=3)
    run_batching(compose_config, input_dir, tmp_path, [SOFT_SHIFT_NO_MIX])
    assert_outputs_valid(tmp_path, input_dir)


def test_faculty_coverage_is_reported_with_faculty_tables(make_institution_dir, compose_config, tmp_path):
    input_dir = tmp_path / "input"
    shutil.copytree(make_institution_dir(300, seed=1), input_dir)
    # one teacher, competent only in a course no student takes: nothing can be covered
    columns = pd.read_csv(input_dir / "courses.csv", nrows=0).columns
    _append_rows(input_dir / "courses.csv", [["NOBODY-101" if c == "course_id" else "" for c in columns]])
    (input_dir / "faculty.csv").write_text("faculty_id,faculty_name,max_hours_per_week\nF1,Ada,18\n")
    (input_dir / "faculty_course_competency.csv").write_text("faculty_id,course_id,competency_level\nF1,NOBODY-101,8\n")
    run_batching(compose_config, input_dir, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "quality_report.json").read_text())
    assert report["metrics"]["faculty_coverage"] == 0.0


def test_without_faculty_tables_the_check_is_skipped_and_the_report_says_so(demo_run):
    _, out, result = demo_run
    report = json.loads((out / "quality_report.json").read_text())
    assert report["faculty"] == {"checked": False, "reason": (
        "faculty.csv and faculty_course_competency.csv absent: the faculty check was skipped")}
    assert "faculty_coverage" not in report["metrics"] and "faculty_coverage" not in result.metrics
    assert not (out / "faculty_report.csv").exists() and not (out / "faculty_load.csv").exists()
