"""One real pipeline run per test session, audited and reported by the tests of this folder.

Tests that write into a run directory (the notebook, the reports) work on a copy of it
(``run_copy``), so the session's run stays as the pipeline wrote it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

AS_OF = "2025-08-01T00:00:00"


@pytest.fixture(scope="session")
def reporting_input_dir(tmp_path_factory) -> Path:
    """A synthetic institution of 400 students (seed 3)."""
    from stage2.synth import make_institution, write_institution

    out = tmp_path_factory.mktemp("reporting-inst-400-3")
    write_institution(out, make_institution(400, seed=3))
    return out


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, reporting_input_dir) -> Path:
    """The run directory of a real pipeline run on :func:`reporting_input_dir` (read-only)."""
    from hydra.core.global_hydra import GlobalHydra

    from stage2 import load_config, process_student_batching

    out = tmp_path_factory.mktemp("reporting-run")
    # no reports from the pipeline itself: the tests write exactly the ones they check
    cfg = load_config([f"data.input_dir={reporting_input_dir}", "tracking.enabled=false", "report.notebook=false",
                       "report.formats=[]", f"as_of={AS_OF}"])
    GlobalHydra.instance().clear()
    process_student_batching(cfg, output_dir=out)
    return out


@pytest.fixture
def run_copy(pipeline_run, tmp_path) -> Path:
    """A private copy of the session's run directory."""
    target = tmp_path / "run"
    shutil.copytree(pipeline_run, target)
    return target
