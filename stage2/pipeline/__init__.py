"""The orchestrator: runs the batching stages (:mod:`stage2.pipeline.stages`) as one table
and publishes the result (:mod:`stage2.pipeline.publish`), tracked as one MLflow run.

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
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from stage2 import __version__
from stage2.checkpoints import CheckpointStore, checkpoint_key
from stage2.config import register_configs, register_resolvers
from stage2.config.schema import Stage2Config, to_stage2_config
from stage2.errors import Stage2Error
from stage2.locations import config_dir as stage2_config_dir
from stage2.outputs import (
    ERRORS_FILE,
    RESOLVED_CONFIG,
    ensure_writable_dir,
    is_output_fault,
    output_not_writable,
    remove_stage3_tables,
    write_json,
)
from stage2.pipeline.publish import PUBLISH_STEPS, BatchingResult, publish, publish_dry_run
from stage2.pipeline.runner import Catalog, Stage, StageRunner
from stage2.pipeline.stages import BATCHING_STAGES, DRY_RUN_STAGES, REBATCH_DRY_RUN_STAGES, REBATCH_STAGES
from stage2.reporting import AuditFailed, stage_progress
from stage2.runlog import audit, run_logging
from stage2.tracking import tracking_run
from stage2.tracking.store import redact_uri

__all__ = ["BATCHING_STAGES", "REBATCH_STAGES", "BatchingResult", "Stage", "StageRunner", "load_config",
           "process_student_batching", "stage_table", "steps"]


def stage_table(cfg: DictConfig | Stage2Config) -> tuple[Stage, ...]:
    """The stages a configuration runs: the plan only (``dry_run``), a re-batch against
    ``rebatch.previous_run``, or a fresh batching."""
    if cfg.rebatch.previous_run:
        return REBATCH_DRY_RUN_STAGES if cfg.dry_run else REBATCH_STAGES
    return DRY_RUN_STAGES if cfg.dry_run else BATCHING_STAGES


def steps(cfg: DictConfig | Stage2Config) -> list[str]:
    """Every step of a run, in order (the progress display)."""
    return [stage.name for stage in stage_table(cfg)] + ([] if cfg.dry_run else list(PUBLISH_STEPS))


def load_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """Compose the configuration exactly as ``python -m stage2`` would (from the shipped
    ``conf/`` unless ``config_dir`` names another tree)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    register_resolvers()
    directory = str(Path(config_dir or stage2_config_dir()).resolve())
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=directory, version_base="1.3", job_name="stage2"):
        return compose(config_name="config", overrides=list(overrides))


def _resolve_output_dir(cfg: DictConfig, output_dir: str | Path | None) -> Path:
    """Read from the composed configuration, before it is validated: a configuration that
    fails validation still gets its ``errors.json`` there."""
    if output_dir is not None:
        return Path(output_dir).resolve()
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir)).resolve()
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
    ensure_writable_dir(out)  # OUTPUT_NOT_WRITABLE before anything else
    remove_stage3_tables(out)
    (out / ERRORS_FILE).unlink(missing_ok=True)
    context: dict[str, Any] = {"run_dir": str(out)}
    with run_logging(out, context):
        try:
            with stage_progress(steps(cfg)) as progress:
                return _run(cfg, out, context, progress)
        except OSError as exc:
            if not is_output_fault(exc, out):
                _fail(out, exc, context)
                raise
            # the directory became unwritable during the run (a full disk, a read-only remount)
            fault = output_not_writable(out, exc)
            _fail(out, fault, context)
            raise fault from exc
        except BaseException as exc:
            _fail(out, exc, context)
            raise


def _fail(out: Path, exc: BaseException, context: dict[str, Any]) -> None:
    """A failed run's clean-up: no Stage 3 CSV left (unless the audit failed after they were
    checked) and ``errors.json``, as far as the directory can still be written."""
    try:
        if not isinstance(exc, AuditFailed):
            remove_stage3_tables(out)
        _record_failure(out, exc, context)
    except OSError as cleanup:  # the run's own error is the one to report
        logging.getLogger("stage2").error("could not record the failure in %s: %s", out, cleanup)


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


def _run(cfg: DictConfig, out: Path, context: dict[str, Any], progress: Any) -> BatchingResult:
    started = time.perf_counter()
    try:
        config = to_stage2_config(cfg)
    except InterpolationResolutionError as exc:  # a resolver's own error, e.g. an unknown dataset
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, Stage2Error):
            cause = cause.__cause__ or cause.__context__  # OmegaConf keeps it as the context
        if cause is None:
            raise
        raise cause from None
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    # the record of the configuration (resolved_config.yaml, quality_report.json, MLflow's params)
    # names the tracking store without its credentials
    if (resolved.get("tracking") or {}).get("uri"):
        resolved["tracking"]["uri"] = redact_uri(str(resolved["tracking"]["uri"]))
    input_dir = Path(config.data.input_dir).resolve()
    (out / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    tags = {
        "stage2.version": __version__,
        "input_dir": str(input_dir),
        "institution": config.institution.name if config.institution else "demo",
        "algorithm": config.algorithm.name,
        "output_dir": str(out),
        "dry_run": config.dry_run,
    }
    tracking = config.tracking
    with tracking_run(tracking.enabled, uri=tracking.uri, experiment_name=tracking.experiment_name,
                      run_name=tracking.run_name, params=resolved, tags=tags, policy=tracking) as run:
        context["run_id"] = run.run_id
        if run.unavailable:  # errors.json of a run failing later lists it too
            context["warnings"] = [run.unavailable]

        def checkpoints(catalog: Catalog) -> CheckpointStore:
            return CheckpointStore(out, checkpoint_key(resolved, catalog["data"].digest))

        runner = StageRunner(progress, checkpoints=checkpoints, resume=config.resume)
        stages = stage_table(config)
        catalog = runner.run(stages, {"config": config, "input_dir": input_dir, "run": run})
        if config.dry_run:
            return publish_dry_run(catalog, out, runner, run, context)
        return publish(catalog, out, runner, run, context, started, resolved)
