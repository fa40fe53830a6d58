"""The orchestrator: validation → configuration → batch sizing → clustering → room/shift
allocation → membership → enrollment → metrics → outputs, tracked as one MLflow run.

Callable from Python without Hydra::

    from stage2 import load_config, process_student_batching
    result = process_student_batching(load_config(["algorithm=kmeans"]), output_dir="out")
    result.batches.head()

Gates and modes: the configuration is checked before any data is read, and the input before
anything else runs. ``dry_run=true`` stops after sizing and writes only
``validation_report.json`` (the plan: groups, batches per group, room check).
``resume=true`` reuses the checkpoints of an interrupted run in the same directory
(:mod:`stage2.checkpoints`). A failed or interrupted run writes ``errors.json`` and no Stage 3
CSV.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from stage2 import __version__
from stage2.allocation import Allocation, allocate_rooms, home_rooms
from stage2.checkpoints import CheckpointStore, checkpoint_key
from stage2.clustering.groups import cluster_groups
from stage2.memory import peak_rss_mb
from stage2.config import BatchingSettings, build_settings, register_configs, register_resolvers
from stage2.contract import load_institution, validate_output_tables
from stage2.contract.invariants import check_invariants
from stage2.enrollment import build_batch_course_enrollment
from stage2.errors import Stage2Error
from stage2.membership import build_batches, build_membership
from stage2.metrics import QualityReport, compute_quality
from stage2.outputs import (
    ERRORS_FILE,
    QUALITY_REPORT,
    RESOLVED_CONFIG,
    VALIDATION_REPORT,
    formula_like_ids,
    remove_stage3_tables,
    write_json,
    write_tables_atomically,
)
from stage2.reporting import AuditFailed, run_audit_notebook, stage_progress, write_reports
from stage2.runlog import JSONL_FILE, audit, run_logging
from stage2.sizing import BatchPlan, plan_batches
from stage2.tracking import tracking_run

log = logging.getLogger("stage2")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
#: rows of the student table logged with the MLflow dataset input (its digest covers all)
DATASET_SAMPLE_ROWS = 1000
BATCH_QUALITY = "batch_quality.csv"
#: the stages, in order (progress display, checkpoints, per-stage runtimes)
STAGES = ("validation", "configuration", "sizing", "clustering", "allocation", "membership", "enrollment",
          "metrics", "outputs", "reports")


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

    @property
    def metrics(self) -> dict[str, Any]:
        return self.quality.metrics if self.quality is not None else {}


def load_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """Compose the configuration from ``conf/`` exactly as ``python -m stage2`` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    register_resolvers()
    directory = str(Path(config_dir or CONFIG_DIR).resolve())
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=directory, version_base="1.3", job_name="stage2"):
        return compose(config_name="config", overrides=list(overrides))


class StageTimer:
    """Wall time per stage, in seconds, logged as ``stage_done`` events with peak memory and
    shown as a progress display on a terminal."""

    def __init__(self, progress: Any = None) -> None:
        self.runtimes: dict[str, float] = {}
        self.progress = progress

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        audit("stage_start", "stage %s ...", name, stage=name)
        if self.progress is not None:
            self.progress.start(name)
        yield
        self.runtimes[name] = time.perf_counter() - start
        if self.progress is not None:
            self.progress.done(name, self.runtimes[name])
        audit("stage_done", "stage %s done in %.3f s", name, self.runtimes[name], stage=name,
              seconds=round(self.runtimes[name], 4), peak_memory_mb=round(peak_rss_mb(), 1))


def shift_preference_counts(active: pd.DataFrame, batch_of_student: np.ndarray, n_batches: int,
                            shifts: pd.DataFrame) -> np.ndarray:
    """``counts[b, s]``: members of batch ``b`` whose preferred shift is ``shifts`` row ``s``."""
    shift_pos = pd.Index(shifts["shift_id"].astype(str)).get_indexer(active["preferred_shift"].astype("string").fillna(""))
    has = shift_pos >= 0
    counts = np.zeros((n_batches, len(shifts)), dtype=np.int64)
    np.add.at(counts, (batch_of_student[has], shift_pos[has]), 1)
    return counts


