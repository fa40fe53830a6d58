"""How far from optimal are stage2's batching algorithms? Run: ``python experiments/optimality/run.py``.

For every instance of :func:`instances.benchmark_instances` the exact optimum of the
within-batch SSE is computed by :mod:`oracle` (exhaustive search or a MILP proven optimal by
HiGHS), then every algorithm of ``stage2.clustering.ALGORITHMS`` with its default parameters
(plus ``balanced`` with ``n_init=10``) solves the same problem
(``BatchingProblem(features, sizes, seed)``, exact sizes). The headline tables use seed 0 (what
the pipeline gives the first group with ``seed: 0``); the same runs repeated with seeds 0-9
show how much of a result is luck. Prints markdown tables (summary per algorithm, seed
robustness, gap per instance) and writes one row per (instance, algorithm, seed) to
``experiments/optimality/results.csv``.

gap = (alg_sse − opt_sse) / opt_sse (0 when both are 0); an algorithm is *optimal* on an
instance when gap ≤ 1e-9.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import platform
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
for path in (str(HERE), str(REPO_ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

from instances import Instance, benchmark_instances  # noqa: E402
from oracle import solve, sse_of  # noqa: E402

from stage2.clustering import ALGORITHMS, BatchingProblem, make_batcher, within_batch_sse  # noqa: E402

COMMAND = "python experiments/optimality/run.py"
OPTIMAL_TOL = 1e-9
#: the targets the default engine must meet
TARGETS = {"mean_gap_pct": 0.5, "worst_gap_pct": 3.0, "optimal_share_pct": 80.0}


def algorithm_configs() -> list[tuple[str, dict]]:
    """(row label, make_batcher params): every registered algorithm with defaults, then extras."""
    configs = [(name, {"name": name}) for name in ALGORITHMS]
    configs.append(("balanced n_init=10", {"name": "balanced", "n_init": 10}))
    return configs


def gap_of(sse: float, opt: float) -> float:
    if opt <= 0.0:
        return 0.0 if sse <= 1e-12 else math.inf
    return (sse - opt) / opt


def run_algorithm(params: dict, inst: Instance, seed: int) -> tuple[float, float]:
    batcher = make_batcher(params)
    problem = BatchingProblem(inst.features, inst.batch_sizes.copy(), seed)
    start = time.perf_counter()
    labels = np.asarray(batcher.fit_predict(problem))
    seconds = time.perf_counter() - start
    if not np.array_equal(np.bincount(labels, minlength=inst.k), inst.batch_sizes):
        raise AssertionError(f"{params} returned wrong batch sizes on {inst.id}")
    sse = within_batch_sse(inst.features, labels, inst.k)
    if abs(sse - sse_of(inst.features, labels, inst.k)) > 1e-7 * max(1.0, sse):
        raise AssertionError("within_batch_sse disagrees with the definition")
    return sse, seconds


def warm_up(configs: list[tuple[str, dict]]) -> None:
    """Run every algorithm once on a throw-away problem, so JIT compilation and imports are not
    charged to the first instance."""
    rng = np.random.default_rng(0)
    features = (rng.random((24, 8)) < 0.4).astype(np.float64)
    for _, params in configs:
        make_batcher(params).fit_predict(BatchingProblem(features, np.array([8, 8, 8]), 0))


def code_fingerprint() -> str:
    """HEAD commit (read-only git call) and a digest of the measured engine's sources, since
    the working tree may hold uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "unknown"
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "stage2" / "clustering").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"HEAD {head}, stage2/clustering sha256 {digest.hexdigest()[:12]}"


