"""Enrollment that enforces prerequisites (issue 16, part 1): history terms, eligibility, grades,
each ``enrollment.prerequisites`` policy, the per-programme EAV override and prerequisite cycles.

One small institution with known answers, written as real files and run through the real
pipeline. Two programmes of 20 students each (one batch each), every student in semester 3 of
2024-25 taking C0 (no prerequisite) and C2 (requires C1, minimum grade 2.0):

- P1 S01-S05 took C1 in 2023-24 with grade 3.0 (eligible); S06-S08 with 1.0 (grade below the
  minimum); S09 without a grade (not checkable, eligible); S10-S20 never (missing);
- P1 S01-S03 also take C5 (requires C1 with the letter minimum "C": not checkable);
- P2 nobody took C1 (missing).

So 3 + 11 + 20 = 34 ineligible enrollments and 1 + 3 = 4 minimum grades not checkable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_no_outputs, run_batching

from stage2.contract import load_institution
from stage2.contract.history import CURRENT, HISTORY, LATER, UNORDERED, classify_terms
from stage2.errors import InputValidationError
from stage2.reporting import audit

P1 = [f"S{i:02d}" for i in range(1, 21)]
P2 = [f"T{i:02d}" for i in range(1, 21)]
GOOD, LOW, UNGRADED = P1[:5], P1[5:8], P1[8]
NEVER_TOOK_C1 = P1[9:] + P2
INELIGIBLE = sorted(LOW + NEVER_TOOK_C1)
TAKE_C5 = P1[:3]


def write_institution(root: Path, *, prerequisites: str | None = None, eav: tuple[str, str] | None = None,
                      extra_enrollments: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "programs.csv").write_text("program_id,program_name\nP1,One\nP2,Two\n")
    (root / "courses.csv").write_text("course_id,course_name,course_type,credits,max_sessions_per_week\n"
                                      + "".join(f"C{i},Course {i},CORE,3,3\n" for i in range(6)))
    (root / "rooms.csv").write_text("room_id,capacity\nR1,60\nR2,60\n")
    students = ["student_id,program_id,academic_year,semester"]
    students += [f"{s},P1,2024-25,3" for s in P1] + [f"{s},P2,2024-25,3" for s in P2]
    (root / "student_data.csv").write_text("\n".join(students) + "\n")
    rows = ["student_id,course_id,academic_year,semester,grade"]
    rows += [f"{s},{c},2024-25,3," for s in P1 + P2 for c in ("C0", "C2")]
    rows += [f"{s},C5,2024-25,3," for s in TAKE_C5]
    rows += [f"{s},C1,2023-24,1,3.0" for s in GOOD] + [f"{s},C1,2023-24,1,1.0" for s in LOW]
    rows += [f"{UNGRADED},C1,2023-24,1,"]
    (root / "student_course_enrollment.csv").write_text("\n".join(rows) + "\n" + extra_enrollments)
    if prerequisites is None:
        prerequisites = ("course_id,prerequisite_course_id,is_mandatory,minimum_grade\n"
                         "C2,C1,true,2.0\nC5,C1,,C\nC0,C4,false,\n")
    if prerequisites:
        (root / "course_prerequisites.csv").write_text(prerequisites)
    if eav:
        (root / "dynamic_parameters.csv").write_text("parameter_id,parameter_code\nPRQ,enrollment.prerequisites\n")
        (root / "entity_parameter_values.csv").write_text(
            "value_id,entity_type,entity_id,parameter_id,parameter_value,effective_from\n"
            f"V1,PROGRAM,{eav[0]},PRQ,{eav[1]},2024-01-01\n")
    return root


def run(compose_config, tmp_path: Path, overrides=(), **institution):
    input_dir = write_institution(tmp_path / "input", **institution)
    out = tmp_path / "out"
    result = run_batching(compose_config, input_dir, out, ["batch_size.min=10", *overrides])
    report = json.loads((out / "quality_report.json").read_text())
    listed = pd.read_csv(out / "prerequisite_report.csv", dtype=str, keep_default_na=False)
    courses = pd.read_csv(out / "batch_course_enrollment.csv", dtype=str, keep_default_na=False)
    batches = pd.read_csv(out / "student_batches.csv", dtype=str, keep_default_na=False)
    courses = courses.merge(batches[["batch_id", "program_id"]], on="batch_id")
    expected = {(p, c): int(n) for p, c, n in courses[["program_id", "course_id", "expected_students"]].itertuples(
        index=False)}
    return result, report, listed, expected


def test_report_lists_every_ineligible_enrollment_and_keeps_it(compose_config, tmp_path):
    result, report, listed, expected = run(compose_config, tmp_path)
    assert result.metrics["prerequisite_violations"] == len(INELIGIBLE) == 34
    assert list(listed.columns) == ["student_id", "course_id", "missing_prerequisite_id", "reason", "action"]
    wanting = listed.loc[listed["reason"] != "grade_not_checkable"]
    assert sorted(wanting["student_id"]) == INELIGIBLE
    assert set(wanting["course_id"]) == {"C2"} and set(wanting["missing_prerequisite_id"]) == {"C1"}
    reasons = dict(zip(wanting["student_id"], wanting["reason"], strict=True))
    assert {reasons[s] for s in LOW} == {"grade_below_minimum"}
    assert {reasons[s] for s in NEVER_TOOK_C1} == {"missing"}
    # not checkable: the ungraded history row, and the letter minimum of C5; both stay eligible
    unchecked = listed.loc[listed["reason"] == "grade_not_checkable"]
    assert sorted(zip(unchecked["student_id"], unchecked["course_id"], strict=True)) == sorted(
        [(UNGRADED, "C2")] + [(s, "C5") for s in TAKE_C5])
    assert set(listed["action"]) == {"reported"}
    # the optional prerequisite C4 of C0 is never required
    assert "C0" not in set(listed["course_id"])
    # reported, not excluded: every current enrollment is batched; history (C1) is not
    assert expected[("P1", "C2")] == expected[("P2", "C2")] == 20 and expected[("P1", "C5")] == 3
    assert ("P1", "C1") not in expected
    section = report["prerequisites"]
    assert section["policy"] == "report" and section["violations"] == 34 and section["excluded"] == 0
    assert section["grades_not_checkable"] == 4 and section["n_rows"] == len(listed) == 38
    assert report["metrics"]["prerequisite_violations"] == 34
    # the audit notebook's section shows the same figures and the first rows of the list
    audited = audit.load_run(tmp_path / "out")
    figures = audit.prerequisites_frame(audited).set_index("figure")["value"]
    assert figures["policy"] == "report" and figures["prerequisite_violations"] == "34"
    assert figures["grades not checkable"] == "4" and figures["rows listed"] == "38"
    rows = audit.prerequisite_rows(audited)
    assert rows.astype(str).equals(listed.head(len(rows)).astype(str)) and len(rows) > 0


def test_exclude_leaves_ineligible_enrollments_out_of_the_batches(compose_config, tmp_path):
    result, report, listed, expected = run(compose_config, tmp_path, ["enrollment.prerequisites=exclude"])
    wanting = listed.loc[listed["reason"] != "grade_not_checkable"]
    assert set(wanting["action"]) == {"excluded"}
    assert set(listed.loc[listed["reason"] == "grade_not_checkable", "action"]) == {"reported"}
    # P1: the 5 with a good grade and the ungraded one attend C2; P2: nobody, so no C2 row
    assert expected[("P1", "C2")] == len(GOOD) + 1
    assert ("P2", "C2") not in expected and expected[("P2", "C0")] == 20
    assert report["prerequisites"]["excluded"] == 34 and result.metrics["prerequisite_violations"] == 34


def test_strict_fails_naming_every_ineligible_enrollment_and_writes_nothing(compose_config, tmp_path):
    input_dir = write_institution(tmp_path / "input")
    out = tmp_path / "out"
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, input_dir, out, ["batch_size.min=10", "enrollment.prerequisites=strict"])
    error = caught.value
    assert error.code == "PREREQUISITE_NOT_MET" and error.exit_code == 3
    named = [issue for issue in error.issues if issue.code == "PREREQUISITE_NOT_MET"]
    assert len(named) == 34
    assert sorted(s for s in INELIGIBLE if any(f"'{s}'" in issue.message for issue in named)) == INELIGIBLE
    assert all("'C2'" in issue.message and "'C1'" in issue.message for issue in named)
    assert_no_outputs(out)
    assert json.loads((out / "errors.json").read_text())["error"]["code"] == "PREREQUISITE_NOT_MET"
    # without strict=true the run stops at the prerequisites stage: nothing is clustered first
    done = [json.loads(line).get("stage") for line in (out / "stage2.jsonl").read_text().splitlines()
            if json.loads(line).get("event") == "stage_done"]
    assert "configuration" in done and "sizing" not in done and "clustering" not in done


def test_strict_names_the_first_ones_and_counts_the_rest(compose_config, tmp_path):
    input_dir = write_institution(tmp_path / "input")
    with pytest.raises(InputValidationError) as caught:
        run_batching(compose_config, input_dir, tmp_path / "out",
                     ["batch_size.min=10", "enrollment.prerequisites=strict", "enrollment.prerequisites_listed=5"])
    issues = caught.value.issues
    assert len(issues) == 6 and "29 more" in issues[-1].message and "34 enrollments" in issues[-1].message


def test_off_checks_nothing_and_changes_nothing(compose_config, tmp_path):
    result, report, listed, expected = run(compose_config, tmp_path / "off", ["enrollment.prerequisites=off"])
    assert result.metrics["prerequisite_violations"] is None and listed.empty
    assert audit.prerequisites_frame(audit.load_run(tmp_path / "off" / "out")) == (
        "<p>not checked: enrollment.prerequisites=off</p>")
    assert expected[("P2", "C2")] == 20
    # without course_prerequisites.csv the same batches, and no violation
    plain, _, plain_listed, _ = run(compose_config, tmp_path / "none", prerequisites="")
    assert plain.metrics["prerequisite_violations"] == 0 and plain_listed.empty
    for table in ("student_batches", "batch_student_membership", "batch_course_enrollment"):
        assert ((tmp_path / "off" / "out" / f"{table}.csv").read_bytes()
                == (tmp_path / "none" / "out" / f"{table}.csv").read_bytes()), table


def test_an_eav_parameter_sets_the_policy_of_one_programme(compose_config, tmp_path):
    result, report, listed, expected = run(compose_config, tmp_path, eav=("P2", "exclude"))
    wanting = listed.loc[listed["reason"] != "grade_not_checkable"]
    actions = wanting.groupby(wanting["student_id"].str[0])["action"].agg(set).to_dict()
    assert actions == {"S": {"reported"}, "T": {"excluded"}}
    assert expected[("P1", "C2")] == 20 and ("P2", "C2") not in expected
    assert report["prerequisites"]["program_policies"] == {"P2": "exclude"}
    assert any(o["parameter_code"] == "enrollment.prerequisites" and o["entity_id"] == "P2"
               for o in report["eav_overrides"])
    # a programme switched off is neither checked nor counted
    off, _, off_listed, _ = run(compose_config, tmp_path / "off", eav=("P2", "off"))
    assert off.metrics["prerequisite_violations"] == len(LOW) + len(P1[9:]) == 14
    assert not off_listed["student_id"].str.startswith("T").any()


def test_an_unknown_policy_is_a_configuration_error(compose_config, tmp_path):
    from stage2.errors import ConfigurationError

    input_dir = write_institution(tmp_path / "input")
    with pytest.raises(ConfigurationError) as caught:
        run_batching(compose_config, input_dir, tmp_path / "out", ["enrollment.prerequisites=sometimes"])
    assert caught.value.where == "enrollment.prerequisites" and caught.value.exit_code == 2
    with pytest.raises(ConfigurationError) as caught:
        run_batching(compose_config, write_institution(tmp_path / "eav", eav=("P2", "maybe")), tmp_path / "out2")
    assert "entity_parameter_values.csv, row 2" in str(caught.value)


# ------------------------------------------------------------------------------ history terms


def test_history_rows_are_kept_apart_from_the_current_ones(tmp_path):
    data = load_institution(write_institution(tmp_path / "input"))
    assert sorted(data.history["student_id"]) == sorted(GOOD + LOW + [UNGRADED])
    assert set(data.history["course_id"]) == {"C1"}
    assert data.history.set_index("student_id")["grade"].to_dict()[GOOD[0]] == 3.0
    assert "C1" not in set(data.active_enrollments["course_id"])
    assert len(data.active_enrollments) == 2 * 40 + 3


def test_a_retake_keeps_the_current_row_and_the_history_row(tmp_path):
    """S10 failed C2 in 2023-24 and takes it again now: the history row listed first must not
    hide the current one (one pair per term). A current row without a term beside the same
    course of the student's term is one enrollment (the repeat ignored, with a warning)."""
    root = write_institution(tmp_path / "input")
    path = root / "student_course_enrollment.csv"
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, "S10,C2,2023-24,1,0.5", *rows, "S11,C0,,,"]) + "\n")
    data = load_institution(root)
    current = data.active_enrollments
    assert sorted(current.loc[current["student_id"] == "S10", "course_id"]) == ["C0", "C2"]
    assert (data.history["student_id"] == "S10").sum() == 1
    assert (current["student_id"] == "S11").sum() == 2  # C0 once, C2
    assert len(current) == 2 * 40 + 3
    assert any("current enrollment(s) repeating the same (student_id, course_id) ignored" in w for w in data.warnings)


