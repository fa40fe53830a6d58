"""``python -m stage2 [overrides]``: the Hydra entrypoint, a thin shell over the pipeline.

Exit status: 0 ok, 1 internal error, 2 configuration, 3 input, 4 infeasible, 5 environment
(a tracking store or Dask cluster unavailable, an output directory that cannot be written), 130
interrupted (``stage2.errors.EXIT_CODES``); a strict run failing for several problems at once
exits with the most severe one's (``stage2.errors.SEVERITY_ORDER``). A failed run writes no
Stage 3 CSV.
"""

from __future__ import annotations

import gc

#: ``python -m stage2``: the cyclic garbage collector stays off while the libraries are imported
#: and Hydra composes the configuration. Those steps allocate about a million long-lived
#: objects, which the collector would otherwise rescan hundreds of times (count them with
#: ``gc.callbacks``); the job then starts with them frozen out of every later collection
#: (:func:`run`).
_GC_DEFERRED = __name__ == "__main__"
if _GC_DEFERRED:
    gc.disable()

import atexit
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import hydra
from omegaconf import DictConfig

from stage2.config import register_configs, register_resolvers
from stage2.errors import EXIT_CODES, ConfigurationError, Stage2Error
from stage2.locations import config_dir

log = logging.getLogger("stage2")

register_configs()
register_resolvers()

#: set when Hydra has composed the configuration and called :func:`run`
_job_started = False


