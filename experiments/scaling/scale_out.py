"""Large tenants and scale-out: the rows of issue 15, measured side by side in one run.

Run: ``python experiments/scaling/scale_out.py`` (~11 min on 2 cores; ``--quick`` for a
small version of every row, ~3 min). Writes ``scale_out.md`` and ``scale_out.csv`` beside
this file (``--results-dir``); datasets and runs go to ``--cache-dir`` (outside the
repository), shared with ``run.py``.

Sections (every measured thing is its own child process, see ``run.py``'s ``measure``):

1. *Fixed cost*: ``python -m stage2`` on a 20-student institution, tracking and notebook
   off, median of 5; beside it the *import floor*: a bare interpreter importing the libraries
   every run needs (``IMPORT_FLOOR``), median of 5, which no change to stage2 can go below.
2. *1M students end to end*, tracking on (a new SQLite store), notebook off: the generator's
   many-group institution and its ``--groups large`` one (~30 groups of 10k-60k); wall time,
   peak RSS of the whole process tree, course SSE against the reference of
   ``reference.json`` (the same input at the commit named there), and the time and peak of
   every stage (validation among them).
3. *One group, 20k vs 60k*: the clustering fit alone (``runner.py fit "stage2 balanced"``)
   and the ratio of the two.
4. *Backends*: the same institution with ``parallel.backend=loky``, ``dask`` on a local
   cluster and ``dask`` on a scheduler and workers started here as processes
   (``dask scheduler``, ``dask worker``), each with 2 workers; the three Stage 3 files of each
   compared byte for byte with loky's.
5. *Workers*: loky with 1 and 2 workers on the same institution: the serial and parallel
   parts of a run, the inputs of the scaling model in README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import run  # noqa: E402  (the harness's measure, datasets, snapshot and child environment)

STAGE3_FILES = ("student_batches.csv", "batch_student_membership.csv", "batch_course_enrollment.csv")
#: fixed output timestamps, so that runs on different backends can be compared byte for byte
AS_OF = "as_of=2025-08-01T00:00:00"
#: what every ``python -m stage2`` imports before reading a file: the data contract (pandas with
#: its Arrow strings, pandera) and the configuration (Hydra)
IMPORT_FLOOR = "import pandas, pandera.pandas, hydra"
TARGETS = {
    "fixed_cost_s": 0.8,
    "validation_s": 10.0,
    "many": {"wall_s": 60.0, "peak_mb": 2048.0},
    "large": {"wall_s": 120.0, "peak_mb": 3072.0},
    "group_ratio": 3.5,
}
FULL = {"fixed": 20, "big": 1_000_000, "one_group": (20_000, 60_000), "backends": 100_000, "repeats": 5}
QUICK = {"fixed": 20, "big": 20_000, "one_group": (2_000, 6_000), "backends": 3_000, "repeats": 2}


def stage_times(out: Path) -> dict[str, dict[str, float]]:
    """``{stage: {"seconds", "peak_mb"}}`` from a run's ``stage2.jsonl``."""
    stages = {}
    path = out / "stage2.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "stage_done":
                stages[record["stage"]] = {"seconds": record["seconds"], "peak_mb": record.get("peak_memory_mb")}
    return stages


def files_digest(out: Path) -> str:
    h = hashlib.sha256()
    for name in STAGE3_FILES:
        h.update((out / name).read_bytes())
    return h.hexdigest()[:16]


def stage2_run(ctx: run.Context, data: Path, name: str, overrides: list[str], *, tracking: bool) -> dict:
    """One ``python -m stage2`` child: wall, peak of the tree, course SSE, stages, digest."""
    scratch = ctx.scratch(name)
    out = scratch / "out"
    argv = [run.PYTHON, "-m", "stage2", f"data.input_dir={data}", f"hydra.run.dir={out}", *ctx.stage2_overrides,
            *overrides]
    argv.append(f"tracking.uri=sqlite:///{scratch / 'mlflow.db'}" if tracking else "tracking.enabled=false")
    m = run.measure(argv, cwd=scratch, env=run.child_env(), timeout=ctx.timeout_s)
    row: dict = {"name": name, "wall_s": m.wall_s, "peak_mb": m.peak_mb, "processes": m.max_processes,
                 "status": "ok" if m.ok else m.failure()}
    if m.ok:
        report = json.loads((out / "quality_report.json").read_text())
        row.update(course_sse=report["metrics"]["course_sse"], n_batches=report["metrics"]["n_batches"],
                   n_groups=report["metrics"]["n_groups"], digest=files_digest(out), stages=stage_times(out))
    run.log(f"  {name}: {row['status']}, {m.wall_s:.1f} s, {m.peak_mb:.0f} MB")
    return row


