"""A Hydra callback that records a sweep (``python -m stage2 -m ...``) as one MLflow parent run
with one child run per job.

Enable it under ``hydra.callbacks`` (``conf/config.yaml``)::

    hydra:
      callbacks:
        mlflow_sweep:
          _target_: stage2.tracking.hydra_callback.MLflowSweepCallback

or for one command:
``python -m stage2 -m ++hydra.callbacks.mlflow_sweep._target_=stage2.tracking.hydra_callback.MLflowSweepCallback``.

- ``on_multirun_start`` (the launching process): opens the parent run in
  ``tracking.experiment_name`` of the store ``resolve_tracking_uri(tracking.uri)``, tagged
  ``stage2.sweep=true``, ``sweep.dir``, ``sweep.overrides`` (the command line's overrides),
  ``sweep.swept_keys``, ``sweep.launcher``, ``sweep.sweeper``, ``sweep.objective``,
  ``sweep.direction``; and exports its id and store in ``$STAGE2_PARENT_RUN_ID`` /
  ``$STAGE2_PARENT_TRACKING_URI``. Jobs run in this process (basic launcher), in worker
  processes (joblib) or in processes submitit starts from a pickle of the launcher, which
  carries Hydra's callbacks, this one with the parent's id and store (``submitit_local``: a
  subprocess; ``submitit_slurm``: a SLURM array task on another node). ``on_job_start``, which
  runs in the job's process, exports them again from that copy: the job's run finds its parent
  whether or not the process inherited this environment (a worker started earlier, a batch
  system's environment).
- each job's run (``stage2.tracking.tracking_run``) then starts as a child of the parent
  (``mlflow.parentRunId``) tagged with the job's overrides (``hydra.overrides``,
  ``hydra.override_dirname``, ``hydra.job.num``);
- ``on_job_end`` (the job's process) logs the task's return value on the child as the metric
  ``sweep.return_value``;
- ``on_multirun_end`` (the launching process) finds the children, picks the best FINISHED one
  by the objective metric (``tracking.sweep_objective``, default ``academic_coherence``) in
  ``tracking.sweep_direction`` (``maximize``/``minimize``), records on the parent the tags
  ``best_run_id``, ``best_value``, ``best_overrides`` (the best child's values of the swept
  keys), ``sweep.n_children``, ``sweep.n_finished`` and the metric ``best_value``, and ends the
  parent FINISHED. A sweep that dies before (a failed job stops Hydra's sweep) leaves the
  parent FAILED, from an ``atexit`` hook.

Nothing happens when ``tracking.enabled`` is false. Hydra turns a callback's exception into a
warning: a sweep never fails because of its tracking.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from stage2.config.schema import TrackingConfig
from stage2.errors import EnvironmentFault
from stage2.tracking.mlflow_tracking import PARENT_RUN_ENV, PARENT_URI_ENV, ensure_experiment, resolve_tracking_uri
from stage2.tracking.store import check_tracking_store

log = logging.getLogger("stage2")

#: the defaults: TrackingConfig's, in stage2/config/schema.py
DEFAULT_OBJECTIVE = TrackingConfig.sweep_objective
DEFAULT_DIRECTION = TrackingConfig.sweep_direction
DIRECTIONS = {"maximize": "maximize", "max": "maximize", "higher": "maximize",
              "minimize": "minimize", "min": "minimize", "lower": "minimize"}
RETURN_VALUE_METRIC = "sweep.return_value"
PARENT_TAG = "mlflow.parentRunId"


def _select(config: DictConfig, key: str, default: Any = None) -> Any:
    try:
        value = OmegaConf.select(config, key, default=default, throw_on_missing=False)
    except Exception:  # an interpolation that cannot be resolved here
        return default
    return default if value is None else value


def swept_keys(task_overrides: list[str], sweeper_params: Any = None) -> list[str]:
    """The keys a sweep varies: command-line sweep overrides (``a=1,2``, ``range(...)``, ...)
    and the keys of ``hydra.sweeper.params`` (basic sweeper, Optuna)."""
    keys: list[str] = []
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        for override in OverridesParser.create().parse_overrides(list(task_overrides)):
            if override.is_sweep_override():
                keys.append(override.key_or_group)
    except Exception:  # unparsable here: fall back to the sweeper's params only
        pass
    if sweeper_params:
        keys.extend(str(k) for k in sweeper_params.keys() if str(k) not in keys)
    return keys


def filter_overrides(overrides: str, keys: list[str]) -> str:
    """The overrides (space-separated ``key=value``) of ``keys``; all of them when a key is not
    found (a value with a space, say)."""
    if not keys:
        return overrides
    chosen = {}
    for token in overrides.split(" "):
        key = token.split("=", 1)[0].lstrip("+~")
        if key in keys and "=" in token:
            chosen[key] = token.lstrip("+~")
    if len(chosen) != len(keys):
        return overrides
    return " ".join(chosen[k] for k in keys)


class MLflowSweepCallback(Callback):
    """One MLflow parent run per Hydra multirun; the jobs' runs are its children."""

    def __init__(self, objective: str | None = None, direction: str | None = None) -> None:
        #: fallbacks when the configuration has no ``tracking.sweep_objective|sweep_direction``
        self.default_objective = objective or DEFAULT_OBJECTIVE
        self.default_direction = direction or DEFAULT_DIRECTION
        self.parent_run_id: str | None = None
        self.tracking_uri: str | None = None
        self.experiment_id: str | None = None
        self.objective = self.default_objective
        self.direction = self.default_direction
        self.swept: list[str] = []
        self._owner_pid: int | None = None
        self._saved_env: dict[str, str | None] = {}

    # ------------------------------------------------------------------ launching process

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _select(config, "tracking.enabled", False):
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.objective = str(_select(config, "tracking.sweep_objective", self.default_objective))
        direction = str(_select(config, "tracking.sweep_direction", self.default_direction)).lower()
        if direction not in DIRECTIONS:
            raise ValueError(f"tracking.sweep_direction={direction!r}: expected maximize or minimize")
        self.direction = DIRECTIONS[direction]
        self.tracking_uri = resolve_tracking_uri(_select(config, "tracking.uri"))
        experiment_name = str(_select(config, "tracking.experiment_name", "stage2"))
        task = [str(o) for o in (_select(config, "hydra.overrides.task", []) or [])]
        self.swept = swept_keys(task, _select(config, "hydra.sweeper.params"))
        limits = TrackingConfig(
            check_timeout_s=int(_select(config, "tracking.check_timeout_s", TrackingConfig.check_timeout_s)),
            check_retries=int(_select(config, "tracking.check_retries", TrackingConfig.check_retries)),
            store_lock_timeout_s=float(_select(config, "tracking.store_lock_timeout_s",
                                               TrackingConfig.store_lock_timeout_s)))
        try:  # within seconds, not MLflow's minutes of retries; a new SQLite store is created under its lock
            check_tracking_store(self.tracking_uri, limits)
        except EnvironmentFault as fault:  # each job reports it (or runs untracked: on_unavailable=warn)
            log.warning("sweep not recorded as a parent run: %s", fault.message)
            return

        client = MlflowClient(tracking_uri=self.tracking_uri)
        # created (or an untagged one tagged) as a model-development experiment, as a job's run does
        self.experiment_id = ensure_experiment(client, experiment_name)
        sweep_dir = _select(config, "hydra.sweep.dir", "")
        tags = {
            "stage2.sweep": "true",
            "sweep.dir": os.path.abspath(str(sweep_dir)) if sweep_dir else "",
            "sweep.overrides": " ".join(task),
            "sweep.swept_keys": " ".join(self.swept),
            "sweep.launcher": str(_select(config, "hydra.launcher._target_", "")),
            "sweep.sweeper": str(_select(config, "hydra.sweeper._target_", "")),
            "sweep.objective": self.objective,
            "sweep.direction": self.direction,
        }
        try:  # mlflow.user, mlflow.source.name, ... as a fluent run would have them
            from mlflow.tracking.context import registry as context_registry

            tags = context_registry.resolve_tags(tags)
        except Exception:
            pass
        run_name = _select(config, "tracking.run_name") or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        run = client.create_run(self.experiment_id, run_name=str(run_name),
                                tags={k: str(v)[:5000] for k, v in tags.items()})
        self.parent_run_id = run.info.run_id
        self._owner_pid = os.getpid()
        self._saved_env = {name: os.environ.get(name) for name in (PARENT_RUN_ENV, PARENT_URI_ENV)}
        self._export()
        atexit.register(self._abort)
        log.info("sweep recorded as MLflow run %s (%s); jobs are its children", self.parent_run_id,
                 self.tracking_uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is None or os.getpid() != self._owner_pid:
            return
        try:
            try:
                self._record_best()
            finally:
                self._end("FINISHED")
        finally:
            self._restore_env()
            atexit.unregister(self._abort)

    # ------------------------------------------------------------------ job's process

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is not None:
            self._export()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        from hydra.core.utils import JobStatus

        if getattr(job_return, "status", None) != JobStatus.COMPLETED:
            return
        value = job_return.return_value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            return
        import mlflow
        from mlflow.tracking import MlflowClient

        run = mlflow.last_active_run()
        if run is None or run.data.tags.get(PARENT_TAG) != self.parent_run_id:
            return
        job_num = _select(config, "hydra.job.num")
        if job_num is not None and run.data.tags.get("hydra.job.num") not in (None, str(job_num)):
            return
        MlflowClient(tracking_uri=self.tracking_uri).log_metric(run.info.run_id, RETURN_VALUE_METRIC, float(value))

    # ------------------------------------------------------------------ helpers

    def children(self) -> list[Any]:
        """The parent's child runs (every page)."""
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        runs: list[Any] = []
        token = None
        assert self.experiment_id is not None, "called after on_multirun_start"
        while True:
            page = client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _record_best(self) -> None:
        from mlflow.tracking import MlflowClient

        parent_run_id = self.parent_run_id
        assert parent_run_id is not None, "called after on_multirun_start"
        client = MlflowClient(tracking_uri=self.tracking_uri)
        children = self.children()
        # earliest first: on a tie the first job wins, as Optuna's best trial does
        children.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
        finished = [r for r in children if r.info.status == "FINISHED"]
        scored = [
            (float(r.data.metrics[self.objective]), r) for r in finished
            if self.objective in r.data.metrics and math.isfinite(float(r.data.metrics[self.objective]))
        ]
        tags = {"sweep.n_children": str(len(children)), "sweep.n_finished": str(len(finished))}
        if scored:
            pick = max if self.direction == "maximize" else min
            value, best = pick(scored, key=lambda item: item[0])
            overrides = best.data.tags.get("hydra.overrides", "")
            tags.update({
                "best_run_id": best.info.run_id,
                "best_value": repr(value),
                "best_overrides": filter_overrides(overrides, self.swept),
                "best_run_name": best.info.run_name or "",
            })
            client.log_metric(parent_run_id, "best_value", value)
            log.info("sweep best: %s = %s (%s), run %s", self.objective, value, tags["best_overrides"],
                     best.info.run_id)
        else:
            tags["best_run_id"] = ""
            log.warning("sweep: no finished child run has the metric %r", self.objective)
        for key, text in tags.items():
            client.set_tag(parent_run_id, key, text[:5000])

    def _end(self, status: str) -> None:
        from mlflow.tracking import MlflowClient

        if self.parent_run_id is None:
            return
        MlflowClient(tracking_uri=self.tracking_uri).set_terminated(self.parent_run_id, status=status)

    def _abort(self) -> None:
        """atexit: the sweep ended without ``on_multirun_end`` (a job failed, an interrupt)."""
        if self.parent_run_id is None or os.getpid() != self._owner_pid:
            return
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            if client.get_run(self.parent_run_id).info.status == "RUNNING":
                client.set_tag(self.parent_run_id, "status", "failed")
                client.set_terminated(self.parent_run_id, status="FAILED")
        except Exception:  # the interpreter is exiting: never mask the real error
            pass

    def _export(self) -> None:
        os.environ[PARENT_RUN_ENV] = str(self.parent_run_id)
        os.environ[PARENT_URI_ENV] = str(self.tracking_uri)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
