"""The faculty feasibility check (issue 16, part 2): the max-flow on cases with a known answer
(one where a greedy assignment fails), against SciPy's max-flow on random cases, the check's
section hours and its verdicts, the two faculty tables of the data contract, and whole runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import read_output, run_batching
from scipy.sparse.csgraph import maximum_flow

from stage2.contract import load_institution
from stage2.errors import ConfigurationError, InfeasibleError, InputValidationError
from stage2.faculty import check_faculty, max_teaching_flow
from stage2.reporting import audit

# ------------------------------------------------------------------------------------------
# the flow


def greedy_cover(demand, capacity, arcs) -> int:
    """Each course in turn takes what it can from its competent teachers, first listed first."""
    left = list(capacity)
    covered = 0
    for course, need in enumerate(demand):
        for c, f in arcs:
            if c == course and need:
                take = min(need, left[f])
                left[f] -= take
                need -= take
                covered += take
    return covered


def test_flow_covers_what_a_greedy_assignment_misses():
    # T0 can teach A and B, T1 only A: greedy gives A to T0 (listed first) and leaves B without a
    # teacher; the flow gives A to T1 and B to T0
    demand, capacity = [600, 600], [600, 600]
    arcs = [(0, 0), (0, 1), (1, 0)]
    assert greedy_cover(demand, capacity, arcs) == 600
    flow = max_teaching_flow(np.array(demand), np.array(capacity), *np.array(arcs).T)
    assert flow.covered.tolist() == [600, 600]
    assert flow.load.tolist() == [600, 600]
    assert flow.arc_flow.tolist() == [0, 600, 600]


def test_flow_of_known_answers():
    # two courses of 10 h sharing one teacher of 15 h: 15 h coverable, whichever course misses
    flow = max_teaching_flow(np.array([600, 600]), np.array([900]), np.array([0, 1]), np.array([0, 0]))
    assert flow.covered.sum() == 900 and flow.load.tolist() == [900]
    # one course of 20 h split between two teachers of 12 h
    flow = max_teaching_flow(np.array([1200]), np.array([720, 720]), np.array([0, 0]), np.array([0, 1]))
    assert flow.covered.tolist() == [1200] and flow.load.sum() == 1200 and flow.load.max() <= 720
    # Hall's condition: three courses, two teachers competent for all of them, 8 h each
    flow = max_teaching_flow(np.array([300, 300, 900]), np.array([480, 480]),
                             np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 0, 1, 0, 1]))
    assert flow.covered.sum() == 960 and flow.covered[2] <= 900
    # no competent teacher at all
    flow = max_teaching_flow(np.array([600]), np.array([600]), np.array([], int), np.array([], int))
    assert flow.covered.tolist() == [0] and flow.load.tolist() == [0]


@pytest.mark.parametrize("seed", range(25))
def test_flow_equals_scipys_maximum_flow_and_is_a_flow(seed):
    rng = np.random.default_rng(seed)
    n_courses, n_faculty = rng.integers(1, 9), rng.integers(1, 7)
    demand = rng.integers(0, 10, n_courses) * 60
    capacity = rng.integers(0, 12, n_faculty) * 60
    pairs = [(c, f) for c in range(n_courses) for f in range(n_faculty) if rng.random() < 0.4]
    arc_course = np.array([c for c, _ in pairs], dtype=np.int64)
    arc_faculty = np.array([f for _, f in pairs], dtype=np.int64)
    flow = max_teaching_flow(demand, capacity, arc_course, arc_faculty)
    # an independent implementation on the same network (SciPy's Edmonds-Karp / Dinic)
    n = 2 + n_courses + n_faculty
    tails = [0] * n_courses + [2 + c for c in arc_course] + [2 + n_courses + f for f in range(n_faculty)]
    heads = [2 + c for c in range(n_courses)] + [2 + n_courses + f for f in arc_faculty] + [1] * n_faculty
    caps = list(demand) + [int(demand[c]) for c in arc_course] + list(capacity)
    graph = sp.csr_matrix((np.array(caps, dtype=np.int32), (tails, heads)), shape=(n, n))
    assert flow.covered.sum() == maximum_flow(graph, 0, 1).flow_value
    # feasibility: within every capacity, and conserved at every course and teacher
    assert (flow.covered <= demand).all() and (flow.load <= capacity).all() and (flow.arc_flow >= 0).all()
    assert np.array_equal(np.bincount(arc_course, weights=flow.arc_flow, minlength=n_courses), flow.covered)
    assert np.array_equal(np.bincount(arc_faculty, weights=flow.arc_flow, minlength=n_faculty), flow.load)


# ------------------------------------------------------------------------------------------
# the check on hand-made tables


def batch_courses(rows: list[tuple[str, str, str, int | None]]) -> pd.DataFrame:
    """(batch_id, course_id, enrollment_status, sessions_per_week) rows of batch_course_enrollment."""
    frame = pd.DataFrame(rows, columns=["batch_id", "course_id", "enrollment_status", "sessions_per_week"])
    frame["sessions_per_week"] = frame["sessions_per_week"].astype("Int64")
    frame["course_name"] = "Course " + frame["course_id"]
    return frame


def faculty_table(rows: list[tuple[str, float, bool]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["faculty_id", "max_hours_per_week", "is_active"])
    return frame.astype({"faculty_id": "string", "max_hours_per_week": "Float64", "is_active": bool})


def competency_table(rows: list[tuple[str, str, int, bool]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["faculty_id", "course_id", "competency_level", "is_active"])
    return frame.astype({"faculty_id": "string", "course_id": "string", "competency_level": "Int64",
                         "is_active": bool})


SECTIONS = batch_courses([
    ("B1", "MATH", "ENROLLED", 3), ("B2", "MATH", "ENROLLED", 3), ("B3", "MATH", "PARTIAL", 3),
    ("B1", "ART", "ENROLLED", None), ("B2", "PHYS", "ENROLLED", 2),
])  # fmt: skip
SETTINGS = {"session_hours": 1.5, "default_sessions_per_week": 2, "min_competency": 5, "strict": False}


def test_sections_need_sessions_times_session_hours_and_partial_rows_are_no_sections():
    faculty = faculty_table([("F1", 60, True)])
    competencies = competency_table([("F1", "MATH", 9, True), ("F1", "ART", 9, True), ("F1", "PHYS", 9, True)])
    check = check_faculty(SECTIONS, faculty, competencies, **SETTINGS)
    courses = check.courses.set_index("course_id")
    # MATH: 2 ENROLLED sections x 3 sessions x 1.5 h; ART: 1 x 2 (the default) x 1.5; PHYS: 1 x 2 x 1.5
    assert courses["sections"].to_dict() == {"ART": 1, "MATH": 2, "PHYS": 1}
    assert courses["hours_needed"].to_dict() == {"ART": 3.0, "MATH": 9.0, "PHYS": 3.0}
    assert check.hours_needed == 15.0 and check.hours_covered == 15.0 and check.coverage == 1.0
    assert check.metrics == {"faculty_coverage": 1.0}
    assert check.load["hours_assigned"].tolist() == [15.0]
    assert check.load["courses_taught"].tolist() == ["ART:3;MATH:9;PHYS:3"]
    assert any("without max_sessions_per_week" in w and "ART" in w for w in check.warnings)
    assert not any("INSUFFICIENT_FACULTY" in w for w in check.warnings)


def test_inactive_rows_and_low_competency_teach_nothing_and_the_shortfall_is_a_warning():
    faculty = faculty_table([("F1", 60, True), ("F2", 60, False), ("F3", 4, True)])
    competencies = competency_table([
        ("F1", "MATH", 4, True),    # below min_competency 5
        ("F1", "PHYS", 9, False),   # inactive competency
        ("F2", "PHYS", 9, True),    # inactive teacher
        ("F3", "MATH", 5, True),    # 4 h of MATH's 9
        ("F3", "ART", 10, True),
    ])  # fmt: skip
    check = check_faculty(SECTIONS, faculty, competencies, **SETTINGS)
    courses = check.courses.set_index("course_id")
    assert check.hours_covered == 4.0 and check.coverage == pytest.approx(4 / 15)
    assert courses.loc["PHYS", "status"] == "no_competent_faculty" and courses.loc["PHYS", "hours_missing"] == 3.0
    assert courses["competent_faculty"].to_dict() == {"ART": 1, "MATH": 1, "PHYS": 0}
    assert courses["hours_missing"].sum() == pytest.approx(11.0)
    assert check.load.set_index("faculty_id")["hours_assigned"].to_dict() == {"F1": 0.0, "F2": 0.0, "F3": 4.0}
    (warning,) = [w for w in check.warnings if w.startswith("[INSUFFICIENT_FACULTY]")]
    assert "cover 4 of 15 section-hours" in warning
    assert "PHYS 3 h (no competent faculty)" in warning and "MATH" in warning and "ART" in warning
    summary = check.summary()
    assert summary["hours_missing"] == 11.0 and summary["n_courses_short"] == 3 and summary["n_sections"] == 4
    assert [c["course_id"] for c in summary["courses_short"]][0] in {"MATH", "ART"}  # most hours missing first


def test_a_shortfall_under_strict_is_insufficient_faculty_with_exit_4():
    faculty = faculty_table([("F1", 2, True)])
    competencies = competency_table([("F1", "MATH", 8, True)])
    check = check_faculty(SECTIONS, faculty, competencies, **{**SETTINGS, "strict": True})
    [error] = check.problems  # raised by the stage runner with the run's other strict problems
    assert isinstance(error, InfeasibleError) and not any("INSUFFICIENT_FACULTY" in w for w in check.warnings)
    assert error.code == "INSUFFICIENT_FACULTY" and error.exit_code == 4
    assert error.where == "faculty.csv / faculty_course_competency.csv"
    assert "MATH 7 h" in error.message and error.fix
    assert {c["course_id"]: c["hours_missing"] for c in error.details["courses_short"]} == {
        "MATH": 7.0, "ART": 3.0, "PHYS": 3.0}


def test_without_either_table_the_check_is_skipped_and_says_why():
    check = check_faculty(SECTIONS, None, competency_table([]), **SETTINGS)
    assert not check.checked and check.metrics == {} and check.coverage is None
    assert check.summary() == {"checked": False, "reason": "faculty.csv absent: the faculty check was skipped"}
    check = check_faculty(SECTIONS, faculty_table([]), None, **SETTINGS)
    assert "faculty_course_competency.csv absent" in check.reason


# ------------------------------------------------------------------------------------------
# the contract's two faculty tables


def write_minimal_institution(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = {
        "student_data.csv": "student_id,program_id,academic_year\nS1,P1,2024-25\nS2,P1,2024-25\n",
        "programs.csv": "program_id\nP1\n",
        "courses.csv": "course_id,max_sessions_per_week\nC1,3\nC2,2\n",
        "student_course_enrollment.csv": "student_id,course_id\nS1,C1\nS2,C1\nS2,C2\n",
        "rooms.csv": "room_id,capacity\nR1,40\n",
    }
    for name, text in {**base, **files}.items():
        (directory / name).write_text(text)
    return directory


def test_faculty_tables_are_read_with_their_defaults(tmp_path):
    data = load_institution(write_minimal_institution(
        tmp_path,
        **{"faculty.csv": "faculty_id,faculty_name,max_hours_per_week,is_active\nF1,Ada,,\nF2,Bo,20,no\n",
           "faculty_course_competency.csv": "faculty_id,course_id,competency_level,preference_score\nF1,C1,,0.5\n"
                                            "F2,C2,9,\n"}))
    assert data.faculty is not None and data.faculty_competencies is not None
    assert data.faculty["max_hours_per_week"].tolist() == [18.0, 20.0]  # the contract's default, 18
    assert data.faculty["is_active"].tolist() == [True, False]
    assert data.faculty_competencies["competency_level"].tolist() == [6, 9]  # the default, 6
    assert data.faculty_competencies["is_active"].tolist() == [True, True]


def test_competency_errors_name_file_row_and_column(tmp_path):
    competencies = ("faculty_id,course_id,competency_level,is_active\n"
                    "F1,C1,8,yes\n"      # row 2: fine
                    "F9,C1,8,yes\n"      # row 3: no such teacher
                    "F1,C9,8,yes\n"      # row 4: no such course
                    "F1,C2,11,yes\n"     # row 5: competency above 10
                    "F1,C2x,0,maybe\n"   # row 6: no such course, competency below 1, not a boolean
                    "F1,C1,7,yes\n")     # row 7: the pair of row 2 again
    faculty = "faculty_id,max_hours_per_week\nF1,61\n"
    with pytest.raises(InputValidationError) as caught:
        load_institution(write_minimal_institution(
            tmp_path, **{"faculty.csv": faculty, "faculty_course_competency.csv": competencies}))
    found = {(i.code, i.file, i.row, i.column) for i in caught.value.issues}
    file = "faculty_course_competency.csv"
    assert found == {
        ("DANGLING_REFERENCE", file, 3, "faculty_id"),
        ("DANGLING_REFERENCE", file, 4, "course_id"),
        ("DANGLING_REFERENCE", file, 6, "course_id"),
        ("INVALID_NUMBER", file, 5, "competency_level"),
        ("INVALID_NUMBER", file, 6, "competency_level"),
        ("INVALID_BOOLEAN", file, 6, "is_active"),
        ("DUPLICATE_KEY", file, 2, "faculty_id, course_id"),
        ("DUPLICATE_KEY", file, 7, "faculty_id, course_id"),
        ("INVALID_NUMBER", "faculty.csv", 2, "max_hours_per_week"),
    }
    text = str(caught.value)
    assert "faculty_course_competency.csv, row 5, column 'competency_level': must be between 1 and 10" in text
    assert "faculty_course_competency.csv, row 3, column 'faculty_id': not a faculty_id of faculty.csv" in text
    assert "faculty.csv, row 2, column 'max_hours_per_week': must be between 1 and 60" in text


def test_competencies_without_faculty_are_ignored_with_a_warning(tmp_path):
    data = load_institution(write_minimal_institution(
        tmp_path, **{"faculty_course_competency.csv": "faculty_id,course_id\nF1,C1\n"}))
    assert data.faculty is None and data.faculty_competencies is None
    assert any("faculty.csv is absent" in w for w in data.warnings)


@pytest.mark.parametrize(("override", "key"), [
    ("resources.faculty.session_hours=0", "resources.faculty.session_hours"),
    ("resources.faculty.min_competency=11", "resources.faculty.min_competency"),
    ("resources.faculty.default_sessions_per_week=0", "resources.faculty.default_sessions_per_week"),
])
def test_faculty_settings_out_of_range_are_configuration_errors(compose_config, override, key):
    from stage2.config import build_settings

    with pytest.raises(ConfigurationError) as caught:
        build_settings(compose_config([override]))
    assert caught.value.where == key and caught.value.exit_code == 2


# ------------------------------------------------------------------------------------------
# whole runs


def with_faculty(source: Path, target: Path, hours: float, *, per_course: bool) -> Path:
    """A copy of ``source`` with faculty: one teacher of ``hours`` per course (``per_course``), or
    one teacher of ``hours`` competent in every course."""
    shutil.copytree(source, target)
    courses = pd.read_csv(target / "courses.csv", dtype=str)["course_id"]
    if per_course:
        ids = [f"F-{c}" for c in courses]
        pairs = list(zip(ids, courses, strict=True))
    else:
        ids = ["F-ALL"]
        pairs = [("F-ALL", c) for c in courses]
    pd.DataFrame({"faculty_id": ids, "faculty_name": ids, "max_hours_per_week": hours}).to_csv(
        target / "faculty.csv", index=False)
    pd.DataFrame(pairs, columns=["faculty_id", "course_id"]).assign(competency_level=7).to_csv(
        target / "faculty_course_competency.csv", index=False)
    return target


def expected_hours(out: Path, session_hours: float) -> pd.Series:
    """Per course, the section-hours recomputed from batch_course_enrollment.csv."""
    sections = read_output(out, "batch_course_enrollment")
    sections = sections[sections["enrollment_status"] == "ENROLLED"]
    sessions = pd.to_numeric(sections["sessions_per_week"]).fillna(1)
    return (sessions * session_hours).groupby(sections["course_id"]).sum()


def test_run_with_ample_faculty_covers_every_section(make_institution_dir, compose_config, tmp_path):
    input_dir = with_faculty(make_institution_dir(300, seed=1), tmp_path / "input", 60, per_course=True)
    result = run_batching(compose_config, input_dir, tmp_path / "out", ["resources.faculty.session_hours=0.75"])
    out = tmp_path / "out"
    report = json.loads((out / "quality_report.json").read_text())
    assert report["metrics"]["faculty_coverage"] == 1.0
    assert report["faculty"]["checked"] and report["faculty"]["hours_missing"] == 0
    courses = pd.read_csv(out / "faculty_report.csv").set_index("course_id")
    needed = expected_hours(out, 0.75)
    assert courses["hours_needed"].sort_index().to_dict() == pytest.approx(needed.sort_index().to_dict())
    assert (courses["status"] == "covered").all()
    load = pd.read_csv(out / "faculty_load.csv")
    assert load["hours_assigned"].sum() == pytest.approx(needed.sum()) == report["faculty"]["hours_covered"]
    assert result.faculty is not None and result.faculty.coverage == 1.0
    assert not any("INSUFFICIENT_FACULTY" in w for w in result.warnings)


def test_run_with_too_few_faculty_hours_warns_and_reports_the_courses(make_institution_dir, compose_config, tmp_path):
    input_dir = with_faculty(make_institution_dir(300, seed=1), tmp_path / "input", 10, per_course=False)
    out = tmp_path / "out"
    result = run_batching(compose_config, input_dir, out)
    report = json.loads((out / "quality_report.json").read_text())
    needed = expected_hours(out, 1.0).sum()
    assert report["metrics"]["faculty_coverage"] == pytest.approx(10 / needed)
    (warning,) = [w for w in report["warnings"] if "INSUFFICIENT_FACULTY" in w]
    assert f"cover 10 of {needed:g} section-hours" in warning
    shortest = report["faculty"]["courses_short"][0]
    assert shortest["course_id"] in warning and shortest["hours_missing"] > 0
    assert report["faculty"]["n_courses_short"] == (pd.read_csv(out / "faculty_report.csv")["hours_missing"] > 0).sum()
    assert result.warnings == report["warnings"]
    # the audit notebook's section shows the same figures
    run = audit.load_run(out)
    figures = audit.faculty_frame(run).set_index("figure")["value"]
    assert figures["faculty_coverage"] == f"{10 / needed:.1%}"
    short = audit.faculty_short_frame(run)
    assert short["course_id"].iloc[0] == shortest["course_id"] and len(short) == len(report["faculty"]["courses_short"])


def test_the_audit_says_why_the_faculty_check_was_skipped(make_institution_dir, compose_config, tmp_path):
    out = tmp_path / "out"
    run_batching(compose_config, make_institution_dir(300, seed=1), out)
    run = audit.load_run(out)
    note = audit.faculty_frame(run)
    assert isinstance(note, str) and note.startswith("<p>not checked: ") and "faculty" in note
    assert audit.faculty_short_frame(run) is None


def test_a_strict_run_short_of_faculty_fails_with_exit_4_and_leaves_no_tables(make_institution_dir, compose_config,
                                                                             tmp_path):
    from conftest import assert_no_outputs

    input_dir = with_faculty(make_institution_dir(300, seed=1), tmp_path / "input", 10, per_course=False)
    out = tmp_path / "out"
    out.mkdir()
    for stale in ("faculty_report.csv", "faculty_load.csv", "student_batches.csv"):
        (out / stale).write_text("stale\n")  # an earlier run's files must not survive a failed run
    with pytest.raises(InfeasibleError) as caught:
        run_batching(compose_config, input_dir, out, ["strict=true", "batch_size.min=5"])
    assert caught.value.code == "INSUFFICIENT_FACULTY" and caught.value.exit_code == 4
    record = json.loads((out / "errors.json").read_text())
    assert record["error"]["code"] == "INSUFFICIENT_FACULTY" and record["error"]["exit_code"] == 4
    assert record["error"]["details"]["hours_covered"] == 10
    assert_no_outputs(out)
    assert not (out / "faculty_report.csv").exists() and not (out / "faculty_load.csv").exists()
