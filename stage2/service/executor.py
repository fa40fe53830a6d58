"""Runs execute as their own ``python -m stage2`` processes, each in its own process group
(Hydra and MLflow keep process-global state; a process group can be stopped whole), at most
``service.max_concurrent`` at once. One executor thread in the web process starts queued runs,
follows the running ones (their current stage, from the run's ``stage2.jsonl``), finalises them
from their exit status and ``errors.json``, and carries out cancellations.

After a restart, :meth:`Executor.recover` settles the runs the previous service left
``RUNNING``: a finished one is recorded from its files, an interrupted one is stopped for good and
queued again with ``resume=true`` (the pipeline continues from its checkpoints), at most
``service.max_resumes`` times, then ends ``FAILED`` with ``SERVICE_RESTARTED``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stage2.config.service import ServiceConfig
from stage2.outputs import (
    ERRORS_FILE,
    QUALITY_REPORT,
    STAGE3_TABLES,
    VALIDATION_REPORT,
    remove_stage3_tables,
)
from stage2.runlog import JSONL_FILE
from stage2.service.metrics import ServiceMetrics
from stage2.service.runfiles import read_json
from stage2.service.store import (
    CANCELLED,
    FAILED,
    FINAL_STATUSES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    RunRecord,
    RunStore,
    now,
)

log = logging.getLogger("stage2.service")

#: the run's pipeline output directory inside its run directory
OUTPUT_DIR = "output"
#: the run process's stdout and stderr
PROCESS_LOG = "process.log"
#: environment variables a run process does not inherit from the service
PRIVATE_ENV = ("STAGE2_PARENT_RUN_ID", "STAGE2_PARENT_TRACKING_URI", "MLFLOW_RUN_ID", "STAGE2_SERVICE_KEYS")


class ServicePaths:
    """Where the service keeps things, all under ``service.home``."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.runs = self.home / "runs"
        self.uploads = self.home / "uploads"
        self.store = self.home / "runs.db"
        self.mlflow_db = self.home / "mlflow.db"
        #: artifacts of the runs' MLflow experiment (when the service creates it)
        self.mlflow_artifacts = self.home / "mlartifacts"

    def run_dir(self, run_id: str) -> Path:
        return self.runs / run_id

    def output_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / OUTPUT_DIR

    def upload_dir(self, run_id: str) -> Path:
        return self.uploads / run_id

    def create(self) -> None:
        for directory in (self.home, self.runs, self.uploads):
            directory.mkdir(parents=True, exist_ok=True)


@dataclass
class _Running:
    process: subprocess.Popen[bytes]
    log_file: Any
    term_sent_at: float | None = None


def process_group_alive(pgid: int | None) -> bool:
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_stage(output_dir: Path) -> str | None:
    """The stage the run's ``stage2.jsonl`` says started last."""
    path = output_dir / JSONL_FILE
    if not path.exists():
        return None
    stage = None
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if '"stage_start"' in line:
                try:
                    stage = json.loads(line).get("stage", stage)
                except json.JSONDecodeError:
                    continue
    return stage


