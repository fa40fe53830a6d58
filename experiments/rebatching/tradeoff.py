"""Summarise the latest re-batching move-penalty sweep(s) recorded in MLflow.

    python -m stage2 -m +experiment=rebatch_tradeoff data.input_dir=CHANGED rebatch.previous_run=PUBLISHED
    python experiments/rebatching/tradeoff.py --tracking-uri sqlite:///$PWD/mlflow.db [--sweeps N]

The latest sweep is the most recent run tagged ``stage2.sweep=true`` in ``--experiment``
(default ``study-rebatch-tradeoff``), or ``--sweep-run-id``; its jobs are the runs tagged
``mlflow.parentRunId=<that run>``. ``--sweeps N`` also takes the N-1 sweeps before it (one per
institution, say), each a section of its own and a panel of the plot. One row per finished job,
sorted by ``rebatch.move_penalty``: unchanged students moved (count and % of the unchanged),
changed students moved, perturbation (moved + new students, % of the active), previous batches
kept with their room and shift (%), the re-batch's course SSE, that SSE ÷ the fresh clustering's
(``rebatch.course_sse_fresh``, from ``rebatch.fresh_reference=true``) and the previous
membership's SSE ÷ the fresh one. Prints the tables as markdown and writes ``tradeoff.md`` and
``rebatch_tradeoff.png`` (course SSE ÷ fresh SSE against unchanged students moved %, points
labelled by move_penalty, the default ringed) into ``--out`` (default: this folder). Exit
status 2 when there is no such experiment, sweep or finished job.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import pandas as pd

from stage2.config.schema import RebatchConfig
from stage2.tracking.sweeps import latest_sweep, study_sweep_from_cli

HERE = Path(__file__).resolve().parent
EXPERIMENT = "study-rebatch-tradeoff"
RESULTS = "tradeoff.md"
PLOT = "rebatch_tradeoff.png"
PENALTY = "rebatch.move_penalty"
DEFAULT_PENALTY = RebatchConfig.move_penalty
SWEEPS_HELP = "Also --sweeps N: the latest N sweeps (default 1), a section and a plot panel each."
#: metrics read from every job (NaN when a job did not log one)
METRICS = [
    "rebatch.n_unchanged", "rebatch.n_changed", "rebatch.n_new", "rebatch.n_left", "rebatch.n_previous_batches",
    "rebatch.moved_unchanged", "rebatch.moved_unchanged_share", "rebatch.moved_changed", "rebatch.perturbation_share",
    "rebatch.batches_kept_share", "rebatch.course_sse", "rebatch.course_sse_previous", "rebatch.course_sse_fresh",
    "n_students", "n_batches", "runtime_s",
]
#: column heading -> (runs_frame column, format)
COLUMNS = {
    "move_penalty": (PENALTY, "{:g}"),
    "unchanged moved": ("rebatch.moved_unchanged", "{:.0f}"),
    "unchanged moved %": ("moved_unchanged_pct", "{:.2f}"),
    "changed moved": ("rebatch.moved_changed", "{:.0f}"),
    "perturbation %": ("perturbation_pct", "{:.2f}"),
    "batches kept %": ("batches_kept_pct", "{:.1f}"),
    "course SSE": ("rebatch.course_sse", "{:.1f}"),
    "SSE / fresh": ("sse_vs_fresh", "{:.4f}"),
    "previous SSE / fresh": ("previous_vs_fresh", "{:.4f}"),
    "run s": ("runtime_s", "{:.1f}"),
}


def runs_frame(children) -> pd.DataFrame:
    rows = []
    for run in children:
        if run.info.status != "FINISHED":
            continue
        row = {PENALTY: float(run.data.params.get(PENALTY, "nan")),
               "rebatch.changed_move_penalty": float(run.data.params.get("rebatch.changed_move_penalty", "nan"))}
        row.update({m: run.data.metrics.get(m, math.nan) for m in METRICS})
        rows.append(row)
    runs = pd.DataFrame(rows, columns=[PENALTY, "rebatch.changed_move_penalty", *METRICS])
    runs = runs.sort_values(PENALTY, ignore_index=True)
    runs["moved_unchanged_pct"] = 100 * runs["rebatch.moved_unchanged_share"]
    runs["perturbation_pct"] = 100 * runs["rebatch.perturbation_share"]
    runs["batches_kept_pct"] = 100 * runs["rebatch.batches_kept_share"]
    runs["sse_vs_fresh"] = runs["rebatch.course_sse"] / runs["rebatch.course_sse_fresh"]
    runs["previous_vs_fresh"] = runs["rebatch.course_sse_previous"] / runs["rebatch.course_sse_fresh"]
    return runs


def markdown(runs: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS)]
    for _, r in runs.iterrows():
        cells = ["–" if pd.isna(r[col]) else fmt.format(r[col]) for col, fmt in COLUMNS.values()]
        if r[PENALTY] == DEFAULT_PENALTY:
            cells[0] = f"**{cells[0]}** (default)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(runs: pd.DataFrame) -> list[str]:
    """A few facts read off the table (no judgement): where unchanged students stop moving, how
    far course SSE moves over the sweep, and any step where a lower penalty did not lower SSE."""
    out = []
    moving = runs[runs["rebatch.moved_unchanged"] > 0]
    still = runs[runs["rebatch.moved_unchanged"] == 0]
    if moving.empty:
        out.append(f"No unchanged student moves at any penalty (lowest tried {runs[PENALTY].min():g}).")
    elif still.empty:
        out.append(f"Unchanged students move at every penalty tried (up to {runs[PENALTY].max():g}).")
    else:
        top = moving[PENALTY].max()
        out.append(f"Unchanged students move only below move_penalty {still[PENALTY][still[PENALTY] > top].min():g} "
                   f"(at {top:g}: {moving.loc[moving[PENALTY] == top, 'rebatch.moved_unchanged'].iloc[0]:.0f}; "
                   f"at {runs[PENALTY].min():g}: {runs['rebatch.moved_unchanged'].iloc[0]:.0f} of "
                   f"{runs['rebatch.n_unchanged'].iloc[0]:.0f}, "
                   f"{runs['moved_unchanged_pct'].iloc[0]:.2f} %).")
    sse = runs["sse_vs_fresh"]
    if sse.notna().any():
        def at(value: float) -> str:
            return ", ".join(f"{p:g}" for p in runs.loc[(sse - value).abs() < 1e-9, PENALTY])

        out.append(f"Course SSE ÷ fresh SSE spans {sse.min():.4f} (move_penalty {at(sse.min())}) to {sse.max():.4f} "
                   f"(move_penalty {at(sse.max())}): a spread of {100 * (sse.max() / sse.min() - 1):.2f} %.")
        if (sse < 1).all():
            out.append("Every job's course SSE is below the fresh clustering's (ratio < 1).")
        penalties, ratios = runs[PENALTY].tolist(), sse.tolist()
        steps = zip(penalties, penalties[1:], ratios, ratios[1:], strict=False)
        inversions = [f"{a:g} → {b:g}" for a, b, sa, sb in steps if sb < sa - 1e-9]
        if inversions:
            out.append("A higher penalty gave a *lower* SSE at " + ", ".join(inversions) + " (heuristic search).")
    return out


def describe_data(children, parent) -> str:
    """What the sweep ran on: the input (and its scenario.json when still on disk), the
    previous run, the students and the fixed settings."""
    first = children[0].data
    input_dir = first.params.get("data.input_dir") or first.tags.get("input_dir", "?")
    text = (f"Input `{input_dir}` (digest `{first.tags.get('input_digest', '?')[:12]}`), re-batched against "
            f"`{first.params.get('rebatch.previous_run', '?')}`; algorithm "
            f"`{first.params.get('algorithm.name', '?')}`, "
            f"seed {first.params.get('seed', '?')}, as_of `{first.params.get('as_of', '?')}`, changed_move_penalty "
            f"{first.params.get('rebatch.changed_move_penalty', '?')}; stage2 commit "
            f"`{first.tags.get('mlflow.source.git.commit', '?')[:7]}`.")
    m = first.metrics
    if "rebatch.n_unchanged" in m:
        text += (f" {m.get('n_students', math.nan):.0f} active students in {m.get('n_batches', math.nan):.0f} batches: "
                 f"{m['rebatch.n_unchanged']:.0f} unchanged, {m.get('rebatch.n_changed', math.nan):.0f} with changed "
                 f"courses, {m.get('rebatch.n_new', math.nan):.0f} new, {m.get('rebatch.n_left', math.nan):.0f} left "
                 f"since the previous run ({m.get('rebatch.n_previous_batches', math.nan):.0f} batches).")
    scenario = Path(input_dir) / "scenario.json"
    if scenario.is_file():
        try:
            made = json.loads(scenario.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            made = {}
        if isinstance(made, dict) and made.get("parameters"):
            shown = {k: v for k, v in made["parameters"].items() if k != "previous_run"}
            text += (f" It is `experiments/rebatching/scenarios.py` applied to `{made.get('input_dir', '?')}` "
                     f"(seed {made.get('seed', '?')}: " + ", ".join(f"{k} {v}" for k, v in shown.items())
                     + (f"; counts {made['counts']}" if made.get("counts") else "") + ").")
    return text


def sweep_command(parent) -> str:
    overrides = parent.data.tags.get("sweep.overrides", "+experiment=rebatch_tradeoff")
    return "python -m stage2 -m " + " ".join(shlex.quote(o) for o in overrides.split())


def label(parent, children) -> str:
    """A sweep's short name: its input directory's name."""
    first = children[0].data
    return Path(first.params.get("data.input_dir") or first.tags.get("input_dir", parent.info.run_id)).name


def plot(sweeps: list[tuple[str, pd.DataFrame]], path: Path) -> None:
    """One panel per sweep (their scales differ by orders of magnitude): course SSE ÷ fresh SSE
    against unchanged students moved, x on a symmetric-log scale (0 and 0.05 % apart as well
    as 2 % and 60 %), points labelled by move_penalty, the default ringed in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(len(sweeps), 1, figsize=(7.2, 0.4 + 4.2 * len(sweeps)), squeeze=False)
    for i, ((name, runs), ax) in enumerate(zip(sweeps, axes[:, 0], strict=True)):
        runs = runs[runs["sse_vs_fresh"].notna()]
        x, y = runs["moved_unchanged_pct"], runs["sse_vs_fresh"]
        ax.plot(x, y, marker="o", ms=6, lw=1, color=f"C{i}", zorder=2, label="re-batch, one job per move_penalty p")
        default = runs[runs[PENALTY] == DEFAULT_PENALTY]
        ax.scatter(default["moved_unchanged_pct"], default["sse_vs_fresh"], s=220, facecolors="none",
                   edgecolors="red", linewidths=1.8, zorder=3, label=f"default move_penalty {DEFAULT_PENALTY:g}")
        # jobs at (nearly) the same point, e.g. every penalty at which nobody moves, share one label
        close = 0.01 * (max(float(y.max()), 1.0) - min(float(y.min()), 1.0) or 1.0)
        groups: list[tuple[float, float, list[float]]] = []
        for _, r in runs.iterrows():
            px, py = r["moved_unchanged_pct"], r["sse_vs_fresh"]
            same = [g for g in groups if abs(g[0] - px) < 1e-6 and abs(g[1] - py) < close]
            if same:
                same[0][2].append(r[PENALTY])
            else:
                groups.append((px, py, [r[PENALTY]]))
        leftmost = min(g[0] for g in groups) if groups else 0.0
        for px, py, penalties in groups:  # above-right, off the falling curve; the leftmost higher up
            ax.annotate("p=" + ", ".join(f"{p:g}" for p in penalties), (px, py), textcoords="offset points",
                        xytext=(-6, 12) if px == leftmost else (7, 5), fontsize=8, color=f"C{i}")
        ax.set_xscale("symlog", linthresh=0.1, linscale=0.6)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlim(-0.03, max(1.0, 2.5 * float(x.max())) if len(x) else 1.0)
        low, high = min(float(y.min()), 1.0), max(float(y.max()), 1.0)
        pad = 0.15 * (high - low) or 0.005
        ax.set_ylim(low - pad, high + 2 * pad)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--", zorder=1)
        ax.text(ax.get_xlim()[1], 1.0, "fresh clustering ", ha="right", va="bottom", fontsize=8, color="grey")
        previous = runs["previous_vs_fresh"].dropna()
        if not previous.empty:  # the previous batches' own SSE: a line when in range, else said in a corner
            if low - pad <= previous.iloc[0] <= high + 2 * pad:
                ax.axhline(previous.iloc[0], color="grey", lw=0.8, ls=":", zorder=1,
                           label="previous batches (continuing students)")
            else:
                ax.text(0.01, 0.02, f"previous batches (continuing students): {previous.iloc[0]:.3f} × fresh, "
                        "off the scale", transform=ax.transAxes, fontsize=7, color="grey")
        ax.set_xlabel("unchanged students moved (% of unchanged; symmetric log scale)")
        ax.set_ylabel("course SSE ÷ fresh course SSE")
        ax.set_title(name, fontsize=9)
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("re-batching: unchanged students moved vs course SSE, by move_penalty p", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def more_sweeps(args, parent, count: int) -> list:
    """The ``count`` sweeps started before ``parent`` in its experiment, newest first, each
    ``(parent, children, runs)``; sweeps without a finished job are left out (said on stderr)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    earlier = client.search_runs([parent.info.experiment_id],
                                 f"tags.`stage2.sweep` = 'true' and attributes.start_time < {parent.info.start_time}",
                                 order_by=["attributes.start_time DESC"], max_results=count)
    found = []
    for run in earlier:
        p, children = latest_sweep(client, args.experiment, run.info.run_id)
        runs = runs_frame(children)
        if runs.empty:
            print(f"tradeoff: sweep {p.info.run_id} has no finished job; left out", file=sys.stderr)
            continue
        found.append((p, children, runs))
    return found


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sweeps", type=int, default=1, help=SWEEPS_HELP)
    known, rest = pre.parse_known_args(argv)
    if known.sweeps < 1:
        print("tradeoff: --sweeps must be at least 1", file=sys.stderr)
        return 2
    loaded = study_sweep_from_cli(rest, description=f"{__doc__.splitlines()[0]} {SWEEPS_HELP}",
                                  experiment=EXPERIMENT, out_dir=HERE, runs_frame=runs_frame)
    if isinstance(loaded, int):
        return loaded
    args, parent, children, runs = loaded
    sweeps = [(parent, children, runs)]
    if known.sweeps > 1:
        sweeps += more_sweeps(args, parent, known.sweeps - 1)
    sweeps.reverse()  # oldest first: the order they were run in

    analyse = ["python experiments/rebatching/tradeoff.py", f"--tracking-uri {args.tracking_uri}"]
    if args.experiment != EXPERIMENT:
        analyse.append(f"--experiment {shlex.quote(args.experiment)}")
    if args.sweep_run_id:
        analyse.append(f"--sweep-run-id {args.sweep_run_id}")
    if known.sweeps > 1:
        analyse.append(f"--sweeps {known.sweeps}")
    sections, printed = [], []
    for p, ch, r in sweeps:
        table = markdown(r)
        name = label(p, ch)
        printed.append(f"## {name}\n\n{table}")
        notes = "\n".join(f"- {line}" for line in findings(r))
        sections.append(
            f"## {name}\n\n"
            f"Sweep run `{p.info.run_id}`, {len(r)} of {len(ch)} jobs finished. {describe_data(ch, p)}\n\n"
            f"```bash\n{sweep_command(p)}\n```\n\n{table}\n\n{notes}\n")
    print("\n\n".join(printed))

    args.out.mkdir(parents=True, exist_ok=True)
    plot([(label(p, ch), r) for p, ch, r in sweeps], args.out / PLOT)
    (args.out / RESULTS).write_text(
        "# Re-batching: move penalty against course SSE\n\n"
        "Generated by `experiments/rebatching/tradeoff.py` from the MLflow sweep(s) named below "
        "(`conf/experiment/rebatch_tradeoff.yaml`: `rebatch.move_penalty` swept, `rebatch.fresh_reference=true`). "
        "Regenerate: run each section's sweep command from a scratch directory (its `mlflow.db` lands there), then\n\n"
        f"```bash\n{' '.join(analyse)}\n```\n\n"
        "Inputs: `python experiments/rebatching/run.py --quick` leaves under `$TMPDIR/stage2-rebatching/` a published "
        "run per institution (`runs/NAME/published`) and the changed institution "
        "(`data/NAME-switch0.05-new0.02-drop0.02-close_rooms1-seed0`: 5 % of the students switch one course, 2 % new, "
        "2 % leave, one used room closed); by hand: `python -m stage2.synth DIR --students 3000 --seed 1`, "
        "`python -m stage2 data.input_dir=DIR output_dir=PUB tracking.enabled=false report.notebook=false "
        "as_of=2026-01-01T00:00:00`, `python experiments/rebatching/scenarios.py DIR CHANGED --seed 0 --previous-run "
        "PUB`. Several institutions: one sweep each into the same store, then `--sweeps N` takes the latest N sweeps "
        "of the experiment, one section and one plot panel each, oldest first.\n\n"
        "Columns: **unchanged moved** = students whose courses did not change placed outside their previous batch "
        "(`rebatch.moved_unchanged`, % of the unchanged students); **changed moved** = the same for students whose "
        "courses changed (their own penalty, `rebatch.changed_move_penalty`, is not swept); **perturbation** = "
        "(moved + new) ÷ active students; **batches kept** = previous batches with the same id, room and shift; "
        "**course SSE** = the re-batch's (`rebatch.course_sse`); **SSE / fresh** = that ÷ the course SSE of a fresh "
        "clustering of the same input (`rebatch.course_sse_fresh`); **previous SSE / fresh** = the continuing "
        "students left in their previous batches with their current courses (new students not counted, so not "
        "quite like for like; students who switched a course sit in batches formed for their old courses) ÷ the "
        "fresh SSE; **run s** = the job's `runtime_s` (fresh reference included).\n\n"
        + "\n".join(sections)
        + f"\n![students moved against course SSE]({PLOT})\n", encoding="utf-8")
    print(f"\nwrote {args.out / RESULTS} and {args.out / PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