def test_an_enrollment_of_a_later_term_is_named_by_row(tmp_path):
    extra = "S01,C3,2025-26,1,\nS02,C3,2024-25,4,\n"
    with pytest.raises(InputValidationError) as caught:
        load_institution(write_institution(tmp_path / "input", extra_enrollments=extra))
    later = [i for i in caught.value.issues if i.code == "LATER_TERM_ENROLLMENT"]
    assert [(i.file, i.row) for i in later] == [("student_course_enrollment.csv", 94),
                                                  ("student_course_enrollment.csv", 95)]
    assert later[0].value == "2025-26 semester 1"


def test_a_student_with_only_history_has_nothing_to_batch(tmp_path):
    root = write_institution(tmp_path / "input")
    (root / "student_data.csv").write_text((root / "student_data.csv").read_text() + "U01,P1,2024-25,3\n")
    (root / "student_course_enrollment.csv").write_text(
        (root / "student_course_enrollment.csv").read_text() + "U01,C1,2023-24,1,4\n")
    with pytest.raises(InputValidationError) as caught:
        load_institution(root)
    (issue,) = caught.value.issues
    assert issue.code == "FEATURE_EXTRACTION_ERROR" and issue.value == "U01"


def test_terms_order_by_starting_year_then_semester():
    row_year = pd.Series(["2023-24", "2024-25", "2024/2025", "2024-25", None, "2025-26", "AY2024", "next year",
                          "2024-25"])
    row_semester = pd.Series([5, 1, 2, 3, 9, 1, 1, 1, None], dtype="Int64")
    terms = classify_terms(row_year, row_semester, pd.Series(["2024-25"] * 9), pd.Series([2] * 9, dtype="Int64"))
    assert terms.tolist() == [HISTORY, HISTORY, CURRENT, LATER, CURRENT, LATER, HISTORY, UNORDERED, CURRENT]


