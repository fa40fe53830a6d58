"""stage2's ``balanced`` batcher against k-means-constrained on the Joensuu S and A sets,
exact equal sizes.

    python experiments/balanced_benchmarks/run.py --data-dir DIR [--sets s1 a3] [--repeats 3]
        [--stage2-path SNAPSHOT] [--results results.md]

DIR holds ``s1.txt`` … ``s4.txt`` and ``a1.txt`` … ``a3.txt`` (whitespace-separated 2-D
points, one a line), as in ``SoftBKmeans/datasets/`` of
https://github.com/uef-machine-learning/Balanced_k-Means_Revisited (see README.md).

For each set: stage2 ``make_batcher({"name": "balanced"})`` (the schema's defaults) on
``balanced_sizes(n, k)`` with seed 0, and ``KMeansConstrained(n_clusters=k, size_min=n // k,
size_max=ceil(n / k), n_init=10, random_state=0)``, each fitted in its own child process by
``experiments/scaling/runner.py fit`` (library start-up outside the timed fit, for both), the
child's peak memory measured by the scaling harness's ``measure``. ``--repeats N`` fits each
N times and keeps the median time (the MSE of a fit does not depend on the repeat).
``--stage2-path`` makes the stage2 children import stage2 from another copy (an export of
another commit's ``stage2/`` and ``conf/``). Prints a markdown table and writes it, with the
machine, the git commit and the command, to ``--results`` (default: results.md here).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SCALING = REPO_ROOT / "experiments" / "scaling"
sys.path.insert(0, str(SCALING))

import run as scaling  # noqa: E402  (experiments/scaling/run.py: measure, child_env)

#: set -> (file in --data-dir, k): the number of clusters of the set's ground truth
SETS: dict[str, tuple[str, int]] = {
    "S1": ("s1.txt", 15), "S2": ("s2.txt", 15), "S3": ("s3.txt", 15), "S4": ("s4.txt", 15),
    "A1": ("a1.txt", 20), "A2": ("a2.txt", 35), "A3": ("a3.txt", 50),
}
STAGE2 = "stage2 balanced exact"
KMC = "KMC n_init=10 equal"


def balanced_defaults() -> dict:
    """BalancedConfig's defaults in the stage2 the children import (``--stage2-path``)."""
    code = ("import dataclasses, json; from stage2.config.schema import BalancedConfig; "
            "print(json.dumps(dataclasses.asdict(BalancedConfig())))")
    # not run from the repository: its stage2/ would shadow the one on PYTHONPATH
    done = subprocess.run([sys.executable, "-c", code], env=scaling.child_env(), capture_output=True, text=True,
                          check=True, cwd=tempfile.gettempdir())
    return json.loads(done.stdout)


def prepare(points: np.ndarray, k: int, params: dict, out: Path) -> None:
    """Save a set as ``runner.py fit`` reads a prepared group: the matrix, the planned sizes
    (``balanced_sizes``: exact, larger first), exact bounds and the balanced batcher's
    parameters ``params``."""
    n = points.shape[0]
    base, extra = divmod(n, k)
    planned = np.array([base + 1] * extra + [base] * (k - extra), dtype=np.int64)
    meta = {"k": k, "n_students": n, "bounds": [n // k, n // k, math.ceil(n / k)], "deviation_cost": 0.0,
            "algorithms": {"balanced": params}}
    np.savez(out, X=points, planned=planned, meta=json.dumps(meta))


def fit(npz: Path, method: str, repeats: int, timeout: float) -> dict:
    """``method`` fitted ``repeats`` times, each in its own child: the median-time row."""
    rows = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "fit.json"
            m = scaling.measure([sys.executable, str(SCALING / "runner.py"), "fit", str(npz), method, str(out)],
                                cwd=scratch, env=scaling.child_env(), timeout=timeout)
            if not m.ok:
                raise RuntimeError(f"{method} on {npz.name}: {m.failure()}\n{m.stderr}")
            row = json.loads(out.read_text())
        rows.append({**row, "peak_mb": m.peak_mb})
    rows.sort(key=lambda r: r["fit_s"])
    row = rows[(repeats - 1) // 2]
    row["mse"] = row["course_sse"] / row["n_students"]
    row["fits"] = [r["fit_s"] for r in rows]
    return row


def table(results: list[tuple[str, dict, dict]]) -> str:
    lines = ["| set | n | k | stage2 fit s | KMC n_init=10 fit s | time ratio stage2/KMC | stage2 MSE | "
             "KMC MSE | MSE ratio stage2/KMC | stage2 peak MB | KMC peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ours, peer in results:
        lines.append(f"| {name} | {ours['n_students']:,} | {ours['k']} | {ours['fit_s']:.2f} | {peer['fit_s']:.2f} | "
                     f"{ours['fit_s'] / peer['fit_s']:.2f} | {ours['mse']:.6g} | {peer['mse']:.6g} | "
                     f"{ours['mse'] / peer['mse']:.5f} | {ours['peak_mb']:.0f} | {peer['peak_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the sets' files (see README.md)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), type=str.upper, choices=list(SETS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="per child process, seconds")
    parser.add_argument("--stage2-path", type=Path, help="import stage2 from here in the children")
    parser.add_argument("--results", type=Path, default=HERE / "results.md")
    args = parser.parse_args(argv)
    if args.stage2_path is not None:
        scaling.SNAPSHOT = args.stage2_path.resolve()
    command = "python experiments/balanced_benchmarks/run.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    results, load, params = [], scaling.load_average(), balanced_defaults()
    with tempfile.TemporaryDirectory() as cache:
        for name in args.sets:
            file, k = SETS[name]
            points = np.loadtxt(args.data_dir / file, dtype=np.float64, ndmin=2)
            npz = Path(cache) / f"{name}.npz"
            prepare(points, k, params, npz)
            ours = fit(npz, STAGE2, args.repeats, args.timeout)
            peer = fit(npz, KMC, args.repeats, args.timeout)
            if not (ours["sizes_admissible"] and peer["sizes_admissible"]):
                raise RuntimeError(f"{name}: sizes not exactly equal")
            results.append((name, ours, peer))
            print(f"{name}: stage2 {ours['fit_s']:.2f} s MSE {ours['mse']:.6g}; "
                  f"KMC {peer['fit_s']:.2f} s MSE {peer['mse']:.6g}", file=sys.stderr, flush=True)
    text = table(results)
    print(text)
    print(f"\n{command}")
    args.results.write_text(
        "# stage2 balanced vs k-means-constrained on the Joensuu S and A sets (exact equal sizes)\n\n"
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n- machine: {scaling.machine_line()}, load average at start "
        f"{load[0]:.2f}\n- git commit: {scaling.git_state()}\n- command: `{command}`\n"
        f"- repeats per fit: {args.repeats} (median time)\n\n"
        "Times are the fit alone (library start-up and stage2's kernel loading excluded), each method in its "
        "own child process; MSE = SSE / n; ratios are stage2 / KMC (below 1: stage2 faster, or lower MSE).\n\n"
        f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
