"""Configuration: structured-config schemas, validation and EAV overrides."""

from omegaconf import OmegaConf

from stage2.config.schema import Stage2Config, register_configs
from stage2.config.settings import (
    AppliedOverride,
    BatchingSettings,
    ConstraintRule,
    SizeBounds,
    Weights,
    build_settings,
)

CONFIG_DIR_NAME = "conf"


def register_resolvers() -> None:
    """``${stage2.dataset:NAME}``: the directory of a built-in example institution."""
    if not OmegaConf.has_resolver("stage2.dataset"):
        from stage2.datasets import fetch_dataset

        OmegaConf.register_new_resolver("stage2.dataset", lambda name: str(fetch_dataset(name)))


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
