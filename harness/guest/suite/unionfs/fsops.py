"""Small file helpers for arranging branch contents and observing the union."""

from __future__ import annotations

import errno as errno_mod
import json
import os
from pathlib import Path

from . import sysapi

# A fixed, distinctive timestamp with a nanosecond part (2021-01-02T03:04:05.123456789Z)
T1_NS = 1_609_556_645_123_456_789
T2_NS = 1_612_345_678_987_654_321


def put(
    path: Path,
    data: bytes | str = b"",
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    mtime_ns: int | None = None,
) -> Path:
    """Create (or replace) a regular file, making parent directories (0755) as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(raw)
    _apply(path, mode, uid, gid, mtime_ns)
    return path


def mkdir(
    path: Path,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    mtime_ns: int | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    _apply(path, mode, uid, gid, mtime_ns)
    return path


def _apply(
    path: Path, mode: int | None, uid: int | None, gid: int | None, mtime_ns: int | None
) -> None:
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode is not None:
        os.chmod(path, mode)  # after chown, which may clear set-id bits
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


_GRANULARITY: dict[tuple[int, str], int] = {}


def time_granularity(directory: Path) -> int:
    """Nanoseconds between two timestamps directory's filesystem can store (1 for
    nanosecond timestamps, 10**9 for seconds), probed once per filesystem."""
    # keyed by path too: anonymous and loop device numbers are reused by later mounts
    dev = (directory.stat().st_dev, str(directory))
    if dev not in _GRANULARITY:
        probe = directory / ".time-granularity-probe"
        probe.write_bytes(b"")
        try:
            os.utime(probe, ns=(T1_NS, T1_NS))
            got = probe.stat().st_mtime_ns
        finally:
            probe.unlink()
        gran = 1
        while gran < 10**9 and got != T1_NS - T1_NS % gran:
            gran *= 10
        _GRANULARITY[dev] = gran
    return _GRANULARITY[dev]


def same_time(a_ns: int, b_ns: int, *dirs: Path) -> bool:
    """Equal at the coarsest timestamp granularity of the filesystems of dirs."""
    gran = max([time_granularity(d) for d in dirs] or [1])
    return a_ns - a_ns % gran == b_ns - b_ns % gran


def lexists(path: Path) -> bool:
    return os.path.lexists(path)


def names(directory: Path) -> list[str]:
    """What getdents returns for directory, without '.' and '..', in order."""
    return [e.name for e in sysapi.readdir(directory) if e.name not in (".", "..")]


def read(path: Path) -> bytes:
    return path.read_bytes()


def errname(err: int | None) -> str:
    """An errno_of() result for a failure message: 'EACCES (13)', or success."""
    if err is None:
        return "no error: the call succeeded"
    return f"{errno_mod.errorcode.get(err, 'errno')} ({err})"


def errno_of(fn, *args: object, **kwargs: object) -> int | None:  # type: ignore[no-untyped-def]
    """Call fn(*args, **kwargs); the errno it failed with, or None if it succeeded.

    A file descriptor fn returns (os.open) is closed again."""
    try:
        result = fn(*args, **kwargs)
        if fn is os.open and isinstance(result, int):
            os.close(result)
    except OSError as exc:
        return exc.errno
    return None


class Outcome:
    """What a function run in a child process (as another user) did."""

    def __init__(self, errno_: int | None, value: str, message: str) -> None:
        self.errno = errno_
        self.value = value
        self.message = message

    @property
    def ok(self) -> bool:
        return self.errno is None and not self.message

    def __repr__(self) -> str:
        if self.ok:
            return f"succeeded ({self.value})"
        name = errno_mod.errorcode.get(self.errno or 0, "")
        return f"failed {name or ''} {self.message}".strip()


def run_as(uid: int, gid: int, fn, *args: object) -> Outcome:  # type: ignore[no-untyped-def]
    """Run fn(*args) in a forked child with all uids = uid, gids = gid, no groups."""

    def become() -> None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return run_in_child(become, fn, *args)


def run_in_userns(fn, *args: object) -> Outcome:  # type: ignore[no-untyped-def]
    """Run fn(*args) in a forked child inside new user and mount namespaces that map
    root to root, as `unshare -Ur` does; mounts made there vanish with the child."""

    def enter() -> None:
        sysapi.unshare(sysapi.CLONE_NEWUSER | sysapi.CLONE_NEWNS)
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text("0 0 1")
        Path("/proc/self/gid_map").write_text("0 0 1")
        sysapi.mount("none", "/", None, sysapi.MS_REC | sysapi.MS_PRIVATE, None)

    return run_in_child(enter, fn, *args)


def run_in_child(prepare, fn, *args: object) -> Outcome:  # type: ignore[no-untyped-def]
    """fork; in the child run prepare() then fn(*args); report what happened."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(rfd)
            payload: dict[str, object]
            try:
                prepare()
                payload = {"errno": None, "value": repr(fn(*args)), "message": ""}
            except OSError as exc:
                payload = {"errno": exc.errno, "value": "", "message": str(exc)}
            except BaseException as exc:
                payload = {"errno": None, "value": "", "message": repr(exc)}
            data = json.dumps(payload).encode()
            while data:
                data = data[os.write(wfd, data) :]
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    os.waitpid(pid, 0)
    try:
        got = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        got = {}
    if not got:
        return Outcome(None, "", "child died without reporting")
    return Outcome(got["errno"], got["value"], got["message"])


def allocated(path: Path) -> int:
    """Bytes actually allocated to path (st_blocks is in 512-byte units)."""
    return path.lstat().st_blocks * 512


def user_xattr_problem(*dirs: Path) -> str | None:
    """Why user.* xattrs cannot be set on files in dirs' filesystems, or None."""
    for d in dirs:
        probe = d / ".user-xattr-probe"
        probe.write_bytes(b"")
        try:
            os.setxattr(probe, "user.probe", b"1")
        except OSError as exc:
            return f"user.* xattrs unsupported on {d} ({exc.strerror})"
        finally:
            probe.unlink()
    return None
