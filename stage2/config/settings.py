"""Configuration stage: validate the YAML, apply the institution's EAV overrides, and return the
typed :class:`BatchingSettings` every later stage reads.

EAV parameter codes (``dynamic_parameters.parameter_code``) understood by stage2:

=========================== ================ ==============================================
code                        entity types     value
=========================== ================ ==============================================
``batch_size.min``          INSTITUTION,     integer (``integer_value``, ``numeric_value`` or
``batch_size.target``       TENANT, PROGRAM  ``parameter_value``)
``batch_size.max``
``weights.homogeneity``     INSTITUTION,     number
``weights.balance``         TENANT
``weights.size``
``enrollment.shared_threshold`` INSTITUTION, number in [0, 1]
                            TENANT
``enrollment.prerequisites`` INSTITUTION,    ``off``, ``report``, ``exclude`` or ``strict``
                            TENANT, PROGRAM
``constraint.<name>``       INSTITUTION,     JSON object with ``field_name``, ``rule_type``,
                            TENANT, PROGRAM, ``constraint_level``, ``weight``, ``threshold``
                            COURSE (soft)
=========================== ================ ==============================================

A value applies when ``effective_from <= as_of < effective_to`` (empty = open) and its
``tenant_id`` (if any) is the run's tenant; a run without a tenant applies every row in force.
A rule from the EAV table replaces the YAML rule of the same name at the same scope; a
PROGRAM-scoped rule replaces the institution-wide rule of the same name for that programme's
students.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from stage2.config.schema import (
    CONSTRAINT_LEVELS,
    PARALLEL_BACKENDS,
    PREREQUISITE_POLICIES,
    RULE_TYPES,
    SCOPE_TYPES,
    EnrollmentConfig,
    FacultyConfig,
    ParallelConfig,
    Stage2Config,
    to_stage2_config,
)
from stage2.contract.schemas import (
    COMPETENCY_MAX,
    COMPETENCY_MIN,
    EAV_VALUE_COLUMNS,
    SESSIONS_PER_WEEK_MAX,
    SESSIONS_PER_WEEK_MIN,
)
from stage2.errors import ConfigurationError, InputValidationError, ValidationIssue

#: recommended ranges of the design document: outside them a configuration only warns
RECOMMENDED_MIN_RANGE = (10, 30)
RECOMMENDED_MAX_RANGE = (30, 80)
WEIGHT_SUM_TOLERANCE = 0.01
MAX_RULE_WEIGHT = 10.0
#: threshold a rule type uses when the rule gives none (see the README's rule table)
DEFAULT_THRESHOLDS = {"no_mix": 1.0, "homogeneous": 0.8, "max_variance": 0.5, "capacity_limit": 1.0}
GLOBAL_SCOPES = ("INSTITUTION", "TENANT")
EAV_FILE = "entity_parameter_values.csv"


@dataclass(frozen=True)
class SizeBounds:
    """Batch size bounds in students."""

    min: int
    target: int
    max: int

    def feasible_counts(self, n_students: int) -> range:
        """Numbers of batches k with ``min <= n/k`` and ``ceil(n/k) <= max``."""
        return range(math.ceil(n_students / self.max), n_students // self.min + 1)


@dataclass(frozen=True)
class Weights:
    homogeneity: float
    balance: float
    size: float


@dataclass(frozen=True)
class ConstraintRule:
    """A constraint rule, resolved from YAML or from the EAV table."""

    name: str
    field_name: str
    rule_type: str
    level: str
    weight: float
    threshold: float
    entity_type: str = "INSTITUTION"
    entity_id: str | None = None
    #: ``yaml`` or ``eav:<value_id>``
    source: str = "yaml"

    @property
    def is_hard(self) -> bool:
        return self.level == "hard"

    @property
    def is_global(self) -> bool:
        return self.entity_type in GLOBAL_SCOPES


#: slack for float rounding when a capacity threshold multiplies a capacity (0.7 × 90 is
#: 62.99999999999999 in floating point, and 63 students fit)
CAPACITY_ROUNDING = 1e-9


def seats_admitted(capacity: Any, threshold: float) -> Any:
    """The most students a room of ``capacity`` seats admits under a ``capacity_limit``
    threshold: ``floor(threshold × capacity)`` (elementwise for arrays)."""
    return np.floor(np.asarray(capacity, dtype=np.float64) * threshold + CAPACITY_ROUNDING).astype(np.int64)


@dataclass(frozen=True)
class AppliedOverride:
    """One EAV value that changed the configuration (for the report and the audit trail)."""

    parameter_code: str
    entity_type: str
    entity_id: str
    value: Any
    value_id: str


@dataclass(frozen=True)
class BatchingSettings:
    """Everything the batching stages need, validated, with EAV overrides applied."""

    bounds: SizeBounds
    weights: Weights
    rules: tuple[ConstraintRule, ...]
    shared_threshold: float
    seed: int
    strict: bool
    as_of: datetime
    #: objective units per unit of soft-rule weight (``constraints.soft_rule_scale``)
    soft_rule_scale: float
    #: λ of the size model: SSE units per squared student of deviation from the planned
    #: size; ``inf`` keeps exact equal sizes (weights.homogeneity = 0)
    deviation_cost: float
    program_bounds: Mapping[str, SizeBounds] = field(default_factory=dict)
    overrides: tuple[AppliedOverride, ...] = ()
    warnings: tuple[str, ...] = ()
    #: ``enrollment.prerequisites``, institution-wide (one of ``PREREQUISITE_POLICIES``)
    prerequisite_policy: str = EnrollmentConfig.prerequisites
    #: programme id -> its ``enrollment.prerequisites`` where an EAV value sets one
    program_prerequisite_policies: Mapping[str, str] = field(default_factory=dict)

    def bounds_for(self, program_id: str | None) -> SizeBounds:
        return self.program_bounds.get(program_id, self.bounds) if program_id else self.bounds

    def prerequisite_policy_for(self, program_id: str | None) -> str:
        """The ``enrollment.prerequisites`` policy for a programme's students."""
        if program_id is None:
            return self.prerequisite_policy
        return self.program_prerequisite_policies.get(program_id, self.prerequisite_policy)

    def rules_for_program(self, program_id: str | None) -> list[ConstraintRule]:
        """Rules in force for a programme's students: programme-scoped rules replace the
        institution-wide rule of the same name; COURSE-scoped rules are included as-is."""
        scoped = {r.name: r for r in self.rules if r.entity_type == "PROGRAM" and r.entity_id == program_id}
        result = [r for r in self.rules if r.is_global and r.name not in scoped]
        result += list(scoped.values())
        result += [r for r in self.rules if r.entity_type == "COURSE"]
        return result

    @property
    def hard_no_mix_fields(self) -> list[str]:
        """Every field some hard ``no_mix`` rule names, in first-seen order."""
        fields: list[str] = []
        for rule in self.rules:
            if rule.is_hard and rule.rule_type == "no_mix" and rule.field_name not in fields:
                fields.append(rule.field_name)
        return fields


