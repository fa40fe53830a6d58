"""A run's life beyond the happy path, each test with servers of its own: cancelling a running
and a queued run; the server killed mid-run and started again on the same home (the run is
resumed, or fails with SERVICE_RESTARTED when no resume is allowed).

The long runs are a 30000-student institution (clustering alone takes seconds), submitted as JSON
under a data root that holds the session's synthetic institutions. After the server is killed,
the orphaned run is stopped (SIGSTOP) so that it is still mid-run when the new server starts,
whatever the machine's load; the new server's recovery kills it like a running one.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from conftest import assert_outputs_valid

from .conftest import FAST, FINAL, STAGE3_CSVS, group_alive, manifest_names, run_processes, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def data_root(large_institution, small_institution):
    root = large_institution.parent
    assert small_institution.parent == root
    return root


def run_group(run_id: str) -> int:
    """The process group of a running run (it must have a live process)."""
    processes = run_processes(run_id)
    assert processes, f"run {run_id} has no process"
    groups = {os.getpgid(p.pid) for p in processes}
    assert len(groups) == 1, groups
    return groups.pop()


def wait_running(client, run_id: str, stage=None, timeout: float = 180) -> dict:
    """Wait until the run is RUNNING (in ``stage`` when given; any stage: ``"*"``); fail at
    once if it ends first."""
    def there(run: dict) -> bool:
        if run["status"] != "RUNNING" or stage is None:
            return True
        return run["stage"] is not None if stage == "*" else run["stage"] == stage

    run = client.wait(run_id, {"RUNNING", *FINAL}, until=there, timeout=timeout)
    assert run["status"] == "RUNNING", run
    return run


def test_cancel_running_and_queued_runs(start_service, tmp_path, data_root, large_institution, small_institution):
    service = start_service(tmp_path / "home", [f"service.data_root={data_root}", "service.max_concurrent=1"])
    client = service.client()
    large = client.accepted(client.submit_json(large_institution.name, FAST))
    wait_running(client, large)
    queued = client.accepted(client.submit_json(small_institution.name, FAST))
    assert client.run(queued)["status"] == "QUEUED"  # the only slot is taken

    # a queued run: cancelled at once, never started
    cancelled = client.post(f"/v1/runs/{queued}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    again = client.post(f"/v1/runs/{queued}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "CANCELLED"

    # a running run, in its heaviest stage
    wait_running(client, large, "clustering")
    group = run_group(large)
    assert group_alive(group)
    answer = client.post(f"/v1/runs/{large}/cancel")
    assert answer.status_code == 200
    assert answer.json()["cancel_requested"] is True
    assert answer.json()["status"] in ("RUNNING", "CANCELLED")
    run = client.wait(large, timeout=120)
    assert run["status"] == "CANCELLED", run
    assert group_alive(group) == [], "a process of the cancelled run is left"
    assert run_processes(large) == []
    assert not set(manifest_names(client, large)) & set(STAGE3_CSVS)
    assert not [n for n in STAGE3_CSVS if (service.paths.output_dir(large) / n).exists()]

    repeated = client.post(f"/v1/runs/{large}/cancel")
    assert repeated.status_code == 200
    assert repeated.json()["status"] == "CANCELLED"
    assert repeated.json()["finished_at"] == run["finished_at"]

    never = client.run(queued)
    assert never["status"] == "CANCELLED" and never["started_at"] is None
    assert not service.paths.output_dir(queued).exists(), "the queued run was started"
    assert run_processes(queued) == []


def test_restart_resumes_the_interrupted_run_and_runs_the_queued_one(start_service, tmp_path, data_root,
                                                                     large_institution, small_institution):
    home = tmp_path / "home"
    args = [f"service.data_root={data_root}", "service.max_concurrent=1"]
    first = start_service(home, args)
    client = first.client()
    interrupted = client.accepted(client.submit_json(large_institution.name, FAST))
    wait_running(client, interrupted, "clustering")
    waiting = client.accepted(client.submit_json(small_institution.name, FAST))
    assert client.run(waiting)["status"] == "QUEUED"
    old_group = run_group(interrupted)

    first.kill()
    assert group_alive(old_group), "the run's process group did not outlive the server"
    # held still until the new server settles it: mid-run whatever the machine's load
    os.killpg(old_group, signal.SIGSTOP)

    second = start_service(home, args)
    client = second.client()
    # the old process is gone before the new server answers; the run is queued again or runs anew
    assert group_alive(old_group) == []
    run = client.run(interrupted)
    assert run["status"] in ("QUEUED", "RUNNING"), run
    assert run["resumes"] == 1
    if run["status"] == "RUNNING":
        assert run_processes(interrupted) and run_group(interrupted) != old_group
    assert client.run(waiting)["status"] in ("QUEUED", "RUNNING")
    assert {r["run_id"] for r in client.all_runs()} == {interrupted, waiting}

    run = client.wait(interrupted)
    assert run["status"] == "SUCCEEDED", run
    assert run["resumes"] == 1
    output = second.paths.output_dir(interrupted)
    assert_outputs_valid(output, large_institution)
    assert json.loads((output / "quality_report.json").read_text())["resumed_from"], "not resumed from a checkpoint"
    done = client.wait(waiting)
    assert done["status"] == "SUCCEEDED" and done["resumes"] == 0
    assert_outputs_valid(second.paths.output_dir(waiting), small_institution)
    listed = {r["run_id"]: r["status"] for r in client.all_runs()}
    assert listed == {interrupted: "SUCCEEDED", waiting: "SUCCEEDED"}


def test_restart_without_resumes_fails_the_runs_and_spares_a_reused_pid(start_service, tmp_path, data_root,
                                                                         small_institution):
    """``service.max_resumes=0``: runs the old server left RUNNING end FAILED (SERVICE_RESTARTED).
    One of them still has its process (killed by the new server); the other's process died with
    the old server and its recorded process group id now belongs to an unrelated process (a
    pid reused, as after a reboot: written into the job store here), which must be left alone."""
    home = tmp_path / "home"
    args = [f"service.data_root={data_root}", "service.max_concurrent=2"]
    first = start_service(home, args)
    client = first.client()
    alive, dead = (client.accepted(client.submit_json(small_institution.name, FAST)) for _ in range(2))
    wait_running(client, alive)
    wait_running(client, dead)
    alive_group, dead_group = run_group(alive), run_group(dead)
    first.kill()
    assert group_alive(alive_group) and group_alive(dead_group), "the runs did not outlive the server"
    os.killpg(alive_group, signal.SIGSTOP)
    os.killpg(dead_group, signal.SIGKILL)
    wait_until(lambda: not group_alive(dead_group), 30, "the killed run to end")

    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        with sqlite3.connect(home / "runs.db") as db:
            assert db.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (decoy.pid, dead)).rowcount == 1

        second = start_service(home, [*args, "service.max_resumes=0"])
        client = second.client()
        assert group_alive(alive_group) == []
        assert decoy.poll() is None, "the new server killed an unrelated process group"
        for run_id in (alive, dead):
            run = client.run(run_id)
            assert run["status"] == "FAILED", run
            assert run["error"]["code"] == "SERVICE_RESTARTED"
            assert run["resumes"] == 0
            assert client.get(f"/v1/runs/{run_id}/errors").json()["error"]["code"] == "SERVICE_RESTARTED"
            assert not set(manifest_names(client, run_id)) & set(STAGE3_CSVS)
            assert run_processes(run_id) == []
        assert {r["run_id"] for r in client.all_runs()} == {alive, dead}
    finally:
        decoy.kill()
        decoy.wait()
