"""Exact minimum of the within-batch SSE for small instances, with a proof of optimality.

The problem: split the n rows of ``features`` into batches of the exact sizes ``sizes`` so
that SSE = Σ_b Σ_{i∈b} ||x_i − mean_b||² is minimal. With fixed sizes

    SSE = Σ_i ||x_i||² − Σ_b (1/s_b) Σ_{i,j∈b} <x_i, x_j>,

so minimising SSE is maximising the pair score Σ_b (1/s_b) Σ_{i,j∈b} w_ij with w = X Xᵀ — a
quadratic assignment. Two exact methods:

``exhaustive``
    enumerates every partition into the given sizes once (batches of equal size are
    interchangeable: the lowest unassigned student always opens the next batch, and the batches
    of one size are opened in order), scoring each batch incrementally. Used for tiny n.

``milp``
    a mixed-integer linear programme solved by HiGHS through :func:`scipy.optimize.milp`:

    - y_ib ∈ {0,1}: student i in batch b; Σ_b y_ib = 1, Σ_i y_ib = s_b;
    - z_ijb ∈ [0,1] (i<j) for the product y_ib·y_jb, with z_ijb ≤ y_ib, z_ijb ≤ y_jb and the
      reformulation-linearisation equalities Σ_{j≠i} z_ijb = (s_b − 1)·y_ib (multiply
      Σ_j y_jb = s_b by y_ib). For integral y they force z_ijb = y_ib·y_jb exactly, whatever
      the sign of w, and they make the LP bound far tighter than the textbook linearisation;
    - objective: maximise L·Σ_b (1/s_b)(Σ_i w_ii y_ib + 2 Σ_{i<j} w_ij z_ijb), L = lcm(sizes),
      which is integral for 0/1 features (HiGHS then rounds its bound);
    - symmetry breaking that keeps at least one optimum (proof in :func:`milp_min_sse`):
      equal-size batches are ordered by their lowest student (student i may join batch b only
      if a lower student is in batch b−1), and identical students i<j satisfy
      batch(i) ≤ batch(j).

    A solution is *proven* optimal when HiGHS reports optimality and the remaining gap between
    its dual bound and the SSE found is below the resolution of the objective: for 0/1 features
    every SSE is a multiple of 1/L, so a gap below 1/(2L) leaves no better partition.

:func:`solve` picks exhaustive search when the partitions are few, else the MILP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

#: exhaustive search is used up to this many partitions
EXHAUSTIVE_MAX_PARTITIONS = 20_000


@dataclass(frozen=True)
class OracleResult:
    sse: float
    labels: np.ndarray
    #: a proof that no labelling with these sizes has a lower SSE
    proven: bool
    method: str
    #: best lower bound on the optimal SSE (equals ``sse`` when proven)
    lower_bound: float
    seconds: float
    status: str = ""
    nodes: int = 0

    @property
    def gap(self) -> float:
        """Relative gap (sse − lower_bound) / sse; 0 when proven."""
        if self.sse <= 0:
            return 0.0
        return max(0.0, (self.sse - self.lower_bound) / self.sse)


# --------------------------------------------------------------------------- shared helpers


def sse_of(features: np.ndarray, labels: np.ndarray, n_batches: int) -> float:
    """Within-batch SSE straight from the definition (independent of stage2's helper)."""
    total = 0.0
    for b in range(n_batches):
        rows = features[labels == b]
        if rows.shape[0]:
            total += float(((rows - rows.mean(axis=0)) ** 2).sum())
    return total


def _is_integral(a: np.ndarray) -> bool:
    return bool(np.all(np.abs(a - np.rint(a)) < 1e-12))


def _resolution(features: np.ndarray, sizes: np.ndarray) -> float | None:
    """Smallest possible positive difference between two SSE values (None if unknown)."""
    if not _is_integral(features):
        return None
    return 1.0 / math.lcm(*(int(s) for s in sizes))


def n_partitions(sizes: np.ndarray) -> int:
    """Number of distinct partitions of sum(sizes) students into batches of these sizes, with
    equal-size batches interchangeable."""
    n = int(np.sum(sizes))
    count = math.factorial(n)
    for s in sizes:
        count //= math.factorial(int(s))
    for mult in np.unique(sizes, return_counts=True)[1]:
        count //= math.factorial(int(mult))
    return count


# --------------------------------------------------------------------------- exhaustive search


def iter_partitions(n: int, sizes: np.ndarray) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Every partition of students ``0..n-1`` into batches of the given sizes, once each
    (equal-size batches are interchangeable): the lowest unassigned student always opens the
    next batch, whose size is any size still unused."""
    remaining: dict[int, int] = {}
    for s in np.asarray(sizes).tolist():
        remaining[int(s)] = remaining.get(int(s), 0) + 1
    if sum(s * m for s, m in remaining.items()) != n:
        raise ValueError("sizes must sum to n")
    batches: list[tuple[int, ...]] = []

    def recurse(unassigned: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], ...]]:
        if not unassigned:
            yield tuple(batches)
            return
        first, rest = unassigned[0], unassigned[1:]
        for s in [s for s, m in remaining.items() if m > 0]:
            remaining[s] -= 1
            for others in combinations(rest, s - 1):
                taken = set(others)
                batches.append((first, *others))
                yield from recurse(tuple(i for i in rest if i not in taken))
                batches.pop()
            remaining[s] += 1

    yield from recurse(tuple(range(n)))


def exhaustive_min_sse(features: np.ndarray, sizes: np.ndarray) -> OracleResult:
    """Score every partition of :func:`iter_partitions`; exact for any feature values."""
    start = time.perf_counter()
    features = np.asarray(features, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n = features.shape[0]
    if int(sizes.sum()) != n:
        raise ValueError("sizes must sum to the number of rows")
    gram = features @ features.T
    cache: dict[tuple[int, ...], float] = {}

    def batch_score(members: tuple[int, ...]) -> float:  # (1/s) Σ_{i,j∈b} <x_i, x_j>
        if members not in cache:
            idx = np.fromiter(members, dtype=np.int64)
            cache[members] = float(gram[np.ix_(idx, idx)].sum()) / len(members)
        return cache[members]

    best_score, best_batches, count = -np.inf, (), 0
    for batches in iter_partitions(n, sizes):
        count += 1
        score = sum(batch_score(b) for b in batches)
        if score > best_score + 1e-12:
            best_score, best_batches = score, batches
    labels = _labels_from_batches(list(best_batches), sizes, n)
    sse = sse_of(features, labels, sizes.size)
    return OracleResult(
        sse=sse,
        labels=labels,
        proven=True,
        method="exhaustive",
        lower_bound=sse,
        seconds=time.perf_counter() - start,
        status=f"enumerated {count} partitions",
    )


def _labels_from_batches(batches: list[tuple[int, ...]], sizes: np.ndarray, n: int) -> np.ndarray:
    """Give each found batch the label of an unused batch of its size."""
    free: dict[int, list[int]] = {}
    for b, s in enumerate(sizes.tolist()):
        free.setdefault(s, []).append(b)
    labels = np.full(n, -1, dtype=np.int64)
    for members in batches:
        labels[list(members)] = free[len(members)].pop(0)
    assert (labels >= 0).all() and np.array_equal(np.bincount(labels, minlength=sizes.size), sizes)
    return labels


# --------------------------------------------------------------------------- MILP


def milp_min_sse(
    features: np.ndarray,
    sizes: np.ndarray,
    time_limit: float = 60.0,
    symmetry_breaking: bool = True,
) -> OracleResult:
    """Exact MILP (see the module docstring).

    The symmetry breaking keeps an optimum: take any optimal labelling and read it as the
    sequence L = (label of student 0, ..., label of student n−1). Relabelling the equal-size
    batches by their lowest student gives the lexicographically smallest such sequence among
    those relabellings; if identical students i<j then sit in batches with label(i) > label(j),
    swapping the two students leaves the SSE unchanged and makes L lexicographically smaller
    (position i decreases), and relabelling again cannot increase it. L cannot decrease for
    ever, so an optimal labelling meeting both rules exists.
    """
    start = time.perf_counter()
    features = np.asarray(features, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    n, k = features.shape[0], int(sizes.size)
    if int(sizes.sum()) != n:
        raise ValueError("sizes must sum to the number of rows")
    gram = features @ features.T
    total_sq = float(np.trace(gram))
    resolution = _resolution(features, sizes)
    scale = float(math.lcm(*(int(s) for s in sizes))) if resolution is not None else 1.0
    if k == 1:
        labels = np.zeros(n, dtype=np.int64)
        sse = sse_of(features, labels, 1)
        return OracleResult(sse, labels, True, "milp", sse, time.perf_counter() - start, "single batch")

    pi, pj = np.triu_indices(n, k=1)
    n_pairs = pi.size
    n_y = n * k

    def y(i, b):
        return np.asarray(i) * k + np.asarray(b)

    def z(p, b):
        return n_y + np.asarray(p) * k + np.asarray(b)

    n_var = n_y + n_pairs * k
    inv_s = 1.0 / sizes.astype(np.float64)
    # objective (minimised): −scale·Σ_b (1/s_b)(Σ_i w_ii y_ib + 2 Σ_{i<j} w_ij z_ijb)
    c = np.zeros(n_var)
    c[:n_y] = -scale * (np.diag(gram)[:, None] * inv_s[None, :]).reshape(-1)
    c[n_y:] = -scale * (2.0 * gram[pi, pj][:, None] * inv_s[None, :]).reshape(-1)
    if resolution is not None:
        c = np.rint(c)

    rows, cols, vals, lo, hi = [], [], [], [], []
    n_rows = 0

    def add(row_cols, row_vals, lower, upper):
        nonlocal n_rows
        row_cols = np.asarray(row_cols).reshape(-1)
        rows.append(np.full(row_cols.size, n_rows))
        cols.append(row_cols)
        vals.append(np.broadcast_to(np.asarray(row_vals, dtype=np.float64), row_cols.shape).copy())
        lo.append(lower)
        hi.append(upper)
        n_rows += 1

    for i in range(n):  # each student in one batch
        add(y(i, np.arange(k)), 1.0, 1.0, 1.0)
    for b in range(k):  # exact sizes
        add(y(np.arange(n), b), 1.0, float(sizes[b]), float(sizes[b]))
    # z_pb ≤ y_ib, z_pb ≤ y_jb, vectorised as two blocks of n_pairs·k rows
    pb_p = np.repeat(np.arange(n_pairs), k)
    pb_b = np.tile(np.arange(k), n_pairs)
    block_rows = np.arange(pb_p.size)
    link = []
    for ends in (pi, pj):
        link.append(
            sp.csr_matrix(
                (
                    np.concatenate([np.ones(pb_p.size), -np.ones(pb_p.size)]),
                    (np.concatenate([block_rows, block_rows]), np.concatenate([z(pb_p, pb_b), y(ends[pb_p], pb_b)])),
                ),
                shape=(pb_p.size, n_var),
            )
        )
    # RLT: Σ_{j≠i} z_{ij,b} − (s_b − 1) y_ib = 0
    pairs_of = [[] for _ in range(n)]
    for p, (i, j) in enumerate(zip(pi.tolist(), pj.tolist(), strict=True)):
        pairs_of[i].append(p)
        pairs_of[j].append(p)
    for i in range(n):
        for b in range(k):
            add(np.concatenate([z(pairs_of[i], b), [y(i, b)]]), np.r_[np.ones(len(pairs_of[i])), -(sizes[b] - 1)],
                0.0, 0.0)
    if symmetry_breaking:
        # equal-size batches b−1, b ordered by their lowest student: y_ib ≤ Σ_{j<i} y_{j,b−1}
        for b in range(1, k):
            if sizes[b] != sizes[b - 1]:
                continue
            for i in range(n):
                add(np.concatenate([[y(i, b)], y(np.arange(i), b - 1)]), np.r_[1.0, -np.ones(i)], -np.inf, 0.0)
        # identical students i < j (consecutive within their class): batch(i) ≤ batch(j)
        _, inverse = np.unique(features, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for cls in np.unique(inverse):
            members = np.flatnonzero(inverse == cls)
            for i, j in zip(members[:-1], members[1:], strict=True):
                add(np.concatenate([y(i, np.arange(k)), y(j, np.arange(k))]), np.r_[np.arange(k), -np.arange(k)],
                    -np.inf, 0.0)
    small = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_var)
    )
    matrix = sp.vstack([small, *link], format="csr")
    lower = np.concatenate([lo, np.full(2 * pb_p.size, -np.inf)])
    upper = np.concatenate([hi, np.zeros(2 * pb_p.size)])
    integrality = np.zeros(n_var)
    integrality[:n_y] = 1
    res = milp(
        c,
        integrality=integrality,
        bounds=Bounds(0.0, 1.0),
        constraints=LinearConstraint(matrix, lower, upper),
        options={"time_limit": float(time_limit), "mip_rel_gap": 0.0, "presolve": True},
    )
    seconds = time.perf_counter() - start
    if res.x is None:
        raise RuntimeError(f"MILP found no solution: {res.message}")
    yv = res.x[:n_y].reshape(n, k)
    labels = np.argmax(yv, axis=1).astype(np.int64)
    if not np.array_equal(np.bincount(labels, minlength=k), sizes):
        raise RuntimeError("MILP solution violates the batch sizes")
    sse = sse_of(features, labels, k)
    # dual bound of the minimised −scale·score → upper bound on the score → lower bound on SSE
    dual = getattr(res, "mip_dual_bound", None)
    if dual is None or not np.isfinite(dual):
        lower_bound, proven = 0.0, False  # no bound reported: only the trivial SSE ≥ 0
    else:
        bound = total_sq + float(dual) / scale  # SSE ≥ Σ||x||² − (upper bound on the score)
        if resolution is not None:
            # every SSE is a multiple of 1/L: round the bound up to that grid (with float slack)
            bound = float(np.ceil(bound / resolution - 1e-6) * resolution)
            tolerance = resolution / 2
        else:
            tolerance = 1e-6 * max(1.0, sse)
        lower_bound = max(0.0, min(sse, bound))
        proven = res.status == 0 and sse - lower_bound < tolerance
    if abs((total_sq - (-res.fun / scale)) - sse) > 1e-6 * max(1.0, sse):
        raise RuntimeError("MILP objective and recomputed SSE disagree")
    return OracleResult(
        sse=sse,
        labels=labels,
        proven=bool(proven),
        method="milp",
        lower_bound=float(lower_bound),
        seconds=seconds,
        status=str(res.message),
        nodes=int(getattr(res, "mip_node_count", 0) or 0),
    )


def solve(features: np.ndarray, sizes: np.ndarray, time_limit: float = 60.0) -> OracleResult:
    """Exhaustive search when there are at most ``EXHAUSTIVE_MAX_PARTITIONS`` partitions,
    else the MILP."""
    if n_partitions(np.asarray(sizes)) <= EXHAUSTIVE_MAX_PARTITIONS:
        return exhaustive_min_sse(features, sizes)
    return milp_min_sse(features, sizes, time_limit=time_limit)