def parse_as_of(value: str | None) -> datetime:
    """The run's reference time (UTC, timezone-aware); ``None`` means now."""
    if value is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        parsed = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"as_of={value!r} is not an ISO-8601 time", where="as_of") from exc
    if parsed.tzinfo is None:
        parsed = parsed.tz_localize("UTC")
    return parsed.to_pydatetime()


# ----------------------------------------------------------------------------- YAML validation


def validate_bounds(bounds: SizeBounds, where: str = "batch_size") -> list[str]:
    """Raise BATCH_SIZE_BOUNDS_VIOLATED unless 1 <= min <= target <= max; return warnings for
    values outside the design's recommended ranges."""
    if not (1 <= bounds.min <= bounds.target <= bounds.max):
        raise ConfigurationError(
            f"need 1 <= min <= target <= max, got min={bounds.min}, target={bounds.target}, "
            f"max={bounds.max}",
            code="BATCH_SIZE_BOUNDS_VIOLATED",
            where=where,
        )
    warnings = []
    lo, hi = RECOMMENDED_MIN_RANGE
    if not lo <= bounds.min <= hi:
        warnings.append(f"{where}.min={bounds.min} is outside the recommended range {lo}-{hi}")
    lo, hi = RECOMMENDED_MAX_RANGE
    if not lo <= bounds.max <= hi:
        warnings.append(f"{where}.max={bounds.max} is outside the recommended range {lo}-{hi}")
    return warnings


