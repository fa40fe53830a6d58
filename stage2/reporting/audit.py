"""The audit notebook's logic: read a finished run's files, re-check the data contract from
them, and build the tables and figures of the report.

``notebooks/audit_report.ipynb`` only calls these functions and displays what they return, so
the notebook stays readable and everything here is testable without a kernel.

Reading the output CSVs: every cell is read as text (``keep_default_na=False``, so an id such
as ``NA`` or ``null`` stays an id), an empty cell becomes null (an unplaced batch has an empty
``room_id``: it must be null, not ``""``, or two unplaced batches would look like one room given
twice), then the numeric and boolean columns are converted, a cell that is not a number being
an error naming the file, column and row.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stage2.contract.invariants import EXEMPT_GROUP_STATUSES
from stage2.contract.schemas import (
    BATCH_COURSE_ENROLLMENT_COLUMNS,
    EXTRA_BATCH_COLUMNS,
    MEMBERSHIP_COLUMNS,
    STUDENT_BATCHES_COLUMNS,
)
from stage2.outputs import BATCH_QUALITY, QUALITY_REPORT, REBATCH_DIFF_TABLE
from stage2.reporting.measures import format_value, measure_rows

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from stage2.contract import InstitutionData
    from stage2.metrics import QualityReport
    from stage2.prerequisites import PrerequisiteCheck

#: the files an audit reads, by table name
RUN_FILES = {
    "student_batches": "student_batches.csv",
    "batch_student_membership": "batch_student_membership.csv",
    "batch_course_enrollment": "batch_course_enrollment.csv",
    "batch_quality": BATCH_QUALITY,
}
#: a re-batch's ``rebatch_diff.csv``: every student who moved, joined or left (read only for a
#: run whose ``quality_report.json`` has a ``rebatch`` section)
REBATCH_DIFF_FILE = f"{REBATCH_DIFF_TABLE}.csv"
REBATCH_DIFF_COLUMNS = ("student_id", "previous_batch_id", "previous_batch_code", "batch_id", "batch_code",
                        "student_class", "reason")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "student_batches": STUDENT_BATCHES_COLUMNS + EXTRA_BATCH_COLUMNS,
    "batch_student_membership": MEMBERSHIP_COLUMNS,
    "batch_course_enrollment": BATCH_COURSE_ENROLLMENT_COLUMNS,
    "batch_quality": ("batch_code", "group_key", "student_count", "academic_coherence", "course_sse",
                      "utilization", "broken_rules"),
    REBATCH_DIFF_TABLE: REBATCH_DIFF_COLUMNS,
}
INTEGER_COLUMNS: dict[str, tuple[str, ...]] = {
    "student_batches": ("student_count", "semester", "capacity_allocated", "size_min", "size_max"),
    "batch_course_enrollment": ("expected_students", "priority_level", "sessions_per_week"),
    "batch_quality": ("student_count",),
}
FLOAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "batch_course_enrollment": ("credit_hours", "capacity_utilization", "credits_allocated"),
    "batch_quality": ("academic_coherence", "course_sse", "utilization"),
}
BOOLEAN_COLUMNS: dict[str, tuple[str, ...]] = {
    "student_batches": ("is_active",),
    "batch_student_membership": ("is_active",),
    "batch_course_enrollment": ("is_mandatory", "is_active"),
}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "t": True, "f": False}
#: measures recomputed from the tables and compared with quality_report.json (the rest:
#: runtimes and memory, which only the run itself can measure)
RECHECKED_MEASURES = (
    "n_students", "n_batches", "n_groups", "academic_coherence", "course_sse", "course_sse_per_student",
    "sections_per_batch", "size_balance", "size_bound_violations", "hard_constraint_violations",
    "constraint_satisfaction_rate", "shift_preference_satisfaction", "resource_utilization",
    "room_placement_rate", "silhouette_score", "prerequisite_violations",
)  # fmt: skip
#: a re-batch's student classes (``stage2.rebatching``), in the order the report lists them;
#: the first three are the ones whose students can move
REBATCH_CLASSES = ("unchanged", "changed", "forced", "new", "left")
MOVING_CLASSES = REBATCH_CLASSES[:3]
#: the reasons of ``rebatch_diff.csv``, for people
REBATCH_REASONS = {
    "moved_by_objective": "unchanged, yet moved: the clustering gained more than the move penalty",
    "course_set_changed": "course set changed since the previous run",
    "group_changed": "mixable group changed (a hard no_mix field such as programme or semester)",
    "batch_dissolved": "previous batch dissolved",
    "new_student": "not in the previous run",
    "inactive": "inactive in the input now",
    "not_in_input": "no longer in the input",
}
#: why a previous batch was dissolved, for people
DISSOLVED_REASONS = {
    "no_students_left": "none of its students is active any more",
    "group_gone": "none of its students is in its group any more (e.g. they all moved up a semester)",
    "group_below_min": "its group shrank below count × size_min: the batch with the fewest staying students goes",
}
#: rows a report table shows before saying how many more there are
MAX_ROWS = 50
#: groups the batch-size figure draws one by one
MAX_GROUPS_PLOTTED = 40


class RunFileError(ValueError):
    """A run file is missing or unreadable (names the file, column and rows)."""


# --------------------------------------------------------------------------------------------
# reading a run


def read_run_table(path: str | Path, table: str | None = None) -> pd.DataFrame:
    """Read one output CSV of a run with the contract's types (see the module docstring).

    ``table`` (default: the file's stem) selects the column types: ids and other text as
    ``string`` (null where the cell is empty), counts as ``Int64``/``int64``, ratios as
    ``Float64``, flags as ``boolean``.
    """
    path = Path(path)
    table = table or path.stem
    if not path.is_file():
        raise RunFileError(f"{path}: the run has no {path.name}")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], encoding="utf-8")
    missing = [c for c in REQUIRED_COLUMNS.get(table, ()) if c not in frame.columns]
    if missing:
        raise RunFileError(f"{path.name}: column(s) {', '.join(missing)} missing")
    for column in frame.columns:
        text = frame[column].astype("string")
        frame[column] = text.mask(text == "")
    for column in INTEGER_COLUMNS.get(table, ()):
        numbers = _numbers(frame[column], path.name, column)
        fractional = numbers.notna() & (numbers != numbers.round())
        if fractional.any():
            raise RunFileError(f"{path.name}, column {column}: not a whole number in row(s) {_rows(fractional)}")
        frame[column] = numbers.astype("Int64") if numbers.isna().any() else numbers.astype("int64")
    for column in FLOAT_COLUMNS.get(table, ()):
        frame[column] = _numbers(frame[column], path.name, column).astype("Float64")
    for column in BOOLEAN_COLUMNS.get(table, ()):
        lowered = frame[column].str.lower()
        flags = lowered.map(_BOOLEANS.get, na_action="ignore")
        bad = lowered.notna() & flags.isna()
        if bad.any():
            raise RunFileError(f"{path.name}, column {column}: not true/false in row(s) {_rows(bad)}")
        frame[column] = flags.astype("boolean")
    return frame


def _numbers(text: pd.Series, file: str, column: str) -> pd.Series:
    numbers = pd.to_numeric(text, errors="coerce").astype("Float64")
    bad = text.notna() & numbers.isna()
    if bad.any():
        raise RunFileError(f"{file}, column {column}: not a number in row(s) {_rows(bad)}")
    return numbers


def _rows(mask: pd.Series, limit: int = 10) -> str:
    """File rows (header = row 1) of the True cells of ``mask``."""
    rows = [int(i) + 2 for i in np.flatnonzero(mask.to_numpy(dtype=bool))]
    return ", ".join(map(str, rows[:limit])) + (f" ... ({len(rows)} in all)" if len(rows) > limit else "")


@dataclass
class AuditRun:
    """A finished run, read from its directory."""

    run_dir: Path
    report: dict[str, Any]
    batches: pd.DataFrame
    membership: pd.DataFrame
    batch_courses: pd.DataFrame
    batch_quality: pd.DataFrame

    @property
    def config(self) -> dict[str, Any]:
        return self.report.get("config") or {}

    @property
    def input_dir(self) -> Path:
        return Path(self.report.get("input_dir") or (self.config.get("data") or {}).get("input_dir") or "")

    @property
    def institution(self) -> str:
        """The institution's name: ``institution.name`` of the configuration, else the
        ``institution_id`` of the batches, else the input directory's name."""
        configured = self.config.get("institution") or {}
        if configured.get("name"):
            return str(configured["name"])
        ids = self.batches["institution_id"].dropna().unique().tolist() if "institution_id" in self.batches else []
        if ids:
            return ", ".join(map(str, ids[:3]))
        return self.input_dir.name or "institution"

    @cached_property
    def measures(self) -> pd.DataFrame:
        return measures_frame(self.report)

    @property
    def rebatch(self) -> dict[str, Any] | None:
        """The ``rebatch`` section of ``quality_report.json``; ``None``: a fresh run."""
        section = self.report.get("rebatch")
        return section if isinstance(section, dict) else None

    @cached_property
    def rebatch_diff(self) -> pd.DataFrame | None:
        """A re-batch's ``rebatch_diff.csv`` (:func:`read_run_table`); ``None``: a fresh run."""
        if self.rebatch is None:
            return None
        return read_run_table(self.run_dir / REBATCH_DIFF_FILE, REBATCH_DIFF_TABLE)


def load_run(run_dir: str | Path) -> AuditRun:
    """Read ``quality_report.json`` and the run's CSVs (see :func:`read_run_table`)."""
    run_dir = Path(run_dir).resolve()
    report_path = run_dir / QUALITY_REPORT
    if not report_path.is_file():
        raise RunFileError(f"{run_dir}: no {QUALITY_REPORT}: not a stage2 run directory, or the run failed")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{report_path}: not valid JSON ({exc})") from exc
    tables = {name: read_run_table(run_dir / file, name) for name, file in RUN_FILES.items()}
    return AuditRun(run_dir, report, tables["student_batches"], tables["batch_student_membership"],
                    tables["batch_course_enrollment"], tables["batch_quality"])


def load_inputs(run: AuditRun) -> InstitutionData:
    """The input directory the run read (named in its ``quality_report.json``), validated as
    the pipeline validates it."""
    from stage2.contract import load_institution

    if not run.input_dir.is_dir():
        raise RunFileError(f"the run's input directory {run.input_dir} no longer exists: the integrity of "
                           "the run cannot be re-checked without it")
    return load_institution(run.input_dir)


# --------------------------------------------------------------------------------------------
# integrity


def _named(values: Iterable[Any], limit: int = 10) -> str:
    values = list(values)
    return ", ".join(map(str, values[:limit])) + (f" ... ({len(values)} in all)" if len(values) > limit else "")


def _run_settings(run: AuditRun, data: InstitutionData) -> tuple[Any, Any]:
    """The run's configuration and settings (EAV overrides applied as of the run's ``as_of``)."""
    from stage2.config import build_settings
    from stage2.config.schema import to_stage2_config

    raw = dict(run.config)
    raw["as_of"] = run.report.get("as_of") or raw.get("as_of")
    config = to_stage2_config(raw)
    return config, build_settings(config, data)


def recheck_prerequisites(run: AuditRun, data: InstitutionData) -> PrerequisiteCheck:
    """The prerequisite check of the run's input under its configuration: which enrollments it
    batched (``exclude`` leaves some out) and its ``prerequisite_violations``."""
    from stage2.prerequisites import check_prerequisites

    config, settings = _run_settings(run, data)
    return check_prerequisites(data.active_students, data.active_enrollments, data.history, data.prerequisites,
                               settings, listed=config.enrollment.prerequisites_listed)


def recompute_quality(run: AuditRun, data: InstitutionData, check: PrerequisiteCheck | None = None) -> QualityReport:
    """The quality measures recomputed from the run's tables and its input, with the run's
    configuration (EAV overrides applied as of the run's ``as_of``); ``check``: the run's
    :func:`recheck_prerequisites` (computed when not given)."""
    from stage2.metrics import compute_quality

    config, settings = _run_settings(run, data)
    check = check if check is not None else recheck_prerequisites(run, data)
    return compute_quality(
        run.batches, run.membership, run.batch_courses, data.active_students, check.batched, settings,
        thresholds=config.metrics.thresholds, silhouette_sample_size=config.metrics.silhouette_sample_size,
        prerequisite_violations=check.violations,
    )


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)


