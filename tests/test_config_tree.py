"""The configuration tree as data: every option of every group composes, validates and builds
its settings and batcher; every default lives in the structured configs (the YAML files list
only changes); ``--help`` lists only real options."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR

from stage2.clustering import ALGORITHMS, make_batcher
from stage2.config import build_settings
from stage2.config.schema import ALGORITHM_SCHEMAS, Stage2Config, to_stage2_config

#: groups chosen in config.yaml's defaults list (``group=option``); the others are added (``+group=option``)
SELECTED_GROUPS = ("algorithm", "batch_size", "constraints", "resources", "tracking", "weights")
# conf/hydra holds options of Hydra's own groups (hydra/launcher), not of stage2's
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]


def test_every_group_is_known():
    assert set(SELECTED_GROUPS) <= set(GROUPS)
    assert set(GROUPS) - set(SELECTED_GROUPS) == {"experiment", "institution"}


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_builds(compose_config, group, option):
    override = f"{group}={option}" if group in SELECTED_GROUPS else f"+{group}={option}"
    cfg = compose_config([override, "data.input_dir=/x"])
    config = to_stage2_config(cfg)
    assert isinstance(config, Stage2Config)
    if group == "algorithm":
        assert config.algorithm.name == option and type(config.algorithm) is ALGORITHM_SCHEMAS[option]
    settings = build_settings(config)
    assert settings.bounds.min <= settings.bounds.target <= settings.bounds.max
    batcher = make_batcher(config.algorithm)
    assert type(batcher) is ALGORITHMS[config.algorithm.name]
    assert batcher.config == config.algorithm


def test_yaml_options_hold_only_changes():
    """A value an option file sets differs from the schema's default: a copy of a default would
    be a second place the default lives."""
    defaults = Stage2Config()
    repeated = []
    for group, option in OPTIONS:
        if group in ("experiment", "institution", "constraints"):
            continue  # global packages and rule sets: data, not schema defaults
        values = yaml.safe_load((CONF_DIR / group / f"{option}.yaml").read_text()) or {}
        schema = ALGORITHM_SCHEMAS[option]() if group == "algorithm" else getattr(defaults, group)
        for key, value in values.items():
            if key != "defaults" and getattr(schema, key) == value:
                repeated.append(f"{group}/{option}.yaml: {key}")
    assert repeated == []


def test_algorithms_take_exactly_their_schema():
    """Each batcher's parameters are its schema's fields: nothing defaulted in two places."""
    for name, batcher_class in ALGORITHMS.items():
        assert batcher_class.config_class is ALGORITHM_SCHEMAS[name]
        schema_fields = {f.name for f in fields(ALGORITHM_SCHEMAS[name])} - {"name"}
        batcher = batcher_class()
        assert {f.name for f in fields(batcher.config)} - {"name"} == schema_fields
        with pytest.raises(TypeError, match="unknown parameter"):
            batcher_class(not_a_parameter=1)


def test_a_partial_mapping_gets_the_schema_defaults():
    """From Python, a mapping of the changes is enough (the constraint set must be named: its
    rules are data, not defaults)."""
    config = to_stage2_config({"data": {"input_dir": "/x"}, "algorithm": {"name": "kmeans", "n_init": 2},
                               "batch_size": {"target": 30}, "constraints": {"name": "none"}})
    assert (config.algorithm.n_init, config.algorithm.max_iter) == (2, ALGORITHM_SCHEMAS["kmeans"]().max_iter)
    assert (config.batch_size.min, config.batch_size.target) == (Stage2Config().batch_size.min, 30)


@pytest.mark.slow
def test_help_lists_only_real_options():
    done = subprocess.run([sys.executable, "-m", "stage2", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {}
    groups_section = done.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for line in groups_section.splitlines():
        group, _, options = line.partition(": ")
        if group in GROUPS:
            listed[group] = set(options.split(", "))
    assert listed == {group: {o for g, o in OPTIONS if g == group} for group in GROUPS}


def test_cfg_job_shows_every_default(tmp_path):
    """``--cfg job`` prints the composed values, so a user sees each default without reading code."""
    done = subprocess.run([sys.executable, "-m", "stage2", "--cfg", "job"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = yaml.safe_load(done.stdout)
    assert shown["algorithm"]["tight_effort"] == ALGORITHM_SCHEMAS["balanced"]().tight_effort
    assert shown["metrics"]["silhouette_sample_size"] == Stage2Config().metrics.silhouette_sample_size
    assert not Path(tmp_path / "outputs").exists()
