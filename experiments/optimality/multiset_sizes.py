"""Diagnosis for the engine: does letting ``balanced`` choose which batches get the larger size
close its optimality gap? Run: ``python experiments/optimality/multiset_sizes.py`` (~1 min).

With balanced sizes (s+1 and s), every labelling whose size multiset equals the plan is as good
as one with the planned order: relabelling batches does not change the SSE. The flexible size
model ``SizeModel(planned, min_size=s, max_size=s+1, deviation_cost=0)`` admits exactly those
labellings (sizes in [s, s+1] summing to n), so the min-cost flow may choose the label → size
matching and local search may use moves. This script runs default ``balanced`` both ways on
every benchmark instance with seeds 0-9, relabels to the planned order, and compares with the
proven optima. It changes nothing in stage2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

from instances import benchmark_instances  # noqa: E402
from oracle import solve  # noqa: E402

from stage2.clustering import BatchingProblem, make_batcher, within_batch_sse  # noqa: E402
from stage2.clustering.assignment import SizeModel  # noqa: E402


def to_planned_order(labels: np.ndarray, planned: np.ndarray) -> np.ndarray:
    """Relabel so that batch sizes appear in the planned order (SSE unchanged)."""
    free: dict[int, list[int]] = {}
    for b, s in enumerate(planned.tolist()):
        free.setdefault(int(s), []).append(b)
    counts = np.bincount(labels, minlength=planned.size)
    return np.array([free[int(c)].pop(0) for c in counts])[labels]


def main(seeds: range = range(10)) -> None:
    instances = benchmark_instances()
    optimum = {i.id: solve(i.features, i.batch_sizes).sse for i in instances}
    for n_init in (3, 10):
        for variant in ("exact sizes", "multiset sizes"):
            gaps = []
            for inst in instances:
                lo, hi = int(inst.batch_sizes.min()), int(inst.batch_sizes.max())
                for seed in seeds:
                    if variant == "multiset sizes" and hi == lo + 1:
                        sizes = SizeModel(inst.batch_sizes.copy(), lo, hi, 0.0)
                    else:
                        sizes = SizeModel.exact(inst.batch_sizes.copy())
                    batcher = make_batcher({"name": "balanced", "n_init": n_init})
                    labels = to_planned_order(batcher.fit_predict(BatchingProblem(inst.features, sizes, seed)),
                                              inst.batch_sizes)
                    assert np.array_equal(np.bincount(labels, minlength=inst.k), inst.batch_sizes)
                    opt = optimum[inst.id]
                    gaps.append(max(0.0, (within_batch_sse(inst.features, labels, inst.k) - opt) / opt)
                                if opt > 0 else 0.0)
            g = np.array(gaps)
            print(f"balanced n_init={n_init:2d}, {variant:14s}: optimal {100 * np.mean(g <= 1e-9):5.1f} % of "
                  f"{g.size} runs, mean gap {100 * g.mean():.3f} %, worst {100 * g.max():.2f} %")


if __name__ == "__main__":
    main()
