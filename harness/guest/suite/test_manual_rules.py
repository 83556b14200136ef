"""The aufs manual, rule by rule (issue 15, "every documented rule, every operation").

Each check names the aufs(5) section (aufs-util aufs.in.5) or the
Documentation/filesystems/aufs/design/ note it follows, and the fs/aufs source
line that decides the errno (aufs5.10.140). A rule about names applies to every
call that makes a name: creat, mkdir, symlink, link, mknod and rename; a limit is
checked at the limit and one past it; an option with two settings in both.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from unionfs import aufs, fsops, sysapi
from unionfs.drivers import AUFS_MAX_NAMELEN, AUFS_WH_BASE, AufsDriver, Branch
from unionfs.fsops import errname, errno_of, lexists, names, put
from unionfs.gates import require_aufs_config
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

pytestmark = pytest.mark.fs_independent

# --- names: every call that makes one ---------------------------------------


def _make(op: str, u: Path, name: str) -> Callable[[], object]:
    """The call `op` creating U/name (link and rename from a file U/src)."""
    path = u / name
    calls: dict[str, Callable[[], object]] = {
        "creat": lambda: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)),
        "mkdir": lambda: os.mkdir(path),
        "symlink": lambda: os.symlink("src", path),
        "link": lambda: os.link(u / "src", path),
        "mknod": lambda: os.mknod(path, stat.S_IFIFO | 0o644),
        "rename": lambda: os.rename(u / "src", path),
    }
    return calls[op]


NAME_OPS = ["creat", "mkdir", "symlink", "link", "mknod", "rename"]


@pytest.mark.parametrize("op", NAME_OPS)
def test_whiteout_prefix_is_reserved_for_every_call_that_makes_a_name(lab: Lab, op: str) -> None:
    """aufs(5) "Incompatible with an Ordinary Filesystem": the whiteout prefix .wh. is
    reserved on all branches. Lookup of such a name fails EPERM (dentry.c
    au_test_shwh()), so creat, mkdir, symlink, link, mknod and rename to U/.wh.x all
    fail EPERM and nothing lands on RW; overlayfs treats .wh.x as an ordinary name."""
    put(lab.ro / "src", "s")
    u = lab.mount()
    err = errno_of(_make(op, u, ".wh.x"))
    if isinstance(lab.driver, AufsDriver):
        assert err == errno.EPERM, lab.explain(f"{op} U/.wh.x: EPERM", errname(err))
        assert not lexists(lab.rw / ".wh.x"), lab.explain("no RW/.wh.x", None, lab.rw)
        assert lexists(u / "src") or op != "rename", lab.explain("U/src kept", names(u))
    else:
        assert err is None and lexists(lab.rw / ".wh.x"), lab.explain(
            f"overlayfs: {op} U/.wh.x makes RW/.wh.x", errname(err)
        )


@pytest.mark.parametrize("length", [AUFS_MAX_NAMELEN, AUFS_MAX_NAMELEN + 1], ids=["242", "243"])
@pytest.mark.parametrize("op", NAME_OPS)
def test_name_length_limit_for_every_call_that_makes_a_name(lab: Lab, op: str, length: int) -> None:
    """aufs(5) "Incompatible with an Ordinary Filesystem": the longest name is
    AUFS_MAX_NAMELEN (242 = 255 - 2 * len(".wh.") - 1 - AUFS_WH_TMP_LEN). At 242 every
    name-making call works; at 243 each is ENAMETOOLONG (i_op.c aufs_lookup(),
    i_op_add.c, i_op_ren.c). overlayfs allows the upper fs's 255."""
    put(lab.ro / "src", "s")
    u = lab.mount()
    err = errno_of(_make(op, u, "n" * length))
    if length > AUFS_MAX_NAMELEN and isinstance(lab.driver, AufsDriver):
        assert err == errno.ENAMETOOLONG, lab.explain(
            f"{op} of a {length}-byte name: ENAMETOOLONG", errname(err)
        )
        assert not lexists(lab.rw / ("n" * length)), lab.explain("nothing on RW", None)
    else:
        assert err is None and lexists(lab.rw / ("n" * length)), lab.explain(
            f"{op} of a {length}-byte name lands on RW", errname(err)
        )


