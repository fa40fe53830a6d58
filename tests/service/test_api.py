"""The REST API end to end against one real server (module-scoped): submissions (upload, JSON,
the design document's aliases), results (byte-identical to the command line), failures,
idempotency, deletion, listing, metrics, readiness and the committed OpenAPI schema.

The server starts on a fresh home (it creates its MLflow store itself) with two worker slots;
the runs the tests submit are shared through module-scoped fixtures.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import assert_outputs_valid, subprocess_env

from .conftest import (
    AS_OF,
    FAST,
    HOST,
    STAGE3_CSVS,
    Client,
    Service,
    ServiceManager,
    copy_institution,
    manifest_names,
)

pytestmark = pytest.mark.slow

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def api(tmp_path_factory, small_institution):
    """The module's server: ``service.data_root`` holding a copy of the small institution as
    ``small``, two runs at once, a fresh home (no MLflow store copied in)."""
    root = tmp_path_factory.mktemp("api")
    data_root = root / "data"
    copy_institution(small_institution, data_root / "small")
    manager = ServiceManager(mlflow_template=None)
    service = manager.start(root / "home", [f"service.data_root={data_root}", "service.max_concurrent=2"])
    service.data_root = data_root  # type: ignore[attr-defined]
    service.deleted_succeeded = 0  # type: ignore[attr-defined]
    yield service
    manager.close()


@pytest.fixture(scope="module")
def client(api: Service) -> Client:
    return api.client()


#: allowed overrides that must reach the pipeline
ALLOWED = ("batch_size.max=50", "algorithm=kmeans",
           "+constraints.rules.x={field_name:preferred_shift,rule_type:homogeneous,constraint_level:soft,threshold:0.5}")
IDEMPOTENT = {"Idempotency-Key": "json-small-1"}
BAD_CASES = ("missing_column_and_bad_row", "missing_file")


@pytest.fixture(scope="module")
def shared(client, demo_institution, small_institution, tmp_path_factory) -> dict[str, Any]:
    """The module's runs, submitted together up front so that two run at a time (not waited
    for): the 202 answers (``responses``), run ids (``ids``), broken institutions (``bad``)."""
    bad_root = tmp_path_factory.mktemp("bad")
    bad = {case: break_institution(small_institution, bad_root / case, case) for case in BAD_CASES}
    responses = {
        "demo": client.submit_upload(demo_institution, FAST),
        "json": client.submit_json("small", FAST, headers=IDEMPOTENT),  # JSON, with an idempotency key
        "alias": client.submit_upload(small_institution, FAST, path="/batch-process"),
        "overrides": client.submit_json("small", [*FAST, *ALLOWED]),
        "bad_value": client.submit_json("small", [*FAST, "seed=abc"]),  # an allowed key, a wrong type
        **{case: client.submit_upload(bad[case][0], FAST) for case in BAD_CASES},
    }
    return {"responses": responses, "ids": {k: client.accepted(r) for k, r in responses.items()}, "bad": bad}


@pytest.fixture(scope="module")
def demo_done(client, shared) -> dict[str, Any]:
    run = client.wait(shared["ids"]["demo"])
    assert run["status"] == "SUCCEEDED", run
    return run


@pytest.fixture(scope="module")
def json_done(client, shared) -> dict[str, Any]:
    run = client.wait(shared["ids"]["json"])
    assert run["status"] == "SUCCEEDED", run
    return run


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def csv_records(data: bytes) -> int:
    return sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8-sig")))) - 1


def raw_get(service: Service, target: str) -> tuple[int, bytes]:
    """GET with the request target sent exactly as given (no client-side normalisation of
    ``..`` or ``%2F``)."""
    connection = http.client.HTTPConnection(HOST, service.port, timeout=30)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def cli_run(input_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """``python -m stage2`` on ``input_dir`` as the command line runs it (no tracking)."""
    return subprocess.run(
        [sys.executable, "-m", "stage2", f"data.input_dir={input_dir}", f"as_of={AS_OF}", "report.notebook=false",
         "tracking.enabled=false", f"output_dir={out}"],
        cwd=out.parent, env=subprocess_env(), capture_output=True, text=True, timeout=600)


def metric_samples(text: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family.samples for family in text_string_to_metric_families(text)}


# ----------------------------------------------------------------------------- upload → results


def test_upload_demo_matches_command_line(client, shared, demo_institution, tmp_path):
    """The demo uploaded → 202 with Location → SUCCEEDED; its three CSVs equal a command-line
    run's byte for byte."""
    response, run_id = shared["responses"]["demo"], shared["ids"]["demo"]
    assert response.headers["Location"] == f"/v1/runs/{run_id}"
    accepted = response.json()
    assert UUID.fullmatch(run_id)
    assert accepted["status"] == "QUEUED" and accepted["source"] == "upload"
    assert accepted["overrides"] == list(FAST)

    out = tmp_path / "cli"
    done = cli_run(demo_institution, out)  # runs while the service works
    assert done.returncode == 0, done.stderr[-3000:]

    run = client.wait(run_id)
    assert run["status"] == "SUCCEEDED", run
    assert run["error"] is None and run["resumes"] == 0
    assert re.fullmatch(r"[0-9a-f]{64}", run["input_digest"] or ""), run["input_digest"]
    assert run["mlflow_run_id"]
    assert run["created_at"] <= run["started_at"] <= run["finished_at"]
    for name in STAGE3_CSVS:
        download = client.get(f"/v1/runs/{run_id}/artifacts/{name}")
        assert download.status_code == 200, download.text
        assert download.headers["content-type"].startswith("text/csv")
        assert download.content == (out / name).read_bytes(), f"{name} differs from the command line's"


