"""Configuration: typed sections, Hydra recipes, ConfigError naming the key at fault.

Only the error types are imported eagerly: area modules import them from here while the schema
imports the areas (load_config lives in megatron_video.config.loader).
"""
from megatron_video.config.errors import ConfigError, require

__all__ = ["ConfigError", "require"]
