"""C. Stacking, lookup and readdir: which branch a name resolves to, how directories merge.

Default stack: U = RW (writable) over RO over RO2.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from unionfs import sysapi
from unionfs.drivers import AUFS_MAX_NAMELEN, AUFS_ROOT_INO
from unionfs.fsops import T1_NS, T2_NS, errname, errno_of, mkdir, names, put
from unionfs.lab import Lab

pytestmark = pytest.mark.option_sets

STAT_FIELDS = ("st_mode", "st_uid", "st_gid", "st_size", "st_nlink", "st_mtime_ns", "st_ctime_ns")


def _stat_diff(a: os.stat_result, b: os.stat_result, fields: tuple[str, ...]) -> list[str]:
    return [
        f"{f}: union {getattr(a, f)!r} vs branch {getattr(b, f)!r}"
        for f in fields
        if getattr(a, f) != getattr(b, f)
    ]


def _three_copies(lab: Lab) -> None:
    put(lab.rw / "f", "from RW", mode=0o640, uid=1001, gid=1002, mtime_ns=T1_NS)
    put(lab.ro / "f", "from RO, longer", mode=0o604, uid=2001, gid=2002, mtime_ns=T2_NS)
    put(lab.ro2 / "f", "from RO2", mode=0o600, uid=3001, gid=3002, mtime_ns=T2_NS)


def test_upper_file_hides_lower_copies(lab: Lab) -> None:
    """LKP-1: U/f shows RW's content and every stat field from RW/f."""
    _three_copies(lab)
    u = lab.mount()
    data = (u / "f").read_bytes()
    assert data == b"from RW", lab.explain("U/f holds RW/f's data b'from RW'", repr(data))
    diff = _stat_diff((u / "f").stat(), (lab.rw / "f").stat(), STAT_FIELDS)
    assert not diff, lab.explain("stat U/f equal to stat RW/f", "; ".join(diff), u / "f")


def test_topmost_lower_wins_when_upper_lacks_name(lab: Lab) -> None:
    """LKP-1: with no RW/f, U/f is RO/f (not RO2/f)."""
    put(lab.ro / "f", "from RO", mode=0o604, uid=2001, gid=2002, mtime_ns=T1_NS)
    put(lab.ro2 / "f", "from RO2, longer", mode=0o600, uid=3001, gid=3002, mtime_ns=T2_NS)
    u = lab.mount()
    data = (u / "f").read_bytes()
    assert data == b"from RO", lab.explain("U/f holds RO/f's data b'from RO'", repr(data))
    fields = ("st_mode", "st_uid", "st_gid", "st_size", "st_mtime_ns")
    diff = _stat_diff((u / "f").stat(), (lab.ro / "f").stat(), fields)
    assert not diff, lab.explain("stat U/f equal to stat RO/f", "; ".join(diff), u / "f")


def test_deleting_upper_copy_reveals_next_lower(lab: Lab) -> None:
    """LKP-1: after RW/f is deleted directly, U/f shows RO/f.

    aufs (udba=reval, the default) notices branch changes made behind its back
    once caches are dropped. For overlayfs such changes under a live mount are
    undefined, so the union is mounted afresh instead.
    """
    _three_copies(lab)
    u = lab.mount()
    (u / "f").read_bytes()  # cache the upper dentry first
    (lab.rw / "f").unlink()
    if lab.driver.name == "aufs":
        sysapi.drop_caches()
    else:
        lab.remount_fresh()
    data = (u / "f").read_bytes()
    assert data == b"from RO, longer", lab.explain(
        "U/f shows RO/f (b'from RO, longer') once RW/f is gone", repr(data), u / "f"
    )
    diff = _stat_diff((u / "f").stat(), (lab.ro / "f").stat(), ("st_mode", "st_uid", "st_size"))
    assert not diff, lab.explain("stat U/f equal to stat RO/f", "; ".join(diff), u / "f")


