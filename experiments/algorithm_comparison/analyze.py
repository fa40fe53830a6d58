"""Summarise the latest algorithm-comparison sweep recorded in MLflow.

    python -m stage2 -m +experiment=algorithm_comparison          # the sweep (12 jobs)
    python experiments/algorithm_comparison/analyze.py --tracking-uri sqlite:///$PWD/mlflow.db

The latest sweep is the most recent run tagged ``stage2.sweep=true`` in ``--experiment``
(default ``study-algorithm-comparison``), or ``--sweep-run-id``; its jobs are the runs tagged
``mlflow.parentRunId=<that run>``. Finished jobs are grouped by ``algorithm.name`` and each
measure is shown as mean ± sample std over the seeds. Prints the table as markdown and writes
``results.md`` and ``algorithm_comparison.png`` into ``--out`` (default: this folder).
Exit status 2 when there is no such experiment, sweep or finished job.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from stage2.tracking.sweeps import study_sweep_from_cli

HERE = Path(__file__).resolve().parent
EXPERIMENT = "study-algorithm-comparison"
PLOT = "algorithm_comparison.png"
ORDER = ["balanced", "kmeans", "spectral", "hierarchical"]
#: metric -> (column heading, decimals); all but the first and last are in quality.md
METRICS = {
    "academic_coherence": ("coherence ↑", 4),
    "course_sse_per_student": ("SSE/student ↓", 3),
    "size_balance": ("size balance ↑", 3),
    "resource_utilization": ("room utilisation ↑", 3),
    "constraint_satisfaction_rate": ("constraints ↑", 3),
    "runtime_s.clustering": ("clustering s ↓", 2),
}


def runs_frame(children) -> pd.DataFrame:
    """One row per finished job: algorithm, seed and the metrics."""
    rows = [{"algorithm": r.data.params.get("algorithm.name"), "seed": int(r.data.params.get("seed", -1)),
             **{m: r.data.metrics.get(m, float("nan")) for m in METRICS}}
            for r in children if r.info.status == "FINISHED"]
    return pd.DataFrame(rows, columns=["algorithm", "seed", *METRICS])


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """mean and sample std (ddof=1, NaN for one seed) per algorithm, in ORDER."""
    stats = runs.groupby("algorithm")[list(METRICS)].agg(["mean", "std"])
    stats.insert(0, ("seeds", ""), runs.groupby("algorithm")["seed"].apply(lambda s: ",".join(map(str, sorted(s)))))
    order = [a for a in ORDER if a in stats.index] + sorted(set(stats.index) - set(ORDER))
    return stats.loc[order]


def markdown(stats: pd.DataFrame) -> str:
    head = ["algorithm", "seeds", *(title for title, _ in METRICS.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for algorithm, row in stats.iterrows():
        cells = [f"`{algorithm}`", str(row[("seeds", "")])]
        for metric, (_, digits) in METRICS.items():
            mean, std = row[(metric, "mean")], row[(metric, "std")]
            cells.append(f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(stats: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["academic_coherence", "course_sse_per_student", "size_balance", "runtime_s.clustering"]
    fig, axes = plt.subplots(1, len(shown), figsize=(12, 3.2))
    for ax, metric in zip(axes, shown, strict=True):  # dots with error bars: the differences are small
        ax.errorbar(stats.index, stats[(metric, "mean")], yerr=stats[(metric, "std")].fillna(0),
                    fmt="o", capsize=4)
        ax.set_title(METRICS[metric][0])
        ax.set_xlim(-0.5, len(stats) - 0.5)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    loaded = study_sweep_from_cli(argv, description=__doc__.splitlines()[0], experiment=EXPERIMENT, out_dir=HERE,
                                  runs_frame=runs_frame)
    if isinstance(loaded, int):
        return loaded
    args, parent, children, runs = loaded
    stats = aggregate(runs)
    table = markdown(stats)
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    plot(stats, args.out / PLOT)
    first = children[0].data
    (args.out / "results.md").write_text(
        f"# Algorithm comparison: results\n\n"
        f"Sweep run `{parent.info.run_id}` ({parent.data.tags.get('sweep.overrides', '')}), "
        f"{len(runs)} of {len(children)} jobs finished; input `{first.tags.get('input_dir', '?')}` "
        f"(digest `{first.tags.get('input_digest', '?')[:12]}`), "
        f"stage2 commit `{first.tags.get('mlflow.source.git.commit', '?')[:7]}`. Mean ± sample std over the seeds.\n\n"
        f"{table}\n\n![algorithm comparison]({PLOT})\n", encoding="utf-8")
    print(f"\nwrote {args.out / 'results.md'} and {args.out / PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
