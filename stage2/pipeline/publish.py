"""Publishing a computed batching: the Stage 3 CSVs (all or none), ``batch_quality.csv``,
``quality_report.json``, the MLflow metrics and artifacts, and the reports; or, for a dry run,
``validation_report.json``.

Nothing here changes a batch: these steps read the catalog that
:data:`stage2.pipeline.stages.BATCHING_STAGES` filled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from stage2 import __version__
from stage2.allocation import Allocation
from stage2.config import BatchingSettings
from stage2.config.schema import ReportConfig, Stage2Config
from stage2.contract import InstitutionData
from stage2.faculty import FacultyCheck
from stage2.memory import peak_rss_mb
from stage2.metrics import QualityReport
from stage2.outputs import (
    BATCH_QUALITY,
    FACULTY_LOAD_TABLE,
    FACULTY_REPORT_TABLE,
    PREREQUISITE_REPORT,
    QUALITY_REPORT,
    REBATCH_DIFF_TABLE,
    RESOLVED_CONFIG,
    VALIDATION_REPORT,
    formula_like_ids,
    write_json,
    write_tables_atomically,
)
from stage2.pipeline.runner import Catalog, StageRunner
from stage2.prerequisites import PrerequisiteCheck
from stage2.reporting import AuditFailed, run_audit_notebook, write_reports
from stage2.runlog import JSONL_FILE, audit
from stage2.sizing import BatchPlan
from stage2.tracking import TrackingRun

#: rows of the student table logged with the MLflow dataset input (its digest covers all)
DATASET_SAMPLE_ROWS = 1000
#: the publishing steps, after the batching stages (progress display, per-stage runtimes)
PUBLISH_STEPS = ("outputs", "reports")


@dataclass
class BatchingResult:
    """What a run produced; the same tables are in ``output_dir`` as CSV files. A dry run
    has a plan but empty tables and no quality report."""

    output_dir: Path
    plan: BatchPlan
    settings: BatchingSettings
    runtimes: dict[str, float]
    batches: pd.DataFrame = field(default_factory=pd.DataFrame)
    membership: pd.DataFrame = field(default_factory=pd.DataFrame)
    batch_courses: pd.DataFrame = field(default_factory=pd.DataFrame)
    quality: QualityReport | None = None
    warnings: list[str] = field(default_factory=list)
    run_id: str | None = None
    files: list[Path] = field(default_factory=list)
    dry_run: bool = False
    resumed_from: str | None = None
    #: the faculty check (``checked`` false when the faculty tables are absent); None in a dry run
    faculty: FacultyCheck | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.quality.metrics if self.quality is not None else {}


def collect_warnings(catalog: Catalog) -> list[str]:
    """Every warning of the run, in stage order, plus identifiers a spreadsheet would read as
    formulas."""
    data: InstitutionData = catalog["data"]
    run: TrackingRun = catalog["run"]
    warnings = [run.unavailable] if run.unavailable else []
    warnings += list(data.warnings) + list(catalog["settings"].warnings) + catalog["plan"].warnings
    if "rebatch_plan" in catalog:
        warnings += catalog["rebatch_plan"].warnings + catalog["rebatching"].warnings
    warnings += catalog["allocation"].warnings
    if "faculty" in catalog:
        warnings += catalog["faculty"].warnings
    risky = (formula_like_ids(catalog["membership"], ["student_id", "program_id"])
             + formula_like_ids(catalog["batches"], ["program_id"]))
    if risky:
        warnings.append(f"identifiers a spreadsheet would read as formulas (kept exactly, Stage 3 joins on them): "
                        f"{', '.join(map(repr, risky[:10]))}")
    return warnings


def publish(catalog: Catalog, out: Path, runner: StageRunner, run: TrackingRun, context: dict[str, Any],
            started: float, resolved: dict[str, Any]) -> BatchingResult:
    """Write and log a computed batching. ``started``: the run's ``time.perf_counter()`` start;
    ``resolved``: the configuration as a plain dict (the report's record of it)."""
    config: Stage2Config = catalog["config"]
    quality: QualityReport = catalog["quality"]
    warnings = collect_warnings(catalog)
    context["warnings"] = warnings

    tables = {
        "student_batches": catalog["batches"],
        "batch_student_membership": catalog["membership"],
        "batch_course_enrollment": catalog["batch_courses"],
    }
    if "rebatch" in catalog:
        tables[REBATCH_DIFF_TABLE] = catalog["rebatch"].diff
    faculty: FacultyCheck = catalog["faculty"]
    if faculty.checked:
        tables[FACULTY_REPORT_TABLE] = faculty.courses
        tables[FACULTY_LOAD_TABLE] = faculty.load
    with runner.timed("outputs"):
        files = write_tables_atomically(out, tables)
        (out / BATCH_QUALITY).write_text(quality.batch_quality.to_csv(index=False))
        check: PrerequisiteCheck = catalog["prerequisites"]
        check.report.to_csv(out / PREREQUISITE_REPORT, index=False)

    for message in warnings:
        if message != run.unavailable:  # logged when it happened
            audit("warning", "%s", message, level=logging.WARNING)
    runtimes = dict(runner.runtimes)
    quality.metrics["runtime_s"] = time.perf_counter() - started
    quality.metrics["peak_memory_mb"] = peak_rss_mb()
    quality.metrics["peak_memory_workers_mb"] = catalog["clustering"].workers_peak_mb
    for stage, seconds in runtimes.items():
        quality.metrics[f"runtime_s.{stage}"] = seconds
    report = quality_report(catalog, run, warnings, resolved)
    report["resumed_from"] = runner.resumed_from
    if "rebatch" in catalog:
        report["rebatch"] = rebatch_section(catalog)
    files.append(write_json(out / QUALITY_REPORT, report))
    log_summary(quality, out)

    run.log_metrics(quality.metrics)
    if "rebatch" in catalog:
        run.log_metrics({f"rebatch.{name}": value for name, value in catalog["rebatch"].metrics.items()
                         if isinstance(value, (int, float))})
    run.set_tags({"passed_thresholds": quality.passed, "n_warnings": len(warnings)})
    data: InstitutionData = catalog["data"]
    institution_name = config.institution.name if config.institution else None
    if config.tracking.log_artifacts:
        # a schema sample of the students; the digest identifies the whole input
        sample = data.active_students[["student_id", "program_id", "academic_year"]].head(DATASET_SAMPLE_ROWS)
        run.log_input_dataset(sample, source=str(data.input_dir), name=institution_name or data.input_dir.name,
                              digest=data.digest)
        run.log_artifacts(files + [out / RESOLVED_CONFIG, out / BATCH_QUALITY, out / PREREQUISITE_REPORT])

    with runner.timed("reports"):
        report_files = write_all_reports(out, config.report, run)
    if config.tracking.log_artifacts:
        run.log_artifacts(report_files, artifact_path="reports")
        run.log_artifacts(sorted(out.glob("*.log")) + [out / JSONL_FILE], artifact_path="logs")
    run.log_metrics({"runtime_s.reports": runner.runtimes["reports"]})
    return BatchingResult(
        output_dir=out, plan=catalog["plan"], settings=catalog["settings"], runtimes=runtimes,
        batches=catalog["batches"], membership=catalog["membership"], batch_courses=catalog["batch_courses"],
        quality=quality, warnings=warnings, run_id=run.run_id, files=files, resumed_from=runner.resumed_from,
        faculty=faculty,
    )


def write_all_reports(out: Path, report_config: ReportConfig, run: TrackingRun) -> list[Path]:
    """The human-readable reports and, when configured, the executed audit notebook. A
    failing notebook is recorded on the MLflow run and re-raised (the CSVs stay)."""
    files = write_reports(out, list(report_config.formats))
    if report_config.notebook:
        try:
            files += list(run_audit_notebook(out, timeout_s=report_config.notebook_timeout_s,
                                             mlflow_run_id=run.run_id))
        except AuditFailed:
            notebook = out / "audit_report.ipynb"
            if notebook.exists():
                run.log_artifacts([notebook], artifact_path="reports")
            raise
    return files


def publish_dry_run(catalog: Catalog, out: Path, runner: StageRunner, run: TrackingRun,
                    context: dict[str, Any]) -> BatchingResult:
    """Write the plan (groups, batches per group, room check) as ``validation_report.json``."""
    plan: BatchPlan = catalog["plan"]
    settings: BatchingSettings = catalog["settings"]
    report = dry_run_report(catalog, run)
    warnings = report["warnings"]
    n_batches, n_slots = report["n_batches"], report["room_check"]["slots"]
    context["warnings"] = warnings
    path = write_json(out / VALIDATION_REPORT, report)
    for message in warnings:
        if message != run.unavailable:  # logged when it happened
            audit("warning", "%s", message, level=logging.WARNING)
    audit("dry_run", "dry run: input and configuration valid; %d groups -> %d batches; %d slots; plan in %s",
          len(plan.groups), n_batches, n_slots, path)
    run.log_artifacts([path])
    return BatchingResult(output_dir=out, plan=plan, settings=settings, runtimes=dict(runner.runtimes),
                          warnings=warnings, run_id=run.run_id, files=[path], dry_run=True)


def dry_run_report(catalog: Catalog, run: TrackingRun | None = None) -> dict[str, Any]:
    """The content of ``validation_report.json``, computed from a catalog that holds ``data``,
    ``settings``, ``rooms`` and ``plan``; writes nothing (also
    :func:`stage2.api.validate_batch_processing_inputs`, without a tracking run)."""
    run = run if run is not None else TrackingRun(None, None)
    plan: BatchPlan = catalog["plan"]
    data: InstitutionData = catalog["data"]
    settings: BatchingSettings = catalog["settings"]
    rooms: pd.DataFrame = catalog["rooms"]
    n_batches = plan.n_batches
    n_slots = len(rooms) * len(data.shifts)
    largest_batch = max((int(g.batch_sizes.max()) for g in plan.groups), default=0)
    largest_room = int(rooms["capacity"].max()) if len(rooms) else 0
    warnings = ([run.unavailable] if run.unavailable else []) + list(data.warnings) + list(settings.warnings)
    warnings += plan.warnings
    if n_batches > n_slots:
        warnings.append(f"[INSUFFICIENT_ROOMS] {n_batches} batches planned but only {n_slots} (room, shift) slots")
    if largest_batch > largest_room:
        warnings.append(f"[INSUFFICIENT_ROOMS] a planned batch of {largest_batch} exceeds the largest room "
                        f"({largest_room})")
    return {
        "stage2_version": __version__,
        "status": "valid",
        "run_id": run.run_id,
        "tracking": run.summary(),
        "input_dir": str(data.input_dir),
        "data_digest": data.digest,
        "n_students": int(len(data.students)),
        "n_inactive_students": data.n_inactive,
        "n_groups": len(plan.groups),
        "n_batches": n_batches,
        "room_check": {"slots": n_slots, "batches": n_batches, "largest_room": largest_room,
                       "largest_planned_batch": largest_batch},
        "groups": group_records(plan),
        "eav_overrides": [vars(o) for o in settings.overrides],
        "prerequisites": prerequisite_section(catalog["prerequisites"], catalog["config"]),
        "warnings": warnings,
    }


def group_records(plan: BatchPlan) -> list[dict[str, Any]]:
    return [
        {"key": plan.label(g), "n_students": g.n_students, "n_batches": g.n_batches,
         "batch_sizes": g.batch_sizes.tolist(), "bounds": [g.bounds.min, g.bounds.target, g.bounds.max],
         "status": g.status, "reason": g.reason}
        for g in plan.groups
    ]


def quality_report(catalog: Catalog, run: TrackingRun, warnings: list[str],
                   resolved: dict[str, Any]) -> dict[str, Any]:
    """The run's record: ``quality_report.json``; ``tracking`` says whether and where MLflow
    recorded the run (:meth:`TrackingRun.summary`)."""
    settings: BatchingSettings = catalog["settings"]
    data: InstitutionData = catalog["data"]
    quality: QualityReport = catalog["quality"]
    allocation: Allocation = catalog["allocation"]
    return {
        "stage2_version": __version__,
        "run_id": run.run_id,
        "tracking": run.summary(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "as_of": settings.as_of.isoformat(),
        "input_dir": str(data.input_dir),
        "data_digest": data.digest,
        "file_digests": data.file_digests,
        "n_inactive_students": data.n_inactive,
        "metrics": quality.metrics,
        "thresholds": quality.thresholds,
        "passed_thresholds": quality.passed,
        "groups": group_records(catalog["plan"]),
        "allocation": {"method": allocation.method, "unplaced_batches": int((~allocation.placed).sum())},
        "eav_overrides": [vars(o) for o in settings.overrides],
        "rules": [asdict(r) for r in settings.rules],
        "rule_breaches": quality.rule_breaches,
        "faculty": catalog["faculty"].summary(),
        "prerequisites": prerequisite_section(catalog["prerequisites"], catalog["config"]),
        "warnings": warnings,
        "config": resolved,
    }


def prerequisite_section(check: PrerequisiteCheck, config: Stage2Config) -> dict[str, Any]:
    """The ``prerequisites`` section of ``quality_report.json``: the policy, the counts and the
    first ``enrollment.prerequisites_listed`` rows of ``prerequisite_report.csv``."""
    listed = config.enrollment.prerequisites_listed
    return {
        "policy": check.policy,
        "program_policies": check.program_policies,
        "violations": check.violations,
        "excluded": check.excluded,
        "grades_not_checkable": check.not_checkable,
        "n_rows": len(check.report),
        "rows": check.report.head(listed).to_dict(orient="records"),
        "file": PREREQUISITE_REPORT,
    }


def rebatch_section(catalog: Catalog) -> dict[str, Any]:
    """The ``rebatch`` section of ``quality_report.json``: the figures, the dissolved batches
    and the settings that shaped the moves."""
    config: Stage2Config = catalog["config"]
    outcome = catalog["rebatch"]
    rebatching = catalog["rebatching"]
    return {
        "previous_run": str(catalog["previous"].directory),
        **outcome.metrics,
        "dissolved_batches": outcome.dissolved,
        "move_penalty": config.rebatch.move_penalty,
        "changed_move_penalty": config.rebatch.changed_move_penalty,
        "penalty_factor": rebatching.penalty_factor,
        "frozen_groups": rebatching.frozen_groups,
    }


def log_summary(quality: QualityReport, out: Path) -> None:
    m = quality.metrics
    audit(
        "run_summary",
        "%d students -> %d batches in %d groups | coherence %.3f | course_sse/student %.3f | "
        "size balance %.3f | hard violations %d | rooms placed %.1f%% | outputs in %s",
        m["n_students"], m["n_batches"], m["n_groups"], m["academic_coherence"] or 0, m["course_sse_per_student"] or 0,
        m["size_balance"], m["hard_constraint_violations"], 100 * (m["room_placement_rate"] or 0), out,
        metrics={k: v for k, v in m.items() if not k.startswith("runtime_s.")},
    )
    for name, verdict in quality.thresholds.items():
        if not verdict["passed"]:
            audit("threshold_failed", "below the design threshold: %s = %.3f < %.2f (batches: %s)", name,
                  verdict["value"], verdict["threshold"], ", ".join(verdict["responsible"][:5]), level=logging.WARNING,
                  metric=name, value=verdict["value"], threshold=verdict["threshold"],
                  responsible=verdict["responsible"])
