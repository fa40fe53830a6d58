"""MLflow tracking: one MLflow run per stage2 run.

What a run records:

- params: the resolved configuration, flattened (``batch_size.min``, ``algorithm.name``, ...);
- metrics: every quality measure and the per-stage ``runtime_s.<stage>``;
- tags: input digest, input directory, institution, status, error code on failure;
- a dataset input (the active students, digest = the input files' digest);
- artifacts: the output CSVs, ``quality_report.json``, the resolved config and the log.

The default store is embedded: ``sqlite:///<directory you run from>/mlflow.db`` (absolute),
unless ``$MLFLOW_TRACKING_URI`` or ``tracking.uri`` says otherwise.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_DB_NAME = "mlflow.db"
#: MLflow's limit on a param value's length
MAX_PARAM_LENGTH = 6000


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
    """A thin handle on the active MLflow run (``None``-safe metric logging)."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, experiment_id: str | None = None) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

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
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
        mlflow.log_input(dataset, context="input")


@contextmanager
def tracking_run(
    enabled: bool,
    *,
    uri: str | None,
    experiment_name: str,
    run_name: str | None,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
) -> Iterator[TrackingRun]:
    """Open an MLflow run (or a disabled handle). On an exception the run ends ``FAILED``
    with the error's code and message as tags; the exception propagates."""
    if not enabled:
        yield TrackingRun(None, None)
        return
    import mlflow

    tracking_uri = resolve_tracking_uri(uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.set_experiment(experiment_name)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, tags={k: str(v) for k, v in tags.items()}, nested=nested) as active:
        handle = TrackingRun(active.info.run_id, tracking_uri, experiment.experiment_id)
        flat = flatten(params)
        items = sorted(flat.items())
        for start in range(0, len(items), 100):
            mlflow.log_params(dict(items[start : start + 100]))
        try:
            yield handle
        except BaseException as exc:
            code = getattr(exc, "code", type(exc).__name__)
            mlflow.set_tags({"status": "failed", "error.code": str(code), "error.message": str(exc)[:5000]})
            mlflow.end_run(status="FAILED" if not isinstance(exc, KeyboardInterrupt) else "KILLED")
            raise
        mlflow.set_tag("status", "ok")
