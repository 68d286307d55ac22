from megatron_video.config.errors import ConfigError, require

__all__ = ["ConfigError", "require"]
