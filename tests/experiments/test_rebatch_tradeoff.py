"""The re-batching move-penalty study (conf/experiment/rebatch_tradeoff.yaml,
experiments/rebatching/tradeoff.py): the experiment config composes to the sweep its header
describes, and a tiny real sweep (a published run, a changed copy of its institution, two
penalties), analysed from its MLflow store, gives the expected table and plot."""

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
STUDY = REPO / "experiments" / "rebatching"
CONFIG = REPO / "conf" / "experiment" / "rebatch_tradeoff.yaml"
EXPERIMENT = "study-rebatch-tradeoff"
PENALTIES = "0.0,0.1,0.25,0.5,1.0,2.0,4.0,8.0"
AS_OF = "as_of=2026-01-01T00:00:00"


def load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, STUDY / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the first markdown table in ``markdown``, as lists of cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_experiment_config_sweeps_the_move_penalty():
    cfg = compose_with_hydra(["+experiment=rebatch_tradeoff"])
    swept = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert {k: str(v) for k, v in swept.items()} == {"rebatch.move_penalty": PENALTIES}
    assert cfg.rebatch.fresh_reference is True
    assert cfg.report.notebook is False
    assert cfg.tracking.experiment_name == EXPERIMENT
    # previous_run must be given: left alone it is a placeholder that is no directory (the run
    # stops with PREVIOUS_RUN_INVALID; see the slow test)
    assert cfg.rebatch.previous_run and "rebatch.previous_run=" in cfg.rebatch.previous_run
    assert not Path(cfg.rebatch.previous_run).exists()
    given = compose_with_hydra(["+experiment=rebatch_tradeoff", "rebatch.previous_run=/srv/run", "data.input_dir=/x"])
    assert (given.rebatch.previous_run, given.data.input_dir) == ("/srv/run", "/x")
    header = CONFIG.read_text(encoding="utf-8")
    assert "python -m stage2 -m +experiment=rebatch_tradeoff data.input_dir=" in header
    assert "python experiments/rebatching/tradeoff.py --tracking-uri sqlite:///$PWD/mlflow.db" in header


def stage2(cwd: Path, *overrides: str, timeout: float = 110) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "stage2", *overrides]
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_tiny_sweep_is_analysed_from_mlflow(tmp_path, make_institution_dir, capsys):
    inst = make_institution_dir(300)
    published = tmp_path / "published"
    done = stage2(tmp_path, f"data.input_dir={inst}", f"output_dir={published}", "tracking.enabled=false",
                  "report.notebook=false", AS_OF)
    assert done.returncode == 0, done.stderr[-3000:]
    changed = tmp_path / "changed"
    load("rebatch_scenarios_for_tradeoff", "scenarios.py").make_scenario(
        inst, changed, seed=0, switch=0.1, new=0.02, drop=0.02, close_rooms=1, previous_run=published)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = stage2(tmp_path, "-m", "+experiment=rebatch_tradeoff", "rebatch.move_penalty=0.0,8.0",
                  f"data.input_dir={changed}", f"rebatch.previous_run={published}", AS_OF, f"tracking.uri={uri}",
                  f"hydra.sweep.dir={tmp_path / 'multirun'}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    tradeoff = load("rebatch_tradeoff_analysis", "tradeoff.py")
    out = tmp_path / "out"
    assert tradeoff.main(["--tracking-uri", uri, "--out", str(out), "--sweeps", "3"]) == 0  # only one sweep exists
    md = (out / "tradeoff.md").read_text(encoding="utf-8")
    rows = table_rows(md)
    assert [row[0] for row in rows] == ["0", "8"]
    assert md.count("| move_penalty |") == 1
    assert f"rebatch.previous_run={published}" in md and f"data.input_dir={changed}" in md  # the sweep command
    assert f"--tracking-uri {uri}" in md                                                   # the analysis command

    # the cells are the jobs' metrics as stored
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    jobs = {float(r.data.params["rebatch.move_penalty"]): r.data.metrics
            for r in client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
            if "mlflow.parentRunId" in r.data.tags}
    assert sorted(jobs) == [0.0, 8.0]
    for row, penalty in zip(rows, (0.0, 8.0), strict=True):
        m = jobs[penalty]
        assert float(row[1]) == m["rebatch.moved_unchanged"]
        assert float(row[2]) == pytest.approx(100 * m["rebatch.moved_unchanged_share"], abs=0.005)
        assert float(row[3]) == m["rebatch.moved_changed"]
        assert math.isfinite(m["rebatch.course_sse_fresh"]) and m["rebatch.course_sse_fresh"] > 0
        assert float(row[7]) == pytest.approx(m["rebatch.course_sse"] / m["rebatch.course_sse_fresh"], abs=5e-5)
        assert float(row[8]) == pytest.approx(m["rebatch.course_sse_previous"] / m["rebatch.course_sse_fresh"],
                                              abs=5e-5)
    # a dearer move never moves more unchanged students
    assert jobs[8.0]["rebatch.moved_unchanged"] <= jobs[0.0]["rebatch.moved_unchanged"]
    assert (out / "rebatch_tradeoff.png").stat().st_size > 1000
    assert "| 8 |" in capsys.readouterr().out  # the table is printed too

    # no such experiment: exit 2, not an empty table
    assert tradeoff.main(["--tracking-uri", uri, "--experiment", "nope", "--out", str(tmp_path / "none")]) == 2
    # forgetting rebatch.previous_run is an error, not a fresh run
    done = stage2(tmp_path, "+experiment=rebatch_tradeoff", f"data.input_dir={changed}", "tracking.enabled=false",
                  f"output_dir={tmp_path / 'forgot'}", AS_OF)
    assert done.returncode != 0 and "PREVIOUS_RUN_INVALID" in done.stderr
