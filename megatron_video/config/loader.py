"""Compose a recipe from recipes/ with Hydra, apply `key=value` overrides, validate, type it.

Hydra resolves the defaults lists and group choices (`model=1b`); the result and the `a.b=value`
overrides are then merged into the structured RootConfig, whose schema knows every key (Hydra's
own override of a key the YAML does not mention would be refused), so that an unknown key, a wrong
type or an out-of-range value raises a ConfigError naming the dotted key before any work starts.
"""
from __future__ import annotations

import os
import pathlib

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from megatron_video.config.errors import ConfigError
from megatron_video.config.schema import RootConfig

RECIPES_DIR = pathlib.Path(os.environ.get(
    "MVIDEO_RECIPES", pathlib.Path(__file__).resolve().parents[2] / "recipes"))


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def config_groups() -> set[str]:
    """Folders of recipes/ (model, optim, curate, parallel): `group=name` picks one of their files."""
    return {p.name for p in RECIPES_DIR.iterdir() if p.is_dir()}


def _compose(recipe: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    if recipe not in available_recipes():
        raise ConfigError("recipe", f"unknown recipe '{recipe}'; known: {', '.join(available_recipes())}")
    try:
        with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base=None):
            return compose(config_name=recipe, overrides=overrides)
    except HydraException as err:
        key = overrides[0].split("=")[0] if len(overrides) == 1 else "overrides"
        for override in overrides:
            if override.split("=")[0].lstrip("+~") in str(err):
                key = override.split("=")[0]
        raise ConfigError(key, str(err).splitlines()[0]) from None


def load_config(recipe: str = "default", overrides: list[str] | None = None) -> RootConfig:
    """The validated, typed configuration for `recipe` with `overrides` applied."""
    overrides = list(overrides or [])
    for override in overrides:
        if "=" not in override:
            raise ConfigError(override, "overrides are written key=value")
    groups = config_groups()
    choices = [o for o in overrides if o.split("=")[0] in groups]
    values = [o for o in overrides if o.split("=")[0] not in groups]
    composed = _compose(recipe, choices)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RootConfig), composed, OmegaConf.from_dotlist(values))
    except OmegaConfBaseException as err:
        raise ConfigError(err.full_key or "config", str(err).splitlines()[0]) from None
    sections = {}
    for name in RootConfig.__dataclass_fields__:
        try:
            sections[name] = OmegaConf.to_object(merged[name])
        except ConfigError as err:
            raise err.under(name) from None
        except OmegaConfBaseException as err:
            raise ConfigError(f"{name}.{err.full_key}", str(err).splitlines()[0]) from None
    return RootConfig(**sections)


def to_yaml(cfg: RootConfig) -> str:
    """The resolved configuration, as saved beside every run for reproduction."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
