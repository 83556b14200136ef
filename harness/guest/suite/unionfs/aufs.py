"""aufs specifics: version keys, module parameters, the si_* sysfs view of a mount.

Expectations that changed between aufs releases are keyed by the loaded
module's AUFS_VERSION (/sys/module/aufs/version), e.g. "5.10.140-20230828",
"6.10-20240923" or "6.x-rcN-20241021" (the development branch, treated as
newer than every numbered 6.y).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
from pathlib import Path

from . import sysapi

SYSFS_AUFS = Path("/sys/fs/aufs")
PLINK_MAINT = Path("/proc/fs/aufs/plink_maint")
XINO_FNAME = ".aufs.xino"
XINO_DEFPATH = "/tmp/.aufs.xino"
MFS_MAX_SEC = 3600
RDCACHE_MAX = 3600
#: option values aufs does not print in /proc/mounts
DEFAULTS = {
    "udba": "reval",
    "create": "tdp",
    "cpup": "tdp",
    "diropq": "w",
    "dirwh": "3",
    "rdcache": "10",
    "rdblk": "512",
    "rdhash": "32",
}


def version_string() -> str | None:
    try:
        return Path("/sys/module/aufs/version").read_text().strip()
    except OSError:
        return None


def version_key(text: str | None = None) -> tuple[int, int]:
    """(major, minor) of an AUFS_VERSION; 'x' (as in 6.x-rcN) sorts above any number."""
    text = version_string() if text is None else text
    m = re.match(r"(\d+)\.(\d+|x)", text or "")
    if not m:
        return (0, 0)
    return (int(m.group(1)), 999 if m.group(2) == "x" else int(m.group(2)))


def dio_is_default(text: str | None = None) -> bool:
    """aufs6.10 made `dio` a default and `nodio` an ignored option."""
    return version_key(text) >= (6, 10)


def release_date(text: str | None = None) -> int:
    """The YYYYMMDD release date at the end of an AUFS_VERSION (0 when absent)."""
    text = version_string() if text is None else text
    m = re.search(r"-(\d{8})$", text or "")
    return int(m.group(1)) if m else 0


def copies_can_odirect(text: str | None = None) -> bool:
    """Releases from 20240624 on (aufs-standalone commit 973f58b3, 2024-06-18,
    'Partially restore "aufs: bugfix, copy FMODE_CAN_ODIRECT"') copy the branch
    file's FMODE_CAN_ODIRECT into the aufs file in ->open(), so open(O_DIRECT)
    succeeds whenever the branch allows it, with or without `dio`."""
    return version_key(text) >= (6, 0) and release_date(text) >= 20240624


def module_param(name: str) -> str | None:
    try:
        return Path(f"/sys/module/aufs/parameters/{name}").read_text().strip()
    except OSError:
        return None


def is_module() -> bool:
    """True for a loadable aufs.ko (built-in modules have no initstate)."""
    return Path("/sys/module/aufs/initstate").exists()


def kernel_config() -> dict[str, str]:
    """CONFIG_AUFS_* from /sys/fs/aufs/config (module), else the kernel's own config."""
    texts = []
    try:
        texts.append((SYSFS_AUFS / "config").read_text())
    except OSError:
        try:
            with gzip.open("/proc/config.gz", "rt") as fh:
                texts.append(fh.read())
        except OSError:
            with contextlib.suppress(OSError):
                texts.append(Path(f"/boot/config-{os.uname().release}").read_text())
    conf = {}
    for text in texts:
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key.startswith("CONFIG_AUFS"):
                conf[key] = value
    return conf


def mount_options(target: Path) -> list[str]:
    """The comma-separated options /proc/mounts shows for target."""
    line = sysapi.proc_mounts_line(target)
    if line is None:
        return []
    fields = line.split(" ")
    return fields[3].split(",") if len(fields) > 3 else []


def si_of(target: Path) -> str:
    for opt in mount_options(target):
        if opt.startswith("si="):
            return opt[3:]
    raise LookupError(f"no si= in /proc/mounts for {target}")


def si_dir(target: Path) -> Path:
    return SYSFS_AUFS / f"si_{si_of(target)}"


def sysfs_branches(target: Path) -> list[str]:
    """'path=perm' of br0, br1, ... from /sys/fs/aufs/si_<id>/."""
    d = si_dir(target)
    out = []
    i = 0
    while (d / f"br{i}").exists():
        out.append((d / f"br{i}").read_text().rstrip("\n"))
        i += 1
    return out


def branches(target: Path) -> list[str]:
    """'path=perm' of every branch: from sysfs when brs=1, else from /proc/mounts' br:."""
    if module_param("brs") == "0":
        for opt in mount_options(target):
            if opt.startswith("br:"):
                return opt[3:].split(":")
        return []
    return sysfs_branches(target)
