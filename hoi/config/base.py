"""The configuration's errors, and the check every section's __post_init__ makes."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be built: unknown key, wrong type or an impossible value."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
