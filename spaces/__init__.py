"""One search space per model family, from the seed documents in ``shared/seeds``, plus the spaces
users bring: ``package.module:NAME`` or a ``mnist_search.spaces`` entry point (docs/spaces.md)."""

from __future__ import annotations

from spaces.base import Budget, Config, InvalidArchitecture, Space
from spaces.registry import BUILT_IN, ENTRY_POINT_GROUP, get_space, known_names, recorded_space, source

SPACES = BUILT_IN  # the built-in families, by name

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "SPACES",
    "Budget",
    "Config",
    "InvalidArchitecture",
    "Space",
    "get_space",
    "known_names",
    "recorded_space",
    "source",
]