def test_manifest_quality_resources_report_zip(client, demo_done):
    run_id = demo_done["run_id"]
    manifest = client.get(f"/v1/runs/{run_id}/artifacts").json()
    names = [entry["name"] for entry in manifest]
    assert set(STAGE3_CSVS) | {"quality_report.json", "batch_quality.csv"} <= set(names), names
    files = {}
    for entry in manifest:
        body = client.get(f"/v1/runs/{run_id}/artifacts/{entry['name']}").content
        files[entry["name"]] = body
        assert entry["bytes"] == len(body), entry
        assert entry["sha256"] == sha256(body), entry
        assert entry["rows"] == (csv_records(body) if entry["name"].endswith(".csv") else None), entry

    report = json.loads(files["quality_report.json"])
    quality = client.get(f"/v1/runs/{run_id}/quality")
    assert quality.status_code == 200
    quality = quality.json()
    assert quality["metrics"] == report["metrics"]
    assert quality["thresholds"] == report.get("thresholds", {})
    assert quality["passed_thresholds"] == report.get("passed_thresholds")
    assert len(quality["batch_quality"]) == csv_records(files["batch_quality.csv"])

    batches = pd.read_csv(io.BytesIO(files["student_batches.csv"]), dtype=str, keep_default_na=False)
    placed = batches.loc[batches["room_id"] != ""]
    resources = client.get(f"/v1/runs/{run_id}/resources")
    assert resources.status_code == 200
    resources = resources.json()
    assert resources["batches"] == len(batches)
    assert resources["placed"] == len(placed)
    assert resources["unplaced"] == len(batches) - len(placed)
    assert sorted(resources["unplaced_batches"]) == sorted(batches.loc[batches["room_id"] == "", "batch_code"])
    assert sum(row["batches"] for row in resources["by_shift"]) == len(placed)
    assert sum(row["students"] for row in resources["by_shift"]) == placed["student_count"].astype(int).sum()
    assert sum(row["batches"] for row in resources["by_room_type"]) == len(placed)
    assert resources["room_placement_rate"] == report["metrics"]["room_placement_rate"]

    html = client.get(f"/v1/runs/{run_id}/report")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "<html" in html.text.lower()

    archive = client.get(f"/v1/runs/{run_id}/artifacts.zip")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert sorted(zipped.namelist()) == sorted(names)
        for entry in manifest:
            assert sha256(zipped.read(entry["name"])) == entry["sha256"], entry["name"]


