"""The report generator: a run's quality report for people, in the formats asked for.

``write_reports(run_dir, formats)`` reads ``quality_report.json`` (and ``batch_quality.csv``
when present) and writes, per format:

- ``console``: a Rich summary on stdout (plain text when stdout is not a terminal);
- ``txt``: ``report.txt``, the same summary as plain text;
- ``html``: ``report.html``, a standalone page (inline CSS, no script, nothing fetched) with the
  measures and thresholds, groups, least coherent batches, rule breaches, EAV overrides and
  warnings; every value is HTML-escaped (batch codes, group keys and warnings come from the
  institution's data);
- ``csv``: ``metrics.csv``, one row per metric: ``name, value, threshold, passed``.

``quality_report.json`` itself is the run's record and is always written by the pipeline.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from stage2.errors import ConfigurationError
from stage2.reporting.measures import MeasureRow, format_value, measure_rows, read_quality_report

#: format -> file written ("" = none)
REPORT_FORMATS: dict[str, str] = {"console": "", "txt": "report.txt", "html": "report.html", "csv": "metrics.csv"}
#: rows of a list (groups, breaches, warnings) shown before "... and N more"
MAX_LISTED = 200
#: batches listed as the least coherent
N_WORST = 10
#: width of the text report (and of the console summary when stdout is not a terminal)
TEXT_WIDTH = 110


def write_reports(run_dir: Path, formats: list[str]) -> list[Path]:
    """Write the run's reports in ``formats`` (any of ``console``, ``txt``, ``html``, ``csv``);
    return the files written (``console`` writes none).

    Raises :class:`~stage2.errors.ConfigurationError` naming an unknown format and the
    allowed ones, before writing anything.
    """
    formats = list(dict.fromkeys(str(f).strip().lower() for f in formats))
    unknown = [f for f in formats if f not in REPORT_FORMATS]
    if unknown:
        raise ConfigurationError(
            f"unknown report format(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(REPORT_FORMATS)}",
            where="report.formats",
            fix=f"use any of {', '.join(REPORT_FORMATS)} (quality_report.json is always written)",
        )
    run_dir = Path(run_dir)
    summary = RunSummary.read(run_dir)
    written: list[Path] = []
    for fmt in formats:
        if fmt == "console":
            from rich.console import Console

            summary.print(Console(stderr=False))
        elif fmt == "txt":
            written.append(_write(run_dir / REPORT_FORMATS[fmt], summary.text()))
        elif fmt == "html":
            written.append(_write(run_dir / REPORT_FORMATS[fmt], summary.html()))
        elif fmt == "csv":
            written.append(_write(run_dir / REPORT_FORMATS[fmt], summary.metrics_csv()))
    return written


def _write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


class RunSummary:
    """What every report format shows, computed once from the run's files."""

    def __init__(self, report: Mapping[str, Any], batch_quality: pd.DataFrame | None = None) -> None:
        self.report = report
        self.batch_quality = batch_quality
        self.measures = measure_rows(report)
        self.all_metrics = measure_rows(report, include_stage_runtimes=True)

    @classmethod
    def read(cls, run_dir: Path) -> RunSummary:
        from stage2.outputs import BATCH_QUALITY
        from stage2.reporting.audit import read_run_table

        report = read_quality_report(run_dir)
        path = Path(run_dir) / BATCH_QUALITY
        return cls(report, read_run_table(path, "batch_quality") if path.is_file() else None)

    # ---------------------------------------------------------------------------- content

    @property
    def institution(self) -> str:
        config = self.report.get("config") or {}
        name = (config.get("institution") or {}).get("name")
        return str(name or Path(str(self.report.get("input_dir") or "")).name or "institution")

    @property
    def header(self) -> list[tuple[str, str]]:
        r = self.report
        digest = str(r.get("data_digest") or "")
        return [
            ("run", str(r.get("run_id") or ("(not tracked: the tracking store was unavailable)"
                                            if (r.get("tracking") or {}).get("status") == "unavailable"
                                            else "(not tracked)"))),
            ("as of", str(r.get("as_of") or "")),
            ("generated", str(r.get("generated_at") or "")),
            ("input", str(r.get("input_dir") or "")),
            ("data digest", digest[:16] + ("…" if len(digest) > 16 else "")),
            ("algorithm", str(((r.get("config") or {}).get("algorithm") or {}).get("name") or "")),
        ]

    @property
    def passed(self) -> bool:
        return all(m.passed is not False for m in self.measures)

    @property
    def groups(self) -> list[Mapping[str, Any]]:
        groups = list(self.report.get("groups") or [])
        return sorted(groups, key=lambda g: g.get("status") == "ok")  # attention first (stable)

    @property
    def group_statuses(self) -> Counter:
        return Counter(str(g.get("status")) for g in self.report.get("groups") or [])

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.report.get("warnings") or []]

    @cached_property
    def breaches(self) -> pd.DataFrame:
        """(batch, rule) pairs broken: from batch_quality.csv (all) or the report (first 1000)."""
        if self.batch_quality is not None:
            rules = self.batch_quality["broken_rules"].fillna("").astype(str).str.split(";")
            frame = pd.DataFrame({"batch": self.batch_quality["batch_code"].astype(str).to_numpy(),
                                  "rule": rules.to_numpy()}).explode("rule")
            frame = frame.loc[frame["rule"].notna() & (frame["rule"] != "")]
        else:
            frame = pd.DataFrame([(b.get("batch_code"), b.get("rule")) for b in self.report.get("rule_breaches") or []],
                                 columns=["batch", "rule"])
        levels = {r.get("name"): r.get("level") for r in self.report.get("rules") or []}
        return frame.assign(level=frame["rule"].map(levels).fillna("")).reset_index(drop=True)

    def breaches_by_rule(self) -> list[tuple[str, str, int, list[str]]]:
        """(rule, level, batches breaking it, their codes) per broken rule."""
        return list(self._breaches_by_rule)

    @cached_property
    def _breaches_by_rule(self) -> list[tuple[str, str, int, list[str]]]:
        b = self.breaches
        return [(str(rule), str(g["level"].iloc[0]), len(g), g["batch"].astype(str).tolist())
                for rule, g in b.groupby("rule", sort=True)]

    def sizes_by_group(self) -> dict[str, list[int]]:
        """Batch sizes as formed, per group key (from batch_quality.csv; the report's groups
        hold the sizes planned before clustering)."""
        if self.batch_quality is None:
            return {}
        grouped = self.batch_quality.groupby("group_key", sort=False)["student_count"]
        return {str(key): [int(v) for v in sizes] for key, sizes in grouped}

    def worst_batches(self, n: int = N_WORST) -> pd.DataFrame:
        if self.batch_quality is None or self.batch_quality.empty:
            return pd.DataFrame(columns=["batch_code", "group_key", "student_count", "academic_coherence",
                                         "course_sse", "utilization", "broken_rules"])
        return self.batch_quality.sort_values(["academic_coherence", "batch_code"]).head(n)

    def design_differences(self) -> list[MeasureRow]:
        """Measures whose run threshold differs from the design's."""
        return [m for m in self.measures if m.threshold is not None and m.design_threshold is not None
                and m.direction != "zero" and abs(float(m.threshold) - float(m.design_threshold)) > 1e-12]

    # ---------------------------------------------------------------------------- console / text

    def renderables(self, *, ascii_only: bool = False) -> list[Any]:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table_box = box.ASCII2 if ascii_only else box.SIMPLE_HEAD
        metrics = self.report.get("metrics") or {}
        out: list[Any] = []
        title = Text(f"stage2 quality report — {self.institution}", style="bold")
        out.append(title)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for key, value in self.header:
            grid.add_row(Text(key), Text(value))
        out.append(grid)
        verdict = ("meets every threshold" if self.passed else "BELOW A THRESHOLD (see FAIL below)")
        out.append(Text.assemble(
            (f"{int(metrics.get('n_students') or 0):,} students in "
             f"{int(metrics.get('n_batches') or 0):,} batches: ", ""),
            (verdict, "bold green" if self.passed else "bold red")))

        table = Table(title="Quality measures", box=table_box, title_justify="left", show_edge=False)
        for name, justify in (("measure", "left"), ("value", "right"), ("target", "left"), ("verdict", "left")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for m in self.measures:
            style = "" if m.passed is None else ("green" if m.passed else "bold red")
            table.add_row(Text(m.name), Text(format_value(m.value)), Text(m.target), Text(m.verdict, style=style))
        out.append(table)
        for m in self.measures:
            if m.passed is False and m.responsible:
                out.append(Text(f"{m.name} below {m.threshold:g}: batches responsible: "
                                f"{_listed(m.responsible, 10)}", style="red"))
        for m in self.design_differences():
            verdict = "meets" if m.meets_design else "does NOT meet"
            out.append(Text(f"note: {m.name} was judged against {m.threshold:g}; the design's threshold is "
                            f"{m.design_threshold:g}, which the run {verdict}", style="yellow"))

        statuses = self.group_statuses
        groups = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda kv: kv[0] != "ok"))
        out.append(Text(f"Groups: {sum(statuses.values()):,} ({groups or 'none'})"))
        for g in self.groups:
            if g.get("status") != "ok":
                reason = f" ({g.get('reason')})" if g.get("reason") else ""
                out.append(Text(f"  - {g.get('key')}: {g.get('status')}{reason}", style="yellow"))
        unplaced = int((self.report.get("allocation") or {}).get("unplaced_batches") or 0)
        out.append(Text(f"Rooms: {_percent(metrics.get('room_placement_rate'))} of batches placed "
                        f"({unplaced:,} unplaced), {_percent(metrics.get('resource_utilization'))} of their seats "
                        f"filled; {_percent(metrics.get('shift_preference_satisfaction'))} of the students with a "
                        "preferred shift got it"))
        by_rule = self.breaches_by_rule()
        out.append(Text(f"Rule breaches: {sum(n for _, _, n, _ in by_rule):,} (batch, rule) pairs"
                        + (": " if by_rule else "")
                        + "; ".join(f"{rule} ({level}) in {n:,} batches" for rule, level, n, _ in by_rule)))
        worst = self.worst_batches(5)
        if len(worst):
            out.append(Text("Least coherent batches: " + ", ".join(
                f"{row.batch_code} ({float(row.academic_coherence):.3f})" for row in _rows(worst))))
        overrides = self.report.get("eav_overrides") or []
        out.append(Text(f"EAV overrides applied: {len(overrides):,}"))
        warnings = self.warnings
        out.append(Text(f"Warnings: {len(warnings):,}", style="yellow" if warnings else ""))
        for w in warnings[:20]:
            out.append(Text(f"  - {w}", style="yellow"))
        if len(warnings) > 20:
            out.append(Text(f"  ... and {len(warnings) - 20:,} more (quality_report.json)"))
        return out

    def print(self, console: Any) -> None:
        for item in self.renderables():
            console.print(item)

    def text(self) -> str:
        from rich.console import Console

        console = Console(file=io.StringIO(), width=TEXT_WIDTH, color_system=None, force_terminal=False,
                          highlight=False, emoji=False, record=True)
        for item in self.renderables(ascii_only=True):
            console.print(item)
        lines = console.export_text(styles=False).splitlines()
        return "\n".join(line.rstrip() for line in lines) + "\n"

    # ---------------------------------------------------------------------------- csv

    def metrics_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "value", "threshold", "passed"])
        for m in self.all_metrics:
            writer.writerow([m.name, "" if m.value is None else repr(m.value),
                             "" if m.threshold is None else repr(m.threshold),
                             "" if m.passed is None else str(m.passed).lower()])
        return buffer.getvalue()

    # ---------------------------------------------------------------------------- html

    def html(self) -> str:
        e = _esc
        metrics = self.report.get("metrics") or {}
        parts: list[str] = []
        verdict = ('<span class="pass">meets every threshold</span>' if self.passed
                   else '<span class="fail">below a threshold</span>')
        parts.append(f"<h1>stage2 quality report — {e(self.institution)}</h1>")
        parts.append(f"<p><b>{int(metrics.get('n_students') or 0):,}</b> students in "
                     f"<b>{int(metrics.get('n_batches') or 0):,}</b> batches, "
                     f"<b>{int(metrics.get('n_groups') or 0):,}</b> groups: {verdict}.</p>")
        parts.append(_table(["", ""], [[k, v] for k, v in self.header], header=False))

        parts.append("<h2>Quality measures</h2>")
        rows = []
        for m in self.measures:
            rows.append([m.name, format_value(m.value), m.target, _Verdict(m.verdict),
                         "" if m.design_threshold is None
                         else ("= 0" if m.direction == "zero" else f">= {m.design_threshold:g}"),
                         _Verdict("" if m.meets_design is None else ("yes" if m.meets_design else "NO")),
                         m.meaning])
        parts.append(_table(["measure", "value", "target", "verdict", "design threshold", "meets design", "meaning"],
                            rows, numeric=(1,)))

        parts.append("<h2>Thresholds</h2>")
        verdicts = self.report.get("thresholds") or {}
        parts.append(_table(
            ["measure", "value", "threshold", "passed", "batches responsible"],
            [[name, format_value(v.get("value")), format_value(v.get("threshold")),
              _Verdict("pass" if v.get("passed") else "FAIL"), _listed(v.get("responsible") or [], 10)]
             for name, v in verdicts.items()],
            numeric=(1, 2), empty="no thresholds configured"))

        groups = self.groups
        statuses = ", ".join(f"{n:,} {s}" for s, n in self.group_statuses.items())
        parts.append(f"<h2>Groups</h2><p>{len(groups):,} mixable groups ({e(statuses or 'none')}); "
                     "groups needing attention first.</p>")
        sizes: Mapping[Any, Sequence[int]] = self.sizes_by_group()
        parts.append(_table(
            ["group", "students", "batches", "batch sizes", "min / target / max", "status", "reason"],
            [[g.get("key"), g.get("n_students"), g.get("n_batches"),
              _listed(sizes.get(g.get("key"), g.get("batch_sizes") or []), 12),
              " / ".join(map(str, g.get("bounds") or [])), _Verdict(str(g.get("status")), warn=g.get("status") != "ok"),
              g.get("reason") or ""] for g in groups[:MAX_LISTED]],
            numeric=(1, 2), more=len(groups) - MAX_LISTED, empty="no groups"))

        parts.append(f"<h2>Least coherent batches</h2><p>The {N_WORST} batches whose members attend the fewest of "
                     "their course demands together.</p>")
        worst = self.worst_batches()
        parts.append(_table(
            ["batch", "group", "students", "coherence", "course SSE", "room utilisation", "broken rules"],
            [[r.batch_code, r.group_key, r.student_count, format_value(float(r.academic_coherence)),
              format_value(float(r.course_sse), 2),
              "" if pd.isna(r.utilization) else format_value(float(r.utilization)),
              "" if pd.isna(r.broken_rules) else str(r.broken_rules).replace(";", ", ")] for r in _rows(worst)],
            numeric=(2, 3, 4, 5), empty="batch_quality.csv not found"))

        parts.append("<h2>Rule breaches</h2>")
        by_rule = self.breaches_by_rule()
        parts.append(_table(["rule", "level", "batches breaking it", "batches"],
                            [[rule, level, n, _listed(batches, 20)] for rule, level, n, batches in by_rule],
                            numeric=(2,), empty="no rule is broken"))
        breaches = self.breaches
        if len(breaches):
            parts.append(_table(["batch", "rule", "level"], breaches.head(MAX_LISTED).to_numpy().tolist(),
                                more=len(breaches) - MAX_LISTED))

        parts.append("<h2>EAV overrides</h2>")
        overrides = self.report.get("eav_overrides") or []
        parts.append(_table(["parameter", "entity", "value", "value id"],
                            [[o.get("parameter_code"), f"{o.get('entity_type')} {o.get('entity_id')}",
                              _json(o.get("value")), o.get("value_id")] for o in overrides],
                            empty="no EAV override applied"))

        warnings = self.warnings
        parts.append(f"<h2>Warnings ({len(warnings):,})</h2>")
        if warnings:
            parts.append("<ul>" + "".join(f"<li>{e(w)}</li>" for w in warnings[:MAX_LISTED]) + "</ul>")
            if len(warnings) > MAX_LISTED:
                parts.append(f"<p>… and {len(warnings) - MAX_LISTED:,} more (quality_report.json)</p>")
        else:
            parts.append("<p class='none'>none</p>")

        title = f"stage2 quality report — {self.institution}"
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(parts)
            + f"\n<footer>stage2 {e(self.report.get('stage2_version') or '')} · generated from quality_report.json"
            " and batch_quality.csv</footer>\n</body>\n</html>\n"
        )


