"""Union filesystem drivers behind one interface: overlayfs and aufs.

Each driver knows how to build mount(2) data for a stack of branches, and how
its on-disk markers look: a whiteout (a name hidden from lower branches) and
an opaque directory (a directory whose lower counterparts are not merged).

    overlay  whiteout: NAME as a 0/0 character device
             opaque:   xattr trusted.overlay.opaque="y" on the upper directory
    aufs     whiteout: .wh.NAME, a regular file (hardlinked to .wh..wh.aufs
                       when aufs made it)
             opaque:   .wh..wh..opq inside the directory
"""

from __future__ import annotations

import errno
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Union

from . import sysapi

PathLike = Union[str, "os.PathLike[str]"]

OVERLAY_SUPER_MAGIC = 0x794C7630
AUFS_SUPER_MAGIC = 0x61756673

AUFS_WH_PFX = ".wh."
AUFS_WH_BASE = ".wh..wh.aufs"
AUFS_WH_DIROPQ = ".wh..wh..opq"
AUFS_WH_PLINKDIR = ".wh..wh.plnk"
AUFS_WH_ORPHDIR = ".wh..wh.orph"
AUFS_WH_MODE = 0o444
AUFS_MAX_NAMELEN = 242
AUFS_ROOT_INO = 2

OVL_OPAQUE_XATTR = "trusted.overlay.opaque"

# Characters that separate branches or options in the mount data of either
# driver; the suite never needs them in a branch path, so refuse them early.
_FORBIDDEN_IN_PATHS = (",", ":", "=", "\\")


class Branch(NamedTuple):
    """A branch directory and the permission string aufs gives it (rw, ro, ro+wh...)."""

    path: Path
    perm: str = "ro"


def as_branch(value: Branch | PathLike, default_perm: str) -> Branch:
    if isinstance(value, Branch):
        return value
    return Branch(Path(os.fspath(value)), default_perm)


def _checked(path: Path) -> str:
    text = os.fspath(path)
    bad = [c for c in _FORBIDDEN_IN_PATHS if c in text]
    if bad:
        raise ValueError(f"branch path {text!r} contains {bad!r}, which mount data cannot carry")
    if not os.path.isabs(text):
        raise ValueError(f"branch path {text!r} must be absolute")
    return text


class Mount:
    """A union mount made by a driver; umount() is idempotent."""

    def __init__(
        self,
        driver: UnionDriver,
        target: Path,
        data: str,
        upper: Branch | None,
        lowers: Sequence[Branch],
        *,
        options: Sequence[str] = (),
        flags: int = 0,
    ) -> None:
        self.driver = driver
        self.options = list(options)
        self.flags = flags
        self.target = target
        self.data = data
        self.upper = upper
        self.lowers = list(lowers)
        self.mounted = True

    def remount(self, data: str, flags: int = 0) -> None:
        sysapi.mount(
            self.driver.source, self.target, self.driver.fstype, sysapi.MS_REMOUNT | flags, data
        )

    def umount(self, detach: bool = False) -> None:
        if self.mounted:
            self.driver.umount(self, detach=detach)

    def proc_mounts(self) -> str | None:
        return sysapi.proc_mounts_line(self.target)

    def __repr__(self) -> str:
        return f"<{self.driver.name} mount {self.target} data={self.data!r}>"


class UnionDriver(ABC):
    name: str
    fstype: str
    source: str
    statfs_magic: int
    #: True when opening a lower file for writing copies it up at once
    #: (overlayfs); False when the copy-up waits for the first write (aufs).
    copy_up_at_open_for_write: bool
    #: human-readable forms, used in failure messages
    whiteout_form: str
    opaque_form: str

    def available(self) -> bool:
        return self.fstype in sysapi.filesystems()

    def unavailable_reason(self) -> str:
        return f"{self.fstype} not in /proc/filesystems"

    @abstractmethod
    def render_data(
        self, upper: Branch | None, lowers: Sequence[Branch], options: Sequence[str] = ()
    ) -> str:
        """The mount(2) data string for this stack of branches (pure, no I/O)."""

    def prepare(self, upper: Branch | None) -> None:  # noqa: B027 - optional hook
        """Create whatever the driver needs next to the branches before mounting."""

    def mount(
        self,
        target: PathLike,
        upper: Branch | PathLike | None,
        lowers: Sequence[Branch | PathLike],
        options: Sequence[str] = (),
        flags: int = 0,
    ) -> Mount:
        up = as_branch(upper, "rw") if upper is not None else None
        lows = [as_branch(low, "ro") for low in lowers]
        data = self.render_data(up, lows, options)
        self.prepare(up)
        tgt = Path(os.fspath(target))
        sysapi.mount(self.source, tgt, self.fstype, flags, data)
        return Mount(self, tgt, data, up, lows, options=options, flags=flags)

    def umount(self, mnt: Mount, detach: bool = False) -> None:
        sysapi.umount(mnt.target, sysapi.MNT_DETACH if detach else 0)
        mnt.mounted = False

    # --- on-disk markers ---

    @abstractmethod
    def whiteout_path(self, branch_dir: PathLike, name: str) -> Path:
        """Where this driver keeps the whiteout for name inside branch_dir."""

    @abstractmethod
    def is_whiteout(self, branch_dir: PathLike, name: str) -> bool: ...

    @abstractmethod
    def make_whiteout(self, branch_dir: PathLike, name: str) -> None: ...

    @abstractmethod
    def is_opaque(self, directory: PathLike) -> bool: ...

    @abstractmethod
    def make_opaque(self, directory: PathLike) -> None: ...

    def metadata_names(self) -> frozenset[str]:
        """Names the driver keeps at the root of a writable branch for itself."""
        return frozenset()

    def is_internal_name(self, name: str) -> bool:
        """True for names a readdir through the union must never return."""
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


