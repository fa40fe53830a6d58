"""The two sweep studies (experiments/algorithm_comparison, experiments/weight_tradeoff): their
experiment configs compose to the sweeps their READMEs describe, and a tiny real sweep of each,
analysed from its MLflow store, gives the expected table and plot."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_with_hydra, subprocess_env
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"

#: study -> (experiment name, hydra.sweeper.params as written in the config and its README)
STUDIES = {
    "algorithm_comparison": ("study-algorithm-comparison",
                             {"algorithm": "balanced,kmeans,spectral,hierarchical", "seed": "0,1,2"}),
    "weight_tradeoff": ("study-weight-tradeoff",
                        {"weights.homogeneity": "0.0,0.1,0.25,0.4,0.55,0.7,0.85,1.0"}),
}


def load_analyze(study: str):
    spec = importlib.util.spec_from_file_location(f"analyze_{study}", EXPERIMENTS / study / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the first markdown table in ``markdown``, as lists of cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_experiment_config_sweeps_what_the_readme_says(study):
    experiment_name, params = STUDIES[study]
    cfg = compose_with_hydra([f"+experiment={study}"])
    swept = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert {k: str(v) for k, v in swept.items()} == params
    assert cfg.report.notebook is False
    assert cfg.tracking.experiment_name == experiment_name
    # data.input_dir is left alone: the demo by default, overridable
    assert OmegaConf.to_container(cfg.data)["input_dir"] == "${stage2.dataset:demo}"
    assert compose_with_hydra([f"+experiment={study}", "data.input_dir=/srv/x"]).data.input_dir == "/srv/x"
    readme = (EXPERIMENTS / study / "README.md").read_text(encoding="utf-8")
    for key, values in params.items():
        assert f"{key}: {values}" in readme
    assert f"python -m stage2 -m +experiment={study}" in readme
    assert f"python experiments/{study}/analyze.py --tracking-uri sqlite:///$PWD/mlflow.db" in readme


@pytest.mark.parametrize("homogeneity", [0.0, 0.1, 0.55, 0.85, 1.0])
def test_weight_tradeoff_weights_sum_to_one(compose_config, homogeneity):
    from stage2.config import build_settings

    cfg = compose_config(["+experiment=weight_tradeoff", f"weights.homogeneity={homogeneity}",
                          "data.input_dir=/nonexistent"])
    weights = cfg.weights
    assert weights.balance == weights.size == pytest.approx((1 - homogeneity) / 2)
    assert weights.homogeneity + weights.balance + weights.size == pytest.approx(1.0)
    settings = build_settings(cfg)  # stage2's own validation (WEIGHT_NORMALIZATION_FAILED otherwise)
    expected = math.inf if homogeneity == 0 else cfg.batch_size.deviation_cost * (1 - homogeneity) / homogeneity
    assert settings.deviation_cost == pytest.approx(expected)


def job_metrics(uri: str, experiment: str, param: str, metrics: tuple[str, ...]) -> dict[float, tuple[float, ...]]:
    """``{value of param: (metrics...)}`` of every finished sweep job (child run) in ``experiment``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return {float(r.data.params[param]): tuple(r.data.metrics[m] for m in metrics) for r in runs
            if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"}


def pareto_front(points: dict[float, tuple[float, ...]]) -> dict[float, bool]:
    """Per point: no other point is at least as good in every coordinate and better in one (all maximised)."""
    def dominates(a, b):
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))

    return {key: not any(dominates(other, p) for k, other in points.items() if k != key) for key, p in points.items()}


def test_pareto_front_marks_exactly_the_non_dominated_points():
    points = {0.0: (0.90, 0.99), 0.4: (0.95, 0.90), 0.7: (0.94, 0.85), 1.0: (0.95, 0.80), 0.2: (0.90, 0.99)}
    assert pareto_front(points) == {0.0: True, 0.4: True, 0.7: False, 1.0: False, 0.2: True}  # ties dominate nobody


def run_sweep(cwd: Path, uri: str, study: str, *overrides: str) -> None:
    env = subprocess_env()
    cmd = [sys.executable, "-m", "stage2", "-m", f"+experiment={study}", *overrides,
           f"tracking.uri={uri}", f"hydra.sweep.dir={cwd / 'multirun' / study}"]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_tiny_sweeps_are_analysed_from_mlflow(tmp_path, make_institution_dir, capsys):
    inst = make_institution_dir(300)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_sweep(tmp_path, uri, "weight_tradeoff", "weights.homogeneity=0.4,1.0", f"data.input_dir={inst}")
    run_sweep(tmp_path, uri, "algorithm_comparison", "algorithm=balanced,kmeans", "seed=0,1",
              f"data.input_dir={inst}")

    out = tmp_path / "weight_out"
    assert load_analyze("weight_tradeoff").main(["--tracking-uri", uri, "--out", str(out)]) == 0
    rows = table_rows((out / "results.md").read_text(encoding="utf-8"))
    assert [row[0] for row in rows] == ["0.4", "1"]
    assert [row[1] for row in rows] == ["0.3", "0"]          # balance = size = (1 - h) / 2
    assert rows[-1][3] == "0"                                 # λ = 0 when homogeneity is 1
    # ● marks exactly the jobs no other job beats on both coherence and size balance (recomputed
    # from the jobs' metrics in the store, at full precision)
    points = job_metrics(uri, "study-weight-tradeoff", "weights.homogeneity", ("academic_coherence", "size_balance"))
    assert sorted(points) == [0.4, 1.0]
    assert {float(row[0]): row[-1] == "●" for row in rows} == pareto_front(points)
    assert (out / "weight_tradeoff.png").stat().st_size > 1000
    assert "| 0.4 |" in capsys.readouterr().out              # the table is printed too

    out = tmp_path / "algorithm_out"
    assert load_analyze("algorithm_comparison").main(["--tracking-uri", uri, "--out", str(out)]) == 0
    rows = table_rows((out / "results.md").read_text(encoding="utf-8"))
    assert [(row[0], row[1]) for row in rows] == [("`balanced`", "0,1"), ("`kmeans`", "0,1")]
    assert all("±" in cell for row in rows for cell in row[2:])
    assert (out / "algorithm_comparison.png").stat().st_size > 1000

    # an experiment without a sweep is an error (exit 2), not an empty table
    assert load_analyze("weight_tradeoff").main(["--tracking-uri", uri, "--experiment", "nope",
                                                 "--out", str(tmp_path / "none")]) == 2
