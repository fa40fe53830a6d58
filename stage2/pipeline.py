"""The orchestrator: validation → configuration → batch sizing → clustering → room/shift
allocation → membership → enrollment → metrics → outputs, tracked as one MLflow run.

Callable from Python without Hydra::

    from stage2 import load_config, process_student_batching
    result = process_student_batching(load_config(["algorithm=kmeans"]), output_dir="out")
    result.batches.head()
"""

from __future__ import annotations

import logging
import resource
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
from stage2.clustering.groups import cluster_groups
from stage2.config import BatchingSettings, build_settings, register_configs, register_resolvers
from stage2.contract import InstitutionData, load_institution, validate_output_tables
from stage2.contract.invariants import check_invariants
from stage2.enrollment import build_batch_course_enrollment
from stage2.membership import build_batches, build_membership
from stage2.metrics import QualityReport, compute_quality
from stage2.outputs import (
    QUALITY_REPORT,
    RESOLVED_CONFIG,
    remove_stage3_tables,
    write_json,
    write_tables_atomically,
)
from stage2.sizing import BatchPlan, plan_batches
from stage2.tracking import tracking_run

log = logging.getLogger("stage2")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
LOG_FILE = "stage2.log"
#: rows of the student table logged with the MLflow dataset input (its digest covers all)
DATASET_SAMPLE_ROWS = 1000


@dataclass
class BatchingResult:
    """What a run produced; the same tables are in ``output_dir`` as CSV files."""

    output_dir: Path
    batches: pd.DataFrame
    membership: pd.DataFrame
    batch_courses: pd.DataFrame
    quality: QualityReport
    plan: BatchPlan
    settings: BatchingSettings
    runtimes: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    run_id: str | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.quality.metrics


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
    """Wall time per stage, in seconds."""

    def __init__(self) -> None:
        self.runtimes: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("stage %s ...", name)
        try:
            yield
        finally:
            self.runtimes[name] = time.perf_counter() - start
            log.info("stage %s done in %.3f s", name, self.runtimes[name])


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


@contextmanager
def _run_log(output_dir: Path) -> Iterator[None]:
    """Log to ``<output_dir>/stage2.log`` unless Hydra already does (it names the file after
    ``hydra.job.name``)."""
    target = output_dir / LOG_FILE
    root = logging.getLogger()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == target for h in root.handlers):
        yield
        return
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    log.addHandler(handler)
    previous = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
        handler.close()


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
    receives the CSVs, ``quality_report.json``, ``resolved_config.yaml`` and the log.

    Raises a :class:`~stage2.errors.Stage2Error` subclass on bad input or configuration; a
    failed run leaves no Stage 3 CSV in ``output_dir``.
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
    with _run_log(out):
        try:
            return _run(cfg, out)
        except BaseException:
            remove_stage3_tables(out)
            raise


