"""One-line errors for a setting outside its choices, worded alike everywhere."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def check_one_of(name: str, value: Any, choices: Collection) -> None:
    """Raises ``ValueError("<name> must be one of <choices>, got <value>")`` unless ``value`` is a choice."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