def integrity_failures(run: AuditRun, data: InstitutionData) -> list[str]:
    """Every way the run's files break the data contract or disagree with its report, each a
    sentence naming the students, batches, files or measures involved (empty: all is well).

    1. the input directory is the one the run read (its digest);
    2. the contract invariants (:func:`stage2.contract.invariants.invariant_failures`): every
       active student in exactly one batch, ``student_count`` = membership rows, sizes within
       ``size_min``/``size_max`` except exempt groups, no (room, shift) twice,
       ``capacity_allocated`` >= ``student_count``, ``expected_students`` recounted from the
       membership and the input enrollments; and the output schemas;
    3. the hard rules, re-checked on the batches;
    4. the measures of ``quality_report.json`` and ``batch_quality.csv``, recomputed from the
       tables (runtimes and memory excepted);
    5. for a re-batch, ``rebatch_diff.csv`` and the ``rebatch`` figures (:func:`rebatch_failures`).

    Steps 3–4 run only when 1, 2 and 5 pass: on broken tables they would repeat the same fault.
    """
    from stage2.contract import validate_output_tables
    from stage2.contract.invariants import invariant_failures
    from stage2.errors import Stage2Error

    failures: list[str] = []
    recorded = run.report.get("data_digest")
    if recorded and data.digest != recorded:
        recorded_files = run.report.get("file_digests") or {}
        changed = sorted(f for f in set(recorded_files) | set(data.file_digests)
                         if recorded_files.get(f) != data.file_digests.get(f))
        failures.append(f"the input directory {run.input_dir} changed since the run (files {_named(changed)}): "
                        "the run cannot be re-checked against the data it read")
    active = data.active_students
    try:
        check = recheck_prerequisites(run, data)
    except Stage2Error as exc:
        return failures + [f"the prerequisite check the run passed fails on its input: {exc.message.strip()}"]
    failures += invariant_failures(run.batches, run.membership, run.batch_courses, active, check.batched)
    try:
        validate_output_tables(run.batches[list(STUDENT_BATCHES_COLUMNS)], run.membership, run.batch_courses)
    except Stage2Error as exc:
        failures.append(exc.message.strip())
    failures += rebatch_failures(run)
    if failures:
        return failures

    try:
        quality = recompute_quality(run, data, check)
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        return [f"the quality measures could not be recomputed from the tables: {exc}"]
    hard = [b for b in quality.rule_breaches if b["level"] == "hard"]
    n_hard = int(quality.metrics.get("hard_constraint_violations") or 0)
    if n_hard:
        failures.append(f"{n_hard} (batch, hard rule) checks fail: "
                        + _named(f"{b['batch_code']} ({b['rule']})" for b in hard))
    reported = run.report.get("metrics") or {}
    for name in RECHECKED_MEASURES:
        # a measure the report lacks came after the run's stage2 version: nothing to compare
        if name in quality.metrics and name in reported and not _same(reported.get(name), quality.metrics[name]):
            failures.append(f"quality_report.json's {name} is {format_value(reported.get(name), 6)} but the tables "
                            f"give {format_value(quality.metrics[name], 6)}")
    n_inactive = run.report.get("n_inactive_students")
    if n_inactive is not None and int(n_inactive) != data.n_inactive:
        failures.append(
            f"quality_report.json's n_inactive_students is {n_inactive} but the input has {data.n_inactive}"
        )
    failures += _batch_quality_failures(run.batch_quality, quality.batch_quality)
    return failures


