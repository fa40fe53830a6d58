"""The audit's reading of a run and its integrity re-check, without a kernel."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import assert_outputs_valid

from stage2.reporting import audit


@pytest.fixture(scope="module")
def inputs(pipeline_run):
    return audit.load_inputs(audit.load_run(pipeline_run))


def rewrite(path, change):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(path, index=False)


def test_a_pipeline_run_passes_every_check(pipeline_run, reporting_input_dir, inputs):
    assert_outputs_valid(pipeline_run, reporting_input_dir)  # the run is sound, by the tests' own reading
    run = audit.load_run(pipeline_run)
    assert audit.integrity_failures(run, inputs) == []
    checks = audit.assert_integrity(run, inputs)
    assert len(checks) >= 8


def test_tables_are_read_with_the_contract_types(pipeline_run):
    run = audit.load_run(pipeline_run)
    assert run.batches["student_count"].dtype == "int64"
    assert run.batch_courses["expected_students"].dtype == "int64"
    assert run.membership["student_id"].dtype == "string"
    assert run.batches["capacity_allocated"].notna().all()


def test_empty_cells_are_null_and_na_stays_an_id(tmp_path):
    path = tmp_path / "student_batches.csv"
    header = ("batch_id,tenant_id,institution_id,program_id,batch_code,batch_name,student_count,academic_year,"
              "semester,preferred_shift,capacity_allocated,generation_timestamp,is_active,room_id,shift_id,"
              "group_key,group_status,size_min,size_max")
    path.write_text(header + "\n"
                    "NA,T,I,P,NA-B01,n,20,2024-25,1,,,2025-08-01,true,,,g,ok,15,60\n"
                    "null,T,I,P,NA-B02,n,21,2024-25,1,,,2025-08-01,true,,,g,ok,15,60\n")
    frame = audit.read_run_table(path)
    assert frame["batch_id"].tolist() == ["NA", "null"]
    assert frame["room_id"].isna().all() and frame["shift_id"].isna().all()
    assert frame["capacity_allocated"].isna().all() and str(frame["capacity_allocated"].dtype) == "Int64"


def test_a_non_number_is_named_with_its_row(tmp_path, pipeline_run):
    path = tmp_path / "batch_course_enrollment.csv"
    path.write_text((pipeline_run / "batch_course_enrollment.csv").read_text())
    rewrite(path, lambda f: f.__setitem__("expected_students", f["expected_students"].where(f.index != 2, "lots")))
    with pytest.raises(audit.RunFileError, match=r"expected_students: not a number in row\(s\) 4"):
        audit.read_run_table(path)


def test_unplaced_batches_are_not_a_room_given_twice(run_copy, inputs):
    def unplace(frame):
        frame.loc[:1, ["room_id", "shift_id", "capacity_allocated"]] = ""

    rewrite(run_copy / "student_batches.csv", unplace)
    failures = audit.integrity_failures(audit.load_run(run_copy), inputs)
    assert not [f for f in failures if "rooms given twice" in f]


def test_a_room_given_twice_is_named(run_copy, inputs):
    def double_book(frame):
        frame.loc[1, ["room_id", "shift_id"]] = frame.loc[0, ["room_id", "shift_id"]].to_numpy()
        frame.loc[1, "capacity_allocated"] = frame.loc[0, "capacity_allocated"]

    rewrite(run_copy / "student_batches.csv", double_book)
    run = audit.load_run(run_copy)
    failures = audit.integrity_failures(run, inputs)
    assert any("rooms given twice" in f and run.batches["batch_code"].iloc[1] in f for f in failures), failures
    with pytest.raises(AssertionError, match="rooms given twice"):
        audit.assert_integrity(run, inputs)


def test_a_doctored_measure_is_named(run_copy, inputs):
    path = run_copy / "quality_report.json"
    report = json.loads(path.read_text())
    report["metrics"]["academic_coherence"] = 0.99
    path.write_text(json.dumps(report))
    failures = audit.integrity_failures(audit.load_run(run_copy), inputs)
    assert failures == [f for f in failures if "academic_coherence" in f] and failures


def test_report_tables_are_built_from_the_run(pipeline_run, inputs):
    run = audit.load_run(pipeline_run)
    measures = audit.measures_frame(run.report)
    assert {"academic_coherence", "silhouette_score", "size_bound_violations"} <= set(measures["measure"])
    assert set(measures["verdict"]) <= {"pass", "FAIL", ""}
    assert len(audit.worst_coherence(run, 10)) == min(10, len(run.batches))
    shifts = audit.shift_preferences(run, inputs)
    assert shifts.drop(columns=["preferred shift", "got preferred"]).to_numpy().sum() == len(run.membership)
    assert len(audit.groups_frame(run)) == run.report["metrics"]["n_groups"]
    for plot in (audit.plot_batch_sizes, audit.plot_coherence, audit.plot_utilisation):
        assert audit.figure_png(plot(run)).startswith(b"\x89PNG")


def test_displayed_text_is_escaped(pipeline_run):
    run = audit.load_run(pipeline_run)
    run.report["warnings"] = ["<script>alert(1)</script>"]
    assert "<script>" not in audit.bullets_html(run.report["warnings"])
    frame = pd.DataFrame({"batch": ["<script>x</script>"]})
    assert "<script>" not in audit.styled(frame).to_html()
    run.report["config"] = dict(run.report["config"], institution={"name": "<b>U</b>"})
    assert "<b>U</b>" not in audit.title_html(run)
