"""The audit notebook, executed by papermill on a real run (a kernel per test: marked slow)."""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
import pytest

from stage2.errors import ERROR_CODES, Stage2Error
from stage2.reporting import AuditFailed, run_audit_notebook
from stage2.reporting.measures import OPTIONAL_MEASURES, QUALITY_MEASURES
from stage2.reporting.notebook import TEMPLATE


def test_template_is_stored_clean_and_parameterised():
    nb = nbformat.read(str(TEMPLATE), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "store the notebook without outputs"
    parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    assert re.search(r'^run_dir = ""', parameters[0].source, re.M)
    assert re.search(r'^mlflow_run_id = ""', parameters[0].source, re.M)
    assert nb.metadata.kernelspec.name == "python3"
    assert max(len(c.source.splitlines()) for c in code) <= 6, "keep code cells short: helpers live in audit.py"


def test_audit_failed_is_a_stage2_error_with_its_fix():
    assert issubclass(AuditFailed, Stage2Error)
    error = AuditFailed("the audit notebook failed in Integrity: AssertionError: x")
    assert error.code == "AUDIT_FAILED" and error.exit_code == 1  # README: exit 1, AUDIT_FAILED
    # the fix says what to do: open the partial notebook; rerun stage2 if the run's files were
    # changed since; otherwise report a bug
    fix = error.fix
    assert fix == ERROR_CODES["AUDIT_FAILED"]
    for advice in ("open the partially executed notebook", "integrity check", "rerun stage2", "report it"):
        assert advice in fix, advice
    assert str(error).endswith(f" Fix: {fix}.") and error.to_dict()["fix"] == fix


@pytest.mark.slow
def test_notebook_executes_into_an_html_report_without_code(run_copy, caplog):
    notebook, html_path = run_audit_notebook(run_copy, mlflow_run_id="mlflow-run-0123")

    assert notebook == run_copy / "audit_report.ipynb" and html_path == run_copy / "audit_report.html"
    assert not [r for r in caplog.records if r.levelname == "WARNING" and not r.name.startswith("stage2")], caplog.text
    executed = nbformat.read(str(notebook), as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], "no warnings in the report"

    html = html_path.read_text(encoding="utf-8")
    report = json.loads((run_copy / "quality_report.json").read_text())
    for name in QUALITY_MEASURES:
        if name in OPTIONAL_MEASURES and name not in report["metrics"]:
            continue  # e.g. faculty_coverage, reported only with the faculty tables
        assert name in html, name
    for section in ("Configuration", "Integrity", "Quality measures", "Batch sizes per group",
                    "Academic coherence per batch", "Rooms and shifts", "Rule breaches", "Prerequisites",
                    "Faculty feasibility",
                    "EAV overrides and warnings"):
        assert section in html, section
    assert "mlflow-run-0123" in html and report["data_digest"] in html
    assert html.count("data:image/png;base64,") >= 3  # sizes, coherence, utilisation
    # least coherent batch listed
    quality = pd.read_csv(run_copy / "batch_quality.csv", dtype={"batch_code": str})
    assert quality.sort_values(["academic_coherence", "batch_code"])["batch_code"].iloc[0] in html
    # a report, not code: no source of any code cell, no prompts, nothing fetched
    assert "import " not in html
    for cell in executed.cells:
        if cell.cell_type == "code":
            for line in filter(None, (ln.strip() for ln in cell.source.splitlines())):
                assert line not in html, line
    body = re.sub(r"<style.*?</style>", "", html, flags=re.S)
    assert "In&nbsp;[" not in body and "Out[" not in body and "hl-python" not in body
    assert "<script" not in html
    assert 'alt="No description' not in html  # every figure has its alternative text


@pytest.mark.slow
def test_tampered_membership_fails_naming_the_student(run_copy):
    path = run_copy / "batch_student_membership.csv"
    membership = pd.read_csv(path, dtype=str, keep_default_na=False)
    student = membership["student_id"].iloc[7]
    membership.drop(index=7).to_csv(path, index=False)

    with pytest.raises(AuditFailed) as failure:
        run_audit_notebook(run_copy, timeout_s=300)

    message = str(failure.value)
    assert failure.value.code == "AUDIT_FAILED"
    assert f"active students in no batch: {student}" in message
    assert "AssertionError" in message and "Integrity" in message  # what failed, in which section
    assert str(run_copy / "audit_report.ipynb") in message  # where the partial notebook is
    assert (run_copy / "audit_report.ipynb").is_file()
    assert not (run_copy / "audit_report.html").exists()
    assert failure.value.details["ename"] == "AssertionError"
    assert message.endswith(f" Fix: {ERROR_CODES['AUDIT_FAILED']}.")  # and what to do about it


def test_a_directory_that_is_no_run_fails_before_starting_a_kernel(tmp_path):
    with pytest.raises(AuditFailed, match="quality_report.json") as failure:
        run_audit_notebook(tmp_path)
    assert failure.value.fix == ERROR_CODES["AUDIT_FAILED"] and "Fix: open the partially" in str(failure.value)