def test_design_aliases(client, shared, demo_done):
    """``/batch-process/{id}/status|quality|resources|errors``, ``/download/{id}/{type}`` and
    ``POST /batch-process`` answer like the v1 paths."""
    run_id = demo_done["run_id"]
    assert client.get(f"/batch-process/{run_id}/status").json() == client.get(f"/v1/runs/{run_id}").json()
    for view in ("quality", "resources", "errors"):
        alias, v1 = client.get(f"/batch-process/{run_id}/{view}"), client.get(f"/v1/runs/{run_id}/{view}")
        assert alias.status_code == v1.status_code == 200, view
        assert alias.json() == v1.json(), view
    for file_type, name in (("membership", "batch_student_membership.csv"), ("batches", "student_batches.csv"),
                            ("enrollment", "batch_course_enrollment.csv")):
        alias = client.get(f"/download/{run_id}/{file_type}")
        assert alias.status_code == 200
        assert alias.content == client.get(f"/v1/runs/{run_id}/artifacts/{name}").content, file_type
    assert client.get(f"/download/{run_id}/passwords").status_code == 404

    response, alias_run = shared["responses"]["alias"], shared["ids"]["alias"]
    assert response.headers["Location"] == f"/v1/runs/{alias_run}"
    assert response.json()["status"] == "QUEUED"
    run = client.wait(alias_run)
    assert run["status"] == "SUCCEEDED", run
    assert client.get(f"/batch-process/{alias_run}/status").json() == run


# ----------------------------------------------------------------------------- JSON, failures


def test_json_submission_under_data_root(client, api, shared, json_done):
    run_id = shared["ids"]["json"]
    assert shared["responses"]["json"].headers["Location"] == f"/v1/runs/{run_id}"
    assert json_done["source"] == "input_dir" and json_done["overrides"] == list(FAST)
    assert_outputs_valid(api.paths.output_dir(run_id), api.data_root / "small")


def break_institution(source: Path, target: Path, case: str) -> tuple[Path, str]:
    """A copy of ``source`` broken as ``case`` says, and the pipeline's error code for it."""
    copy_institution(source, target)
    if case == "missing_file":
        (target / "programs.csv").unlink()
        return target, "MISSING_FILE"
    students = pd.read_csv(target / "student_data.csv", dtype=str, keep_default_na=False)
    students.drop(columns=["academic_year"]).to_csv(target / "student_data.csv", index=False)
    rooms = pd.read_csv(target / "rooms.csv", dtype=str, keep_default_na=False)
    rooms.loc[2, "capacity"] = "lots"
    rooms.to_csv(target / "rooms.csv", index=False)
    return target, "INPUT_VALIDATION_FAILED"  # two problems: the code that names them all


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_institution_fails_like_the_command_line(api, client, shared, tmp_path, case):
    (bad, code), run_id = shared["bad"][case], shared["ids"][case]
    out = tmp_path / "cli"
    done = cli_run(bad, out)
    assert done.returncode != 0
    cli_error = json.loads((out / "errors.json").read_text())["error"]

    run = client.wait(run_id)
    assert run["status"] == "FAILED", run
    assert run["error"]["code"] == cli_error["code"] == code
    assert run["error"]["message"] and run["error"]["fix"]

    errors = client.get(f"/v1/runs/{run_id}/errors")
    assert errors.status_code == 200
    assert str(api.home) not in errors.text and str(api.home) not in json.dumps(run), "a server path shown"
    errors = errors.json()
    assert errors["error"]["code"] == code
    issues = [(i["code"], i["file"], i["row"], i["column"]) for i in errors["issues"]]
    assert issues == [(i["code"], i["file"], i["row"], i["column"]) for i in cli_error["details"]["issues"]]
    if case == "missing_file":
        assert issues == [("MISSING_FILE", "programs.csv", None, None)]
    else:
        assert ("INVALID_NUMBER", "rooms.csv", 4, "capacity") in issues
        assert ("MISSING_COLUMN", "student_data.csv", None, "academic_year") in issues

    assert not set(manifest_names(client, run_id)) & set(STAGE3_CSVS)
    for name in STAGE3_CSVS:
        assert client.get(f"/v1/runs/{run_id}/artifacts/{name}").status_code == 404
    for view in ("quality", "resources", "report"):
        assert client.get(f"/v1/runs/{run_id}/{view}").status_code == 404, view


