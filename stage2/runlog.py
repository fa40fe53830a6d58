"""Structured run logging (the design's ``logger_config``).

Every run writes ``stage2.jsonl`` into its directory: one JSON object per line with the time,
level, run id, stage, event and the event's fields (per-stage timings and memory, and an audit
trail of decisions: k per group, EAV overrides, relaxed rules, unplaced batches). A readable
``stage2.log`` is written too (by Hydra when running under it, else here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("stage2")
JSONL_FILE = "stage2.jsonl"
TEXT_LOG_FILE = "stage2.log"
#: LogRecord attributes that are not event fields
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonLinesHandler(logging.Handler):
    """Write each record as one JSON line; ``extra={...}`` fields become keys."""

    def __init__(self, path: Path, context: dict[str, Any]) -> None:
        super().__init__(level=logging.DEBUG)
        self.path = path
        self.context = context
        self._stream = path.open("a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            **self.context,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        try:
            self._stream.write(json.dumps(entry, default=str) + "\n")
            self._stream.flush()
        except Exception:  # logging must never break the run
            self.handleError(record)

    def close(self) -> None:
        self._stream.close()
        super().close()


def audit(event: str, message: str, *args: Any, level: int = logging.INFO, **fields: Any) -> None:
    """Log a decision or measurement: readable in the text log, structured in the JSON lines."""
    log.log(level, message, *args, extra={"event": event, **fields})


@contextmanager
def run_logging(output_dir: Path, context: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Attach the JSON-lines log (and the text log unless Hydra writes one) for one run.
    ``context`` (e.g. the run id, set once known) is added to every JSON line."""
    text_target = output_dir / TEXT_LOG_FILE
    root = logging.getLogger()
    handlers: list[logging.Handler] = [JsonLinesHandler(output_dir / JSONL_FILE, context)]
    if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == text_target for h in root.handlers):
        text = logging.FileHandler(text_target)
        text.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        handlers.append(text)
    previous = log.level
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    for handler in handlers:
        log.addHandler(handler)
    try:
        yield context
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        log.setLevel(previous)
