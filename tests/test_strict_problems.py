"""Every strict problem at once (issue 16, part 3): under ``strict=true`` a run collects the
problems of the plan (undersized and infeasible groups), the allocation (batches without a room)
and the checks (faculty shortfalls) and fails once with all of them: ``errors.json`` lists each
with its code, the exit status is the most severe one's, and no Stage 3 CSV is written."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import OFFLINE_OVERRIDES, assert_no_outputs, read_output, run_batching, subprocess_env

import stage2
from stage2.errors import (
    EXIT_CODES,
    SEVERITY_ORDER,
    InfeasibleError,
    InputValidationError,
    Stage2Error,
    StrictProblems,
    ValidationIssue,
    severity_rank,
)
from stage2.outputs import ERRORS_FILE
from stage2.pipeline.runner import Stage, StageRunner

N_STUDENTS = 800
SEED = 16
#: batch sizes that make a group of three undersized and leave the other groups several batches
SIZES = ("batch_size.min=5", "batch_size.target=20")
STALE = ("student_batches.csv", "batch_student_membership.csv", "batch_course_enrollment.csv", "faculty_report.csv",
         "prerequisite_report.csv")


# ------------------------------------------------------------------------------------------
# inputs


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.reader(handle))


def _write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def undersized_group(directory: Path, n: int = 3) -> str:
    """Move ``n`` active students of the first programme (and their current enrollments) to
    semester 12: a group of ``n``, undersized for ``batch_size.min`` > ``n``. Returns the programme."""
    rows = _rows(directory / "student_data.csv")
    h = rows[0]
    active = [r for r in rows[1:] if r[h.index("is_active")].lower() in ("true", "t", "1", "yes", "")]
    program = active[0][h.index("program_id")]
    moved = [r for r in active if r[h.index("program_id")] == program][:n]
    _move_to_semester(directory, rows, moved, "12")
    return program


def _move_to_semester(directory: Path, rows: list[list[str]], moved: list[list[str]], semester: str) -> None:
    """Set ``semester`` on the ``moved`` rows of student_data.csv (``rows``, header first) and
    on their enrollments, and write both files."""
    h = rows[0]
    for r in moved:
        r[h.index("semester")] = semester
    _write(directory / "student_data.csv", rows)
    ids = {r[h.index("student_id")] for r in moved}
    enrollments = _rows(directory / "student_course_enrollment.csv")
    e = enrollments[0]
    for r in enrollments[1:]:
        if r[e.index("student_id")] in ids:
            r[e.index("semester")] = semester
    _write(directory / "student_course_enrollment.csv", enrollments)


def one_room(directory: Path) -> None:
    """Keep the first room and the first shift: one (room, shift) slot for 800 students."""
    _write(directory / "rooms.csv", _rows(directory / "rooms.csv")[:2])
    shifts = _rows(directory / "shifts.csv")
    _write(directory / "shifts.csv", shifts[:2])
    rows = _rows(directory / "student_data.csv")
    column = rows[0].index("preferred_shift")
    kept = {value.upper() for value in shifts[1]}
    for r in rows[1:]:
        r[column] = r[column] if r[column].upper() in kept else ""
    _write(directory / "student_data.csv", rows)


def more_rooms(directory: Path, n: int = 20) -> None:
    """Add ``n`` copies of the largest room (new ids): a slot for every batch."""
    rows = _rows(directory / "rooms.csv")
    h = rows[0]
    largest = max(rows[1:], key=lambda r: int(r[h.index("capacity")]))
    for i in range(n):
        extra = list(largest)
        extra[h.index("room_id")] = f"EXTRA-{i:02d}"
        rows.append(extra)
    _write(directory / "rooms.csv", rows)


def short_faculty(directory: Path, hours: float = 2) -> None:
    """One teacher of ``hours`` a week, competent in every course: far too few hours."""
    courses = pd.read_csv(directory / "courses.csv", dtype=str)["course_id"]
    pd.DataFrame({"faculty_id": ["F-ALL"], "faculty_name": ["Ada"], "max_hours_per_week": [hours]}).to_csv(
        directory / "faculty.csv", index=False)
    pd.DataFrame({"faculty_id": "F-ALL", "course_id": courses, "competency_level": 7}).to_csv(
        directory / "faculty_course_competency.csv", index=False)


@pytest.fixture
def institution(make_institution_dir, tmp_path) -> Path:
    target = tmp_path / "input"
    shutil.copytree(make_institution_dir(N_STUDENTS, seed=SEED), target)
    return target


def with_stale_outputs(out: Path) -> Path:
    """An output directory holding an earlier run's tables, which a failed run must remove."""
    out.mkdir(parents=True, exist_ok=True)
    for name in STALE:
        (out / name).write_text("stale\n")
    return out


