"""MLflow tracking: one MLflow run per stage2 run.

What a run records:

- params: the resolved configuration, flattened (``batch_size.min``, ``algorithm.name``, ...);
- metrics: every quality measure and the per-stage ``runtime_s.<stage>``;
- tags: input digest, input directory, institution, status, error code on failure;
- a dataset input (the active students, digest = the input files' digest);
- artifacts: the output CSVs, ``quality_report.json``, the resolved config and the log.

The default store is embedded: ``sqlite:///<directory you run from>/mlflow.db`` (absolute),
unless ``$MLFLOW_TRACKING_URI`` or ``tracking.uri`` says otherwise. The experiment carries
``mlflow.experimentKind=custom_model_development`` (:func:`ensure_experiment`).

Sweeps (``python -m stage2 -m ...`` with :class:`stage2.tracking.hydra_callback.MLflowSweepCallback`)
record one parent run; the callback exports its id in ``$STAGE2_PARENT_RUN_ID`` (and its store in
``$STAGE2_PARENT_TRACKING_URI``), so that every job's run, in this process or in a launcher's
worker process, starts as its child (tag ``mlflow.parentRunId``) and is tagged with the job's
Hydra overrides (``hydra.overrides``, ``hydra.override_dirname``, ``hydra.job.num``).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stage2.config.schema import TrackingConfig
from stage2.errors import EnvironmentFault
from stage2.tracking.store import check_tracking_store, redact_uri, store_fault, validate_policy

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_DB_NAME = "mlflow.db"
#: attempts to record the dataset input (parallel jobs on one SQLite store can collide)
DATASET_LOG_ATTEMPTS = 3
#: the sweep's parent run id, exported by the sweep callback for the jobs' runs
PARENT_RUN_ENV = "STAGE2_PARENT_RUN_ID"
#: the tracking URI of the parent run (a job whose own URI is not configured uses it)
PARENT_URI_ENV = "STAGE2_PARENT_TRACKING_URI"
#: MLflow's limit on a param value's length
MAX_PARAM_LENGTH = 6000
#: MLflow 3's experiment tag for the kind of experiment, and stage2's kind: model development
#: (runs with params and metrics), not GenAI (traces)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def resolve_tracking_uri(configured: str | None, base_dir: str | Path | None = None) -> str:
    """``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store
    in ``base_dir`` (default: the current directory) as an absolute URI."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(base_dir or os.getcwd()).resolve()
    return f"sqlite:///{base / DEFAULT_DB_NAME}"


def sweep_parent() -> tuple[str | None, str | None]:
    """``($STAGE2_PARENT_RUN_ID, $STAGE2_PARENT_TRACKING_URI)``, ``None`` where unset."""
    return os.environ.get(PARENT_RUN_ENV) or None, os.environ.get(PARENT_URI_ENV) or None


def ensure_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of the experiment ``name`` in ``client``'s store, created if missing, with the
    tag ``mlflow.experimentKind=custom_model_development``: on creation, and added to an
    existing experiment without that tag (one made by an older stage2 or by hand). A kind
    already set (say by the UI's experiment-type selector) is left alone, and so is a deleted
    experiment (using it fails later, as it always did). Failing to tag never fails the run.
    ``artifact_location``: where a new experiment keeps its runs' artifacts (MLflow's default
    is ``./mlruns`` of the process that creates it)."""
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as exc:
            # parallel sweep jobs race to create it; the loser tags the winner's if needed
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == LifecycleStage.ACTIVE and not experiment.tags.get(EXPERIMENT_KIND_TAG):
        try:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except MlflowException as exc:
            logging.getLogger("stage2").warning("could not tag experiment %r with %s=%s: %s", name,
                                                EXPERIMENT_KIND_TAG, EXPERIMENT_KIND, exc)
    return experiment.experiment_id


def hydra_job_tags() -> dict[str, str]:
    """The running Hydra job's overrides as tags (empty outside a Hydra job)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return {}
        hydra_cfg: Any = HydraConfig.get()  # a DictConfig at run time, typed as its dataclass
        task = OmegaConf.select(hydra_cfg, "overrides.task", default=None, throw_on_missing=False)
        tags = {"hydra.overrides": " ".join(str(o) for o in (task or []))}
        for key, tag in (("job.num", "hydra.job.num"), ("job.override_dirname", "hydra.override_dirname")):
            value = OmegaConf.select(hydra_cfg, key, default=None, throw_on_missing=False)
            if value is not None:
                tags[tag] = str(value)
        return tags
    except Exception:  # an incomplete Hydra config: no tags rather than a failed run
        return {}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become their JSON-ish text."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