def _run(cfg: DictConfig, out: Path) -> BatchingResult:
    started = time.perf_counter()
    timer = StageTimer()
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
    }
    with tracking_run(
        tracking["enabled"],
        uri=tracking.get("uri"),
        experiment_name=tracking["experiment_name"],
        run_name=tracking.get("run_name"),
        params=resolved,
        tags=tags,
    ) as run:
        with timer.stage("validation"):
            build_settings(cfg)  # the configuration alone first: its errors need no data
            data = load_institution(input_dir)
            active = data.active_students
        run.set_tags({"input_digest": data.digest})
        log.info("read %s: %d students (%d inactive), %d courses, %d rooms, %d shifts",
                 input_dir, len(data.students), data.n_inactive, len(data.courses), len(data.rooms), len(data.shifts))

        with timer.stage("configuration"):
            settings = build_settings(cfg, data)
        for override in settings.overrides:
            log.info("EAV override %s for %s %s = %r", override.parameter_code, override.entity_type,
                     override.entity_id, override.value)

        rooms = home_rooms(data.rooms, resolved["resources"].get("room_types"))
        with timer.stage("sizing"):
            largest_room = int(rooms["capacity"].max()) if len(rooms) else None
            plan = plan_batches(active, settings, largest_room)
        for group in plan.groups:
            log.info("group %s: %d students -> %d batches (%s)", plan.label(group), group.n_students,
                     group.n_batches, group.status)

        with timer.stage("clustering"):
            clustering = cluster_groups(active, data.active_enrollments, plan, settings, resolved["algorithm"],
                                        n_jobs=resolved["n_jobs"])

        with timer.stage("allocation"):
            n_batches = int(clustering.batch_group.size)
            sizes = np.bincount(clustering.batch_of_student, minlength=n_batches)
            allocation: Allocation
            if resolved["resources"]["allocate_rooms"]:
                allocation = allocate_rooms(
                    sizes,
                    shift_preference_counts(active, clustering.batch_of_student, n_batches, data.shifts),
                    rooms,
                    data.shifts,
                    settings,
                    shift_preference_weight=resolved["resources"]["shift_preference_weight"],
                )
            else:
                allocation = Allocation([None] * n_batches, [None] * n_batches, np.zeros(n_batches, np.int64), "off")

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

        with timer.stage("outputs"):
            files = write_tables_atomically(out, {
                "student_batches": batches,
                "batch_student_membership": membership,
                "batch_course_enrollment": batch_courses,
            })
            (out / "batch_quality.csv").write_text(quality.batch_quality.to_csv(index=False))

        warnings = list(data.warnings) + list(settings.warnings) + plan.warnings + allocation.warnings
        for message in warnings:
            log.warning(message)
        runtimes = dict(timer.runtimes)
        quality.metrics["runtime_s"] = time.perf_counter() - started
        quality.metrics["peak_memory_mb"] = peak_memory_mb()
        for stage, seconds in runtimes.items():
            quality.metrics[f"runtime_s.{stage}"] = seconds
        report = {
            "stage2_version": __version__,
            "run_id": run.run_id,
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "as_of": settings.as_of.isoformat(),
            "input_dir": str(input_dir),
            "data_digest": data.digest,
            "file_digests": data.file_digests,
            "n_inactive_students": data.n_inactive,
            "metrics": quality.metrics,
            "thresholds": quality.thresholds,
            "passed_thresholds": quality.passed,
            "groups": [
                {"key": plan.label(g), "n_students": g.n_students, "n_batches": g.n_batches,
                 "batch_sizes": g.batch_sizes.tolist(), "bounds": [g.bounds.min, g.bounds.target, g.bounds.max],
                 "status": g.status, "reason": g.reason}
                for g in plan.groups
            ],
            "allocation": {"method": allocation.method, "unplaced_batches": int((~allocation.placed).sum())},
            "eav_overrides": [vars(o) for o in settings.overrides],
            "rules": [vars(r) for r in settings.rules],
            "rule_breaches": quality.rule_breaches,
            "warnings": warnings,
            "config": resolved,
        }
        files.append(write_json(out / QUALITY_REPORT, report))
        _log_summary(quality, out)

        run.log_metrics(quality.metrics)
        run.set_tags({"passed_thresholds": quality.passed, "n_warnings": len(warnings)})
        if tracking.get("log_artifacts", True):
            # a schema sample of the students; the digest identifies the whole input
            sample = active[["student_id", "program_id", "academic_year"]].head(DATASET_SAMPLE_ROWS)
            run.log_input_dataset(sample, source=str(input_dir), name=institution.get("name", input_dir.name),
                                  digest=data.digest)
            run.log_artifacts([out / f.name for f in files] + [out / RESOLVED_CONFIG, out / "batch_quality.csv"])
            for log_file in out.glob("*.log"):
                run.log_artifacts([log_file], artifact_path="logs")
    return BatchingResult(
        output_dir=out, batches=batches, membership=membership, batch_courses=batch_courses, quality=quality,
        plan=plan, settings=settings, runtimes=runtimes, warnings=warnings, run_id=run.run_id, files=files,
    )


def _log_summary(quality: QualityReport, out: Path) -> None:
    m = quality.metrics
    log.info(
        "%d students -> %d batches in %d groups | coherence %.3f | course_sse/student %.3f | "
        "size balance %.3f | hard violations %d | rooms placed %.1f%% | outputs in %s",
        m["n_students"], m["n_batches"], m["n_groups"], m["academic_coherence"] or 0, m["course_sse_per_student"] or 0,
        m["size_balance"], m["hard_constraint_violations"], 100 * (m["room_placement_rate"] or 0), out,
    )
    for name, verdict in quality.thresholds.items():
        if not verdict["passed"]:
            log.warning("below the design threshold: %s = %.3f < %.2f (batches: %s)", name, verdict["value"],
                        verdict["threshold"], ", ".join(verdict["responsible"][:5]))