def issue_codes(out: Path) -> list[str]:
    return [issue["code"] for issue in json.loads((out / ERRORS_FILE).read_text())["error"]["details"]["issues"]]


# ------------------------------------------------------------------------------------------
# the pipeline


def test_one_room_and_an_undersized_group_are_reported_together(institution, compose_config, tmp_path, mlflow_uri):
    program = undersized_group(institution)
    one_room(institution)
    out = with_stale_outputs(tmp_path / "out")
    with pytest.raises(StrictProblems) as caught:
        run_batching(compose_config, institution, out,
                     ["strict=true", *SIZES, "tracking.enabled=true", f"tracking.uri={mlflow_uri}",
                      "tracking.experiment_name=strict-problems"])
    error = caught.value
    assert [p.code for p in error.problems] == ["CONSTRAINT_VIOLATION", "INSUFFICIENT_ROOMS"]  # in stage order
    assert error.exit_code == EXIT_CODES["infeasible"] and error.code == "STRICT_CHECKS_FAILED"
    undersized, rooms = error.problems
    assert f"program_id={program}" in str(undersized.where) and "semester=12" in str(undersized.where)
    assert "3 students < min 5" in undersized.message
    assert "1 (room, shift) slots" in rooms.message and rooms.details["shortfall"] > 0
    assert "2 problem(s) under strict=true" in str(error) and not error.not_run

    record = json.loads((out / ERRORS_FILE).read_text())
    assert record["status"] == "failed" and record["error"]["code"] == "STRICT_CHECKS_FAILED"
    assert record["error"]["exit_code"] == 4
    issues = record["error"]["details"]["issues"]
    assert [i["code"] for i in issues] == ["CONSTRAINT_VIOLATION", "INSUFFICIENT_ROOMS"]
    assert all(i["message"] and i["fix"] and i["exit_code"] == 4 for i in issues)
    assert_no_outputs(out)
    assert not (out / "faculty_report.csv").exists() and not (out / "quality_report.json").exists()

    runs = mlflow.MlflowClient(mlflow_uri).search_runs(
        [mlflow.MlflowClient(mlflow_uri).get_experiment_by_name("strict-problems").experiment_id])
    assert [(r.info.status, r.data.tags["error.code"]) for r in runs] == [("FAILED", "STRICT_CHECKS_FAILED")]


def test_the_same_input_without_strict_publishes_with_both_as_warnings(institution, compose_config, tmp_path):
    undersized_group(institution)
    one_room(institution)
    result = run_batching(compose_config, institution, tmp_path / "out", SIZES)
    text = "\n".join(result.warnings)
    assert "3 students < min 5" in text and "[INSUFFICIENT_ROOMS]" in text
    assert (read_output(tmp_path / "out", "student_batches")["room_id"].fillna("") != "").sum() == 1
    assert not (tmp_path / "out" / ERRORS_FILE).exists()


def test_an_undersized_group_and_a_faculty_shortfall_are_reported_together(institution, compose_config, tmp_path):
    undersized_group(institution)
    more_rooms(institution)
    short_faculty(institution)
    out = with_stale_outputs(tmp_path / "out")
    with pytest.raises(StrictProblems) as caught:
        run_batching(compose_config, institution, out, ["strict=true", *SIZES])
    assert [p.code for p in caught.value.problems] == ["CONSTRAINT_VIOLATION", "INSUFFICIENT_FACULTY"]
    assert caught.value.exit_code == 4
    assert issue_codes(out) == ["CONSTRAINT_VIOLATION", "INSUFFICIENT_FACULTY"]
    faculty = json.loads((out / ERRORS_FILE).read_text())["error"]["details"]["issues"][1]
    assert faculty["where"] == "faculty.csv / faculty_course_competency.csv"
    assert faculty["details"]["hours_covered"] == 2 and faculty["details"]["courses_short"]
    assert_no_outputs(out)
    assert not (out / "faculty_report.csv").exists()


