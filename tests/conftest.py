"""Shared fixtures: an isolated data cache, one MLflow SQLite store per test session, Hydra
state cleared between tests, and small synthetic institutions written on demand."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# isolate every session from the user's cache, MLflow store and telemetry, before imports
os.environ["STAGE2_DATA_HOME"] = tempfile.mkdtemp(prefix="stage2-data-")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.pop("MLFLOW_TRACKING_URI", None)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


@pytest.fixture(autouse=True)
def _clear_hydra():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite store per session (creating one runs migrations: ~5 s)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def make_institution_dir(tmp_path_factory):
    """``make_institution_dir(n_students, seed=0, **options) -> Path`` (cached per session)."""
    from stage2.synth import make_institution, write_institution

    cache: dict[tuple, Path] = {}

    def make(n_students: int, seed: int = 0, *, n_groups: str = "many", profile: str = "university", **write_options) -> Path:
        key = (n_students, seed, n_groups, profile, tuple(sorted(write_options.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"inst-{n_students}-{seed}")
            write_institution(out, make_institution(n_students, seed=seed, profile=profile, n_groups=n_groups), **write_options)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture
def compose_config():
    """``compose_config(overrides) -> DictConfig`` through Hydra's compose API."""
    from stage2 import load_config

    return lambda overrides=(): load_config(list(overrides), config_dir=CONF_DIR)
