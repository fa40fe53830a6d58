"""The interface every batching algorithm implements, like a scikit-learn estimator.

An algorithm receives one mixable group as a :class:`BatchingProblem` (dense feature rows and
the exact size of every batch) and returns a label per student. The sizing stage has already
chosen sizes within the bounds, and groups never mix, so any labelling with the right sizes
keeps every hard rule; algorithms differ only in how low a cost they reach.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchingProblem:
    #: one row per student of the group (course columns, then scaled soft-rule columns)
    features: np.ndarray
    #: exact size of each batch; sums to ``len(features)``
    batch_sizes: np.ndarray
    seed: int = 0

    @property
    def n_batches(self) -> int:
        return int(self.batch_sizes.size)


@dataclass(frozen=True)
class CollapsedPoints:
    """Students with identical feature rows merged into one weighted point."""

    points: np.ndarray
    counts: np.ndarray
    #: point of each student
    inverse: np.ndarray


def collapse(features: np.ndarray) -> CollapsedPoints:
    points, inverse, counts = np.unique(features, axis=0, return_inverse=True, return_counts=True)
    return CollapsedPoints(points=points, counts=counts.astype(np.int64), inverse=inverse.reshape(-1))


class Batcher(ABC):
    """Base class: subclasses set ``name`` and implement :meth:`fit_predict`."""

    name: str = ""

    def __init__(self, *, n_init: int = 1, max_iter: int = 30) -> None:
        self.n_init = n_init
        self.max_iter = max_iter

    @abstractmethod
    def fit_predict(self, problem: BatchingProblem) -> np.ndarray:
        """Labels in ``[0, n_batches)`` with ``bincount(labels) == problem.batch_sizes``."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({params})"


def within_batch_sse(features: np.ndarray, labels: np.ndarray, n_batches: int) -> float:
    """Σ_b Σ_{i in b} ||x_i − mean_b||², computed without an n × n matrix."""
    counts = np.bincount(labels, minlength=n_batches).astype(np.float64)
    sums = np.zeros((n_batches, features.shape[1]))
    np.add.at(sums, labels, features)
    total_sq = float(np.einsum("ij,ij->", features, features))
    nonempty = counts > 0
    return total_sq - float(np.sum(np.einsum("ij,ij->i", sums[nonempty], sums[nonempty]) / counts[nonempty]))
