"""Errors that mean "the user's input is wrong": the command line prints their message as one line, exit status 2."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad key or value in a recipe or an override; the message names the key and what is allowed."""


def require(ok: bool, key: str, rule: str, value: Any) -> None:
    """Raise ConfigError('<key> <rule>, got <value>') unless ``ok``: every config check reads the same way."""
    if not ok:
        raise ConfigError(f"{key} {rule}, got {value!r}")


__all__ = ["ConfigError", "require"]