def test_upper_file_hides_lower_directory(lab: Lab) -> None:
    """LKP-2: RW/x a file, RO/x a directory: U/x is the file, listed once as DT_REG."""
    put(lab.rw / "x", "file")
    put(lab.ro / "x" / "child", "in lower dir")
    u = lab.mount()
    st = (u / "x").lstat()
    assert stat.S_ISREG(st.st_mode), lab.explain("U/x a regular file", None, u / "x")
    entries = [e for e in sysapi.readdir(u) if e.name == "x"]
    assert len(entries) == 1, lab.explain("x listed once in U", f"{len(entries)} entries")
    assert entries[0].d_type in (sysapi.DT_REG, 0), lab.explain(
        "U/x listed with d_type DT_REG", entries[0].type_name
    )


def test_upper_directory_over_lower_file(lab: Lab) -> None:
    """LKP-2 reversed: RW/x a directory, RO/x a file, RO2/x a directory. U/x is a
    directory showing RW/x's entries. overlayfs stops merging at the lower file, so
    RO2/x stays hidden; aufs skips entries of another type and keeps merging
    directories below them, so RO2/x's entries show too."""
    put(lab.rw / "x" / "mine", "upper child")
    put(lab.ro / "x", "lower file")
    put(lab.ro2 / "x" / "deep", "a directory below the file")
    u = lab.mount()
    assert (u / "x").is_dir(), lab.explain("U/x a directory", None, u / "x")
    got = sorted(names(u / "x"))
    want = ["deep", "mine"] if lab.driver.name == "aufs" else ["mine"]
    assert got == want, lab.explain(f"U/x lists {want}", got)


def test_readdir_merges_branches_without_duplicates(lab: Lab) -> None:
    """LKP-3: RW/d={a,b}, RO/d={b,c}, RO2/d={c,e}: getdents U/d = . .. a b c e, each once."""
    for br, children in ((lab.rw, "ab"), (lab.ro, "bc"), (lab.ro2, "ce")):
        for c in children:
            put(br / "d" / c, f"{c} in {br.name}")
    u = lab.mount()
    listed = [e.name for e in sysapi.readdir(u / "d")]
    assert sorted(listed) == [".", "..", "a", "b", "c", "e"], lab.explain(
        "getdents(U/d) = ., .., a, b, c, e, each exactly once", str(listed)
    )
    data = (u / "d" / "b").read_bytes()
    assert data == b"b in rw", lab.explain("U/d/b is RW/d/b", repr(data))
    data = (u / "d" / "c").read_bytes()
    assert data == b"c in ro", lab.explain("U/d/c is RO/d/c", repr(data))


def test_merged_directory_takes_attributes_from_upper(lab: Lab) -> None:
    """LKP-4: U/d has RW/d's mode, owner and mtime; st_nlink per the driver's rule.

    aufs: st_nlink sums the branches' counts (never fewer than the true count when
    every branch fs counts subdirectories).
    overlayfs: a merged directory reports st_nlink 1 (its "count unknown"
    value, so that find(1) does not rely on it).
    """
    put(lab.rw / "d" / "s1" / "f", "x")
    put(lab.ro / "d" / "s2" / "f", "y")
    put(lab.ro2 / "d" / "s1" / "g", "z")
    mkdir(lab.ro / "d", mode=0o700, uid=2001, gid=2002, mtime_ns=T2_NS)
    mkdir(lab.rw / "d", mode=0o751, uid=1001, gid=1002, mtime_ns=T1_NS)
    u = lab.mount()
    diff = _stat_diff(
        (u / "d").stat(), (lab.rw / "d").stat(), ("st_mode", "st_uid", "st_gid", "st_mtime_ns")
    )
    assert not diff, lab.explain("U/d takes mode/uid/gid/mtime from RW/d", "; ".join(diff))
    nlink = (u / "d").stat().st_nlink
    if lab.driver.name == "overlay":
        assert nlink == 1, lab.explain("merged dir U/d reports st_nlink 1", f"st_nlink {nlink}")
        return
    # aufs: the top branch's count plus, for each lower one, its count minus 2 for '.'
    # and '..' (a count below 2, as btrfs reports for every dir, is added unchanged).
    want = 0
    for i, br in enumerate((lab.rw, lab.ro, lab.ro2)):
        n = (br / "d").stat().st_nlink
        want += n if i == 0 else n - 2 + (2 if n < 2 else 0)
    assert nlink == want, lab.explain(
        f"st_nlink of U/d = {want} (RW/d's count + each lower's count - 2)", f"st_nlink {nlink}"
    )
    if all((br / "d").stat().st_nlink >= 2 for br in (lab.rw, lab.ro, lab.ro2)):
        assert nlink >= 4, lab.explain("st_nlink at least the true count 4", nlink)