def test_unmet_prerequisites_join_the_plan_and_room_problems_and_set_the_exit(institution, compose_config, tmp_path):
    """enrollment.prerequisites=strict on an export without history (every enrollment in a
    course with a mandatory prerequisite is ineligible): PREREQUISITE_NOT_MET (input, exit 3)
    is listed with the undersized group and the room shortage, and is the most severe."""
    undersized_group(institution)
    one_room(institution)
    out = with_stale_outputs(tmp_path / "out")
    with pytest.raises(StrictProblems) as caught:
        run_batching(compose_config, institution, out, ["strict=true", "enrollment.prerequisites=strict", *SIZES])
    error = caught.value
    assert [p.code for p in error.problems] == ["PREREQUISITE_NOT_MET", "CONSTRAINT_VIOLATION", "INSUFFICIENT_ROOMS"]
    assert error.exit_code == EXIT_CODES["input"] == 3 and error.code == "STRICT_CHECKS_FAILED"
    codes = issue_codes(out)
    assert codes[-2:] == ["CONSTRAINT_VIOLATION", "INSUFFICIENT_ROOMS"]
    assert set(codes[:-2]) == {"PREREQUISITE_NOT_MET"} and len(codes) > 3  # each enrollment named
    assert_no_outputs(out)
    assert not (out / "prerequisite_report.csv").exists()  # the stale one removed


def test_two_undersized_groups_are_two_problems_of_one_code(institution, compose_config, tmp_path):
    first = undersized_group(institution)
    undersized_group_of(institution, other_program(institution, first))
    more_rooms(institution)
    out = tmp_path / "out"
    with pytest.raises(StrictProblems) as caught:
        run_batching(compose_config, institution, out, ["strict=true", *SIZES])
    error = caught.value
    assert [p.code for p in error.problems] == ["CONSTRAINT_VIOLATION", "CONSTRAINT_VIOLATION"]
    assert error.code == "CONSTRAINT_VIOLATION" and error.exit_code == 4  # one code: the code
    assert len({p.where for p in error.problems}) == 2
    assert issue_codes(out) == ["CONSTRAINT_VIOLATION", "CONSTRAINT_VIOLATION"]


def undersized_group_of(directory: Path, program: str, n: int = 2) -> None:
    """Move ``n`` students of ``program`` (and their current enrollments) to semester 11."""
    rows = _rows(directory / "student_data.csv")
    h = rows[0]
    moved = [r for r in rows[1:] if r[h.index("program_id")] == program and r[h.index("semester")] != "12"][:n]
    _move_to_semester(directory, rows, moved, "11")


def other_program(directory: Path, program: str) -> str:
    rows = _rows(directory / "student_data.csv")
    column = rows[0].index("program_id")
    return next(r[column] for r in rows[1:] if r[column] != program)


def test_validation_lists_every_strict_problem_of_the_plan(institution):
    first = undersized_group(institution)
    second = other_program(institution, first)
    undersized_group_of(institution, second)
    report = stage2.validate_batch_processing_inputs(institution, batch_size_min=5, batch_size_target=20,
                                                     strict=True)
    assert not report.ok and [p.code for p in report.problems] == ["CONSTRAINT_VIOLATION", "CONSTRAINT_VIOLATION"]
    wheres = [str(p.where) for p in report.problems]
    assert any(f"program_id={first}" in w for w in wheres) and any(f"program_id={second}" in w for w in wheres)
    assert report.plan is not None and report.n_batches  # the plan is still reported


