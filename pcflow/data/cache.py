"""Where generated data lives: pcflow's per-user cache folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pcflow.data.synthetic import SyntheticConfig

__all__ = ["LEGACY_CACHE", "cache_dir", "synthetic_root"]

LEGACY_CACHE = Path(".pcflow_cache")
"""The folder, under the current directory, where pcflow's development versions generated the
synthetic dataset (``.pcflow_cache/synthetic``); a dataset there is still read where it matches."""


def cache_dir() -> Path:
    """pcflow's per-user cache folder: ``$PCFLOW_CACHE_DIR`` if set (the variable that also
    places the native kernels), else ``$XDG_CACHE_HOME/pcflow``, else ``~/.cache/pcflow``.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict("os.environ", {"PCFLOW_CACHE_DIR": "/data/cache"}):
        ...     print(cache_dir().as_posix())
        /data/cache
    """
    if os.environ.get("PCFLOW_CACHE_DIR"):
        return Path(os.environ["PCFLOW_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "pcflow"


def synthetic_root(config: SyntheticConfig | None = None) -> Path:
    """The default folder of the synthetic dataset that ``config`` generates.

    ``cache_dir() / "synthetic" / config.fingerprint()``: one folder per config, so datasets of
    different configs (the image dataset, `pcflow.data.SYNTHETIC_POINTS`) live side by side
    and each is generated once per user, whatever the current directory. A folder of
    `LEGACY_CACHE` (``.pcflow_cache/synthetic`` first) that already holds the same dataset
    (same fingerprint) is returned instead, so it is not generated again.

    Arguments:
        config: The dataset's config; ``None`` for the default `SyntheticConfig`.

    Example:
        >>> from pcflow.data import SYNTHETIC_POINTS, SyntheticConfig
        >>> synthetic_root(SYNTHETIC_POINTS) != synthetic_root(SyntheticConfig())
        True
    """
    fingerprint = (config or SyntheticConfig()).fingerprint()
    if LEGACY_CACHE.is_dir():
        legacy = sorted(LEGACY_CACHE.iterdir(), key=lambda path: path.name != "synthetic")
        for folder in legacy:
            if _fingerprint(folder / "manifest.json") == fingerprint:
                return folder
    return cache_dir() / "synthetic" / fingerprint


def _fingerprint(manifest: Path) -> str | None:
    """The fingerprint a synthetic dataset's manifest records; ``None`` if there is none."""
    try:
        value = json.loads(manifest.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None  # not a dataset of ours, or an unreadable one: not a match
    return value if isinstance(value, str) else None
