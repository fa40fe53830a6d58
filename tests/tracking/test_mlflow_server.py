"""A real stage2 run recorded into a SQLite store is visible through ``mlflow server``'s REST
API (what the MLflow UI reads), and stopping the server leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import subprocess_env

from stage2.service.executor import process_group_alive

pytestmark = pytest.mark.slow

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 15
EXPERIMENT = "server-check"
ARTIFACTS = {"student_batches.csv", "batch_student_membership.csv", "batch_course_enrollment.csv",
             "quality_report.json"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http(base: str, path: str, *, params: dict | None = None, body: dict | None = None, timeout: float = 10) -> dict:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip().startswith("{") else {"text": text}


# Process listings. A listing that cannot be made fails the test: a check of "no survivors" on an
# empty listing would pass without checking anything. Only a process that ends while it is being
# read (its /proc entry gone) is skipped.
GONE = (FileNotFoundError, ProcessLookupError)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of ``pid`` from /proc, ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except GONE:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def all_pids() -> list[int]:
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    assert os.getpid() in pids, "/proc does not list this process: no process listing"
    return pids


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    stats = {pid: proc_stat(pid) for pid in all_pids()}
    return [pid for pid, stat in stats.items() if stat and stat[2] == pgid and stat[0] != "Z"]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except GONE:
        return ""


def process_tree_from_proc(pid: int) -> list[int]:
    """``pid`` and every descendant, from /proc."""
    stats = {p: proc_stat(p) for p in all_pids()}
    assert stats.get(pid), f"process {pid} is not running"
    children: dict[int, list[int]] = {}
    for p, stat in stats.items():
        if stat:
            children.setdefault(stat[1], []).append(p)
    found, frontier = [pid], [pid]
    while frontier:
        kids = children.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


def process_tree(pid: int) -> list[tuple[int, float]]:
    """(pid, create_time) of ``pid`` and every descendant: with psutil when installed (raises if
    ``pid`` is gone), else from /proc (create_time 0)."""
    try:
        import psutil
    except ImportError:
        return [(p, 0.0) for p in process_tree_from_proc(pid)]
    root = psutil.Process(pid)
    return [(p.pid, p.create_time()) for p in [root, *root.children(recursive=True)]]


def alive(pid: int, created: float) -> bool:
    try:
        import psutil
    except ImportError:
        stat = proc_stat(pid)
        return stat is not None and stat[0] != "Z"
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and (not created or abs(proc.create_time() - created) < 1e-3)
    except psutil.NoSuchProcess:
        return False


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of the group is left (signals only: stopping must not depend on a
    process listing, so that a failing listing still leaves nothing running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_group_alive(pgid):
            return True
        time.sleep(0.2)
    return not process_group_alive(pgid)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, wait, SIGKILL whatever is left."""
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None or not wait_group_gone(pgid, STOP_TIMEOUT_S):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=STOP_TIMEOUT_S)
        wait_group_gone(pgid, STOP_TIMEOUT_S)


def test_run_is_served_by_mlflow_server_and_the_server_stops_cleanly(tmp_path, make_institution_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    from stage2 import load_config, process_student_batching

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = load_config([f"data.input_dir={make_institution_dir(300, seed=3)}", f"tracking.uri={uri}",
                       f"tracking.experiment_name={EXPERIMENT}", "report.notebook=false"], config_dir=CONF_DIR)
    result = process_student_batching(cfg, output_dir=tmp_path / "run")
    assert result.run_id

    port = free_port()
    base = f"http://{HOST}:{port}"
    env = subprocess_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", HOST, "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: pgid == proc.pid
    )
    pgid = proc.pid
    spawned: list[tuple[int, float]] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        healthy = False
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                healthy = http(base, "/health", timeout=2).get("text", "").strip() == "OK"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                healthy = False
            if healthy:
                break
            time.sleep(0.5)
        assert healthy, (f"mlflow server not healthy (exit {proc.poll()}):\n"
                         + (tmp_path / "server.log").read_text()[-3000:])
        spawned = process_tree(proc.pid)
        # the listings really see the running server: otherwise "no survivors" below proves nothing
        listed = [pid for pid, _ in spawned]
        assert proc.pid in listed and "mlflow" in cmdline(proc.pid), (listed, cmdline(proc.pid))
        assert proc.pid in process_tree_from_proc(proc.pid)
        assert proc.pid in group_members(pgid), group_members(pgid)

        experiment = http(base, "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": EXPERIMENT})
        experiment_id = experiment["experiment"]["experiment_id"]
        runs = http(base, "/api/2.0/mlflow/runs/search", body={"experiment_ids": [experiment_id], "max_results": 10})
        (run,) = runs["runs"]
        assert run["info"]["run_id"] == result.run_id and run["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["academic_coherence"] == pytest.approx(result.metrics["academic_coherence"])
        assert metrics["course_sse"] == pytest.approx(result.metrics["course_sse"])
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert len(tags["input_digest"]) == 64 and tags["status"] == "ok"
        listing = http(base, "/api/2.0/mlflow/artifacts/list", params={"run_id": result.run_id})
        files = {f["path"] for f in listing["files"] if not f.get("is_dir")}
        assert ARTIFACTS <= files, files
    finally:
        stop_group(proc)
        log.close()

    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert not group_members(pgid)
    survivors = [(pid, cmdline(pid)) for pid, created in spawned if alive(pid, created)]
    assert not survivors, survivors
    huey = [pid for pid in group_members(pgid) if "huey_consumer" in cmdline(pid)]
    huey += [pid for pid, _ in spawned if "huey_consumer" in cmdline(pid) and alive(pid, 0.0)]
    assert not huey
