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
#: no MLflow run, no audit notebook
OFF = ("tracking.enabled=false", "report.notebook=false")


def test_dry_run_writes_only_the_validation_report(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=3)
    result = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", *OFF, "dry_run=true"]), output_dir=tmp_path
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
        process_student_batching(compose_config([f"data.input_dir={broken}", *OFF]), output_dir=out)
    record = json.loads((out / "errors.json").read_text())
    assert record["status"] == "failed" and record["error"]["code"] == "MISSING_FILE"
    assert record["error"]["fix"] and "courses.csv" in record["error"]["message"]
    lines = [json.loads(line) for line in (out / "stage2.jsonl").read_text().splitlines()]
    assert any(line.get("event") == "run_failed" and line.get("code") == "MISSING_FILE" for line in lines)


def test_jsonl_log_has_stage_timings_memory_and_decisions(make_institution_dir, compose_config, tmp_path):
    input_dir = make_institution_dir(500, seed=3)
    process_student_batching(compose_config([f"data.input_dir={input_dir}", *OFF]), output_dir=tmp_path)
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


def test_formula_injection_is_neutralised_in_free_text_and_ids_stay_exact(make_institution_dir, compose_config,
                                                                         tmp_path):
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
    result = process_student_batching(compose_config([f"data.input_dir={input_dir}", *OFF]),
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
    proc = _stage2(f"data.input_dir={input_dir}", f"hydra.run.dir={run_dir}", *OFF, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / ".checkpoints" / "sizing.pkl").exists():
        running = proc.poll() is None
        assert running and time.monotonic() < deadline, "timeout" if running else proc.stderr.read()
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
    first = process_student_batching(compose_config([f"data.input_dir={input_dir}", *OFF]),
                                     output_dir=tmp_path)
    assert (tmp_path / ".checkpoints" / "clustering.pkl").exists()
    changed = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", *OFF, "resume=true", "batch_size.target=25", AS_OF]),
        output_dir=tmp_path,
    )
    assert changed.resumed_from is None and changed.metrics["n_batches"] > first.metrics["n_batches"]
    same = process_student_batching(
        compose_config([f"data.input_dir={input_dir}", *OFF, "resume=true", "batch_size.target=25", AS_OF]),
        output_dir=tmp_path,
    )
    assert same.resumed_from == "allocation"
    assert same.membership.equals(changed.membership)


# ------------------------------------------------------------------------------------------
# resume and checkpoints through process_student_batching, on a one-group institution of 200
# students (5 batches: clustering, allocation and numbering all matter)

QUIET = [*OFF, "report.formats=[]", AS_OF]


def _config(input_dir: Path, *extra: str):
    from stage2 import load_config

    return load_config([f"data.input_dir={input_dir}", *QUIET, *extra])


def _tables(out: Path) -> dict[str, bytes]:
    return {table: (out / f"{table}.csv").read_bytes() for table in STAGE3_TABLES}


@pytest.fixture(scope="module")
def reference_run(make_institution_dir, tmp_path_factory):
    """One complete run (``as_of`` fixed) with its checkpoints; tests copy its directory."""
    input_dir = make_institution_dir(200, seed=0, n_groups="one")
    out = tmp_path_factory.mktemp("reference-run")
    result = process_student_batching(_config(input_dir), output_dir=out)
    assert result.metrics["n_batches"] >= 3
    assert sorted(p.name for p in (out / ".checkpoints").iterdir()) == ["allocation.pkl", "clustering.pkl",
                                                                        "sizing.pkl"]
    return input_dir, out, _tables(out), result


