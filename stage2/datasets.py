"""Built-in example institutions, materialised on first use into the stage2 data cache.

Like scikit-learn's ``get_data_home``, the cache is ``$STAGE2_DATA_HOME`` or
``~/.cache/stage2``. Nothing generated is shipped in the repository: each dataset is a recipe
for the deterministic generator :mod:`stage2.synth`, so the same recipe always gives the same
bytes. In YAML, ``${stage2.dataset:NAME}`` resolves to the dataset's directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: name -> generator arguments (``make_institution``) and file format (``write_institution``)
DATASETS: dict[str, dict[str, Any]] = {
    # the demo users see first: a university with many programmes, semesters and tracks
    "demo": {
        "generate": {"n_students": 1500, "seed": 2025, "profile": "university", "n_groups": "many"},
        "write": {"delimiter": ",", "bom": False, "enrollment_format": "table"},
    },
    # the template institution: a small college exporting with `;`, a BOM and a list column
    "xyz": {
        "generate": {"n_students": 420, "seed": 7, "profile": "college", "n_groups": "many"},
        "write": {"delimiter": ";", "bom": True, "enrollment_format": "list_column"},
    },
}
_COMPLETE_MARKER = ".complete"
#: bump when the generator's output changes, so caches are rebuilt
GENERATOR_VERSION = 1


def get_data_home() -> Path:
    return Path(os.environ.get("STAGE2_DATA_HOME", Path.home() / ".cache" / "stage2")).expanduser()


def fetch_dataset(name: str) -> Path:
    """Return the directory of built-in dataset ``name``, generating it if needed.

    Generation writes into a temporary sibling directory and renames it into place, so an
    interrupted or concurrent call never leaves a half-written dataset behind.
    """
    if name not in DATASETS:
        from stage2.errors import ConfigurationError

        raise ConfigurationError(
            f"unknown built-in dataset {name!r}; known: {sorted(DATASETS)}",
            where="data.input_dir",
            fix="use data.input_dir=/path/to/your/export or one of the built-in names",
        )
    recipe = DATASETS[name]
    key = hashlib.sha256(json.dumps([recipe, GENERATOR_VERSION], sort_keys=True).encode()).hexdigest()[:12]
    target = get_data_home() / "datasets" / f"{name}-{key}"
    if (target / _COMPLETE_MARKER).exists():
        return target
    from stage2.synth import make_institution, write_institution

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        write_institution(staging, make_institution(**recipe["generate"]), **recipe["write"])
        (staging / _COMPLETE_MARKER).write_text(json.dumps(recipe, sort_keys=True))
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / _COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
