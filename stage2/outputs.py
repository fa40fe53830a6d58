"""Writing a run's outputs: the three Stage 3 CSVs (all or none), the quality report and the
resolved configuration."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from stage2.contract.csvio import write_csv

#: the tables Stage 3 reads, in the order they are written
STAGE3_TABLES = ("student_batches", "batch_student_membership", "batch_course_enrollment")
QUALITY_REPORT = "quality_report.json"
RESOLVED_CONFIG = "resolved_config.yaml"


def write_tables_atomically(output_dir: Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write ``<name>.csv`` for every table, all or none.

    Every file is first written completely into a staging directory next to the targets;
    only then are they moved into place with ``os.replace`` (atomic per file on POSIX). A
    failure while staging leaves no new CSV behind.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output_dir))
    written: list[Path] = []
    try:
        for name, frame in tables.items():
            write_csv(frame, staging / f"{name}.csv")
        for name in tables:
            target = output_dir / f"{name}.csv"
            os.replace(staging / f"{name}.csv", target)
            written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def remove_stage3_tables(output_dir: Path) -> None:
    """Delete any Stage 3 CSV in ``output_dir`` (a failed run must leave none)."""
    for name in STAGE3_TABLES:
        (output_dir / f"{name}.csv").unlink(missing_ok=True)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(payload), indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path
