"""Driver-aware expectations that return a description of what is wrong (or None).

Tests assert `problem is None` with lab.explain(...) so that a failure names the
branch, the expected on-disk form and what was found, followed by the listings.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import evidence
from .drivers import AUFS_WH_BASE, AUFS_WH_MODE


def whiteout_problem(
    driver_name: str, directory: Path, name: str, base_root: Path | None = None
) -> str | None:
    """What is wrong with the whiteout for name in branch directory `directory`.

    aufs: `.wh.NAME` a regular file, size 0, mode 0444, and (when base_root is
    given and holds the whiteout base) the same inode as base_root/.wh..wh.aufs;
    NAME itself must be gone from the branch.
    overlay: NAME is a character device 0/0.
    """
    if driver_name == "aufs":
        wh = directory / (".wh." + name)
        try:
            st = wh.lstat()
        except FileNotFoundError:
            return f"{wh.name} absent"
        bad = []
        if not stat.S_ISREG(st.st_mode):
            bad.append("not a regular file")
        if st.st_size != 0:
            bad.append(f"size {st.st_size}")
        if stat.S_IMODE(st.st_mode) != AUFS_WH_MODE:
            bad.append(f"mode {stat.S_IMODE(st.st_mode):04o}")
        if base_root is not None:
            base = base_root / AUFS_WH_BASE
            try:
                bst = base.lstat()
            except FileNotFoundError:
                bad.append(f"{AUFS_WH_BASE} absent from the branch root")
            else:
                if (bst.st_dev, bst.st_ino) != (st.st_dev, st.st_ino):
                    bad.append(f"not a hardlink of {AUFS_WH_BASE} (ino {st.st_ino}/{bst.st_ino})")
        if os.path.lexists(directory / name):
            bad.append(f"{name} itself still present: {evidence.describe(directory / name)}")
        return f"{wh.name}: " + ", ".join(bad) if bad else None
    p = directory / name
    try:
        st = p.lstat()
    except FileNotFoundError:
        return f"{name} absent"
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(0, 0):
        return f"{name} is not a 0/0 character device: {evidence.describe(p)}"
    return None


def no_whiteout_problem(driver_name: str, directory: Path, name: str) -> str | None:
    """What is wrong if the branch directory holds a whiteout (of any form) for name."""
    wh = directory / (".wh." + name) if driver_name == "aufs" else directory / name
    try:
        st = wh.lstat()
    except FileNotFoundError:
        return None
    if driver_name == "aufs" or stat.S_ISCHR(st.st_mode):
        return f"whiteout present: {wh.name}: {evidence.describe(wh)}"
    return None