def test_allowed_overrides_reach_the_pipeline(client, shared):
    run_id = shared["ids"]["overrides"]
    assert shared["responses"]["overrides"].json()["overrides"] == [*FAST, *ALLOWED]
    run = client.wait(run_id)
    assert run["status"] == "SUCCEEDED", run
    resolved = yaml.safe_load(client.get(f"/v1/runs/{run_id}/artifacts/resolved_config.yaml").text)
    assert resolved["batch_size"]["max"] == 50
    assert resolved["algorithm"]["name"] == "kmeans"
    assert resolved["constraints"]["rules"]["x"]["rule_type"] == "homogeneous"
    assert resolved["as_of"] == AS_OF


def test_a_bad_override_value_fails_as_a_configuration_error(client, shared):
    """A value Hydra refuses (``seed=abc``) is the client's mistake, reported with the
    pipeline's code and message, not as an internal error."""
    run = client.wait(shared["ids"]["bad_value"])
    assert run["status"] == "FAILED", run
    assert run["error"]["code"] == "INVALID_CONFIGURATION", run["error"]
    assert "abc" in run["error"]["message"]


def test_run_files_do_not_carry_the_tracking_uri(client, shared):
    """The service hands its MLflow store to the runs through the environment, so the files a
    client downloads do not name it (a URI may hold credentials)."""
    run_id = shared["ids"]["overrides"]
    assert client.wait(run_id)["status"] == "SUCCEEDED"
    resolved = yaml.safe_load(client.get(f"/v1/runs/{run_id}/artifacts/resolved_config.yaml").text)
    assert resolved["tracking"]["uri"] is None
    assert "mlflow.db" not in client.get(f"/v1/runs/{run_id}/artifacts/quality_report.json").text
    assert client.run(run_id)["mlflow_run_id"]  # tracked all the same


# ----------------------------------------------------------------------------- idempotency


def test_idempotency_key(client, shared, small_institution):
    first_json = shared["ids"]["json"]
    before = client.all_runs()
    again = client.submit_json("small", FAST, headers=IDEMPOTENT)
    assert again.status_code == 202
    assert again.json()["run_id"] == first_json
    other = client.submit_json("small", [*FAST, "seed=7"], headers=IDEMPOTENT)
    assert other.status_code == 409, other.text
    assert first_json in other.json()["detail"]
    as_upload = client.submit_upload(small_institution, FAST, headers=IDEMPOTENT)
    assert as_upload.status_code == 409, as_upload.text
    after = client.all_runs()
    assert [r["run_id"] for r in after] == [r["run_id"] for r in before]

    # uploads: the same files and overrides under one key are one run
    headers = {"Idempotency-Key": "upload-small-1"}
    first = client.accepted(client.submit_upload(small_institution, FAST, headers=headers))
    try:
        assert client.accepted(client.submit_upload(small_institution, FAST, headers=headers)) == first
        changed = [(p.name, p.read_bytes()) for p in sorted(small_institution.glob("*.csv"))]
        changed = [(name, body + b"\n") if name == "rooms.csv" else (name, body) for name, body in changed]
        assert client.submit_upload(None, FAST, headers=headers, files=changed).status_code == 409
        assert len(client.all_runs()) == len(before) + 1
        assert sum(r["run_id"] == first for r in client.all_runs()) == 1
    finally:
        client.post(f"/v1/runs/{first}/cancel")
        client.wait(first)


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["..%2Fruns.db", "..%2F..%2Fruns.db", "runs.db", "mlflow.db", "%2Fetc%2Fpasswd",
                                  "/etc/passwd", "../../../runs.db", "..", "stage2.jsonl", "process.log"])