class Executor:
    def __init__(self, config: ServiceConfig, store: RunStore, paths: ServicePaths, metrics: ServiceMetrics,
                 tracking_uri: str) -> None:
        self.config = config
        self.store = store
        self.paths = paths
        self.metrics = metrics
        self.tracking_uri = tracking_uri
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="stage2-executor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following runs; the running processes keep running (a restarted service
        recovers them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for running in self._running.values():
                running.log_file.close()
            self._running.clear()

    def wake(self) -> None:
        """Look at the queue now (a run was submitted or cancelled)."""
        self._wake.set()

    @property
    def slots_free(self) -> int:
        with self._lock:
            return max(0, self.config.max_concurrent - len(self._running))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the executor must outlive any one run's trouble
                log.exception("executor step failed")
            self._wake.wait(self.config.poll_interval_s)
            self._wake.clear()

    # ------------------------------------------------------------------ one pass

    def step(self) -> None:
        """Finalise finished runs, escalate cancellations, refresh stages, start queued runs."""
        with self._lock:
            items = list(self._running.items())
        for run_id, running in items:
            record = self.store.get(run_id)
            code = running.process.poll()
            if code is not None:
                self._finish(run_id, running, code)
                continue
            if record is not None and record.cancel_requested:
                self._stop_process(running)
            stage = current_stage(self.paths.output_dir(run_id))
            if record is not None and stage and stage != record.stage:
                self.store.update(run_id, stage=stage)
        for record in self.store.with_status(QUEUED):
            if self.slots_free == 0:
                break
            self._launch(record)

    def _stop_process(self, running: _Running) -> None:
        pgid = running.process.pid
        if running.term_sent_at is None:
            running.term_sent_at = time.monotonic()
            _signal_group(pgid, signal.SIGTERM)
        elif time.monotonic() - running.term_sent_at > self.config.cancel_grace_s:
            _signal_group(pgid, signal.SIGKILL)

    def _launch(self, record: RunRecord) -> None:
        run_dir = self.paths.run_dir(record.run_id)
        output = self.paths.output_dir(record.run_id)
        output.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "stage2",
            f"data.input_dir={_quoted(record.input_dir)}",
            f"hydra.run.dir={_quoted(str(output))}",
            f"tracking.experiment_name={_quoted(self.config.experiment_name)}",
            f"tracking.run_name={record.run_id}",
            *record.overrides,
        ]
        if record.previous_run_id is not None:
            # the server's path, from the id the client gave: the client never names a path
            command.append(f"rebatch.previous_run={_quoted(str(self.paths.output_dir(record.previous_run_id)))}")
        if record.resume_next:
            command.append("resume=true")
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        # through the environment, not an override: overrides end up in the run's files, which
        # clients may download, and a URI can carry credentials
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        env["PYTHONUNBUFFERED"] = "1"
        log_file = (run_dir / PROCESS_LOG).open("ab")
        try:
            process = subprocess.Popen(command, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            log_file.close()
            self._record_final(record.run_id, FAILED, error={
                "code": "SERVICE_LAUNCH_FAILED", "where": "service", "message": f"could not start the run: {exc}",
                "fix": "check the service's Python environment"})
            return
        started = self.store.update(record.run_id, expect=[QUEUED], status=RUNNING, started_at=now(),
                                    pid=process.pid, stage=None, resume_next=False)
        with self._lock:
            self._running[record.run_id] = _Running(process, log_file)
        if not started:  # cancelled between the read and the update
            self._stop_process(self._running[record.run_id])
        log.info("run %s started (pid %d)%s", record.run_id, process.pid, " resuming" if record.resume_next else "")

    def _finish(self, run_id: str, running: _Running, code: int) -> None:
        running.log_file.close()
        with self._lock:
            self._running.pop(run_id, None)
        _signal_group(running.process.pid, signal.SIGKILL)  # anything the run left behind
        record = self.store.get(run_id)
        if record is None:  # deleted meanwhile
            return
        if record.status in FINAL_STATUSES:  # cancelled while it was being started: recorded already
            self._remove_stage3_tables(run_id)
            return
        if record.cancel_requested:
            self._remove_stage3_tables(run_id)
            self._record_final(run_id, CANCELLED, exit_code=code)
        else:
            self._record_outcome(record, code)
        self.wake()

    def _record_outcome(self, record: RunRecord, code: int | None) -> None:
        output = self.paths.output_dir(record.run_id)
        report = read_json(output / QUALITY_REPORT) or read_json(output / VALIDATION_REPORT) or {}
        errors = read_json(output / ERRORS_FILE)
        details = {"input_digest": report.get("data_digest"),
                   "mlflow_run_id": report.get("run_id") or (errors or {}).get("run_id")}
        if code == 0:
            self._record_final(record.run_id, SUCCEEDED, exit_code=code, **details)
            self.metrics.observe_stages(output / JSONL_FILE)
            return
        error = (errors or {}).get("error") or _error_from_log(output.parent / PROCESS_LOG, code)
        self._record_final(record.run_id, FAILED, exit_code=code, error=error, **details)

    def _record_final(self, run_id: str, status: str, **values: Any) -> None:
        record = self.store.get(run_id)
        self.store.update(run_id, status=status, finished_at=now(), pid=None, **values)
        if record is not None:
            started = record.started_at or record.created_at
            self.metrics.run_finished(status, now() - started)
        log.info("run %s %s", run_id, status)

    def _remove_stage3_tables(self, run_id: str) -> None:
        remove_stage3_tables(self.paths.output_dir(run_id))

    # ------------------------------------------------------------------ requests

    def cancel(self, run_id: str) -> RunRecord | None:
        """Ask a run to stop: a queued one is cancelled at once, a running one gets SIGTERM
        (SIGKILL after ``cancel_grace_s``) and ends CANCELLED. Repeating it changes nothing."""
        record = self.store.get(run_id)
        if record is None or record.status not in (QUEUED, RUNNING):
            return record
        self.store.update(run_id, cancel_requested=True)
        if self.store.update(run_id, expect=[QUEUED], status=CANCELLED, finished_at=now()):
            self.metrics.run_finished(CANCELLED, 0.0)
        else:
            with self._lock:
                running = self._running.get(run_id)
            if running is not None:
                self._stop_process(running)
        self.wake()
        return self.store.get(run_id)

    # ------------------------------------------------------------------ restart

    def recover(self) -> None:
        """Settle the runs a previous service process left RUNNING (see the module doc)."""
        for record in self.store.with_status(RUNNING):
            if record.pid and _is_run_group(record.pid, record.run_id):
                _signal_group(record.pid, signal.SIGKILL)
                _wait_gone(record.pid)
            output = self.paths.output_dir(record.run_id)
            finished = (output / QUALITY_REPORT).exists() and not (output / ERRORS_FILE).exists() and all(
                (output / f"{name}.csv").exists() for name in STAGE3_TABLES)
            dry_run_done = (output / VALIDATION_REPORT).exists() and not (output / ERRORS_FILE).exists()
            failed = (read_json(output / ERRORS_FILE) or {}).get("status") == "failed"  # ended on its own
            if record.cancel_requested:
                self._remove_stage3_tables(record.run_id)
                self._record_final(record.run_id, CANCELLED)
            elif finished or dry_run_done:
                self._record_outcome(record, 0)
            elif failed:
                self._record_outcome(record, 1)
            elif record.resumes < self.config.max_resumes:
                self._remove_stage3_tables(record.run_id)
                self.store.update(record.run_id, status=QUEUED, pid=None, stage=None, resume_next=True,
                                  resumes=record.resumes + 1)
                log.info("run %s was interrupted by a restart: queued again, resuming from its checkpoints",
                         record.run_id)
            else:
                self._remove_stage3_tables(record.run_id)
                self._record_final(record.run_id, FAILED, error={
                    "code": "SERVICE_RESTARTED", "where": "service",
                    "message": f"the service restarted while the run was running ({record.resumes} resume(s) "
                               "already tried)",
                    "fix": "submit the run again"})


#: what the run's process prints when it fails before it can write errors.json
_CLI_ERROR = re.compile(r"^stage2: error: \[(?P<code>[A-Z_]+)\] (?P<message>.*)$")


def _error_from_log(log_path: Path, exit_code: int | None) -> dict[str, Any]:
    """The error a run without ``errors.json`` printed (a configuration Hydra refused before the
    pipeline started), else an internal error naming the exit status."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if match := _CLI_ERROR.match(line.strip()):
            return {"code": match["code"], "where": "overrides", "message": match["message"],
                    "fix": "correct the submission's overrides (python -m stage2 --cfg job lists every key)"}
    return {"code": "INTERNAL_ERROR", "where": PROCESS_LOG,
            "message": f"the run's process ended with status {exit_code} without recording an error",
            "fix": "this is a bug in stage2, or the machine stopped the run: see the service's run directory"}


def _is_run_group(pgid: int, run_id: str) -> bool:
    """Whether process group ``pgid`` is still the run's (its pid may have been reused since the
    old service died): its leader's command line names the run, or, the leader gone, a member
    is a joblib/loky worker (the run's clustering pool)."""
    if not process_group_alive(pgid):
        return False
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                members.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ")))
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    leader = [cmdline for pid, cmdline in members if pid == pgid]
    if leader:
        return run_id.encode() in leader[0]
    return any(b"joblib" in cmdline or b"loky" in cmdline for _, cmdline in members)


def _signal_group(pgid: int | None, sig: int) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pgid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while process_group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _quoted(value: str) -> str:
    """A Hydra override value in single quotes (paths may hold ``,`` or ``=``)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
