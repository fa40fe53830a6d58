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
