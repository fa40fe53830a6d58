"""What the service refuses, against one real server with API keys (module-scoped): missing and
wrong keys, scopes, input directories outside the data root, odd upload names, overrides outside
the allow-list, a full queue, an oversized upload; and a public address without keys.

The server: ``service.api_keys_file`` (``k-read read``, ``k-submit submit``, ``k-all
read,submit``), ``service.data_root`` (a copy of a small institution as ``inst``, an empty
directory ``a``, a symlink ``link`` to an institution outside the root), one run at once, one
waiting run at most, 1 MB uploads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import subprocess_env

from .conftest import FAST, FINAL, HOST, ServiceManager, copy_institution, free_port

pytestmark = pytest.mark.slow

RETRY_AFTER_S = 7


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, mlflow_template, small_institution):
    root = tmp_path_factory.mktemp("security")
    keys = root / "keys.txt"
    keys.write_text("# key scopes\nk-read read\nk-submit submit\nk-all read,submit\n", encoding="utf-8")
    data_root = root / "data"
    copy_institution(small_institution, data_root / "inst")
    (data_root / "a").mkdir()
    outside = copy_institution(small_institution, root / "outside" / "inst")
    (data_root / "link").symlink_to(outside, target_is_directory=True)
    manager = ServiceManager(mlflow_template)
    service = manager.start(root / "home", [
        f"service.api_keys_file={keys}", f"service.data_root={data_root}", "service.max_concurrent=1",
        "service.max_queued=1", "service.max_upload_mb=1", f"service.retry_after_s={RETRY_AFTER_S}"],
        admin_key="k-all")
    service.root = root  # type: ignore[attr-defined]
    yield service
    manager.close()


@pytest.fixture(scope="module")
def client(guarded):
    return guarded.client("k-all")


def run_ids(client) -> list[str]:
    return [r["run_id"] for r in client.all_runs()]


def cancel_and_wait(client, run_ids_: list[str]) -> None:
    for run_id in run_ids_:
        assert client.post(f"/v1/runs/{run_id}/cancel").status_code == 200
    for run_id in run_ids_:
        assert client.wait(run_id)["status"] in FINAL


# ----------------------------------------------------------------------------- keys


def test_api_keys_and_scopes(guarded, client):
    anonymous, reader, submitter, wrong = (guarded.client(""), guarded.client("k-read"),
                                           guarded.client("k-submit"), guarded.client("k-nope"))
    before = run_ids(client)
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").status_code == 200

    for path in ("/v1/runs", "/metrics", f"/v1/runs/{uuid.uuid4()}"):
        assert anonymous.get(path).status_code == 401, path
        unknown = wrong.get(path)
        assert unknown.status_code == 401, path
        assert "k-nope" not in unknown.text
    assert reader.get("/v1/runs").status_code == 200
    assert reader.get("/metrics").status_code == 200
    assert submitter.get("/v1/runs").status_code == 403  # a submit-only key cannot read

    assert anonymous.submit_json("inst").status_code == 401
    assert wrong.submit_json("inst").status_code == 401
    refused = reader.submit_json("inst")
    assert refused.status_code == 403, refused.text
    assert "submit" in refused.json()["detail"]
    some_run = str(uuid.uuid4())
    assert reader.post(f"/v1/runs/{some_run}/cancel").status_code == 403
    assert reader.delete(f"/v1/runs/{some_run}").status_code == 403
    assert anonymous.delete(f"/v1/runs/{some_run}").status_code == 401
    assert run_ids(client) == before, "a refused submission created a run"


def test_public_address_without_keys_is_refused(tmp_path):
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "stage2.service", "service.host=0.0.0.0", f"service.port={port}",
         f"service.home={tmp_path / 'home'}"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "api_keys_file" in done.stderr
    with socket.socket() as sock:
        assert sock.connect_ex((HOST, port)) != 0, "something listens on the port"


# ----------------------------------------------------------------------------- paths and names


@pytest.mark.parametrize("input_dir", ["../x", "/etc", "link", "link/", "a/../../x", "..", "inst/../../outside/inst",
                                       "a/../../outside/inst"])
def test_input_dir_outside_the_data_root_is_403(client, input_dir):
    before = run_ids(client)
    response = client.submit_json(input_dir)
    assert response.status_code == 403, (input_dir, response.status_code, response.text)
    assert run_ids(client) == before


@pytest.mark.parametrize("name", ["../student_data.csv", "x.csv", "student_data.csv/../../a", "/etc/passwd",
                                  "STUDENT_DATA.CSV", "student_data.csv.", "./student_data.csv"])
def test_upload_names_outside_the_contract_are_400(guarded, client, small_institution, name):
    before = run_ids(client)
    uploads_before = sorted(p.name for p in guarded.paths.uploads.iterdir())
    files = [(p.name, p.read_bytes()) for p in sorted(small_institution.glob("*.csv")) if p.name != "student_data.csv"]
    files.append((name, (small_institution / "student_data.csv").read_bytes()))
    response = client.submit_upload(None, FAST, files=files)
    assert response.status_code == 400, (name, response.status_code, response.text)
    assert name in response.json()["detail"]
    assert run_ids(client) == before
    assert sorted(p.name for p in guarded.paths.uploads.iterdir()) == uploads_before
    assert not (guarded.paths.uploads / "a").exists() and not (guarded.home / "a").exists()


REFUSED_OVERRIDES = [
    ("hydra.run.dir=/tmp/x", "hydra.run.dir"),
    ("+hydra.job.chdir=true", "hydra.job.chdir"),
    ("data.input_dir=/etc", "data.input_dir"),
    ("output_dir=/tmp", "output_dir"),
    ("tracking.uri=sqlite:////tmp/elsewhere.db", "tracking.uri"),
    ("~tracking", "tracking"),
    ("foo=1", "foo"),
    ("algorithmx=1", "algorithmx"),
    ("resume=true", "resume"),
    ("parallel.n_workers=64", "parallel"),
    ("parallel.address=tcp://10.0.0.1:8786", "parallel"),
    ("seed=${oc.env:HOME}", "seed"),
    ("batch_size.max=${oc.env:HOME}", "batch_size.max"),
    ("seed=1\nhydra.run.dir=/tmp/x", "seed"),
    ("hydra/launcher=joblib", "hydra/launcher"),
]


@pytest.mark.parametrize(("override", "key"), REFUSED_OVERRIDES, ids=[k for _, k in REFUSED_OVERRIDES])
def test_overrides_outside_the_allow_list_are_400(client, small_institution, override, key):
    before = run_ids(client)
    for response in (client.submit_json("inst", [*FAST, override]),
                     client.submit_upload(small_institution, [*FAST, override])):
        assert response.status_code == 400, (override, response.status_code, response.text)
        assert key in response.json()["detail"]
    assert run_ids(client) == before


def test_malformed_overrides_are_400(client, small_institution):
    assert client.post("/v1/runs", json={"input_dir": "inst", "overrides": "seed=1"}).status_code == 400
    assert client.post("/v1/runs", json={"input_dir": "inst", "overrides": [1]}).status_code == 400
    assert client.post("/v1/runs", json={"input_dir": "inst", "output_dir": "/tmp"}).status_code == 400
    files = [("files", (p.name, p.read_bytes(), "text/csv")) for p in sorted(small_institution.glob("*.csv"))]
    assert client.post("/v1/runs", files=files, data={"overrides": "seed=1"}).status_code == 400


def test_allowed_overrides_are_accepted(client, small_institution):
    rule = "+constraints.rules.x={field_name:preferred_shift,rule_type:homogeneous,constraint_level:soft,threshold:0.5}"
    overrides = [*FAST, "batch_size.max=50", "algorithm=kmeans", rule, "weights.size=0.2", "seed=3",
                 "resources.allocate_rooms=true", "enrollment.shared_threshold=0.6"]
    for submit in (lambda: client.submit_json("inst", overrides),
                   lambda: client.submit_upload(small_institution, overrides)):
        response = submit()
        run_id = client.accepted(response)
        assert response.json()["overrides"] == overrides
        cancel_and_wait(client, [run_id])


def test_config_group_values_cannot_name_files(guarded, client):
    planted = guarded.root / "planted.yaml"
    planted.write_text("name: planted\nrules: {}\n", encoding="utf-8")
    escape = "../" * 12 + str(planted.with_suffix("")).lstrip("/")
    response = client.submit_json("inst", [*FAST, f"constraints={escape}"])
    if response.status_code == 202:
        cancel_and_wait(client, [response.json()["run_id"]])
    assert response.status_code == 400, response.text
    assert "constraints" in response.json()["detail"]


# ----------------------------------------------------------------------------- limits


def test_full_queue_is_429_with_retry_after(client):
    accepted: list[str] = []
    try:
        refused = None
        for attempt in range(6):
            headers = {"Idempotency-Key": "queue-first"} if attempt == 0 else {}
            response = client.submit_json("inst", FAST, headers=headers)
            if response.status_code == 429:
                refused = response
                break
            accepted.append(client.accepted(response))
        assert refused is not None, f"no 429 after {len(accepted)} accepted submissions"
        assert accepted, "429 before any run was accepted"
        assert refused.headers["Retry-After"] == str(RETRY_AFTER_S)
        assert "queue" in refused.json()["detail"]
        assert sorted(run_ids(client)[: len(accepted)]) == sorted(accepted)
        # a replay of an accepted submission is not a new run: the full queue does not refuse it
        replay = client.submit_json("inst", FAST, headers={"Idempotency-Key": "queue-first"})
        assert replay.status_code == 202 and replay.json()["run_id"] == accepted[0]
    finally:
        cancel_and_wait(client, accepted)


def test_concurrent_submissions_respect_max_queued(guarded, client):
    """Bursts of 20 simultaneous submissions (max_queued=1): never more than one run waiting
    (several bursts: a check-then-insert race does not show in every one)."""
    burst = 20
    worst = 0
    for _ in range(5):
        barrier = threading.Barrier(burst)

        def submit(_: int, barrier: threading.Barrier = barrier) -> int:
            session = guarded.client("k-all")
            barrier.wait()
            return session.submit_json("inst", FAST).status_code

        with ThreadPoolExecutor(burst) as pool:
            codes = list(pool.map(submit, range(burst)))
        assert set(codes) <= {202, 429}, codes
        runs = client.all_runs()
        worst = max(worst, sum(r["status"] == "QUEUED" for r in runs))
        cancel_and_wait(client, [r["run_id"] for r in runs if r["status"] not in FINAL])
        if worst > 1:
            break
    assert worst <= 1, f"{worst} runs waiting with service.max_queued=1"


def test_upload_over_the_cap_is_413(guarded, client, small_institution):
    before = run_ids(client)
    files = [(p.name, p.read_bytes()) for p in sorted(small_institution.glob("*.csv")) if p.name != "student_data.csv"]
    header = (small_institution / "student_data.csv").read_bytes()
    files.append(("student_data.csv", header + os.urandom(600 * 1024).hex().encode()))  # 1.2 MB
    response = client.submit_upload(None, FAST, files=files)
    assert response.status_code == 413, (response.status_code, response.text[:500])
    assert "1 MB" in response.json()["detail"]
    assert run_ids(client) == before
    assert not [p for p in guarded.paths.uploads.iterdir() if p.name.startswith(".incoming-")]
    # chunked, without a Content-Length: refused before anything is read (no way around the cap)
    chunked = client.post("/v1/runs", data=(part for part in (b"--x\r\n", b"x" * 1024)),
                          headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 411, chunked.text
    assert run_ids(client) == before
    small = client.submit_upload(small_institution, FAST)  # under the cap: accepted
    cancel_and_wait(client, [client.accepted(small)])

