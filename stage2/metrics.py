"""Metrics stage: every measure of ``quality.md``, computed from the input and output tables.

Soft-rule satisfaction (one check per batch and rule in force for the batch's programme,
over the batch members the rule's scope covers — all, a programme's, or a course's takers):

- ``no_mix`` / ``homogeneous``: the most common value (for list fields: the element most
  members share) covers at least ``threshold`` of the members that have a value;
- ``max_variance``: the batch's variance of the field is at most ``threshold`` × the variance
  of the field in the batch's mixable group;
- ``capacity_limit``: a placed batch has ``student_count <= threshold × capacity_allocated``.

Batches with no in-scope member holding a value are not checked for that rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stage2.config.schema import ACCEPTANCE_THRESHOLDS
from stage2.config.settings import CAPACITY_ROUNDING, BatchingSettings, ConstraintRule
from stage2.contract.csvio import string_positions
from stage2.features import course_matrix

#: memory (MB) of each array of a chunk of silhouette distances (a few live at once)
SILHOUETTE_WORKING_MEMORY_MB = 16
#: the distinct course rows are densified for the silhouette up to this many courses: a dense
#: product is faster with tens of courses, a sparse one with hundreds (students take a few)
SILHOUETTE_DENSE_MAX_COURSES = 64
#: how many responsible batches a failed threshold lists
MAX_LISTED = 10


@dataclass
class QualityReport:
    metrics: dict[str, float | int | None]
    #: per batch: code, size, coherence, sse, utilisation, broken rules
    batch_quality: pd.DataFrame
    #: threshold name -> {value, threshold, passed, responsible}
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (batch_code, rule name, level) for every failed check
    rule_breaches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(t["passed"] for t in self.thresholds.values())


def _population_std(values: pd.Series) -> float:
    return values.std(ddof=0)


def _majority_share(values: pd.Series, batch: np.ndarray) -> pd.Series:
    """Per batch: share of members (with a value) holding the most common value/element, for
    the batches with such members, in batch order. Values are compared as text; an element
    held twice by a member (``en;en``) counts once."""
    raw = values.to_numpy() if values.dtype == object else None
    if raw is not None and any(isinstance(v, (tuple, list)) for v in raw):
        is_list = np.fromiter(map(isinstance, raw, itertools.repeat((tuple, list))), bool, len(raw))
        lengths = np.zeros(len(raw), dtype=np.int64)
        lengths[is_list] = np.fromiter(map(len, raw[is_list]), np.int64, int(is_list.sum()))
        holders = np.flatnonzero(lengths > 0)
        elements = np.empty(int(lengths.sum()), dtype=object)
        elements[:] = list(itertools.chain.from_iterable(raw[holders]))
        element, _ = pd.factorize(elements)
        holder = np.repeat(holders, lengths[holders])
        held = element >= 0
        n_elements = int(element.max(initial=-1)) + 1
        pairs = _distinct(holder[held] * n_elements + element[held])
        member_of_pair, counted_value = np.divmod(pairs, max(n_elements, 1))
        counted_batch = batch[member_of_pair]
        holder_batch = batch[holders]
    else:
        present = values.notna().to_numpy()
        if isinstance(values.dtype, pd.StringDtype):
            text = values[present]
        else:  # as the members' values would print: 1 and "1" are one value, 1 and 1.5 two
            text = pd.Series(values.to_numpy()[present]).astype(str)
        counted_value, _ = pd.factorize(text)
        n_elements = int(counted_value.max(initial=-1)) + 1
        counted_batch = holder_batch = batch[present]
    if not len(counted_batch):
        return pd.Series(dtype=float)
    keys, counts = np.unique(counted_batch * max(n_elements, 1) + counted_value, return_counts=True)
    key_batch = keys // max(n_elements, 1)
    starts = np.flatnonzero(np.r_[True, key_batch[1:] != key_batch[:-1]])
    totals = np.bincount(holder_batch)
    checked = np.flatnonzero(totals)
    largest = np.full(len(totals), np.nan)
    largest[key_batch[starts]] = np.maximum.reduceat(counts, starts)
    return pd.Series(largest[checked] / totals[checked], index=checked)


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values of ``keys``, sorted (``np.unique``, which is slower on these)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def _rule_scope(rule: ConstraintRule, students: pd.DataFrame, enrollments: pd.DataFrame) -> np.ndarray:
    if rule.entity_type == "PROGRAM":
        return (students["program_id"].astype(str) == rule.entity_id).to_numpy()
    if rule.entity_type == "COURSE":
        takers = set(enrollments.loc[enrollments["course_id"].astype(str) == rule.entity_id, "student_id"].astype(str))
        return students["student_id"].astype(str).isin(takers).to_numpy()
    return np.ones(len(students), dtype=bool)


def check_rules(
    batches: pd.DataFrame,
    students_in_batch_order: pd.DataFrame,
    batch_of_student: np.ndarray,
    enrollments: pd.DataFrame,
    settings: BatchingSettings,
) -> pd.DataFrame:
    """One row per (batch, rule) check: batch index, rule, level, satisfied."""
    group_of_batch = pd.factorize(batches["group_key"])[0]
    group_of_student = group_of_batch[batch_of_student]
    rules_by_program: dict[Any, list[ConstraintRule]] = {}
    records = []
    for program_id in pd.unique(batches["program_id"]):
        rules_by_program[program_id] = settings.rules_for_program(program_id)
    all_rules = {(r.name, r.entity_type, r.entity_id): r for rules in rules_by_program.values() for r in rules}
    batch_program = batches["program_id"].to_numpy()
    rule_ids_by_program = {p: {id(r) for r in rules} for p, rules in rules_by_program.items()}
    rule_ids_of_batch = [rule_ids_by_program[p] for p in batch_program]
    for rule in all_rules.values():
        in_force = np.array([id(rule) in ids for ids in rule_ids_of_batch], dtype=bool)
        if not in_force.any():
            continue
        if rule.rule_type == "capacity_limit":
            capacity = batches["capacity_allocated"].astype("Float64")
            placed = capacity.notna().to_numpy() & in_force
            ok = (batches["student_count"] <= rule.threshold * capacity + CAPACITY_ROUNDING).fillna(True).to_numpy()
            checked = np.flatnonzero(placed)
            satisfied = ok[checked]
        else:
            scope = _rule_scope(rule, students_in_batch_order, enrollments)
            values = students_in_batch_order[rule.field_name]
            if rule.rule_type == "max_variance":
                numeric = pd.to_numeric(values, errors="coerce")
                frame = pd.DataFrame(
                    {"batch": batch_of_student, "group": group_of_student, "x": numeric}
                )[scope].dropna()
                batch_var = frame.groupby("batch")["x"].var(ddof=0)
                group_var = frame.groupby("group")["x"].var(ddof=0)
                limit = rule.threshold * group_var.reindex(group_of_batch[batch_var.index]).to_numpy()
                ok = batch_var.to_numpy() <= limit + 1e-12
                checked, satisfied = batch_var.index.to_numpy(), ok
            else:
                share = _majority_share(values[scope].reset_index(drop=True), batch_of_student[scope])
                checked = share.index.to_numpy()
                satisfied = share.to_numpy() >= rule.threshold - 1e-12
            keep = in_force[checked]
            checked, satisfied = checked[keep], satisfied[keep]
        records.append(pd.DataFrame({"batch": checked, "rule": rule.name, "level": rule.level,
                                     "rule_type": rule.rule_type, "satisfied": satisfied}))
    if not records:
        return pd.DataFrame(columns=["batch", "rule", "level", "rule_type", "satisfied"])
    return pd.concat(records, ignore_index=True)


def compute_quality(
    batches: pd.DataFrame,
    membership: pd.DataFrame,
    batch_courses: pd.DataFrame,
    students: pd.DataFrame,
    enrollments: pd.DataFrame,
    settings: BatchingSettings,
    *,
    thresholds: Mapping[str, float] | None = None,
    silhouette_sample_size: int = 10_000,
    prerequisite_violations: int | None = None,
) -> QualityReport:
    """Compute the quality measures. ``students``/``enrollments`` are the active input rows
    (the enrollments batched). ``prerequisite_violations`` (from
    :func:`stage2.prerequisites.check_prerequisites`; ``None``: not checked) is reported as is."""
    thresholds = dict(ACCEPTANCE_THRESHOLDS if thresholds is None else thresholds)
    n_batches = len(batches)
    n_students = len(membership)
    sizes = batches["student_count"].to_numpy(dtype=np.int64)

    e = batch_courses["expected_students"].to_numpy(dtype=np.float64)
    b_of_row = string_positions(batch_courses["batch_id"], batches["batch_id"])
    enrolled = (batch_courses["enrollment_status"] == "ENROLLED").to_numpy()
    s_of_row = sizes[b_of_row].astype(np.float64)
    sse_terms = e * (1.0 - e / s_of_row)
    batch_sse = np.bincount(b_of_row, weights=sse_terms, minlength=n_batches)
    batch_demand = np.bincount(b_of_row, weights=e, minlength=n_batches)
    batch_together = np.bincount(b_of_row, weights=e * enrolled, minlength=n_batches)
    course_sse = float(sse_terms.sum())

    # size balance per mixable group
    groups = pd.DataFrame({"group": batches["group_key"].to_numpy(), "size": sizes})
    stats = groups.groupby("group", sort=False)["size"].agg(["sum", "mean", _population_std])
    stats.columns = ["n", "mean", "std"]
    size_balance = float((stats["n"] * (1.0 - stats["std"].fillna(0) / stats["mean"])).sum() / max(n_students, 1))

    undersized = (batches["group_status"] == "undersized").to_numpy()
    outside = (sizes < batches["size_min"].to_numpy()) | (sizes > batches["size_max"].to_numpy())
    size_bound_violations = int((outside & ~undersized).sum())

    # rules
    student_pos = string_positions(membership["student_id"], students["student_id"])
    # only the columns the checks read: copying every column of a million students costs GBs
    needed = {"student_id", "program_id", "preferred_shift"} | {r.field_name for r in settings.rules}
    columns = [c for c in students.columns if c in needed]
    students_in_order = students[columns].iloc[student_pos].reset_index(drop=True)
    batch_of_member = string_positions(membership["batch_id"], batches["batch_id"])
    checks = check_rules(batches, students_in_order, batch_of_member, enrollments, settings)
    hard_violations = int((~checks["satisfied"] & (checks["level"] == "hard")).sum())
    satisfaction = float(checks["satisfied"].mean()) if len(checks) else 1.0

    # shifts and rooms
    preferred = (
        students_in_order["preferred_shift"]
        if "preferred_shift" in students_in_order
        else pd.Series(dtype=object)
    )
    has_pref = preferred.notna().to_numpy() if len(preferred) else np.zeros(0, bool)
    got_shift = batches["shift_id"].to_numpy()[batch_of_member]
    shift_ok = has_pref & (preferred.astype(str).to_numpy() == got_shift.astype(str)) if len(preferred) else has_pref
    capacity = batches["capacity_allocated"].astype("Float64")
    placed = capacity.notna().to_numpy()
    utilisation = float(sizes[placed].sum() / capacity[placed].sum()) if placed.any() else None

    silhouette = _silhouette(students_in_order, enrollments, batch_of_member, silhouette_sample_size, settings.seed)

    metrics: dict[str, float | int | None] = {
        "n_students": n_students,
        "n_batches": n_batches,
        "n_groups": int(batches["group_key"].nunique()),
        "academic_coherence": float(batch_together.sum() / batch_demand.sum()) if batch_demand.sum() else None,
        "course_sse": course_sse,
        "course_sse_per_student": course_sse / n_students if n_students else None,
        "sections_per_batch": len(batch_courses) / n_batches if n_batches else None,
        "size_balance": size_balance,
        "size_bound_violations": size_bound_violations,
        "hard_constraint_violations": hard_violations,
        "constraint_satisfaction_rate": satisfaction,
        "shift_preference_satisfaction": float(shift_ok.sum() / has_pref.sum()) if has_pref.sum() else None,
        "resource_utilization": utilisation,
        "room_placement_rate": float(placed.mean()) if n_batches else None,
        "silhouette_score": silhouette,
        "prerequisite_violations": prerequisite_violations,
    }

    broken = checks.loc[~checks["satisfied"]]
    batch_quality = pd.DataFrame(
        {
            "batch_code": batches["batch_code"],
            "group_key": batches["group_key"],
            "student_count": sizes,
            "academic_coherence": np.divide(
                batch_together, batch_demand, out=np.ones(n_batches), where=batch_demand > 0
            ),
            "course_sse": batch_sse,
            "utilization": (batches["student_count"] / capacity).astype("Float64").round(4),
            "broken_rules": _broken_rules(broken["batch"].to_numpy(dtype=np.int64), broken["rule"], n_batches),
        }
    )
    report = QualityReport(metrics=metrics, batch_quality=batch_quality)
    report.rule_breaches = [
        {
            "batch_code": batches["batch_code"].iat[int(cast(int, r.batch))],
            "rule": r.rule,
            "rule_type": r.rule_type,
            "level": r.level,
        }
        for r in broken.head(1000).itertuples()
    ]
    report.thresholds = _threshold_verdicts(metrics, thresholds, batch_quality, stats)
    return report


def _broken_rules(batch: np.ndarray, rule: pd.Series, n_batches: int) -> np.ndarray:
    """Per batch, the names of its broken rules, sorted and distinct, joined by ``;``."""
    names = sorted(set(rule))
    out = np.full(n_batches, "", dtype=object)
    if not names:
        return out
    code = pd.Index(names).get_indexer(rule)
    # one set of broken rules per batch, as (batch, rule) pairs in batch then name order
    pairs = _distinct(batch * len(names) + code)
    pair_batch, pair_rule = np.divmod(pairs, len(names))
    starts = np.flatnonzero(np.r_[True, pair_batch[1:] != pair_batch[:-1]])
    joined = [";".join(names[c] for c in group) for group in np.split(pair_rule, starts[1:])]
    out[pair_batch[starts]] = joined
    return out


def _silhouette(students, enrollments, labels, sample_size, seed) -> float | None:
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return None
    if sample_size and sample_size < len(labels):
        # the course rows of the sampled students only (the sample binary_silhouette would
        # draw): building a million students' matrix to use ten thousand rows costs seconds
        sample = np.random.RandomState(seed).permutation(len(labels))[:sample_size]
        students, labels = students.iloc[sample], np.asarray(labels)[sample]
        enrollments = enrollments[enrollments["student_id"].isin(students["student_id"])]
    matrix = course_matrix(students["student_id"], enrollments).matrix
    return binary_silhouette(matrix, labels, seed=seed)


def binary_silhouette(matrix: sp.spmatrix, labels: np.ndarray, *, sample_size: int | None = None,
                      seed: int = 0) -> float | None:
    """scikit-learn's ``silhouette_score(matrix, labels, metric="euclidean",
    sample_size=sample_size, random_state=seed)`` for a 0/1 matrix: the same sample, and the
    same value to float64 rounding (scikit-learn scores float32 input in float32, ~1e-8
    apart); ``None`` where scikit-learn raises: fewer than 2 or more than n - 1 labels in the
    sample, or no columns.

    Why not scikit-learn's function: importing scikit-learn is a large share of a short run
    (``python -X importtime -c "import sklearn"``), and it computes the distances of every pair of sampled students,
    while students with the same course set have the same distances to everyone: here
    distances are computed between the distinct rows only (from the exact integer Gram
    matrix, |a| + |b| - 2 a.b) and summed per label with the (row, label) counts as weights.
    Memory: chunks of rows, each of its arrays at most ``SILHOUETTE_WORKING_MEMORY_MB``
    (a few live at once).
    """
    labels = np.asarray(labels)
    if matrix.shape[1] == 0:
        return None
    n_rows = matrix.shape[0]
    if sample_size is not None and sample_size < n_rows:
        indices = np.random.RandomState(seed).permutation(n_rows)[:sample_size]  # as scikit-learn draws it
        matrix, labels = matrix[indices], labels[indices]
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    matrix.sum_duplicates()
    matrix.sort_indices()
    n_points = matrix.shape[0]
    label_of_point, label_sizes = np.unique(labels, return_inverse=True, return_counts=True)[1:]
    n_labels = len(label_sizes)
    if not 1 < n_labels < n_points:
        return None
    row_keys = pd.Series([matrix.indices[matrix.indptr[i]:matrix.indptr[i + 1]].tobytes() for i in range(n_points)],
                         dtype=object)
    row_of_point = pd.factorize(row_keys)[0]
    first_point = np.unique(row_of_point, return_index=True)[1]
    distinct = matrix[first_point]
    n_distinct = distinct.shape[0]
    if distinct.shape[1] <= SILHOUETTE_DENSE_MAX_COURSES:
        distinct = distinct.toarray()
    norms = np.asarray(distinct.sum(axis=1)).ravel()
    # points_per_label[r, l]: sampled points with course row r and label l
    points_per_label = sp.csr_matrix((np.ones(n_points), (row_of_point, label_of_point)), shape=(n_distinct, n_labels))
    chunk = max(1, int(SILHOUETTE_WORKING_MEMORY_MB * 2**20) // (8 * max(n_distinct, n_labels)))
    own_sum = np.empty(n_points)
    nearest_other = np.empty(n_points)
    by_row = np.argsort(row_of_point, kind="stable")  # points grouped by course row
    rows_by_row = row_of_point[by_row]
    for start in range(0, n_distinct, chunk):
        stop = min(start + chunk, n_distinct)
        gram = distinct[start:stop] @ distinct.T
        gram = gram.toarray() if sp.issparse(gram) else gram
        distances = np.sqrt(np.maximum(norms[start:stop, None] + norms[None, :] - 2.0 * gram, 0.0))
        sums = np.asarray((points_per_label.T @ distances.T).T)  # (rows start:stop) x labels
        first, last = np.searchsorted(rows_by_row, [start, stop])
        points = by_row[first:last]
        local_row, own = row_of_point[points] - start, label_of_point[points]
        own_sum[points] = sums[local_row, own]
        # a point's nearest other label: its row's nearest label, or the second nearest if that is its own
        mean_to_label = sums / label_sizes[None, :]
        two_nearest = np.argpartition(mean_to_label, 1, axis=1)[:, :2]
        two_means = np.take_along_axis(mean_to_label, two_nearest, axis=1)
        nearest_is_own = two_nearest[local_row, 0] == own
        nearest_other[points] = np.where(nearest_is_own, two_means[local_row, 1], two_means[local_row, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        within = own_sum / (label_sizes[label_of_point] - 1)
        scores = (nearest_other - within) / np.maximum(within, nearest_other)
    return float(np.mean(np.nan_to_num(scores)))  # 0 for single-member labels, as scikit-learn


def _threshold_verdicts(metrics, thresholds, batch_quality, group_stats) -> dict[str, dict[str, Any]]:
    verdicts = {}
    for name, minimum in thresholds.items():
        value = metrics.get(name)
        passed = value is None or value >= minimum
        responsible: list[str] = []
        if not passed:
            if name in ("academic_coherence", "silhouette_score"):
                responsible = batch_quality.nsmallest(MAX_LISTED, "academic_coherence")["batch_code"].tolist()
            elif name == "resource_utilization":
                responsible = (
                    batch_quality.dropna(subset=["utilization"])
                    .nsmallest(MAX_LISTED, "utilization")["batch_code"]
                    .tolist()
                )
            elif name == "constraint_satisfaction_rate":
                responsible = (
                    batch_quality.loc[batch_quality["broken_rules"] != "", "batch_code"].head(MAX_LISTED).tolist()
                )
            elif name == "size_balance":
                ratio = (group_stats["std"].fillna(0) / group_stats["mean"]).sort_values(ascending=False)
                responsible = [f"group {g}" for g in ratio.index[:MAX_LISTED]]
        verdicts[name] = {"value": value, "threshold": minimum, "passed": bool(passed), "responsible": responsible}
    return verdicts