# ------------------------------------------------------------------------------------ html parts

_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#1f2328;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}.warn{color:#9a6700;font-weight:bold}
.none,.more{color:#656d76;font-style:italic}footer{margin-top:2em;color:#656d76;font-size:.8em}
"""


class _Verdict(str):
    """A cell coloured by its verdict (pass/yes green, FAIL/NO red, ``warn``: amber)."""

    def __new__(cls, text: str, warn: bool = False) -> _Verdict:
        obj = super().__new__(cls, text)
        obj.warn = warn  # type: ignore[attr-defined]
        return obj

    def css(self) -> str:
        if getattr(self, "warn", False):
            return "warn"
        return {"pass": "pass", "yes": "pass", "FAIL": "fail", "NO": "fail"}.get(str(self), "")


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)


def _percent(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1%}"


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """``frame.itertuples()`` (pandas-stubs types every field as any scalar, or NA)."""
    return frame.itertuples()


def _listed(values: Sequence[Any], limit: int) -> str:
    values = list(values)
    return ", ".join(map(str, values[:limit])) + (f" … ({len(values):,} in all)" if len(values) > limit else "")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, header: bool = True,
           numeric: Sequence[int] = (), more: int = 0, empty: str = "none") -> str:
    """An HTML table of escaped cells."""
    if not rows:
        return f"<p class='none'>{_esc(empty)}</p>"
    out = ["<table>"]
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in columns) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            classes = []
            if i in numeric:
                classes.append("num")
            if isinstance(value, _Verdict) and value.css():
                classes.append(value.css())
            if not header and i == 0:
                cells.append(f"<th>{_esc(value)}</th>")
                continue
            attr = f" class=\"{' '.join(classes)}\"" if classes else ""
            cells.append(f"<td{attr}>{_esc(value)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if more > 0:
        out.append(f"<p class='more'>… and {more:,} more rows</p>")
    return "".join(out)


__all__ = ["REPORT_FORMATS", "RunSummary", "write_reports"]