def _batch_quality_failures(written: pd.DataFrame, recomputed: pd.DataFrame) -> list[str]:
    failures = []
    mine = recomputed.set_index("batch_code")
    theirs = written.set_index("batch_code")
    if set(mine.index) != set(theirs.index) or theirs.index.duplicated().any():
        return [f"{BATCH_QUALITY} does not list the run's batches exactly once: "
                + _named(sorted(set(mine.index) ^ set(theirs.index)) or theirs.index[theirs.index.duplicated()])]
    theirs = theirs.reindex(mine.index)
    for column in ("student_count", "academic_coherence", "course_sse"):
        a = theirs[column].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        b = mine[column].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)
        if bad.any():
            failures.append(f"{BATCH_QUALITY}'s {column} disagrees with the tables for {_named(mine.index[bad])}")
    rules = theirs["broken_rules"].fillna("").astype(str).map(lambda r: ";".join(sorted(filter(None, r.split(";")))))
    bad = rules.to_numpy() != mine["broken_rules"].astype(str).to_numpy()
    if bad.any():
        failures.append(f"{BATCH_QUALITY}'s broken_rules disagrees with the rule checks for {_named(mine.index[bad])}")
    return failures


def rebatch_failures(run: AuditRun) -> list[str]:
    """A re-batch's own contract, re-checked from the run's files (nothing for a fresh run):

    - ``rebatch_diff.csv`` lists each student at most once, with a known ``student_class``;
    - its rows agree with the membership: a student who moved or joined is in the batch (id and
      code) its row names, one who left is in none; only new students lack a previous batch, and
      a moved student's previous batch is not its batch now;
    - kept batches keep their codes: a previous batch still in ``student_batches.csv`` has the
      code the diff gives it; no dissolved batch's id or code is in use;
    - the ``rebatch`` figures of ``quality_report.json`` are the files' counts: new, left and moved
      students per class; the classes adding up to the students batched; the perturbation share;
      previous batches = kept + changed + dissolved; batches now = kept + changed + created.

    The codes are not held to a fresh run's numbering (``B01``..``Bn`` per group): a re-batch
    keeps the previous codes, leaves gaps where batches were dissolved and numbers new batches
    after the group's previous codes. Uniqueness of codes and ids is checked for every run (the
    contract invariants)."""
    figures = run.rebatch
    if figures is None:
        return []
    try:
        diff = run.rebatch_diff
    except RunFileError as exc:
        return [f"a re-batch without a readable {REBATCH_DIFF_FILE}: {exc}"]
    assert diff is not None
    failures: list[str] = []

    def text(column: str) -> np.ndarray:
        return diff[column].astype("string").fillna("").to_numpy(dtype=object)

    ids, classes = text("student_id"), text("student_class")
    now_id, now_code = text("batch_id"), text("batch_code")
    was_id, was_code = text("previous_batch_id"), text("previous_batch_code")
    batch_of = dict(zip(run.membership["student_id"].astype(str), run.membership["batch_id"].astype(str),
                        strict=True))
    code_of = dict(zip(run.batches["batch_id"].astype(str), run.batches["batch_code"].astype(str), strict=True))
    member_of = np.array([batch_of.get(s, "") for s in ids], dtype=object)

    def fail(mask: np.ndarray, what: str) -> None:
        if mask.any():
            failures.append(f"{REBATCH_DIFF_FILE}: {what}: {_named(ids[mask])}")

    duplicated = pd.Series(ids).duplicated().to_numpy()
    fail(duplicated, "students listed more than once")
    fail(~np.isin(classes, REBATCH_CLASSES), f"student_class not one of {', '.join(REBATCH_CLASSES)}")
    left, new = classes == "left", classes == "new"
    placed = ~left
    fail(placed & (now_id != member_of), "batch_id is not the student's batch in the membership")
    fail(placed & (now_id == member_of) & (now_code != np.array([code_of.get(b, "") for b in now_id], dtype=object)),
         "batch_code is not the code of the batch_id")
    fail(left & ((member_of != "") | (now_id != "") | (now_code != "")), "students who left are still in a batch")
    fail(new & ((was_id != "") | (was_code != "")), "new students with a previous batch")
    fail(~new & ((was_id == "") | (was_code == "")), "students other than new ones without a previous batch")
    fail(np.isin(classes, MOVING_CLASSES) & (was_id == now_id), "students listed as moved whose batch_id is unchanged")
    kept = np.array([b in code_of for b in was_id], dtype=bool)
    fail(kept & (np.array([code_of.get(b, "") for b in was_id], dtype=object) != was_code),
         "a kept batch's code changed (kept batches keep their codes)")

    dissolved = figures.get("dissolved_batches") or []
    reused = [d.get("batch_code") for d in dissolved
              if str(d.get("batch_id")) in code_of or str(d.get("batch_code")) in set(code_of.values())]
    if reused:
        failures.append(f"dissolved batches are still in student_batches.csv: {_named(reused)}")

    counts = pd.Series(classes).value_counts()
    n_students, n_batches = len(run.membership), len(run.batches)
    n_moved = int(np.isin(classes, MOVING_CLASSES).sum())
    expected: dict[str, Any] = {f"moved_{c}": int(counts.get(c, 0)) for c in MOVING_CLASSES}
    expected |= {"n_new": int(counts.get("new", 0)), "n_left": int(counts.get("left", 0)),
                 "batches_dissolved": len(dissolved),
                 "perturbation_share": (n_moved + int(counts.get("new", 0))) / n_students if n_students else 0.0}
    needed = ("n_unchanged", "n_changed", "n_forced", "n_previous_batches", "batches_kept", "batches_changed",
              "batches_created", *expected)
    missing = [k for k in needed if not isinstance(figures.get(k), int | float)]
    if missing:
        return failures + [f"quality_report.json's rebatch section lacks {_named(missing)}"]
    n_unchanged = int(figures["n_unchanged"])
    expected["moved_unchanged_share"] = expected["moved_unchanged"] / n_unchanged if n_unchanged else 0.0
    n_previous, n_kept = int(figures["n_previous_batches"]), int(figures["batches_kept"])
    expected["batches_kept_share"] = n_kept / n_previous if n_previous else 1.0
    for name, value in expected.items():
        if name in figures and not _same(figures[name], value):
            failures.append(f"quality_report.json's rebatch.{name} is {format_value(figures[name], 6)} but the files "
                            f"give {format_value(value, 6)}")
    classified = n_unchanged + int(figures["n_changed"]) + int(figures["n_forced"]) + int(figures["n_new"])
    if classified != n_students:
        failures.append(f"quality_report.json's rebatch classes (unchanged + changed + forced + new) add up to "
                        f"{classified:,}, not the {n_students:,} students batched")
    n_still = n_kept + int(figures["batches_changed"])
    if n_still + int(figures["batches_dissolved"]) != n_previous:
        failures.append(f"quality_report.json's rebatch figures: {n_still:,} previous batches kept + "
                        f"{figures['batches_dissolved']} dissolved is not the {n_previous:,} previous batches")
    if n_still + int(figures["batches_created"]) != n_batches:
        failures.append(f"quality_report.json's rebatch figures: {n_still:,} previous batches kept + "
                        f"{figures['batches_created']} created is not the {n_batches:,} batches of the run")
    return failures


