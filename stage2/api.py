"""The convenience API: batching and validation as one function call each, for users who want
Python keywords rather than Hydra's command line. A thin shell over :mod:`stage2.pipeline`.

- :func:`quick_batch_processing` runs the pipeline, like ``python -m stage2``;
- :func:`validate_batch_processing_inputs` checks an export without batching and returns a
  :class:`ValidationReport` (the content of a dry run), writing nothing.

Both take the run's settings as keywords. The names are derived from the configuration schema
(:class:`stage2.config.schema.Stage2Config`), which also holds every default: a key
``batch_size.min`` is the keyword ``batch_size_min``; a config group (``algorithm``,
``weights``, ``constraints``, ``institution``, ...) is chosen by its name
(``algorithm="kmeans"``), and a group with an ``enabled`` key is also switched by a boolean
(``tracking=False``). :func:`accepted_settings` lists them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from stage2.config.schema import ALGORITHM_SCHEMAS, AlgorithmConfig, Stage2Config, to_stage2_config
from stage2.errors import ERROR_CODES, ConfigurationError, InputValidationError, Stage2Error
from stage2.locations import config_dir
from stage2.pipeline import BatchingResult, load_config, process_student_batching, stage_table
from stage2.pipeline.publish import dry_run_report
from stage2.pipeline.runner import StageRunner
from stage2.sizing import BatchPlan
from stage2.tracking import TrackingRun

__all__ = ["Problem", "ValidationReport", "accepted_settings", "quick_batch_processing",
           "validate_batch_processing_inputs"]

#: configuration keys that are these functions' parameters, not keyword settings
PARAMETER_KEYS = {"data.input_dir": "input_dir", "output_dir": "output_dir"}
#: the key a boolean switches when given for a config group (``tracking=False``)
GROUP_SWITCH_KEY = "enabled"
#: each function's own parameters (a setting of the same name is refused with a hint)
_PARAMETERS = {"quick_batch_processing": ("input_dir", "output_dir"),
               "validate_batch_processing_inputs": ("input_dir",)}


@dataclass(frozen=True)
class _Setting:
    """What one keyword sets: a configuration key, or a config group's option."""

    key: str
    #: a config group's options (empty for a key)
    options: tuple[str, ...] = ()
    #: the group is in ``config.yaml``'s defaults list (``algorithm=x``), else added (``+institution=x``)
    in_defaults: bool = True
    #: the group's schema has :data:`GROUP_SWITCH_KEY`
    switchable: bool = False


def _nested_dataclass(hint: Any) -> type | None:
    """The dataclass a field holds (also ``X | None``), else ``None``."""
    candidates = [hint, *typing.get_args(hint)]
    return next((c for c in candidates if isinstance(c, type) and dataclasses.is_dataclass(c)), None)


