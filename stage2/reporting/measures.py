"""The quality measures of ``quality.md`` as rows of a report: value, threshold, verdict.

Shared by the console/text/HTML/CSV reports (:mod:`stage2.reporting.reports`) and the audit
notebook (:mod:`stage2.reporting.audit`), so every report judges a run the same way.

A measure's verdict is the one recorded in ``quality_report.json`` (``thresholds``: the run's
configured ``metrics.thresholds``); the two counts that must be zero
(``size_bound_violations``, ``hard_constraint_violations``) are judged here. The design's own
acceptance thresholds (:data:`stage2.config.schema.ACCEPTANCE_THRESHOLDS`) are shown beside
the configured ones, so a run judged by relaxed thresholds is visible as such.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stage2.config.schema import ACCEPTANCE_THRESHOLDS

#: name -> (direction, meaning), in the order of quality.md
QUALITY_MEASURES: dict[str, tuple[str, str]] = {
    "n_students": ("", "active students batched"),
    "n_batches": ("", "batches formed"),
    "n_groups": ("", "mixable groups (distinct hard no_mix keys)"),
    "academic_coherence": ("higher", "share of course demands attended together with the batch"),
    "course_sse": ("lower", "within-batch spread of the students' course sets"),
    "course_sse_per_student": ("lower", "course_sse per student"),
    "sections_per_batch": ("lower", "distinct courses a batch's members take"),
    "size_balance": ("higher", "1 = equal batch sizes in every group"),
    "size_bound_violations": ("zero", "batches outside [min, max], groups smaller than min excepted"),
    "hard_constraint_violations": ("zero", "(batch, hard rule) pairs broken"),
    "constraint_satisfaction_rate": ("higher", "satisfied (batch, rule) checks, hard and soft"),
    "shift_preference_satisfaction": ("higher", "students with a preferred shift who got it"),
    "resource_utilization": ("higher", "seats filled in the rooms given"),
    "room_placement_rate": ("higher", "batches with a room and shift"),
    "silhouette_score": ("higher", "separation of the batches' course sets"),
    "faculty_coverage": ("higher", "section-hours the competent faculty can cover (max-flow), with the faculty tables"),
    "prerequisite_violations": ("zero", "current enrollments without a mandatory prerequisite in the history"),
    "runtime_s": ("lower", "wall time of the run, seconds"),
    "peak_memory_mb": ("lower", "peak resident memory of the stage2 process (VmHWM), MiB"),
    "peak_memory_workers_mb": ("lower", "summed peak resident memory of the clustering worker processes, MiB"),
}
#: measures only some runs report (``faculty_coverage``: only with the faculty tables)
OPTIONAL_MEASURES = ("faculty_coverage",)
#: measures that must be exactly zero
ZERO_MEASURES = ("size_bound_violations", "hard_constraint_violations")


@dataclass(frozen=True)
class MeasureRow:
    """One measure of a run, judged."""

    name: str
    value: float | int | None
    #: the run's threshold (``>=``; 0 for the counts that must be zero), or None
    threshold: float | None
    #: True/False against ``threshold``; None when the measure has no threshold
    passed: bool | None
    direction: str = ""
    meaning: str = ""
    #: the design's acceptance threshold (quality.md), or None
    design_threshold: float | None = None
    #: True/False against ``design_threshold``; None when the design sets none
    meets_design: bool | None = None
    #: batches (or groups) the run's report holds responsible for a failed threshold
    responsible: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """The requirement in words: ``>= 0.70``, ``= 0``, ``higher is better``, ..."""
        if self.direction == "zero":
            return "= 0"
        if self.threshold is not None:
            return f">= {self.threshold:g}"
        return f"{self.direction} is better" if self.direction else ""

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``""`` (no threshold)."""
        return "" if self.passed is None else ("pass" if self.passed else "FAIL")


def read_quality_report(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``quality_report.json``."""
    return json.loads((Path(run_dir) / "quality_report.json").read_text(encoding="utf-8"))


def _number(value: Any) -> float | int | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and not math.isfinite(value) else value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def format_value(value: Any, digits: int = 4) -> str:
    """A measure's value for people: integers as such, floats with ``digits`` significant
    decimals, missing as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def measure_rows(report: Mapping[str, Any], *, include_stage_runtimes: bool = False) -> list[MeasureRow]:
    """One :class:`MeasureRow` per measure in ``report["metrics"]``: those of quality.md first,
    in its order, then any other (per-stage runtimes only with ``include_stage_runtimes``)."""
    metrics: Mapping[str, Any] = report.get("metrics") or {}
    verdicts: Mapping[str, Mapping[str, Any]] = report.get("thresholds") or {}
    names = [n for n in QUALITY_MEASURES if n in metrics or n in verdicts]
    names += [n for n in metrics if n not in QUALITY_MEASURES
              and (include_stage_runtimes or not str(n).startswith("runtime_s."))]
    names += [n for n in verdicts if n not in names]
    rows = []
    for name in names:
        direction, meaning = QUALITY_MEASURES.get(name, ("lower" if name.startswith("runtime_s.") else "", ""))
        if name.startswith("runtime_s.") and not meaning:
            meaning = f"wall time of the {name.split('.', 1)[1]} stage, seconds"
        value = _number(metrics.get(name, (verdicts.get(name) or {}).get("value")))
        threshold: float | None = None
        passed: bool | None = None
        responsible: tuple[str, ...] = ()
        if name in verdicts:
            verdict = verdicts[name]
            threshold = _number(verdict.get("threshold"))
            passed = bool(verdict.get("passed"))
            responsible = tuple(str(r) for r in verdict.get("responsible") or ())
        elif name in ZERO_MEASURES:
            threshold = 0
            passed = value is not None and value == 0
        design = ACCEPTANCE_THRESHOLDS.get(name)
        if name in ZERO_MEASURES:
            design = 0
        meets_design: bool | None = None
        if design is not None:
            if value is None:
                meets_design = passed if passed is not None else True
            elif name in ZERO_MEASURES:
                meets_design = value == 0
            else:
                meets_design = value >= design
        rows.append(MeasureRow(name, value, threshold, passed, direction, meaning, design, meets_design, responsible))
    return rows


__all__ = ["OPTIONAL_MEASURES", "QUALITY_MEASURES", "MeasureRow", "format_value", "measure_rows", "read_quality_report"]