def assert_integrity(run: AuditRun, data: InstitutionData) -> pd.DataFrame:
    """Raise ``AssertionError`` listing every integrity failure (:func:`integrity_failures`);
    else return the table of checks passed, for the report."""
    failures = integrity_failures(run, data)
    if failures:
        raise AssertionError(f"integrity check of {run.run_dir} failed ({len(failures)} problem(s)):\n"
                             + "\n".join(f"- {f}" for f in failures))
    checks = [
        ("input unchanged since the run", f"digest {str(data.digest)[:16]}…"),
        ("every active student in exactly one batch", f"{len(run.membership):,} students"),
        ("student_count = membership rows", f"{len(run.batches):,} batches"),
        ("sizes within size_min/size_max (exempt groups excepted)", "yes"),
        ("no (room, shift) given twice; rooms large enough", f"{int(run.batches['room_id'].notna().sum()):,} placed"),
        ("expected_students recounted from members × input enrollments", f"{len(run.batch_courses):,} rows"),
        ("output tables match the contract's schemas", "yes"),
        ("hard rules kept", "yes"),
        ("reported measures recomputed from the tables", f"{len(RECHECKED_MEASURES)} measures"),
    ]
    if run.rebatch is not None and run.rebatch_diff is not None:
        checks += [
            (f"re-batch: {REBATCH_DIFF_FILE} agrees with the membership", f"{len(run.rebatch_diff):,} rows"),
            ("re-batch: kept batches keep their codes; dissolved codes not in use",
             f"{len(run.rebatch.get('dissolved_batches') or []):,} dissolved"),
            ("re-batch: the rebatch figures of quality_report.json recounted from the files", "yes"),
        ]
    return pd.DataFrame(checks, columns=["check", "result"])


# --------------------------------------------------------------------------------------------
# report tables


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (every value shown may come from user data)."""
    return html.escape("" if value is None else str(value))


def title_html(run: AuditRun, mlflow_run_id: str | None = None) -> str:
    """The report's heading: institution, run id, as_of, verdict."""
    report = run.report
    run_id = mlflow_run_id or report.get("run_id") or "(not tracked)"
    passed = report.get("passed_thresholds")
    verdict = ("<span style='color:#1a7f37'>meets every threshold</span>" if passed
               else "<span style='color:#c62828'>below a threshold: see the quality measures</span>")
    rows = [
        ("Run", run_id), ("As of", report.get("as_of")), ("Generated", report.get("generated_at")),
        ("Run directory", run.run_dir), ("stage2", report.get("stage2_version")),
    ]
    table = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{esc(k)}</th><td>{esc(v)}</td></tr>"
                    for k, v in rows)
    return (f"<h1>Student batching audit — {esc(run.institution)}</h1>"
            f"<p><b>{int(report.get('metrics', {}).get('n_students') or 0):,}</b> students in "
            f"<b>{int(report.get('metrics', {}).get('n_batches') or 0):,}</b> batches; {verdict}.</p>"
            f"<table>{table}</table>")


def config_frame(run: AuditRun) -> pd.DataFrame:
    """The settings a timetabling office asks about, one per row."""
    c = run.config
    bs, w = c.get("batch_size") or {}, c.get("weights") or {}
    rows = [
        ("input directory", run.input_dir),
        ("algorithm", (c.get("algorithm") or {}).get("name")),
        ("batch size min / target / max", f"{bs.get('min')} / {bs.get('target')} / {bs.get('max')}"),
        ("weights homogeneity / balance / size", f"{w.get('homogeneity')} / {w.get('balance')} / {w.get('size')}"),
        ("constraint set", (c.get("constraints") or {}).get("name")),
        ("rules in force", len(run.report.get("rules") or [])),
        ("enrollment shared threshold", (c.get("enrollment") or {}).get("shared_threshold")),
        ("rooms allocated", (c.get("resources") or {}).get("allocate_rooms")),
        ("allocation method", (run.report.get("allocation") or {}).get("method")),
        ("seed", c.get("seed")),
        ("strict", c.get("strict")),
        ("inactive students (not batched)", run.report.get("n_inactive_students")),
        ("tracking", _tracking(run.report.get("tracking"))),
    ]
    return pd.DataFrame([(k, "" if v is None else str(v)) for k, v in rows], columns=["setting", "value"])


def _tracking(section: Any) -> str | None:
    """``tracked in STORE`` | ``off`` | ``unavailable: REASON`` (``quality_report.json``'s
    ``tracking``); ``None`` for a report without the section."""
    if not isinstance(section, dict):
        return None
    status = section.get("status")
    if status == "tracked":
        return f"tracked in {section.get('store')} (MLflow run {section.get('run_id')})"
    if status == "unavailable":
        return f"unavailable, not tracked: {section.get('reason')}"
    return str(status)


