"""Shared fixtures: an isolated data cache, one MLflow SQLite store per test session, Hydra
state cleared between tests, small synthetic institutions written on demand, an environment
without an inherited MLflow URI or sweep parent (``clean_env``).

Shared helpers (plain functions: ``from conftest import assert_outputs_valid``):

- :func:`assert_outputs_valid` — every invariant of the data contract re-derived from a run's
  output CSVs and its input CSVs alone, and the quality measures of ``quality.md`` recomputed in
  plain pandas (never through ``stage2.metrics``) and compared with ``quality_report.json``;
- :func:`assert_no_outputs`, :func:`read_output`, :func:`read_input`, :func:`active_student_ids`;
- :func:`run_batching` (a run without tracking or notebook), :func:`compose_with_hydra`,
  :func:`subprocess_env` (for ``python -m stage2`` / ``mlflow`` subprocesses).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# isolate every session from the user's cache, MLflow store and telemetry, before imports
os.environ["STAGE2_DATA_HOME"] = tempfile.mkdtemp(prefix="stage2-data-")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.pop("MLFLOW_TRACKING_URI", None)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


@pytest.fixture(autouse=True)
def _clear_hydra():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite store per session (creating one runs migrations: ~5 s)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def make_institution_dir(tmp_path_factory):
    """``make_institution_dir(n_students, seed=0, **options) -> Path`` (cached per session)."""
    from stage2.synth import make_institution, write_institution

    cache: dict[tuple, Path] = {}

    def make(
        n_students: int, seed: int = 0, *, n_groups: str = "many", profile: str = "university", **write_options
    ) -> Path:
        key = (n_students, seed, n_groups, profile, tuple(sorted(write_options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"inst-{n_students}-{seed}")
            write_institution(out, make_institution(n_students, seed=seed, profile=profile, n_groups=n_groups),
                              **write_options)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture
def clean_env():
    """No MLflow tracking URI and no sweep parent in ``os.environ`` during the test (what it
    sets is undone, what was there is restored)."""
    from stage2.tracking.mlflow_tracking import PARENT_RUN_ENV, PARENT_URI_ENV

    saved = {name: os.environ.get(name) for name in (PARENT_RUN_ENV, PARENT_URI_ENV, "MLFLOW_TRACKING_URI")}
    for name in saved:
        os.environ.pop(name, None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def compose_config():
    """``compose_config(overrides) -> DictConfig`` through Hydra's compose API."""
    from stage2 import load_config

    return lambda overrides=(): load_config(list(overrides), config_dir=CONF_DIR)


#: a run without MLflow, audit notebook or wall-clock timestamps (reruns are byte-identical)
OFFLINE_OVERRIDES = ("tracking.enabled=false", "report.notebook=false", "as_of=2025-08-01T00:00:00")


def run_batching(compose_config, input_dir: Path, out: Path, overrides: Iterable[str] = ()):
    """``process_student_batching`` on ``input_dir`` with :data:`OFFLINE_OVERRIDES` and ``overrides``."""
    from stage2 import process_student_batching

    cfg = compose_config([f"data.input_dir={input_dir}", *OFFLINE_OVERRIDES, *overrides])
    return process_student_batching(cfg, output_dir=out)