def validate_weights(weights: Weights, where: str = "weights") -> None:
    values = {"homogeneity": weights.homogeneity, "balance": weights.balance, "size": weights.size}
    negative = [k for k, v in values.items() if v < 0]
    total = sum(values.values())
    if negative or abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        detail = f"negative: {negative}; " if negative else ""
        raise ConfigurationError(
            f"{detail}weights must be >= 0 and sum to 1 ± {WEIGHT_SUM_TOLERANCE}, got "
            + ", ".join(f"{k}={v}" for k, v in values.items())
            + f" (sum {total:.4g})",
            code="WEIGHT_NORMALIZATION_FAILED",
            where=where,
        )


def make_rule(name: str, spec: Mapping[str, Any], *, where: str, source: str = "yaml") -> ConstraintRule:
    """Validate one rule specification (INVALID_CONSTRAINT_RULE) and return it resolved."""

    def fail(message: str) -> ConfigurationError:
        return ConfigurationError(message, code="INVALID_CONSTRAINT_RULE", where=where)

    unknown = set(spec) - {
        "field_name", "rule_type", "constraint_level", "weight", "threshold", "entity_type", "entity_id",
    }
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}")
    field_name = spec.get("field_name")
    rule_type = str(spec.get("rule_type") or "").strip().lower()
    level = str(spec.get("constraint_level") or "soft").strip().lower()
    entity_type = str(spec.get("entity_type") or "INSTITUTION").strip().upper()
    if rule_type not in RULE_TYPES:
        raise fail(f"rule_type {spec.get('rule_type')!r} is not one of {list(RULE_TYPES)}")
    if level not in CONSTRAINT_LEVELS:
        raise fail(f"constraint_level {spec.get('constraint_level')!r} is not one of {list(CONSTRAINT_LEVELS)}")
    if entity_type not in SCOPE_TYPES:
        raise fail(f"entity_type {spec.get('entity_type')!r} is not one of {list(SCOPE_TYPES)}")
    if not field_name and rule_type != "capacity_limit":
        raise fail("field_name is required")
    try:
        weight = float(spec.get("weight", 1.0) if spec.get("weight") is not None else 1.0)
        threshold_raw = spec.get("threshold")
        threshold = DEFAULT_THRESHOLDS[rule_type] if threshold_raw is None else float(threshold_raw)
    except (TypeError, ValueError) as exc:
        raise fail(f"weight and threshold must be numbers ({exc})") from exc
    if not 0.0 <= weight <= MAX_RULE_WEIGHT or math.isnan(weight):
        raise fail(f"weight {weight} is outside [0, {MAX_RULE_WEIGHT:g}]")
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise fail(f"threshold {threshold} is outside [0, 1]")
    if level == "hard" and rule_type in ("homogeneous", "max_variance"):
        raise fail(
            f"a {rule_type} rule can only be soft (a hard rule on a field is `no_mix`)"
        )
    if level == "hard" and entity_type == "COURSE":
        raise fail("hard rules apply to the whole institution or a programme, not to a course")
    entity_id = spec.get("entity_id")
    if entity_type in ("PROGRAM", "COURSE") and not entity_id:
        raise fail(f"entity_type {entity_type} needs an entity_id")
    return ConstraintRule(
        name=name,
        field_name=str(field_name or "capacity"),
        rule_type=rule_type,
        level=level,
        weight=weight,
        threshold=threshold,
        entity_type=entity_type,
        entity_id=None if entity_id is None else str(entity_id),
        source=source,
    )