def section_fixed(ctx: run.Context, size: dict) -> dict:
    data = run.synth_dataset(ctx.cache, size["fixed"], "many")
    rows = [stage2_run(ctx, data, f"fixed-{i}", [], tracking=False) for i in range(size["repeats"])]
    walls = sorted(r["wall_s"] for r in rows)
    floor = sorted(run.measure([run.PYTHON, "-c", IMPORT_FLOOR], cwd=ctx.cache, env=run.child_env()).wall_s
                   for _ in range(size["repeats"]))
    return {"n_students": size["fixed"], "median_s": statistics.median(walls), "walls": walls,
            "peak_mb": max(r["peak_mb"] for r in rows), "status": rows[0]["status"],
            "import_floor_s": statistics.median(floor), "import_floor_walls": floor}


def section_big(ctx: run.Context, size: dict) -> dict[str, dict]:
    rows = {}
    for kind in ("many", "large"):
        data = run.synth_dataset(ctx.cache, size["big"], kind)
        run.log(f"section 2: {size['big']:,} students, groups={kind}")
        rows[kind] = stage2_run(ctx, data, f"big-{kind}", [AS_OF], tracking=True)
        rows[kind]["n_students"] = size["big"]
    return rows


def section_one_group(ctx: run.Context, size: dict) -> list[dict]:
    rows = []
    for n in size["one_group"]:
        data = run.synth_dataset(ctx.cache, n, "one")
        run.log(f"section 3: one group of {n:,}")
        npz, meta = run.prepare(ctx, data)
        fit = run.fit_repeated(ctx, npz, "stage2 balanced", 1)
        rows.append({"n_students": n, "k": meta.get("k"), "fit_s": fit.get("fit_s"), "peak_mb": fit.get("peak_mb"),
                     "course_sse": fit.get("course_sse"), "status": fit.get("status")})
    return rows