def compose_with_hydra(overrides: Iterable[str] = ()):
    """The composed configuration including the ``hydra`` node (``load_config`` drops it), as
    Hydra's sweepers and callbacks see it."""
    from hydra import compose, initialize_config_dir

    from stage2.config import register_configs, register_resolvers

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="stage2"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def finished_sweep_runs(uri: str, experiment: str, n_jobs: int):
    """``(parent, children)`` of a finished sweep in ``experiment``: asserts exactly one parent
    run, ``n_jobs`` children linked to it by ``mlflow.parentRunId`` and nothing else, all
    FINISHED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in parents]
    (parent,) = parents
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == n_jobs and len(runs) == n_jobs + 1
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    return parent, children


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m stage2`` / ``mlflow`` subprocess: no telemetry, no
    tracking URI or sweep parent inherited from the caller."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", **extra)
    for name in ("MLFLOW_TRACKING_URI", "STAGE2_PARENT_RUN_ID", "STAGE2_PARENT_TRACKING_URI"):
        env.pop(name, None)
    return env


# ==========================================================================================
# Reading a run's files and its input, independently of stage2's reader
#
# The data contract (../shared/spec/data-contract.md) is the reference: UTF-8 with or without a
# byte-order mark; `,` by default, `;`, tab and `|` detected; identifiers stripped; booleans
# true/false/t/f/1/0/yes/no; lists a;b;c, a|b|c or a JSON array; `is_active` false = left out.

STAGE3_TABLES = ("student_batches", "batch_student_membership", "batch_course_enrollment")
#: the contract's output columns, in this order (more may follow)
OUTPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "student_batches": (
        "batch_id", "tenant_id", "institution_id", "program_id", "batch_code", "batch_name", "student_count",
        "academic_year", "semester", "preferred_shift", "capacity_allocated", "generation_timestamp", "is_active",
        "room_id", "shift_id"),
    "batch_student_membership": (
        "membership_id", "batch_id", "student_id", "student_name", "program_id", "academic_year", "enrollment_date",
        "membership_status", "assignment_timestamp", "is_active"),
    "batch_course_enrollment": (
        "enrollment_id", "batch_id", "course_id", "course_name", "credit_hours", "enrollment_status",
        "expected_students", "capacity_utilization", "credits_allocated", "is_mandatory", "priority_level",
        "sessions_per_week", "is_active", "created_at"),
}
FALSE_TOKENS = frozenset({"false", "f", "0", "no"})
TRUE_TOKENS = frozenset({"true", "t", "1", "yes"})
DELIMITERS = (",", ";", "\t", "|")
LIST_FIELDS = frozenset({"preferred_languages", "enrolled_courses"})
#: the one shift when shifts.csv is absent or has no rows (stage2/contract/README.md)
DEFAULT_SHIFT = {"shift_id": "DEFAULT", "shift_code": "DEFAULT", "shift_type": "FLEXIBLE"}
#: README "Output columns you may wonder about"
PRIORITY_LEVEL = {"CORE": 1, "PRACTICAL": 2, "ELECTIVE": 3}
GLOBAL_SCOPES = ("INSTITUTION", "TENANT")
#: the measures assert_outputs_valid recomputes and compares with quality_report.json
RECOMPUTED_MEASURES = (
    "n_students", "n_batches", "n_groups", "academic_coherence", "course_sse", "course_sse_per_student",
    "sections_per_batch", "size_balance", "size_bound_violations", "hard_constraint_violations",
    "constraint_satisfaction_rate", "shift_preference_satisfaction", "resource_utilization", "room_placement_rate",
)


def read_output(out: Path, table: str) -> pd.DataFrame:
    """An output CSV as text (empty cells are ``""``)."""
    return pd.read_csv(Path(out) / f"{table}.csv", dtype=str, keep_default_na=False)


def read_outputs(out: Path) -> dict[str, pd.DataFrame]:
    return {name: read_output(out, name) for name in STAGE3_TABLES}


def assert_no_outputs(out: Path) -> None:
    """A failed run leaves none of the three Stage 3 CSVs (not even a stale one)."""
    written = [f"{t}.csv" for t in STAGE3_TABLES if (Path(out) / f"{t}.csv").exists()]
    assert not written, f"written by a failed run: {written}"


def sniff_delimiter(path: Path) -> str:
    """The contract's delimiter detection, from the header line: the most frequent of
    ``, ; \\t |`` (the earlier one on a tie)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = handle.readline()
    counts = [header.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))]


def read_input(input_dir: Path, name: str) -> pd.DataFrame | None:
    """An input CSV as stripped text, rows of empty cells dropped; ``None`` when the file is
    absent or has no data rows."""
    path = Path(input_dir) / name
    if not path.is_file() or not path.read_bytes().strip(b"\xef\xbb\xbf \r\n"):
        return None
    frame = pd.read_csv(path, sep=sniff_delimiter(path), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda column: column.str.strip())
    frame = frame.loc[(frame != "").any(axis=1)].reset_index(drop=True)
    return frame if len(frame) else None


def is_active(values: pd.Series) -> pd.Series:
    return ~values.str.lower().isin(FALSE_TOKENS)


def active_students(input_dir: Path) -> pd.DataFrame:
    """The active rows of student_data.csv, in input order (``input_row``: 0-based position)."""
    students = read_input(input_dir, "student_data.csv")
    assert students is not None, "student_data.csv"
    students = students.assign(input_row=np.arange(len(students)))
    if "is_active" in students:
        students = students.loc[is_active(students["is_active"])]
    return students.reset_index(drop=True)


