"""What a worker process runs for one group: the fit and a check of its sizes.

Kept apart from :mod:`stage2.clustering.groups` (pandas, the features, the settings) so that a
worker unpickling its task imports the clustering only.
"""

from __future__ import annotations

import numpy as np

from stage2.clustering.base import Batcher, BatchingProblem
from stage2.memory import process_peak


def fit_group(batcher: Batcher, problem: BatchingProblem) -> np.ndarray:
    """``batcher``'s labels for ``problem``; ``RuntimeError`` if their sizes are not admitted."""
    labels = batcher.fit_predict(problem)
    if not problem.sizes.admits(np.bincount(labels, minlength=problem.n_batches)):
        raise RuntimeError(f"{batcher!r} returned inadmissible batch sizes")
    return labels


def fit_group_in_worker(batcher: Batcher, problem: BatchingProblem) -> tuple[np.ndarray, tuple[int, float]]:
    """:func:`fit_group` and the worker's (pid, peak MiB)."""
    return fit_group(batcher, problem), process_peak()
