"""Child-process entry points of the scaling benchmark (``experiments/scaling/run.py``).

Every measured thing runs in its own process so that its wall time and peak RSS are its own:

- ``python runner.py prepare DATA_DIR OUT.npz``: read an institution with stage2's loader,
  plan its batches with stage2's sizing (the group's bounds, EAV overrides and room caps
  included) and save the feature matrix of its one clustered group (course_matrix +
  group_features, no soft rules), the planned sizes, the bounds, λ and the algorithms'
  configured parameters (``conf/algorithm/*.yaml``, what ``python -m stage2`` uses).
- ``python runner.py fit PREPARED.npz METHOD OUT.json [NAME=VALUE ...]``: load the prepared
  matrix, time the fit of one METHOD (see :data:`METHODS`) and write fit seconds and quality
  measures. Library start-up is not in the fit time, for any method: KMC's and stage2's
  imports, and for stage2 the first-call load of its compiled kernels (a short fit of the
  same matrix first, timed as ``kernel_load_s``). ``NAME=VALUE`` (a JSON value) overrides a
  parameter of the method: of stage2's algorithm (``n_candidates=64``, ``swap_max_trials=1000``)
  or of ``KMeansConstrained`` (``random_state=3``); the harness itself passes none.
- ``python runner.py warmup OVERRIDE...``: compile stage2's numba kernels once (so that no
  measured fit pays a first-ever JIT compilation; loading the compiled cache is still paid by
  every process) and print, as JSON, where stage2 is imported from and which of the given
  configuration overrides this version of stage2 accepts.

Imports are lazy so that a k-means-constrained child never imports stage2's clustering and
vice versa. The quality functions here are plain numpy and are shared with ``run.py``.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]

#: method name -> (family, size constraint, n_init of k-means-constrained or None)
METHODS: dict[str, tuple[str, str, int | None]] = {
    "stage2 balanced": ("balanced", "flex", None),
    "stage2 balanced pure-SSE": ("balanced", "bounds", None),
    "stage2 balanced exact": ("balanced", "equal", None),
    "stage2 kmeans exact": ("kmeans", "equal", None),
    "stage2 spectral exact": ("spectral", "equal", None),
    "stage2 hierarchical exact": ("hierarchical", "equal", None),
    "KMC n_init=10 [min,max]": ("kmc", "bounds", 10),
    "KMC n_init=1 [min,max]": ("kmc", "bounds", 1),
    "KMC n_init=10 equal": ("kmc", "equal", 10),
    "KMC n_init=1 equal": ("kmc", "equal", 1),
}
#: how each constraint is described in the tables
CONSTRAINT_LABELS = {
    "flex": "[{lo},{hi}] + λ={lam:g}·Σ(s−p)²",
    "bounds": "[{lo},{hi}]",
    "equal": "equal [{floor},{ceil}]",
}


def peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM: unlike ru_maxrss, it does not carry
    over the launching process's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- quality


def course_sse(X: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Σ_b Σ_{i∈b} ||x_i − mean_b||² on 0/1 course vectors = Σ_(b,c) e_bc (1 − e_bc / s_b)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, labels, X)
    nonempty = counts > 0
    total = float(np.einsum("ij,ij->", X, X))
    return total - float(np.sum(np.einsum("ij,ij->i", sums[nonempty], sums[nonempty]) / counts[nonempty]))


def coherence_from_counts(e: np.ndarray, s_of_e: np.ndarray, threshold: float = 0.5) -> float | None:
    """Share of course demands e_bc in (batch, course) pairs with e_bc / s_b ≥ threshold."""
    total = float(e.sum())
    if total <= 0:
        return None
    return float(e[e / s_of_e >= threshold - 1e-12].sum() / total)


def academic_coherence(X: np.ndarray, labels: np.ndarray, k: int, threshold: float = 0.5) -> float | None:
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, labels, X)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    keep = sizes > 0
    e = sums[keep]
    s = np.broadcast_to(sizes[keep][:, None], e.shape)
    mask = e > 0
    return coherence_from_counts(e[mask], s[mask], threshold)


def size_balance(sizes: np.ndarray) -> float:
    """1 − std/mean of the batch sizes (population std), as stage2's metric for one group."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return float(1.0 - sizes.std() / sizes.mean()) if sizes.size else float("nan")