def _interrupt_on_sigterm(signum, frame) -> None:
    """Treat SIGTERM like Ctrl-C: unwind, remove partial outputs, record the interruption."""
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def run(cfg: DictConfig) -> float | None:
    """Run one job; return its ``tracking.sweep_objective`` metric (the scalar a sweeper such
    as Optuna optimises, in ``tracking.sweep_direction``; a sweep's parent run picks its best
    child by the same metric).

    Errors are turned into a message and an exit status here: Hydra would otherwise print a
    traceback and exit with 1 whatever went wrong.
    """
    global _job_started
    first_job = not _job_started
    _job_started = True
    from stage2.pipeline import process_student_batching

    if _GC_DEFERRED and first_job:
        gc.freeze()  # what start-up built lives as long as the process
        gc.enable()

    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        result = process_student_batching(cfg)
    except Stage2Error as exc:
        log.error("%s", exc)
        print(f"stage2: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: say so plainly; the traceback goes to the log only
        logging.getLogger("stage2").error("internal error", exc_info=True)
        print(f"stage2: internal error ({type(exc).__name__}: {exc}); the traceback is in the run's "
              "stage2.log — please report it", file=sys.stderr)
        sys.exit(EXIT_CODES["internal"])
    except KeyboardInterrupt:
        print("stage2: interrupted; no output CSV was written (resume=true continues from the last "
              "checkpoint)", file=sys.stderr)
        sys.exit(EXIT_CODES["interrupted"])
    value = result.metrics.get(cfg.tracking.sweep_objective)
    return None if value is None else float(value)


def _check_composition(argv: list[str]) -> None:
    """Compose the configuration the way Hydra will and exit 2 with INVALID_CONFIGURATION if a
    key is misspelt, a value has the wrong type or a config group option does not exist.

    Hydra itself reports such errors with exit status 1, which the exit-code table reserves
    for bugs. Runs with Hydra flags (``-m``, ``--cfg``, ``--help``, ...) or
    ``hydra.mode=MULTIRUN`` are left to Hydra: a sweep's ``a,b`` values do not compose as a
    single job (and its jobs may run in other processes)."""
    if not (config_dir() / "config.yaml").is_file():
        error = ConfigurationError(
            f"stage2's configuration tree is missing ({config_dir()} has no config.yaml)",
            where=str(config_dir()),
            fix="reinstall stage2 (pip install stage2 / pip install -e . from a checkout); an installed wheel "
                "carries conf/ inside the package",
        )
        print(f"stage2: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    if any(arg.startswith("-") for arg in argv) or any(arg.replace(" ", "").lower() == "hydra.mode=multirun"
                                                          for arg in argv):
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from stage2.pipeline import load_config

    try:
        load_config(argv)
    except (HydraException, OmegaConfBaseException) as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None and str(cause.__cause__):
            cause = cause.__cause__
        detail = str(cause).strip().splitlines()
        error = ConfigurationError(
            f"{str(exc).strip().splitlines()[0]}" + (f" ({detail[0]})" if detail and cause is not exc else ""),
            where="command-line overrides",
            fix="check the key against conf/ (python -m stage2 --cfg job) and the value's type",
        )
        print(f"stage2: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def _single_run(argv: list[str]) -> bool:
    """Whether the command line is one job (no Hydra flag such as ``-m``, ``--cfg``, ``--help``)."""
    return not (any(arg.startswith("-") for arg in argv)
                or any(arg.replace(" ", "").lower() == "hydra.mode=multirun" for arg in argv))


def _exit_if_not_writable(directory: Path) -> None:
    """Exit with OUTPUT_NOT_WRITABLE (exit 5) if the run directory cannot be created and written."""
    from stage2.errors import EnvironmentFault
    from stage2.outputs import ensure_writable_dir

    try:
        ensure_writable_dir(directory)
    except EnvironmentFault as error:
        print(f"stage2: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def _check_run_dir(argv: list[str]) -> None:
    """Before Hydra creates the run directory named by ``hydra.run.dir=DIR`` (a plain path), check
    that it can be written: Hydra reports a failure there as a traceback with exit status 1."""
    if not _single_run(argv):
        return
    values = [arg.split("=", 1)[1] for arg in argv if arg.lstrip("+").startswith("hydra.run.dir=")]
    if values and "${" not in values[-1]:
        _exit_if_not_writable(Path(values[-1]).resolve())


def _check_run_dir_after_failure(argv: list[str]) -> None:
    """After Hydra failed before the job with a configuration that composes: if its run directory
    (``hydra.run.dir`` as composed, e.g. under an unwritable current directory) cannot be
    written, say so with OUTPUT_NOT_WRITABLE instead of Hydra's exit status 1."""
    if not _single_run(argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="stage2"):
            composed = compose(config_name="config", overrides=argv, return_hydra_config=True)
        directory = Path(str(composed.hydra.run.dir)).resolve()
    except Exception:  # not composable as one job here: Hydra's own message stands
        return
    _exit_if_not_writable(directory)


def main() -> None:
    # Hydra failing before the job (exit 1, or its exception with HYDRA_FULL_ERROR=1): if the
    # overrides do not compose, say so with the configuration exit status (Hydra's own message
    # is already out); if the run directory cannot be written, with OUTPUT_NOT_WRITABLE. Checked
    # only after a failure: Hydra already composes twice per run, and a third composition would
    # slow every successful run.
    _check_run_dir(sys.argv[1:])
    try:
        run()
    except SystemExit as exc:
        if exc.code == 1 and not _job_started:
            _check_composition(sys.argv[1:])
            _check_run_dir_after_failure(sys.argv[1:])
        _exit_without_teardown(exc.code)
    except Exception:
        if not _job_started:
            _check_composition(sys.argv[1:])
            _check_run_dir_after_failure(sys.argv[1:])
        raise
    _exit_without_teardown(0)


def _exit_without_teardown(code: int | str | None) -> None:
    """Leave as the interpreter would (run the exit handlers: logging, MLflow; flush the
    streams) but skip finalising the thousands of imported modules of scipy, numba, pandas,
    scikit-learn, ..., a noticeable share of a short run. With threads still running, the
    interpreter's own shutdown stops them."""
    if isinstance(code, str):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    if any(thread is not threading.main_thread() and not thread.daemon for thread in threading.enumerate()):
        sys.exit(status)  # e.g. a joblib sweep's executor: the interpreter's own shutdown stops it
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
