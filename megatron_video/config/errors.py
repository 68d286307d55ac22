"""The one error type for bad configuration: it names the dotted key at fault."""


class ConfigError(ValueError):
    """A configuration value is unknown, missing or out of range.

    Raised before any work starts; `key` is the dotted path a user would type as an override
    (`train.steps=...`), so the message tells them exactly what to fix.
    """

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config key '{key}': {problem}")

    def under(self, section: str) -> "ConfigError":
        """The same error with its key prefixed by the enclosing section name."""
        return ConfigError(f"{section}.{self.key}", self.problem)


def require(condition: bool, key: str, problem: str) -> None:
    """Raise ConfigError(key, problem) unless condition holds (for dataclass __post_init__ checks)."""
    if not condition:
        raise ConfigError(key, problem)
