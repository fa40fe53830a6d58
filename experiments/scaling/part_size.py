"""Which ``balanced.part_max_students``: the large groups of an institution, fitted whole and in parts.

Builds every group's batching problem as the pipeline does (validation, sizing, features), then
fits each group of at least ``--min-students`` students once per candidate threshold, in this
process, one after the other, and reports per group and in total the CPU seconds, the
objective the batcher minimises and the course SSE (the quality measure of the 1M rows in
``scale_out.md``). A threshold changes only groups above it, so groups below the smallest
candidate are left out; a group split into as many parts under two thresholds is fitted once.

    python experiments/scaling/part_size.py --cache-dir DIR [--students 1000000] [--groups large]
        [--thresholds 25000,30000] [--min-students 25000] [--out experiments/scaling/part_size.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (the harness next to this file)


def group_problems(data_dir: Path, min_students: int) -> list[tuple[int, object, int]]:
    """``(group_index, BatchingProblem, n_course_columns)`` of the groups of at least
    ``min_students`` students, built as the pipeline's clustering stage builds them."""
    from stage2 import load_config
    from stage2.clustering import BatchingProblem
    from stage2.clustering.groups import size_model
    from stage2.config.schema import to_stage2_config
    from stage2.features import SoftRuleFeatures, group_features
    from stage2.pipeline import stages

    cfg = to_stage2_config(load_config([f"data.input_dir={data_dir}", "tracking.enabled=false"]))
    data = stages.validate_input(cfg, data_dir)
    settings, rooms = stages.configure(cfg, data)
    plan = stages.size_groups(data, settings, rooms)
    courses, _ = stages.course_features(data)
    soft = SoftRuleFeatures(data.active_students, settings.soft_rule_scale)
    problems = []
    for group in plan.groups:
        if group.n_batches <= 1 or group.student_index.size < min_students:
            continue
        program = group.key[plan.key_fields.index("program_id")] if "program_id" in plan.key_fields else None
        idx = group.student_index
        features = group_features(courses.matrix[idx], soft.for_group(idx, settings.rules_for_program(program)))
        problem = BatchingProblem(features, size_model(group, settings), seed=settings.seed + group.group_index)
        problems.append((group.group_index, problem, int(courses.matrix.shape[1])))
    return problems


def fit_all(problems: list, threshold: int, done: dict) -> list[dict]:
    """One row per group; a group split into as many parts as under an earlier threshold gets
    the same labels, so its row is reused from ``done`` (keyed by group and parts)."""
    from stage2.clustering import make_batcher
    from stage2.clustering.base import objective, within_batch_sse

    batcher = make_batcher({"name": "balanced", "part_max_students": threshold})
    rows = []
    for group_index, problem, n_course_columns in problems:
        n_parts = batcher._n_parts(problem.features.shape[0], problem.n_batches)
        if (group_index, n_parts) in done:
            rows.append({**done[group_index, n_parts], "threshold": threshold})
            continue
        started = time.process_time()
        labels = batcher.fit_predict(problem)
        cpu = time.process_time() - started
        rows.append({"threshold": threshold, "group": group_index, "students": problem.features.shape[0],
                     "batches": problem.n_batches, "cpu_s": cpu,
                     "objective": objective(problem.features, labels, problem.sizes),
                     "course_sse": within_batch_sse(problem.features[:, :n_course_columns], labels,
                                                    problem.n_batches), "parts": n_parts})
        done[group_index, n_parts] = rows[-1]
        run.log(f"  part_max_students={threshold} group {group_index} ({rows[-1]['students']:,}): "
                f"{cpu:.1f} s, course SSE {rows[-1]['course_sse']:.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--students", type=int, default=1_000_000)
    parser.add_argument("--groups", default="large")
    parser.add_argument("--thresholds", default="25000,30000")
    parser.add_argument("--min-students", type=int, default=25_000)
    parser.add_argument("--out", type=Path, default=HERE / "part_size.md")
    args = parser.parse_args(argv)
    thresholds = [int(x) for x in args.thresholds.split(",")]
    started = time.perf_counter()
    data_dir = run.synth_dataset(args.cache_dir, args.students, args.groups)
    problems = group_problems(data_dir, args.min_students)
    # compiled kernels load on the first fit: outside the timed ones
    from stage2.clustering import BatchingProblem, make_batcher

    first = problems[0][1]
    make_batcher({"name": "balanced", "n_init": 1, "max_iter": 2}).fit_predict(
        BatchingProblem(first.features[:2000], type(first.sizes).exact(np.full(50, 40)), 0))
    done: dict = {}
    rows = [row for t in thresholds for row in fit_all(problems, t, done)]
    frame = pd.DataFrame(rows)
    wide = frame.pivot(index=["group", "students", "batches"], columns="threshold",
                       values=["parts", "cpu_s", "course_sse"]).sort_index(level="students", ascending=False)
    wide.columns = [f"{m} ({'whole' if t == 0 else f'{t:,}'})" for m, t in wide.columns]
    totals = frame.groupby("threshold")[["cpu_s", "objective", "course_sse"]].sum()
    totals.index = ["whole" if t == 0 else f"{t:,}" for t in totals.index]
    command = (f"python experiments/scaling/part_size.py --cache-dir DIR --students {args.students} "
               f"--groups {args.groups} --thresholds {args.thresholds} --min-students {args.min_students}")
    text = "\n".join([
        "# Large groups whole or in parts (`balanced.part_max_students`)", "",
        f"- command: `{command}` (from the repository root)",
        f"- {run.machine_line()}",
        f"- finished {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}, took "
        f"{(time.perf_counter() - started) / 60:.1f} min; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in run.load_average())}",
        f"- {len(problems)} groups of at least {args.min_students:,} students; CPU seconds of one process "
        "(numpy's threads included)", "",
        "## Totals", "", totals.to_markdown(floatfmt=",.1f"), "",
        "## Per group", "", wide.reset_index().to_markdown(index=False, floatfmt=",.1f"), "",
    ])
    args.out.write_text(text)
    print(text)
    print(f"regenerate: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
