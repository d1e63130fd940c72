"""One error type for bad configs and inputs, so the CLI can print one clear line.

Every check names the key, the value it got and what would be valid; `ConfigError.under`
prefixes the config group (``cell``, ``data``, ...) when a group schema raised it.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r}: {expected}")

    def under(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}", self.value, self.expected)


def require_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(key, value, "choose one of " + ", ".join(map(str, choices)))


def require_int(key: str, value: Any, low: int) -> None:
    """An integer (not a bool) >= low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"must be an integer >= {low}")


def require_positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(key, value, "must be a number > 0")


def require_range(key: str, value: Any, low: float, high: float) -> None:
    """Closed interval [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(key, value, f"must be a number in [{low}, {high}]")


class SweepInterrupted(RuntimeError):
    """A sweep stopped before every trial finished (its summary marks them 'unfinished')."""