def test_statfs_reports_union_magic(lab: Lab) -> None:
    """LKP-5: statfs(U).f_type is the driver's magic; aufs: root ino 2, f_namelen 242,
    one st_dev for everything under U. overlayfs: f_namelen of the upper fs."""
    put(lab.ro / "d" / "f", "x")
    u = lab.mount()
    sfs = sysapi.statfs(u)
    assert sfs.f_type == lab.driver.statfs_magic, lab.explain(
        f"statfs(U).f_type {lab.driver.statfs_magic:#x}", f"{sfs.f_type:#x}"
    )
    if lab.driver.name == "aufs":
        assert sfs.f_namelen == AUFS_MAX_NAMELEN, lab.explain(
            f"statfs(U).f_namelen {AUFS_MAX_NAMELEN}", str(sfs.f_namelen)
        )
        ino = u.stat().st_ino
        assert ino == AUFS_ROOT_INO, lab.explain(f"st_ino of U is {AUFS_ROOT_INO}", str(ino))
        devs = {p.stat().st_dev for p in (u, u / "d", u / "d" / "f")}
        assert devs == {u.stat().st_dev}, lab.explain("one st_dev under U", str(devs))
    else:
        upper_namelen = sysapi.statfs(lab.rw).f_namelen
        assert sfs.f_namelen == upper_namelen, lab.explain(
            f"statfs(U).f_namelen = upper fs's {upper_namelen}", str(sfs.f_namelen)
        )


def test_mount_inside_lower_branch_not_seen_through_union(lab: Lab) -> None:
    """LKP-7: a filesystem mounted on RO/sub is not crossed: U/sub shows RO/sub's own dir."""
    put(lab.ro / "sub" / "underneath", "in RO/sub itself")
    lab.mount_other("tmpfs", lab.ro / "sub", "tmpfs", "size=1m")
    put(lab.ro / "sub" / "on-top", "in the tmpfs mounted on RO/sub")
    u = lab.mount()
    got = sorted(names(u / "sub"))
    assert got == ["underneath"], lab.explain(
        "U/sub lists ['underneath'] (RO/sub's own entry), not the tmpfs mounted over it", str(got)
    )
    err = None
    try:
        (u / "sub" / "on-top").lstat()
    except OSError as exc:
        err = exc.errno
    assert err == errno.ENOENT, lab.explain("U/sub/on-top: ENOENT", str(err))


def test_name_length_limit(lab: Lab) -> None:
    """aufs keeps room for its .wh. prefixes: names above 242 bytes are ENAMETOOLONG
    (statfs f_namelen 242); overlayfs allows the upper fs's 255."""
    u = lab.mount()
    fits, too_long = "n" * 242, "n" * 243
    (u / fits).write_text("ok")
    assert (lab.rw / fits).exists(), lab.explain("a 242-byte name is created on RW", None)
    err = errno_of(lambda: (u / too_long).write_text("x"))
    if lab.driver.name == "aufs":
        assert err == errno.ENAMETOOLONG, lab.explain("243-byte name: ENAMETOOLONG", errname(err))
    else:
        assert err is None, lab.explain("overlayfs: a 243-byte name works", errname(err))


def test_creating_a_whiteout_prefixed_name(lab: Lab) -> None:
    """aufs reserves the .wh. prefix: creating U/.wh.x fails EPERM and nothing lands on
    RW; for overlayfs .wh.x is an ordinary name."""
    u = lab.mount()
    err = errno_of(lambda: (u / ".wh.x").write_text("x"))
    if lab.driver.name == "aufs":
        assert err == errno.EPERM, lab.explain("creat U/.wh.x: EPERM", errname(err))
        assert not (lab.rw / ".wh.x").exists(), lab.explain("no RW/.wh.x", None)
    else:
        assert err is None and (lab.rw / ".wh.x").read_text() == "x", lab.explain(
            "overlayfs: U/.wh.x created as RW/.wh.x", err
        )
