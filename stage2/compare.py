"""Compare two stage2 runs: ``python -m stage2.compare RUN_A RUN_B [--show N]``.

``RUN_A`` / ``RUN_B`` are run directories (they need ``quality_report.json`` and
``batch_student_membership.csv``), or MLflow run ids with ``--tracking-uri URI`` (the same two
artifacts are downloaded; ``student_batches.csv`` too when present, for readable batch codes).

What is printed:

- every quality measure of both runs side by side, the difference ``B − A`` and which run is
  better in the measure's direction (``quality.md``: higher, lower, or none for counts);
- how many students changed batch, and up to ``--show`` of them. Batch ids may differ between
  configurations, so batches are compared by membership: the batches of A and B are paired
  one-to-one so that the total number of students they share is maximal (a maximum-weight
  bipartite matching on the overlap counts, solved exactly at every size: see
  :func:`match_batches`), and a student *changed batch* when their batch in
  B is not the one paired with their batch in A (or their A batch has no partner). Students are
  matched by ``student_id``; students present in one run only are counted separately;
- the input digests of both runs, with a warning when they differ.

Exit status: 0 compared (also when the inputs differ: that is a warning), 2 when a run
directory lacks a file, a run id is unknown, a run lists a student more than once, or the
arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stage2.outputs import QUALITY_REPORT

MEMBERSHIP = "batch_student_membership.csv"
BATCHES = "student_batches.csv"
#: files a run must have to be compared
REQUIRED_FILES = (QUALITY_REPORT, MEMBERSHIP)
DEFAULT_SHOW = 20

#: direction of each quality measure (quality.md); measures not listed have none
HIGHER_IS_BETTER = frozenset({
    "academic_coherence",
    "size_balance",
    "constraint_satisfaction_rate",
    "shift_preference_satisfaction",
    "resource_utilization",
    "room_placement_rate",
    "silhouette_score",
})
LOWER_IS_BETTER = frozenset({
    "course_sse",
    "course_sse_per_student",
    "sections_per_batch",
    "size_bound_violations",      # target 0
    "hard_constraint_violations",  # target 0
    "prerequisite_violations",     # target 0
    "runtime_s",
    "peak_memory_mb",
})
#: counts that describe a run rather than grade it
NO_DIRECTION = frozenset({"n_students", "n_batches", "n_groups"})
#: a connected block of batches with at most this many |A| × |B| cells is paired on a dense
#: overlap matrix (``linear_sum_assignment``); larger blocks by the sparse exact method
#: (``min_weight_full_bipartite_matching``), whose memory is linear in the overlapping pairs.
#: 4M cells is 32 MB per int64/float64 copy of the matrix (about 2,000 × 2,000 batches, under a
#: second); a dense 20,000 × 20,000 block would need 3.2 GB per copy and cubic time, while the
#: sparse method pairs 20,000 batches of 30 students (600k students, one block, up to 600k
#: overlapping pairs) in about 4 s end to end. Both are exact: the threshold changes speed and
#: memory only, never the pairing's total overlap.
MAX_DENSE_CELLS = 4_000_000


class CompareError(Exception):
    """A run cannot be compared (missing file, unknown run id, unreadable report)."""


def metric_direction(name: str) -> str | None:
    """``"higher"``, ``"lower"`` or ``None`` (no better value) for a quality measure."""
    if name in HIGHER_IS_BETTER:
        return "higher"
    if name in LOWER_IS_BETTER or name.startswith("runtime_s."):
        return "lower"
    return None


@dataclass
class MetricDiff:
    name: str
    a: float | None
    b: float | None
    #: ``b - a`` (``None`` when either is missing)
    diff: float | None
    #: ``"higher"``, ``"lower"`` or ``None``
    direction: str | None
    #: ``"A"``, ``"B"``, ``"tie"`` or ``None`` (no direction, or a value missing)
    better: str | None


@dataclass
class StudentChange:
    student_id: str
    batch_a: str
    batch_b: str
    #: the batch of B paired with ``batch_a`` (``None``: A's batch has no partner in B)
    expected_b: str | None
    #: batch codes when ``student_batches.csv`` is available, else the ids
    label_a: str
    label_b: str


@dataclass
class ComparisonResult:
    run_a: str
    run_b: str
    metrics: list[MetricDiff]
    digest_a: str | None
    digest_b: str | None
    n_students_a: int
    n_students_b: int
    #: students present in both runs
    n_common: int
    only_in_a: list[str]
    only_in_b: list[str]
    n_batches_a: int
    n_batches_b: int
    #: A batch id -> the paired B batch id (A batches without a partner are absent)
    matching: dict[str, str]
    #: paired batches with exactly the same members
    n_identical_batches: int
    #: students (of both runs) whose batch is not the partner of their A batch, by student_id
    changed: list[StudentChange]
    #: ``"optimal"``: the pairing's total overlap is the maximum (every block is solved
    #: exactly, dense or sparse; kept as a field for readers of older JSON output)
    matching_method: str = "optimal"
    warnings: list[str] = field(default_factory=list)

    @property
    def n_changed(self) -> int:
        return len(self.changed)

    @property
    def same_input(self) -> bool:
        return self.digest_a is not None and self.digest_a == self.digest_b

    def metric(self, name: str) -> MetricDiff:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["n_changed"] = self.n_changed
        out["same_input"] = self.same_input
        return out


# --------------------------------------------------------------------------- reading runs

@dataclass
class RunRecord:
    label: str
    report: dict[str, Any]
    #: student_id -> batch_id
    membership: pd.Series
    #: batch_id -> batch_code (empty when student_batches.csv is absent)
    codes: dict[str, str]
    digest: str | None


def read_run(run_dir: Path, label: str | None = None, digest_tag: str | None = None) -> RunRecord:
    """Read what the comparison needs from a run directory (raises :class:`CompareError`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CompareError(f"{run_dir}: not a directory (give a run directory, or an MLflow run id with "
                           f"--tracking-uri)")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise CompareError(f"{run_dir}: missing {', '.join(missing)} (is this a stage2 run directory of a "
                           f"successful run?)")
    try:
        report = json.loads((run_dir / QUALITY_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CompareError(f"{run_dir / QUALITY_REPORT}: unreadable ({exc})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise CompareError(f"{run_dir / QUALITY_REPORT}: no 'metrics' object")
    try:
        frame = pd.read_csv(run_dir / MEMBERSHIP, dtype=str, usecols=["student_id", "batch_id"],
                            keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise CompareError(f"{run_dir / MEMBERSHIP}: unreadable or without student_id/batch_id ({exc})") from exc
    repeated = frame["student_id"].duplicated(keep=False)
    if repeated.any():
        raise CompareError(f"{run_dir / MEMBERSHIP}: {_repeated_student_message(frame, repeated)}")
    codes: dict[str, str] = {}
    if (run_dir / BATCHES).is_file():
        try:
            batches = pd.read_csv(run_dir / BATCHES, dtype=str, usecols=["batch_id", "batch_code"],
                                  keep_default_na=False)
            codes = dict(zip(batches["batch_id"], batches["batch_code"], strict=True))
        except (OSError, ValueError):
            codes = {}
    digest = report.get("data_digest") or digest_tag
    return RunRecord(label or str(run_dir), report, frame.set_index("student_id")["batch_id"], codes, digest)


def _repeated_student_message(frame: pd.DataFrame, repeated: pd.Series) -> str:
    """Name the first student listed more than once, and their batches (a run's membership
    has one row per student: a student in two batches cannot be compared)."""
    student = frame.loc[repeated, "student_id"].iloc[0]
    batches = list(dict.fromkeys(frame.loc[frame["student_id"] == student, "batch_id"]))
    if len(batches) > 1:
        message = f"student {student!r} is in more than one batch ({', '.join(map(repr, batches))})"
    else:
        times = int((frame["student_id"] == student).sum())
        message = f"student {student!r} is listed {times} times in batch {batches[0]!r}"
    others = int(frame.loc[repeated, "student_id"].nunique()) - 1
    if others:
        message += f"; {others} more student(s) are listed more than once"
    return message + " — each student must have exactly one row"


def download_run(run_id: str, tracking_uri: str, dst: Path) -> tuple[Path, str | None]:
    """Download a run's ``quality_report.json`` and ``batch_student_membership.csv`` (and
    ``student_batches.csv`` when logged) into ``dst``; returns ``(dst, input_digest tag)``."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise CompareError(f"run {run_id}: not found in {tracking_uri} ({exc.message})") from exc
    dst.mkdir(parents=True, exist_ok=True)
    for name in (*REQUIRED_FILES, BATCHES):
        try:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=str(dst),
                                                tracking_uri=tracking_uri)
        except (MlflowException, OSError) as exc:
            if name in REQUIRED_FILES:
                raise CompareError(f"run {run_id}: artifact {name} could not be downloaded ({exc})") from exc
    return dst, run.data.tags.get("input_digest")


# --------------------------------------------------------------------------- comparing

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def compare_metrics(a: dict[str, Any], b: dict[str, Any]) -> list[MetricDiff]:
    names = list(a) + [n for n in b if n not in a]
    out = []
    for name in names:
        va, vb = _number(a.get(name)), _number(b.get(name))
        direction = None if name in NO_DIRECTION else metric_direction(name)
        diff = None if va is None or vb is None else vb - va
        better = None
        if direction and va is not None and vb is not None and diff is not None:
            if abs(diff) <= 1e-12 * max(1.0, abs(va), abs(vb)):
                better = "tie"
            elif (diff > 0) == (direction == "higher"):
                better = "B"
            else:
                better = "A"
        out.append(MetricDiff(name, va, vb, diff, direction, better))
    return out


def match_batches(batch_a: np.ndarray, batch_b: np.ndarray, *,
                  max_dense_cells: int = MAX_DENSE_CELLS) -> tuple[dict[int, int], str]:
    """Pair batch codes of A with batch codes of B one-to-one, maximising the students the
    pairs share. ``batch_a[i]``, ``batch_b[i]``: integer batch codes of common student ``i``.

    The overlap graph splits into independent blocks (batches that share no student are never
    worth pairing, and a pair sharing none is never reported). Each block is solved exactly:
    with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``, rectangular
    matrices allowed) on a dense overlap matrix when it has at most ``max_dense_cells``
    cells, else with ``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` on the
    overlapping pairs only (:func:`_sparse_max_overlap`). There is no approximate fallback:
    the method returned is always ``"optimal"``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(batch_a) == 0:
        return {}, "optimal"
    pairs = pd.DataFrame({"a": batch_a, "b": batch_b}).value_counts().reset_index(name="n")
    n_a, n_b = int(batch_a.max()) + 1, int(batch_b.max()) + 1
    graph = coo_matrix((np.ones(len(pairs)), (pairs["a"].to_numpy(), pairs["b"].to_numpy() + n_a)),
                       shape=(n_a + n_b, n_a + n_b))
    _, component = connected_components(graph, directed=False)
    pairs["block"] = component[pairs["a"].to_numpy()]
    matching: dict[int, int] = {}
    for _, block in pairs.groupby("block", sort=False):
        rows, row_idx = np.unique(block["a"].to_numpy(), return_inverse=True)
        cols, col_idx = np.unique(block["b"].to_numpy(), return_inverse=True)
        weight = block["n"].to_numpy(dtype=np.int64)
        if len(rows) * len(cols) <= max_dense_cells:
            r, c = _dense_max_overlap(row_idx, col_idx, weight, len(rows), len(cols))
        else:
            r, c = _sparse_max_overlap(row_idx, col_idx, weight, len(rows), len(cols))
        for i, j in zip(r, c, strict=True):
            matching[int(rows[i])] = int(cols[j])
    return matching, "optimal"


def _dense_max_overlap(row_idx: np.ndarray, col_idx: np.ndarray, weight: np.ndarray, n_rows: int,
                       n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight matching on the dense ``n_rows × n_cols`` overlap matrix; only pairs
    with a positive overlap are returned."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((n_rows, n_cols), dtype=np.int64)
    overlap[row_idx, col_idx] = weight
    r, c = linear_sum_assignment(overlap, maximize=True)
    keep = overlap[r, c] > 0
    return r[keep], c[keep]


def _sparse_max_overlap(row_idx: np.ndarray, col_idx: np.ndarray, weight: np.ndarray, n_rows: int,
                        n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight matching on the overlapping pairs only (memory linear in their number).

    ``min_weight_full_bipartite_matching`` needs a matching that covers every row, which the
    overlap graph need not have (two A batches may overlap one B batch only), and strictly
    positive weights (zeros are not edges). So each row ``i`` gets a private dummy column of
    cost ``W + 1`` (``W``: the largest overlap), and a real pair of overlap ``w`` costs
    ``W + 1 - w >= 1``. Every row is matched, and a full matching's cost is
    ``n_rows × (W + 1) − Σ w`` over its real pairs: the minimum cost is the maximum total
    overlap. Real pairs all have ``w >= 1``, so every returned pair overlaps."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    ceiling = float(weight.max()) + 1.0
    rows = np.concatenate([row_idx, np.arange(n_rows)])
    cols = np.concatenate([col_idx, n_cols + np.arange(n_rows)])
    cost = np.concatenate([ceiling - weight.astype(np.float64), np.full(n_rows, ceiling)])
    graph = csr_matrix((cost, (rows, cols)), shape=(n_rows, n_cols + n_rows))
    r, c = min_weight_full_bipartite_matching(graph)
    keep = c < n_cols
    return r[keep], c[keep]


def compare_records(a: RunRecord, b: RunRecord) -> ComparisonResult:
    warnings: list[str] = []
    if a.digest and b.digest and a.digest != b.digest:
        warnings.append(f"the runs read different inputs (input digests {a.digest[:12]}… and {b.digest[:12]}…): "
                        "batch changes mix input and configuration effects")
    elif not (a.digest and b.digest):
        warnings.append("an input digest is missing: cannot tell whether both runs read the same input")
    common = a.membership.index.intersection(b.membership.index, sort=False)
    only_a = sorted(a.membership.index.difference(b.membership.index).tolist())
    only_b = sorted(b.membership.index.difference(a.membership.index).tolist())
    if only_a or only_b:
        warnings.append(f"{len(only_a)} student(s) only in A and {len(only_b)} only in B; they are not counted as "
                        "changed")
    ids_a = a.membership.loc[common].to_numpy()
    ids_b = b.membership.loc[common].to_numpy()
    codes_a, uniq_a = pd.factorize(ids_a)
    codes_b, uniq_b = pd.factorize(ids_b)
    pairing, method = match_batches(codes_a, codes_b)
    expected = np.array([pairing.get(int(c), -1) for c in range(len(uniq_a))], dtype=np.int64)
    moved = expected[codes_a] != codes_b if len(codes_a) else np.zeros(0, dtype=bool)
    changed = []
    for pos in np.flatnonzero(moved):
        ba, bb = str(ids_a[pos]), str(ids_b[pos])
        exp = expected[codes_a[pos]]
        changed.append(StudentChange(
            student_id=str(common[int(pos)]), batch_a=ba, batch_b=bb,
            expected_b=None if exp < 0 else str(uniq_b[int(exp)]),
            label_a=a.codes.get(ba, ba), label_b=b.codes.get(bb, bb),
        ))
    changed.sort(key=lambda c: c.student_id)
    # identical pairs: same size in both runs (all members, not only common ones) and all shared
    size_a = a.membership.value_counts()
    size_b = b.membership.value_counts()
    shared = pd.DataFrame({"a": codes_a, "b": codes_b}).value_counts()
    identical = sum(
        1 for ca, cb in pairing.items()
        if shared.get((ca, cb), 0) == size_a[uniq_a[ca]] == size_b[uniq_b[cb]]
    )
    return ComparisonResult(
        run_a=a.label, run_b=b.label,
        metrics=compare_metrics(a.report["metrics"], b.report["metrics"]),
        digest_a=a.digest, digest_b=b.digest,
        n_students_a=len(a.membership), n_students_b=len(b.membership), n_common=len(common),
        only_in_a=only_a, only_in_b=only_b,
        n_batches_a=int(a.membership.nunique()), n_batches_b=int(b.membership.nunique()),
        matching={str(uniq_a[ca]): str(uniq_b[cb]) for ca, cb in pairing.items()},
        n_identical_batches=identical, changed=changed, matching_method=method, warnings=warnings,
    )


def compare_runs(a: Path, b: Path) -> ComparisonResult:
    """Compare two run directories (raises :class:`CompareError` when one lacks a file)."""
    return compare_records(read_run(Path(a)), read_run(Path(b)))


# --------------------------------------------------------------------------- printing

def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):d}"
    return f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.3g}"


def _fmt_diff(value: float | None) -> str:
    if value is None:
        return "—"
    return ("+" if value > 0 else "") + _fmt(value)


def render(result: ComparisonResult, show: int = DEFAULT_SHOW, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    console.print(f"A: {result.run_a}\nB: {result.run_b}")
    table = Table(title="quality measures (diff = B − A)")
    for column, justify in (("measure", "left"), ("A", "right"), ("B", "right"), ("diff", "right"),
                            ("better", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for m in result.metrics:
        if m.better in ("A", "B"):
            better = f"{m.better} ({m.direction})"
        elif m.better == "tie":
            better = "="
        else:
            better = ""
        table.add_row(m.name, _fmt(m.a), _fmt(m.b), _fmt_diff(m.diff), better)
    console.print(table)
    console.print(
        f"students: {result.n_students_a} in A, {result.n_students_b} in B, {result.n_common} in both; "
        f"batches: {result.n_batches_a} in A, {result.n_batches_b} in B, {len(result.matching)} paired by "
        f"membership ({result.matching_method}), {result.n_identical_batches} identical"
    )
    share = result.n_changed / result.n_common if result.n_common else 0.0
    console.print(f"students who changed batch: {result.n_changed} of {result.n_common} ({share:.1%})")
    if result.changed and show > 0:
        listing = Table(title=f"changed students (first {min(show, result.n_changed)} by student_id)")
        for column in ("student_id", "batch in A", "batch in B"):
            listing.add_column(column)
        for change in result.changed[:show]:
            listing.add_row(change.student_id, change.label_a, change.label_b)
        console.print(listing)
    console.print(f"input digest A: {result.digest_a or '—'}\ninput digest B: {result.digest_b or '—'}")
    if result.same_input:
        console.print("same input")
    for message in result.warnings:
        console.print(f"warning: {message}", style="yellow")


def _resolve(spec: str, tracking_uri: str | None, tmp: Path, name: str) -> RunRecord:
    path = Path(spec)
    if path.is_dir() or not tracking_uri:
        return read_run(path)
    directory, digest = download_run(spec, tracking_uri, tmp / name)
    return read_run(directory, label=f"run {spec} ({tracking_uri})", digest_tag=digest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stage2.compare",
        description="Compare two stage2 runs: quality measures side by side, students who changed batch, "
                    "input digests.",
    )
    parser.add_argument("run_a", metavar="RUN_A", help="run directory, or MLflow run id with --tracking-uri")
    parser.add_argument("run_b", metavar="RUN_B", help="run directory, or MLflow run id with --tracking-uri")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI; RUN_A/RUN_B that are not directories are "
                                               "run ids in this store")
    parser.add_argument("--show", type=int, default=DEFAULT_SHOW, metavar="N",
                        help=f"list up to N students who changed batch (default {DEFAULT_SHOW})")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show < 0:
        print("stage2.compare: error: --show must be >= 0", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="stage2-compare-") as tmp:
            a = _resolve(args.run_a, args.tracking_uri, Path(tmp), "a")
            b = _resolve(args.run_b, args.tracking_uri, Path(tmp), "b")
            result = compare_records(a, b)
    except CompareError as exc:
        print(f"stage2.compare: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        render(result, show=args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
