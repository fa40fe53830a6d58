"""Configuration: structured-config schemas, validation and EAV overrides.

The settings (:mod:`stage2.config.settings`: pandas and the contract) are imported on first
use, so that importing a schema (a clustering worker unpickling its algorithm's config) stays
light.
"""

from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from stage2.config.schema import Stage2Config, register_configs

if TYPE_CHECKING:
    from stage2.config.settings import (
        AppliedOverride,
        BatchingSettings,
        ConstraintRule,
        SizeBounds,
        Weights,
        build_settings,
    )

_FROM_SETTINGS = ("AppliedOverride", "BatchingSettings", "ConstraintRule", "SizeBounds", "Weights", "build_settings")


def __getattr__(name: str) -> Any:
    if name in _FROM_SETTINGS:
        from stage2.config import settings

        return getattr(settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def weight_rest(weight: float, parts: int = 2) -> float:
    """``(1 - weight) / parts``: an equal share of what ``weight`` leaves of a total of 1."""
    return (1.0 - float(weight)) / int(parts)


def register_resolvers() -> None:
    """``${stage2.dataset:NAME}``: the directory of a built-in example institution;
    ``${stage2.weight_rest:W}``: (1 - W) / 2, so swept weights keep summing to 1."""
    if not OmegaConf.has_resolver("stage2.dataset"):
        from stage2.datasets import fetch_dataset

        OmegaConf.register_new_resolver("stage2.dataset", lambda name: str(fetch_dataset(name)))
    if not OmegaConf.has_resolver("stage2.weight_rest"):
        OmegaConf.register_new_resolver("stage2.weight_rest", weight_rest)


__all__ = [
    "AppliedOverride",
    "BatchingSettings",
    "ConstraintRule",
    "SizeBounds",
    "Stage2Config",
    "Weights",
    "build_settings",
    "register_configs",
    "register_resolvers",
]
