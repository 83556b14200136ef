"""Where the harness keeps caches, VM state and results (XDG, never the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "aufs-harness"


def cache_dir() -> Path:
    """Images, kernels, wheels: large, reusable, safe to delete."""
    override = os.environ.get("AUFS_HARNESS_CACHE")
    path = Path(override) if override else Path(platformdirs.user_cache_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Running VMs (pid, ports, keys): small, per user."""
    override = os.environ.get("AUFS_HARNESS_STATE")
    path = Path(override) if override else Path(platformdirs.user_state_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """The run history (history.sqlite): small, per user, not a cache to clear."""
    override = os.environ.get("AUFS_HARNESS_DATA")
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP))
    path.mkdir(parents=True, exist_ok=True)
    return path
