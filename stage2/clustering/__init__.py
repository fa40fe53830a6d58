"""Batching algorithms behind one interface (:class:`Batcher`), chosen by ``algorithm=<name>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stage2.clustering.balanced import BalancedBatcher
from stage2.clustering.base import Batcher, BatchingProblem, within_batch_sse
from stage2.clustering.sklearn_based import HierarchicalBatcher, KMeansBatcher, SpectralBatcher
from stage2.config.schema import AlgorithmConfig
from stage2.errors import ConfigurationError

ALGORITHMS: dict[str, type[Batcher]] = {
    cls.name: cls for cls in (BalancedBatcher, KMeansBatcher, SpectralBatcher, HierarchicalBatcher)
}


def make_batcher(params: AlgorithmConfig | Mapping[str, Any]) -> Batcher:
    """Build an algorithm from its config object (``cfg.algorithm`` of a
    :class:`~stage2.config.Stage2Config`) or from a mapping: ``name`` chooses the algorithm,
    the other keys replace its schema's defaults."""
    if isinstance(params, AlgorithmConfig):
        name, config, overrides = params.name, params, {}
    else:
        overrides = dict(params)
        name, config = overrides.pop("name", None), None
    if name not in ALGORITHMS:
        raise ConfigurationError(f"unknown algorithm {name!r}; known: {sorted(ALGORITHMS)}", where="algorithm")
    try:
        return ALGORITHMS[name](config, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad parameters for algorithm {name!r}: {exc}", where="algorithm") from exc


__all__ = ["ALGORITHMS", "Batcher", "BatchingProblem", "make_batcher", "within_batch_sse"]