@pytest.mark.slow
def test_cli_exits_once_with_both_problems(institution, tmp_path):
    undersized_group(institution)
    one_room(institution)
    run_dir = with_stale_outputs(tmp_path / "run")
    proc = subprocess.run(
        [sys.executable, "-m", "stage2", f"data.input_dir={institution}", *OFFLINE_OVERRIDES,
         f"hydra.run.dir={run_dir}", "strict=true", *SIZES],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "[STRICT_CHECKS_FAILED]" in proc.stderr
    assert "[CONSTRAINT_VIOLATION]" in proc.stderr and "[INSUFFICIENT_ROOMS]" in proc.stderr
    assert issue_codes(run_dir) == ["CONSTRAINT_VIOLATION", "INSUFFICIENT_ROOMS"]
    assert_no_outputs(run_dir)


# ------------------------------------------------------------------------------------------
# the runner and the error (stages of plain functions: the runner's contract, not the pipeline)


class Found:
    """A stage result with recorded problems."""

    def __init__(self, *problems: Stage2Error) -> None:
        self.problems = list(problems)


def infeasible(code: str = "INSUFFICIENT_ROOMS") -> InfeasibleError:
    return InfeasibleError(f"{code} found", code=code, where="somewhere")


def prerequisite_problem() -> InputValidationError:
    """A problem of the input class (exit 3), as the prerequisite check's will be."""
    return InputValidationError([
        ValidationIssue("PREREQUISITE_NOT_MET", "student_course_enrollment.csv", "S1 lacks MATH101 for MATH201", row=7),
        ValidationIssue("PREREQUISITE_NOT_MET", "student_course_enrollment.csv", "S2 lacks MATH101 for MATH201", row=9),
    ])


def recording(name: str, *problems: Stage2Error, records: bool = True) -> Stage:
    return Stage(name, lambda: Found(*problems), (), (name,), records_problems=records)


def test_the_runner_raises_every_recorded_problem_after_the_last_stage():
    ran: list[str] = []
    stages = [recording("sizing", infeasible("CONSTRAINT_VIOLATION")),
              recording("prerequisites", prerequisite_problem()),
              Stage("last", lambda: ran.append("last"), (), ("done",)), recording("faculty", infeasible())]
    with pytest.raises(StrictProblems) as caught:
        StageRunner().run(stages, {})
    error = caught.value
    assert ran == ["last"]  # the stages after a recorded problem still ran
    assert [p.code for p in error.problems] == ["CONSTRAINT_VIOLATION", "PREREQUISITE_NOT_MET",
                                                "INSUFFICIENT_ROOMS"]
    assert error.exit_code == EXIT_CODES["input"]  # input outranks infeasible (SEVERITY_ORDER)
    issues = error.details["issues"]
    assert [i["code"] for i in issues] == ["CONSTRAINT_VIOLATION", "PREREQUISITE_NOT_MET", "PREREQUISITE_NOT_MET",
                                           "INSUFFICIENT_ROOMS"]  # each input issue with its row
    assert [i.get("row") for i in issues] == [None, 7, 9, None]


def test_a_stage_that_fails_after_recorded_problems_joins_them_and_says_what_did_not_run():
    def broken() -> None:
        raise InfeasibleError("no convergence", code="CONVERGENCE_FAILURE")

    ran: list[str] = []
    stages = [recording("sizing", infeasible("CONSTRAINT_VIOLATION")), Stage("clustering", broken, (), ("clusters",)),
              Stage("allocation", lambda: ran.append("allocation"), (), ("allocation",)),
              Stage("faculty", lambda: ran.append("faculty"), (), ("faculty",))]
    with pytest.raises(StrictProblems) as caught:
        StageRunner().run(stages, {})
    error = caught.value
    assert not ran
    assert [p.code for p in error.problems] == ["CONSTRAINT_VIOLATION", "CONVERGENCE_FAILURE"]
    assert error.not_run == ("allocation", "faculty") and error.details["failed_stage"] == "clustering"
    assert "not checked: stage(s) allocation, faculty could not run after stage clustering failed" in str(error)


def test_one_problem_is_raised_as_itself_and_none_is_no_error():
    problem = infeasible()
    with pytest.raises(InfeasibleError) as caught:
        StageRunner().run([recording("allocation", problem)], {})
    assert caught.value is problem and caught.value.code == "INSUFFICIENT_ROOMS" and caught.value.exit_code == 4
    catalog = StageRunner().run([recording("allocation"), recording("faculty", problem, records=False)], {})
    assert set(catalog) == {"allocation", "faculty"}  # a stage not marked records_problems is not collected


def test_a_stage_error_without_recorded_problems_and_a_bug_propagate_unchanged():
    error = InfeasibleError("no convergence", code="CONVERGENCE_FAILURE")

    def fails() -> None:
        raise error

    with pytest.raises(InfeasibleError) as caught:
        StageRunner().run([recording("sizing"), Stage("clustering", fails, (), ("clusters",))], {})
    assert caught.value is error

    def bug() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        StageRunner().run([recording("sizing", infeasible()), Stage("clustering", bug, (), ("clusters",))], {})


def test_severity_order_ranks_every_failure_class():
    assert set(SEVERITY_ORDER) == set(EXIT_CODES) - {"ok", "interrupted"}
    assert severity_rank(InputValidationError([])) < severity_rank(infeasible())
    combined = StrictProblems([infeasible(), Stage2Error("a bug")])
    assert combined.exit_code == EXIT_CODES["internal"] and combined.code == "STRICT_CHECKS_FAILED"


def test_a_recorded_problem_survives_its_stage_checkpoint(tmp_path):
    from stage2.checkpoints import CheckpointStore

    store = CheckpointStore(tmp_path, "key")
    store.save("allocation", {"allocation": Found(InfeasibleError("2 batches", code="INSUFFICIENT_ROOMS",
                                                                  where="rooms.csv", details={"shortfall": 2}),
                                                  prerequisite_problem())})
    rooms, prerequisites = store.load("allocation")["allocation"].problems
    assert (type(rooms), rooms.code, rooms.where, rooms.details) == (InfeasibleError, "INSUFFICIENT_ROOMS",
                                                                     "rooms.csv", {"shortfall": 2})
    assert str(rooms) == "[INSUFFICIENT_ROOMS] rooms.csv: 2 batches Fix: " + rooms.fix + "."
    assert [issue.row for issue in prerequisites.issues] == [7, 9] and prerequisites.exit_code == 3
