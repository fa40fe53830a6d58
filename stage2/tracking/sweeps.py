"""Reading sweeps back from MLflow: a sweep is a parent run tagged ``stage2.sweep=true``
whose jobs are child runs (``mlflow.parentRunId``); see :mod:`stage2.tracking.hydra_callback`."""

from __future__ import annotations


def latest_sweep(client, experiment: str, sweep_run_id: str | None = None):
    """(parent run, its child runs) of the given or the most recent sweep in ``experiment``."""
    if sweep_run_id:
        parent = client.get_run(sweep_run_id)
        experiment_id = parent.info.experiment_id
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise LookupError(f"no MLflow experiment {experiment!r}")
        experiment_id = found.experiment_id
        parents = client.search_runs([experiment_id], "tags.`stage2.sweep` = 'true'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            raise LookupError(f"no sweep (run tagged stage2.sweep=true) in experiment {experiment!r}")
        parent = parents[0]
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  max_results=5000)
    return parent, children


def study_sweep_from_cli(argv, *, description: str, experiment: str, out_dir, runs_frame):
    """The studies' shared command line: ``--tracking-uri`` (required), ``--experiment``,
    ``--sweep-run-id``, ``--out``; fetches the sweep and tabulates its finished jobs with
    ``runs_frame(children)``. Returns ``(args, parent, children, runs)``, or an exit status 2
    after saying on stderr why there is nothing to analyse."""
    import argparse
    import os
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///$PWD/mlflow.db")
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")
    parser.add_argument("--sweep-run-id", help="this sweep's parent run instead of the latest")
    parser.add_argument("--out", type=Path, default=Path(out_dir), help="where results.md and the PNG go")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    try:
        parent, children = latest_sweep(MlflowClient(tracking_uri=args.tracking_uri), args.experiment,
                                        args.sweep_run_id)
    except Exception as exc:  # unknown experiment, sweep or run id
        print(f"analyze: {exc}", file=sys.stderr)
        return 2
    runs = runs_frame(children)
    if runs.empty:
        print(f"analyze: sweep {parent.info.run_id} ({parent.info.status}) has no finished job; "
              "pick another with --sweep-run-id", file=sys.stderr)
        return 2
    return args, parent, children, runs