def _copy_run(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    for table in STAGE3_TABLES:  # a resumed run must write them again
        (run_dir / f"{table}.csv").unlink()
    return run_dir


def test_resume_from_a_sizing_only_checkpoint_gives_byte_identical_outputs(reference_run, tmp_path):
    input_dir, reference, expected, _ = reference_run
    run_dir = _copy_run(reference, tmp_path)
    for stage in ("clustering", "allocation"):
        (run_dir / ".checkpoints" / f"{stage}.pkl").unlink()
    resumed = process_student_batching(_config(input_dir, "resume=true"), output_dir=run_dir)
    assert resumed.resumed_from == "sizing"
    assert "sizing" not in resumed.runtimes  # restored, not recomputed
    assert {"clustering", "allocation"} <= set(resumed.runtimes)
    assert _tables(run_dir) == expected
    assert json.loads((run_dir / "quality_report.json").read_text())["resumed_from"] == "sizing"


@pytest.mark.parametrize("stage", ["sizing", "clustering", "allocation"])
def test_a_truncated_checkpoint_is_recomputed_and_the_outputs_stay_identical(reference_run, tmp_path, stage):
    """A corrupt checkpoint must give identical outputs or a clear failure, never silently wrong
    ones. Found: a truncated checkpoint is treated as missing, so its stage runs again."""
    input_dir, reference, expected, _ = reference_run
    run_dir = _copy_run(reference, tmp_path)
    path = run_dir / ".checkpoints" / f"{stage}.pkl"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    resumed = process_student_batching(_config(input_dir, "resume=true"), output_dir=run_dir)
    assert stage in resumed.runtimes, f"the truncated {stage} checkpoint was not recomputed"
    assert _tables(run_dir) == expected
    assert not (run_dir / "errors.json").exists()


def _batch_labels(record):
    """The ``batch_of_student`` array inside an unpickled clustering checkpoint."""
    import numpy as np

    labels = getattr(record, "batch_of_student", None)
    if isinstance(labels, np.ndarray):
        return labels
    if isinstance(record, dict):
        for value in record.values():
            if (found := _batch_labels(value)) is not None:
                return found
    return None


def test_a_checkpoint_altered_on_disk_never_gives_silently_different_outputs(reference_run, tmp_path):
    import pickle

    import numpy as np

    from stage2.errors import Stage2Error

    input_dir, reference, expected, first = reference_run
    run_dir = _copy_run(reference, tmp_path)
    path = run_dir / ".checkpoints" / "clustering.pkl"
    raw = bytearray(path.read_bytes())
    labels = _batch_labels(pickle.loads(bytes(raw).partition(b"\n")[2]))  # after the digest line
    assert labels is not None and labels.dtype == np.int64
    start = bytes(raw).find(labels.tobytes())
    assert start > 0
    # one student moves into the batch with the most spare seats in its room: every size and
    # room rule still holds, so nothing downstream can notice
    spare = (first.batches["capacity_allocated"].astype(int) - first.batches["student_count"]).to_numpy()
    target = int(np.argmax(spare))
    assert spare[target] > 0 and target < 256
    student = int(np.flatnonzero(labels != target)[-1])
    raw[start + 8 * student] = target
    path.write_bytes(bytes(raw))
    try:
        process_student_batching(_config(input_dir, "resume=true"), output_dir=run_dir)
    except Stage2Error:  # a clear failure is acceptable
        assert json.loads((run_dir / "errors.json").read_text())["status"] == "failed"
        assert not any((run_dir / f"{t}.csv").exists() for t in STAGE3_TABLES)
        return
    assert _tables(run_dir) == expected


def test_changed_input_does_not_reuse_checkpoints_and_matches_a_fresh_run(make_institution_dir, tmp_path):
    input_dir = tmp_path / "input"
    shutil.copytree(make_institution_dir(200, seed=0, n_groups="one"), input_dir)
    run_dir = tmp_path / "run"
    process_student_batching(_config(input_dir), output_dir=run_dir)
    before = _tables(run_dir)
    checkpoint_bytes = {p.name: p.read_bytes() for p in (run_dir / ".checkpoints").iterdir()}

    # one student swaps one elective for another elective of the same programme and semester
    enrollments = pd.read_csv(input_dir / "student_course_enrollment.csv", dtype=str, keep_default_na=False)
    courses = pd.read_csv(input_dir / "courses.csv", dtype=str, keep_default_na=False).set_index("course_id")
    electives = enrollments["course_id"].map(courses["course_type"]) == "ELECTIVE"
    row = enrollments.index[electives][0]
    student, old_course = enrollments.loc[row, ["student_id", "course_id"]]
    taken = set(enrollments.loc[enrollments["student_id"] == student, "course_id"])
    same_kind = courses.loc[(courses["course_type"] == "ELECTIVE")
                            & (courses["program_id"] == courses.loc[old_course, "program_id"])
                            & (courses["semester"] == courses.loc[old_course, "semester"])]
    new_course = next(c for c in same_kind.index if c not in taken)
    enrollments.loc[row, "course_id"] = new_course
    enrollments.to_csv(input_dir / "student_course_enrollment.csv", index=False)

    resumed = process_student_batching(_config(input_dir, "resume=true"), output_dir=run_dir)
    assert resumed.resumed_from is None, "a checkpoint of the old input was reused"
    assert {"sizing", "clustering", "allocation"} <= set(resumed.runtimes)
    fresh_dir = tmp_path / "fresh"
    process_student_batching(_config(input_dir), output_dir=fresh_dir)
    assert _tables(run_dir) == _tables(fresh_dir)
    assert _tables(run_dir)["batch_course_enrollment"] != before["batch_course_enrollment"]  # the edit shows
    # the checkpoints were rewritten under the new input's key
    assert any(p.read_bytes() != checkpoint_bytes[p.name] for p in (run_dir / ".checkpoints").iterdir())


def test_a_carriage_return_in_a_student_name_does_not_break_the_membership_csv(make_institution_dir, tmp_path):
    import csv

    input_dir = tmp_path / "input"
    shutil.copytree(make_institution_dir(200, seed=0, n_groups="one"), input_dir)
    students = pd.read_csv(input_dir / "student_data.csv", dtype=str, keep_default_na=False)
    students.loc[0, "student_name"] = "Ann\rLee"
    students.to_csv(input_dir / "student_data.csv", index=False, quoting=csv.QUOTE_ALL)  # valid CSV
    result = process_student_batching(_config(input_dir), output_dir=tmp_path / "out")
    assert "Ann\rLee" in set(result.membership["student_name"])
    with open(tmp_path / "out" / "batch_student_membership.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) - 1 == len(result.membership)
    assert all(len(row) == len(rows[0]) for row in rows)
