"""The built wheel works on its own: installed into a new virtual environment, ``python -m
stage2`` runs the demo (audit notebook included) from a directory outside the repository,
with the configuration tree and the notebook that ship inside the wheel.

The new environment gets stage2 from the wheel alone (``--no-deps``); its dependencies are
read from this test environment's site-packages through a ``.pth`` file (and nbconvert's
templates through ``JUPYTER_PATH``), so the test checks
the wheel's contents without downloading the dependency tree again. The repository is not on
its path: the checks below fail if the wheel lacks ``conf/`` or the notebook.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO_ROOT)],
                   check=True, timeout=TIMEOUT_S)
    (built,) = out.glob("stage2-*.whl")
    return built


def test_the_wheel_carries_the_configuration_and_the_notebook(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"stage2/{p.relative_to(REPO_ROOT).as_posix()}" for p in (REPO_ROOT / "conf").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "stage2/notebooks/audit_report.ipynb" in names
    assert "stage2/py.typed" in names
    assert not any(name.startswith(("tests/", "experiments/")) for name in names)


def test_an_installed_wheel_runs_the_demo_from_any_directory(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies of this environment (not its .pth files: the editable stage2 stays out)
    (site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=TIMEOUT_S)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    # the dependencies' data files (nbconvert's templates) are in this environment's prefix
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
    where = subprocess.run([str(python), "-c", "import stage2.locations as l; print(l.config_dir()); "
                            "print(l.notebooks_dir())"], cwd=workdir, env=env, check=True, capture_output=True,
                           text=True).stdout.split()
    assert [Path(p) for p in where] == [site / "stage2" / "conf", site / "stage2" / "notebooks"]

    done = subprocess.run([str(python), "-m", "stage2", "as_of=2025-08-01T00:00:00", "output_dir=run"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    run = workdir / "run"
    for name in ("student_batches.csv", "batch_student_membership.csv", "batch_course_enrollment.csv",
                 "quality_report.json", "audit_report.html"):
        assert (run / name).stat().st_size > 0, name
    assert (workdir / "mlflow.db").exists()  # tracked in the directory it ran from

    # the same demo from the repository's own tree gives the same batches
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "stage2", "as_of=2025-08-01T00:00:00", f"output_dir={reference}",
                    "tracking.enabled=false", "report.notebook=false"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=TIMEOUT_S)
    for name in ("student_batches.csv", "batch_student_membership.csv", "batch_course_enrollment.csv"):
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
