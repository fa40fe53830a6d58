"""Experiment tracking (MLflow)."""

from stage2.tracking.mlflow_tracking import TrackingRun, flatten, resolve_tracking_uri, tracking_run

__all__ = ["TrackingRun", "flatten", "resolve_tracking_uri", "tracking_run"]
