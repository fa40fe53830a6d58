"""Reliability: gates and modes, failure records, interruption, resume, structured logs,
output safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stage2 import process_student_batching
from stage2.errors import InputValidationError
from stage2.outputs import STAGE3_TABLES

AS_OF = "as_of=2025-08-01T00:00:00"


def test_dry_run_writes_only_the_validation_report(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=3)
    result = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", "dry_run=true"]), output_dir=tmp_path
    )
    assert result.dry_run and result.batches.empty
    report = json.loads((tmp_path / "validation_report.json").read_text())
    assert report["status"] == "valid" and report["n_batches"] == result.plan.n_batches > 0
    assert report["room_check"]["slots"] > 0 and len(report["groups"]) == len(result.plan.groups)
    assert not any((tmp_path / f"{t}.csv").exists() for t in STAGE3_TABLES)
    assert not (tmp_path / "quality_report.json").exists()


def test_failed_run_writes_errors_json_with_code_and_fix(make_institution_dir, compose_config, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(make_institution_dir(300, seed=1), broken)
    (broken / "courses.csv").unlink()
    out = tmp_path / "out"
    with pytest.raises(InputValidationError):
        process_student_batching(compose_config([f"data.input_dir={broken}", "tracking.enabled=false", "report.notebook=false"]), output_dir=out)
    record = json.loads((out / "errors.json").read_text())
    assert record["status"] == "failed" and record["error"]["code"] == "MISSING_FILE"
    assert record["error"]["fix"] and "courses.csv" in record["error"]["message"]
    lines = [json.loads(line) for line in (out / "stage2.jsonl").read_text().splitlines()]
    assert any(line.get("event") == "run_failed" and line.get("code") == "MISSING_FILE" for line in lines)


def test_jsonl_log_has_stage_timings_memory_and_decisions(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=3)
    process_student_batching(compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false"]), output_dir=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "stage2.jsonl").read_text().splitlines()]
    done = {line["stage"]: line for line in lines if line.get("event") == "stage_done"}
    assert {"validation", "configuration", "sizing", "clustering", "allocation", "membership", "enrollment",
            "metrics", "outputs"} <= set(done)
    assert all(line["seconds"] >= 0 and line["peak_memory_mb"] > 0 for line in done.values())
    planned = [line for line in lines if line.get("event") == "group_planned"]
    assert planned and all({"group", "n_batches", "status"} <= set(line) for line in planned)
    assert any(line.get("event") == "eav_override" for line in lines)
    assert any(line.get("event") == "allocation" for line in lines)
    assert all("time" in line and "level" in line for line in lines)


def test_formula_injection_is_neutralised_in_free_text_and_ids_stay_exact(make_institution_dir, compose_config, tmp_path):
    source = make_institution_dir(300, seed=6)
    input_dir = tmp_path / "input"
    shutil.copytree(source, input_dir)
    students = pd.read_csv(input_dir / "student_data.csv", dtype=str, keep_default_na=False)
    students.loc[0, "student_name"] = "=HYPERLINK(\"http://evil\",\"x\")"
    students.loc[1, "student_name"] = "@SUM(A1:A9)"
    old_id = students.loc[2, "student_id"]
    students.loc[2, "student_id"] = "+cmd|calc"
    students.to_csv(input_dir / "student_data.csv", index=False)
    enrollments = pd.read_csv(input_dir / "student_course_enrollment.csv", dtype=str, keep_default_na=False)
    enrollments.loc[enrollments["student_id"] == old_id, "student_id"] = "+cmd|calc"
    enrollments.to_csv(input_dir / "student_course_enrollment.csv", index=False)
    result = process_student_batching(compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false"]),
                                      output_dir=tmp_path / "out")
    members = pd.read_csv(tmp_path / "out" / "batch_student_membership.csv", dtype=str, keep_default_na=False)
    names = set(members["student_name"])
    assert "'=HYPERLINK(\"http://evil\",\"x\")" in names and "'@SUM(A1:A9)" in names
    assert not any(n.startswith(("=", "@", "+")) for n in names)
    assert "+cmd|calc" in set(members["student_id"])  # ids are kept exact for Stage 3 joins
    assert any("formulas" in w and "+cmd|calc" in w for w in result.warnings)


def _stage2(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    return subprocess.Popen([sys.executable, "-m", "stage2", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_mid_run_leaves_no_csv_and_a_clear_status(make_institution_dir, tmp_path):
    input_dir = make_institution_dir(30000, seed=11)
    run_dir = tmp_path / "run"
    proc = _stage2(f"data.input_dir={input_dir}", f"hydra.run.dir={run_dir}", "tracking.enabled=false", "report.notebook=false",
                   "report.notebook=false", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / ".checkpoints" / "sizing.pkl").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not any((run_dir / f"{t}.csv").exists() for t in STAGE3_TABLES)
    assert json.loads((run_dir / "errors.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_outputs(make_institution_dir, tmp_path):
    input_dir = make_institution_dir(30000, seed=11)
    common = [f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", AS_OF]
    reference = tmp_path / "reference"
    done = _stage2(*common, f"hydra.run.dir={reference}", cwd=tmp_path)
    assert done.wait(timeout=600) == 0, done.stderr.read()[-2000:]

    run_dir = tmp_path / "run"
    proc = _stage2(*common, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (run_dir / ".checkpoints" / "clustering.pkl").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "quality_report.json").exists(), "the run finished before it could be killed"

    resumed = _stage2(*common, f"hydra.run.dir={run_dir}", "resume=true", cwd=tmp_path)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    report = json.loads((run_dir / "quality_report.json").read_text())
    assert report["resumed_from"] in ("clustering", "allocation")
    for table in STAGE3_TABLES:
        assert (run_dir / f"{table}.csv").read_bytes() == (reference / f"{table}.csv").read_bytes(), table


def test_resume_ignores_checkpoints_of_another_configuration(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=3)
    first = process_student_batching(compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false"]),
                                     output_dir=tmp_path)
    assert (tmp_path / ".checkpoints" / "clustering.pkl").exists()
    changed = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", "resume=true", "batch_size.target=25", AS_OF]),
        output_dir=tmp_path,
    )
    assert changed.resumed_from is None and changed.metrics["n_batches"] > first.metrics["n_batches"]
    same = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", "tracking.enabled=false", "report.notebook=false", "resume=true", "batch_size.target=25", AS_OF]),
        output_dir=tmp_path,
    )
    assert same.resumed_from == "allocation"
    assert same.membership.equals(changed.membership)