@pytest.mark.only_drivers("aufs")
def test_too_long_lower_name_is_listed_as_dt_unknown_and_unreachable(lab: Lab) -> None:
    """aufs(5) "Incompatible with an Ordinary Filesystem": a name longer than 242 on a
    branch is listed by getdents with d_type DT_UNKNOWN (vdir.c fillvdir()) but
    cannot be handled: lookup is ENAMETOOLONG (i_op.c aufs_lookup())."""
    long = "L" * 250
    put(lab.ro / long, "x")
    put(lab.ro / "short", "y")
    u = lab.mount()
    listed = {e.name: e for e in sysapi.readdir(u)}
    assert long in listed, lab.explain("the 250-byte name is listed", sorted(listed))
    assert listed[long].d_type == 0, lab.explain("its d_type is DT_UNKNOWN", listed[long].type_name)
    assert listed["short"].d_type == sysapi.DT_REG, lab.explain(
        "short name DT_REG", listed["short"].type_name
    )
    err = errno_of(os.lstat, u / long)
    assert err == errno.ENAMETOOLONG, lab.explain("lstat of it: ENAMETOOLONG", errname(err))


# --- limits: at the limit and one past --------------------------------------


@pytest.mark.only_drivers("aufs")
def test_branch_count_limit(lab: Lab, kmsg: KernelWatch) -> None:
    """aufs(5) "Branch Syntax": the maximum number of branches is 127 by default
    (CONFIG_AUFS_BRANCH_MAX_127, AUFS_BRANCH_MAX). 127 branches mount and show; one
    more is ENOSPC with "number of branches exceeded" (branch.c test_add())."""
    require_aufs_config(lab.driver, "BRANCH_MAX_127")
    base = lab.tmp / "b"
    base.mkdir()
    dirs = []
    for i in range(128):
        d = base / f"{i:x}"
        d.mkdir()
        dirs.append(d)
    u = lab.mount(upper=Branch(dirs[0], "rw"), lowers=[dirs[1]], plain=True)
    batch: list[str] = []
    for d in dirs[2:127]:
        batch.append(f"append:{d}=ro")
        if len(batch) == 20:
            lab.remount(",".join(batch))
            batch = []
    if batch:
        lab.remount(",".join(batch))
    count = len(aufs.branches(u))
    assert count == 127, lab.explain("127 branches", count)
    err = errno_of(lab.remount, f"append:{dirs[127]}=ro")
    assert err == errno.ENOSPC, lab.explain("the 128th branch: ENOSPC", errname(err))
    assert kmsg.wait_for(r"number of branches exceeded"), lab.explain(
        "kernel log: number of branches exceeded", kmsg.lines()
    )
    assert len(aufs.branches(u)) == 127, lab.explain("still 127", len(aufs.branches(u)))


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize(
    ("option", "ok"),
    [
        ("rdblk=255", True),  # fsctx.c: refused only below NAME_MAX
        ("rdblk=254", False),
        ("rdblk=0", True),  # "internal estimation ON"
        ("rdblk=def", True),
        ("rdhash=0", True),
        ("rdhash=def", True),
        ("rdcache=3600", True),  # AUFS_RDCACHE_MAX
        ("rdcache=3601", False),
        ("create=mfs:3600", True),  # AUFS_MFS_MAX_SEC
        ("create=mfs:3601", False),
        ("create=mfsrr:1048576:3600", True),
        ("create=mfsrr:1048576:3601", False),
        ("create=pmfs:3600", True),
        ("create=pmfs:3601", False),
        ("dirwh=0", True),
    ],
)
def test_tuning_limit_at_and_past(lab: Lab, option: str, ok: bool) -> None:
    """aufs(5) "MOUNT OPTIONS" rdblk/rdhash/create, and fsctx.c au_fsctx_parse_param():
    each limit accepted at its value and refused EINVAL one past it, at mount and at
    remount alike."""
    err = errno_of(lab.mount, options=[option], plain=True)
    want = None if ok else errno.EINVAL
    assert err == want, lab.explain(f"mount with {option}: {errname(want)}", errname(err))
    if not ok:
        lab.mount(plain=True)
    err = errno_of(lab.remount, option)
    assert err == want, lab.explain(f"remount with {option}: {errname(want)}", errname(err))


# --- two settings of each flag option ---------------------------------------

#: option: the CONFIG_AUFS_* it needs, or ""
FLAGS = {
    "plink": "",
    "dio": "",
    "dirperm1": "",
    "sum": "",
    "warn_perm": "",
    "verbose": "",
    "trunc_xino": "",
    "dirren": "DIRREN",
    "shwh": "SHWH",
}