def active_student_ids(input_dir: Path) -> set[str]:
    return set(active_students(input_dir)["student_id"])


def parse_list(cell: str) -> list[str]:
    """A list cell: ``a;b;c``, ``a|b|c`` or a JSON array; items stripped, empty ones dropped."""
    cell = cell.strip()
    if not cell:
        return []
    items = json.loads(cell) if cell.startswith("[") else re.split(r"[;|]", cell)
    return [str(item).strip() for item in items if str(item).strip()]


def current_enrollments(input_dir: Path, students: pd.DataFrame) -> pd.DataFrame:
    """(student_id, course_id) pairs of ``students`` that are batched: student_course_enrollment.csv
    (which wins over the ``enrolled_courses`` column), without courses taken in an earlier term
    (the contract: those are the student's history, used only for prerequisites)."""
    rows = read_input(input_dir, "student_course_enrollment.csv")
    if rows is None:
        pairs = students[["student_id", "enrolled_courses"]].assign(
            course_id=students["enrolled_courses"].map(parse_list)).explode("course_id").dropna(subset=["course_id"])
        return pairs[["student_id", "course_id"]].drop_duplicates().reset_index(drop=True)
    rows = rows.loc[rows["student_id"].isin(set(students["student_id"]))]
    terms = rows.merge(students[["student_id", "academic_year"] + (["semester"] if "semester" in students else [])],
                       on="student_id", how="left", suffixes=("", "_now"))
    earlier = pd.Series(False, index=terms.index)
    if "academic_year" in rows:
        year, year_now = terms["academic_year"], terms["academic_year_now"]
        earlier |= (year != "") & (year < year_now)
        if "semester" in rows and "semester_now" in terms:
            same_year = (year == "") | (year == year_now)
            semester = pd.to_numeric(terms["semester"], errors="coerce")
            semester_now = pd.to_numeric(terms["semester_now"], errors="coerce")
            earlier |= same_year & (semester < semester_now)
    return terms.loc[~earlier, ["student_id", "course_id"]].drop_duplicates().reset_index(drop=True)


def enum(values: pd.Series) -> pd.Series:
    """An enumeration as the contract compares it: upper case, spaces and hyphens as ``_``."""
    return values.str.upper().str.replace(r"[\s\-]+", "_", regex=True)


def shifts_table(input_dir: Path) -> pd.DataFrame:
    shifts = read_input(input_dir, "shifts.csv")
    return pd.DataFrame([DEFAULT_SHIFT]) if shifts is None else shifts


def resolve_preferred_shifts(raw: pd.Series, shifts: pd.DataFrame) -> pd.Series:
    """Each preference as a ``shift_id``: a shift_id (exact), else a shift_code (any case), else a
    shift_type (any case; the first shift of that type); ``None`` for no or an unknown shift."""
    def first_by(column: str, normalise) -> dict[str, str]:
        if column not in shifts:
            return {}
        keys = normalise(shifts[column])
        pairs = pd.DataFrame({"key": keys, "id": shifts["shift_id"]}).loc[keys != ""].drop_duplicates("key")
        return dict(zip(pairs["key"], pairs["id"], strict=True))

    by_id = {s: s for s in shifts["shift_id"]}
    by_code = first_by("shift_code", lambda s: s.str.upper())
    by_type = first_by("shift_type", enum)
    upper, as_type = raw.str.upper(), enum(raw)
    return pd.Series([by_id.get(r) or by_code.get(u) or by_type.get(t) if r else None
                      for r, u, t in zip(raw, upper, as_type, strict=True)], index=raw.index, dtype=object)


# ==========================================================================================
# Recomputing the quality measures (quality.md) from the tables, in plain pandas


def _close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def rules_in_force(rules: Sequence[Mapping[str, Any]], program_id: str) -> list[Mapping[str, Any]]:
    """The rules that apply to a programme's batches: institution-wide rules, except those a
    programme-scoped rule of the same name replaces; that programme's rules; course-scoped rules."""
    scoped = {r["name"]: r for r in rules if r["entity_type"] == "PROGRAM" and r["entity_id"] == program_id}
    return ([r for r in rules if r["entity_type"] in GLOBAL_SCOPES and r["name"] not in scoped]
            + list(scoped.values()) + [r for r in rules if r["entity_type"] == "COURSE"])