def size_deviation_cost(weights: Weights, base_cost: float) -> float:
    """λ = base_cost × (balance + size) / homogeneity: how the weights trade course similarity
    against equal sizes. ``inf`` (exact equal sizes) when homogeneity has no weight."""
    if weights.homogeneity <= 0:
        return math.inf
    return base_cost * (weights.balance + weights.size) / weights.homogeneity


# ----------------------------------------------------------------------------- EAV overrides


def _eav_values_in_force(data: Any, as_of: datetime, tenant_id: str | None) -> pd.DataFrame:
    """EAV value rows joined with their parameter codes, filtered to those in force."""
    values = getattr(data, "entity_parameter_values", None)
    params = getattr(data, "dynamic_parameters", None)
    if values is None or params is None or values.empty:
        return pd.DataFrame()
    frame = values.copy()
    # the file row (the loader's ``source_row``; else the position, header = row 1)
    frame["_row"] = frame["source_row"] if "source_row" in frame.columns else range(2, len(frame) + 2)
    issues: list[ValidationIssue] = []
    as_of_ts = pd.Timestamp(as_of)
    in_force = pd.Series(True, index=frame.index)
    for column, compare in (("effective_from", "le"), ("effective_to", "gt")):
        if column not in frame.columns:
            continue
        raw = frame[column]
        parsed = pd.to_datetime(raw, errors="coerce", utc=True)
        bad = raw.notna() & (raw.astype("string").str.strip() != "") & parsed.isna()
        for idx in frame.index[bad]:
            issues.append(
                ValidationIssue("INVALID_DATE", EAV_FILE, "not a date", int(frame.at[idx, "_row"]), column, raw[idx])
            )
        within = (parsed <= as_of_ts) if compare == "le" else (parsed > as_of_ts)
        in_force &= parsed.isna() | within  # an empty bound is open
    if issues:
        raise InputValidationError(issues, input_dir=str(getattr(data, "input_dir", "")))
    if tenant_id is not None and "tenant_id" in frame.columns:
        tenant = frame["tenant_id"].astype("string")
        in_force &= tenant.isna() | (tenant == tenant_id)
    frame = frame.loc[in_force]
    codes = params[["parameter_id", "parameter_code"]].drop_duplicates("parameter_id")
    return frame.merge(codes, on="parameter_id", how="inner")


def _eav_value(row: pd.Series) -> Any:
    for column in EAV_VALUE_COLUMNS:
        value = row[column] if column in row.index else None
        if value is not None and not pd.isna(value) and str(value).strip() != "":
            if column == "json_value" or (column == "parameter_value" and str(value).lstrip().startswith("{")):
                return json.loads(value) if isinstance(value, str) else value
            return value
    return None


def _whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a finite whole number (``40``, ``40.0``, ``"40"``), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != round(number):
        return None
    return int(number)


@contextmanager
def _naming_eav_rows(sources: Mapping[str, str], keys: list[str]) -> Iterator[None]:
    """Re-raise a :class:`ConfigurationError` of the block naming the EAV rows that set any of
    ``keys``: the value to fix is in the input, not in the YAML."""
    try:
        yield
    except ConfigurationError as exc:
        rows = list(dict.fromkeys(sources[k] for k in keys if k in sources))
        if not rows:
            raise
        exc.where = f"{exc.where}, set by {'; '.join(rows)}" if exc.where else "; ".join(rows)
        exc.args = (str(exc),)
        raise


def _eav_where(row: pd.Series) -> str:
    return f"{EAV_FILE}, row {int(row['_row'])} (parameter {row['parameter_code']!r})"