def _default_on(flag: str) -> bool:
    """opts.h AuOpt_Def: xino, udba=reval, plink, warn_perm (and dio from aufs6.10)."""
    return flag in ("plink", "warn_perm") or (flag == "dio" and aufs.dio_is_default())


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_flag_option_both_settings(lab: Lab, flag: str) -> None:
    """aufs(5) "MOUNT OPTIONS": each flag option and its no-form, at mount and at
    remount: super.c aufs_show_options() prints the non-default setting only
    (",X" or ",noX"), so each switch shows and hides it."""
    if FLAGS[flag]:
        require_aufs_config(lab.driver, FLAGS[flag])
    on, off = flag, f"no{flag}"
    shown_when_on = not _default_on(flag)
    flags = sysapi.MS_RDONLY if flag == "shwh" else 0  # shwh belongs on a ro union
    u = lab.mount(options=[on], flags=flags, plain=True)
    opts = aufs.mount_options(u)
    want = on if shown_when_on else None
    assert (want is None and on not in opts and off not in opts) or want in opts, lab.explain(
        f"after mount with {on}: {want or 'neither shown'}", opts
    )
    lab.remount(off, flags)
    opts = aufs.mount_options(u)
    want = None if shown_when_on else off
    assert (want is None and on not in opts and off not in opts) or want in opts, lab.explain(
        f"after remount with {off}: {want or 'neither shown'}", opts
    )
    lab.remount(on, flags)
    opts = aufs.mount_options(u)
    want = on if shown_when_on else None
    assert (want is None and on not in opts and off not in opts) or want in opts, lab.explain(
        f"after remount with {on} again: {want or 'neither shown'}", opts
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("attr", ["icexsec", "icexsys", "icextr", "icexusr", "icexoth"])
def test_icex_branch_attribute_prints_as_given(lab: Lab, attr: str) -> None:
    """design/06xattr.txt and aufs(5) "Branch Syntax": the ignore-copy-up-error
    attributes icexsec/icexsys/icextr/icexusr/icexoth are kept and shown on an rw
    branch (opts.c au_brattr table)."""
    require_aufs_config(lab.driver, "XATTR")
    u = lab.mount(upper=Branch(lab.rw, f"rw+{attr}"), lowers=["RO"], plain=True)
    want = [f"{lab.rw}=rw+{attr}", f"{lab.ro}=ro"]
    assert aufs.branches(u) == want, lab.explain(f"branches {want}", aufs.branches(u))


# --- diagnostics and branch management ----------------------------------------


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("readonly", [False, True], ids=["rw-mount", "ro-mount"])
def test_union_without_writable_first_branch_warns(
    lab: Lab, kmsg: KernelWatch, readonly: bool
) -> None:
    """aufs(5) "DIAGNOSTICS": mounting without -o ro and without a writable branch
    warns "first branch should be rw" (opts.c au_opts_verify()); with -o ro it
    does not."""
    lab.mount(upper=None, lowers=["RO"], flags=sysapi.MS_RDONLY if readonly else 0, plain=True)
    found = kmsg.wait_for(r"first branch should be rw", timeout=1.0 if readonly else 5.0)
    assert bool(found) != readonly, lab.explain(
        f"kernel log {'without' if readonly else 'with'} 'first branch should be rw'",
        kmsg.lines(),
    )


@pytest.mark.only_drivers("aufs")
def test_deleting_a_branch_keeps_its_whiteout_base(lab: Lab) -> None:
    """aufs(5) "del:dir": aufs does not remove the whiteout base (.wh..wh.aufs) of a
    deleted branch: append RW2=rw creates RW2/.wh..wh.aufs, del:RW2 leaves it."""
    rw2 = lab.add_branch("RW2")
    lab.mount(plain=True)
    lab.remount(f"append:{rw2}=rw")
    assert lexists(rw2 / AUFS_WH_BASE), lab.explain("append made RW2/.wh..wh.aufs", names(rw2))
    lab.remount(f"del:{rw2}")
    assert lexists(rw2 / AUFS_WH_BASE), lab.explain("del kept RW2/.wh..wh.aufs", names(rw2))


# --- policies: the documented exceptions ------------------------------------


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("op", ["link", "rename"])
def test_link_and_rename_stay_on_the_source_branch(lab: Lab, op: str) -> None:
    """aufs(5) "Exceptions for Policies": link(2) and rename(2) keep their work on the
    branch where the source is when it is writable, whatever the create policy:
    with RW0=rw:RW1=rw and f only on RW1, U/g is made on RW1, nothing on RW0."""
    rw1 = lab.ro  # used as a second writable branch
    put(rw1 / "f", "data")
    u = lab.mount(upper="RW", lowers=[Branch(rw1, "rw")], plain=True)
    if op == "link":
        os.link(u / "f", u / "g")
    else:
        os.rename(u / "f", u / "g")
    assert (rw1 / "g").read_text() == "data", lab.explain("RW1/g made", names(rw1))
    assert not lexists(lab.rw / "g") and not lexists(lab.rw / "f"), lab.explain(
        "nothing copied to RW0", names(lab.rw)
    )


@pytest.mark.only_drivers("aufs")
def test_create_rr_alternates_files_but_not_directories(lab: Lab) -> None:
    """aufs(5) "create=rr": with two writable branches, 10 new files split 5 and 5;
    mkdir(2) is the exception: 10 new directories all land on one branch
    (wbr_policy.c au_wbr_create_rr())."""
    rw1 = lab.ro
    u = lab.mount(upper="RW", lowers=[Branch(rw1, "rw")], options=["create=rr"], plain=True)
    for i in range(10):
        (u / f"f{i}").write_text("x")
    on0 = [n for n in names(lab.rw) if n.startswith("f")]
    on1 = [n for n in names(rw1) if n.startswith("f")]
    assert len(on0) == 5 and len(on1) == 5, lab.explain("files split 5/5", (on0, on1))
    for i in range(10):
        os.mkdir(u / f"d{i}")
    d0 = [n for n in names(lab.rw) if n.startswith("d")]
    d1 = [n for n in names(rw1) if n.startswith("d")]
    assert sorted([len(d0), len(d1)]) == [0, 10], lab.explain("dirs all on one branch", (d0, d1))


@pytest.mark.only_drivers("aufs")
def test_whiteout_on_ro_wh_branch_overrides_the_create_policy(lab: Lab) -> None:
    """aufs(5) "Exceptions for Policies": /aufs = /rw1 + /ro+wh/wh.tgt + /rw2: a name
    whiteouted on an ro+wh branch is created on the nearest writable branch above
    it, whatever the policy picks. With create=rr over RW1, MID=ro+wh, RW2, names
    whiteouted in MID all land on RW1, while other names alternate RW1/RW2."""
    rw2 = lab.add_branch("RW2")
    for i in range(4):
        lab.driver.make_whiteout(lab.ro, f"x{i}")
    u = lab.mount(
        upper="RW",
        lowers=[Branch(lab.ro, "ro+wh"), Branch(rw2, "rw")],
        options=["create=rr"],
        plain=True,
    )
    for i in range(4):
        (u / f"x{i}").write_text("new")
        (u / f"y{i}").write_text("new")
    xs = [n for n in names(lab.rw) if n.startswith("x")]
    assert len(xs) == 4, lab.explain("every whiteouted x made on RW1", (names(lab.rw), names(rw2)))
    ys = [n for n in names(rw2) if n.startswith("y")]
    assert ys, lab.explain("create=rr still sends other names to RW2", names(rw2))


# --- locks, procfs reopen, statfs ---------------------------------------------


def test_file_lock_applies_to_the_union_file_only(lab: Lab) -> None:
    """aufs(5) "Incompatible with an Ordinary Filesystem": flock(2)/fcntl locks apply
    to the aufs file only, not to the file on the branch: a lock held through U
    does not stop a lock taken on RW/f directly (overlayfs alike)."""
    put(lab.rw / "f", "x")
    u = lab.mount()
    with open(u / "f") as held, open(lab.rw / "f") as direct:
        fcntl.flock(held, fcntl.LOCK_EX)
        err = errno_of(fcntl.flock, direct, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert err is None, lab.explain("flock on RW/f while U/f is locked: granted", errname(err))
        with open(u / "f") as second:
            err = errno_of(fcntl.flock, second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert err == errno.EWOULDBLOCK, lab.explain(
            "a second flock through U: EWOULDBLOCK", errname(err)
        )


@pytest.mark.parametrize("where", ["lower", "upper"])
def test_removed_file_reopens_through_procfs(lab: Lab, where: str) -> None:
    """aufs(5) "Incompatible with an Ordinary Filesystem": open U/f, unlink it, then
    open /proc/self/fd/N: aufs follows ext2 and opens the removed non-directory,
    reading its data."""
    put((lab.ro if where == "lower" else lab.rw) / "f", "data")
    u = lab.mount()
    fd = os.open(u / "f", os.O_RDONLY)
    try:
        os.unlink(u / "f")
        fd2 = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
        try:
            got = os.read(fd2, 100)
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
    assert got == b"data", lab.explain("the reopened removed file reads 'data'", got)


@pytest.mark.only_drivers("aufs")
def test_statfs_without_sum_reports_the_first_branch(lab: Lab) -> None:
    """aufs(5) "Incompatible with an Ordinary Filesystem": with nosum (the default)
    statfs returns the first branch's numbers except namelen, which is 242
    (super.c aufs_statfs())."""
    u = lab.mount(plain=True)
    got, first = sysapi.statfs(u), sysapi.statfs(lab.rw)
    assert (got.f_blocks, got.f_bsize, got.f_files) == (
        first.f_blocks,
        first.f_bsize,
        first.f_files,
    ), lab.explain("blocks, bsize, files as RW's fs", (got, first))
    assert got.f_namelen == AUFS_MAX_NAMELEN, lab.explain("f_namelen 242", got.f_namelen)


# --- design/04branch.txt: branch management --------------------------------


@pytest.mark.only_drivers("aufs")
def test_deleting_a_branch_under_a_merged_directory_in_use(lab: Lab) -> None:
    """design/04branch.txt "Delete a Branch": a cached directory in use (a cwd, no
    open file) does not make the branch busy as long as the same directory exists
    on another branch: with cwd in U/d (d in RO and RO2), del:RO2 succeeds and U/d
    still reads. (An open fd on U/d is a file opened on RO2 too: EBUSY, MNT-10.)"""
    put(lab.ro / "d" / "a", "a")
    put(lab.ro2 / "d" / "b", "b")
    u = lab.mount(plain=True)
    back = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    os.chdir(u / "d")
    try:
        err = errno_of(lab.remount, f"del:{lab.ro2}")
        assert err is None, lab.explain("del:RO2 with cwd in U/d (d also on RO): 0", errname(err))
        assert sorted(names(u / "d")) == ["a"], lab.explain("U/d lists RO's a", names(u / "d"))
    finally:
        os.fchdir(back)
        os.close(back)


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("mode", ["write", "read"])
def test_mod_rw_to_ro_takes_write_access_from_open_files(lab: Lab, mode: str) -> None:
    """design/04branch.txt "Modify the Permission of a Branch" says rw -> ro is refused
    while a file on the branch is open for write; the source does otherwise and the
    source decides: branch.c au_br_mod_files_ro() drops FMODE_WRITE from such files
    (as the VFS's old mark_files_ro did) and mod returns 0. A later write through the
    fd must then fail, leaving RW/f unchanged; a reader is not affected."""
    put(lab.rw / "f", "data")
    u = lab.mount(plain=True)
    fd = os.open(u / "f", os.O_WRONLY if mode == "write" else os.O_RDONLY)
    try:
        err = errno_of(lab.remount, f"mod:{lab.rw}=ro")
        assert err is None, lab.explain(f"mod:RW=ro with U/f open for {mode}: 0", errname(err))
        if mode == "write":
            werr = errno_of(os.write, fd, b"X")
            assert werr is not None, lab.explain("a write through the old fd fails", werr)
        else:
            assert os.read(fd, 10) == b"data", lab.explain("the reader still reads", None)
    finally:
        os.close(fd)
    assert (lab.rw / "f").read_text() == "data", lab.explain("RW/f unchanged", None)


# --- design/02struct.txt: whiteout bases, pseudo-links ------------------------


def test_write_to_a_removed_lower_file_in_a_removed_directory(lab: Lab) -> None:
    """design/02struct.txt "Step-Parent Dir": RO/d/f opened through U, then f and d
    removed through U, then written: the write succeeds (aufs copies f up into
    .wh..wh.orph and unlinks it there), nothing shows in U or stays on RW."""
    put(lab.ro / "d" / "f", "lower")
    u = lab.mount()
    fd = os.open(u / "d" / "f", os.O_WRONLY)
    try:
        os.unlink(u / "d" / "f")
        os.rmdir(u / "d")
        written = os.write(fd, b"X")
    finally:
        os.close(fd)
    assert written == 1, lab.explain("write to the removed file: 1 byte", written)
    assert not lexists(u / "d"), lab.explain("U/d gone", names(u))
    assert (lab.ro / "d" / "f").read_text() == "lower", lab.explain("RO/d/f untouched", None)
    if isinstance(lab.driver, AufsDriver):
        orph = lab.rw / ".wh..wh.orph"
        assert orph.is_dir() and os.listdir(orph) == [], lab.explain(
            "RW/.wh..wh.orph empty again", None, orph
        )


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("plink", ["plink", "noplink"])
def test_pseudo_link_serves_the_other_name_after_unlink(lab: Lab, plink: str) -> None:
    """design/02struct.txt "Pseudo-link" and aufs(5) "The behaviours of plink and
    noplink": RO/a and RO/b hardlinked; append to U/a, unlink U/a, read U/b: with
    plink U/b returns the new data from the pseudo-link; with noplink U/b cannot
    follow and shows RO/b's old data."""
    put(lab.ro / "a", "old")
    os.link(lab.ro / "a", lab.ro / "b")
    u = lab.mount(options=[plink], plain=True)
    with open(u / "a", "a") as fh:
        fh.write("+new")
    os.unlink(u / "a")
    want = "old+new" if plink == "plink" else "old"
    got = (u / "b").read_text()
    assert got == want, lab.explain(f"{plink}: U/b reads {want!r}", got)


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("diropq", ["w", "a"])
@pytest.mark.parametrize("onto", ["fresh-name", "whiteouted-name"])
def test_renamed_directory_opacity_follows_diropq(lab: Lab, diropq: str, onto: str) -> None:
    """aufs(5) "diropq=whiteouted | w | always | a": a directory renamed onto a name
    that was whiteouted becomes opaque (.wh..wh..opq) under either setting, so the
    lower directory of that name stays hidden; renamed to a fresh name it is opaque
    only with diropq=a (i_op_ren.c au_ren_diropq())."""
    put(lab.ro / "t" / "c", "lower child")
    u = lab.mount(options=[f"diropq={diropq}"], plain=True)
    (u / "s").mkdir()
    (u / "s" / "mine").write_text("m")
    if onto == "whiteouted-name":
        os.unlink(u / "t" / "c")
        os.rmdir(u / "t")
        target = "t"
    else:
        target = "fresh"
    os.rename(u / "s", u / target)
    opaque = lab.driver.is_opaque(lab.rw / target)
    want = diropq == "a" or onto == "whiteouted-name"
    assert opaque == want, lab.explain(
        f"RW/{target} {'opaque' if want else 'not opaque'} (diropq={diropq})",
        opaque,
        lab.rw / target,
    )
    assert names(u / target) == ["mine"], lab.explain(
        f"U/{target} lists only mine", names(u / target)
    )


def test_rewinddir_shows_entries_made_meanwhile(lab: Lab) -> None:
    """aufs(5) "Virtual or Vertical Directory Block": an open directory keeps its
    merged entry list until its position goes back to zero: after rewinddir(3) the
    same stream lists an entry created (and drops one removed) meanwhile."""
    put(lab.ro / "d" / "old", "o")
    put(lab.ro / "d" / "gone", "g")
    u = lab.mount()

    def change() -> None:
        (u / "d" / "new").write_text("n")
        os.unlink(u / "d" / "gone")

    first, second = sysapi.readdir_around(u / "d", change)
    assert sorted(first) == ["gone", "old"], lab.explain("first pass: gone, old", first)
    assert sorted(second) == ["new", "old"], lab.explain("after rewinddir: new, old", second)


def test_exclusive_create_of_a_readonly_mode_file_opens_it_for_writing(lab: Lab) -> None:
    """design/03atomic_open.txt: open(O_CREAT|O_EXCL|O_WRONLY, 0400) by a non-root
    user must create the file and return a writable fd (POSIX), although the
    branch file's mode would refuse a second open for writing."""
    put(lab.ro / "d" / "x", "x")
    os.chown(lab.ro / "d", 1000, 1000)
    u = lab.mount()

    def create() -> int:
        fd = os.open(u / "d" / "new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o400)
        try:
            return os.write(fd, b"data")
        finally:
            os.close(fd)

    outcome = fsops.run_as(1000, 1000, create)
    assert outcome.ok and outcome.value == "4", lab.explain(
        "uid 1000: open(O_CREAT|O_EXCL|O_WRONLY, 0400) and write 4 bytes", outcome
    )
    st = (u / "d" / "new").stat()
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == 1000, lab.explain(
        "U/d/new mode 0400, owner 1000", None, u / "d" / "new"
    )
    assert (u / "d" / "new").read_text() == "data", lab.explain("U/d/new holds data", None)
