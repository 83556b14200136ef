"""E. Copy-up: how a change through U to a lower file lands on RW.

Designed difference: overlayfs copies a lower file up when it is opened for
writing; aufs opens the lower file read-only and copies up at the first write
(or truncate, setattr, setxattr, shared writable mmap).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from unionfs import evidence
from unionfs.drivers import Branch
from unionfs.fsops import (
    T1_NS,
    T2_NS,
    allocated,
    errname,
    errno_of,
    lexists,
    mkdir,
    names,
    put,
    run_as,
    same_time,
    time_granularity,
    user_xattr_problem,
)
from unionfs.gates import overlay_param, require_aufs_config
from unionfs.lab import Lab

pytestmark = pytest.mark.option_sets


def _metacopy(lab: Lab) -> bool:
    return overlay_param(lab.driver, "metacopy") == "Y"


def test_open_for_write_copies_up_at_driver_specific_moment(lab: Lab) -> None:
    """CPU-1: open(U/f, O_RDWR) then close without writing.

    overlayfs: RW/f exists as soon as open returns (copy-up at open for write).
    aufs: no RW/f, neither while open nor after close (copy-up at first write).
    """
    put(lab.ro / "f", "abc")
    u = lab.mount()
    fd = os.open(u / "f", os.O_RDWR)
    try:
        while_open = lexists(lab.rw / "f")
    finally:
        os.close(fd)
    after_close = lexists(lab.rw / "f")
    if lab.driver.copy_up_at_open_for_write:
        assert while_open, lab.explain("RW/f exists once open(O_RDWR) returned", None, lab.rw)
    else:
        assert not while_open and not after_close, lab.explain(
            "no RW/f after open(O_RDWR) without a write (aufs copies up at first write)",
            f"RW/f while open: {while_open}, after close: {after_close}",
        )
    assert (lab.ro / "f").read_bytes() == b"abc", lab.explain("RO/f untouched", None)


def test_partial_write_copies_up_whole_file(lab: Lab) -> None:
    """CPU-1: pwrite "X" at 0 through U: RW/f = "Xbc", RO/f = "abc"."""
    put(lab.ro / "f", "abc")
    u = lab.mount()
    fd = os.open(u / "f", os.O_RDWR)
    try:
        os.pwrite(fd, b"X", 0)
    finally:
        os.close(fd)
    got = (lab.rw / "f").read_bytes() if lexists(lab.rw / "f") else None
    assert got == b"Xbc", lab.explain("RW/f holds b'Xbc'", repr(got), lab.rw / "f")
    assert (lab.ro / "f").read_bytes() == b"abc", lab.explain("RO/f still b'abc'", None)
    assert (u / "f").read_bytes() == b"Xbc", lab.explain("U/f reads b'Xbc'", None, u / "f")


def test_open_trunc_copies_up_empty_file_with_metadata(lab: Lab) -> None:
    """CPU-2: open(U/f, O_WRONLY|O_TRUNC): RW/f at once, size 0, RO's mode/uid/gid."""
    put(lab.ro / "f", "abcdef", mode=0o640, uid=1001, gid=1002)
    u = lab.mount()
    fd = os.open(u / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert lexists(lab.rw / "f"), lab.explain("RW/f exists while the fd is open", None)
        st = (lab.rw / "f").lstat()
        got = (st.st_size, oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)
        assert got == (0, oct(0o640), 1001, 1002), lab.explain(
            "RW/f: size 0, mode 0o640, uid 1001, gid 1002", str(got)
        )
    finally:
        os.close(fd)
    assert (lab.ro / "f").read_bytes() == b"abcdef", lab.explain("RO/f intact", None)


def _chmod(p: Path) -> None:
    os.chmod(p, 0o600)


def _chown(p: Path) -> None:
    os.chown(p, 4242, 4343)


def _utime(p: Path) -> None:
    os.utime(p, ns=(T2_NS, T2_NS))


_SETATTR = {
    "chmod": (_chmod, lambda st, d: stat.S_IMODE(st.st_mode) == 0o600, "mode 0600"),
    "chown": (_chown, lambda st, d: (st.st_uid, st.st_gid) == (4242, 4343), "owner 4242:4343"),
    "utime": (_utime, lambda st, d: same_time(st.st_mtime_ns, T2_NS, *d), f"mtime_ns {T2_NS}"),
}


def _meta_diff(
    lab: Lab, rw: os.stat_result, ro: os.stat_result, keys: tuple[str, ...]
) -> list[str]:
    """Fields differing between RW's and RO's copy; times compared at the coarser
    granularity of the two filesystems."""
    diff = []
    for k in keys:
        a, b = getattr(rw, k), getattr(ro, k)
        same = same_time(a, b, lab.rw, lab.ro) if k.endswith("time_ns") else a == b
        if not same:
            diff.append(f"{k}: RW {a} vs RO {b}")
    return diff


@pytest.mark.parametrize("op", sorted(_SETATTR))
def test_metadata_change_copies_up_whole_file(lab: Lab, op: str) -> None:
    """CPU-4: chmod/chown/utimensat on lower-only U/f copy the whole file up; the
    change lands on RW/f only. (overlayfs with metacopy=on copies metadata only.)"""
    payload = b"0123456789" * 1000
    put(lab.ro / "f", payload, mode=0o644, uid=1001, gid=1002, mtime_ns=T1_NS)
    before = (lab.ro / "f").stat()
    u = lab.mount()
    fn, changed, what = _SETATTR[op]
    fn(u / "f")
    assert lexists(lab.rw / "f"), lab.explain(f"{op} copied f up to RW", None, lab.rw)
    st_rw = (lab.rw / "f").stat()
    # times set through the union are kept at the union's own granularity (aufs: 1 s)
    grains = (lab.rw, u)
    assert changed(st_rw, grains), lab.explain(f"RW/f has {what}", None, lab.rw / "f")
    assert changed((u / "f").stat(), grains), lab.explain(f"U/f shows {what}", None, u / "f")
    if not _metacopy(lab):
        assert (lab.rw / "f").read_bytes() == payload, lab.explain(
            "RW/f holds RO/f's full 10000 bytes", None, lab.rw / "f"
        )
    assert (u / "f").read_bytes() == payload, lab.explain("U/f data unchanged", None, u / "f")
    after = (lab.ro / "f").stat()
    keys = ("st_mode", "st_uid", "st_gid", "st_mtime_ns")
    assert [getattr(before, k) for k in keys] == [getattr(after, k) for k in keys], lab.explain(
        f"RO/f's mode/owner/mtime unchanged by {op}", None, lab.ro / "f"
    )


def test_setxattr_copies_up_and_reads_topmost_copy(lab: Lab) -> None:
    """CPU-5: setxattr/removexattr user.k through U copy f up and change RW/f only;
    getxattr/listxattr read the topmost copy only."""
    require_aufs_config(lab.driver, "XATTR")
    problem = user_xattr_problem(lab.rw, lab.ro)
    if problem:
        pytest.skip(problem)
    put(lab.ro / "f", "data")
    os.setxattr(lab.ro / "f", "user.k", b"lower")
    u = lab.mount()
    got = os.getxattr(u / "f", "user.k")
    assert got == b"lower", lab.explain("getxattr(U/f, user.k) = b'lower' before copy-up", got)
    os.setxattr(u / "f", "user.k", b"upper")
    assert lexists(lab.rw / "f"), lab.explain("setxattr copied f up to RW", None, lab.rw)
    got = os.getxattr(lab.rw / "f", "user.k")
    assert got == b"upper", lab.explain("RW/f user.k = b'upper'", got, lab.rw / "f")
    got = os.getxattr(lab.ro / "f", "user.k")
    assert got == b"lower", lab.explain("RO/f user.k still b'lower'", got, lab.ro / "f")
    os.removexattr(u / "f", "user.k")
    err = errno_of(os.getxattr, u / "f", "user.k")
    assert err == errno.ENODATA, lab.explain(
        "getxattr(U/f, user.k) ENODATA after removexattr (RO/f's copy must not show)", err
    )
    listed = os.listxattr(u / "f")
    assert "user.k" not in listed, lab.explain("listxattr(U/f) lacks user.k", listed)


def test_copy_up_preserves_mode_owner_and_times(lab: Lab) -> None:
    """CPU-7 (metadata part): RO/f 04750 uid/gid 1000, nanosecond mtime/atime;
    chmod to the same mode through U: RW/f has the same mode, owner, times, data."""
    put(lab.ro / "f", b"payload\x00\x01", mode=0o4750, uid=1000, gid=1000)
    os.utime(lab.ro / "f", ns=(T2_NS, T1_NS))
    ro = (lab.ro / "f").stat()
    u = lab.mount()
    os.chmod(u / "f", 0o4750)
    assert lexists(lab.rw / "f"), lab.explain("chmod copied f up to RW", None, lab.rw)
    rw = (lab.rw / "f").stat()
    keys = ("st_mode", "st_uid", "st_gid", "st_mtime_ns", "st_atime_ns", "st_size")
    diff = _meta_diff(lab, rw, ro, keys)
    assert not diff, lab.explain("RW/f keeps RO/f's mode, owner, times, size", "; ".join(diff))
    if not _metacopy(lab):
        assert (lab.rw / "f").read_bytes() == b"payload\x00\x01", lab.explain(
            "RW/f data identical", None, lab.rw / "f"
        )


def _deep_lower_tree(lab: Lab) -> None:
    put(lab.ro / "a" / "b" / "f", "lower")
    mkdir(lab.ro / "a" / "b", mode=0o700, uid=1001, gid=1002, mtime_ns=T2_NS)
    mkdir(lab.ro / "a", mode=0o750, uid=1000, gid=1000, mtime_ns=T1_NS)


def _append_deep(lab: Lab) -> tuple[str, ...]:
    """Append to U/a/b/f, which only RO has: the copy-up creates RW/a and RW/a/b.
    Returns those parents (relative paths), failing the check if one is missing."""
    _deep_lower_tree(lab)
    u = lab.mount()
    with open(u / "a" / "b" / "f", "ab") as fh:
        fh.write(b" appended")
    parents = ("a", "a/b")
    for rel in parents:
        if not (lab.rw / rel).is_dir():
            pytest.fail(lab.explain(f"RW/{rel} created as a directory", None, lab.rw / rel))
    return parents


def test_copy_up_creates_parents_with_lower_metadata(lab: Lab) -> None:
    """CPU-8: writing U/a/b/f creates RW/a and RW/a/b with RO's mode and owner."""
    for rel in _append_deep(lab):
        diff = _meta_diff(
            lab, (lab.rw / rel).stat(), (lab.ro / rel).stat(), ("st_mode", "st_uid", "st_gid")
        )
        assert not diff, lab.explain(f"RW/{rel} copies RO/{rel}'s mode/owner", "; ".join(diff))
    got = (lab.rw / "a" / "b" / "f").read_bytes()
    assert got == b"lower appended", lab.explain("RW/a/b/f = b'lower appended'", got)


def test_copy_up_keeps_parent_directory_mtimes(lab: Lab) -> None:
    """CPU-8: after writing U/a/b/f, the copied-up RW/a and RW/a/b still carry RO/a's
    and RO/a/b's mtimes (aufs restores parent times around a copy-up; overlayfs sets
    them after). Seen failing on aufs5.10.140: the parents keep the copy-up time."""
    for rel in _append_deep(lab):
        diff = _meta_diff(lab, (lab.rw / rel).stat(), (lab.ro / rel).stat(), ("st_mtime_ns",))
        assert not diff, lab.explain(f"RW/{rel} keeps RO/{rel}'s mtime", "; ".join(diff))


def test_times_set_through_the_union_keep_their_precision(lab: Lab) -> None:
    """utimensat through U on an upper file: overlayfs keeps the nanoseconds the upper
    fs can store; aufs stores whole seconds (it leaves its superblock's time granularity
    at the VFS default of 1 s, so the VFS truncates before aufs passes the time on)."""
    u = lab.mount()
    (u / "t").write_text("x")
    os.utime(u / "t", ns=(T2_NS, T2_NS))
    got = (lab.rw / "t").stat().st_mtime_ns
    if lab.driver.name == "aufs":
        want = T2_NS - T2_NS % 10**9
    else:
        gran = time_granularity(lab.rw)
        want = T2_NS - T2_NS % gran
    assert got == want, lab.explain(f"RW/t mtime_ns {want}", got, lab.rw / "t")


def test_lower_change_after_copy_up_not_visible(lab: Lab) -> None:
    """CPU-9: once f is copied up, editing RO/f directly changes nothing seen at U/f."""
    put(lab.ro / "f", "original")
    u = lab.mount()
    os.chmod(u / "f", 0o600)
    assert lexists(lab.rw / "f"), lab.explain("chmod copied f up", None, lab.rw)
    put(lab.ro / "f", "edited below, longer")
    data = (u / "f").read_bytes()
    assert data == b"original", lab.explain("U/f still b'original' (served from RW)", data)


def test_copy_up_keeps_inode_number(lab: Lab) -> None:
    """CPU-9: st_ino of U/f is the same before and after copy-up.

    aufs: by its xino table (on by default). overlayfs: when all layers share
    one filesystem (otherwise only with xino=on, not used here).
    """
    if lab.driver.name == "overlay" and not lab.same_fs("RW", "RO", "RO2"):
        pytest.skip("overlayfs keeps st_ino across copy-up only with one fs or xino=on")
    put(lab.ro / "f", "x")
    u = lab.mount()
    before = (u / "f").stat().st_ino
    os.chmod(u / "f", 0o600)
    assert lexists(lab.rw / "f"), lab.explain("chmod copied f up", None, lab.rw)
    after = (u / "f").stat().st_ino
    assert before == after, lab.explain(
        "st_ino of U/f unchanged by copy-up", f"{before} -> {after}"
    )


def test_chmod_lower_dir_copies_up_dir_without_children(lab: Lab) -> None:
    """CPU-13: chmod 0700 U/d (d only in RO, with children): RW/d 0700, empty, not opaque;
    U/d still lists RO/d's children."""
    put(lab.ro / "d" / "c1", "x")
    put(lab.ro / "d" / "sub" / "c2", "y")
    u = lab.mount()
    os.chmod(u / "d", 0o700)
    assert (lab.rw / "d").is_dir(), lab.explain("RW/d created", None, lab.rw / "d")
    mode = stat.S_IMODE((lab.rw / "d").stat().st_mode)
    assert mode == 0o700, lab.explain("RW/d mode 0700", oct(mode), lab.rw / "d")
    inside = [n for n in os.listdir(lab.rw / "d") if n not in lab.driver.metadata_names()]
    assert inside == [], lab.explain("RW/d holds no copied children", inside)
    assert not lab.driver.is_opaque(lab.rw / "d"), lab.explain("RW/d not opaque", None)
    assert sorted(names(u / "d")) == ["c1", "sub"], lab.explain(
        "U/d still lists c1, sub", names(u / "d")
    )


def test_shared_writable_mmap_copies_up(lab: Lab) -> None:
    """CPU-6: O_RDWR + mmap(PROT_WRITE, MAP_SHARED): RW/f exists by the time mmap
    returns (aufs copies up at mmap, overlayfs already at open); stores land in RW/f."""
    put(lab.ro / "f", b"abc" * 2000)
    u = lab.mount()
    fd = os.open(u / "f", os.O_RDWR)
    try:
        m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            assert lexists(lab.rw / "f"), lab.explain("RW/f exists once mmap returned", None)
            m[0:1] = b"X"
            m.flush()
        finally:
            m.close()
    finally:
        os.close(fd)
    assert (lab.rw / "f").read_bytes()[:3] == b"Xbc", lab.explain(
        "RW/f starts with b'Xbc'", None, lab.rw / "f"
    )
    assert (lab.ro / "f").read_bytes()[:3] == b"abc", lab.explain("RO/f untouched", None)


def test_private_mmap_does_not_copy_up(lab: Lab) -> None:
    """CPU-6: O_RDONLY + mmap(PROT_WRITE, MAP_PRIVATE) and a store: no RW/f."""
    put(lab.ro / "f", b"abc" * 2000)
    u = lab.mount()
    fd = os.open(u / "f", os.O_RDONLY)
    try:
        m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            m[0:1] = b"X"
        finally:
            m.close()
    finally:
        os.close(fd)
    assert not lexists(lab.rw / "f"), lab.explain("no RW/f after a private mapping", None)
    assert (u / "f").read_bytes()[:3] == b"abc", lab.explain("U/f unchanged", None, u / "f")


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes, compared chunk by chunk (a sha256
    of 2 x 64 MiB took 15-20 s of an emulated CPU; a compare takes well under 1)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def test_copy_up_keeps_holes(lab: Lab) -> None:
    """CPU-10: a 64 MiB RO/f with data only in its first and last 4 KiB: after chmod
    via U, RW/f allocates about the data size, not 64 MiB; contents identical."""
    size = 64 << 20
    path = lab.ro / "sparse"
    with open(path, "wb") as fh:
        fh.write(b"A" * 4096)
        fh.seek(size - 4096)
        fh.write(b"Z" * 4096)
    if allocated(path) > 8 << 20:
        pytest.skip(f"RO's filesystem ({lab.kind_of('RO')}) did not keep the source sparse")
    u = lab.mount()
    os.chmod(u / "sparse", 0o600)
    rw = lab.rw / "sparse"
    assert lexists(rw), lab.explain("chmod copied the file up", None, lab.rw)
    assert rw.stat().st_size == size, lab.explain(f"RW/sparse size {size}", None, rw)
    if not _metacopy(lab):
        used = allocated(rw)
        assert used <= 8 << 20, lab.explain(
            "RW/sparse allocates at most 8 MiB (holes kept)", f"{used} bytes allocated", rw
        )
    assert _same_bytes(rw, path), lab.explain("RW/sparse equals RO/sparse", None, rw)


@pytest.mark.only_drivers("aufs")
def test_copy_up_turns_zero_blocks_into_holes(lab: Lab) -> None:
    """CPU-10 (aufs): an all-zero, fully allocated RO/z comes out sparse on RW, since
    aufs skips zero blocks while copying (unless the fs clones the file instead)."""
    if lab.same_fs("RW", "RO") and lab.kind_of("RW") in ("xfs", "btrfs"):
        pytest.skip(f"{lab.kind_of('RW')} clones same-fs files on copy-up (reflink)")
    size = 16 << 20
    put(lab.ro / "z", b"\0" * size)
    u = lab.mount()
    os.chmod(u / "z", 0o600)
    rw = lab.rw / "z"
    assert lexists(rw) and rw.stat().st_size == size, lab.explain(
        f"RW/z copied up with size {size}", None, rw
    )
    used = allocated(rw)
    assert used <= 1 << 20, lab.explain("RW/z allocates at most 1 MiB", f"{used} bytes", rw)


def test_append_copies_up_from_deep_branch(lab: Lab) -> None:
    """CPU-11: RW over nine lower branches, file only at RO9/x/y/f; append via U:
    RW/x/y/f created, the branches between untouched."""
    labels = ["RO", "RO2"] + [lab.add_branch(f"RO{i}").name.upper() for i in range(3, 10)]
    put(lab.branches["RO9"] / "x" / "y" / "f", "deep")
    shapes = {label: evidence.shape(lab.branches[label]) for label in labels[:-1]}
    u = lab.mount(lowers=labels)
    with open(u / "x" / "y" / "f", "ab") as fh:
        fh.write(b"+")
    got = (lab.rw / "x" / "y" / "f").read_bytes() if lexists(lab.rw / "x/y/f") else None
    assert got == b"deep+", lab.explain("RW/x/y/f = b'deep+'", got)
    changed = [
        label for label in labels[:-1] if evidence.shape(lab.branches[label]) != shapes[label]
    ]
    assert not changed, lab.explain("RO..RO8 untouched", f"changed: {changed}")


def _make_special(kind: str, path: Path) -> None:
    if kind == "symlink":
        os.symlink("target/of/link", path)
    elif kind == "fifo":
        os.mkfifo(path, 0o640)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(os.fspath(path))
        finally:
            s.close()
    elif kind == "chardev":
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "socket", "chardev"])
def test_chown_copies_up_special_file(lab: Lab, kind: str) -> None:
    """CPU-12: lchown of a symlink, chown of a fifo/socket/char device via U: recreated
    on RW with the same type, target or rdev, the new owner, and RO's mtime."""
    p = lab.ro / "s"
    _make_special(kind, p)
    os.utime(p, ns=(T1_NS, T1_NS), follow_symlinks=False)
    ro = p.lstat()
    u = lab.mount()
    os.chown(u / "s", 1234, 5678, follow_symlinks=False)
    rwp = lab.rw / "s"
    assert lexists(rwp), lab.explain(f"the {kind} copied up to RW/s", None, lab.rw)
    rw = rwp.lstat()
    got = (stat.S_IFMT(rw.st_mode), rw.st_rdev, rw.st_uid, rw.st_gid)
    want = (stat.S_IFMT(ro.st_mode), ro.st_rdev, 1234, 5678)
    assert got == want, lab.explain(f"RW/s: (type, rdev, uid, gid) = {want}", got, rwp)
    diff = _meta_diff(lab, rw, ro, ("st_mtime_ns",))
    assert not diff, lab.explain("RW/s keeps RO/s's mtime", "; ".join(diff), rwp)
    if kind == "symlink":
        target = os.readlink(rwp)
        assert target == "target/of/link", lab.explain("RW/s -> target/of/link", target)
    assert (ro.st_uid, ro.st_gid) == (p.lstat().st_uid, p.lstat().st_gid), lab.explain(
        "RO/s owner unchanged", None, p
    )


