"""Summarise the latest weight-trade-off sweep recorded in MLflow.

    python -m stage2 -m +experiment=weight_tradeoff               # the sweep (8 jobs)
    python experiments/weight_tradeoff/analyze.py --tracking-uri sqlite:///$PWD/mlflow.db

The latest sweep is the most recent run tagged ``stage2.sweep=true`` in ``--experiment``
(default ``study-weight-tradeoff``), or ``--sweep-run-id``; its jobs are the runs tagged
``mlflow.parentRunId=<that run>``. One row per finished job (weights, the size-deviation price
λ they imply, the measures), sorted by homogeneity; ``pareto`` marks the jobs no other job
beats on both academic_coherence and size_balance (higher is better for both). Prints the table
as markdown and writes ``results.md`` and ``weight_tradeoff.png`` (coherence against size
balance, coloured by room utilisation, non-dominated points ringed) into ``--out`` (default:
this folder). Exit status 2 when there is no such experiment, sweep or finished job.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from stage2.tracking.sweeps import study_sweep_from_cli

HERE = Path(__file__).resolve().parent
EXPERIMENT = "study-weight-tradeoff"
PLOT = "weight_tradeoff.png"
PARAMS = ["weights.homogeneity", "weights.balance", "weights.size", "batch_size.deviation_cost"]
#: metric -> (column heading, decimals)
METRICS = {
    "academic_coherence": ("coherence ↑", 4),
    "course_sse_per_student": ("SSE/student ↓", 4),
    "size_balance": ("size balance ↑", 3),
    "resource_utilization": ("room utilisation ↑", 3),
    "constraint_satisfaction_rate": ("constraints ↑", 3),
    "runtime_s.clustering": ("clustering s ↓", 2),
}


def deviation_price(h: float, balance: float, size: float, base: float) -> float:
    """λ = deviation_cost × (balance + size) / homogeneity (stage2.config.settings)."""
    return math.inf if h <= 0 else base * (balance + size) / h


def non_dominated(x: pd.Series, y: pd.Series) -> pd.Series:
    """True where no other point is ≥ in both x and y and > in one (both maximised)."""
    return pd.Series([not ((x >= xi) & (y >= yi) & ((x > xi) | (y > yi))).any() for xi, yi in zip(x, y, strict=True)],
                     index=x.index)


def runs_frame(children) -> pd.DataFrame:
    rows = []
    for run in children:
        if run.info.status != "FINISHED":
            continue
        row = {p: float(run.data.params.get(p, "nan")) for p in PARAMS}
        row["algorithm"] = run.data.params.get("algorithm.name")
        row["lambda"] = deviation_price(*(row[p] for p in PARAMS))
        row.update({m: run.data.metrics.get(m, math.nan) for m in METRICS})
        rows.append(row)
    runs = pd.DataFrame(rows, columns=[*PARAMS, "algorithm", "lambda", *METRICS])
    runs = runs.sort_values(["weights.homogeneity", "batch_size.deviation_cost"], ignore_index=True)
    runs["pareto"] = non_dominated(runs["academic_coherence"], runs["size_balance"])
    return runs


def markdown(runs: pd.DataFrame) -> str:
    head = ["homogeneity", "balance = size", "deviation_cost", "λ", *(t for t, _ in METRICS.values()), "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in runs.iterrows():
        cells = [f"{r['weights.homogeneity']:g}", f"{r['weights.balance']:.3g}", f"{r['batch_size.deviation_cost']:g}",
                 "∞ (equal sizes)" if math.isinf(r["lambda"]) else f"{r['lambda']:.4g}"]
        cells += [f"{r[m]:.{d}f}" for m, (_, d) in METRICS.items()]
        cells.append("●" if r["pareto"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    front = runs[runs["pareto"]].sort_values("size_balance")
    ax.plot(front["size_balance"], front["academic_coherence"], color="grey", lw=1, zorder=1,
            label="non-dominated (ringed)")
    points = ax.scatter(runs["size_balance"], runs["academic_coherence"], c=runs["resource_utilization"],
                        cmap="viridis", s=60, zorder=2)
    ax.scatter(front["size_balance"], front["academic_coherence"], s=160, facecolors="none",
               edgecolors="red", zorder=3)
    for _, r in runs.iterrows():
        ax.annotate(f"h={r['weights.homogeneity']:g}", (r["size_balance"], r["academic_coherence"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    fig.colorbar(points, ax=ax, label="resource_utilization")
    ax.set_xlabel("size_balance (higher: more equal sizes)")
    ax.set_ylabel("academic_coherence")
    ax.set_title("homogeneity weight h: coherence vs equal sizes")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    loaded = study_sweep_from_cli(argv, description=__doc__.splitlines()[0], experiment=EXPERIMENT, out_dir=HERE,
                                  runs_frame=runs_frame)
    if isinstance(loaded, int):
        return loaded
    args, parent, children, runs = loaded
    table = markdown(runs)
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out / PLOT)
    first = children[0].data
    algorithms = ", ".join(sorted(set(runs["algorithm"].dropna())))
    (args.out / "results.md").write_text(
        f"# Weight trade-off: results\n\n"
        f"Sweep run `{parent.info.run_id}` ({parent.data.tags.get('sweep.overrides', '')}), "
        f"{len(runs)} of {len(children)} jobs finished; algorithm `{algorithms}`; input "
        f"`{first.tags.get('input_dir', '?')}` (digest `{first.tags.get('input_digest', '?')[:12]}`), "
        f"stage2 commit `{first.tags.get('mlflow.source.git.commit', '?')[:7]}`. "
        f"λ = deviation_cost × (balance + size) / homogeneity; ● = not dominated on "
        f"(coherence, size balance).\n\n{table}\n\n![weight trade-off]({PLOT})\n", encoding="utf-8")
    print(f"\nwrote {args.out / 'results.md'} and {args.out / PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
