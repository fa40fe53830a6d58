"""Where the files that ship with stage2 are: the Hydra configuration tree and the audit
notebook.

In the repository they sit at the top level (``conf/``, ``notebooks/``), beside the package;
a built wheel carries them inside the package (``stage2/conf``, ``stage2/notebooks``, see
``pyproject.toml``). Both layouts are found, the packaged one first.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    packaged = PACKAGE_DIR / name
    return packaged if packaged.is_dir() else PACKAGE_DIR.parent / name


def config_dir() -> Path:
    """The directory of ``config.yaml`` and the config groups."""
    return _shipped("conf")


def notebooks_dir() -> Path:
    """The directory of ``audit_report.ipynb``."""
    return _shipped("notebooks")