class OverlayDriver(UnionDriver):
    name = "overlay"
    fstype = "overlay"
    source = "overlay"
    statfs_magic = OVERLAY_SUPER_MAGIC
    copy_up_at_open_for_write = True
    whiteout_form = "a character device 0/0 named NAME"
    opaque_form = f'xattr {OVL_OPAQUE_XATTR}="y"'

    @staticmethod
    def workdir_for(upper: Path) -> Path:
        """overlayfs needs an empty workdir on the upper filesystem; keep it beside upper."""
        return upper.parent / (upper.name + "-work")

    def render_data(
        self, upper: Branch | None, lowers: Sequence[Branch], options: Sequence[str] = ()
    ) -> str:
        if not lowers:
            raise ValueError("overlayfs needs at least one lower layer")
        parts = ["lowerdir=" + ":".join(_checked(low.path) for low in lowers)]
        if upper is not None:
            parts.append("upperdir=" + _checked(upper.path))
            parts.append("workdir=" + _checked(self.workdir_for(upper.path)))
        parts.extend(options)
        return ",".join(parts)

    def prepare(self, upper: Branch | None) -> None:
        if upper is not None:
            self.workdir_for(upper.path).mkdir(exist_ok=True)

    def whiteout_path(self, branch_dir: PathLike, name: str) -> Path:
        return Path(os.fspath(branch_dir)) / name

    def is_whiteout(self, branch_dir: PathLike, name: str) -> bool:
        st = _lstat(self.whiteout_path(branch_dir, name))
        return st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)

    def make_whiteout(self, branch_dir: PathLike, name: str) -> None:
        os.mknod(self.whiteout_path(branch_dir, name), stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def is_opaque(self, directory: PathLike) -> bool:
        try:
            return os.getxattr(directory, OVL_OPAQUE_XATTR, follow_symlinks=False) == b"y"
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.ENOENT):
                return False
            raise

    def make_opaque(self, directory: PathLike) -> None:
        os.setxattr(directory, OVL_OPAQUE_XATTR, b"y", follow_symlinks=False)

    def is_internal_name(self, name: str) -> bool:
        return False

    @staticmethod
    def module_param(name: str) -> str | None:
        try:
            return Path(f"/sys/module/overlay/parameters/{name}").read_text().strip()
        except OSError:
            return None


class AufsDriver(UnionDriver):
    name = "aufs"
    fstype = "aufs"
    source = "none"
    statfs_magic = AUFS_SUPER_MAGIC
    copy_up_at_open_for_write = False
    whiteout_form = f"a regular file .wh.NAME (mode 0444, hardlink of {AUFS_WH_BASE})"
    opaque_form = f"a regular file {AUFS_WH_DIROPQ} inside the directory"

    def unavailable_reason(self) -> str:
        return (
            "aufs not in /proc/filesystems: boot an aufs kernel "
            "(aufs-harness run --kernel ... --aufs-src ...)"
        )

    def render_data(
        self, upper: Branch | None, lowers: Sequence[Branch], options: Sequence[str] = ()
    ) -> str:
        branches = ([upper] if upper is not None else []) + list(lowers)
        if not branches:
            raise ValueError("aufs needs at least one branch")
        for br in branches:
            if not br.perm or any(c in br.perm for c in _FORBIDDEN_IN_PATHS):
                raise ValueError(f"bad aufs branch permission {br.perm!r}")
        br_opt = "br=" + ":".join(f"{_checked(br.path)}={br.perm}" for br in branches)
        return ",".join([br_opt, *options])

    def whiteout_path(self, branch_dir: PathLike, name: str) -> Path:
        return Path(os.fspath(branch_dir)) / (AUFS_WH_PFX + name)

    def is_whiteout(self, branch_dir: PathLike, name: str) -> bool:
        st = _lstat(self.whiteout_path(branch_dir, name))
        return st is not None and stat.S_ISREG(st.st_mode)

    def make_whiteout(self, branch_dir: PathLike, name: str) -> None:
        # A plain 0444 regular file, as in the layer tarballs Docker unpacked:
        # aufs treats any regular .wh.NAME as a whiteout.
        path = self.whiteout_path(branch_dir, name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, AUFS_WH_MODE)
        os.close(fd)
        os.chmod(path, AUFS_WH_MODE)

    def is_opaque(self, directory: PathLike) -> bool:
        st = _lstat(Path(os.fspath(directory)) / AUFS_WH_DIROPQ)
        return st is not None and stat.S_ISREG(st.st_mode)

    def make_opaque(self, directory: PathLike) -> None:
        path = Path(os.fspath(directory)) / AUFS_WH_DIROPQ
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, AUFS_WH_MODE)
        os.close(fd)
        os.chmod(path, AUFS_WH_MODE)

    def metadata_names(self) -> frozenset[str]:
        return frozenset({AUFS_WH_BASE, AUFS_WH_PLINKDIR, AUFS_WH_ORPHDIR})

    def is_internal_name(self, name: str) -> bool:
        return name.startswith(AUFS_WH_PFX)


DRIVERS: dict[str, UnionDriver] = {d.name: d for d in (OverlayDriver(), AufsDriver())}