def fmt_pct(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{100 * x:.3f}"


def summary_table(df: pd.DataFrame, labels: list[str]) -> str:
    lines = [
        "| algorithm | mean gap % | worst gap % | optimal (share) | mean time s | max time s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        d = df[df["algorithm"] == label]
        n_opt = int(d["optimal"].sum())
        lines.append(
            f"| {label} | {fmt_pct(d['gap'].mean())} | {fmt_pct(d['gap'].max())} | "
            f"{n_opt}/{len(d)} ({100 * n_opt / len(d):.0f} %) | {d['seconds'].mean():.4f} | {d['seconds'].max():.4f} |"
        )
    return "\n".join(lines)


def seed_table(df: pd.DataFrame, labels: list[str]) -> str:
    lines = [
        "| algorithm | mean gap % | worst gap % | optimal runs | instances optimal for every seed "
        "| worst seed's mean gap % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        d = df[df["algorithm"] == label]
        always = d.groupby("instance")["optimal"].all()
        per_seed = d.groupby("seed")["gap"].mean()
        lines.append(
            f"| {label} | {fmt_pct(d['gap'].mean())} | {fmt_pct(d['gap'].max())} | {100 * d['optimal'].mean():.1f} % | "
            f"{int(always.sum())}/{len(always)} | {fmt_pct(per_seed.max())} |"
        )
    return "\n".join(lines)


def instance_table(df: pd.DataFrame, labels: list[str]) -> str:
    first = df.drop_duplicates("instance")
    head = ("| instance | n | k | distinct | opt SSE | proven by | oracle s | "
            + " | ".join(f"{label} gap %" for label in labels) + " |")
    lines = [head, "|---|---:|---:|---:|---:|---|---:|" + "---:|" * len(labels)]
    for _, row in first.iterrows():
        gaps = df[df["instance"] == row["instance"]].set_index("algorithm")["gap"]
        cells = [fmt_pct(gaps[label]) if gaps[label] > OPTIMAL_TOL else "0" for label in labels]
        proof = row["opt_method"] if row["opt_proven"] else f"NOT PROVEN (lb {row['opt_lower_bound']:.4f})"
        lines.append(
            f"| {row['instance']} | {row['n']} | {row['k']} | {row['n_distinct']} | {row['opt_sse']:.4f} | "
            f"{proof} | {row['opt_seconds']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def target_report(df: pd.DataFrame, label: str = "balanced") -> str:
    d = df[df["algorithm"] == label]
    values = {
        "mean_gap_pct": 100 * d["gap"].mean(),
        "worst_gap_pct": 100 * d["gap"].max(),
        "optimal_share_pct": 100 * d["optimal"].mean(),
    }
    checks = [
        ("mean gap", values["mean_gap_pct"], "≤", TARGETS["mean_gap_pct"],
         values["mean_gap_pct"] <= TARGETS["mean_gap_pct"]),
        ("worst gap", values["worst_gap_pct"], "≤", TARGETS["worst_gap_pct"],
         values["worst_gap_pct"] <= TARGETS["worst_gap_pct"]),
        ("optimal on", values["optimal_share_pct"], "≥", TARGETS["optimal_share_pct"],
         values["optimal_share_pct"] >= TARGETS["optimal_share_pct"]),
    ]
    lines = [f"Targets for default `{label}`:"]
    for name, value, op, target, ok in checks:
        lines.append(f"- {name}: {value:.3f} % ({op} {target} %): {'MET' if ok else 'NOT MET'}")
    return "\n".join(lines)


def solve_all(instances: list[Instance], time_limit: float, jobs: int) -> list:
    """Oracle optimum of every instance, ``jobs`` at a time (each solve is timed in its worker)."""
    if jobs <= 1:
        return [solve(i.features, i.batch_sizes, time_limit=time_limit) for i in instances]
    # hardest (largest) first, so the two workers finish together
    order = sorted(range(len(instances)), key=lambda j: -instances[j].n * instances[j].k)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {j: pool.submit(solve, instances[j].features, instances[j].batch_sizes, time_limit) for j in order}
        return [futures[j].result() for j in range(len(instances))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=120.0, help="oracle MILP time limit per instance (s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the headline tables")
    parser.add_argument("--n-seeds", type=int, default=10, help="seeds 0..N-1 for the robustness table")
    parser.add_argument("--out", type=Path, default=HERE / "results.csv")
    parser.add_argument("--only", default="", help="run only instances whose id contains this text")
    parser.add_argument("--jobs", type=int, default=2, help="processes for the oracle (the algorithms run serially)")
    args = parser.parse_args(argv)

    wall = time.perf_counter()
    fingerprint = code_fingerprint()  # now: the sources the imported engine was read from
    configs = algorithm_configs()
    labels = [label for label, _ in configs]
    instances = [i for i in benchmark_instances() if args.only in i.id]
    optima = solve_all(instances, args.time_limit, args.jobs)
    warm_up(configs)
    rows = []
    for inst, opt in zip(instances, optima, strict=True):
        base = {
            "instance": inst.id,
            "source": inst.source,
            "n": inst.n,
            "k": inst.k,
            "sizes": "-".join(map(str, inst.batch_sizes.tolist())),
            "n_courses": int(inst.features.shape[1]),
            "n_distinct": inst.n_distinct,
            "opt_sse": opt.sse,
            "opt_proven": opt.proven,
            "opt_method": opt.method,
            "opt_lower_bound": opt.lower_bound,
            "opt_seconds": round(opt.seconds, 4),
        }
        status = [f"oracle {opt.sse:.4f} ({opt.method}, {'proven' if opt.proven else 'NOT proven'}, "
                  f"{opt.seconds:.1f}s)"]
        seeds = sorted({args.seed, *range(args.n_seeds)})
        for label, params in configs:
            for seed in seeds:
                sse, seconds = run_algorithm(params, inst, seed)
                if opt.proven and sse < opt.sse - 1e-7 * max(1.0, opt.sse):
                    raise AssertionError(f"{label} beat the proven optimum on {inst.id}: {sse} < {opt.sse}")
                gap = max(0.0, gap_of(sse, opt.sse)) if opt.proven else gap_of(sse, opt.sse)
                rows.append({**base, "algorithm": label, "seed": seed, "sse": sse, "gap": gap,
                             "optimal": gap <= OPTIMAL_TOL, "seconds": round(seconds, 5)})
                if seed == args.seed:
                    status.append(f"{label} {fmt_pct(gap)}%")
        print(f"{inst.id:26s} " + "; ".join(status), file=sys.stderr, flush=True)
    all_seeds = pd.DataFrame(rows)
    all_seeds.to_csv(args.out, index=False, float_format="%.10g")
    df = all_seeds[all_seeds["seed"] == args.seed]
    elapsed = time.perf_counter() - wall

    n_proven = int(df.drop_duplicates("instance")["opt_proven"].sum())
    print(f"## Optimality gap of stage2's batching algorithms ({len(instances)} instances, "
          f"{n_proven} optima proven)\n")
    print(summary_table(df, labels))
    print()
    print(target_report(df))
    print()
    n_seeds = all_seeds["seed"].nunique()
    print(f"### Seed robustness (every instance × seeds {all_seeds['seed'].min()}-{all_seeds['seed'].max()}, "
          f"{len(instances) * n_seeds} runs per algorithm)\n")
    print(seed_table(all_seeds, labels))
    print()
    print("### Per instance (gap %, 0 = optimal)\n")
    print(instance_table(df, labels))
    print()
    print(f"Measured code: {fingerprint}; Python {platform.python_version()}, "
          f"{platform.machine()}; whole run {elapsed:.1f} s.")
    print(f"Per-instance rows: {args.out.relative_to(REPO_ROOT) if args.out.is_relative_to(REPO_ROOT) else args.out}")
    print(f"Regenerate: {COMMAND}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
