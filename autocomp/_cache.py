"""The cache folder (``$AUTOCOMP_CACHE``, default ``~/.cache/autocomp``): trained teachers, downloads."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOCOMP_CACHE", Path.home() / ".cache" / "autocomp"))
