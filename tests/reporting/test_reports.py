"""write_reports: console, txt, html, csv from a real run's quality_report.json."""

from __future__ import annotations

import csv
import json

import pytest

from stage2.errors import ConfigurationError
from stage2.reporting import REPORT_FORMATS, write_reports

EVIL = '<script>alert("x")</script>-B01'


def test_every_format_writes_its_file(run_copy, capsys):
    written = write_reports(run_copy, ["console", "txt", "html", "csv"])
    assert written == [run_copy / "report.txt", run_copy / "report.html", run_copy / "metrics.csv"]
    report = json.loads((run_copy / "quality_report.json").read_text())

    console = capsys.readouterr().out
    text = (run_copy / "report.txt").read_text(encoding="utf-8")
    for output in (console, text):
        assert "academic_coherence" in output and "constraint_satisfaction_rate" in output
        assert f"Groups: {len(report['groups'])}" in output
        assert f"Warnings: {len(report['warnings'])}" in output
        for name in report["thresholds"]:
            assert name in output
        assert ("pass" if report["thresholds"]["academic_coherence"]["passed"] else "FAIL") in output
    assert "\x1b[" not in text  # plain text

    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<style>" in page and "<script" not in page and "http" not in page  # standalone
    for name in ("academic_coherence", "resource_utilization", "size_balance", "silhouette_score"):
        assert name in page
    for section in ("Quality measures", "Thresholds", "Groups", "Least coherent batches", "Rule breaches",
                    "EAV overrides", "Warnings"):
        assert f"<h2>{section}" in page

    with open(run_copy / "metrics.csv", newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert list(rows) == list(report["metrics"])
    assert list(next(iter(rows.values()))) == ["name", "value", "threshold", "passed"]
    for name, verdict in report["thresholds"].items():
        assert float(rows[name]["value"]) == pytest.approx(verdict["value"])
        assert float(rows[name]["threshold"]) == verdict["threshold"]
        assert rows[name]["passed"] == str(verdict["passed"]).lower()
    assert rows["n_students"]["threshold"] == "" and rows["n_students"]["passed"] == ""
    assert rows["hard_constraint_violations"]["passed"] == "true"


def test_only_the_formats_asked_for(run_copy):
    assert write_reports(run_copy, ["csv"]) == [run_copy / "metrics.csv"]
    assert not (run_copy / "report.html").exists() and not (run_copy / "report.txt").exists()


def test_html_escapes_user_data(run_copy):
    path = run_copy / "quality_report.json"
    report = json.loads(path.read_text())
    report["thresholds"]["academic_coherence"].update(passed=False, responsible=[EVIL])
    report["groups"][0]["key"] = EVIL
    report["warnings"].append(f"batch {EVIL} is odd")
    report["eav_overrides"].append({"parameter_code": "batch_size.max", "entity_type": "PROGRAM",
                                    "entity_id": EVIL, "value": 40, "value_id": "V9"})
    path.write_text(json.dumps(report))
    (run_copy / "batch_quality.csv").unlink()  # the breaches then come from the report

    write_reports(run_copy, ["html", "txt"])
    page = (run_copy / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;-B01" in page
    assert EVIL in (run_copy / "report.txt").read_text(encoding="utf-8")  # text stays text


def test_unknown_format_is_a_configuration_error(run_copy):
    with pytest.raises(ConfigurationError) as failure:
        write_reports(run_copy, ["html", "pdf"])
    message = str(failure.value)
    assert "'pdf'" in message
    assert all(name in message for name in REPORT_FORMATS)
    assert failure.value.exit_code == 2
    assert not (run_copy / "report.html").exists()  # nothing written
