"""stage2: form student batches (sections) for university timetabling.

Stage 1 validates an institution's data, stage2 groups students into batches that share
their courses and gives each a home room and shift, Stage 3 builds the timetable.

>>> from stage2 import load_config, process_student_batching
>>> result = process_student_batching(load_config(["tracking.enabled=false"]), output_dir="out")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from stage2.pipeline import BatchingResult, load_config, process_student_batching  # noqa: E402

__all__ = ["BatchingResult", "__version__", "load_config", "process_student_batching"]