def test_artifact_names_outside_the_fixed_list_are_404(api, client, demo_done, name):
    run_id = demo_done["run_id"]
    assert client.get(f"/v1/runs/{run_id}/artifacts/student_batches.csv").status_code == 200  # the control
    for target in (f"/v1/runs/{run_id}/artifacts/{name}", f"/download/{run_id}/{name}"):
        status, body = raw_get(api, target)
        assert status == 404, (target, status, body[:200])
        assert not body.startswith(b"SQLite format") and b"root:" not in body


# ----------------------------------------------------------------------------- delete


def test_delete(api, client, small_institution):
    run_id = client.accepted(client.submit_upload(small_institution, FAST))
    assert client.wait(run_id, {"RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"})["status"] == "RUNNING"
    busy = client.delete(f"/v1/runs/{run_id}")
    assert busy.status_code == 409, busy.text
    assert client.run(run_id)["status"] in ("RUNNING", "SUCCEEDED")
    assert client.wait(run_id)["status"] == "SUCCEEDED"
    run_dir, upload_dir = api.paths.run_dir(run_id), api.paths.upload_dir(run_id)
    assert (api.paths.output_dir(run_id) / "student_batches.csv").is_file() and upload_dir.is_dir()

    assert client.delete(f"/v1/runs/{run_id}").status_code == 204
    api.deleted_succeeded += 1
    assert client.get(f"/v1/runs/{run_id}").status_code == 404
    assert client.get(f"/v1/runs/{run_id}/artifacts/student_batches.csv").status_code == 404
    assert not run_dir.exists() and not upload_dir.exists()
    assert run_id not in {r["run_id"] for r in client.all_runs()}
    assert client.delete(f"/v1/runs/{run_id}").status_code == 404


def test_mlflow_artifacts_live_outside_the_run_directories(api, client, demo_done, json_done):
    """The runs' experiment keeps its artifacts under the home but in no run's directory: deleting
    a run must not take other runs' MLflow files with it (nor recreate the deleted directory)."""
    with sqlite3.connect(api.home / "mlflow.db") as db:
        rows = db.execute("SELECT artifact_location FROM experiments WHERE name = 'stage2-service'").fetchall()
    assert len(rows) == 1
    location = Path(rows[0][0].removeprefix("file://"))
    assert location.is_relative_to(api.home), location
    assert not location.is_relative_to(api.paths.runs), location
    succeeded = client.all_runs("SUCCEEDED")
    assert len(succeeded) >= 2
    for run in succeeded:
        assert (location / run["mlflow_run_id"] / "artifacts" / "student_batches.csv").is_file(), run["run_id"]
    assert not (api.home.parent / "mlruns").exists(), "MLflow files in the service's working directory"


# ----------------------------------------------------------------------------- listing


def test_an_oversized_page_token_is_400(client):
    assert client.get("/v1/runs", params={"page_token": "9" * 30}).status_code == 400


