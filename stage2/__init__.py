"""stage2: form student batches (sections) for university timetabling.

Stage 1 validates an institution's data, stage2 groups students into batches that share
their courses and gives each a home room and shift, Stage 3 builds the timetable.

>>> from stage2 import load_config, process_student_batching
>>> result = process_student_batching(load_config(["tracking.enabled=false"]), output_dir="out")  # doctest: +SKIP
>>> from stage2 import quick_batch_processing, validate_batch_processing_inputs
>>> validate_batch_processing_inputs("exports/2025-fall").ok  # doctest: +SKIP
>>> result = quick_batch_processing("exports/2025-fall", "out", batch_size_min=20, tracking=False)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["BatchingResult", "__version__", "load_config", "process_student_batching", "quick_batch_processing",
           "validate_batch_processing_inputs"]

if TYPE_CHECKING:
    from stage2.api import quick_batch_processing, validate_batch_processing_inputs
    from stage2.pipeline import BatchingResult, load_config, process_student_batching


def __getattr__(name: str):
    """The pipeline's names, imported on first use: ``python -m stage2`` imports this package
    before its entrypoint, which wants to control how the heavy imports happen
    (:mod:`stage2.__main__`)."""
    if name in ("BatchingResult", "load_config", "process_student_batching"):
        from stage2 import pipeline

        return getattr(pipeline, name)
    if name in ("quick_batch_processing", "validate_batch_processing_inputs"):
        # by name: the package only re-exports the API (an entrypoint), which the pipeline's
        # modules, importing this package for its version, must not depend on (lint-imports)
        return getattr(importlib.import_module("stage2.api"), name)
    raise AttributeError(f"module 'stage2' has no attribute {name!r}")
