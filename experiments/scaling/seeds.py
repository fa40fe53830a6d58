"""How much a stage2 fit depends on its seed: the same prepared group and method as
``runner.py fit``, fitted with seeds 0 … N-1.

    python experiments/scaling/seeds.py PREPARED.npz METHOD [--seeds N] [--each] [--save-labels OUT.npy]
                                        [--compare OTHER.npy] [NAME=VALUE ...]

PREPARED.npz is a group the harness prepared (``$CACHE/prepared/<instance>-<digest>.npz``,
``$CACHE`` = run.py's ``--cache-dir``), METHOD a stage2 row of ``runner.METHODS`` (e.g.
``"stage2 balanced pure-SSE"``), NAME=VALUE overrides a parameter of the algorithm as in
``runner.py fit``. Prints course_sse at seed 0 and its minimum, mean and maximum over the
seeds, and the mean fit time; ``--each`` also prints every seed's course_sse, ``--save-labels``
saves the labels of every seed (an array seeds × students) and ``--compare`` counts the seeds
whose labels equal those saved in OTHER.npy: two versions of stage2 on the same fits (the first
run with ``PYTHONPATH=<an export of the other commit's stage2/ and conf/>``, as for
``runner.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import METHODS, course_sse, load_prepared, parse_overrides, stage2_sizes  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared")
    parser.add_argument("method", choices=[m for m, (family, _, _) in METHODS.items() if family != "kmc"])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--each", action="store_true", help="print every seed's course_sse")
    parser.add_argument("--save-labels", type=Path, help="save the labels of every seed (.npy)")
    parser.add_argument("--compare", type=Path, help="labels saved by --save-labels to compare with")
    parser.add_argument("overrides", nargs="*", help="NAME=VALUE")
    args = parser.parse_intermixed_args(argv)
    from stage2.clustering import BatchingProblem, make_batcher

    family, kind, _ = METHODS[args.method]
    X, planned, meta = load_prepared(args.prepared)
    k = int(meta["k"])
    sizes = stage2_sizes(kind, planned, meta)
    overrides = parse_overrides(args.overrides)
    batcher = make_batcher({**meta["algorithms"][family], **overrides})
    values, all_labels, started = [], [], time.perf_counter()
    for seed in range(args.seeds):
        labels = batcher.fit_predict(BatchingProblem(X, sizes, seed=seed))
        all_labels.append(np.asarray(labels, dtype=np.int64))
        values.append(course_sse(X, labels, k))
    elapsed = time.perf_counter() - started
    import stage2

    print(f"stage2 imported from {Path(stage2.__file__).resolve().parent}")
    if args.each:
        print("course_sse by seed: " + " ".join(f"{seed}:{value:.2f}" for seed, value in enumerate(values)))
    print(f"{Path(args.prepared).name} {args.method} {overrides or ''}: course_sse seed 0 {values[0]:.2f}, "
          f"over {args.seeds} seeds min {min(values):.2f} mean {np.mean(values):.2f} max {max(values):.2f}; "
          f"{elapsed / args.seeds:.3f} s per fit")
    if args.save_labels is not None:
        np.save(args.save_labels, np.stack(all_labels))
    if args.compare is not None:
        other = np.load(args.compare)
        same = sum(int(np.array_equal(mine, theirs)) for mine, theirs in zip(all_labels, other, strict=False))
        print(f"labels equal to those in {args.compare}: {same} of {min(len(all_labels), len(other))} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
