"""Real servers for the service tests: ``python -m stage2.service`` started as a subprocess on
127.0.0.1 and a free port, spoken to over HTTP with ``requests``, stopped at the end, and no
process of it or of its runs allowed to survive.

- :class:`Service`: one server process (start, wait for ``/health``, SIGKILL, stop);
- :class:`Client`: HTTP calls, submissions (multipart and JSON), polling a run's status;
- :class:`ServiceManager`: starts servers and, when closed, cancels their unfinished runs, stops
  them and fails the test if any process mentioning one of their homes is left;
- ``start_service`` (a test's own servers) and ``mlflow_template`` (an MLflow SQLite store
  created once per session and copied into each home: creating one takes 10-20 s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from conftest import STAGE3_TABLES, subprocess_env

from stage2.contract.loader import CONTRACT_FILES
from stage2.service.executor import ServicePaths

HOST = "127.0.0.1"
AS_OF = "2025-08-01T00:00:00"
#: overrides of every test run: no notebook (slow), fixed reference time (comparable outputs)
FAST = ("report.notebook=false", f"as_of={AS_OF}")
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
STAGE3_CSVS = tuple(f"{table}.csv" for table in STAGE3_TABLES)
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
RUN_TIMEOUT_S = 300
POLL_S = 0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def contract_files(input_dir: Path) -> list[Path]:
    """The contract CSVs of an institution directory (other files, e.g. ``.complete``, left out)."""
    files = sorted(p for p in Path(input_dir).iterdir() if p.name in CONTRACT_FILES)
    assert files, f"no contract file in {input_dir}"
    return files


# ----------------------------------------------------------------------------- processes


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live (non-zombie) processes, other than this one, whose command line contains ``text``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if text in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def processes_of(home: Path) -> list[psutil.Process]:
    """Live processes of a service home: their command line names it (the server, the runs) or
    they work in it (a run's workers, e.g. joblib's, whose command lines name nothing)."""
    home_text = str(home)
    found = {p.pid: p for p in processes_mentioning(home_text)}
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.pid in found or proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cwd = proc.cwd()
            if cwd == home_text or cwd.startswith(home_text + os.sep):
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
            continue
    return list(found.values())


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) members of process group ``pgid``."""
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                alive.append(proc.pid)
        except (psutil.NoSuchProcess, ProcessLookupError, psutil.AccessDenied):
            continue
    return alive


def run_processes(run_id: str) -> list[psutil.Process]:
    """The live processes of one run (its command line names the run id)."""
    return [p for p in processes_mentioning(run_id) if "stage2.service" not in " ".join(p.cmdline())]