def rule_checks(rules: Sequence[Mapping[str, Any]], batches: pd.DataFrame, members: pd.DataFrame,
                enrollments: pd.DataFrame) -> pd.DataFrame:
    """One row per (batch, rule) check, as README's constraint-rule table defines "satisfied":
    ``batch_id, rule, level, satisfied``.

    ``members``: one row per member (batch_id, group, the student's input columns, preferred
    shift resolved). ``no_mix``/``homogeneous``: the most common value — for a list field the
    element most members share — covers at least ``threshold`` of the in-scope members that have
    a value; ``max_variance``: the batch's (population) variance of the field is at most
    ``threshold`` × that of its mixable group (in-scope members with a value);
    ``capacity_limit``: a placed batch has ``student_count <= threshold × capacity_allocated``.
    Batches without an in-scope member holding a value are not checked."""
    records = []
    program_of_batch = batches.set_index("batch_id")["program_id"]
    force = {p: rules_in_force(rules, p) for p in set(program_of_batch)}
    for rule in {(r["name"], r["entity_type"], r["entity_id"]): r for r in rules}.values():
        in_force = {b for b, p in program_of_batch.items() if any(r is rule for r in force[p])}
        if not in_force:
            continue
        threshold = float(rule["threshold"])
        if rule["rule_type"] == "capacity_limit":
            placed = batches.loc[(batches["room_id"] != "") & batches["batch_id"].isin(in_force)]
            ok = placed["student_count"].astype(int) <= threshold * placed["capacity_allocated"].astype(float) + 1e-9
            checked = pd.Series(ok.to_numpy(), index=placed["batch_id"].to_numpy())
        else:
            scope = members.loc[members["batch_id"].isin(in_force)]
            if rule["entity_type"] == "PROGRAM":
                scope = scope.loc[scope["program_id"] == rule["entity_id"]]
            elif rule["entity_type"] == "COURSE":
                takers = set(enrollments.loc[enrollments["course_id"] == rule["entity_id"], "student_id"])
                scope = scope.loc[scope["student_id"].isin(takers)]
            field = rule["field_name"]
            values = scope[field] if field in scope else pd.Series("", index=scope.index)
            if rule["rule_type"] == "max_variance":
                frame = scope.assign(x=pd.to_numeric(values, errors="coerce")).dropna(subset=["x"])
                batch_var = frame.groupby("batch_id")["x"].var(ddof=0)
                group_var = frame.groupby("group")["x"].var(ddof=0)
                group_of_batch = frame.drop_duplicates("batch_id").set_index("batch_id")["group"]
                limit = threshold * group_var.reindex(group_of_batch.reindex(batch_var.index)).to_numpy()
                checked = batch_var <= limit + 1e-12
            else:
                if field in LIST_FIELDS:
                    items = values.map(lambda cell: sorted(set(parse_list(cell))))
                    with_value = scope.assign(item=items).loc[items.map(len) > 0]
                    holders = with_value.explode("item")
                else:
                    with_value = holders = scope.assign(item=values).loc[values.notna() & (values != "")]
                n_with_value = with_value.groupby("batch_id").size()
                top = holders.groupby(["batch_id", "item"]).size().groupby(level="batch_id").max()
                checked = top.reindex(n_with_value.index) / n_with_value >= threshold - 1e-12
        records.append(pd.DataFrame({"batch_id": checked.index.to_numpy(), "rule": rule["name"],
                                     "level": rule["level"], "satisfied": checked.to_numpy(dtype=bool)}))
    columns = ["batch_id", "rule", "level", "satisfied"]
    return pd.concat(records, ignore_index=True)[columns] if records else pd.DataFrame(columns=columns)


