"""The tracking store checked before a run reads its data: credentials never shown, a store that
cannot be used reported within its limits, and a NEW SQLite store created under a lock so that
runs started at once on it all succeed."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import OFFLINE_OVERRIDES, assert_outputs_valid, subprocess_env

from stage2.config.schema import TrackingConfig
from stage2.errors import ConfigurationError, EnvironmentFault
from stage2.tracking.store import check_tracking_store, redact_uri, sqlite_store_path, store_lock, validate_policy


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://alice:s3cret@mlflow.example.edu:5000", "http://mlflow.example.edu:5000"),
        ("https://token@host/path?x=1", "https://host/path?x=1"),
        ("postgresql://u:p@db:5432/mlflow?password=zz&sslmode=require",
         "postgresql://db:5432/mlflow?password=***&sslmode=require"),
        ("http://host/?api_key=k1&access_token=t2", "http://host/?api_key=***&access_token=***"),
        ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),
    ],
)
def test_redact_uri_removes_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_sqlite_store_path() -> None:
    assert sqlite_store_path("sqlite:////srv/x/mlflow.db") == Path("/srv/x/mlflow.db")
    assert sqlite_store_path("sqlite:///mlflow.db?timeout=5") == Path("mlflow.db")
    assert sqlite_store_path("sqlite:///:memory:") is None
    assert sqlite_store_path("http://host:5000") is None


def test_a_store_lock_held_elsewhere_times_out(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path / "mlflow.db.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="mlflow.db.lock"), store_lock(store, timeout_s=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
    with store_lock(store, timeout_s=5) as lock:  # free once its holder died
        assert lock == tmp_path / "mlflow.db.lock"


def test_a_server_that_never_answers_fails_within_the_check_timeout() -> None:
    """A socket that accepts connections and says nothing: MLflow's own request timeout (120 s,
    7 retries) would wait for minutes; the check's is ``tracking.check_timeout_s``."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        with pytest.raises(EnvironmentFault) as caught:
            check_tracking_store(uri, TrackingConfig(check_timeout_s=1, check_retries=0))
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()
    assert caught.value.code == "TRACKING_UNAVAILABLE" and caught.value.exit_code == 5
    assert f"the MLflow tracking store {uri} cannot be used" in str(caught.value)
    assert accepted, "the check reached the server"


@pytest.mark.parametrize(
    "overrides",
    [{"on_unavailable": "retry"}, {"check_timeout_s": 0}, {"check_retries": -1}, {"store_lock_timeout_s": 0.0}],
)
def test_invalid_policies_are_configuration_errors(overrides: dict) -> None:
    with pytest.raises(ConfigurationError):
        validate_policy(TrackingConfig(**overrides))


@pytest.mark.slow
def test_four_runs_started_at_once_on_a_new_sqlite_store_all_succeed(make_institution_dir, tmp_path: Path) -> None:
    """Without the lock, three of four failed (``table ... already exists``, an alembic revision
    mismatch): MLflow creates and migrates a new store's tables without one."""
    from mlflow.tracking import MlflowClient

    institution = make_institution_dir(120, seed=3)
    store = tmp_path / "new-store" / "mlflow.db"
    uri = f"sqlite:///{store}"
    offline = [o for o in OFFLINE_OVERRIDES if not o.startswith("tracking.")]
    logs = [tmp_path / f"run{i}.txt" for i in range(4)]
    runs = []
    for i, log in enumerate(logs):  # output to files: no pipe that fills up makes one wait
        with open(log, "w") as stream:
            runs.append(subprocess.Popen(
                [sys.executable, "-m", "stage2", f"data.input_dir={institution}", *offline, "tracking.enabled=true",
                 f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / f'run{i}'}"],
                cwd=tmp_path, env=subprocess_env(), stdout=stream, stderr=subprocess.STDOUT,
            ))
    for run, log in zip(runs, logs, strict=True):
        assert run.wait(timeout=600) == 0, log.read_text()[-3000:]
    for i in range(4):
        assert_outputs_valid(tmp_path / f"run{i}", institution)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("stage2")
    finished = client.search_runs([experiment.experiment_id])
    assert len(finished) == 4 and {r.info.status for r in finished} == {"FINISHED"}
