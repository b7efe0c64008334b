"""One search space per model family, from the seed documents in ``shared/seeds``."""

from __future__ import annotations

from search.errors import UserError
from spaces import cnn, fcn, ffn, gap_cnn
from spaces.base import Budget, Config, InvalidArchitecture, Space

SPACES: dict[str, Space] = {module.SPACE.name: module.SPACE for module in (ffn, fcn, cnn, gap_cnn)}


def get_space(name: str) -> Space:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"unknown space {name!r}; choose one of: {', '.join(SPACES)}") from None


__all__ = ["SPACES", "Budget", "Config", "InvalidArchitecture", "Space", "get_space"]