def recompute_measures(batches: pd.DataFrame, membership: pd.DataFrame, courses: pd.DataFrame,
                       members: pd.DataFrame, enrollments: pd.DataFrame,
                       rules: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], pd.DataFrame]:
    """The measures of quality.md from the tables, and the rule checks they count.

    With s_b = ``student_count``, e_bc = ``expected_students``, N = membership rows, B = batches,
    groups = the distinct tuples of the hard ``no_mix`` fields (from the input):

    - ``size_balance`` = Σ_g n_g (1 − std_g / mean_g) / N, std and mean of the group's s_b
      (population std), n_g = Σ s_b of the group;
    - ``constraint_satisfaction_rate`` = satisfied / all (batch, rule) checks (:func:`rule_checks`);
    - ``shift_preference_satisfaction`` = members whose preferred shift (resolved to a shift_id)
      is their batch's ``shift_id`` / members with a preferred shift (``None`` without any);
    - ``resource_utilization`` = Σ s_b / Σ ``capacity_allocated`` over batches with a ``room_id``;
    - ``room_placement_rate`` = batches with a ``room_id`` / B;
    - ``sections_per_batch`` = rows of batch_course_enrollment / B;
    - ``academic_coherence`` = Σ_ENROLLED e_bc / Σ e_bc; ``course_sse`` = Σ e_bc (1 − e_bc / s_b);
    - ``size_bound_violations``: batches outside [size_min, size_max] in groups of at least min;
    - ``hard_constraint_violations``: failed hard checks; ``n_groups``: distinct groups."""
    n_students, n_batches = len(membership), len(batches)
    size = batches.set_index("batch_id")["student_count"].astype(int)
    e = courses["expected_students"].astype(float).to_numpy()
    s = size.reindex(courses["batch_id"]).to_numpy(dtype=float)
    enrolled = (courses["enrollment_status"] == "ENROLLED").to_numpy()
    course_sse = float((e * (1 - e / s)).sum())

    # size balance: Σ_g n_g (1 − std/mean of the group's batch sizes) / N, std of the population
    group_of_batch = members.drop_duplicates("batch_id").set_index("batch_id")["group"]
    sizes = pd.DataFrame({"group": group_of_batch.reindex(size.index).to_numpy(), "size": size.to_numpy()})
    per_group = sizes.groupby("group")["size"].agg(n="sum", mean="mean", std=lambda x: float(np.std(x)))
    size_balance = float((per_group["n"] * (1 - per_group["std"] / per_group["mean"])).sum() / n_students)

    # size-bound violations: outside [size_min, size_max], groups smaller than min not counted
    size_min, size_max = batches["size_min"].astype(int).to_numpy(), batches["size_max"].astype(int).to_numpy()
    group_total = per_group["n"].reindex(group_of_batch.reindex(batches["batch_id"])).to_numpy()
    outside = (size.to_numpy() < size_min) | (size.to_numpy() > size_max)
    size_bound_violations = int((outside & (group_total >= size_min)).sum())

    # rules read the students' values as loaded: a preferred shift as the shift_id it names
    checks = rule_checks(rules, batches, members.assign(preferred_shift=members["preferred_shift_id"].fillna("")),
                         enrollments)
    satisfied = checks["satisfied"].astype(bool)

    # shift preferences: members with a (resolvable) preferred shift whose batch got that shift
    shift_of_batch = batches.set_index("batch_id")["shift_id"]
    wants = members.loc[members["preferred_shift_id"].notna()]
    got = shift_of_batch.reindex(wants["batch_id"]).to_numpy() == wants["preferred_shift_id"].to_numpy()

    placed = batches.loc[batches["room_id"] != ""]
    measures = {
        "n_students": n_students,
        "n_batches": n_batches,
        "n_groups": int(members["group"].nunique()),
        "academic_coherence": float(e[enrolled].sum() / e.sum()) if e.sum() else None,
        "course_sse": course_sse,
        "course_sse_per_student": course_sse / n_students,
        "sections_per_batch": len(courses) / n_batches,
        "size_balance": size_balance,
        "size_bound_violations": size_bound_violations,
        "hard_constraint_violations": int((~satisfied & (checks["level"] == "hard")).sum()),
        "constraint_satisfaction_rate": float(satisfied.mean()) if len(checks) else 1.0,
        "shift_preference_satisfaction": float(got.mean()) if len(wants) else None,
        "resource_utilization": (float(placed["student_count"].astype(int).sum()
                                       / placed["capacity_allocated"].astype(int).sum()) if len(placed) else None),
        "room_placement_rate": len(placed) / n_batches,
    }
    return measures, checks


# ==========================================================================================
# The one output check


