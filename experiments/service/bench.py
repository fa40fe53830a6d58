"""What does the REST service cost over the command line, does it lose runs under concurrent
submissions, and how much memory does it hold?

Run: ``python experiments/service/bench.py`` (from the repository root; ~4 min on 2 cores).
See README.md.

The harness starts ``python -m stage2.service`` itself (a subprocess on a free port of
127.0.0.1, its home in a temporary directory), talks HTTP to it, stops it at the end and checks
that no process it started is left. Three measurements:

1. *Overhead on the demo institution*: wall time from the submission (multipart upload of the
   demo's CSVs, overrides ``report.notebook=false as_of=...``) to ``SUCCEEDED`` seen by polling
   ``GET /v1/runs/{id}``, against ``python -m stage2 data.input_dir=<demo> report.notebook=false
   as_of=... tracking.uri=sqlite:///<an existing store>`` as a subprocess; repeated, the two
   interleaved; the downloaded CSVs are compared with the command line's byte for byte.
2. *Concurrent submissions*: N threads (default 20) upload a small synthetic institution each
   at once to a service with ``max_concurrent=2 max_queued=50``: accepted, distinct run ids,
   final statuses, wall time, throughput, queue waits, runs executing at once.
3. *Memory*: RSS of the service process after start-up, after the demo runs and after the
   concurrent runs (psutil), and the run processes' peaks (their own ``VmHWM`` from
   ``quality_report.json``, and the service's run processes sampled every 0.05 s).

Only ``experiments/service/results.md`` is written in the repository (``--results-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests  # a dependency of MLflow, so always installed with stage2

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PYTHON = sys.executable
AS_OF = "as_of=2025-08-01T00:00:00"
#: the overrides of every run, service and command line alike
OVERRIDES = ["report.notebook=false", AS_OF]
STAGE3_CSVS = ("student_batches.csv", "batch_student_membership.csv", "batch_course_enrollment.csv")
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
#: the service's settings for the whole benchmark (section 2 needs them; section 1 runs one at a time)
MAX_CONCURRENT = 2
MAX_QUEUED = 50
TARGET_OVERHEAD_S = 1.0


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mb(n_bytes: float) -> float:
    return n_bytes / 2**20


# ----------------------------------------------------------------------------- the service


class Sampler(threading.Thread):
    """Every ``interval`` s: the service's RSS and its children's, the run processes (each
    ``python -m stage2 ... tracking.run_name=<run id>``): when each was first and last seen
    alive, its largest RSS, how many ran at once and their largest sum; and every descendant's
    pid (for the leftover check)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.service_peak = 0.0
        self.runs: dict[str, dict[str, float]] = {}  # run id -> first, last (Unix s), peak MB
        self.most_at_once = 0
        self.sum_peak = 0.0
        self.seen: dict[int, float] = {}  # pid of any descendant -> create_time

    def run(self) -> None:
        run_ids: dict[int, str] = {}
        while not self.stop_event.is_set():
            now = time.time()
            try:
                service = self.root.memory_info().rss
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            alive, total = 0, 0.0
            with self.lock:
                for child in children:
                    try:
                        self.seen.setdefault(child.pid, child.create_time())
                        if child.ppid() != self.root.pid:
                            continue  # a run's own short-lived child
                        if child.pid not in run_ids:  # (not yet exec'd: the service's command line; look again)
                            names = [a.split("=", 1)[1] for a in child.cmdline() if a.startswith("tracking.run_name=")]
                            if names:
                                run_ids[child.pid] = names[0]
                        rss = mb(child.memory_info().rss)
                    except psutil.Error:
                        continue
                    run_id = run_ids.get(child.pid)
                    if run_id is None or rss == 0.0:  # not (yet) a run, or a zombie
                        continue
                    entry = self.runs.setdefault(run_id, {"first": now, "last": now, "peak": 0.0})
                    entry["last"], entry["peak"] = now, max(entry["peak"], rss)
                    alive, total = alive + 1, total + rss
                self.service_peak = max(self.service_peak, mb(service))
                self.most_at_once = max(self.most_at_once, alive)
                self.sum_peak = max(self.sum_peak, total)
            self.stop_event.wait(self.interval)

    def reset_peaks(self) -> None:
        with self.lock:
            self.most_at_once, self.sum_peak = 0, 0.0