def wait_until(predicate, timeout: float, what: str, interval: float = POLL_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill_processes_of(home: Path) -> list[str]:
    """SIGKILL the process groups of every process of ``home``; their command lines."""
    killed = []
    for proc in processes_of(home):
        try:
            killed.append(" ".join(proc.cmdline()))
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    return killed


def assert_no_survivors(home: Path) -> None:
    """No process of ``home`` (server, run, a run's worker) is left; survivors are killed,
    then reported."""
    try:
        wait_until(lambda: not processes_of(home), 15, f"the processes of {home} to end")
    except AssertionError:
        killed = kill_processes_of(home)
        if killed:
            raise AssertionError(f"processes of {home} survived the test (now killed): {killed}") from None


# ----------------------------------------------------------------------------- HTTP


class Client:
    def __init__(self, base: str, key: str | None = None) -> None:
        self.base = base
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-API-Key"] = key

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def submit_upload(self, input_dir: Path | None, overrides: Sequence[str] | None = FAST, *,
                      path: str = "/v1/runs", headers: dict[str, str] | None = None,
                      files: list[tuple[str, bytes]] | None = None) -> requests.Response:
        """A multipart submission of ``input_dir``'s contract CSVs (or of ``files``: (name, bytes))."""
        if files is None:
            assert input_dir is not None
            files = [(p.name, p.read_bytes()) for p in contract_files(input_dir)]
        data = {} if overrides is None else {"overrides": json.dumps(list(overrides))}
        return self.post(path, files=[("files", (name, body, "text/csv")) for name, body in files], data=data,
                         headers=headers or {})

    def submit_json(self, input_dir: str, overrides: Sequence[str] = FAST, *,
                    headers: dict[str, str] | None = None) -> requests.Response:
        return self.post("/v1/runs", json={"input_dir": input_dir, "overrides": list(overrides)},
                         headers=headers or {})

    def accepted(self, response: requests.Response) -> str:
        """The run id of a 202 answer."""
        assert response.status_code == 202, (response.status_code, response.text)
        return response.json()["run_id"]

    def run(self, run_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, (response.status_code, response.text)
        return response.json()

    def wait(self, run_id: str, statuses: Iterable[str] = FINAL, timeout: float = RUN_TIMEOUT_S,
             until=None) -> dict[str, Any]:
        """Poll the run until its status is one of ``statuses`` (and ``until(run)`` holds)."""
        wanted = set(statuses)
        last: dict[str, Any] = {}

        def reached() -> bool:
            last.update(self.run(run_id))
            return last["status"] in wanted and (until is None or until(last))

        try:
            wait_until(reached, timeout, f"run {run_id} to be {sorted(wanted)}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {last}") from None
        return dict(last)

    def all_runs(self, status: str | None = None) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 200}
        if status:
            params["status"] = status
        while True:
            response = self.get("/v1/runs", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            runs += page["runs"]
            if not page["next_page_token"]:
                return runs
            params["page_token"] = page["next_page_token"]


# ----------------------------------------------------------------------------- servers


class Service:
    """One ``python -m stage2.service`` process on 127.0.0.1 (its own process group)."""

    def __init__(self, home: Path, args: Sequence[str] = (), *, admin_key: str | None = None,
                 port: int | None = None) -> None:
        self.home = Path(home)
        self.args = list(args)
        self.admin_key = admin_key
        self.port = port or free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.paths = ServicePaths(self.home)
        self.log_path = self.home.parent / f"{self.home.name}-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "stage2.service", f"service.host={HOST}", f"service.port={self.port}",
                f"service.home={self.home}", *self.args]

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.home.parent, env=subprocess_env(),
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.wait_ready()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if requests.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the service did not answer /health in {STARTUP_TIMEOUT_S} s:\n{self.log()[-3000:]}")

    def client(self, key: str | None = None) -> Client:
        return Client(self.base, key if key is not None else self.admin_key)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server process alone (its runs, in groups of their own, live on)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def cancel_unfinished(self) -> None:
        """Cancel the runs still queued or running and wait until they end (best effort)."""
        client = self.client()
        try:
            unfinished = [r["run_id"] for r in client.all_runs() if r["status"] not in FINAL]
            for run_id in unfinished:
                client.post(f"/v1/runs/{run_id}/cancel")
            for run_id in unfinished:
                client.wait(run_id, timeout=60)
        except (requests.RequestException, AssertionError):
            pass

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the server's process group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=STOP_TIMEOUT_S)


class ServiceManager:
    """Starts servers on homes (with a copy of the session's MLflow store) and cleans up."""

    def __init__(self, mlflow_template: Path | None) -> None:
        self.mlflow_template = mlflow_template
        self.services: list[Service] = []

    def start(self, home: Path, args: Sequence[str] = (), *, admin_key: str | None = None) -> Service:
        home = Path(home)
        if not home.exists():
            home.mkdir(parents=True)
            if self.mlflow_template is not None:
                shutil.copy(self.mlflow_template, home / "mlflow.db")
        service = Service(home, args, admin_key=admin_key)
        self.services.append(service)
        return service.start()

    def close(self) -> None:
        for service in self.services:
            if service.alive:
                service.cancel_unfinished()
                service.stop()
        for home in dict.fromkeys(s.home for s in self.services):
            assert_no_survivors(home)


@pytest.fixture(scope="session", autouse=True)
def _mlflow_template_started(tmp_path_factory):
    """Start creating the MLflow store template at once, in the background (it takes 10-20 s
    and overlaps with the first module's server start)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    code = ("from mlflow.tracking import MlflowClient; "
            f"MlflowClient(tracking_uri='sqlite:///{path}').search_experiments(max_results=1)")
    with (path.parent / "create.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", code], env=subprocess_env(), cwd=path.parent,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    yield path, process
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def mlflow_template(_mlflow_template_started) -> Path:
    """An MLflow SQLite store with its tables created (what a service's first start does)."""
    path, process = _mlflow_template_started
    assert process.wait(timeout=300) == 0, (path.parent / "create.log").read_text(errors="replace")[-3000:]
    assert path.is_file()
    return path


@pytest.fixture
def start_service(mlflow_template):
    """``start_service(home, args, admin_key=None) -> Service``: the test's own servers, stopped
    (their unfinished runs cancelled) at the end, no process of theirs left."""
    manager = ServiceManager(mlflow_template)
    yield manager.start
    manager.close()


@pytest.fixture(scope="session")
def small_institution(make_institution_dir) -> Path:
    """200 students: a run of a few seconds."""
    return make_institution_dir(200, seed=1)


@pytest.fixture(scope="session")
def large_institution(make_institution_dir) -> Path:
    """30000 students: a run long enough to cancel or interrupt (clustering alone takes seconds)."""
    return make_institution_dir(30000, seed=0)


@pytest.fixture(scope="session")
def demo_institution() -> Path:
    from stage2.datasets import fetch_dataset

    return Path(fetch_dataset("demo"))


def copy_institution(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for path in contract_files(source):
        shutil.copy(path, target / path.name)
    return target


def manifest_names(client: Client, run_id: str) -> list[str]:
    response = client.get(f"/v1/runs/{run_id}/artifacts")
    assert response.status_code == 200, response.text
    return [entry["name"] for entry in response.json()]