def _leaf_keys(schema: type, prefix: str = "") -> Iterator[str]:
    """Every configuration key below ``schema`` whose value is not itself a section."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        nested = _nested_dataclass(hints[f.name])
        if nested is None:
            yield prefix + f.name
            continue
        # the algorithm section's keys depend on the algorithm chosen: accept each one's
        schemas = list(ALGORITHM_SCHEMAS.values()) if nested is AlgorithmConfig else [nested]
        seen: set[str] = set()
        for schema_of_section in schemas:
            for key in _leaf_keys(schema_of_section, f"{prefix}{f.name}."):
                if key not in seen:
                    seen.add(key)
                    yield key


@lru_cache(maxsize=1)
def _settings_table() -> dict[str, _Setting]:
    """keyword -> what it sets, from the schema and the config groups of ``conf/``."""
    root = config_dir()
    primary = OmegaConf.to_container(OmegaConf.load(root / "config.yaml"))
    defaults = primary.get("defaults", []) if isinstance(primary, dict) else []
    default_groups = {name for entry in defaults if isinstance(entry, Mapping) for name in entry}
    hints = typing.get_type_hints(Stage2Config)
    table: dict[str, _Setting] = {}
    groups = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name in hints)
    for group in groups:
        section = _nested_dataclass(hints[group])
        switchable = section is not None and GROUP_SWITCH_KEY in {f.name for f in dataclasses.fields(section)}
        table[group] = _Setting(group, tuple(sorted(p.stem for p in (root / group).glob("*.yaml"))),
                                in_defaults=group in default_groups, switchable=switchable)
    for key in _leaf_keys(Stage2Config):
        parent, _, name = key.rpartition(".")
        if key in PARAMETER_KEYS or (parent in groups and name == "name"):  # the group keyword sets the name
            continue
        keyword = key.replace(".", "_")
        if keyword in table:
            raise RuntimeError(f"two settings are named {keyword!r}: {table[keyword].key} and {key}")
        table[keyword] = _Setting(key)
    return table


def accepted_settings() -> dict[str, str]:
    """Each keyword setting and what it sets: a configuration key (``batch_size_min`` ->
    ``batch_size.min``) or a config group with its options (``algorithm`` ->
    ``algorithm=balanced|hierarchical|kmeans|spectral``)."""
    return {keyword: f"{s.key}={'|'.join(s.options)}" if s.options else s.key
            for keyword, s in sorted(_settings_table().items())}


def _plain(value: Any) -> Any:
    """A Python value as the configuration holds it: paths as text, dates in ISO 8601."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _unknown_settings_error(unknown: list[str], caller: str) -> ConfigurationError:
    table = _settings_table()
    hints = []
    for name in unknown:
        parameter = PARAMETER_KEYS.get(name.replace("_", ".", 1)) or PARAMETER_KEYS.get(name)
        if parameter is not None:
            hints.append(f"{name}: pass it as the {parameter} parameter" if parameter in _PARAMETERS[caller]
                         else f"{name}: {caller} writes nothing, it takes no {parameter}")
        elif close := difflib.get_close_matches(name, list(table), n=3):
            hints.append(f"{name}: did you mean {' or '.join(close)}?")
    return ConfigurationError(
        f"unknown setting(s) {', '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else "")
        + f". Accepted: {', '.join(sorted(table))}",
        where=f"{caller}() keyword arguments",
        fix="use an accepted name (stage2.api.accepted_settings() maps each to its configuration key)",
    )



def compose_settings(settings: Mapping[str, Any], caller: str = "quick_batch_processing") -> DictConfig:
    """The configuration ``python -m stage2`` composes with the same settings as overrides.

    Raises :class:`~stage2.errors.ConfigurationError` (``INVALID_CONFIGURATION``) for an
    unknown name (listing the accepted ones), an option a config group lacks, or a value of
    the wrong type, before any data is read.
    """
    table = _settings_table()
    if unknown := sorted(set(settings) - set(table)):
        raise _unknown_settings_error(unknown, caller)
    overrides: list[str] = []
    updates: list[tuple[str, str, Any]] = []
    where = f"{caller}() keyword arguments"
    for keyword, value in settings.items():
        setting = table[keyword]
        if not setting.options:
            updates.append((keyword, setting.key, _plain(value)))
        elif isinstance(value, bool) and setting.switchable:
            updates.append((keyword, f"{setting.key}.{GROUP_SWITCH_KEY}", value))
        elif isinstance(value, str) and value in setting.options:
            overrides.append(f"{'' if setting.in_defaults else '+'}{setting.key}={value}")
        else:
            switch = " or a boolean (its enabled key)" if setting.switchable else ""
            raise ConfigurationError(f"{keyword}={value!r} is not an option of the {setting.key} group "
                                     f"(options: {', '.join(setting.options)}{switch})", where=where)
    cfg = load_config(overrides)
    for keyword, key, value in updates:
        section = key.rpartition(".")[0]
        if section and OmegaConf.select(cfg, section) is None:
            raise ConfigurationError(f"{keyword} sets {key}, but this configuration has no {section} section",
                                     where=where, fix=f"choose one as well, e.g. {section}=<option>")
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as exc:
            owners = [name for name, schema in ALGORITHM_SCHEMAS.items()
                      if key.partition(".")[0] == "algorithm" and key.partition(".")[2] in schema.__dataclass_fields__]
            raise ConfigurationError(f"{keyword}={value!r} ({key}): {str(exc).strip().splitlines()[0]}", where=where,
                                     fix=f"{keyword} belongs to algorithm={' or '.join(map(repr, owners))}: choose "
                                         "it too" if owners else None) from None
    return cfg