class DaskProcesses:
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, stopped on exit."""

    def __init__(self, root: Path, n_workers: int = 2) -> None:
        root.mkdir(parents=True, exist_ok=True)
        scheduler_file = root / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        bin_dir = Path(sys.executable).parent
        self.processes = [subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=run.child_env(), start_new_session=True)]
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]
        for i in range(n_workers):
            self.processes.append(subprocess.Popen(
                [str(bin_dir / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--nworkers", "1",
                 "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=run.child_env(), start_new_session=True))
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=60)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def section_backends(ctx: run.Context, size: dict) -> list[dict]:
    data = run.synth_dataset(ctx.cache, size["backends"], "many")
    common = [AS_OF, "parallel.min_students=0", "parallel.n_workers=2"]
    rows = []
    for label, extra in (("loky, 2 workers", ["parallel.backend=loky"]),
                         ("dask, local cluster of 2 workers", ["parallel.backend=dask"])):
        run.log(f"section 4: {label}")
        rows.append({"backend": label, **stage2_run(ctx, data, f"backend-{len(rows)}", [*common, *extra],
                                                    tracking=False)})
    run.log("section 4: dask, scheduler + 2 workers as processes")
    cluster = DaskProcesses(ctx.cache / "runs" / "dask-processes")
    try:
        rows.append({"backend": "dask, `dask scheduler` + 2 `dask worker` processes (not in peak MB)",
                     **stage2_run(ctx, data, "backend-2",
                                  [*common, "parallel.backend=dask", f"parallel.address={cluster.address}"],
                                  tracking=False)})
    finally:
        cluster.close()
    reference = rows[0].get("digest")
    for row in rows:
        row["identical_to_loky"] = row.get("digest") is not None and row.get("digest") == reference
    return rows


def section_workers(ctx: run.Context, size: dict) -> list[dict]:
    data = run.synth_dataset(ctx.cache, size["backends"], "many")
    rows = []
    for n_workers in (1, 2):
        run.log(f"section 5: loky, {n_workers} worker(s)")
        rows.append({"n_workers": n_workers, **stage2_run(
            ctx, data, f"workers-{n_workers}", [AS_OF, "parallel.min_students=0", f"parallel.n_workers={n_workers}"],
            tracking=False)})
    return rows


# ----------------------------------------------------------------------------- report


def verdict(holds: bool) -> str:
    return "HOLDS" if holds else "MISSED"


def _table(headers: list[str], lines: list[list]) -> str:
    return pd.DataFrame(lines, columns=headers).to_markdown(index=False)


def render(header: dict, fixed: dict, big: dict[str, dict], one_group: list[dict], backends: list[dict],
           workers: list[dict], reference: dict) -> str:
    t = TARGETS
    lines = [
        "# Large tenants and scale-out (issue 15)", "",
        f"- machine: {header['machine']}",
        f"- command: `{header['command']}` (from the repository root)",
        f"- stage2: git {header['git']}, sources sha256 {header['source']}; every `python -m stage2` also gets "
        f"`{header['overrides']}`",
        f"- started {header['started']}, took {header['elapsed_min']:.1f} min; load average at start "
        f"{header['load_start']}, at end {header['load_end']}",
        "- peak MB: the larger of the command's own peak RSS and the largest sampled sum of RSS over its process "
        "tree (workers included; shared pages counted once per process: an upper bound)", "",
        "## Targets", "",
    ]
    lines.append(f"- **Fixed cost** ({fixed['n_students']} students, tracking and notebook off, median of "
                 f"{len(fixed['walls'])}): {fixed['median_s']:.2f} s (≤ {t['fixed_cost_s']} s): "
                 f"{verdict(fixed['median_s'] <= t['fixed_cost_s'])}; the import floor (`python -c "
                 f"\"{IMPORT_FLOOR}\"`, median of {len(fixed['import_floor_walls'])}): "
                 f"{fixed['import_floor_s']:.2f} s")
    for kind, row in big.items():
        ref = reference.get(kind, {})
        if row["status"] != "ok":
            lines.append(f"- **{row['n_students']:,} students, groups={kind}**: {row['status']}")
            continue
        validation = row["stages"].get("validation", {}).get("seconds", float("nan"))
        sse_ratio = row["course_sse"] / ref["course_sse"] if ref.get("course_sse") else float("nan")
        lines.append(
            f"- **{row['n_students']:,} students, groups={kind}**, tracking on: {row['wall_s']:.1f} s "
            f"(< {t[kind]['wall_s']:g} s: {verdict(row['wall_s'] < t[kind]['wall_s'])}), "
            f"{row['peak_mb']:,.0f} MB over {row['processes']} processes "
            f"(< {t[kind]['peak_mb']:,.0f} MB: {verdict(row['peak_mb'] < t[kind]['peak_mb'])}); course SSE "
            f"{row['course_sse']:.1f} vs {ref.get('course_sse', float('nan')):.1f} at {ref.get('commit', '?')} "
            f"(ratio {sse_ratio:.4f}: {verdict(sse_ratio <= 1.0 + 1e-9)}); validation {validation:.1f} s "
            f"(< {t['validation_s']:g} s: {verdict(validation < t['validation_s'])})")
    if len(one_group) == 2 and all(r.get("fit_s") for r in one_group):
        ratio = one_group[1]["fit_s"] / one_group[0]["fit_s"]
        lines.append(f"- **One group, {one_group[1]['n_students']:,} vs {one_group[0]['n_students']:,}**: clustering "
                     f"{one_group[1]['fit_s']:.2f} s vs {one_group[0]['fit_s']:.2f} s = {ratio:.2f}× "
                     f"(≤ {t['group_ratio']}×): {verdict(ratio <= t['group_ratio'])}")
    same = all(r["identical_to_loky"] for r in backends)
    lines.append(f"- **Dask byte-identical to loky** (the three Stage 3 files): {verdict(same)} "
                 f"({', '.join(r['backend'].split(' (')[0] + ': ' + str(r.get('digest')) for r in backends)})")
    lines += ["", "## 2. 1M students end to end: per stage", ""]
    for kind, row in big.items():
        if row["status"] != "ok":
            continue
        lines += [f"groups={kind}: {row['n_groups']:,} groups, {row['n_batches']:,} batches", "",
                  _table(["stage", "seconds", "peak MB of the main process after it"],
                         [[s, f"{v['seconds']:.2f}", f"{v['peak_mb']:,.0f}"] for s, v in row["stages"].items()]), ""]
    lines += ["## 3. One group: clustering only", "",
              _table(["students", "k", "fit s", "peak MB", "course SSE", "status"],
                     [[f"{r['n_students']:,}", r["k"], f"{r['fit_s']:.2f}" if r.get("fit_s") else "–",
                       f"{r['peak_mb']:,.0f}" if r.get("peak_mb") else "–",
                       f"{r['course_sse']:.1f}" if r.get("course_sse") else "–", r["status"]] for r in one_group]), "",
              "## 4. Backends (same institution, 2 workers each)", "",
              _table(["backend", "wall s", "peak MB", "clustering s", "Stage 3 files sha256", "identical to loky"],
                     [[r["backend"], f"{r['wall_s']:.1f}", f"{r['peak_mb']:,.0f}",
                       f"{r.get('stages', {}).get('clustering', {}).get('seconds', float('nan')):.2f}",
                       r.get("digest", r["status"]), r["identical_to_loky"]] for r in backends]), "",
              "## 5. Workers: the serial and the parallel part of a run", "",
              _table(["workers", "wall s", "clustering s", "rest s (serial)", "peak MB"],
                     [[r["n_workers"], f"{r['wall_s']:.1f}", f"{r['stages']['clustering']['seconds']:.2f}",
                       f"{r['wall_s'] - r['stages']['clustering']['seconds']:.1f}", f"{r['peak_mb']:,.0f}"]
                      for r in workers if r["status"] == "ok"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a check of the harness, not the targets")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "stage2-scaling-cache")
    parser.add_argument("--results-dir", type=Path, default=HERE)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per child process, seconds")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    started = time.perf_counter()
    header = {"command": "python experiments/scaling/scale_out.py" + "".join(
                  f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])),
              "machine": run.machine_line(), "git": run.git_state(), "source": run.source_digest(),
              "started": datetime.now(UTC).isoformat(timespec="seconds"),
              "load_start": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    ctx = run.Context(cache=args.cache_dir.resolve(), timeout_s=args.timeout)
    run.SNAPSHOT = run.take_snapshot(ctx.cache)
    run.warmup(ctx)
    header["overrides"] = " ".join(ctx.stage2_overrides) or "none"
    reference = json.loads((HERE / "reference.json").read_text()) if not args.quick else {}

    fixed = section_fixed(ctx, size)
    big = section_big(ctx, size)
    one_group = section_one_group(ctx, size)
    backends = section_backends(ctx, size)
    workers = section_workers(ctx, size)

    header["elapsed_min"] = (time.perf_counter() - started) / 60
    header["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = render(header, fixed, big, one_group, backends, workers, reference.get("course_sse", {}))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "scale_out.md").write_text(text)
    flat = [{"section": "fixed", **fixed}, *({"section": f"big-{k}", **{k2: v for k2, v in r.items() if k2 != "stages"},
                                              **{f"{s}_s": v["seconds"] for s, v in r.get("stages", {}).items()}}
                                             for k, r in big.items()),
            *({"section": "one_group", **r} for r in one_group), *({"section": "backends", **r} for r in backends),
            *({"section": "workers", **{k: v for k, v in r.items() if k != "stages"}} for r in workers)]
    pd.DataFrame(flat).to_csv(args.results_dir / "scale_out.csv", index=False)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