class TrackingRun:
    """A thin handle on the active MLflow run (``None``-safe metric logging).

    ``unavailable``: why a run that was to be tracked is not (its store could not be used and
    ``tracking.on_unavailable=warn``), as the warning the run reports; ``store``: the store, its
    credentials removed."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, experiment_id: str | None = None, *,
                 store: str | None = None, unavailable: str | None = None) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.store = store if store is not None else (redact_uri(tracking_uri) if tracking_uri else None)
        self.unavailable = unavailable

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def summary(self) -> dict[str, Any]:
        """The ``tracking`` section of the run's reports: ``status`` ``tracked`` | ``off``
        (``tracking.enabled=false``) | ``unavailable`` (with the ``reason``), the store and the
        MLflow run id."""
        status = "tracked" if self.enabled else ("unavailable" if self.unavailable else "off")
        return {"status": status, "store": self.store, "run_id": self.run_id, "reason": self.unavailable}

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        import mlflow

        clean = {
            k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        }
        if clean:
            mlflow.log_metrics(clean)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags({k: str(v)[:5000] for k, v in tags.items()})

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        import mlflow

        for path in paths:
            if path.exists():
                mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_input_dataset(self, frame: Any, *, source: str, name: str, digest: str) -> None:
        if not self.enabled:
            return
        import mlflow
        import mlflow.data

        with warnings.catch_warnings():
            # a local path matches two equivalent MLflow source types; it picks one and warns
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]  # set by a lazy import
                frame, source=source, name=name, digest=digest[:36])
        from mlflow.exceptions import MlflowException

        for attempt in range(DATASET_LOG_ATTEMPTS):
            try:
                mlflow.log_input(dataset, context="input")
                return
            except MlflowException as exc:
                # parallel sweep jobs on one SQLite store race to insert the same dataset row;
                # the loser's retry finds the winner's row
                if "UNIQUE" not in str(exc) and "IntegrityError" not in str(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
        logging.getLogger("stage2").warning(
            "could not record the dataset input after %d attempts; the digest is still the run's "
            "input_digest tag", DATASET_LOG_ATTEMPTS)


def _run_exists(run_id: str, tracking_uri: str) -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


@contextmanager
def tracking_run(
    enabled: bool,
    *,
    uri: str | None,
    experiment_name: str,
    run_name: str | None,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    policy: TrackingConfig | None = None,
) -> Iterator[TrackingRun]:
    """Open an MLflow run (or a disabled handle). On an exception the run ends ``FAILED``
    with the error's code and message as tags; the exception propagates.

    The store is checked first (:func:`~stage2.tracking.store.check_tracking_store`, with
    ``policy``'s limits; default: :class:`TrackingConfig`'s). A store that cannot be used, then
    or while the run is opened, raises ``TRACKING_UNAVAILABLE`` (:class:`EnvironmentFault`), or
    with ``policy.on_unavailable == "warn"`` yields a disabled handle saying why
    (:attr:`TrackingRun.unavailable`, also logged as a warning).

    Inside an active MLflow run the new run is nested in it. Otherwise, when
    ``$STAGE2_PARENT_RUN_ID`` is set (a sweep's job), it becomes that run's child in the same
    store (``$STAGE2_PARENT_TRACKING_URI`` when neither ``uri`` nor ``$MLFLOW_TRACKING_URI``
    is set) and is tagged with the Hydra job's overrides."""
    policy = policy if policy is not None else TrackingConfig()
    validate_policy(policy)
    if not enabled:
        yield TrackingRun(None, None)
        return
    import mlflow

    run_tags = {k: str(v) for k, v in tags.items()}
    parent_id: str | None = None
    if mlflow.active_run() is None:
        parent_id, parent_uri = sweep_parent()
    if parent_id and parent_uri and not uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        tracking_uri = parent_uri
    else:
        tracking_uri = resolve_tracking_uri(uri)
    if parent_id and parent_uri and parent_uri != tracking_uri:
        warnings.warn(f"{PARENT_RUN_ENV}={parent_id} is in {parent_uri}, this run goes to {tracking_uri}: "
                      "recorded without a parent", stacklevel=3)
        parent_id = None
    unavailable: str | None = None
    try:
        check_tracking_store(tracking_uri, policy)
        active = _open_run(tracking_uri, experiment_name, run_name, params, run_tags, parent_id)
    except EnvironmentFault as fault:
        if policy.on_unavailable != "warn":
            raise
        unavailable = f"[{fault.code}] {fault.message}: this run is not tracked (tracking.on_unavailable=warn)"
    if unavailable is not None:  # the run goes on outside the handler: its errors do not chain to the fault
        logging.getLogger("stage2").warning("%s", unavailable, extra={"event": "tracking_unavailable"})
        yield TrackingRun(None, None, store=_store_label(uri, tracking_uri), unavailable=unavailable)
        return
    with active:
        handle = TrackingRun(active.info.run_id, tracking_uri, active.info.experiment_id,
                             store=_store_label(uri, tracking_uri))
        try:
            yield handle
        except BaseException as exc:
            code = getattr(exc, "code", type(exc).__name__)
            mlflow.set_tags({"status": "failed", "error.code": str(code), "error.message": str(exc)[:5000]})
            mlflow.end_run(status="FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
            raise
        mlflow.set_tag("status", "ok")


def _store_label(configured: str | None, resolved: str) -> str:
    """How the run's reports name its store: the configured ``tracking.uri`` without
    credentials; a store handed over in ``$MLFLOW_TRACKING_URI`` (as the service does) by that
    name only, so that files a client downloads do not reveal it."""
    if not configured and os.environ.get("MLFLOW_TRACKING_URI"):
        return "$MLFLOW_TRACKING_URI"
    return redact_uri(resolved)


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises through MLflow: its own errors, the database's, HTTP's and
    the operating system's (anything else is a bug, reported as one)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.RequestException, OSError


def _open_run(tracking_uri: str, experiment_name: str, run_name: str | None, params: Mapping[str, Any],
              run_tags: dict[str, str], parent_id: str | None) -> Any:
    """Start the MLflow run (a child of ``parent_id`` if it exists in the store) and log the
    params; returns MLflow's active run. A store failing here (say, one that can be read but
    not written) raises ``TRACKING_UNAVAILABLE``, the half-opened run ended."""
    import mlflow
    from mlflow.tracking import MlflowClient

    active = None
    try:
        mlflow.set_tracking_uri(tracking_uri)
        if parent_id and not _run_exists(parent_id, tracking_uri):
            warnings.warn(f"{PARENT_RUN_ENV}={parent_id}: no such run in {tracking_uri}; recorded without a parent",
                          stacklevel=4)
            parent_id = None
        ensure_experiment(MlflowClient(tracking_uri=tracking_uri), experiment_name)
        mlflow.set_experiment(experiment_name)
        nested = mlflow.active_run() is not None
        parent_kw: dict[str, Any] = {}
        if parent_id:
            run_tags = {**hydra_job_tags(), **run_tags}
            parent_kw = {"parent_run_id": parent_id}
            nested = True
        active = mlflow.start_run(run_name=run_name, tags=run_tags, nested=nested, **parent_kw)
        items = sorted(flatten(params).items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start : start + 100]))
    except _store_errors() as exc:
        if active is not None:
            try:
                mlflow.end_run(status="FAILED")
            except Exception:  # the store is failing: the fault below says so
                pass
        raise store_fault(tracking_uri, exc) from exc
    return active
