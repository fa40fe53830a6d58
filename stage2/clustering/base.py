"""The interface every batching algorithm implements, like a scikit-learn estimator.

An algorithm receives one mixable group as a :class:`BatchingProblem` (dense feature rows and
the exact size of every batch) and returns a label per student. The sizing stage has already
chosen sizes within the bounds, and groups never mix, so any labelling with the right sizes
keeps every hard rule; algorithms differ only in how low a cost they reach.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from stage2.clustering.assignment import SizeModel, as_size_model
from stage2.config.schema import AlgorithmConfig


@dataclass(frozen=True)
class BatchingProblem:
    """One mixable group to split into batches.

    ``sizes`` is a :class:`SizeModel` (or an array of exact sizes, converted): the planned
    size of each batch and, when flexible, the bounds and the price of deviating from it.
    """

    #: one row per student of the group (course columns, then scaled soft-rule columns)
    features: np.ndarray
    sizes: SizeModel
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", as_size_model(self.sizes))
        if int(self.sizes.planned.sum()) != self.features.shape[0]:
            raise ValueError("planned batch sizes must sum to the number of students")

    @property
    def batch_sizes(self) -> np.ndarray:
        """The planned size of each batch."""
        return self.sizes.planned

    @property
    def n_batches(self) -> int:
        return self.sizes.n_batches


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
    """Base class: subclasses set ``name`` and ``config_class`` (their schema in
    :mod:`stage2.config.schema`, which holds every parameter's default) and implement
    :meth:`fit_predict`.

    ``Batcher(config)`` takes a config object, ``Batcher(**params)`` keyword parameters over
    the schema's defaults, as a scikit-learn estimator would; both together: ``params``
    replace the config's values. An unknown parameter raises ``TypeError``, a bad value
    ``ValueError``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig

    def __init__(self, config: AlgorithmConfig | None = None, **params: Any) -> None:
        base = config if config is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(base).__name__}")
        known = {f.name for f in fields(base)} - {"name"}
        if unknown := sorted(set(params) - known):
            raise TypeError(f"unknown parameter(s) {unknown} for algorithm {self.name!r}; known: {sorted(known)}")
        self.config = replace(base, **params)
        self._check(self.config)

    def _check(self, config: Any) -> None:
        """Raise ``ValueError`` for a parameter value the algorithm cannot use."""
        if config.n_init < 1:
            raise ValueError(f"n_init must be at least 1, got {config.n_init}")

    @abstractmethod
    def fit_predict(self, problem: BatchingProblem) -> np.ndarray:
        """Labels in ``[0, n_batches)`` whose batch sizes ``problem.sizes`` admits (exactly
        ``problem.batch_sizes`` when the size model is exact)."""

    def __repr__(self) -> str:
        params = ", ".join(
            f"{f.name}={getattr(self.config, f.name)!r}" for f in fields(self.config) if f.name != "name"
        )
        return f"{type(self).__name__}({params})"


def objective(features: np.ndarray, labels: np.ndarray, sizes: SizeModel) -> float:
    """Within-batch SSE plus the size model's deviation penalty: what algorithms minimise."""
    return within_batch_sse(features, labels, sizes.n_batches) + sizes.penalty(
        np.bincount(labels, minlength=sizes.n_batches)
    )


def within_batch_sse(features: np.ndarray, labels: np.ndarray, n_batches: int) -> float:
    """Σ_b Σ_{i in b} ||x_i − mean_b||², computed without an n × n matrix."""
    counts = np.bincount(labels, minlength=n_batches).astype(np.float64)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_batches))[:-1]])
    nonempty = counts > 0
    # per-batch sums by a segmented reduction (np.add.at is slow)
    sums = (
        np.add.reduceat(features[order], starts[nonempty], axis=0)
        if nonempty.any()
        else np.zeros((0, features.shape[1]))
    )
    total_sq = float(np.einsum("ij,ij->", features, features))
    return total_sq - float(np.sum(np.einsum("ij,ij->i", sums, sums) / counts[nonempty]))
