"""Work trees: patched, configured, built kernel trees kept for incremental rebuilds.

Each one is a gigabyte or more (the objects of a whole kernel build), and a
kernel matrix makes a new one per kernel version and aufs commit. The built
artifacts live in the store either way, so only the most recently used few
trees are kept; losing one costs a rebuild (mostly ccache hits), never a result.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from harness.core.errors import UserError

log = logging.getLogger(__name__)

KEEP_ENV = "AUFS_HARNESS_KEEP_WORK_TREES"
DEFAULT_KEEP = 3
_STAMP = ".last-used"


def keep_count() -> int:
    raw = os.environ.get(KEEP_ENV, str(DEFAULT_KEEP))
    try:
        keep = int(raw)
    except ValueError:
        keep = -1
    if keep < 1:
        raise UserError(f"{KEEP_ENV}={raw!r}: give how many kernel work trees to keep (1 or more)")
    return keep


def lock_path(work: Path) -> Path:
    """The lock a run holds while it prepares or builds in `work`."""
    return Path(str(work) + ".lock")


def lock(work: Path) -> FileLock:
    return FileLock(str(lock_path(work)))


def last_used(work: Path) -> float:
    stamp = work / _STAMP
    return (stamp if stamp.exists() else work).stat().st_mtime


def mark_used(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / _STAMP).touch()


def prune(root: Path, keep: int, current: Path) -> list[Path]:
    """Remove all but the `keep` most recently used trees under root (counting
    `current`, which stays); a tree another run holds is left alone."""
    trees = [p for p in root.iterdir() if p.is_dir() and p != current]
    trees.sort(key=last_used, reverse=True)
    removed = []
    for old in trees[max(keep - 1, 0) :]:
        held = lock(old)
        try:
            held.acquire(timeout=0)
        except Timeout:
            continue  # being built by another run right now
        try:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
        finally:
            held.release()
    if removed:
        log.info(
            "kmod: removed %d least recently used work tree(s), keeping %d (%s): %s",
            len(removed), keep, KEEP_ENV, ", ".join(p.name for p in removed),
        )  # fmt: skip
    return removed