def _apply_eav(
    eav: pd.DataFrame,
    bounds: dict[str, int],
    weights: dict[str, float],
    shared_threshold: float,
    rules: dict[tuple[str, str, str | None], ConstraintRule],
    sources: dict[str, str] | None = None,
    prerequisite_policies: dict[str | None, str] | None = None,
) -> tuple[dict[str, dict[str, int]], float, list[AppliedOverride], list[str]]:
    """Apply the EAV rows in force. ``sources`` (filled in if given) maps each overridden key
    (``batch_size.min``, ``batch_size[<program>].max``, ``weights.size``,
    ``enrollment.shared_threshold``, ``rule:<source>``) to the EAV row that set it, so that a
    value failing a later check is reported at its row. ``prerequisite_policies`` (filled in
    if given) maps ``None`` (everyone) or a programme id to its ``enrollment.prerequisites``."""
    program_bounds: dict[str, dict[str, int]] = {}
    applied: list[AppliedOverride] = []
    warnings: list[str] = []
    sources = {} if sources is None else sources
    # deterministic: later rows (by file order) win within one (code, entity)
    for _, row in eav.sort_values("_row").iterrows():
        code = str(row["parameter_code"]).strip()
        entity_type = str(row["entity_type"]).strip().upper()
        entity_id = str(row["entity_id"]).strip()
        where = _eav_where(row)
        try:
            value = _eav_value(row)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"json_value is not valid JSON ({exc})", code="INVALID_CONSTRAINT_RULE",
                                     where=where) from exc
        if value is None:
            continue
        value_id = str(row.get("value_id", row["_row"]))
        if code.startswith("batch_size."):
            key = code.split(".", 1)[1]
            if key not in ("min", "target", "max"):
                raise ConfigurationError(f"unknown parameter code {code!r}", where=where)
            number = _whole_number(value)
            if number is None:
                raise ConfigurationError(f"{code} must be a whole number, got {value!r}",
                                         code="BATCH_SIZE_BOUNDS_VIOLATED", where=where)
            if entity_type in GLOBAL_SCOPES:
                bounds[key] = number
                sources[code] = where
            elif entity_type == "PROGRAM":
                program_bounds.setdefault(entity_id, {})[key] = number
                sources[f"batch_size[{entity_id}].{key}"] = where
            else:
                raise ConfigurationError(f"{code} cannot be set per {entity_type}", where=where)
        elif code.startswith("weights."):
            key = code.split(".", 1)[1]
            if key not in weights or entity_type not in GLOBAL_SCOPES:
                raise ConfigurationError(f"{code} for {entity_type} is not a known override", where=where)
            try:
                weights[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{code} must be a number, got {value!r}",
                                         code="WEIGHT_NORMALIZATION_FAILED", where=where) from exc
            sources[code] = where
        elif code == "enrollment.shared_threshold":
            try:
                shared_threshold = float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{code} must be a number, got {value!r}", where=where) from exc
            sources[code] = where
        elif code == "enrollment.prerequisites":
            policy = str(value).strip().lower()
            if policy not in PREREQUISITE_POLICIES or entity_type not in (*GLOBAL_SCOPES, "PROGRAM"):
                raise ConfigurationError(f"{code} for {entity_type} must be one of {', '.join(PREREQUISITE_POLICIES)} "
                                         f"(for INSTITUTION, TENANT or PROGRAM), got {value!r}", where=where)
            if prerequisite_policies is not None:
                prerequisite_policies[None if entity_type in GLOBAL_SCOPES else entity_id] = policy
        elif code.startswith("constraint."):
            if not isinstance(value, Mapping):
                raise ConfigurationError("a constraint rule needs a JSON object value",
                                         code="INVALID_CONSTRAINT_RULE", where=where)
            name = code.split(".", 1)[1]
            spec = dict(value)
            spec["entity_type"] = entity_type
            spec["entity_id"] = None if entity_type in GLOBAL_SCOPES else entity_id
            rule = make_rule(name, spec, where=where, source=f"eav:{value_id}")
            sources[f"rule:{rule.source}"] = where
            scope_key = (name, "GLOBAL" if rule.is_global else rule.entity_type, rule.entity_id)
            rules[scope_key] = rule
        else:
            warnings.append(f"{where}: parameter code {code!r} is not used by stage2")
            continue
        applied.append(AppliedOverride(code, entity_type, entity_id, value, value_id))
    return program_bounds, shared_threshold, applied, warnings


# ----------------------------------------------------------------------------- entry point