def quick_batch_processing(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str] | None = None,
                           **settings: Any) -> BatchingResult:
    """Batch the institution exported in ``input_dir``; return the :class:`BatchingResult`.

    ``settings``: keyword settings (``batch_size_min=20``, ``algorithm="kmeans"``, ``seed=7``,
    ``tracking=False``, ...; :func:`accepted_settings`), each the same as the override of its
    key on ``python -m stage2``; anything unset keeps the schema's default, so tracking is on
    (the MLflow store of ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else
    ``./mlflow.db``) and the audit notebook runs unless ``report_notebook=False``.

    ``output_dir`` receives every file of the run; ``None``: a new temporary directory
    (``result.output_dir``; the caller removes it). Nothing is written into ``input_dir``.
    Raises like :func:`stage2.process_student_batching`: a
    :class:`~stage2.errors.Stage2Error` with its code (an unknown setting before anything is
    written; a failed run leaves ``errors.json`` and no Stage 3 CSV in the output directory).
    """
    cfg = compose_settings(settings, "quick_batch_processing")
    out = Path(tempfile.mkdtemp(prefix="stage2-run-")) if output_dir is None else Path(output_dir)
    try:
        return process_student_batching(cfg, input_dir=Path(input_dir), output_dir=out)
    except Stage2Error as exc:
        exc.add_note(f"stage2: errors.json and the run's log are in {out.resolve()}")
        raise


@dataclass(frozen=True)
class Problem:
    """One problem that stops a run: an input cell, file or column (``file``, ``row`` as the
    file's line number with the header on line 1, ``column``), or a group, setting or directory
    (``where``), with its code from :mod:`stage2.errors` and the fix."""

    code: str
    message: str
    file: str | None = None
    row: int | None = None
    column: str | None = None
    value: str | None = None
    where: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        place = ", ".join(part for part in (self.file, None if self.row is None else f"row {self.row}",
                                            None if self.column is None else f"column '{self.column}'",
                                            self.where) if part)
        value = "" if self.value is None else f" (value {self.value!r})"
        return f"[{self.code}] {place + ': ' if place else ''}{self.message}{value}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def problems_of(error: Stage2Error) -> list[Problem]:
    """Every problem an error carries: each input issue of an
    :class:`~stage2.errors.InputValidationError` (or listed in ``details["issues"]``), else the
    error itself."""
    records: list[Mapping[str, Any]]
    if isinstance(error, InputValidationError):
        records = [issue.to_dict() for issue in error.issues]
    else:
        records = [r for r in error.details.get("issues", []) if isinstance(r, Mapping) and "code" in r]
    if not records:
        return [Problem(error.code, error.message, where=error.where, fix=error.fix)]
    return [Problem(str(r["code"]), str(r.get("message", "")), file=r.get("file"), row=r.get("row"),
                    column=r.get("column"), value=r.get("value"), where=r.get("where"),
                    fix=r.get("fix") or ERROR_CODES.get(str(r["code"])))
            for r in records]


