"""Thin ctypes/ioctl wrappers: mount(2), umount2(2), statfs(2), readdir(3), loop devices.

mount(2) is issued directly so that an installed /sbin/mount.<type> helper can
neither rewrite the options nor turn an errno into a generic exit status.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import struct
import time
from pathlib import Path
from typing import NamedTuple

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)

_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_FORCE = 1
MNT_DETACH = 2


def _enc(value: str | os.PathLike[str] | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(os.fspath(value))


def _raise_errno(call: str, target: object, detail: str = "") -> None:
    err = ctypes.get_errno()
    msg = f"{call}({target}{detail}): {os.strerror(err)} ({errno.errorcode.get(err, err)})"
    raise OSError(err, msg)


def mount(
    source: str,
    target: str | os.PathLike[str],
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2); raises OSError carrying the kernel's errno."""
    data_b = _enc(data)
    buf = ctypes.create_string_buffer(data_b) if data_b is not None else None
    rc = _libc.mount(_enc(source), _enc(target), _enc(fstype), flags, buf)
    if rc != 0:
        _raise_errno("mount", f"{source!r}, {os.fspath(target)!r}, {fstype!r}", f", {data!r}")


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2); raises OSError carrying the kernel's errno."""
    if _libc.umount2(_enc(target), flags) != 0:
        _raise_errno("umount2", repr(os.fspath(target)), f", {flags}")


_libc.unshare.argtypes = [ctypes.c_int]
_libc.unshare.restype = ctypes.c_int


def unshare(flags: int) -> None:
    """unshare(2) (os.unshare exists only from Python 3.12)."""
    if _libc.unshare(flags) != 0:
        _raise_errno("unshare", hex(flags))


class _StatFs(ctypes.Structure):
    # struct statfs of 64-bit Linux (x86_64, aarch64, riscv64, ppc64le, s390x)
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_StatFs)]
_libc.statfs.restype = ctypes.c_int


class StatFs(NamedTuple):
    f_type: int
    f_bsize: int
    f_blocks: int
    f_bfree: int
    f_files: int
    f_ffree: int
    f_namelen: int


def statfs(path: str | os.PathLike[str]) -> StatFs:
    buf = _StatFs()
    if _libc.statfs(_enc(path), ctypes.byref(buf)) != 0:
        _raise_errno("statfs", repr(os.fspath(path)))
    return StatFs(
        f_type=buf.f_type & 0xFFFFFFFF,
        f_bsize=buf.f_bsize,
        f_blocks=buf.f_blocks,
        f_bfree=buf.f_bfree,
        f_files=buf.f_files,
        f_ffree=buf.f_ffree,
        f_namelen=buf.f_namelen,
    )


# --- readdir(3): the d_type the filesystem reports, which os.scandir hides ---


class _Dirent(ctypes.Structure):
    # struct dirent of glibc on 64-bit Linux
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.closedir.argtypes = [ctypes.c_void_p]
_libc.closedir.restype = ctypes.c_int

DT_NAMES = {
    0: "DT_UNKNOWN",
    1: "DT_FIFO",
    2: "DT_CHR",
    4: "DT_DIR",
    6: "DT_BLK",
    8: "DT_REG",
    10: "DT_LNK",
    12: "DT_SOCK",
    14: "DT_WHT",
}
DT_DIR = 4
DT_REG = 8


class DirEntry(NamedTuple):
    name: str
    d_type: int
    d_ino: int

    @property
    def type_name(self) -> str:
        return DT_NAMES.get(self.d_type, str(self.d_type))


def readdir(path: str | os.PathLike[str]) -> list[DirEntry]:
    """Every entry getdents returns, including '.' and '..', in order."""
    handle = _libc.opendir(_enc(path))
    if not handle:
        _raise_errno("opendir", repr(os.fspath(path)))
    entries = []
    try:
        while True:
            ctypes.set_errno(0)
            ent = _libc.readdir(handle)
            if not ent:
                if ctypes.get_errno():
                    _raise_errno("readdir", repr(os.fspath(path)))
                break
            d = ent.contents
            entries.append(DirEntry(os.fsdecode(d.d_name), d.d_type, d.d_ino))
    finally:
        _libc.closedir(handle)
    return entries


# --- /proc/self/mountinfo ---


class MountInfo(NamedTuple):
    mount_id: int
    target: str
    fstype: str
    source: str
    options: str  # per-mount options followed by super options, as /proc/mounts shows


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo() -> list[MountInfo]:
    result = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            left, _, right = line.rstrip("\n").partition(" - ")
            lf, rf = left.split(" "), right.split(" ")
            result.append(
                MountInfo(
                    mount_id=int(lf[0]),
                    target=_unescape(lf[4]),
                    fstype=rf[0],
                    source=_unescape(rf[1]),
                    options=rf[2] if len(rf) > 2 else "",
                )
            )
    return result


def mounts_under(prefix: str | os.PathLike[str]) -> list[MountInfo]:
    root = os.fspath(prefix).rstrip("/")
    return [m for m in mountinfo() if m.target == root or m.target.startswith(root + "/")]


def proc_mounts_line(target: str | os.PathLike[str]) -> str | None:
    """The last /proc/mounts line whose mount point is target (octal escapes decoded)."""
    found = None
    with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields = line.split(" ")
            if len(fields) >= 4 and _unescape(fields[1]) == os.fspath(target):
                found = line.rstrip("\n")
    return found


def filesystems() -> set[str]:
    with open("/proc/filesystems", encoding="utf-8") as fh:
        return {line.split()[-1] for line in fh if line.strip()}


def drop_caches() -> None:
    """sync, then drop dentries, inodes and the page cache."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as fh:
        fh.write("3\n")


# --- loop devices ---

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_AUTOCLEAR = 4
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")


LOOP_CTL_ADD = 0x4C80


def _loop_candidates(ctl: int, avoid: set[int]) -> int:
    """A free loop device number outside avoid (LOOP_CTL_ADD beyond them if needed)."""
    number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
    if number not in avoid:
        return number
    candidate = max(avoid) + 1
    while True:
        try:
            return fcntl.ioctl(ctl, LOOP_CTL_ADD, candidate)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            if not os.path.exists(f"/sys/block/loop{candidate}/loop/backing_file"):
                return candidate  # exists and is unbound
            candidate += 1


def loop_attach(
    image: str | os.PathLike[str], read_only: bool = False, avoid: set[int] | None = None
) -> tuple[str, int]:
    """Bind image to a free loop device with autoclear set.

    Returns (device path, open fd). The caller keeps the fd open until the
    device is mounted, then closes it: autoclear detaches the device when its
    last user (the mount) goes away, so nothing is left behind even if the
    caller dies before its own cleanup runs.
    """
    mode = os.O_RDONLY if read_only else os.O_RDWR
    backing = os.open(os.fspath(image), mode | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _attempt in range(50):
                number = _loop_candidates(ctl, avoid or set())
                dev = f"/dev/loop{number}"
                for _wait in range(100):  # devtmpfs may lag behind LOOP_CTL_GET_FREE
                    if os.path.exists(dev):
                        break
                    time.sleep(0.01)
                fd = os.open(dev, mode | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(fd, LOOP_SET_FD, backing)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno == errno.EBUSY:  # another process took it first
                        continue
                    raise
                info = _LOOP_INFO64.pack(
                    0,
                    0,
                    0,
                    0,
                    0,
                    number,
                    0,
                    0,
                    LO_FLAGS_AUTOCLEAR,
                    os.fsencode(os.fspath(image))[:63],
                    b"",
                    b"",
                    0,
                    0,
                )
                try:
                    fcntl.ioctl(fd, LOOP_SET_STATUS64, info)
                except OSError:
                    fcntl.ioctl(fd, LOOP_CLR_FD, 0)
                    os.close(fd)
                    raise
                return dev, fd
            raise OSError(errno.EBUSY, "no free loop device after 50 attempts")
        finally:
            os.close(ctl)
    finally:
        os.close(backing)


def loop_detach(dev: str) -> None:
    """Explicit LOOP_CLR_FD; harmless (ENXIO) when autoclear already did it."""
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.ioctl(fd, LOOP_CLR_FD, 0)
    except OSError as exc:
        if exc.errno not in (errno.ENXIO, errno.EBUSY):
            raise
    finally:
        os.close(fd)


def loop_backing_file(dev: str) -> str | None:
    name = Path(dev).name
    try:
        return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
    except OSError:
        return None


# --- the new mount API (fsopen(2) ... move_mount(2), Linux 5.2+), x86_64 numbers ---

_libc.syscall.restype = ctypes.c_long
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_FSPICK = 433
FSOPEN_CLOEXEC = 0x1
FSPICK_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSCONFIG_CMD_RECONFIGURE = 7
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100


def _syscall(name: str, number: int, *args: object) -> int:
    ctypes.set_errno(0)
    rc = int(_libc.syscall(ctypes.c_long(number), *args))
    if rc < 0:
        _raise_errno(name, ", ".join(repr(a) for a in args))
    return rc


def fsopen(fstype: str) -> int:
    """fsopen(2): a filesystem context fd (close it with os.close)."""
    return _syscall("fsopen", SYS_FSOPEN, _enc(fstype), ctypes.c_uint(FSOPEN_CLOEXEC))


def fspick(path: str | os.PathLike[str]) -> int:
    """fspick(2) on a mount point: a context fd for reconfiguring its superblock."""
    return _syscall(
        "fspick", SYS_FSPICK, ctypes.c_int(AT_FDCWD), _enc(path), ctypes.c_uint(FSPICK_CLOEXEC)
    )


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    """fsconfig(2) with a string value (or none, for flags and commands)."""
    _syscall(
        "fsconfig",
        SYS_FSCONFIG,
        ctypes.c_int(fd),
        ctypes.c_uint(cmd),
        _enc(key),
        _enc(value),
        ctypes.c_int(0),
    )


def fsmount(fd: int) -> int:
    """fsmount(2): a detached mount fd of the created superblock."""
    return _syscall(
        "fsmount", SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(0)
    )


def move_mount(mount_fd: int, target: str | os.PathLike[str]) -> None:
    """move_mount(2) of a detached mount fd onto target."""
    _syscall(
        "move_mount",
        SYS_MOVE_MOUNT,
        ctypes.c_int(mount_fd),
        b"",
        ctypes.c_int(AT_FDCWD),
        _enc(target),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )


# --- mmap(2) with an address, and remap_file_pages(2) ---

_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munmap.restype = ctypes.c_int
_libc.remap_file_pages.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_size_t,
    ctypes.c_int,
]
_libc.remap_file_pages.restype = ctypes.c_int
PROT_READ = 1
PROT_WRITE = 2
MAP_SHARED = 1
MAP_PRIVATE = 2
_MAP_FAILED = ctypes.c_void_p(-1).value


def mmap_raw(fd: int, length: int, prot: int, flags: int) -> int:
    """mmap(2) of fd from offset 0; the address (mmap.mmap hides it)."""
    ctypes.set_errno(0)
    addr = _libc.mmap(None, length, prot, flags, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        _raise_errno("mmap", fd, f", {length}")
    return int(addr)


def munmap(addr: int, length: int) -> None:
    if _libc.munmap(ctypes.c_void_p(addr), length) != 0:
        _raise_errno("munmap", hex(addr))


def remap_file_pages(addr: int, size: int, pgoff: int) -> None:
    """remap_file_pages(2) (deprecated, emulated by the kernel since 4.0; the aufs
    mmap patch touches its file handling)."""
    if _libc.remap_file_pages(ctypes.c_void_p(addr), size, 0, pgoff, 0) != 0:
        _raise_errno("remap_file_pages", hex(addr), f", {size}, pgoff {pgoff}")


_libc.rewinddir.argtypes = [ctypes.c_void_p]
_libc.rewinddir.restype = None


def readdir_around(path: str | os.PathLike[str], between) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Names one open directory stream returns, then again after between() and
    rewinddir(3) on the same stream (without '.' and '..')."""
    handle = _libc.opendir(_enc(path))
    if not handle:
        _raise_errno("opendir", repr(os.fspath(path)))

    def drain() -> list[str]:
        out: list[str] = []
        while True:
            ent = _libc.readdir(handle)
            if not ent:
                return out
            name = os.fsdecode(ent.contents.d_name)
            if name not in (".", ".."):
                out.append(name)

    try:
        first = drain()
        between()
        _libc.rewinddir(handle)
        return first, drain()
    finally:
        _libc.closedir(handle)


# --- file handles: name_to_handle_at(2), open_by_handle_at(2) ---

_libc.name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
_libc.name_to_handle_at.restype = ctypes.c_int
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.open_by_handle_at.restype = ctypes.c_int
#: include/linux/exportfs.h / fcntl.h: the largest handle the kernel hands out
MAX_HANDLE_SZ = 128
_HANDLE_HEAD = struct.Struct("Ii")  # struct file_handle: handle_bytes, handle_type


class FileHandle(NamedTuple):
    """What name_to_handle_at(2) returned: the filesystem's handle type
    (aufs: 99, export.c aufs_encode_fh()), its bytes, and the mount id."""

    handle_type: int
    data: bytes
    mount_id: int


def name_to_handle_at(path: str | os.PathLike[str], flags: int = 0) -> FileHandle:
    """name_to_handle_at(AT_FDCWD, path, ...) with a MAX_HANDLE_SZ buffer; OSError
    with the call's errno (EOVERFLOW when the filesystem could not encode one)."""
    buf = ctypes.create_string_buffer(_HANDLE_HEAD.size + MAX_HANDLE_SZ)
    _HANDLE_HEAD.pack_into(buf, 0, MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    ctypes.set_errno(0)
    if _libc.name_to_handle_at(AT_FDCWD, _enc(path), buf, ctypes.byref(mount_id), flags) != 0:
        _raise_errno("name_to_handle_at", path)
    nbytes, htype = _HANDLE_HEAD.unpack_from(buf, 0)
    start = _HANDLE_HEAD.size
    return FileHandle(htype, buf.raw[start : start + nbytes], mount_id.value)


def open_by_handle_at(mount_fd: int, handle: FileHandle, flags: int = os.O_RDONLY) -> int:
    """open_by_handle_at(2) (needs CAP_DAC_READ_SEARCH): a new fd; OSError with the
    call's errno (ESTALE when the filesystem no longer finds the object)."""
    raw = _HANDLE_HEAD.pack(len(handle.data), handle.handle_type) + handle.data
    buf = ctypes.create_string_buffer(raw, len(raw))
    ctypes.set_errno(0)
    fd = int(_libc.open_by_handle_at(mount_fd, buf, flags))
    if fd < 0:
        _raise_errno("open_by_handle_at", mount_fd, f", type {handle.handle_type}")
    return fd