def _resolve_output_dir(cfg: DictConfig, output_dir: str | Path | None) -> Path:
    if output_dir is not None:
        return Path(output_dir).resolve()
    if cfg.get("output_dir"):
        return Path(cfg.output_dir).resolve()
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir).resolve()
    except ValueError:  # not running under Hydra
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        return (Path.cwd() / "outputs" / stamp).resolve()


def process_student_batching(
    cfg: DictConfig | None = None,
    *,
    input_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> BatchingResult:
    """Run the whole pipeline and write its outputs.

    ``cfg``: a composed configuration (:func:`load_config`); ``None`` composes the default
    one with ``overrides``. ``input_dir`` replaces ``data.input_dir``. ``output_dir``
    (default: ``cfg.output_dir``, else Hydra's run directory, else ``./outputs/<time>``)
    receives the CSVs, the reports, ``resolved_config.yaml`` and the logs.

    Raises a :class:`~stage2.errors.Stage2Error` subclass on bad input or configuration
    (``KeyboardInterrupt`` when interrupted); a failed run leaves ``errors.json`` and no
    Stage 3 CSV in ``output_dir``. A failing audit notebook (:class:`AuditFailed`) fails the
    run too, but only after the CSVs were written and checked: they stay.
    """
    if cfg is None:
        cfg = load_config(overrides)
    register_resolvers()
    if input_dir is not None:
        cfg = cfg.copy()
        OmegaConf.update(cfg, "data.input_dir", str(Path(input_dir).resolve()))
    out = _resolve_output_dir(cfg, output_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stage3_tables(out)
    (out / ERRORS_FILE).unlink(missing_ok=True)
    context: dict[str, Any] = {"run_dir": str(out)}
    with run_logging(out, context):
        try:
            with stage_progress(list(STAGES)) as progress:
                return _run(cfg, out, context, progress)
        except BaseException as exc:
            if not isinstance(exc, AuditFailed):
                remove_stage3_tables(out)
            _record_failure(out, exc, context)
            raise


def _record_failure(out: Path, exc: BaseException, context: dict[str, Any]) -> None:
    if isinstance(exc, Stage2Error):
        status, error = "failed", exc.to_dict()
    elif isinstance(exc, KeyboardInterrupt):
        status, error = "interrupted", {"code": "INTERRUPTED", "message": "the run was interrupted",
                                        "fix": "run again with resume=true to continue from the last checkpoint"}
    else:
        status, error = "failed", {"code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}",
                                   "fix": "this is a bug in stage2; please report it"}
    audit("run_failed", "run %s: [%s] %s", status, error.get("code"), error.get("message"), level=logging.ERROR,
          status=status, code=error.get("code"))
    write_json(out / ERRORS_FILE, {"status": status, "run_id": context.get("run_id"), "error": error,
                                   "warnings": context.get("warnings", [])})


def _run(cfg: DictConfig, out: Path, context: dict[str, Any], progress: Any = None) -> BatchingResult:
    started = time.perf_counter()
    timer = StageTimer(progress)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    input_dir = Path(resolved["data"]["input_dir"]).resolve()
    (out / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    institution = resolved.get("institution") or {}
    tracking = resolved["tracking"]
    tags = {
        "stage2.version": __version__,
        "input_dir": str(input_dir),
        "institution": institution.get("name", "demo"),
        "algorithm": resolved["algorithm"]["name"],
        "output_dir": str(out),
        "dry_run": resolved.get("dry_run", False),
    }
    with tracking_run(
        tracking["enabled"],
        uri=tracking.get("uri"),
        experiment_name=tracking["experiment_name"],
        run_name=tracking.get("run_name"),
        params=resolved,
        tags=tags,
    ) as run:
        context["run_id"] = run.run_id
        # gate 1: the configuration alone (its errors need no data); gate 2: the input
        with timer.stage("validation"):
            build_settings(cfg)
            data = load_institution(input_dir)
            active = data.active_students
        run.set_tags({"input_digest": data.digest})
        audit("input_read", "read %s: %d students (%d inactive), %d courses, %d rooms, %d shifts", input_dir,
              len(data.students), data.n_inactive, len(data.courses), len(data.rooms), len(data.shifts),
              input_dir=str(input_dir), digest=data.digest, n_students=len(data.students), n_inactive=data.n_inactive)

        with timer.stage("configuration"):
            settings = build_settings(cfg, data)
        for override in settings.overrides:
            audit("eav_override", "EAV override %s for %s %s = %r", override.parameter_code, override.entity_type,
                  override.entity_id, override.value, parameter_code=override.parameter_code,
                  entity_type=override.entity_type, entity_id=override.entity_id, value=override.value)

        checkpoints = CheckpointStore(out, checkpoint_key(resolved, data.digest))
        resume = bool(resolved.get("resume", False))
        if not resume:
            checkpoints.clear()
        resumed_from = None

        def restored(stage: str) -> Any | None:
            nonlocal resumed_from
            result = checkpoints.load(stage) if resume else None
            if result is not None:
                resumed_from = stage
                audit("checkpoint_restored", "stage %s restored from its checkpoint", stage, stage=stage)
            return result

        rooms = home_rooms(data.rooms, resolved["resources"].get("room_types"))
        plan = restored("sizing")
        if plan is None:
            with timer.stage("sizing"):
                largest_room = int(rooms["capacity"].max()) if len(rooms) else None
                plan = plan_batches(active, settings, largest_room)
            checkpoints.save("sizing", plan)
        for group in plan.groups:
            audit("group_planned", "group %s: %d students -> %d batches of %s (%s)", plan.label(group),
                  group.n_students, group.n_batches, group.batch_sizes.tolist(), group.status,
                  group=plan.label(group), n_students=group.n_students, n_batches=group.n_batches,
                  status=group.status, reason=group.reason)

        if resolved.get("dry_run", False):
            return _finish_dry_run(out, plan, settings, rooms, data, timer, run, context)

        clustering = restored("clustering")
        if clustering is None:
            with timer.stage("clustering"):
                clustering = cluster_groups(active, data.active_enrollments, plan, settings, resolved["algorithm"],
                                            n_jobs=resolved["n_jobs"])
            checkpoints.save("clustering", clustering)

        allocation = restored("allocation")
        if allocation is None:
            with timer.stage("allocation"):
                allocation = _allocate(clustering, plan, active, data.shifts, rooms, settings, resolved["resources"])
            checkpoints.save("allocation", allocation)

        timestamp = settings.as_of
        with timer.stage("membership"):
            batches = build_batches(
                active, data.programs, clustering.batch_of_student, clustering.batch_group, plan, allocation,
                timestamp=timestamp, tenant_id=institution.get("tenant_id"),
                institution_id=institution.get("institution_id"),
            )
            membership = build_membership(active, batches, clustering.batch_of_student, timestamp=timestamp)

        with timer.stage("enrollment"):
            batch_courses = build_batch_course_enrollment(
                batches, membership, data.active_enrollments, data.courses,
                shared_threshold=settings.shared_threshold, timestamp=timestamp,
            )

        with timer.stage("metrics"):
            quality = compute_quality(
                batches, membership, batch_courses, active, data.active_enrollments, settings,
                thresholds=resolved["metrics"]["thresholds"],
                silhouette_sample_size=resolved["metrics"]["silhouette_sample_size"],
            )
            check_invariants(batches, membership, batch_courses, active, data.active_enrollments,
                             hard_rule_failures=int(quality.metrics["hard_constraint_violations"]))
            validate_output_tables(batches, membership, batch_courses)

        warnings = list(data.warnings) + list(settings.warnings) + plan.warnings + allocation.warnings
        risky = formula_like_ids(membership, ["student_id", "program_id"]) + formula_like_ids(batches, ["program_id"])
        if risky:
            warnings.append(f"identifiers a spreadsheet would read as formulas (kept exactly, Stage 3 joins on them): "
                            f"{', '.join(map(repr, risky[:10]))}")
        context["warnings"] = warnings

        with timer.stage("outputs"):
            files = write_tables_atomically(out, {
                "student_batches": batches,
                "batch_student_membership": membership,
                "batch_course_enrollment": batch_courses,
            })
            (out / BATCH_QUALITY).write_text(quality.batch_quality.to_csv(index=False))

        for message in warnings:
            audit("warning", "%s", message, level=logging.WARNING)
        runtimes = dict(timer.runtimes)
        quality.metrics["runtime_s"] = time.perf_counter() - started
        quality.metrics["peak_memory_mb"] = peak_rss_mb()
        quality.metrics["peak_memory_workers_mb"] = clustering.workers_peak_mb
        for stage, seconds in runtimes.items():
            quality.metrics[f"runtime_s.{stage}"] = seconds
        report = _quality_report(run.run_id, settings, input_dir, data, quality, plan, allocation, warnings, resolved)
        report["resumed_from"] = resumed_from
        files.append(write_json(out / QUALITY_REPORT, report))
        _log_summary(quality, out)

        run.log_metrics(quality.metrics)
        run.set_tags({"passed_thresholds": quality.passed, "n_warnings": len(warnings)})
        if tracking.get("log_artifacts", True):
            # a schema sample of the students; the digest identifies the whole input
            sample = active[["student_id", "program_id", "academic_year"]].head(DATASET_SAMPLE_ROWS)
            run.log_input_dataset(sample, source=str(input_dir), name=institution.get("name", input_dir.name),
                                  digest=data.digest)
            run.log_artifacts(files + [out / RESOLVED_CONFIG, out / BATCH_QUALITY])

        with timer.stage("reports"):
            report_files = _write_reports(out, resolved["report"], run)
        if tracking.get("log_artifacts", True):
            run.log_artifacts(report_files, artifact_path="reports")
            run.log_artifacts(sorted(out.glob("*.log")) + [out / JSONL_FILE], artifact_path="logs")
        run.log_metrics({"runtime_s.reports": timer.runtimes["reports"]})
    return BatchingResult(
        output_dir=out, plan=plan, settings=settings, runtimes=runtimes, batches=batches, membership=membership,
        batch_courses=batch_courses, quality=quality, warnings=warnings, run_id=run.run_id, files=files,
        resumed_from=resumed_from,
    )


def _write_reports(out: Path, report_config: dict[str, Any], run: Any) -> list[Path]:
    """The human-readable reports and, when configured, the executed audit notebook. A
    failing notebook is recorded on the MLflow run and re-raised (the CSVs stay)."""
    files = write_reports(out, list(report_config["formats"]))
    if report_config["notebook"]:
        try:
            files += list(run_audit_notebook(out, timeout_s=int(report_config["notebook_timeout_s"]),
                                             mlflow_run_id=run.run_id))
        except AuditFailed as exc:
            notebook = out / "audit_report.ipynb"
            if notebook.exists():
                run.log_artifacts([notebook], artifact_path="reports")
            raise
    return files


def _allocate(clustering, plan, active, shifts, rooms, settings, resources) -> Allocation:
    n_batches = int(clustering.batch_group.size)
    # batches are named by group and number here: their codes are made in the next stage
    number_in_group = np.arange(n_batches) - np.searchsorted(clustering.batch_group, clustering.batch_group)
    labels = [f"{plan.label(plan.groups[g])} batch {j + 1}" for g, j in zip(clustering.batch_group, number_in_group)]
    if not resources["allocate_rooms"]:
        return Allocation([None] * n_batches, [None] * n_batches, np.zeros(n_batches, np.int64), "off")
    sizes = np.bincount(clustering.batch_of_student, minlength=n_batches)
    allocation = allocate_rooms(
        sizes, shift_preference_counts(active, clustering.batch_of_student, n_batches, shifts), rooms, shifts,
        settings, shift_preference_weight=resources["shift_preference_weight"], batch_labels=labels,
    )
    audit("allocation", "allocation (%s): %d of %d batches placed", allocation.method, int(allocation.placed.sum()),
          n_batches, method=allocation.method, placed=int(allocation.placed.sum()), n_batches=n_batches)
    return allocation


def _finish_dry_run(out, plan, settings, rooms, data, timer, run, context) -> BatchingResult:
    """Write the plan (groups, batches per group, room check) as ``validation_report.json``."""
    n_batches = plan.n_batches
    n_slots = len(rooms) * len(data.shifts)
    largest_batch = max((int(g.batch_sizes.max()) for g in plan.groups), default=0)
    largest_room = int(rooms["capacity"].max()) if len(rooms) else 0
    warnings = list(data.warnings) + list(settings.warnings) + plan.warnings
    if n_batches > n_slots:
        warnings.append(f"[INSUFFICIENT_ROOMS] {n_batches} batches planned but only {n_slots} (room, shift) slots")
    if largest_batch > largest_room:
        warnings.append(f"[INSUFFICIENT_ROOMS] a planned batch of {largest_batch} exceeds the largest room ({largest_room})")
    context["warnings"] = warnings
    report = {
        "stage2_version": __version__,
        "status": "valid",
        "run_id": run.run_id,
        "input_dir": str(data.input_dir),
        "data_digest": data.digest,
        "n_students": int(len(data.students)),
        "n_inactive_students": data.n_inactive,
        "n_groups": len(plan.groups),
        "n_batches": n_batches,
        "room_check": {"slots": n_slots, "batches": n_batches, "largest_room": largest_room,
                       "largest_planned_batch": largest_batch},
        "groups": _group_records(plan),
        "eav_overrides": [vars(o) for o in settings.overrides],
        "warnings": warnings,
    }
    path = write_json(out / VALIDATION_REPORT, report)
    for message in warnings:
        audit("warning", "%s", message, level=logging.WARNING)
    audit("dry_run", "dry run: input and configuration valid; %d groups -> %d batches; %d slots; plan in %s",
          len(plan.groups), n_batches, n_slots, path)
    run.log_artifacts([path])
    return BatchingResult(output_dir=out, plan=plan, settings=settings, runtimes=dict(timer.runtimes),
                          warnings=warnings, run_id=run.run_id, files=[path], dry_run=True)


def _group_records(plan: BatchPlan) -> list[dict[str, Any]]:
    return [
        {"key": plan.label(g), "n_students": g.n_students, "n_batches": g.n_batches,
         "batch_sizes": g.batch_sizes.tolist(), "bounds": [g.bounds.min, g.bounds.target, g.bounds.max],
         "status": g.status, "reason": g.reason}
        for g in plan.groups
    ]


def _quality_report(run_id, settings, input_dir, data, quality, plan, allocation, warnings, resolved) -> dict:
    return {
        "stage2_version": __version__,
        "run_id": run_id,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "as_of": settings.as_of.isoformat(),
        "input_dir": str(input_dir),
        "data_digest": data.digest,
        "file_digests": data.file_digests,
        "n_inactive_students": data.n_inactive,
        "metrics": quality.metrics,
        "thresholds": quality.thresholds,
        "passed_thresholds": quality.passed,
        "groups": _group_records(plan),
        "allocation": {"method": allocation.method, "unplaced_batches": int((~allocation.placed).sum())},
        "eav_overrides": [vars(o) for o in settings.overrides],
        "rules": [vars(r) for r in settings.rules],
        "rule_breaches": quality.rule_breaches,
        "warnings": warnings,
        "config": resolved,
    }


def _log_summary(quality: QualityReport, out: Path) -> None:
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