def test_listing_pages_newest_first(client, demo_done, json_done):
    whole = client.get("/v1/runs", params={"status": "SUCCEEDED", "limit": 200}).json()
    assert whole["next_page_token"] is None
    expected = [r["run_id"] for r in whole["runs"]]
    assert {demo_done["run_id"], json_done["run_id"]} <= set(expected)
    created = [r["created_at"] for r in whole["runs"]]
    assert created == sorted(created, reverse=True)

    paged, params, pages = [], {"status": "SUCCEEDED", "limit": 1}, 0
    while True:
        page = client.get("/v1/runs", params=params).json()
        pages += 1
        assert len(page["runs"]) <= 1
        assert all(r["status"] == "SUCCEEDED" for r in page["runs"])
        paged += [r["run_id"] for r in page["runs"]]
        if page["next_page_token"] is None:
            break
        params["page_token"] = page["next_page_token"]
        assert pages <= len(expected), "paging does not end"
    assert paged == expected
    assert pages == len(expected)

    everything = {r["run_id"]: r["status"] for r in client.all_runs()}
    assert set(expected) <= set(everything)
    assert [i for i, s in everything.items() if s == "SUCCEEDED"] == expected
    assert client.get("/v1/runs", params={"status": "DONE"}).status_code == 400
    assert client.get("/v1/runs", params={"page_token": "x"}).status_code == 400


# ----------------------------------------------------------------------------- service views


def test_metrics(api, client, demo_done, json_done):
    for run in client.all_runs():  # quiet: nothing queued or running
        client.wait(run["run_id"])
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    for name in ("stage2_runs", "stage2_runs_finished", "stage2_runs_in_progress", "stage2_queue_depth",
                 "stage2_run_duration_seconds", "stage2_stage_duration_seconds",
                 "stage2_last_success_timestamp_seconds"):
        assert name in samples, (name, sorted(samples))

    runs = client.all_runs()
    by_status = {s.labels["status"]: s.value for s in samples["stage2_runs"]}
    for status in ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"):
        assert by_status[status] == sum(r["status"] == status for r in runs), status
    assert by_status["SUCCEEDED"] >= 2
    assert samples["stage2_runs_in_progress"][0].value == 0
    assert samples["stage2_queue_depth"][0].value == 0

    counts = {s.labels["status"]: s.value for s in samples["stage2_run_duration_seconds"]
              if s.name == "stage2_run_duration_seconds_count"}
    assert counts["SUCCEEDED"] == by_status["SUCCEEDED"] + api.deleted_succeeded
    assert counts.get("FAILED", 0) == by_status["FAILED"]
    finished = {s.labels["status"]: s.value for s in samples["stage2_runs_finished"] if s.name.endswith("_total")}
    assert finished["SUCCEEDED"] == counts["SUCCEEDED"]
    assert finished.get("FAILED", 0) == by_status["FAILED"]
    assert finished.get("CANCELLED", 0) == by_status["CANCELLED"]
    stages = {s.labels["stage"]: s.value for s in samples["stage2_stage_duration_seconds"]
              if s.name == "stage2_stage_duration_seconds_count"}
    assert {"validation", "clustering", "outputs"} <= set(stages), stages
    assert stages["validation"] == counts["SUCCEEDED"]
    last = samples["stage2_last_success_timestamp_seconds"][0].value
    assert last >= max(r["finished_at"] for r in runs if r["status"] == "SUCCEEDED")

    run_ids = {r["run_id"] for r in runs} | {r["mlflow_run_id"] for r in runs if r["mlflow_run_id"]}
    for family in samples.values():
        for sample in family:
            assert not {"run_id", "run", "mlflow_run_id"} & set(sample.labels), sample
            for value in sample.labels.values():
                assert value not in run_ids and not UUID.search(value) and not re.fullmatch(r"[0-9a-f]{32}", value), \
                    sample


def test_ready(client):
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert checks["store_writable"] is True and checks["mlflow_store"] is True and checks["queue_has_room"] is True
    assert isinstance(checks["worker_slots_free"], int) and 0 <= checks["worker_slots_free"] <= 2
    assert isinstance(checks["queue_depth"], int)


def test_openapi_schema_is_committed(client):
    from stage2.service.openapi import SCHEMA_FILE, current_schema, render

    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert render(current_schema()) == committed, "regenerate: python -m stage2.service.openapi > " \
                                                  "stage2/service/openapi.json"
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert render(served.json()) == committed