def rules_frame(run: AuditRun) -> pd.DataFrame:
    """The constraint rules the run applied (YAML and EAV), one per row."""
    columns = ["name", "field_name", "rule_type", "level", "weight", "threshold", "entity_type", "entity_id", "source"]
    frame = pd.DataFrame(run.report.get("rules") or [], columns=columns)
    for column in ("weight", "threshold"):
        frame[column] = [format_value(v, 2) if v is not None else "" for v in frame[column].astype(object)]
    frame = frame.rename(columns={"entity_type": "scope", "entity_id": "scope id"})
    return frame.astype(object).fillna("")


def digest_frame(run: AuditRun) -> pd.DataFrame:
    """The sha256 of every input file the run read, and of the whole input."""
    rows = sorted((run.report.get("file_digests") or {}).items())
    rows.append(("(whole input)", run.report.get("data_digest")))
    return pd.DataFrame(rows, columns=["file", "sha256"])


def measures_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """Every quality measure: value, the run's threshold and verdict, the design's threshold
    and verdict (see :mod:`stage2.reporting.measures`)."""
    rows = measure_rows(report)
    return pd.DataFrame(
        {
            "measure": [r.name for r in rows],
            "value": [format_value(r.value) for r in rows],
            "target": [r.target for r in rows],
            "verdict": [r.verdict for r in rows],
            "design threshold": ["" if r.design_threshold is None else
                                 ("= 0" if r.direction == "zero" else f">= {r.design_threshold:g}") for r in rows],
            "meets design": ["" if r.meets_design is None else ("yes" if r.meets_design else "NO") for r in rows],
            "meaning": [r.meaning for r in rows],
            "responsible (first batches)": [", ".join(r.responsible[:5]) for r in rows],
        }
    )


def styled(frame: pd.DataFrame, *, max_rows: int = MAX_ROWS, caption: str | None = None):
    """``frame`` as an escaped HTML table for the report (pass green, FAIL red), at most
    ``max_rows`` rows with a note of how many more."""
    shown = frame.head(max_rows)
    if len(frame) > max_rows:
        more = f"first {max_rows} of {len(frame):,} rows"
        caption = f"{caption} ({more})" if caption else more

    def colour(value: Any) -> str:
        if value in ("pass", "yes"):
            return "color:#1a7f37;font-weight:bold"
        if value in ("FAIL", "NO"):
            return "color:#c62828;font-weight:bold"
        return ""

    style = shown.style.hide(axis="index").format(escape="html", na_rep="")
    style = style.map(colour)
    if caption:
        style = style.set_caption(esc(caption))
    return style.set_table_styles([{"selector": "th", "props": "text-align:left"},
                                   {"selector": "td", "props": "text-align:left;padding:2px 10px"}])


def groups_frame(run: AuditRun) -> pd.DataFrame:
    """Mixable groups: students, batches, their sizes (as formed, and as planned by the sizing
    stage before the clustering traded size for coherence), bounds, status; groups needing
    attention (undersized, no feasible count) first."""
    groups = run.report.get("groups") or []
    actual = run.batches.groupby("group_key", sort=False)["student_count"].agg(lambda s: ", ".join(map(str, s)))
    frame = pd.DataFrame(
        {
            "group": [g.get("key") for g in groups],
            "students": [g.get("n_students") for g in groups],
            "batches": [g.get("n_batches") for g in groups],
            "batch sizes": [actual.get(g.get("key"), "") for g in groups],
            "planned sizes": [", ".join(map(str, g.get("batch_sizes") or [])) for g in groups],
            "min / target / max": [" / ".join(map(str, g.get("bounds") or [])) for g in groups],
            "status": [g.get("status") for g in groups],
            "reason": [g.get("reason") or "" for g in groups],
        }
    )
    attention_last = (frame["status"] == "ok").to_numpy()
    return frame.iloc[np.argsort(attention_last, kind="stable")].reset_index(drop=True)


def worst_coherence(run: AuditRun, n: int = 10) -> pd.DataFrame:
    """The ``n`` batches whose members attend the fewest of their course demands together,
    with their courses attended apart (``PARTIAL``)."""
    quality = run.batch_quality
    code_of = dict(zip(run.batches["batch_id"], run.batches["batch_code"], strict=True))
    partial = run.batch_courses.loc[run.batch_courses["enrollment_status"] == "PARTIAL"]
    apart = partial.groupby(partial["batch_id"].map(code_of)).size()
    worst = quality.sort_values(["academic_coherence", "batch_code"]).head(n)
    return pd.DataFrame(
        {
            "batch": worst["batch_code"].to_numpy(),
            "group": worst["group_key"].to_numpy(),
            "students": worst["student_count"].to_numpy(),
            "coherence": [format_value(float(v)) for v in worst["academic_coherence"]],
            "course SSE": [format_value(float(v), 2) for v in worst["course_sse"]],
            "courses attended apart": apart.reindex(worst["batch_code"]).fillna(0).astype(int).to_numpy(),
        }
    )


