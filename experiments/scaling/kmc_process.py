"""The peer as a whole process: what a user without stage2 would write.

    python experiments/scaling/kmc_process.py DIR --out membership.csv --k K [--size-min 15 --size-max 60]
    python experiments/scaling/kmc_process.py DIR --out membership.csv --plan quality_report.json

Reads ``student_data.csv`` and ``student_course_enrollment.csv`` of DIR with pandas, keeps
the active students, builds each mixable group's 0/1 course matrix (students equal on
program_id, academic_year, semester; only the courses the group takes), runs
``k_means_constrained.KMeansConstrained(n_clusters=k, size_min, size_max, n_init,
random_state=0)`` per group and writes ``student_id,group,batch`` to ``--out``.

The number of batches per group is stage2's (the benchmark compares clusterings, not
sizing): ``--k`` for a single group, or ``--plan`` = a stage2 ``quality_report.json`` whose
``groups`` give each group's k and [min, max] (groups sized outside the bounds, i.e. status
``undersized`` or ``no_feasible_count``, get stage2's equal sizes floor/ceil(n/k)).
Deliberately free of any stage2 import.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from k_means_constrained import KMeansConstrained

GROUP_FIELDS = ["program_id", "academic_year", "semester"]


def read_tables(data_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    students = pd.read_csv(f"{data_dir}/student_data.csv", dtype=str, keep_default_na=False,
                           usecols=["student_id", *GROUP_FIELDS, "is_active"])
    students = students[students["is_active"].str.strip().str.lower().isin(["true", "1", "yes", "t", "y"])]
    enrollments = pd.read_csv(f"{data_dir}/student_course_enrollment.csv", dtype=str, keep_default_na=False,
                              usecols=["student_id", "course_id"])
    return students.reset_index(drop=True), enrollments


def course_matrix(students: pd.DataFrame, enrollments: pd.DataFrame) -> sp.csr_matrix:
    rows = pd.Index(students["student_id"]).get_indexer(enrollments["student_id"])
    keep = rows >= 0
    cols, _ = pd.factorize(enrollments["course_id"][keep])
    m = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols)), shape=(len(students), int(cols.max()) + 1))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def parse_label(label: str) -> tuple[str, ...]:
    values = dict(part.split("=", 1) for part in label.split(", "))
    return tuple(values[f] for f in GROUP_FIELDS)


def group_specs(students: pd.DataFrame, args: argparse.Namespace) -> dict[tuple[str, ...], tuple[int, int, int]]:
    """group key -> (k, size_min, size_max)."""
    if args.plan is None:
        keys = students[GROUP_FIELDS].drop_duplicates().itertuples(index=False, name=None)
        keys = list(keys)
        if len(keys) != 1:
            raise SystemExit(f"--k needs one group; found {len(keys)}: give --plan")
        return {tuple(keys[0]): (args.k, args.size_min, args.size_max)}
    with open(args.plan) as f:
        report = json.load(f)
    specs = {}
    for g in report["groups"]:
        n, k = g["n_students"], g["n_batches"]
        lo, _, hi = g["bounds"]
        if g["status"] != "ok":
            lo, hi = n // k, math.ceil(n / k)
        specs[parse_label(g["key"])] = (k, lo, hi)
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--k", type=int)
    parser.add_argument("--size-min", type=int, default=15)
    parser.add_argument("--size-max", type=int, default=60)
    parser.add_argument("--plan", help="a stage2 quality_report.json: k and bounds per group")
    parser.add_argument("--n-init", type=int, default=10)
    args = parser.parse_args(argv)
    if (args.k is None) == (args.plan is None):
        parser.error("give exactly one of --k and --plan")

    started = time.perf_counter()
    students, enrollments = read_tables(args.data_dir)
    matrix = course_matrix(students, enrollments)
    specs = group_specs(students, args)
    keys = pd.MultiIndex.from_frame(students[GROUP_FIELDS])
    codes, uniques = keys.factorize()
    batch = np.zeros(len(students), dtype=np.int64)
    fit_s = 0.0
    for code, key in enumerate(uniques):
        index = np.flatnonzero(codes == code)
        k, lo, hi = specs[tuple(key)]
        if k == 1:
            continue
        sub = matrix[index]
        X = sub[:, np.flatnonzero(sub.getnnz(axis=0))].toarray()
        t = time.perf_counter()
        # KMC rejects size_max > n (same constraint: no batch can exceed its group)
        model = KMeansConstrained(n_clusters=k, size_min=lo, size_max=min(hi, index.size), n_init=args.n_init,
                                  random_state=0)
        batch[index] = model.fit_predict(X)
        fit_s += time.perf_counter() - t
    out = pd.DataFrame({"student_id": students["student_id"], "group": codes, "batch": batch})
    out.to_csv(args.out, index=False)
    print(json.dumps({"n_students": len(students), "n_groups": len(uniques), "fit_s": fit_s,
                      "total_s": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
