"""The service's job store: one SQLite database (``<home>/runs.db``) holding every run's record,
so a restarted service still lists every run and continues the queued ones.

Each call opens its own short connection (the web server's threads and the executor thread
share nothing but the file); WAL mode lets readers proceed while the executor writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATUSES = (SUCCEEDED, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    stage TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    overrides TEXT NOT NULL,
    source TEXT NOT NULL,
    input_dir TEXT NOT NULL,
    input_digest TEXT,
    mlflow_run_id TEXT,
    error TEXT,
    idempotency_key TEXT UNIQUE,
    request_digest TEXT NOT NULL,
    pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    resumes INTEGER NOT NULL DEFAULT 0,
    resume_next INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    previous_run_id TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, seq);
"""
#: columns added after the first release: (name, declaration), added to an older store on open
_ADDED_COLUMNS = (("previous_run_id", "TEXT"),)


@dataclass
class RunRecord:
    """One run as the store holds it. Times are Unix seconds; ``error`` is the run's
    ``errors.json`` error (code, where, message, fix) when it failed."""

    run_id: str
    status: str
    created_at: float
    overrides: list[str]
    #: ``upload`` or ``input_dir``
    source: str
    input_dir: str
    request_digest: str
    seq: int = 0
    stage: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    input_digest: str | None = None
    mlflow_run_id: str | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    pid: int | None = None
    cancel_requested: bool = False
    resumes: int = 0
    resume_next: bool = False
    exit_code: int | None = None
    #: a re-batch: the run whose output it re-batches against
    previous_run_id: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunRecord:
        values = dict(row)
        values["overrides"] = json.loads(values["overrides"])
        values["error"] = json.loads(values["error"]) if values["error"] else None
        values["cancel_requested"] = bool(values["cancel_requested"])
        values["resume_next"] = bool(values["resume_next"])
        return cls(**values)


class QueueFull(Exception):
    """As many runs are waiting as the service admits."""


class IdempotencyConflict(Exception):
    """The idempotency key was used before for a different request."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class PreviousRunGone(Exception):
    """A re-batch's previous run is no longer a run it can use (deleted meanwhile)."""


class RunStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            present = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            for name, declaration in _ADDED_COLUMNS:
                if name not in present:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {declaration}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    def writable(self) -> bool:
        """Whether a write transaction can be taken now."""
        try:
            with self._connect() as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False

    def create(self, record: RunRecord, max_queued: int | None = None) -> RunRecord:
        """Insert a new run; with an idempotency key already used, return that run instead
        (:class:`IdempotencyConflict` if it was for a different request). With ``max_queued``,
        raise :class:`QueueFull` when that many runs wait already (checked in the same
        transaction, so concurrent submissions cannot overfill the queue)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if record.idempotency_key is not None:
                    row = db.execute("SELECT * FROM runs WHERE idempotency_key = ?",
                                     (record.idempotency_key,)).fetchone()
                    if row is not None:
                        existing = RunRecord.from_row(row)
                        if existing.request_digest != record.request_digest:
                            raise IdempotencyConflict(existing.run_id)
                        db.execute("COMMIT")
                        return existing
                if record.previous_run_id is not None:
                    row = db.execute("SELECT status FROM runs WHERE run_id = ?", (record.previous_run_id,)).fetchone()
                    if row is None or row[0] != SUCCEEDED:
                        raise PreviousRunGone(record.previous_run_id)
                if max_queued is not None:
                    waiting = db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (QUEUED,)).fetchone()[0]
                    if waiting >= max_queued:
                        raise QueueFull()
                db.execute(
                    "INSERT INTO runs (run_id, status, created_at, overrides, source, input_dir, idempotency_key, "
                    "request_digest, previous_run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.run_id, record.status, record.created_at, json.dumps(record.overrides), record.source,
                     record.input_dir, record.idempotency_key, record.request_digest, record.previous_run_id),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        created = self.get(record.run_id)
        assert created is not None
        return created

    def get(self, run_id: str) -> RunRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else RunRecord.from_row(row)

    def by_idempotency_key(self, key: str) -> RunRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE idempotency_key = ?", (key,)).fetchone()
        return None if row is None else RunRecord.from_row(row)

    def page(self, *, status: str | None = None, limit: int = 50, before_seq: int | None = None) -> list[RunRecord]:
        """Newest first; ``before_seq``: only runs created before that one (paging)."""
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM runs {where} ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
        return [RunRecord.from_row(row) for row in rows]

    def with_status(self, *statuses: str) -> list[RunRecord]:
        """Runs in any of ``statuses``, oldest first."""
        marks = ", ".join("?" for _ in statuses)
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY seq", statuses).fetchall()
        return [RunRecord.from_row(row) for row in rows]

    def count(self, status: str) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (status,)).fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | {row[0]: int(row[1]) for row in rows}

    def update(self, run_id: str, *, expect: Sequence[str] | None = None, **values: Any) -> bool:
        """Set columns of a run; with ``expect``, only while its status is one of those
        (returns whether the row changed)."""
        encoded: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("overrides", "error"):
                value = None if value is None else json.dumps(value)
            elif key in ("cancel_requested", "resume_next"):
                value = int(bool(value))
            encoded[key] = value
        assignments = ", ".join(f"{key} = ?" for key in encoded)
        sql = f"UPDATE runs SET {assignments} WHERE run_id = ?"
        params: list[Any] = [*encoded.values(), run_id]
        if expect:
            sql += f" AND status IN ({', '.join('?' for _ in expect)})"
            params += list(expect)
        with self._connect() as db:
            return db.execute(sql, params).rowcount > 0

    def delete(self, run_id: str) -> list[str]:
        """Remove a run's record unless a queued or running re-batch uses it: then nothing
        changes and the ids of those runs are returned."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                users = [row[0] for row in db.execute(
                    "SELECT run_id FROM runs WHERE previous_run_id = ? AND status IN (?, ?) ORDER BY seq",
                    (run_id, QUEUED, RUNNING))]
                if not users:
                    db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return users


def now() -> float:
    return time.time()
