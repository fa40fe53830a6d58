"""Faults injected inside a real run: what is left behind and what is recorded.

Each test runs the real pipeline on a small institution and breaks one thing from the inside
(a stage producing a wrong table, a write failing half-way, a bug, a failing audit cell):
the run must fail with the right record in ``errors.json`` and no Stage 3 CSV, except for a
failing audit notebook, which fails the run only after the checked CSVs were written.
"""

from __future__ import annotations

import json

import nbformat
import pytest

import stage2.contract.csvio
import stage2.pipeline.stages as stages
import stage2.reporting.notebook as notebook
from stage2 import load_config, process_student_batching
from stage2.errors import EnvironmentFault, InvariantViolation
from stage2.outputs import ERRORS_FILE, STAGE3_TABLES
from stage2.reporting import AuditFailed

OVERRIDES = ["tracking.enabled=false", "report.notebook=false", "as_of=2025-08-01T00:00:00"]


def run(input_dir, out, extra=()):
    return process_student_batching(load_config([*OVERRIDES, *extra]), input_dir=input_dir, output_dir=out)


def stage3_files(out):
    return sorted(p.name for p in out.iterdir() if p.suffix == ".csv" and p.stem in STAGE3_TABLES)


def error_record(out):
    return json.loads((out / ERRORS_FILE).read_text())


def test_a_stage_that_loses_a_student_breaks_an_invariant_and_writes_nothing(make_institution_dir, tmp_path,
                                                                             monkeypatch):
    real = stages.build_membership

    def losing_one(*args, **kwargs):
        return real(*args, **kwargs).iloc[1:]

    monkeypatch.setattr(stages, "build_membership", losing_one)
    with pytest.raises(InvariantViolation, match="active students in no batch"):
        run(make_institution_dir(200), tmp_path)
    assert stage3_files(tmp_path) == []
    record = error_record(tmp_path)
    assert record["status"] == "failed" and record["error"]["code"] == "CONSTRAINT_VIOLATION"
    assert "active students in no batch" in record["error"]["message"]


def test_a_write_failing_half_way_leaves_no_csv(make_institution_dir, tmp_path, monkeypatch):
    real = stage2.contract.csvio.write_csv
    written = []

    def full_disk_on_the_second(frame, path, *args, **kwargs):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        return real(frame, path, *args, **kwargs)

    monkeypatch.setattr("stage2.outputs.write_csv", full_disk_on_the_second)
    with pytest.raises(EnvironmentFault, match="No space left") as caught:  # not a bug: exit 5
        run(make_institution_dir(200), tmp_path)
    assert (caught.value.code, caught.value.exit_code) == ("OUTPUT_NOT_WRITABLE", 5)
    assert len(written) == 1  # the first table was written (into the staging directory) ...
    assert stage3_files(tmp_path) == []  # ... and none reached the run directory
    assert not list(tmp_path.glob(".staging-*"))
    assert error_record(tmp_path)["error"]["code"] == "OUTPUT_NOT_WRITABLE"


def test_a_bug_is_recorded_as_an_internal_error(make_institution_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(stages, "plan_batches", broken)
    with pytest.raises(ZeroDivisionError):
        run(make_institution_dir(200), tmp_path)
    record = error_record(tmp_path)
    assert record["status"] == "failed"
    assert record["error"] == {"code": "INTERNAL_ERROR", "message": "ZeroDivisionError: injected",
                               "fix": "this is a bug in stage2; please report it"}
    assert stage3_files(tmp_path) == []
    log = (tmp_path / "stage2.jsonl").read_text().splitlines()
    assert any(json.loads(line).get("event") == "run_failed" for line in log)


@pytest.mark.slow
def test_a_failing_audit_fails_the_run_but_keeps_the_checked_csvs(make_institution_dir, tmp_path, monkeypatch):
    template = nbformat.read(notebook.TEMPLATE, as_version=4)
    template.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('injected audit failure')"))
    broken = tmp_path / "broken_audit.ipynb"
    nbformat.write(template, broken)
    monkeypatch.setattr(notebook, "TEMPLATE", broken)
    out = tmp_path / "run"
    with pytest.raises(AuditFailed, match="injected audit failure"):
        run(make_institution_dir(200), out, ["report.notebook=true"])
    assert stage3_files(out) == sorted(f"{name}.csv" for name in STAGE3_TABLES)
    record = error_record(out)
    assert record["error"]["code"] == "AUDIT_FAILED"
    assert (out / "audit_report.ipynb").exists()  # the partly executed notebook, to read
