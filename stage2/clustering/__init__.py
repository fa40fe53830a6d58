"""Batching algorithms behind one interface (:class:`Batcher`), chosen by ``algorithm=<name>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stage2.clustering.balanced import BalancedBatcher
from stage2.clustering.base import Batcher, BatchingProblem, within_batch_sse
from stage2.clustering.sklearn_based import HierarchicalBatcher, KMeansBatcher, SpectralBatcher
from stage2.errors import ConfigurationError

ALGORITHMS: dict[str, type[Batcher]] = {
    cls.name: cls for cls in (BalancedBatcher, KMeansBatcher, SpectralBatcher, HierarchicalBatcher)
}


def make_batcher(params: Mapping[str, Any]) -> Batcher:
    """Build the algorithm named by ``params['name']`` with the remaining keys as arguments."""
    params = dict(params)
    name = params.pop("name", None)
    if name not in ALGORITHMS:
        raise ConfigurationError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}", where="algorithm")
    try:
        return ALGORITHMS[name](**params)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad parameters for algorithm {name!r}: {exc}", where="algorithm") from exc


__all__ = ["ALGORITHMS", "Batcher", "BatchingProblem", "make_batcher", "within_batch_sse"]