@dataclass
class ValidationReport:
    """What :func:`validate_batch_processing_inputs` found: every problem that would stop a
    run, the warnings, and the plan (``summary``: the content of a dry run's
    ``validation_report.json``: students, groups, batches per group, room check; empty when
    the input or configuration is too broken to plan)."""

    input_dir: Path
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: the batch plan itself, when one was made
    plan: BatchPlan | None = None

    @property
    def ok(self) -> bool:
        """``True`` when nothing stops a run on this input (warnings may remain)."""
        return not self.problems

    @property
    def status(self) -> str:
        return "valid" if self.ok else "invalid"

    @property
    def n_batches(self) -> int | None:
        return self.summary.get("n_batches")

    @property
    def groups(self) -> list[dict[str, Any]]:
        return list(self.summary.get("groups", []))

    @property
    def room_check(self) -> dict[str, Any]:
        return dict(self.summary.get("room_check", {}))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: ``validation_report.json``'s keys plus ``ok`` and ``problems``."""
        return {**self.summary, "status": self.status, "ok": self.ok, "input_dir": str(self.input_dir),
                "problems": [p.to_dict() for p in self.problems], "warnings": list(self.warnings)}

    def __str__(self) -> str:
        lines = [f"stage2 validation of {self.input_dir}: {self.status}"]
        if self.summary:
            s, rooms = self.summary, self.room_check
            lines.append(f"{s['n_students']} students ({s['n_inactive_students']} inactive) in {s['n_groups']} "
                         f"group(s) -> {s['n_batches']} batch(es)")
            lines.append(f"rooms: {rooms['slots']} (room, shift) slots for {rooms['batches']} batches; largest room "
                         f"{rooms['largest_room']}, largest planned batch {rooms['largest_planned_batch']}")
            lines += [f"  group {g['key']}: {g['n_students']} students -> {g['n_batches']} batch(es) of "
                      f"{g['batch_sizes']} ({g['status']})" for g in self.groups]
        if self.problems:
            lines.append(f"problems ({len(self.problems)}):")
            lines += [f"  - {p}" for p in self.problems]
        if self.warnings:
            lines.append(f"warnings ({len(self.warnings)}):")
            lines += [f"  - {w}" for w in self.warnings]
        return "\n".join(lines)


def validate_batch_processing_inputs(input_dir: str | os.PathLike[str], **settings: Any) -> ValidationReport:
    """Check the export in ``input_dir`` and plan its batches without batching: what
    ``python -m stage2 dry_run=true`` computes (the input per the data contract, the
    configuration with the EAV overrides, the groups and their batches, the room check),
    returned as a :class:`ValidationReport`. Writes nothing: no file, no MLflow run, no
    checkpoint.

    Problems in the input or the configuration are listed in the report (``report.ok`` is
    ``False``), not raised. ``settings`` are those of :func:`quick_batch_processing` (the
    plan depends on ``batch_size_*``, ``strict``, ``resources_room_types``, ...); an unknown
    name or a value of the wrong type raises :class:`~stage2.errors.ConfigurationError`.
    """
    cfg = compose_settings(settings, "validate_batch_processing_inputs")
    directory = Path(input_dir).resolve()
    OmegaConf.update(cfg, "data.input_dir", str(directory), merge=False)
    report = ValidationReport(directory)
    catalog: dict[str, Any] = {}
    try:
        config = to_stage2_config(cfg)
        config.dry_run = True
        # a validation keeps nothing: the stages' checkpoints are for runs that continue
        stages = [dataclasses.replace(stage, checkpoint=False) for stage in stage_table(config)]
        catalog.update(config=config, input_dir=directory, run=TrackingRun(None, None))
        StageRunner().run(stages, catalog)
    except Stage2Error as exc:
        report.problems = problems_of(exc)
    if "plan" in catalog:
        report.summary = dry_run_report(catalog)
        report.summary.pop("run_id", None)
        report.warnings = list(report.summary.pop("warnings"))
        report.plan = catalog["plan"]
    else:
        report.warnings = list(getattr(catalog.get("data"), "warnings", [])) + list(
            getattr(catalog.get("settings"), "warnings", []))
    return report
