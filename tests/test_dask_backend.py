"""parallel.backend=dask: the same files as loky, byte for byte, on a LocalCluster and on a
scheduler and workers started as separate processes; a worker killed mid-run; a cluster that
loses every worker or cannot be reached fails with a code, never hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OFFLINE_OVERRIDES, STAGE3_TABLES, assert_outputs_valid, subprocess_env

pytestmark = pytest.mark.slow

distributed = pytest.importorskip("distributed")

#: every group runs on the workers, however small the institution
ALWAYS_PARALLEL = ("parallel.min_students=0",)
N_STUDENTS = 3000
START_TIMEOUT_S = 60


def run_stage2(input_dir: Path, out: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stage2", f"data.input_dir={input_dir}", f"hydra.run.dir={out}", *OFFLINE_OVERRIDES,
         *ALWAYS_PARALLEL, *overrides],
        capture_output=True, text=True, env=subprocess_env(), timeout=timeout,
    )


def assert_same_files(a: Path, b: Path) -> None:
    for table in STAGE3_TABLES:
        assert (a / f"{table}.csv").read_bytes() == (b / f"{table}.csv").read_bytes(), table


@pytest.fixture(scope="module")
def institution(make_institution_dir) -> Path:
    return make_institution_dir(N_STUDENTS, seed=7)


@pytest.fixture(scope="module")
def loky_run(institution, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loky")
    done = run_stage2(institution, out, "parallel.backend=loky", "parallel.n_workers=2")
    assert done.returncode == 0, done.stderr
    assert_outputs_valid(out, institution)
    return out


class DaskProcesses:
    """A scheduler and workers started with Dask's own command line on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scheduler_file = root / "scheduler.json"
        self.scheduler = self._start("scheduler", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                     "--no-dashboard", "--scheduler-file", str(self.scheduler_file))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.scheduler_file.exists():
            assert self.scheduler.poll() is None, (self.root / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        self.workers: list[subprocess.Popen] = []

    def _start(self, name: str, *command: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        bin_dir = Path(sys.executable).parent
        return subprocess.Popen([str(bin_dir / command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                                env=subprocess_env(), start_new_session=True)

    def start_worker(self, name: str) -> subprocess.Popen:
        # no nanny: killing this process kills the worker for good (a nanny would restart it)
        worker = self._start(name, "dask", "worker", "--scheduler-file", str(self.scheduler_file), "--nworkers", "1",
                             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, n: int) -> None:
        with distributed.Client(self.address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT_S)

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def dask_processes(tmp_path) -> Iterator[DaskProcesses]:
    processes = DaskProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def test_local_cluster_gives_loky_files_byte_for_byte(institution, loky_run, tmp_path):
    done = run_stage2(institution, tmp_path / "dask", "parallel.backend=dask", "parallel.n_workers=2")
    assert done.returncode == 0, done.stderr
    assert_same_files(loky_run, tmp_path / "dask")
    log = (tmp_path / "dask" / "stage2.log").read_text()
    assert "dask:" in log and "(2 workers)" in log


def test_scheduler_and_workers_as_processes_give_loky_files(institution, loky_run, dask_processes, tmp_path):
    dask_processes.start_worker("w1")
    dask_processes.start_worker("w2")
    dask_processes.wait_for_workers(2)
    done = run_stage2(institution, tmp_path / "remote", "parallel.backend=dask",
                      f"parallel.address={dask_processes.address}")
    assert done.returncode == 0, done.stderr
    assert_same_files(loky_run, tmp_path / "remote")
    # the groups ran on that scheduler's two workers
    assert f"on {dask_processes.address} (2 workers)" in (tmp_path / "remote" / "stage2.log").read_text()


def _kill_when_busy(address: str, victim_name: str, victim: subprocess.Popen, killed: threading.Event) -> None:
    """SIGKILL ``victim`` as soon as the scheduler shows it processing a task."""
    with distributed.Client(address, timeout=START_TIMEOUT_S) as client:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and victim.poll() is None:
            info = client.scheduler_info(n_workers=-1)["workers"]
            busy = {w["name"] for a, w in info.items() if client.processing().get(a)}
            if victim_name in busy:
                os.killpg(victim.pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.02)


def test_worker_killed_mid_run_the_run_completes_with_the_same_files(institution, loky_run, dask_processes,
                                                                     tmp_path):
    victim = dask_processes.start_worker("victim")
    dask_processes.start_worker("survivor")
    dask_processes.wait_for_workers(2)
    killed = threading.Event()
    killer = threading.Thread(target=_kill_when_busy, args=(dask_processes.address, "victim", victim, killed))
    killer.start()
    done = run_stage2(institution, tmp_path / "killed", "parallel.backend=dask",
                      f"parallel.address={dask_processes.address}")
    killer.join(timeout=30)
    assert killed.is_set(), "the victim worker never ran a task"
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert done.returncode == 0, done.stderr
    assert_same_files(loky_run, tmp_path / "killed")


def test_cluster_without_workers_fails_with_a_code_not_a_hang(institution, dask_processes, tmp_path):
    # a scheduler with no worker at all: the run must give up after parallel.worker_wait_s
    started = time.monotonic()
    done = run_stage2(institution, tmp_path / "none", "parallel.backend=dask",
                      f"parallel.address={dask_processes.address}", "parallel.worker_wait_s=3", timeout=120)
    assert done.returncode == 5, done.stderr
    assert "PARALLEL_WORKERS_LOST" in done.stderr
    error = json.loads((tmp_path / "none" / "errors.json").read_text())["error"]
    assert error["code"] == "PARALLEL_WORKERS_LOST" and error["exit_code"] == 5
    assert " 0 of " not in error["message"]
    assert not (tmp_path / "none" / "student_batches.csv").exists()
    assert time.monotonic() - started < 100


def test_unreachable_scheduler_fails_with_a_code(institution, tmp_path):
    done = run_stage2(institution, tmp_path / "down", "parallel.backend=dask", "parallel.address=tcp://127.0.0.1:9",
                      "parallel.worker_wait_s=2", timeout=120)
    assert done.returncode == 5, done.stderr
    assert "PARALLEL_BACKEND_UNAVAILABLE" in done.stderr and "tcp://127.0.0.1:9" in done.stderr
    assert not (tmp_path / "down" / "student_batches.csv").exists()


@pytest.mark.parametrize(("override", "key"), [("parallel.backend=ray", "parallel.backend"),
                                               ("parallel.n_workers=0", "parallel.n_workers")])
def test_bad_parallel_settings_are_configuration_errors(institution, tmp_path, override, key):
    done = run_stage2(institution, tmp_path / "bad", override, timeout=120)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr
