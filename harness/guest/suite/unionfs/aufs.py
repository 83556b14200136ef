"""aufs specifics: version keys, module parameters, the si_* sysfs view of a mount.

Expectations that changed between aufs releases are keyed by the loaded
module's AUFS_VERSION (/sys/module/aufs/version), e.g. "5.10.140-20230828",
"6.10-20240923" or "6.x-rcN-20241021" (the development branch, treated as
newer than every numbered 6.y).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gzip
import os
import re
import struct
from pathlib import Path
from typing import NamedTuple

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


# --- ioctls of include/uapi/linux/aufs_type.h (the same in aufs5.10 and aufs6.x) ---


def _iowr(nr: int, size: int, direction: int = 3) -> int:
    """_IOC(direction, AuCtlType 'A', nr, size); direction 3 = read|write, 1 = write."""
    return (direction << 30) | (size << 16) | (ord("A") << 8) | nr


#: struct aufs_rdu on x86_64 (aufs_type.h, __aligned(8)): sz, ent, verify[1], blk,
#: tail, rent, full, shwh, then struct au_rdu_cookie {h_pos, bindex, flags, pad,
#: generation} at offset 48: 64 bytes. au_rdu_verify() wants verify[0] == 64.
_RDU = struct.Struct("=QQH2xIQQBB6xQhBBI")
RDU_SIZE = _RDU.size
AUFS_CTL_RDU = _iowr(0, RDU_SIZE)  # AuCtl_RDU
AUFS_CTL_RDU_INO = _iowr(1, RDU_SIZE)  # AuCtl_RDU_INO
AUFS_CTL_FHSM_FD = _iowr(6, 4, direction=1)  # _IOW(AuCtlType, AuCtl_FHSM_FD, int)
#: struct au_rdu_ent: ino, bindex, type, nlen, wh, then name[] at offset 13
_RDU_ENT = struct.Struct("=QhBBB")


def rdu_len(nlen: int) -> int:
    """au_rdu_len(): sizeof(struct au_rdu_ent) 16 + name + NUL, aligned to 8."""
    return (16 + nlen + 1 + 7) & ~7


class RduEntry(NamedTuple):
    """One entry AUFS_CTL_RDU copied out: the branch's inode number, the branch
    index it came from, d_type, the name as on the branch (whiteouts included)."""

    ino: int
    bindex: int
    d_type: int
    name: str


class RduCall(NamedTuple):
    """The struct aufs_rdu after one AUFS_CTL_RDU call and the entries it filled."""

    entries: list[RduEntry]
    rent: int
    full: int
    shwh: int
    blk: int
    cookie: tuple[int, int, int, int]  # h_pos, bindex, flags, generation


class Rdu:
    """Readdir in user space (aufs(5) "rdu", CONFIG_AUFS_RDU, fs/aufs/rdu.c) on an
    open union directory, as aufs-util's libau does it: repeated AUFS_CTL_RDU calls
    with a buffer of `size` bytes, the cookie carried from call to call."""

    def __init__(self, dir_fd: int, size: int = 64 * 1024, blk: int = 0) -> None:
        self.fd = dir_fd
        self.buf = ctypes.create_string_buffer(size)
        self.size = size
        self.blk = blk
        self.cookie = (0, 0, 0, 0)

    def call(self, verify: int = RDU_SIZE) -> RduCall:
        """One AUFS_CTL_RDU; OSError with its errno (EINVAL for a wrong verify size,
        ENOTTY on a non-directory)."""
        h_pos, bindex, flags, gen = self.cookie
        addr = ctypes.addressof(self.buf)
        arg = bytearray(
            _RDU.pack(self.size, addr, verify, self.blk, 0, 0, 0, 0, h_pos, bindex, flags, 0, gen)
        )
        fcntl.ioctl(self.fd, AUFS_CTL_RDU, arg, True)
        (_sz, _ent, _v, blk, _tail, rent, full, shwh, h_pos, bindex, flags, _pad, gen) = (
            _RDU.unpack(bytes(arg))
        )
        self.cookie = (h_pos, bindex, flags, gen)
        entries = []
        off = 0
        raw = self.buf.raw
        for _ in range(rent):
            ino, b, d_type, nlen, _wh = _RDU_ENT.unpack_from(raw, off)
            name = raw[off + 13 : off + 13 + nlen].decode(errors="surrogateescape")
            entries.append(RduEntry(ino, b, d_type, name))
            off += rdu_len(nlen)
        return RduCall(entries, rent, full, shwh, blk, self.cookie)

    def all(self, limit: int = 1000) -> tuple[list[RduEntry], list[RduCall]]:
        """Calls until one returns without filling the buffer (rdu.c au_rdu(): a call
        goes on through every branch until the buffer is full): every entry, every call."""
        calls: list[RduCall] = []
        entries: list[RduEntry] = []
        for _ in range(limit):
            got = self.call()
            calls.append(got)
            entries += got.entries
            if not got.full:
                break
        return entries, calls

    def inos(self, entries: list[RduEntry]) -> list[int]:
        """AUFS_CTL_RDU_INO over these entries (wh=0): the union's inode number of each
        (rdu.c au_rdu_ino() -> au_ino(), the xino translation)."""
        blob = bytearray()
        for e in entries:
            name = e.name.encode(errors="surrogateescape")
            rec = _RDU_ENT.pack(e.ino, e.bindex, e.d_type, len(name), 0) + name + b"\0"
            blob += rec + b"\0" * (rdu_len(len(name)) - len(rec))
        buf = ctypes.create_string_buffer(bytes(blob), max(len(blob), 1))
        arg = bytearray(
            _RDU.pack(len(entries), ctypes.addressof(buf), RDU_SIZE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        )
        fcntl.ioctl(self.fd, AUFS_CTL_RDU_INO, arg, True)
        out = []
        off = 0
        for e in entries:
            out.append(struct.unpack_from("=Q", buf.raw, off)[0])
            off += rdu_len(len(e.name.encode(errors="surrogateescape")))
        return out


def fhsm_fd(dir_fd: int, oflags: int = 0) -> int:
    """ioctl AUFS_CTL_FHSM_FD (the FHSM daemon's connection); an fd, or OSError."""
    return fcntl.ioctl(dir_fd, AUFS_CTL_FHSM_FD, oflags)