def placement_frame(run: AuditRun) -> pd.DataFrame:
    """Rooms and shifts: placement, utilisation, shift preferences, unplaced batches."""
    metrics = run.report.get("metrics") or {}
    unplaced = run.batches.loc[run.batches["room_id"].isna(), "batch_code"]
    rows = [
        ("batches with a room and shift", f"{len(run.batches) - len(unplaced):,} of {len(run.batches):,}"),
        ("room_placement_rate", format_value(metrics.get("room_placement_rate"))),
        ("resource_utilization (seats filled)", format_value(metrics.get("resource_utilization"))),
        ("shift_preference_satisfaction", format_value(metrics.get("shift_preference_satisfaction"))),
        ("rooms used", f"{run.batches['room_id'].nunique():,}"),
        ("unplaced batches", _named(unplaced) if len(unplaced) else "none"),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


def shift_preferences(run: AuditRun, data: InstitutionData) -> pd.DataFrame:
    """Students by preferred shift (rows) and the shift their batch got (columns), with the
    share who got their preferred shift."""
    students = data.active_students[["student_id", "preferred_shift"]].astype({"student_id": "string"})
    shift_of_batch = dict(zip(run.batches["batch_id"], run.batches["shift_id"], strict=True))
    got = run.membership["batch_id"].map(shift_of_batch)
    frame = pd.DataFrame({"student_id": run.membership["student_id"].to_numpy(), "assigned": got.to_numpy()})
    frame = frame.merge(students, on="student_id", how="left")
    frame["preferred"] = frame["preferred_shift"].astype("string").fillna("(none)")
    frame["assigned"] = frame["assigned"].astype("string").fillna("(unplaced)")
    table = pd.crosstab(frame["preferred"], frame["assigned"])
    table.index.name, table.columns.name = "preferred shift", "assigned shift"
    share = [table.at[p, p] / table.loc[p].sum() if p in table.columns and table.loc[p].sum() else math.nan
             for p in table.index]
    table["got preferred"] = [("—" if math.isnan(s) else f"{s:.0%}") for s in share]
    return table.reset_index()


def breaches_by_rule(run: AuditRun) -> pd.DataFrame:
    """Soft- and hard-rule breaches per rule: how many batches break it, which."""
    by_batch = _breaches(run)
    if by_batch.empty:
        return pd.DataFrame(
            columns=["rule", "level", "rule type", "batches breaking it", "share of batches", "batches"]
        )
    rules = {r.get("name"): r for r in run.report.get("rules") or []}
    grouped = by_batch.groupby("rule", sort=True)["batch"].agg(list)
    return pd.DataFrame(
        {
            "rule": grouped.index,
            "level": [(rules.get(r) or {}).get("level", "") for r in grouped.index],
            "rule type": [(rules.get(r) or {}).get("rule_type", "") for r in grouped.index],
            "batches breaking it": [len(b) for b in grouped],
            "share of batches": [f"{len(b) / max(len(run.batches), 1):.0%}" for b in grouped],
            "batches": [_named(b, 8) for b in grouped],
        }
    )


def breaches_by_batch(run: AuditRun) -> pd.DataFrame:
    """One row per batch breaking a rule, one column per rule (``✗`` = broken)."""
    by_batch = _breaches(run)
    if by_batch.empty:
        return pd.DataFrame(columns=["batch"])
    table = pd.crosstab(by_batch["batch"], by_batch["rule"]).astype(bool)
    table = table.map(lambda broken: "✗" if broken else "")
    table.columns.name = None
    return table.reset_index()


def _breaches(run: AuditRun) -> pd.DataFrame:
    rules = run.batch_quality["broken_rules"].fillna("").astype(str).str.split(";")
    frame = pd.DataFrame({"batch": run.batch_quality["batch_code"].to_numpy(), "rule": rules.to_numpy()})
    frame = frame.explode("rule")
    return frame.loc[frame["rule"].notna() & (frame["rule"] != "")].reset_index(drop=True)


def overrides_frame(run: AuditRun) -> pd.DataFrame:
    """The EAV overrides the run applied."""
    overrides = run.report.get("eav_overrides") or []
    return pd.DataFrame(
        {
            "parameter": [o.get("parameter_code") for o in overrides],
            "entity": [f"{o.get('entity_type')} {o.get('entity_id')}" for o in overrides],
            "value": [json.dumps(o.get("value")) if isinstance(o.get("value"), (dict, list)) else str(o.get("value"))
                      for o in overrides],
            "value_id": [o.get("value_id") for o in overrides],
        }
    )


def _count(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _sse(value: Any) -> str:
    return "—" if value is None else f"{float(value):,.1f}"


def _share(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{float(value):.{digits}%}"


def _number(value: Any) -> str:
    return "—" if value is None else f"{float(value):g}"


def rebatch_frame(run: AuditRun) -> pd.DataFrame | None:
    """The figures of a re-batch (the ``rebatch`` section of ``quality_report.json``), one per
    row with what it means; ``None`` for a fresh run."""
    r = run.rebatch
    if r is None:
        return None
    n_students = len(run.membership)
    moved = sum(int(r.get(f"moved_{c}") or 0) for c in MOVING_CLASSES)
    n_previous = int(r.get("n_previous_batches") or 0)

    def with_moved(student_class: str) -> str:
        n, n_moved = int(r.get(f"n_{student_class}") or 0), int(r.get(f"moved_{student_class}") or 0)
        return f"{n:,}; {n_moved:,} moved" + (f" ({n_moved / n:.1%})" if n else "")

    sse, previous_sse, fresh_sse = r.get("course_sse"), r.get("course_sse_previous"), r.get("course_sse_fresh")
    this_run = _sse(sse)
    if sse is not None and previous_sse:
        this_run += f" ({float(sse) / float(previous_sse) - 1:+.1%} vs. the previous membership)"
    if sse is not None and fresh_sse:
        this_run += f"; {float(sse) / float(fresh_sse):.3f} × a fresh run's"
    frozen = r.get("frozen_groups") or []
    rows = [
        ("previous run", r.get("previous_run"), "rebatch.previous_run: the batching this run started from"),
        ("students batched now", f"{n_students:,}", "every active student of the input"),
        ("unchanged students", with_moved("unchanged"),
         "same group and courses as before, previous batch kept; moved only where the clustering gained more than "
         "rebatch.move_penalty"),
        ("changed students", with_moved("changed"), "course set changed; moved at rebatch.changed_move_penalty"),
        ("forced students", with_moved("forced"), "group changed, or previous batch dissolved: they must move"),
        ("new students", _count(r.get("n_new")), "not in the previous run"),
        ("students who left", _count(r.get("n_left")), "in the previous run, not batched now (inactive or gone)"),
        ("perturbation share", _share(r.get("perturbation_share"), 2),
         f"(moved + new) / students = ({moved:,} + {int(r.get('n_new') or 0):,}) / {n_students:,}"),
        ("previous batches", f"{n_previous:,}", "batches of the previous run"),
        ("batches kept", f"{_count(r.get('batches_kept'))} ({_share(r.get('batches_kept_share'))} of the previous)",
         "previous batches kept with their code, id, room and shift"),
        ("batches changed", _count(r.get("batches_changed")), "previous batches kept with another room or shift"),
        ("kept batches with member changes", _count(r.get("batches_with_member_changes")),
         "previous batches someone joined or left"),
        ("batches created", _count(r.get("batches_created")), "new codes, numbered after the group's previous ones"),
        ("batches dissolved", _count(r.get("batches_dissolved")), "previous codes retired, never reused (below)"),
        ("room changes", _count(r.get("room_changes")), "kept batches given another home room"),
        ("shift changes", _count(r.get("shift_changes")), "kept batches given another shift"),
        ("course SSE, previous membership", _sse(previous_sse),
         "the continuing students in their previous batches, with their courses now (new students left out)"),
        ("course SSE, this run", this_run, "lower is better"),
        ("course SSE, fresh run", _sse(fresh_sse) if fresh_sse is not None else "not computed",
         "a fresh clustering of the same input (rebatch.fresh_reference)"),
        ("move penalties", f"{_number(r.get('move_penalty'))} unchanged, {_number(r.get('changed_move_penalty'))} "
         f"changed; × {_number(r.get('penalty_factor'))}",
         "rebatch.move_penalty, rebatch.changed_move_penalty; the factor rebatch.max_moved needed"),
        ("frozen groups", _named(frozen) if frozen else "none", "groups whose unchanged students were frozen to meet "
         "rebatch.max_moved"),
    ]
    return _figures_frame(rows)


def prerequisites_frame(run: AuditRun) -> pd.DataFrame | str:
    """The prerequisite check's figures (the ``prerequisites`` section of
    ``quality_report.json``), one per row with what it means; a note when the run has none."""
    p = run.report.get("prerequisites")
    if not isinstance(p, dict):
        return note_html("no prerequisite check in this run's report (a run of an older stage2)")
    if p.get("policy") == "off" and not p.get("program_policies"):
        return note_html("not checked: enrollment.prerequisites=off")
    programmes = p.get("program_policies") or {}
    rows = [
        ("policy", p.get("policy"), "enrollment.prerequisites: off | report | exclude | strict"),
        ("programmes with their own policy",
         ", ".join(f"{k}: {v}" for k, v in sorted(programmes.items())) or "none", "EAV enrollment.prerequisites"),
        ("prerequisite_violations", _count(p.get("violations")),
         "current (student, course) enrollments lacking a mandatory prerequisite (or its minimum grade)"),
        ("excluded", _count(p.get("excluded")), "(student, course) pairs left out of the batching (exclude)"),
        ("grades not checkable", _count(p.get("grades_not_checkable")),
         "prerequisites taken, with a minimum grade the history cannot show"),
        ("rows listed", _count(p.get("n_rows")), str(p.get("file") or "prerequisite_report.csv")),
    ]
    return _figures_frame(rows)


def prerequisite_rows(run: AuditRun) -> pd.DataFrame | None:
    """The first rows of ``prerequisite_report.csv`` (as many as ``quality_report.json``
    lists); ``None`` when the run has no prerequisite section."""
    p = run.report.get("prerequisites")
    if not isinstance(p, dict):
        return None
    return pd.DataFrame(p.get("rows") or [])


def faculty_frame(run: AuditRun) -> pd.DataFrame | str:
    """The faculty check's figures (the ``faculty`` section of ``quality_report.json``), one
    per row with what it means; a note saying why the check did not run when it did not."""
    f = run.report.get("faculty")
    if not isinstance(f, dict):
        return note_html("no faculty check in this run's report (a run of an older stage2)")
    if not f.get("checked"):
        return note_html(f"not checked: {f.get('reason') or 'no reason recorded'}")
    rows = [
        ("hours per session", _number(f.get("session_hours")), "resources.faculty.session_hours"),
        ("minimum competency", _number(f.get("min_competency")), "resources.faculty.min_competency"),
        ("courses with sections", _count(f.get("n_courses")), "courses some batch attends together (ENROLLED)"),
        ("sections", _count(f.get("n_sections")), "(batch, course) rows with status ENROLLED"),
        ("faculty", f"{_count(f.get('n_faculty'))} ({_count(f.get('n_active_faculty'))} active)", "faculty.csv"),
        ("section-hours needed", _number(f.get("hours_needed")), "a week: sessions per week × hours per session"),
        ("section-hours covered", _number(f.get("hours_covered")),
         "a maximum flow of course hours to competent faculty, each up to max_hours_per_week"),
        ("section-hours missing", _number(f.get("hours_missing")), "needed − covered: no assignment covers them"),
        ("faculty_coverage", _share(f.get("coverage")), "covered ÷ needed"),
        ("courses short", _count(f.get("n_courses_short")), "courses missing hours (faculty_report.csv)"),
        ("faculty at capacity", _count(f.get("faculty_at_capacity")), "teachers the flow gives all their hours"),
    ]
    return _figures_frame(rows)


def faculty_short_frame(run: AuditRun) -> pd.DataFrame | None:
    """The courses the faculty cannot fully cover, most hours missing first (at most the
    ones ``quality_report.json`` lists; all of them in ``faculty_report.csv``); ``None``
    when the check did not run."""
    f = run.report.get("faculty")
    if not isinstance(f, dict) or not f.get("checked"):
        return None
    return pd.DataFrame(f.get("courses_short") or [])


def _figures_frame(rows: list[tuple[str, Any, str]]) -> pd.DataFrame:
    """``(figure, value, meaning)`` rows as the notebook's figure table (``None`` shown empty)."""
    return pd.DataFrame([(k, "" if v is None else str(v), m) for k, v, m in rows],
                        columns=["figure", "value", "meaning"])


def dissolved_frame(run: AuditRun) -> pd.DataFrame | None:
    """The previous batches a re-batch dissolved, with why; ``None`` for a fresh run."""
    if run.rebatch is None:
        return None
    dissolved = run.rebatch.get("dissolved_batches") or []
    return pd.DataFrame(
        {
            "batch": [d.get("batch_code") for d in dissolved],
            "batch_id": [d.get("batch_id") for d in dissolved],
            "reason": [d.get("reason") for d in dissolved],
            "meaning": [DISSOLVED_REASONS.get(str(d.get("reason")), "") for d in dissolved],
        },
        columns=["batch", "batch_id", "reason", "meaning"],
    )


def rebatch_diff_summary(run: AuditRun) -> pd.DataFrame | None:
    """``rebatch_diff.csv``'s rows counted by (student_class, reason), classes in the order
    unchanged, changed, forced, new, left; ``None`` for a fresh run."""
    diff = run.rebatch_diff
    if diff is None:
        return None
    keys = pd.DataFrame({"class": diff["student_class"].astype("string").fillna(""),
                         "reason": diff["reason"].astype("string").fillna("")})
    counts = keys.value_counts(sort=False).rename("students").reset_index()
    rank = {c: i for i, c in enumerate(REBATCH_CLASSES)}
    counts = counts.assign(_rank=counts["class"].map(lambda c: rank.get(c, len(rank))))
    counts = counts.sort_values(["_rank", "reason"], kind="stable").drop(columns="_rank").reset_index(drop=True)
    counts["students"] = counts["students"].astype(int)
    counts["what happened"] = counts["class"].map(lambda c: "moved" if c in MOVING_CLASSES
                                                  else {"new": "joined", "left": "left"}.get(c, ""))
    counts["meaning"] = counts["reason"].map(lambda r: REBATCH_REASONS.get(r, ""))
    return counts[["class", "reason", "what happened", "students", "meaning"]]


def moved_students(run: AuditRun) -> pd.DataFrame | None:
    """The students a re-batch moved (classes unchanged, changed, forced), in the order of
    ``rebatch_diff.csv``: from which batch to which, and why; ``None`` for a fresh run."""
    diff = run.rebatch_diff
    if diff is None:
        return None
    moved = diff.loc[diff["student_class"].isin(MOVING_CLASSES).fillna(False).to_numpy(dtype=bool)]
    return pd.DataFrame(
        {
            "student": moved["student_id"].to_numpy(),
            "class": moved["student_class"].to_numpy(),
            "reason": moved["reason"].to_numpy(),
            "from batch": moved["previous_batch_code"].to_numpy(),
            "to batch": moved["batch_code"].to_numpy(),
        }
    ).astype(object).fillna("")


def show(item: Any, *, caption: str | None = None, empty: str = "none", max_rows: int = MAX_ROWS) -> None:
    """Display one part of the report in the notebook: a frame as an escaped table (``empty``
    in italics when it has no rows), a figure as a PNG image (``caption``: its alternative text;
    default: its axes' labels), a string as HTML (only the HTML
    built by this module's ``*_html`` functions, which escape what they show); nothing for
    ``None`` (a part the run does not have, e.g. the re-batch tables of a fresh run)."""
    from IPython.display import HTML, display

    if item is None:
        return

    if isinstance(item, pd.DataFrame):
        if item.empty:
            display(HTML((f"<p><b>{esc(caption)}</b>: " if caption else "<p>") + f"<i>{esc(empty)}</i></p>"))
        else:
            display(styled(item, caption=caption, max_rows=max_rows))
    elif isinstance(item, str):
        display(HTML(item))
    elif hasattr(item, "savefig"):
        import base64

        alt = caption or "; ".join(filter(None, (ax.get_xlabel() for ax in item.get_axes()))) or "figure"
        data = base64.b64encode(figure_png(item)).decode("ascii")
        display(HTML(f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'))
    else:
        display(item)


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def bullets_html(items: Sequence[Any], *, empty: str = "none", limit: int = 200) -> str:
    """An escaped HTML bullet list (``empty`` when there is nothing to list)."""
    if not items:
        return f"<p><i>{esc(empty)}</i></p>"
    shown = "".join(f"<li>{esc(i)}</li>" for i in list(items)[:limit])
    more = f"<p>… and {len(items) - limit:,} more (quality_report.json)</p>" if len(items) > limit else ""
    return f"<ul>{shown}</ul>{more}"


def note_html(text: str) -> str:
    """One escaped paragraph."""
    return f"<p>{esc(text)}</p>"


# --------------------------------------------------------------------------------------------
# figures (matplotlib's object API: no pyplot state, nothing shown twice)


def _figure(width: float = 10, height: float = 3.6, ncols: int = 1, **kwargs) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, **kwargs)
    first = axes[0] if ncols > 1 else axes
    first.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of batches
    return fig, axes


def plot_batch_sizes(run: AuditRun) -> Figure:
    """Left: histogram of batch sizes with the configured min/target/max marked. Right: each
    group's batch sizes (dots) against its [min, max] band: orange outside the band in an exempt
    group (smaller than min, or no feasible count), red outside otherwise."""
    b = run.batches
    sizes = b["student_count"].astype(int).to_numpy()
    keys = b["group_key"].astype(str).to_numpy()
    groups = pd.unique(keys)
    shown = groups
    if len(groups) > MAX_GROUPS_PLOTTED:  # the groups most worth a look: exempt or widest spread
        spread = b.groupby("group_key", sort=False).agg(
            exempt=("group_status", lambda s: (s != "ok").any()),
            rel=("student_count", lambda s: (s.max() - s.min()) / max(s.mean(), 1)))
        shown = spread.sort_values(["exempt", "rel"], ascending=False).index[:MAX_GROUPS_PLOTTED].to_numpy()
    fig, (left, right) = _figure(12, max(3.6, 0.24 * len(shown) + 1.2), ncols=2,
                                 gridspec_kw={"width_ratios": [1, 1.4]})
    left.hist(sizes, bins=min(30, max(5, len(np.unique(sizes)))), color="#4c72b0", edgecolor="white")
    bounds = run.config.get("batch_size") or {}
    for name, style in (("min", "--"), ("target", ":"), ("max", "--")):
        if bounds.get(name) is not None:
            left.axvline(bounds[name], color="#c62828" if name != "target" else "#555", linestyle=style,
                         label=f"{name} {bounds[name]}")
    left.set_xlabel("students per batch")
    left.set_ylabel("batches")
    left.set_title(f"{len(sizes):,} batches")
    left.legend(fontsize=8)

    for row, key in enumerate(shown):
        mask = keys == key
        lo, hi = int(b.loc[mask, "size_min"].iloc[0]), int(b.loc[mask, "size_max"].iloc[0])
        right.plot([lo, hi], [row, row], color="#cfd8e3", linewidth=6, solid_capstyle="butt")
        s = sizes[mask]
        outside = (s < lo) | (s > hi)
        exempt = outside & np.isin(b.loc[mask, "group_status"].to_numpy(dtype=object), EXEMPT_GROUP_STATUSES)
        for points, colour in ((~outside, "#4c72b0"), (exempt, "#e69f00"), (outside & ~exempt, "#c62828")):
            right.scatter(s[points], np.full(points.sum(), row), color=colour, s=20, zorder=3)
    right.set_yticks(range(len(shown)), [_short_key(k) for k in shown], fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("students per batch (band: the group's [min, max]; orange: outside, exempt group; red: outside)")
    title = "batch sizes per group"
    if len(shown) < len(groups):
        title += f" ({len(shown)} of {len(groups):,}: exempt or widest spread)"
    right.set_title(title)
    return fig


def _short_key(key: str, limit: int = 48) -> str:
    text = ", ".join(part.split("=", 1)[-1] for part in str(key).split(", "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_coherence(run: AuditRun) -> Figure:
    """Histogram of the batches' academic coherence, with the run's threshold."""
    fig, ax = _figure(8, 3.2)
    values = run.batch_quality["academic_coherence"].astype(float).to_numpy()
    ax.hist(values, bins=20, range=(0, 1), color="#4c72b0", edgecolor="white")
    threshold = (run.report.get("thresholds") or {}).get("academic_coherence", {}).get("threshold")
    if threshold is not None:
        ax.axvline(threshold, color="#c62828", linestyle="--", label=f"threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("academic coherence of the batch (share of course demands attended together)")
    ax.set_ylabel("batches")
    return fig


def plot_utilisation(run: AuditRun) -> Figure:
    """Histogram of the placed batches' room utilisation (students ÷ seats), with the run's
    resource_utilization threshold."""
    fig, ax = _figure(8, 3.2)
    values = run.batch_quality["utilization"].dropna().astype(float).to_numpy()
    ax.hist(values, bins=20, range=(0, 1), color="#55a868", edgecolor="white")
    threshold = (run.report.get("thresholds") or {}).get("resource_utilization", {}).get("threshold")
    if threshold is not None:
        ax.axvline(threshold, color="#c62828", linestyle="--", label=f"threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("room utilisation of the batch (students ÷ seats of its home room)")
    ax.set_ylabel("batches")
    ax.set_title(f"{len(values):,} placed batches")
    return fig


__all__ = [
    "AuditRun", "RunFileError", "assert_integrity", "breaches_by_batch", "breaches_by_rule", "bullets_html",
    "config_frame", "digest_frame", "dissolved_frame", "figure_png", "show", "groups_frame", "integrity_failures",
    "load_inputs", "load_run",
    "measures_frame", "moved_students", "note_html", "overrides_frame", "placement_frame", "plot_batch_sizes",
    "plot_coherence", "plot_utilisation", "read_run_table", "rebatch_diff_summary", "rebatch_failures",
    "rebatch_frame", "recompute_quality", "rules_frame", "shift_preferences", "styled", "title_html",
    "worst_coherence",
]