def build_settings(cfg: Stage2Config | DictConfig | Mapping[str, Any], data: Any = None) -> BatchingSettings:
    """Validate ``cfg`` (a :class:`Stage2Config`, a composed configuration or a mapping of the
    same shape: :func:`~stage2.config.schema.to_stage2_config`), apply the EAV overrides found
    in ``data`` (an :class:`~stage2.contract.InstitutionData`, optional) and check the rules
    against the student columns.

    Raises :class:`ConfigurationError` with BATCH_SIZE_BOUNDS_VIOLATED,
    WEIGHT_NORMALIZATION_FAILED or INVALID_CONSTRAINT_RULE.
    """
    conf = to_stage2_config(cfg)
    as_of = parse_as_of(conf.as_of)
    bounds = {"min": conf.batch_size.min, "target": conf.batch_size.target, "max": conf.batch_size.max}
    weights = {"homogeneity": float(conf.weights.homogeneity), "balance": float(conf.weights.balance),
               "size": float(conf.weights.size)}
    shared_threshold = float(conf.enrollment.shared_threshold)
    rules: dict[tuple[str, str, str | None], ConstraintRule] = {}
    for name, spec in (conf.constraints.rules or {}).items():
        rule = make_rule(name, spec, where=f"constraints.rules.{name}")
        rules[(name, "GLOBAL" if rule.is_global else rule.entity_type, rule.entity_id)] = rule
    tenant_id = conf.institution.tenant_id if conf.institution is not None else None

    program_bounds_raw: dict[str, dict[str, int]] = {}
    applied: list[AppliedOverride] = []
    warnings: list[str] = []
    sources: dict[str, str] = {}
    prerequisite_policies: dict[str | None, str] = {}
    if data is not None:
        eav = _eav_values_in_force(data, as_of, tenant_id)
        if not eav.empty:
            program_bounds_raw, shared_threshold, applied, warnings = _apply_eav(
                eav, bounds, weights, shared_threshold, rules, sources, prerequisite_policies
            )
    if conf.enrollment.prerequisites not in PREREQUISITE_POLICIES:
        raise ConfigurationError(f"enrollment.prerequisites={conf.enrollment.prerequisites!r} is not one of "
                                 f"{', '.join(PREREQUISITE_POLICIES)}", where="enrollment.prerequisites")

    global_bounds = SizeBounds(int(bounds["min"]), int(bounds["target"]), int(bounds["max"]))
    bound_keys = [f"batch_size.{k}" for k in ("min", "target", "max")]
    with _naming_eav_rows(sources, bound_keys):
        warnings += validate_bounds(global_bounds)
    weights_obj = Weights(**weights)
    with _naming_eav_rows(sources, [f"weights.{k}" for k in ("homogeneity", "balance", "size")]):
        validate_weights(weights_obj)
    if not 0.0 <= shared_threshold <= 1.0:
        with _naming_eav_rows(sources, ["enrollment.shared_threshold"]):
            raise ConfigurationError(
                f"enrollment.shared_threshold={shared_threshold} is outside [0, 1]", where="enrollment.shared_threshold"
            )
    validate_parallel(conf.parallel)
    validate_faculty(conf.resources.faculty)
    if conf.enrollment.prerequisites_listed < 0:
        raise ConfigurationError(f"enrollment.prerequisites_listed={conf.enrollment.prerequisites_listed} must be "
                                 "at least 0", where="enrollment.prerequisites_listed")
    program_bounds = {}
    for program_id, partial in sorted(program_bounds_raw.items()):
        merged = replace(global_bounds, **partial)
        keys = [f"batch_size[{program_id}].{k}" for k in ("min", "target", "max")] + bound_keys
        with _naming_eav_rows(sources, keys):
            warnings += validate_bounds(merged, where=f"batch_size for program {program_id!r} (EAV)")
        program_bounds[program_id] = merged

    # stable: YAML order within a scope, so group keys read program, year, semester
    ordered_rules = tuple(sorted(rules.values(), key=lambda r: (not r.is_global, r.entity_type, r.entity_id or "")))
    if data is not None:
        _check_rule_fields(ordered_rules, data, sources)
    return BatchingSettings(
        bounds=global_bounds,
        weights=weights_obj,
        rules=ordered_rules,
        shared_threshold=shared_threshold,
        seed=conf.seed,
        strict=conf.strict,
        as_of=as_of,
        program_bounds=program_bounds,
        soft_rule_scale=float(conf.constraints.soft_rule_scale),
        deviation_cost=size_deviation_cost(weights_obj, float(conf.batch_size.deviation_cost)),
        overrides=tuple(applied),
        warnings=tuple(warnings),
        prerequisite_policy=prerequisite_policies.pop(None, conf.enrollment.prerequisites),
        program_prerequisite_policies={k: v for k, v in prerequisite_policies.items() if k is not None},
    )


