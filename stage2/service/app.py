"""The REST API (FastAPI): submit, watch, cancel, fetch and delete batching runs.

The web process only accepts and records; :class:`~stage2.service.executor.Executor` runs
each submission as its own ``python -m stage2`` process. Handlers are plain ``def`` functions
(FastAPI runs them in its thread pool) except the submission, which awaits the request body
and hands the disk work to the thread pool.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from stage2 import __version__
from stage2.config.service import ServiceConfig
from stage2.outputs import STAGE3_TABLES
from stage2.service import runfiles
from stage2.service.executor import Executor, ServicePaths
from stage2.service.metrics import ServiceMetrics
from stage2.service.security import (
    ApiKey,
    Refused,
    authorise,
    check_overrides,
    contract_name,
    load_api_keys,
    resolve_input_dir,
)
from stage2.service.store import (
    FINAL_STATUSES,
    QUEUED,
    STATUSES,
    SUCCEEDED,
    IdempotencyConflict,
    PreviousRunGone,
    QueueFull,
    RunRecord,
    RunStore,
    now,
)
from stage2.tracking.mlflow_tracking import ensure_experiment

_CHUNK = 1 << 20
#: what ``previous_run_id`` means, in the JSON and the multipart submission
PREVIOUS_RUN_ID_DOC = ("re-batch against this earlier run of the service (it must have SUCCEEDED, not as a dry "
                       "run): keep its batches and move as few students as possible; the run also writes "
                       "rebatch_diff.csv. Needs the read scope as well. Unknown: 404 PREVIOUS_RUN_NOT_FOUND; "
                       "not usable: 409 PREVIOUS_RUN_NOT_USABLE")
#: the dry-run override switched on (``dry_run=true``, ``+dry_run=yes``, ...)
_DRY_RUN = re.compile(r"^\+{0,2}dry_run=\s*(true|yes|on|1)\s*$", re.IGNORECASE)
#: largest JSON submission body, in bytes (it names a directory and some overrides)
MAX_JSON_BYTES = 1 << 20


# ----------------------------------------------------------------------------- API models


class RunError(BaseModel):
    code: str | None = None
    where: str | None = None
    message: str | None = None
    fix: str | None = None


class Run(BaseModel):
    """A run as the API shows it. Times are Unix seconds."""

    run_id: str
    status: str = Field(description="QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED")
    stage: str | None = Field(None, description="the pipeline stage running (or last run)")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    overrides: list[str]
    source: str = Field(description="upload or input_dir")
    input_digest: str | None = None
    mlflow_run_id: str | None = None
    error: RunError | None = None
    resumes: int = Field(0, description="times the run was resumed after a service restart")
    cancel_requested: bool = False
    previous_run_id: str | None = Field(None, description="a re-batch: the run it re-batches against")
    links: dict[str, str] = Field(default_factory=dict)


class RunPage(BaseModel):
    runs: list[Run]
    next_page_token: str | None = None


class JsonSubmission(BaseModel):
    input_dir: str = Field(description="the institution's directory, relative to service.data_root")
    overrides: list[str] = Field(default_factory=list, description="batching settings as key=value")
    previous_run_id: str | None = Field(None, description=PREVIOUS_RUN_ID_DOC)


class Artifact(BaseModel):
    name: str
    bytes: int
    sha256: str
    rows: int | None = None
    media_type: str


class Problem(BaseModel):
    detail: str
    code: str | None = Field(None, description="why, for some refusals (PREVIOUS_RUN_NOT_FOUND, ...)")


def _public_error(error: dict[str, Any] | None, *roots: Path | str | None) -> dict[str, Any] | None:
    """An error as clients see it: paths inside the service's home (or data root) shown
    relative to it."""
    if not error:
        return error
    prefixes = [f"{Path(root).resolve()}/" for root in roots if root]

    def public(value: Any) -> Any:
        if isinstance(value, str):
            for prefix in prefixes:
                value = value.replace(prefix, "")
        return value

    return {key: public(value) for key, value in error.items()}


def _run_model(record: RunRecord, home: Path, data_root: str | None = None) -> Run:
    base = f"/v1/runs/{record.run_id}"
    links = {"self": base, "quality": f"{base}/quality", "resources": f"{base}/resources", "errors": f"{base}/errors",
             "artifacts": f"{base}/artifacts", "report": f"{base}/report", "cancel": f"{base}/cancel"}
    return Run(run_id=record.run_id, status=record.status, stage=record.stage, created_at=record.created_at,
               started_at=record.started_at, finished_at=record.finished_at, overrides=record.overrides,
               source=record.source, input_digest=record.input_digest, mlflow_run_id=record.mlflow_run_id,
               error=RunError(**(_public_error(record.error, home, data_root) or {})) if record.error else None,
               resumes=record.resumes,
               cancel_requested=record.cancel_requested, previous_run_id=record.previous_run_id, links=links)


# ----------------------------------------------------------------------------- the service


class Service:
    """The state the handlers share: configuration, paths, keys, store, executor, metrics."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.paths = ServicePaths(Path(config.home))
        self.paths.create()
        self.keys: list[ApiKey] | None = (load_api_keys(Path(config.api_keys_file))
                                          if config.api_keys_file else None)
        self.store = RunStore(self.paths.store)
        self.metrics = ServiceMetrics(self.store.counts)
        self.tracking_uri = config.tracking_uri or f"sqlite:///{self.paths.mlflow_db}"
        self.executor = Executor(config, self.store, self.paths, self.metrics, self.tracking_uri)
        self.mlflow_ready = False

    def prepare_tracking(self) -> None:
        """Create (and migrate) the MLflow store and the runs' experiment once, before any run:
        concurrent first runs would race to create them, and an experiment created by a run
        would keep every run's artifacts in that run's directory (``./mlruns``)."""
        import os

        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        ensure_experiment(client, self.config.experiment_name, artifact_location=self.paths.mlflow_artifacts.as_uri())
        self.mlflow_ready = True

    def run_or_404(self, run_id: str) -> RunRecord:
        record = self.store.get(run_id) if _is_run_id(run_id) else None
        if record is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return record

    def output(self, record: RunRecord) -> Path:
        return self.paths.output_dir(record.run_id)


