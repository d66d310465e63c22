"""Where autoprune caches what it measures or trains once: checkpoints, latency tables."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$AUTOPRUNE_CACHE`` or ``~/.cache/autoprune``."""
    return Path(os.environ.get("AUTOPRUNE_CACHE", Path.home() / ".cache" / "autoprune"))