@dataclass
class Service:
    home: Path
    port: int
    log_path: Path
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    startup_s: float = float("nan")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [PYTHON, "-m", "stage2.service", "service.host=127.0.0.1", f"service.port={self.port}",
                f"service.home={self.home}", f"service.max_concurrent={MAX_CONCURRENT}",
                f"service.max_queued={MAX_QUEUED}", *self.extra]

    def start(self, timeout_s: float = 180.0) -> None:
        started = time.perf_counter()
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=self.home.parent, env=child_env(),
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the service was not ready after {timeout_s:.0f} s; see {self.log_path}")

    def rss_mb(self) -> float:
        assert self.process is not None
        return mb(psutil.Process(self.process.pid).memory_info().rss)

    def stop(self) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL to its process group after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the session this harness started
            return self.process.wait()


def leftovers(marker: str, own: dict[int, float]) -> list[str]:
    """Processes still alive that this harness started: any whose command line names the
    benchmark's temporary directory (the service and every run name it), and any descendant
    of the service the sampler saw (same pid and start time)."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if any(marker in arg for arg in cmdline):
                found[proc.pid] = " ".join(cmdline)[:160]
            elif proc.pid in own and abs(proc.info["create_time"] - own[proc.pid]) < 0.01:
                found[proc.pid] = " ".join(cmdline)[:160]
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return [f"{pid}: {cmd}" for pid, cmd in sorted(found.items())]


def kill_leftovers(marker: str, own: dict[int, float]) -> None:
    for line in leftovers(marker, own):
        pid = int(line.split(":", 1)[0])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------- HTTP


def submit_upload(session: requests.Session, url: str, input_dir: Path, overrides: list[str]) -> requests.Response:
    files = sorted(input_dir.glob("*.csv"))
    handles = [path.open("rb") for path in files]
    try:
        parts = [("files", (p.name, h, "text/csv")) for p, h in zip(files, handles, strict=True)]
        return session.post(f"{url}/v1/runs", files=parts, data={"overrides": json.dumps(overrides)}, timeout=120)
    finally:
        for handle in handles:
            handle.close()


def wait_final(session: requests.Session, url: str, run_id: str, poll_s: float, timeout_s: float) -> dict[str, Any]:
    deadline = time.perf_counter() + timeout_s
    while True:
        record = session.get(f"{url}/v1/runs/{run_id}", timeout=30).json()
        if record["status"] in FINAL:
            return record
        if time.perf_counter() > deadline:
            raise RuntimeError(f"run {run_id} not finished after {timeout_s:.0f} s: {record['status']}")
        time.sleep(poll_s)


# ----------------------------------------------------------------------------- 1. overhead


def cli_run(demo: Path, cli_dir: Path, run_dir: Path, timeout_s: float) -> tuple[float, int]:
    command = [PYTHON, "-m", "stage2", f"data.input_dir={demo}", *OVERRIDES,
               f"tracking.uri=sqlite:///{cli_dir / 'mlflow.db'}", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    with (cli_dir / "cli.log").open("ab") as out:
        proc = subprocess.Popen(command, cwd=cli_dir, env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    return time.perf_counter() - started, code


def service_run(service: Service, demo: Path, poll_s: float, timeout_s: float) -> dict[str, Any]:
    assert service.process is not None
    me = psutil.Process(service.process.pid)
    with requests.Session() as session:
        cpu_before = sum(me.cpu_times()[:2])
        started = time.perf_counter()
        answer = submit_upload(session, service.url, demo, OVERRIDES)
        answered = time.perf_counter()
        if answer.status_code != 202:
            raise RuntimeError(f"submission refused: {answer.status_code} {answer.text}")
        run_id = answer.json()["run_id"]
        record = wait_final(session, service.url, run_id, poll_s, timeout_s)
        observed = time.perf_counter()
        observed_unix = time.time()
        cpu_s = sum(me.cpu_times()[:2]) - cpu_before
        quality = session.get(f"{service.url}/v1/runs/{run_id}/quality", timeout=30).json()
        files = {name: session.get(f"{service.url}/v1/runs/{run_id}/artifacts/{name}", timeout=60).content
                 for name in STAGE3_CSVS}
    metrics = quality.get("metrics", {})
    return {"run_id": run_id, "wall_s": observed - started, "post_s": answered - started, "record": record,
            "observed_unix": observed_unix, "files": files, "peak_mb": metrics.get("peak_memory_mb"),
            "runtime_s": metrics.get("runtime_s"), "service_cpu_s": cpu_s}


def section_overhead(service: Service, sampler: Sampler, demo: Path, work: Path, repeats: int, poll_s: float,
                     timeout_s: float) -> dict[str, Any]:
    cli_dir = work / "cli"
    cli_dir.mkdir()
    log("warm-up: one command-line run (creates its MLflow store) and one service run (creates the experiment)")
    wall, code = cli_run(demo, cli_dir, cli_dir / "warmup", timeout_s)
    if code != 0:
        raise RuntimeError(f"python -m stage2 failed ({code}); see {cli_dir / 'cli.log'}")
    warm = service_run(service, demo, poll_s, timeout_s)
    if warm["record"]["status"] != "SUCCEEDED":
        raise RuntimeError(f"the warm-up service run ended {warm['record']['status']}: {warm['record'].get('error')}")
    pairs = []
    for i in range(repeats):
        order = ("cli", "service") if i % 2 == 0 else ("service", "cli")
        row: dict[str, Any] = {"repeat": i + 1, "order": " then ".join(order)}
        for which in order:
            if which == "cli":
                run_dir = cli_dir / f"run-{i + 1}"
                row["cli_s"], code = cli_run(demo, cli_dir, run_dir, timeout_s)
                if code != 0:
                    raise RuntimeError(f"python -m stage2 failed ({code}); see {cli_dir / 'cli.log'}")
                report = json.loads((run_dir / "quality_report.json").read_text())
                row["cli_peak_mb"] = report["metrics"].get("peak_memory_mb")
                row["cli_runtime_s"] = report["metrics"].get("runtime_s")
            else:
                run = service_run(service, demo, poll_s, timeout_s)
                record = run["record"]
                if record["status"] != "SUCCEEDED":
                    raise RuntimeError(f"service run {run['run_id']} ended {record['status']}: {record.get('error')}")
                with sampler.lock:
                    seen = dict(sampler.runs.get(run["run_id"], {}))
                row.update(service_s=run["wall_s"], post_s=run["post_s"], run_id=run["run_id"],
                           queued_s=record["started_at"] - record["created_at"],
                           executing_s=record["finished_at"] - record["started_at"],
                           process_s=seen["last"] - seen["first"] if seen else None,
                           exit_to_finished_s=record["finished_at"] - seen["last"] if seen else None,
                           observed_after_s=run["observed_unix"] - record["finished_at"],
                           service_peak_mb=run["peak_mb"], service_runtime_s=run["runtime_s"],
                           own_s=run["wall_s"] - (seen["last"] - seen["first"]) if seen else None,
                           service_cpu_s=run["service_cpu_s"],
                           service_files=run["files"])
        row["overhead_s"] = row["service_s"] - row["cli_s"]
        cli_files = {name: (cli_dir / f"run-{i + 1}" / name).read_bytes() for name in STAGE3_CSVS}
        row["identical"] = sum(cli_files[name] == row["service_files"][name] for name in STAGE3_CSVS)
        row["bytes"] = sum(len(b) for b in cli_files.values())
        del row["service_files"]
        pairs.append(row)
        log(f"repeat {i + 1}/{repeats}: cli {row['cli_s']:.2f} s, service {row['service_s']:.2f} s, "
            f"overhead {row['overhead_s']:+.2f} s, identical CSVs {row['identical']}/3")
    return {"pairs": pairs}


# ----------------------------------------------------------------------------- 2. concurrency


def make_institutions(work: Path, n: int, students: int) -> list[Path]:
    from stage2.synth import make_institution, write_institution

    dirs = []
    for seed in range(n):
        out = work / "synth" / f"s{seed}"
        write_institution(out, make_institution(students, seed=seed))
        dirs.append(out)
    return dirs


def section_concurrency(service: Service, inputs: list[Path], poll_s: float, timeout_s: float) -> dict[str, Any]:
    n = len(inputs)
    barrier = threading.Barrier(n)
    answers: list[dict[str, Any]] = [{} for _ in range(n)]

    def submit(i: int) -> None:
        with requests.Session() as session:
            barrier.wait()
            t0 = time.perf_counter()
            try:
                r = submit_upload(session, service.url, inputs[i], OVERRIDES)
                answers[i] = {"code": r.status_code, "run_id": r.json().get("run_id"), "t0": t0,
                              "t1": time.perf_counter()}
            except Exception as exc:  # a lost submission is a result, not a crash
                answers[i] = {"code": None, "error": repr(exc), "t0": t0, "t1": time.perf_counter()}

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = min(a["t0"] for a in answers)
    submitted = max(a["t1"] for a in answers)
    ids = [a.get("run_id") for a in answers if a.get("code") == 202 and a.get("run_id")]
    final: dict[str, dict[str, Any]] = {}
    deadline = time.perf_counter() + timeout_s
    with requests.Session() as session:
        while len(final) < len(set(ids)) and time.perf_counter() < deadline:
            listed = session.get(f"{service.url}/v1/runs", params={"limit": 200}, timeout=30).json()["runs"]
            now = time.perf_counter()
            for record in listed:
                if record["run_id"] in ids and record["status"] in FINAL and record["run_id"] not in final:
                    final[record["run_id"]] = {**record, "observed": now}
            time.sleep(poll_s)
        metrics_text = session.get(f"{service.url}/metrics", timeout=30).text
    records = list(final.values())
    events = sorted([(r["started_at"], 1) for r in records if r.get("started_at")]
                    + [(r["finished_at"], -1) for r in records if r.get("finished_at")], key=lambda e: (e[0], e[1]))
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    from prometheus_client.parser import text_string_to_metric_families

    succeeded_metric = None
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "stage2_runs":
            for sample in family.samples:
                if sample.labels.get("status") == "SUCCEEDED":
                    succeeded_metric = sample.value
    end = max((r["observed"] for r in records), default=time.perf_counter())
    return {
        "n": n, "codes": [a.get("code") for a in answers], "errors": [a["error"] for a in answers if "error" in a],
        "distinct_ids": len(set(ids)), "statuses": [r["status"] for r in records],
        "submit_s": submitted - start, "post_s": [a["t1"] - a["t0"] for a in answers],
        "total_s": end - start, "queued_s": [r["started_at"] - r["created_at"] for r in records if r.get("started_at")],
        "executing_s": [r["finished_at"] - r["started_at"] for r in records if r.get("started_at")],
        "most_running": most, "succeeded_metric": succeeded_metric, "run_ids": ids,
    }


def peaks_of(service: Service, run_ids: list[str]) -> list[float]:
    out = []
    with requests.Session() as session:
        for run_id in run_ids:
            q = session.get(f"{service.url}/v1/runs/{run_id}/quality", timeout=30)
            if q.status_code == 200 and q.json().get("metrics", {}).get("peak_memory_mb") is not None:
                out.append(float(q.json()["metrics"]["peak_memory_mb"]))
    return out


# ----------------------------------------------------------------------------- report


def med(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        measured = git("status", "--porcelain", "--untracked-files=all", "--", "stage2", "conf")
    except (OSError, subprocess.CalledProcessError):
        return "?"
    if not dirty:
        return f"{rev} (clean tree)"
    return f"{rev} (modified tree; stage2/ and conf/ {'modified' if measured else 'unmodified'})"


def machine_line() -> str:
    import fastapi
    import uvicorn

    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {ram_gb:.1f} GB RAM, Python "
            f"{platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__}")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def render(h: dict[str, Any], ov: dict[str, Any], cc: dict[str, Any] | None, mem: dict[str, Any]) -> str:
    pairs = ov["pairs"]
    cli = [p["cli_s"] for p in pairs]
    svc = [p["service_s"] for p in pairs]
    overhead = statistics.median(svc) - statistics.median(cli)
    paired = statistics.median(p["overhead_s"] for p in pairs)
    own = [p["own_s"] for p in pairs if p["own_s"] is not None]
    own_holds = bool(own) and max(own) < TARGET_OVERHEAD_S
    paired_holds = paired < TARGET_OVERHEAD_S
    verdict = (f"the service's own part: {'HOLDS' if own_holds else 'DOES NOT HOLD'} (every repetition "
               f"{'<' if own_holds else 'not all <'} {TARGET_OVERHEAD_S:.0f} s); end to end, paired median: "
               f"{'HOLDS' if paired_holds else 'DOES NOT HOLD'} ({paired:+.2f} s), but single pairs differ by "
               f"{min(p['overhead_s'] for p in pairs):+.2f} … {max(p['overhead_s'] for p in pairs):+.2f} s: the same "
               f"`python -m stage2` took {min(cli):.2f}–{max(cli):.2f} s on the command line alone")
    identical = sum(p["identical"] for p in pairs)
    parts = [
        "# Service benchmark: overhead over the command line, concurrent submissions, memory",
        "",
        f"- machine: {h['machine']}",
        f"- command: `{h['command']}` (from the repository root)",
        f"- stage2: git {h['git']}",
        f"- started {h['started']}, took {h['elapsed_min']:.1f} min; load average at start {h['load_start']}, at end "
        f"{h['load_end']} (other jobs on the machine make timings noisy)",
        f"- service: `{' '.join(h['service_command'])}` ({h['startup_s']:.1f} s from start to `/ready` 200, "
        "a fresh home: the MLflow SQLite store is created at start-up); executor poll "
        f"`service.poll_interval_s` = {h['service_poll']} s",
        f"- every run, service and command line: `{' '.join(OVERRIDES)}`; the command line's MLflow store "
        "(`tracking.uri=sqlite:///...`) and the service's exist before the measured runs (one warm-up run each, "
        "not counted)",
        "",
        "## 1. Overhead on the demo institution",
        "",
        f"Service: multipart upload of the demo's {h['demo_files']} CSVs → `SUCCEEDED` seen by polling `GET "
        f"/v1/runs/{{id}}` every {h['poll']} s. Command line: `python -m stage2 data.input_dir=<demo> "
        f"{' '.join(OVERRIDES)} tracking.uri=sqlite:///<existing store> hydra.run.dir=<new dir>` as a subprocess, "
        f"wall time to its exit. {len(pairs)} repetitions, the two interleaved (order alternating); median "
        "(min–max).",
        "",
        table(["measure", "value"], [
            ["`python -m stage2` (command line), s", med(cli)],
            ["service, submit → SUCCEEDED observed, s", med(svc)],
            ["**overhead, end to end**: service − the command-line run next to it, per repetition, s",
             f"**{med([p['overhead_s'] for p in pairs])}**"],
            ["overhead, difference of the medians above, s", f"{overhead:+.2f}"],
            ["**the service's own part**: submit → SUCCEEDED observed minus the run process's lifetime (first → "
             "last seen by a 0.05 s sampler: over-estimated by up to 0.1 s), s", f"**{med(own, 3)}**"],
            [f"**target: overhead < {TARGET_OVERHEAD_S:.0f} s**", f"**{verdict}**"],
            ["of which: POST answered (upload stored, run recorded), s", med([p["post_s"] for p in pairs], 3)],
            ["of which: created → started (executor picks the run up), s", med([p["queued_s"] for p in pairs], 3)],
            ["started → finished as the service records it, s", med([p["executing_s"] for p in pairs])],
            ["of which: the run process alive (first → last seen by a 0.05 s sampler), s; the command line's "
             "whole wall time for comparison", f"{med([p['process_s'] for p in pairs])}; {med(cli)}"],
            ["of which: process gone (last seen) → finished recorded (the executor's poll), s",
             med([p["exit_to_finished_s"] for p in pairs], 3)],
            ["finished → observed by the client, s", med([p["observed_after_s"] for p in pairs], 3)],
            [f"CPU time of the service process during a service run (the client's {h['poll']} s polls, the "
             "executor), s", med([p["service_cpu_s"] for p in pairs], 3)],
            ["the pipeline's own `runtime_s` (quality report), command line / service, s",
             f"{med([p['cli_runtime_s'] for p in pairs])} / {med([p['service_runtime_s'] for p in pairs])}"],
            ["the three Stage 3 CSVs downloaded from the service equal the command line's byte for byte",
             f"{'yes' if identical == 3 * len(pairs) else 'NO'}: {identical} of {3 * len(pairs)} files "
             f"({pairs[0]['bytes']:,} bytes per run)"],
            ["run process peak RSS (its VmHWM, `peak_memory_mb`), command line / service, MB",
             f"{med([p['cli_peak_mb'] for p in pairs], 0)} / {med([p['service_peak_mb'] for p in pairs], 0)}"],
        ]),
        "",
        table(["repeat", "order", "command line s", "service s", "overhead s", "POST s", "created→started s",
               "started→finished s", "process alive s", "exit→finished s", "finished→observed s", "own part s",
               "runtime_s cli / service", "identical CSVs"],
              [[p["repeat"], p["order"], f"{p['cli_s']:.2f}", f"{p['service_s']:.2f}", f"{p['overhead_s']:+.2f}",
                f"{p['post_s']:.3f}", f"{p['queued_s']:.3f}", f"{p['executing_s']:.2f}", _f(p["process_s"]),
                _f(p["exit_to_finished_s"], 3), f"{p['observed_after_s']:.3f}", _f(p["own_s"], 3),
                f"{_f(p['cli_runtime_s'])} / {_f(p['service_runtime_s'])}", f"{p['identical']}/3"] for p in pairs]),
    ]
    if cc is not None:
        ok = cc["codes"].count(202)
        succeeded = cc["statuses"].count("SUCCEEDED")
        none_lost = ok == cc["n"] and cc["distinct_ids"] == cc["n"] and succeeded == cc["n"]
        parts += [
            "",
            f"## 2. {cc['n']} concurrent submissions",
            "",
            f"{cc['n']} threads, released together, each upload a synthetic institution of {h['students']} students "
            f"(`make_institution({h['students']}, seed=i)`, i = 0 … {cc['n'] - 1}, as `python -m stage2.synth DIR "
            f"--students {h['students']} --seed i` writes it) with the same overrides, to the same service "
            f"(`service.max_concurrent={MAX_CONCURRENT} service.max_queued={MAX_QUEUED}`); the client lists the "
            f"runs (`GET /v1/runs?limit=200`) every {h['concurrent_poll']} s until every run is final.",
            "",
            table(["measure", "value"], [
                ["submissions answered 202 / sent",
                 f"{ok} / {cc['n']}" + (f" (errors: {cc['errors']})" if cc["errors"] else "")],
                ["distinct run ids", cc["distinct_ids"]],
                ["final statuses", ", ".join(f"{s} {cc['statuses'].count(s)}" for s in sorted(set(cc["statuses"])))
                 or "none"],
                ["**none lost** (every submission accepted, its own id, SUCCEEDED)",
                 f"**{'yes' if none_lost else 'NO'}**"],
                [f"all {cc['n']} submissions answered within, s", f"{cc['submit_s']:.2f}"],
                ["POST answer time per submission, s", med(cc["post_s"])],
                ["total wall time, first submission → last SUCCEEDED observed, s", f"{cc['total_s']:.1f}"],
                ["throughput, runs per minute", f"{60 * cc['n'] / cc['total_s']:.1f}"],
                ["created → started (waiting in the queue), s", med(cc["queued_s"])],
                ["started → finished per run, s", med(cc["executing_s"])],
                ["most runs executing at once (from the runs' started/finished times)",
                 f"{cc['most_running']} (max_concurrent {MAX_CONCURRENT})"],
                ["`stage2_runs{status=\"SUCCEEDED\"}` in `/metrics` afterwards (all runs of the service)",
                 f"{cc['succeeded_metric']:.0f}" if cc["succeeded_metric"] is not None else "–"],
            ]),
        ]
    parts += [
        "",
        "## 3. Memory",
        "",
        "RSS of the service process (psutil), and the run processes' peaks: each run's own `VmHWM` "
        "(`peak_memory_mb` in its quality report) and the service's run processes (its direct children) "
        "sampled every 0.05 s with psutil.",
        "",
        table(["measure", "MB"], [
            ["service RSS, idle after start-up (`/ready` answered, no run yet)", f"{mem['rss_start']:.0f}"],
            [f"service RSS after the {len(pairs) + 1} demo runs", f"{mem['rss_after_demo']:.0f}"],
            *([[f"service RSS after the {cc['n']} concurrent runs too (idle)", f"{mem['rss_after_concurrent']:.0f}"]]
              if cc is not None else []),
            ["service RSS, largest sample during the benchmark", f"{mem['service_peak']:.0f}"],
            ["demo run process peak (`peak_memory_mb`), median (min–max)", med(mem["demo_peaks"], 0)],
            *([[f"synthetic {h['students']}-student run process peak (`peak_memory_mb`), median (min–max)",
                med(mem["synth_peaks"], 0)],
               ["the same, largest RSS sampled per run process, median (min–max)", med(mem["conc_single"], 0)],
               ["run processes alive at once (sampled) / their largest RSS sum",
                f"{mem['conc_at_once']} / {mem['conc_sum_peak']:.0f}"]] if cc is not None else []),
        ]),
        "",
        f"Processes left after the service was stopped (SIGTERM): {h['leftovers'] or 'none'}.",
    ]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stage2 REST service benchmark")
    parser.add_argument("--repeats", type=int, default=7, help="demo runs per side (default 7)")
    parser.add_argument("--poll", type=float, default=0.05, help="client poll interval of section 1, s (0.05)")
    parser.add_argument("--concurrent", type=int, default=20, help="concurrent submissions (20; 0 skips section 2)")
    parser.add_argument("--students", type=int, default=300, help="students per synthetic institution (300)")
    parser.add_argument("--concurrent-poll", type=float, default=0.25,
                        help="client poll interval of section 2, s (0.25: 20 pollers would load the 2 cores)")
    parser.add_argument("--service-poll", type=float, default=None,
                        help="service.poll_interval_s (default: the service's own, 0.2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per run, s")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="the service's home, the command line's runs, the synthetic inputs (default: a new "
                             "temporary directory, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--results-dir", type=Path, default=HERE, help="where results.md goes (default: here)")
    args = parser.parse_args(argv)

    from stage2.config.service import ServiceConfig
    from stage2.datasets import fetch_dataset

    wall_start = time.perf_counter()
    header: dict[str, Any] = {
        "command": "python experiments/service/bench.py" + "".join(f" {shlex.quote(a)}"
                                                                     for a in (argv or sys.argv[1:])),
        "machine": machine_line(), "git": git_state(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_start": loadavg(), "poll": args.poll, "concurrent_poll": args.concurrent_poll, "students": args.students,
        "service_poll": args.service_poll if args.service_poll is not None else ServiceConfig().poll_interval_s,
    }
    demo = Path(fetch_dataset("demo"))
    header["demo_files"] = len(list(demo.glob("*.csv")))
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="stage2-service-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    marker = str(work)
    extra = [f"service.poll_interval_s={args.service_poll}"] if args.service_poll is not None else []
    service = Service(home=work / "home", port=free_port(), log_path=work / "service.log", extra=extra)
    header["service_command"] = ["python", "-m", "stage2.service", *service.command[3:]]
    header["service_command"] = [a.replace(str(work), "$WORK") for a in header["service_command"]]
    print(f"# {header['machine']}\n# {header['command']}\n# work directory {work}", flush=True)
    sampler: Sampler | None = None
    mem: dict[str, Any] = {}
    cc = None
    try:
        inputs = make_institutions(work, args.concurrent, args.students) if args.concurrent else []
        log(f"starting the service on 127.0.0.1:{service.port}, home {service.home}")
        service.start()
        header["startup_s"] = service.startup_s
        time.sleep(1.0)  # let start-up settle before reading the idle RSS
        mem["rss_start"] = service.rss_mb()
        assert service.process is not None
        sampler = Sampler(service.process.pid)
        sampler.start()
        log(f"ready after {service.startup_s:.1f} s, RSS {mem['rss_start']:.0f} MB")
        ov = section_overhead(service, sampler, demo, work, args.repeats, args.poll, args.timeout)
        mem["rss_after_demo"] = service.rss_mb()
        mem["demo_peaks"] = [p["service_peak_mb"] for p in ov["pairs"]] + [p["cli_peak_mb"] for p in ov["pairs"]]
        if args.concurrent:
            sampler.reset_peaks()
            log(f"{args.concurrent} concurrent submissions")
            cc = section_concurrency(service, inputs, args.concurrent_poll, args.timeout * args.concurrent)
            with sampler.lock:
                mem.update(conc_sum_peak=sampler.sum_peak, conc_at_once=sampler.most_at_once,
                           conc_single=[sampler.runs[r]["peak"] for r in cc["run_ids"] if r in sampler.runs])
            mem["synth_peaks"] = peaks_of(service, cc["run_ids"])
            time.sleep(1.0)
            mem["rss_after_concurrent"] = service.rss_mb()
            log(f"concurrent: {cc['codes'].count(202)} accepted, {cc['distinct_ids']} ids, "
                f"{cc['statuses'].count('SUCCEEDED')} succeeded in {cc['total_s']:.1f} s")
        mem["service_peak"] = sampler.service_peak
    finally:
        code = service.stop()
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join()
        own = dict(sampler.seen) if sampler is not None else {}
        time.sleep(0.5)
        left = leftovers(marker, own)
        if left:
            log(f"processes left behind (killing them): {left}")
            kill_leftovers(marker, own)
        header["leftovers"] = "; ".join(left)
        log(f"service stopped (exit {code}); processes left: {left or 'none'}")
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    header["elapsed_min"] = (time.perf_counter() - wall_start) / 60
    header["load_end"] = loadavg()
    git_end = git_state()
    if git_end != header["git"]:
        header["git"] += f" at start, {git_end} at end (the working tree changed during the run)"
    text = render(header, ov, cc, mem)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