def _is_run_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def create_app(config: ServiceConfig) -> FastAPI:
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.prepare_tracking)
        service.executor.start()
        try:
            yield
        finally:
            service.executor.stop()

    app = FastAPI(title="stage2", version=__version__, lifespan=lifespan,
                  description="Student batching for university timetabling: submit batching runs, watch them, "
                              "cancel them and fetch their results (the three Stage 3 CSVs, quality, reports).")
    app.state.service = service

    @app.exception_handler(Refused)
    def refused(request: Request, exc: Refused) -> JSONResponse:
        body = {"detail": exc.message} | ({"code": exc.code} if exc.code else {})
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    def requires(scope: str) -> Any:
        def check(x_api_key: Annotated[str | None, Header()] = None) -> None:
            authorise(service.keys, x_api_key, scope)

        return Depends(check)

    errors_4xx: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}}

    # ------------------------------------------------------------------ health

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        """Liveness: the web process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["service"], responses={503: {"description": "not ready"}})
    def ready() -> JSONResponse:
        """Readiness: the job store is writable, the MLflow store reachable, a run can start
        or wait (a worker slot, or room in the queue)."""
        queued = service.store.count(QUEUED)
        checks = {"store_writable": service.store.writable(), "mlflow_store": service.mlflow_ready,
                  "worker_slots_free": service.executor.slots_free, "queue_depth": queued,
                  "queue_has_room": queued < config.max_queued}
        ok = checks["store_writable"] and checks["mlflow_store"] and checks["queue_has_room"]
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["service"], dependencies=[requires("read")], response_class=Response)
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ submit

    submit_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "the contract CSVs, named as in the data contract"},
            "overrides": {"type": "string", "description": "a JSON array of key=value strings"},
            "previous_run_id": {"type": "string", "description": PREVIOUS_RUN_ID_DOC}}}},
        "application/json": {"schema": JsonSubmission.model_json_schema()}}}}

    @app.post("/v1/runs", tags=["runs"], status_code=202, response_model=Run, openapi_extra=submit_body,
              dependencies=[requires("submit")],
              responses={400: {"model": Problem}, 409: {"model": Problem}, 411: {"model": Problem},
                         413: {"model": Problem}, 429: {"model": Problem}, **errors_4xx})
    async def submit(request: Request, response: Response,
                     idempotency_key: Annotated[str | None, Header()] = None) -> Run:
        """Submit a batching run: the contract CSVs as a multipart upload (``files``, optional
        ``overrides`` and ``previous_run_id``), or JSON ``{"input_dir", "overrides",
        "previous_run_id"}`` naming a directory under the data root. ``previous_run_id`` makes it
        a re-batch against that earlier run. Answers 202 with the run; the same
        ``Idempotency-Key`` returns the same run."""
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit() or int(length) > MAX_JSON_BYTES:
                raise Refused(413 if length and length.isdigit() else 411,
                              f"a JSON submission needs a Content-Length of at most {MAX_JSON_BYTES} bytes")
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise Refused(400, f"the body is not JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise Refused(400, "the body must be a JSON object with input_dir and overrides")
            unknown = sorted(set(body) - {"input_dir", "overrides", "previous_run_id"})
            if unknown:
                raise Refused(400, f"unknown field(s) {unknown}")
            overrides = check_overrides(body.get("overrides"), config.allowed_override_keys,
                                        exact_keys=config.allowed_exact_override_keys)
            input_dir = resolve_input_dir(config.data_root, body.get("input_dir"))
            previous = await run_in_threadpool(_previous_run, service, body.get("previous_run_id"),
                                               request.headers.get("x-api-key"))
            record = await run_in_threadpool(_create_from_dir, service, input_dir, overrides, idempotency_key,
                                             previous)
        elif content_type.startswith("multipart/form-data"):
            length = request.headers.get("content-length")
            if length is None:
                raise Refused(411, "a multipart submission needs a Content-Length")
            if int(length) > config.max_upload_mb * 1024 * 1024:
                raise Refused(413, f"the upload is larger than {config.max_upload_mb} MB")
            form = await request.form(max_files=64, max_fields=8)
            try:
                overrides_field = form.get("overrides")
                if overrides_field is not None and not isinstance(overrides_field, str):
                    raise Refused(400, "the overrides field must be a form field, not a file")
                try:
                    overrides_value = json.loads(overrides_field) if isinstance(overrides_field, str) else None
                except json.JSONDecodeError as exc:
                    raise Refused(400, "the overrides field must be a JSON array of key=value strings") from exc
                overrides = check_overrides(overrides_value, config.allowed_override_keys,
                                            exact_keys=config.allowed_exact_override_keys)
                previous_field = form.get("previous_run_id")
                if previous_field is not None and not isinstance(previous_field, str):
                    raise Refused(400, "the previous_run_id field must be a form field, not a file")
                previous = await run_in_threadpool(_previous_run, service, previous_field,
                                                   request.headers.get("x-api-key"))
                uploads = [item for item in form.getlist("files") if not isinstance(item, str)]
                if not uploads:
                    raise Refused(400, "no files: send the contract CSVs in the 'files' field")
                named = {}
                for upload in uploads:
                    name = contract_name(upload.filename)
                    if name in named:
                        raise Refused(400, f"upload {name!r} sent twice")
                    named[name] = upload.file
                record = await run_in_threadpool(_create_from_upload, service, named, overrides, idempotency_key,
                                                 previous)
            finally:
                await form.close()
        else:
            raise Refused(415 if content_type else 400, "send multipart/form-data (files) or application/json")
        response.headers["Location"] = f"/v1/runs/{record.run_id}"
        return _run_model(record, service.paths.home, config.data_root)

    # ------------------------------------------------------------------ runs

    @app.get("/v1/runs", tags=["runs"], response_model=RunPage, dependencies=[requires("read")],
             responses=errors_4xx)
    def list_runs(status: Annotated[str | None, Query(description="only runs with this status")] = None,
                  limit: Annotated[int, Query(ge=1)] = 50, page_token: str | None = None) -> RunPage:
        """Runs, newest first; ``next_page_token`` fetches the next page."""
        if status is not None and status not in STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
        before = None
        if page_token is not None:
            if not page_token.isdigit() or len(page_token) > 18:
                raise HTTPException(400, "page_token is not a token this service gave")
            before = int(page_token)
        size = min(limit, config.max_page_size)
        records = service.store.page(status=status, limit=size + 1, before_seq=before)
        token = str(records[size - 1].seq) if len(records) > size else None
        runs = [_run_model(r, service.paths.home, config.data_root) for r in records[:size]]
        return RunPage(runs=runs, next_page_token=token)

    @app.get("/v1/runs/{run_id}", tags=["runs"], response_model=Run, dependencies=[requires("read")],
             responses=errors_4xx)
    def get_run(run_id: str) -> Run:
        return _run_model(service.run_or_404(run_id), service.paths.home, config.data_root)

    @app.post("/v1/runs/{run_id}/cancel", tags=["runs"], response_model=Run, dependencies=[requires("submit")],
              responses=errors_4xx)
    def cancel_run(run_id: str) -> Run:
        """Stop the run's processes; it ends CANCELLED with no Stage 3 CSV. Repeating it, or
        cancelling a finished run, changes nothing."""
        service.run_or_404(run_id)
        record = service.executor.cancel(run_id)
        assert record is not None
        return _run_model(record, service.paths.home, config.data_root)

    @app.delete("/v1/runs/{run_id}", tags=["runs"], status_code=204, dependencies=[requires("submit")],
                responses={409: {"model": Problem}, **errors_4xx})
    def delete_run(run_id: str) -> Response:
        """Remove a finished run's files and record (its MLflow run stays). A run that a queued
        or running re-batch uses stays (409) until that re-batch ends."""
        record = service.run_or_404(run_id)
        if record.status not in FINAL_STATUSES:
            raise HTTPException(409, f"run {run_id} is {record.status}: cancel it first")
        users = service.store.delete(run_id)
        if users:
            raise Refused(409, f"run {run_id} is the previous run of re-batch(es) {', '.join(users)} that have not "
                               "finished: wait for them or cancel them first", code="PREVIOUS_RUN_IN_USE")
        shutil.rmtree(service.paths.run_dir(run_id), ignore_errors=True)
        shutil.rmtree(service.paths.upload_dir(run_id), ignore_errors=True)
        return Response(status_code=204)

    @app.get("/v1/runs/{run_id}/quality", tags=["results"], dependencies=[requires("read")], responses=errors_4xx)
    def run_quality(run_id: str) -> dict[str, Any]:
        """Every quality measure, the threshold verdicts and the per-batch quality."""
        found = runfiles.quality(service.output(service.run_or_404(run_id)))
        if found is None:
            raise HTTPException(404, f"run {run_id} has no quality report (not finished, or it failed)")
        return found

    @app.get("/v1/runs/{run_id}/resources", tags=["results"], dependencies=[requires("read")], responses=errors_4xx)
    def run_resources(run_id: str) -> dict[str, Any]:
        """Room and shift allocation: placement and utilisation per shift and room type."""
        record = service.run_or_404(run_id)
        found = runfiles.resources(service.output(record), Path(record.input_dir))
        if found is None:
            raise HTTPException(404, f"run {run_id} has no batches (not finished, or it failed)")
        return found

    @app.get("/v1/runs/{run_id}/errors", tags=["results"], dependencies=[requires("read")], responses=errors_4xx)
    def run_errors(run_id: str) -> dict[str, Any]:
        """The run's error and every validation problem (file, row, column, code)."""
        record = service.run_or_404(run_id)
        found = runfiles.errors(service.output(record))
        if found is not None:
            return found | {"error": _public_error(found["error"], service.paths.home, config.data_root)}
        return {"status": record.status.lower(), "error": _public_error(record.error, service.paths.home,
                                                                            config.data_root),
                "issues": [], "warnings": []}

    @app.get("/v1/runs/{run_id}/artifacts", tags=["results"], response_model=list[Artifact],
             dependencies=[requires("read")], responses=errors_4xx)
    def run_artifacts(run_id: str) -> list[Artifact]:
        """The run's files: name, bytes, sha256, rows (CSV records)."""
        return [Artifact(**entry) for entry in runfiles.manifest(service.output(service.run_or_404(run_id)))]

    @app.get("/v1/runs/{run_id}/artifacts.zip", tags=["results"], dependencies=[requires("read")],
             response_class=Response, responses=errors_4xx)
    def run_artifacts_zip(run_id: str) -> Response:
        record = service.run_or_404(run_id)
        return Response(runfiles.zip_bytes(service.output(record)), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="stage2-{run_id}.zip"'})

    @app.get("/v1/runs/{run_id}/artifacts/{name}", tags=["results"], dependencies=[requires("read")],
             response_class=FileResponse, responses=errors_4xx)
    def run_artifact(run_id: str, name: str) -> FileResponse:
        """One file, by its fixed name (``student_batches.csv``, ``quality_report.json``, ...)."""
        record = service.run_or_404(run_id)
        if name not in runfiles.ARTIFACTS:
            raise HTTPException(404, f"{name!r} is not an artifact name ({', '.join(runfiles.ARTIFACTS)})")
        path = service.output(record) / name
        if not path.is_file():
            raise HTTPException(404, f"run {run_id} has no {name}")
        return FileResponse(path, media_type=runfiles.ARTIFACTS[name], filename=name)

    @app.get("/v1/runs/{run_id}/report", tags=["results"], dependencies=[requires("read")],
             response_class=HTMLResponse, responses=errors_4xx)
    def run_report(run_id: str) -> HTMLResponse:
        """The run's audit report as an HTML page (the report without the notebook when the
        run skipped it)."""
        output = service.output(service.run_or_404(run_id))
        for name in ("audit_report.html", "report.html"):
            if (output / name).is_file():
                return HTMLResponse((output / name).read_text(encoding="utf-8"))
        raise HTTPException(404, f"run {run_id} has no report (not finished, or it failed)")

    # ------------------------------------------------------------------ the design document's paths

    app.add_api_route("/batch-process", submit, methods=["POST"], status_code=202, response_model=Run,
                      tags=["design aliases"], openapi_extra=submit_body, dependencies=[requires("submit")],
                      summary="Alias of POST /v1/runs")

    @app.get("/batch-process/{run_id}/status", tags=["design aliases"], response_model=Run,
             dependencies=[requires("read")], summary="Alias of GET /v1/runs/{run_id}")
    def alias_status(run_id: str) -> Run:
        return get_run(run_id)

    app.add_api_route("/batch-process/{run_id}/quality", run_quality, methods=["GET"], tags=["design aliases"],
                      dependencies=[requires("read")], summary="Alias of GET /v1/runs/{run_id}/quality")
    app.add_api_route("/batch-process/{run_id}/resources", run_resources, methods=["GET"], tags=["design aliases"],
                      dependencies=[requires("read")], summary="Alias of GET /v1/runs/{run_id}/resources")
    app.add_api_route("/batch-process/{run_id}/errors", run_errors, methods=["GET"], tags=["design aliases"],
                      dependencies=[requires("read")], summary="Alias of GET /v1/runs/{run_id}/errors")

    @app.get("/download/{run_id}/{file_type}", tags=["design aliases"], dependencies=[requires("read")],
             response_class=FileResponse, summary="A result file by type (batches, membership, enrollment, ...)")
    def alias_download(run_id: str, file_type: str) -> FileResponse:
        if file_type not in runfiles.DOWNLOAD_TYPES:
            raise HTTPException(404, f"file_type must be one of {', '.join(runfiles.DOWNLOAD_TYPES)}")
        return run_artifact(run_id, runfiles.DOWNLOAD_TYPES[file_type])

    return app


# ----------------------------------------------------------------------------- submissions


def _queue_full(service: Service) -> Refused:
    wait = service.config.retry_after_s
    return Refused(429, f"the queue is full ({service.config.max_queued} runs waiting); retry after {wait} s",
                   headers={"Retry-After": str(wait)})


def _check_queue(service: Service) -> None:
    """Refuse early, before an upload is stored; the store checks again atomically."""
    if service.store.count(QUEUED) >= service.config.max_queued:
        raise _queue_full(service)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _previous_run(service: Service, value: object, api_key: str | None) -> str | None:
    """The run a re-batch names by ``previous_run_id`` (``None``: not a re-batch). It needs the
    ``read`` scope (the re-batch reads that run's results), must exist (404
    ``PREVIOUS_RUN_NOT_FOUND``) and must have SUCCEEDED with its batches, not as a dry run (409
    ``PREVIOUS_RUN_NOT_USABLE``). The run's command line gets that run's output directory."""
    if value is None:
        return None
    authorise(service.keys, api_key, "read")
    if not isinstance(value, str) or not value.strip():
        raise Refused(400, "previous_run_id must be the run id of an earlier run of this service",
                      code="PREVIOUS_RUN_NOT_FOUND")
    record = service.store.get(value) if _is_run_id(value) else None
    if record is None:
        raise Refused(404, f"previous_run_id {value!r}: no such run", code="PREVIOUS_RUN_NOT_FOUND")
    if record.status != SUCCEEDED:
        raise Refused(409, f"previous_run_id {value!r}: the run is {record.status}; only a SUCCEEDED run can be "
                           "re-batched against", code="PREVIOUS_RUN_NOT_USABLE")
    if any(_DRY_RUN.match(override) for override in record.overrides):
        raise Refused(409, f"previous_run_id {value!r}: the run was a dry run (no batches to keep)",
                      code="PREVIOUS_RUN_NOT_USABLE")
    output = service.output(record)
    missing = [name for name in STAGE3_TABLES[:2] if not (output / f"{name}.csv").is_file()]
    if missing:
        raise Refused(409, f"previous_run_id {value!r}: the run has no {', '.join(missing)} (no batches to keep)",
                      code="PREVIOUS_RUN_NOT_USABLE")
    return record.run_id


def _new_record(source: str, input_dir: Path, overrides: list[str], request_digest: str,
                idempotency_key: str | None, run_id: str, previous_run_id: str | None) -> RunRecord:
    return RunRecord(run_id=run_id, status=QUEUED, created_at=now(), overrides=overrides, source=source,
                     input_dir=str(input_dir), request_digest=request_digest, idempotency_key=idempotency_key,
                     previous_run_id=previous_run_id)


def _request_parts(overrides: list[str], previous_run_id: str | None) -> list[str]:
    """What, besides the input, makes two submissions the same request."""
    return [*overrides, *([f"previous_run_id={previous_run_id}"] if previous_run_id else [])]


def _create(service: Service, record: RunRecord) -> RunRecord:
    try:
        created = service.store.create(record, max_queued=service.config.max_queued)
    except IdempotencyConflict as exc:
        raise Refused(409, f"Idempotency-Key was used for another request (run {exc.run_id})") from exc
    except QueueFull as exc:
        raise _queue_full(service) from exc
    except PreviousRunGone as exc:
        raise Refused(409, f"previous_run_id {str(exc)!r}: the run was deleted meanwhile",
                      code="PREVIOUS_RUN_NOT_USABLE") from exc
    if created.run_id == record.run_id:
        service.paths.run_dir(record.run_id).mkdir(parents=True, exist_ok=True)
        service.executor.wake()
    return created


def _create_from_dir(service: Service, input_dir: Path, overrides: list[str],
                     idempotency_key: str | None, previous_run_id: str | None = None) -> RunRecord:
    request_digest = _digest(["input_dir", str(input_dir), *_request_parts(overrides, previous_run_id)])
    if idempotency_key is not None and (existing := _replay(service, idempotency_key, request_digest)):
        return existing
    _check_queue(service)
    run_id = str(uuid.uuid4())
    return _create(service, _new_record("input_dir", input_dir, overrides, request_digest, idempotency_key, run_id,
                                        previous_run_id))


def _create_from_upload(service: Service, files: dict[str, Any], overrides: list[str],
                        idempotency_key: str | None, previous_run_id: str | None = None) -> RunRecord:
    run_id = str(uuid.uuid4())
    incoming = service.paths.uploads / f".incoming-{run_id}"
    incoming.mkdir(parents=True)
    try:
        limit = service.config.max_upload_mb * 1024 * 1024
        total = 0
        digests = []
        for name in sorted(files):
            digest = hashlib.sha256()
            with (incoming / name).open("wb") as target:
                while chunk := files[name].read(_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise Refused(413, f"the upload is larger than {service.config.max_upload_mb} MB")
                    digest.update(chunk)
                    target.write(chunk)
            digests.append(f"{name}:{digest.hexdigest()}")
        request_digest = _digest(["upload", *digests, *_request_parts(overrides, previous_run_id)])
        if idempotency_key is not None and (existing := _replay(service, idempotency_key, request_digest)):
            shutil.rmtree(incoming, ignore_errors=True)
            return existing
        _check_queue(service)
        final = service.paths.upload_dir(run_id)
        incoming.rename(final)
        incoming = final  # what to remove if the run is not created
        record = _create(service, _new_record("upload", final, overrides, request_digest, idempotency_key, run_id,
                                              previous_run_id))
        if record.run_id != run_id:  # a concurrent request with the same key won
            shutil.rmtree(final, ignore_errors=True)
        return record
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise


def _replay(service: Service, key: str, request_digest: str) -> RunRecord | None:
    """The run an earlier request with this key created (409 if that request differed)."""
    record = service.store.by_idempotency_key(key)
    if record is not None and record.request_digest != request_digest:
        raise Refused(409, f"Idempotency-Key was used for another request (run {record.run_id})")
    return record
