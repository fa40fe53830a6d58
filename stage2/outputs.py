"""Writing a run's outputs: the three Stage 3 CSVs (all or none), the quality report and the
resolved configuration."""

from __future__ import annotations

import errno
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
from stage2.errors import EnvironmentFault

#: free-text columns that a spreadsheet would evaluate if they began with a formula
#: character; identifiers are written exactly (Stage 3 joins on them) and flagged instead
TEXT_COLUMNS = ("batch_name", "student_name", "course_name", "faculty_name")
#: leading characters that make a spreadsheet cell a formula (OWASP CSV injection)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: the tables Stage 3 reads, in the order they are written
STAGE3_TABLES = ("student_batches", "batch_student_membership", "batch_course_enrollment")
#: a re-batch's table of students who moved, joined or left (written with the Stage 3 tables)
REBATCH_DIFF_TABLE = "rebatch_diff"
#: the faculty check's tables, per course and per teacher (written with the Stage 3 tables when
#: the check ran)
FACULTY_REPORT_TABLE = "faculty_report"
FACULTY_LOAD_TABLE = "faculty_load"
#: the run's record: metrics, thresholds, groups, warnings, configuration
QUALITY_REPORT = "quality_report.json"
#: per-batch quality (coherence, SSE, room use, broken soft rules)
BATCH_QUALITY = "batch_quality.csv"
#: written by a failed or interrupted run: status, error (code, where, message, fix), warnings
ERRORS_FILE = "errors.json"
#: written by a dry run: the plan and the room check
VALIDATION_REPORT = "validation_report.json"
RESOLVED_CONFIG = "resolved_config.yaml"
#: one row per (student, course, prerequisite) found wanting (stage2.prerequisites)
PREREQUISITE_REPORT = "prerequisite_report.csv"


OUTPUT_NOT_WRITABLE = "OUTPUT_NOT_WRITABLE"


def output_not_writable(directory: Path, error: OSError) -> EnvironmentFault:
    """The ``OUTPUT_NOT_WRITABLE`` fault (exit 5) of ``directory``, which failed with ``error``."""
    reason = error.strerror or str(error)
    if error.filename:
        reason += f": {error.filename}"
    return EnvironmentFault(f"the output directory {directory} cannot be written ({reason})",
                            code=OUTPUT_NOT_WRITABLE, where=str(directory), details={"output_dir": str(directory)})


def ensure_writable_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents) if missing and write and remove a file in it;
    raise :func:`output_not_writable` if that fails (a path under a file or an unwritable or
    read-only file system, a full disk)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise output_not_writable(directory, exc) from exc


#: errors of a file system that takes no more writes (full, over quota, read-only)
_NO_MORE_WRITES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_output_fault(error: OSError, directory: Path) -> bool:
    """Whether ``error`` is about writing into ``directory``: it names a file there, or it names
    none and says the file system takes no more writes (a write to an open file: a full disk)."""
    if error.filename is None:
        return error.errno in _NO_MORE_WRITES
    if isinstance(error.filename, int):
        return False
    return Path(os.path.abspath(error.filename)).is_relative_to(directory)


def neutralise_formulas(frame: pd.DataFrame, columns=TEXT_COLUMNS) -> pd.DataFrame:
    """Prefix ``'`` to free-text cells that begin with a formula character, so a spreadsheet
    shows them as text instead of executing them."""
    present = [c for c in columns if c in frame.columns]
    if not present:
        return frame
    frame = frame.copy()
    for column in present:
        text = frame[column].astype("string")
        risky = text.str.startswith(FORMULA_PREFIXES).fillna(False).to_numpy(dtype=bool)
        if risky.any():
            frame[column] = text.where(~risky, "'" + text)
    return frame


def formula_like_ids(frame: pd.DataFrame, columns) -> list[str]:
    """Identifier values a spreadsheet would treat as formulas (reported, not changed)."""
    found: list[str] = []
    for column in columns:
        if column in frame.columns:
            text = frame[column].astype("string")
            found += text[text.str.startswith(FORMULA_PREFIXES).fillna(False)].unique().tolist()[:10]
    return found


def write_tables_atomically(output_dir: Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """Write ``<name>.csv`` for every table, all or none.

    Free-text cells are neutralised against spreadsheet formula injection
    (:func:`neutralise_formulas`). Every file is first written completely into a staging
    directory next to the targets;
    only then are they moved into place with ``os.replace`` (atomic per file on POSIX). A
    failure while staging leaves no new CSV behind.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=output_dir))
    written: list[Path] = []
    try:
        for name, frame in tables.items():
            write_csv(neutralise_formulas(frame), staging / f"{name}.csv")
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
    """Delete any Stage 3 CSV (and ``rebatch_diff.csv``, the faculty tables, the prerequisite
    report) in ``output_dir`` (a failed run must leave none)."""
    for name in (*STAGE3_TABLES, REBATCH_DIFF_TABLE, FACULTY_REPORT_TABLE, FACULTY_LOAD_TABLE):
        (output_dir / f"{name}.csv").unlink(missing_ok=True)
    (output_dir / PREREQUISITE_REPORT).unlink(missing_ok=True)


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
