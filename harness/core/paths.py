"""Where the harness keeps caches, VM state and results (XDG, never the repo)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
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


def disk_full(target: Path, what: str, results: Path | None = None, kept: bool = True) -> str:
    """One line for a full disk: which of the harness's directories (cache,
    state, results) holds `target`, what is free there and the fix. `what`:
    "no space left" or "quota exceeded"; `kept`: say that nothing half-written
    was kept (the harness removed it), False when the writer was not ours."""
    target = target.resolve()
    places = [("cache", cache_dir()), ("state", state_dir())]
    if results is not None:
        places.append(("results", results))
    name, where = next(
        ((n, d.resolve()) for n, d in places if target.is_relative_to(d.resolve())),
        ("", target if target.is_dir() else target.parent),
    )
    try:
        free = shutil.disk_usage(where).free >> 20
    except OSError:
        free = -1
    label = f"the {name} directory {where}" if name else str(where)
    return (
        f"{label} is full ({what}, {free} MB free) while writing {target}: "
        "free space there or point the harness elsewhere (AUFS_HARNESS_CACHE, "
        "AUFS_HARNESS_STATE, --results)" + ("; nothing half-written was kept" if kept else "")
    )


def fullest(candidates: Sequence[str], below_mb: int = 64) -> Path | None:
    """Of the paths a child was given (its argv, its cwd), the first that exists
    (itself or its parent) on a filesystem with less than `below_mb` MB free:
    where a child that said "No space left on device" was writing."""
    for raw in candidates:
        if not raw.startswith("/"):
            continue
        path = Path(raw)
        for where in (path, path.parent):
            try:
                if shutil.disk_usage(where).free >> 20 < below_mb:
                    return path
            except OSError:
                continue
    return None