def _is_uuid5(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 5 and str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _check_rules_match_their_sources(rules: Sequence[Mapping[str, Any]], report: Mapping[str, Any],
                                     input_dir: Path) -> None:
    """The rules in force (``quality_report.json`` ``rules``) are the configured ones or EAV rows of
    the input: a YAML rule as configured, an EAV rule as its ``json_value``."""
    configured = (report.get("config") or {}).get("constraints", {}).get("rules", {}) or {}
    eav = read_input(input_dir, "entity_parameter_values.csv")
    eav_json = {}
    if eav is not None and "json_value" in eav:
        eav_json = dict(zip(eav["value_id"], eav["json_value"], strict=True))
    for rule in rules:
        source = rule["source"]
        if source == "yaml":
            spec = configured[rule["name"]]
        else:
            assert source.startswith("eav:"), rule
            spec = json.loads(eav_json[source.removeprefix("eav:")])
        assert (spec.get("field_name") or "capacity") == rule["field_name"], (rule, spec)
        assert str(spec["rule_type"]).strip().lower() == rule["rule_type"], (rule, spec)
        assert str(spec.get("constraint_level") or "soft").strip().lower() == rule["level"], (rule, spec)
        if "threshold" in spec:
            assert float(spec["threshold"]) == float(rule["threshold"]), (rule, spec)


def assert_outputs_valid(
    out: Path, input_dir: Path | None = None, *, size_bounds: tuple[int, int] | None = None
) -> dict[str, pd.DataFrame]:
    """Assert every invariant of the data contract on a run's output files, re-derived from the
    output CSVs and the input CSVs alone, and recompute the quality measures.

    ``input_dir``: the run's input (default: ``quality_report.json``'s ``input_dir``).
    ``size_bounds``: the (min, max) every batch's ``size_min``/``size_max`` must be.

    Checked: the contract's output columns; every active student in exactly one batch, nobody
    else; unique UUID5 ids and codes; ``student_count``; sizes within ``size_min``/``size_max``
    unless the group is reported (``undersized``: one batch of a group smaller than min;
    ``no_feasible_count``: no feasible count, ceil(n/max) equal batches); hard ``no_mix`` fields
    shared within a batch, one ``group_key`` per mixable group; batch codes numbered by first
    student; rooms (no slot twice, the room's capacity >= size, a shift of shifts.csv, nothing on
    an unplaced batch); ``expected_students`` recounted, ``enrollment_status`` and the course
    columns of README "Output columns". Then :data:`RECOMPUTED_MEASURES`, recomputed from the
    files by the formulas of quality.md (:func:`recompute_measures`), equal the report's
    ``metrics`` to 1e-9, and the failed rule checks are the report's ``rule_breaches``.

    Returns the three output tables (as text).
    """
    out = Path(out)
    for table in STAGE3_TABLES:
        assert (out / f"{table}.csv").is_file(), f"{table}.csv missing"
    assert not (out / "errors.json").exists(), "a successful run leaves no errors.json"
    report = json.loads((out / "quality_report.json").read_text(encoding="utf-8"))
    input_dir = Path(input_dir if input_dir is not None else report["input_dir"])
    tables = read_outputs(out)
    batches, membership, courses = (tables[name] for name in STAGE3_TABLES)
    for name, columns in OUTPUT_COLUMNS.items():
        assert tuple(tables[name].columns[: len(columns)]) == columns, (name, list(tables[name].columns))
    config = report.get("config") or {}

    students = active_students(input_dir)
    enrollments = current_enrollments(input_dir, students)

    # --- every active student in exactly one batch; nobody else; no empty or unknown batch
    assert membership["student_id"].is_unique, "a student is in two batches"
    assert set(membership["student_id"]) == set(students["student_id"])
    assert set(membership["batch_id"]) == set(batches["batch_id"])

    # --- ids: unique UUIDs (uuid5); batch codes unique per tenant
    for table, column in (("student_batches", "batch_id"), ("batch_student_membership", "membership_id"),
                          ("batch_course_enrollment", "enrollment_id")):
        ids = tables[table][column]
        assert ids.is_unique, column
        assert all(_is_uuid5(i) for i in ids), column
    assert not batches.duplicated(["tenant_id", "batch_code"]).any()

    # --- student_count = members; sizes within the bounds in force unless the group is reported
    size = batches["student_count"].astype(int)
    counts = membership.groupby("batch_id").size().reindex(batches["batch_id"], fill_value=0)
    assert (counts.to_numpy() == size.to_numpy()).all()
    assert (size >= 1).all()
    size_min, size_max = batches["size_min"].astype(int), batches["size_max"].astype(int)
    if size_bounds is not None:
        assert (size_min == size_bounds[0]).all() and (size_max == size_bounds[1]).all(), \
            batches[["size_min", "size_max"]].drop_duplicates()
    assert (size_min <= size_max).all()
    status = batches["group_status"]
    assert set(status) <= {"ok", "undersized", "no_feasible_count"}, set(status)

    # --- hard no_mix fields: members share their values; a mixable group = one value tuple
    rules = report["rules"]
    _check_rules_match_their_sources(rules, report, input_dir)
    hard_fields = list(dict.fromkeys(r["field_name"] for r in rules
                                     if r["level"] == "hard" and r["rule_type"] == "no_mix"
                                     and r["entity_type"] in GLOBAL_SCOPES))
    members = membership[["batch_id", "student_id", "program_id", "academic_year"]].merge(
        students, on="student_id", how="left", suffixes=("_out", ""), validate="one_to_one")
    assert (members["program_id_out"] == members["program_id"]).all(), "membership.program_id is not the student's"
    assert (members["academic_year_out"] == members["academic_year"]).all(), \
        "membership.academic_year is not the student's"
    for field in hard_fields:
        values = members[field] if field in members else pd.Series("", index=members.index)
        assert (values.groupby(members["batch_id"]).nunique(dropna=False) == 1).all(), f"hard no_mix {field!r} mixed"
    members["group"] = (members[[f for f in hard_fields if f in members]].astype(str).agg("\x1f".join, axis=1)
                        if hard_fields else "")
    first = members.sort_values("input_row").drop_duplicates("batch_id").set_index("batch_id")
    own = batches.set_index("batch_id")
    for column in ("program_id", "academic_year", "semester"):
        if column in first:
            assert (own[column] == first[column].reindex(own.index)).all(), f"student_batches.{column}"
    group_keys = pd.DataFrame({"key": own["group_key"], "group": first["group"].reindex(own.index)}).drop_duplicates()
    assert group_keys["key"].is_unique and group_keys["group"].is_unique, "group_key is not one per mixable group"

    # --- group status is truthful
    group_of_batch = first["group"].reindex(batches["batch_id"]).to_numpy()
    group_n = size.groupby(group_of_batch).transform("sum")
    group_k = size.groupby(group_of_batch).transform("size")
    ok, under, infeasible = status == "ok", status == "undersized", status == "no_feasible_count"
    assert ((size[ok] >= size_min[ok]) & (size[ok] <= size_max[ok])).all(), "a batch outside its size bounds"
    assert ((group_n[under] < size_min[under]) & (group_k[under] == 1)).all(), "undersized: one batch of a group < min"
    assert (group_n[ok | infeasible] >= size_min[ok | infeasible]).all()
    for n, k, lo, hi in zip(group_n[infeasible], group_k[infeasible], size_min[infeasible], size_max[infeasible],
                            strict=True):
        assert not any(lo * j <= n <= hi * j for j in range(1, n + 1)), "no_feasible_count, yet a count is feasible"
        assert k == math.ceil(n / hi)
    spread = size.groupby(group_of_batch).agg(lambda x: x.max() - x.min())
    assert (spread[sorted(set(group_of_batch[infeasible.to_numpy()]))] <= 1).all(), "no_feasible_count: equal sizes"

    # --- batch codes: <group>-B<nn>, numbered within the group by each batch's first student in input order
    numbered = batches.assign(group=group_of_batch,
                              first_row=first["input_row"].reindex(batches["batch_id"]).to_numpy())
    for _, group in numbered.sort_values("first_row").groupby("group", sort=False):
        assert group["batch_code"].str.extract(r"-B(\d+)$")[0].astype(int).tolist() == list(range(1, len(group) + 1)), \
            group["batch_code"].tolist()

    # --- rooms and shifts: no (room, shift) twice; capacity_allocated = the room's capacity >= size;
    # a placed batch's shift is a shift of the input and its preferred_shift column names it (the
    # contract's definition of that column); an unplaced batch has neither room, shift nor capacity
    rooms = read_input(input_dir, "rooms.csv")
    capacity_of_room = dict(zip(rooms["room_id"], rooms["capacity"].astype(float).astype(int), strict=True))
    shifts = shifts_table(input_dir)
    placed = batches.loc[batches["room_id"] != ""]
    unplaced = batches.loc[batches["room_id"] == ""]
    assert not placed.duplicated(["room_id", "shift_id"]).any(), "a room given twice in one shift"
    assert set(placed["room_id"]) <= set(capacity_of_room)
    assert (placed["capacity_allocated"].astype(int) == placed["room_id"].map(capacity_of_room)).all()
    assert (placed["capacity_allocated"].astype(int) >= placed["student_count"].astype(int)).all()
    allowed_shifts = set(shifts["shift_id"])
    assert set(placed["shift_id"]) <= allowed_shifts, set(placed["shift_id"]) - allowed_shifts
    assert (placed["preferred_shift"] == placed["shift_id"]).all()
    assert (unplaced[["shift_id", "capacity_allocated", "preferred_shift"]] == "").all().all()
    unplaced_reported = report.get("allocation", {}).get("unplaced_batches")
    assert unplaced_reported is None or unplaced_reported == len(unplaced)

    # --- batch_course_enrollment: expected_students recounted from the input enrollments; status
    # ENROLLED iff the share of members is >= enrollment.shared_threshold; course columns from courses.csv
    threshold = float(config.get("enrollment", {}).get("shared_threshold", 0.5))
    for override in report.get("eav_overrides", []):
        if override["parameter_code"] == "enrollment.shared_threshold":
            threshold = float(override["value"])
    recount = (enrollments.merge(membership[["student_id", "batch_id"]], on="student_id")
               .groupby(["batch_id", "course_id"]).size())
    keyed = courses.set_index(["batch_id", "course_id"])
    assert keyed.index.is_unique, "two rows for one (batch, course)"
    got = keyed["expected_students"].astype(int)
    assert recount.sort_index().to_dict() == got.sort_index().to_dict(), "expected_students"
    share = got / size.set_axis(batches["batch_id"]).reindex(got.index.get_level_values("batch_id")).to_numpy()
    assert ((share >= threshold - 1e-12) == (keyed["enrollment_status"] == "ENROLLED")).all(), "enrollment_status"
    assert set(courses["enrollment_status"]) <= {"ENROLLED", "PARTIAL"}
    catalogue = read_input(input_dir, "courses.csv").drop_duplicates("course_id").set_index("course_id")
    course = catalogue.reindex(courses["course_id"])
    course_type = enum(course["course_type"]).replace("", "CORE") if "course_type" in course else pd.Series(
        "CORE", index=course.index)
    assert (courses["is_mandatory"].str.lower().to_numpy() == np.where(course_type == "CORE", "true", "false")).all()
    assert (courses["priority_level"].astype(int).to_numpy()
            == course_type.map(PRIORITY_LEVEL).fillna(4).to_numpy()).all()
    for out_column, in_column in (("credits_allocated", "credits"), ("credit_hours", "credits"),
                                  ("sessions_per_week", "max_sessions_per_week"), ("course_name", "course_name")):
        if in_column in course:
            given = (course[in_column] != "").to_numpy()
            expected, written = course[in_column].to_numpy()[given], courses[out_column].to_numpy()[given]
            if in_column != "course_name":
                expected, written = expected.astype(float), written.astype(float)
            assert (expected == written).all(), out_column
    capacity = batches.set_index("batch_id")["capacity_allocated"].reindex(courses["batch_id"]).to_numpy()
    has_room = capacity != ""
    assert (courses["capacity_utilization"].to_numpy()[~has_room] == "").all()
    utilisation = courses["expected_students"].astype(float).to_numpy()[has_room] / capacity[has_room].astype(float)
    assert np.allclose(courses["capacity_utilization"].to_numpy()[has_room].astype(float), utilisation,
                       atol=5e-5 + 1e-12)

    # --- the quality measures, recomputed and compared with quality_report.json
    members["preferred_shift_id"] = resolve_preferred_shifts(
        members["preferred_shift"] if "preferred_shift" in members else pd.Series("", index=members.index), shifts)
    recomputed, checks = recompute_measures(batches, membership, courses, members, enrollments, rules)
    reported = report["metrics"]
    wrong = {name: (value, reported.get(name)) for name, value in recomputed.items()
             if name not in reported or not _close(value, reported[name])}
    assert not wrong, f"measures (recomputed, reported): {wrong}"
    assert recomputed["hard_constraint_violations"] == 0, "a hard rule is broken"
    code_of = batches.set_index("batch_id")["batch_code"]
    failed = checks.loc[~checks["satisfied"].astype(bool)]
    breaches = {(code_of[b], r) for b, r in zip(failed["batch_id"], failed["rule"], strict=True)}
    if len(failed) < 1000:
        assert breaches == {(b["batch_code"], b["rule"]) for b in report["rule_breaches"]}
    return tables