def validate_parallel(parallel: ParallelConfig) -> None:
    """Raise :class:`ConfigurationError` (INVALID_CONFIGURATION) for an unknown backend, a worker
    count of 0 or below -1, or a non-positive worker wait."""
    if parallel.backend not in PARALLEL_BACKENDS:
        raise ConfigurationError(f"parallel.backend={parallel.backend!r} is not one of {', '.join(PARALLEL_BACKENDS)}",
                                 where="parallel.backend")
    if parallel.n_workers == 0 or parallel.n_workers < -1:
        raise ConfigurationError(f"parallel.n_workers={parallel.n_workers}: use a positive count, or -1 for one "
                                 "worker per core", where="parallel.n_workers")
    if not parallel.worker_wait_s > 0:
        raise ConfigurationError(f"parallel.worker_wait_s={parallel.worker_wait_s} must be positive",
                                 where="parallel.worker_wait_s")


def validate_faculty(faculty: FacultyConfig) -> None:
    """Raise :class:`ConfigurationError` (INVALID_CONFIGURATION) for a session shorter than a
    minute, or a ``min_competency`` or ``default_sessions_per_week`` outside the contract's range."""
    if not round(faculty.session_hours * 60) >= 1:
        raise ConfigurationError(f"resources.faculty.session_hours={faculty.session_hours} must be positive "
                                 "(at least a minute)", where="resources.faculty.session_hours")
    if not COMPETENCY_MIN <= faculty.min_competency <= COMPETENCY_MAX:
        raise ConfigurationError(f"resources.faculty.min_competency={faculty.min_competency} is outside "
                                 f"[{COMPETENCY_MIN}, {COMPETENCY_MAX}]", where="resources.faculty.min_competency")
    if not SESSIONS_PER_WEEK_MIN <= faculty.default_sessions_per_week <= SESSIONS_PER_WEEK_MAX:
        raise ConfigurationError(f"resources.faculty.default_sessions_per_week={faculty.default_sessions_per_week} "
                                 f"is outside [{SESSIONS_PER_WEEK_MIN}, {SESSIONS_PER_WEEK_MAX}]",
                                 where="resources.faculty.default_sessions_per_week")


#: columns the loader adds to the student frame: not columns of student_data.csv
_DERIVED_STUDENT_COLUMNS = ("preferred_shift_raw",)


def _check_rule_fields(rules: tuple[ConstraintRule, ...], data: Any, sources: Mapping[str, str] | None = None) -> None:
    students = data.students
    sources = sources or {}
    for rule in rules:
        where = f"constraint rule {rule.name!r} ({sources.get(f'rule:{rule.source}', rule.source)})"
        if rule.rule_type == "capacity_limit":
            continue
        if rule.field_name not in students.columns:
            columns = [str(c) for c in students.columns if c not in _DERIVED_STUDENT_COLUMNS]
            raise ConfigurationError(
                f"field_name {rule.field_name!r} is not a column of student_data.csv "
                f"(columns: {', '.join(columns)})",
                code="INVALID_CONSTRAINT_RULE",
                where=where,
            )
        if rule.rule_type == "max_variance":
            numeric = pd.to_numeric(students[rule.field_name], errors="coerce")
            if numeric.notna().sum() == 0:
                raise ConfigurationError(
                    f"max_variance needs a numeric column; {rule.field_name!r} has no numbers",
                    code="INVALID_CONSTRAINT_RULE",
                    where=where,
                )
