"""Re-batching through the service, against one real server with API keys (module-scoped): a
client names the previous run by its id (``previous_run_id``), never by a path; the service
checks that run and passes its output directory to the re-batch's command line.

- a re-batch of an unchanged institution (upload, and JSON under the data root) SUCCEEDS, its
  ``rebatch_diff.csv`` is downloadable and has no row, its ``student_batches.csv`` is byte-equal
  to the previous run's (same ``as_of``);
- an unknown id is 404 ``PREVIOUS_RUN_NOT_FOUND``, a dry run 409 ``PREVIOUS_RUN_NOT_USABLE``;
- the re-batching numbers and switches are allowed overrides, the paths
  (``rebatch.previous_run``, ``rebatch.pinned``) and other ``rebatch`` keys are 400;
- a key without the ``read`` scope cannot name a previous run (403).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from stage2.config.service import BATCHING_OVERRIDE_KEYS, EXACT_OVERRIDE_KEYS
from stage2.service.security import Refused, check_overrides
from stage2.service.store import RunStore

from .conftest import FINAL, ServiceManager, contract_files, copy_institution

pytestmark = pytest.mark.slow

#: no notebook, and one reference time for every run (comparable outputs)
OPTIONS = ("report.notebook=false", "as_of=2026-01-01T00:00:00")


@pytest.fixture(scope="module")
def rebatch_service(tmp_path_factory, mlflow_template, small_institution):
    root = tmp_path_factory.mktemp("rebatch")
    keys = root / "keys.txt"
    keys.write_text("k-all read,submit\nk-submit submit\n", encoding="utf-8")
    data_root = root / "data"
    copy_institution(small_institution, data_root / "inst")
    manager = ServiceManager(mlflow_template)
    service = manager.start(root / "home", [f"service.api_keys_file={keys}", f"service.data_root={data_root}",
                                            "service.max_concurrent=2"], admin_key="k-all")
    yield service
    manager.close()


@pytest.fixture(scope="module")
def client(rebatch_service):
    return rebatch_service.client("k-all")


def upload(client, institution, overrides=OPTIONS, previous_run_id=None, key=None):
    files = [("files", (p.name, p.read_bytes(), "text/csv")) for p in contract_files(institution)]
    data = {"overrides": json.dumps(list(overrides))}
    if previous_run_id is not None:
        data["previous_run_id"] = previous_run_id
    headers = {"X-API-Key": key} if key else {}
    return client.post("/v1/runs", files=files, data=data, headers=headers)


def submit_json(client, overrides=OPTIONS, previous_run_id=None):
    body = {"input_dir": "inst", "overrides": list(overrides)}
    if previous_run_id is not None:
        body["previous_run_id"] = previous_run_id
    return client.post("/v1/runs", json=body)


@pytest.fixture(scope="module")
def previous(client, small_institution):
    """The first run (upload) and a dry run, both SUCCEEDED."""
    first = client.accepted(upload(client, small_institution))
    dry = client.accepted(upload(client, small_institution, [*OPTIONS, "dry_run=true"]))
    for run_id in (first, dry):
        run = client.wait(run_id)
        assert run["status"] == "SUCCEEDED", run
    return {"first": first, "dry": dry}


def artifact(client, run_id: str, name: str) -> bytes:
    response = client.get(f"/v1/runs/{run_id}/artifacts/{name}")
    assert response.status_code == 200, (name, response.status_code, response.text)
    return response.content


def test_rebatch_of_an_unchanged_institution_keeps_every_batch(client, small_institution, previous):
    first = previous["first"]
    responses = [
        upload(client, small_institution, previous_run_id=first),
        submit_json(client, [*OPTIONS, "rebatch.max_moved=0", "rebatch.move_penalty=0.75"], previous_run_id=first),
    ]
    rebatches = [client.accepted(response) for response in responses]
    for response in responses:
        assert response.json()["previous_run_id"] == first
        assert not any("previous_run" in o for o in response.json()["overrides"])  # no server path shown
    batches = artifact(client, first, "student_batches.csv")
    for run_id in rebatches:
        run = client.wait(run_id)
        assert run["status"] == "SUCCEEDED", run
        assert run["previous_run_id"] == first
        diff = artifact(client, run_id, "rebatch_diff.csv")
        rows = list(csv.reader(io.StringIO(diff.decode("utf-8-sig"))))
        assert rows and rows[1:] == [], rows[:3]  # a header, no student moved, joined or left
        assert artifact(client, run_id, "student_batches.csv") == batches
        names = {entry["name"]: entry for entry in client.get(f"/v1/runs/{run_id}/artifacts").json()}
        assert names["rebatch_diff.csv"]["rows"] == 0
        alias = client.get(f"/download/{run_id}/rebatch_diff")
        assert alias.status_code == 200 and alias.content == diff
        quality = json.loads(artifact(client, run_id, "quality_report.json"))
        assert "rebatch" in quality
    config = artifact(client, rebatches[1], "resolved_config.yaml").decode()
    assert "max_moved: 0" in config and "move_penalty: 0.75" in config
    # the first run is not re-batch material of its own, and it has no diff
    assert client.get(f"/v1/runs/{first}").json()["previous_run_id"] is None
    assert client.get(f"/v1/runs/{first}/artifacts/rebatch_diff.csv").status_code == 404


@pytest.mark.parametrize("value", ["00000000-0000-4000-8000-000000000000", "not-a-run-id", "../../etc"])
def test_an_unknown_previous_run_is_404(client, small_institution, previous, value):
    before = len(client.all_runs())
    for response in (upload(client, small_institution, previous_run_id=value),
                     submit_json(client, previous_run_id=value)):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "PREVIOUS_RUN_NOT_FOUND"
        assert value in response.json()["detail"]
    assert len(client.all_runs()) == before


def test_a_dry_run_or_unfinished_run_is_not_usable(client, small_institution, previous):
    response = submit_json(client, previous_run_id=previous["dry"])
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "PREVIOUS_RUN_NOT_USABLE"
    assert "dry run" in response.json()["detail"]
    assert submit_json(client, previous_run_id=123).status_code == 400  # type: ignore[arg-type]


@pytest.mark.parametrize("override", [
    "rebatch.previous_run=/etc", "+rebatch.previous_run=/etc", "rebatch.pinned=/etc/passwd",
    "rebatch={previous_run:/etc}", "rebatch.move_penalty.x=1", "rebatch.cap_rounds=9",
])
def test_rebatch_paths_are_not_allowed_overrides(client, small_institution, previous, override):
    key = override.lstrip("+").split("=", 1)[0]
    for response in (upload(client, small_institution, [*OPTIONS, override]),
                     submit_json(client, [*OPTIONS, override], previous_run_id=previous["first"])):
        assert response.status_code == 400, (override, response.text)
        assert repr(key) in response.json()["detail"]


def test_naming_a_previous_run_needs_the_read_scope(client, small_institution, previous):
    response = upload(client, small_institution, previous_run_id=previous["first"], key="k-submit")
    assert response.status_code == 403, response.text


def test_exact_keys_allow_no_sub_key():
    allowed = list(BATCHING_OVERRIDE_KEYS)
    exact = list(EXACT_OVERRIDE_KEYS)
    good = [f"{key}=1" for key in exact]
    assert check_overrides(good, allowed, {}, exact_keys=exact) == good
    for bad in ("rebatch.previous_run=/x", "rebatch.pinned=/x", "rebatch.max_moved.x=1", "rebatch=1"):
        with pytest.raises(Refused) as refused:
            check_overrides([bad], allowed, {}, exact_keys=exact)
        assert refused.value.status == 400
    with pytest.raises(Refused):  # without exact keys, as before
        check_overrides(["rebatch.max_moved=1"], allowed, {})


def test_an_older_store_gains_the_previous_run_column(tmp_path):
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE, "
                   "status TEXT NOT NULL, stage TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL, "
                   "overrides TEXT NOT NULL, source TEXT NOT NULL, input_dir TEXT NOT NULL, input_digest TEXT, "
                   "mlflow_run_id TEXT, error TEXT, idempotency_key TEXT UNIQUE, request_digest TEXT NOT NULL, "
                   "pid INTEGER, cancel_requested INTEGER NOT NULL DEFAULT 0, resumes INTEGER NOT NULL DEFAULT 0, "
                   "resume_next INTEGER NOT NULL DEFAULT 0, exit_code INTEGER)")
        db.execute("INSERT INTO runs (run_id, status, created_at, overrides, source, input_dir, request_digest) "
                   "VALUES ('r', 'SUCCEEDED', 0, '[]', 'upload', '/x', 'd')")
    db.close()
    record = RunStore(path).get("r")
    assert record is not None and record.previous_run_id is None
    assert record.status in FINAL