def test_terms_looked_up_by_student_position_match_the_aligned_terms():
    rng = np.random.default_rng(3)
    years = np.array(["2023-24", "2024-25", "2024/2025", "", "AY2025", "later"], dtype=object)
    student_year = pd.Series(rng.choice(years, 40), dtype="string").mask(rng.random(40) < 0.1)
    student_semester = pd.Series(rng.integers(1, 4, 40), dtype="Int64").mask(rng.random(40) < 0.1)
    rows = rng.integers(-1, 40, 500)
    row_year = pd.Series(rng.choice(years, 500), dtype="string").mask(rng.random(500) < 0.1)
    row_semester = pd.Series(rng.integers(1, 4, 500), dtype="Int64").mask(rng.random(500) < 0.1)
    by_position = classify_terms(row_year, row_semester, student_year, student_semester, student_rows=rows)
    known = rows >= 0
    aligned = classify_terms(row_year, row_semester, student_year.iloc[np.maximum(rows, 0)].reset_index(drop=True),
                             student_semester.iloc[np.maximum(rows, 0)].reset_index(drop=True))
    assert (by_position[known] == aligned[known]).all()
    assert (by_position[~known] == CURRENT).all()
    assert {HISTORY, CURRENT, LATER, UNORDERED} <= set(by_position.tolist())


# ------------------------------------------------------------------------------ cycles


@pytest.mark.parametrize(("rows", "cycle"), [
    ("C2,C1\nC1,C2\n", "C1 -> C2 -> C1"),
    ("C2,C1\nC3,C2\nC1,C3\nC5,C1\n", "C1 -> C2 -> C3 -> C1"),
])
def test_a_cycle_of_prerequisites_is_an_input_error_naming_it(tmp_path, rows, cycle):
    root = write_institution(tmp_path / "input", prerequisites="course_id,prerequisite_course_id\n" + rows)
    with pytest.raises(InputValidationError) as caught:
        load_institution(root)
    (issue,) = caught.value.issues
    assert issue.code == "PREREQUISITE_CYCLE" and issue.file == "course_prerequisites.csv"
    assert cycle in issue.message
