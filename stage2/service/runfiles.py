"""A finished run's files as the API serves them: the artifact manifest (name, bytes, sha256,
rows), the quality and resource views, the error and validation problems, and the zip.

Files are served by fixed names only (:data:`ARTIFACTS`); nothing a client sends becomes a
path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from stage2.outputs import (
    BATCH_QUALITY,
    ERRORS_FILE,
    FACULTY_LOAD_TABLE,
    FACULTY_REPORT_TABLE,
    PREREQUISITE_REPORT,
    QUALITY_REPORT,
    REBATCH_DIFF_TABLE,
    VALIDATION_REPORT,
)

#: the files a client may fetch, by name, with their media types
ARTIFACTS: dict[str, str] = {
    "student_batches.csv": "text/csv",
    "batch_student_membership.csv": "text/csv",
    "batch_course_enrollment.csv": "text/csv",
    f"{REBATCH_DIFF_TABLE}.csv": "text/csv",
    f"{FACULTY_REPORT_TABLE}.csv": "text/csv",
    f"{FACULTY_LOAD_TABLE}.csv": "text/csv",
    PREREQUISITE_REPORT: "text/csv",
    QUALITY_REPORT: "application/json",
    BATCH_QUALITY: "text/csv",
    "metrics.csv": "text/csv",
    "report.txt": "text/plain",
    "report.html": "text/html",
    "audit_report.html": "text/html",
    VALIDATION_REPORT: "application/json",
    ERRORS_FILE: "application/json",
    "resolved_config.yaml": "text/yaml",
    "stage2.log": "text/plain",
}
#: the design document's ``/download/{run_id}/{file_type}`` names
DOWNLOAD_TYPES: dict[str, str] = {
    "batches": "student_batches.csv",
    "student_batches": "student_batches.csv",
    "membership": "batch_student_membership.csv",
    "batch_student_membership": "batch_student_membership.csv",
    "enrollment": "batch_course_enrollment.csv",
    "batch_course_enrollment": "batch_course_enrollment.csv",
    "quality": QUALITY_REPORT,
    "quality_report": QUALITY_REPORT,
    "report": "report.html",
    "rebatch_diff": f"{REBATCH_DIFF_TABLE}.csv",
    "faculty_report": f"{FACULTY_REPORT_TABLE}.csv",
    "faculty_load": f"{FACULTY_LOAD_TABLE}.csv",
    "prerequisite_report": PREREQUISITE_REPORT,
}
_CHUNK = 1 << 20


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _rows(path: Path) -> int | None:
    """Data rows of a CSV (records, not lines: a quoted field may hold a line break)."""
    if path.suffix != ".csv":
        return None
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


def manifest(output: Path) -> list[dict[str, Any]]:
    entries = []
    for name in ARTIFACTS:
        path = output / name
        if not path.is_file():
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        entries.append({"name": name, "bytes": path.stat().st_size, "sha256": digest.hexdigest(),
                        "rows": _rows(path), "media_type": ARTIFACTS[name]})
    return entries


def zip_bytes(output: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in manifest(output):
            archive.write(output / entry["name"], arcname=entry["name"])
    return buffer.getvalue()


def quality(output: Path) -> dict[str, Any] | None:
    """Every quality measure, the threshold verdicts and the per-batch quality."""
    report = read_json(output / QUALITY_REPORT)
    if report is None:
        return None
    batch_quality: list[dict[str, Any]] = []
    if (output / BATCH_QUALITY).is_file():
        frame = pd.read_csv(output / BATCH_QUALITY, dtype=str, keep_default_na=False)
        batch_quality = [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]
    return {"metrics": report.get("metrics", {}), "thresholds": report.get("thresholds", {}),
            "passed_thresholds": report.get("passed_thresholds"), "rule_breaches": report.get("rule_breaches", []),
            "warnings": report.get("warnings", []), "batch_quality": batch_quality}


def resources(output: Path, input_dir: Path) -> dict[str, Any] | None:
    """Room and shift allocation: placement, and students, seats and utilisation per shift and
    per room type (room types from the run's ``rooms.csv``)."""
    path = output / "student_batches.csv"
    if not path.is_file():
        return None
    batches = pd.read_csv(path, dtype=str, keep_default_na=False)
    placed = batches["room_id"] != ""
    batches["students"] = pd.to_numeric(batches["student_count"])
    batches["seats"] = pd.to_numeric(batches["capacity_allocated"].where(placed, "0"))
    room_types: dict[str, str] = {}
    rooms_csv = input_dir / "rooms.csv"
    if rooms_csv.is_file():
        rooms = pd.read_csv(rooms_csv, dtype=str, keep_default_na=False, sep=None, engine="python",
                            encoding="utf-8-sig")
        if {"room_id", "room_type"} <= set(rooms.columns):
            room_types = dict(zip(rooms["room_id"], rooms["room_type"], strict=True))
    batches["room_type"] = batches["room_id"].map(room_types).fillna("")

    def table(by: str) -> list[dict[str, Any]]:
        rows = []
        for key, group in batches.loc[placed].groupby(by, sort=True):
            seats = int(group["seats"].sum())
            rows.append({by: key, "batches": len(group), "students": int(group["students"].sum()), "seats": seats,
                         "utilization": float(group["students"].sum() / seats) if seats else None})
        return rows

    report = read_json(output / QUALITY_REPORT) or {}
    metrics = report.get("metrics", {})
    return {
        "batches": len(batches), "placed": int(placed.sum()), "unplaced": int((~placed).sum()),
        "unplaced_batches": batches.loc[~placed, "batch_code"].tolist(),
        "room_placement_rate": metrics.get("room_placement_rate"),
        "resource_utilization": metrics.get("resource_utilization"),
        "shift_preference_satisfaction": metrics.get("shift_preference_satisfaction"),
        "by_shift": table("shift_id"), "by_room_type": table("room_type"),
    }


def errors(output: Path) -> dict[str, Any] | None:
    """The run's error and every validation problem (file, row, column, code)."""
    record = read_json(output / ERRORS_FILE)
    if record is None:
        return None
    error = record.get("error") or {}
    issues = (error.get("details") or {}).get("issues", [])
    return {"status": record.get("status"), "error": {k: error.get(k) for k in ("code", "where", "message", "fix")},
            "issues": issues, "warnings": record.get("warnings", [])}