def test_non_owner_can_write_own_file_in_root_owned_lower_dir(lab: Lab) -> None:
    """CPU-14: RO/etc (root, 0755) holds u (uid 1000, 0644); as uid 1000 append to
    U/etc/u: succeeds; RW/etc is root-owned 0755, RW/etc/u uid 1000."""
    put(lab.ro / "etc" / "u", "mine", mode=0o644, uid=1000, gid=1000)
    mkdir(lab.ro / "etc", mode=0o755, uid=0, gid=0)
    u = lab.mount()

    def append() -> int:
        with open(u / "etc" / "u", "ab") as fh:
            return fh.write(b"+more")

    outcome = run_as(1000, 1000, append)
    assert outcome.ok, lab.explain("uid 1000 appends to U/etc/u", outcome)
    st_dir, st_file = (lab.rw / "etc").stat(), (lab.rw / "etc" / "u").stat()
    got = (st_dir.st_uid, oct(stat.S_IMODE(st_dir.st_mode)), st_file.st_uid)
    assert got == (0, oct(0o755), 1000), lab.explain(
        "RW/etc root-owned 0755, RW/etc/u uid 1000", got, lab.rw / "etc", lab.rw / "etc" / "u"
    )
    assert (lab.rw / "etc" / "u").read_bytes() == b"mine+more", lab.explain(
        "RW/etc/u = b'mine+more'", None, lab.rw / "etc" / "u"
    )