def quality_of(X: np.ndarray, labels: np.ndarray, k: int) -> dict:
    sizes = np.bincount(labels, minlength=k)
    sse = course_sse(X, labels, k)
    return {
        "course_sse": sse,
        "course_sse_per_student": sse / X.shape[0],
        "academic_coherence": academic_coherence(X, labels, k),
        "size_balance": size_balance(sizes),
        "batch_size_min": int(sizes.min()),
        "batch_size_max": int(sizes.max()),
    }


# ----------------------------------------------------------------------------- prepare


def prepare(data_dir: str | Path, out: str | Path) -> dict:
    """Plan ``data_dir`` with stage2 and save its single clustered group's feature matrix."""
    from omegaconf import OmegaConf

    from stage2 import load_config
    from stage2.allocation import home_rooms
    from stage2.config import build_settings
    from stage2.contract import load_institution
    from stage2.features import course_matrix, group_features
    from stage2.sizing import STATUS_OK, choose_batch_count, plan_batches

    data_dir = Path(data_dir).resolve()
    cfg = load_config([f"data.input_dir={data_dir}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    data = load_institution(data_dir)
    settings = build_settings(cfg, data)
    active = data.active_students
    rooms = home_rooms(data.rooms, resolved["resources"].get("room_types"))
    plan = plan_batches(active, settings, int(rooms["capacity"].max()) if len(rooms) else None)
    clustered = [g for g in plan.groups if g.n_batches > 1]
    if len(clustered) != 1:
        raise SystemExit(f"{data_dir}: expected one clustered group, found {len(clustered)}")
    group = clustered[0]
    if group.status != STATUS_OK:
        raise SystemExit(f"{data_dir}: group status {group.status}: {group.reason}")
    assert choose_batch_count(group.n_students, group.bounds) == group.n_batches
    courses = course_matrix(active["student_id"], data.active_enrollments).matrix
    X = group_features(courses[group.student_index], None)
    algorithms = {}
    for name in ("balanced", "kmeans", "spectral", "hierarchical"):
        conf = OmegaConf.to_container(load_config([f"data.input_dir={data_dir}", f"algorithm={name}"]).algorithm)
        algorithms[name] = conf
    import stage2

    meta = {
        "stage2_path": str(Path(stage2.__file__).resolve().parent),
        "data_dir": str(data_dir),
        "group": plan.label(group),
        "n_students": group.n_students,
        "n_groups": len(plan.groups),
        "k": group.n_batches,
        "bounds": [group.bounds.min, group.bounds.target, group.bounds.max],
        "deviation_cost": settings.deviation_cost,
        "algorithms": algorithms,
        "n_courses": int(X.shape[1]),
        "n_distinct_rows": int(np.unique(X, axis=0).shape[0]),
    }
    np.savez(out, X=X, planned=group.batch_sizes, meta=json.dumps(meta))
    return meta


def load_prepared(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with np.load(path) as f:
        return f["X"], f["planned"], json.loads(str(f["meta"]))


# ----------------------------------------------------------------------------- fit


def constraint_label(kind: str, meta: dict, planned: np.ndarray) -> str:
    lo, _, hi = meta["bounds"]
    return CONSTRAINT_LABELS[kind].format(lo=lo, hi=hi, lam=meta["deviation_cost"],
                                          floor=int(planned.min()), ceil=int(planned.max()))


def parse_overrides(args: list[str]) -> dict:
    """``["n_candidates=64", ...]`` -> ``{"n_candidates": 64, ...}`` (values parsed as JSON)."""
    overrides = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            raise SystemExit(f"expected NAME=VALUE, got {arg!r}")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    return overrides


def stage2_sizes(kind: str, planned: np.ndarray, meta: dict):
    """The size model of a stage2 variant (``METHODS``' kind) on a prepared group."""
    from stage2.clustering.assignment import SizeModel

    lo, _, hi = meta["bounds"]
    if kind == "flex":
        return SizeModel(planned, lo, hi, float(meta["deviation_cost"]))
    if kind == "bounds":
        return SizeModel(planned, lo, hi, 0.0)
    return SizeModel.exact(planned)


def fit(prepared: str | Path, method: str, overrides: dict | None = None) -> dict:
    """Fit ``method`` on the prepared group (its parameters updated by ``overrides``); returns
    the row (fit seconds, quality)."""
    overrides = overrides or {}
    family, kind, n_init = METHODS[method]
    X, planned, meta = load_prepared(prepared)
    k = int(meta["k"])
    lo, _, hi = meta["bounds"]
    n = X.shape[0]
    rss_before = peak_rss_mb()
    if family == "kmc":
        from k_means_constrained import KMeansConstrained

        if kind == "bounds":
            size_min, size_max = lo, hi
        else:
            size_min, size_max = n // k, math.ceil(n / k)
        params = {"n_init": n_init, "random_state": 0, **overrides}
        model = KMeansConstrained(n_clusters=k, size_min=size_min, size_max=size_max, **params)
        started = time.perf_counter()
        model.fit(X)
        fit_s = time.perf_counter() - started
        labels = np.asarray(model.labels_, dtype=np.int64)
        admissible = bool(np.bincount(labels, minlength=k).min() >= size_min
                          and np.bincount(labels, minlength=k).max() <= size_max)
    else:
        from stage2.clustering import BatchingProblem, make_batcher

        sizes = stage2_sizes(kind, planned, meta)
        batcher = make_batcher({**meta["algorithms"][family], **overrides})
        # library start-up stays outside the timed fit, as KMC's imports above do: scikit-learn
        # (imported by stage2's sklearn-based algorithms when they fit) and stage2's compiled
        # kernels, which numba loads on their first call (~0.3-0.4 s per process, mostly
        # initialising numba itself), by a short fit first (kernel_load_s)
        started = time.perf_counter()
        if family == "balanced":
            load_kernels(meta["algorithms"]["balanced"], X, sizes)
        else:  # scikit-learn, and the compiled assignment solver of their size repair
            import sklearn.cluster  # noqa: F401

            from stage2.clustering.assignment import assign_exact

            assign_exact(X[:2], np.ones(2, dtype=np.int64), X[:2], np.ones(2, dtype=np.int64))
        kernel_load_s = time.perf_counter() - started
        started = time.perf_counter()
        labels = batcher.fit_predict(BatchingProblem(X, sizes, seed=0))
        fit_s = time.perf_counter() - started
        admissible = sizes.admits(np.bincount(labels, minlength=k))
    row = {
        "method": method,
        **({"kernel_load_s": kernel_load_s} if family != "kmc" else {}),
        "constraint": constraint_label(kind, meta, planned),
        "constraint_kind": kind,
        "n_students": n,
        "k": k,
        "fit_s": fit_s,
        "rss_before_fit_mb": rss_before,
        "sizes_admissible": admissible,
    }
    if overrides:
        row["overrides"] = overrides
    row.update(quality_of(X, labels, k))
    return row


def load_kernels(params: dict, X: np.ndarray, sizes) -> None:
    """A short ``balanced`` fit of the same matrix and size model (one restart, two rounds, a
    few random-swap trials), so that the timed fit finds stage2's compiled kernels loaded."""
    from stage2.clustering import BatchingProblem, make_batcher

    short = {**params, "name": "balanced", "n_init": 1, "max_iter": 2, "swap_max_trials": 8, "swap_rounds": 1,
             "tight_effort": 1}
    make_batcher({k: v for k, v in short.items() if k in params or k == "name"}).fit_predict(
        BatchingProblem(X, sizes, seed=0))


def warmup(overrides: list[str]) -> dict:
    import stage2
    from stage2 import load_config
    from stage2.clustering import BatchingProblem, make_batcher
    from stage2.clustering.assignment import SizeModel

    rng = np.random.default_rng(0)
    X = (rng.random((400, 12)) < 0.3).astype(np.float64)
    planned = np.full(10, 40)
    for sizes in (SizeModel(planned, 15, 60, 0.03), SizeModel(planned, 15, 60, 0.0), SizeModel.exact(planned)):
        make_batcher({"name": "balanced"}).fit_predict(BatchingProblem(X, sizes, seed=0))
    accepted = []
    for override in overrides:
        try:
            load_config([override])
            accepted.append(override)
        except Exception:  # noqa: BLE001 - an unknown key in this version of the schema
            pass
    return {"stage2_path": str(Path(stage2.__file__).resolve().parent), "accepted": accepted}


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "warmup":
        print(json.dumps(warmup(args)))
    elif command == "prepare":
        meta = prepare(args[0], args[1])
        print(json.dumps(meta))
    elif command == "fit":
        row = fit(args[0], args[1], parse_overrides(args[3:]))
        Path(args[2]).write_text(json.dumps(row))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.path.append(str(REPO_ROOT))  # last: stage2 as installed (or a snapshot on PYTHONPATH) wins
    raise SystemExit(main(sys.argv[1:]))