def test_union_without_writable_branch_refuses_writes(lab: Lab) -> None:
    """CPU-18: a union of read-only branches only: open O_WRONLY and creat fail EROFS.

    aufs: `br=RO=ro` mounted rw; overlayfs: lowerdir only (no upperdir).
    """
    put(lab.ro / "f", "x")
    u = lab.mount(upper=None, lowers=["RO", "RO2"])
    err = errno_of(os.open, u / "f", os.O_WRONLY)
    assert err == errno.EROFS, lab.explain("open(U/f, O_WRONLY): EROFS", errname(err))
    err = errno_of(os.open, u / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    assert err == errno.EROFS, lab.explain("creat(U/new): EROFS", errname(err))
    assert not lexists(lab.ro / "new"), lab.explain("nothing created on RO", None)


def test_fsync_on_readonly_fd_does_not_copy_up(lab: Lab) -> None:
    """CPU-19: fsync on an O_RDONLY fd of lower-only U/f returns 0 and copies nothing."""
    put(lab.ro / "f", "x")
    u = lab.mount()
    fd = os.open(u / "f", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert not lexists(lab.rw / "f"), lab.explain("no RW/f after fsync", None, lab.rw)


def _acl_xattr() -> bytes:
    """A POSIX ACL in the kernel's xattr form: u::rwx,u:1234:r--,g::r-x,m::r-x,o::---."""
    entries = [
        (0x01, 7, 0xFFFFFFFF),
        (0x02, 4, 1234),
        (0x04, 5, 0xFFFFFFFF),
        (0x10, 5, 0xFFFFFFFF),
        (0x20, 0, 0xFFFFFFFF),
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


ACL = "system.posix_acl_access"
XATTRS = {"user.a": b"A", "trusted.b": b"B", "security.c": b"C", ACL: _acl_xattr()}


def test_copy_up_preserves_xattrs_and_acl(lab: Lab) -> None:
    """CPU-7 (xattr part): RO/f with user.a, trusted.b, security.c and a POSIX ACL;
    a metadata change through U copies f up with all of them (aufs: needs
    CONFIG_AUFS_XATTR, without which xattrs are silently dropped)."""
    require_aufs_config(lab.driver, "XATTR")
    put(lab.ro / "f", "data", mode=0o750)
    for name, value in XATTRS.items():
        try:
            os.setxattr(lab.ro / "f", name, value)
        except OSError as exc:
            pytest.skip(f"RO's fs ({lab.kind_of('RO')}) refuses {name}: {exc.strerror}")
    problem = user_xattr_problem(lab.rw)
    if problem:
        pytest.skip(problem)
    u = lab.mount()
    os.chmod(u / "f", stat.S_IMODE((lab.ro / "f").stat().st_mode))
    assert lexists(lab.rw / "f"), lab.explain("chmod copied f up", None, lab.rw)
    missing = {}
    for name, value in XATTRS.items():
        try:
            got = os.getxattr(lab.rw / "f", name)
        except OSError as exc:
            missing[name] = exc.strerror
            continue
        if got != value:
            missing[name] = f"value {got!r}"
    assert not missing, lab.explain(
        "RW/f carries user.a, trusted.b, security.c and the ACL", missing, lab.rw / "f"
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.defaults_only
@pytest.mark.parametrize("attr", ["icexusr", "icex"])
def test_copy_up_ignores_xattr_errors_only_when_told(lab: Lab, attr: str) -> None:
    """CPU-15: RO/f has user.k and RW's fs rejects user.* xattrs: an append through U
    fails EOPNOTSUPP with no RW/f left; with RW=rw+icexusr (or +icex) it succeeds
    without the xattr."""
    require_aufs_config(lab.driver, "XATTR")
    if user_xattr_problem(lab.ro):
        pytest.skip("RO's filesystem refuses user.* xattrs itself")
    if not user_xattr_problem(lab.rw):
        pytest.skip(f"RW's filesystem ({lab.kind_of('RW')}) accepts user.* xattrs")
    put(lab.ro / "f", "data")
    os.setxattr(lab.ro / "f", "user.k", b"v")
    u = lab.mount(upper="RW", lowers=["RO"], plain=True)
    err = errno_of(lambda: (u / "f").open("ab").close())
    assert err == errno.EOPNOTSUPP, lab.explain("append without icex*: EOPNOTSUPP", errname(err))
    assert not lexists(lab.rw / "f"), lab.explain("no RW/f left behind", None, lab.rw)
    lab.umount()
    u = lab.mount(upper=Branch(lab.rw, f"rw+{attr}"), lowers=["RO"], plain=True)
    with open(u / "f", "ab") as fh:
        fh.write(b"+")
    assert (lab.rw / "f").read_text() == "data+", lab.explain(
        f"rw+{attr}: copy-up works", None, lab.rw / "f"
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.defaults_only
@pytest.mark.parametrize("attr", ["coo_reg", "coo_all"])
def test_copy_up_on_open(lab: Lab, attr: str) -> None:
    """CPU-17: with RO=ro+coo_reg, open(U/f, O_RDONLY) copies f up; coo_all does so
    for directories too (opendir U/d creates RW/d)."""
    put(lab.ro / "f", "data")
    put(lab.ro / "d" / "child", "x")
    u = lab.mount(lowers=[Branch(lab.ro, f"ro+{attr}"), "RO2"], plain=True)
    (u / "f").read_text()
    assert (lab.rw / "f").read_text() == "data", lab.explain(
        f"ro+{attr}: reading U/f copied it up", None, lab.rw / "f"
    )
    os.listdir(u / "d")
    made = (lab.rw / "d").is_dir()
    assert made == (attr == "coo_all"), lab.explain(
        f"ro+{attr}: opendir U/d {'creates' if attr == 'coo_all' else 'does not create'} RW/d", made
    )
