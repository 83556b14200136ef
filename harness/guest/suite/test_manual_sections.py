"""The aufs manual's remaining design notes: 06fhsm, 07export, 10dynop, and RDU
(issue 15, "every documented rule, every operation").

Each check cites the note (Documentation/filesystems/aufs/design/ in
aufs-standalone) or the aufs(5) section it follows and the fs/aufs source line
that decides the outcome (aufs5.10.140; aufs6.1 is the same at every line cited
unless a check says otherwise). The default kernel fragment leaves
CONFIG_AUFS_FHSM off: 06fhsm is covered as what aufs does without it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs import aufs, sysapi
from unionfs.drivers import AufsDriver, Branch
from unionfs.fsops import errname, errno_of, names, put
from unionfs.gates import aufs_config_has, require_aufs_config
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

# --- 06fhsm: File-based Hierarchical Storage Management, when not configured ---


def _require_no_fhsm(lab: Lab) -> None:
    require_aufs_config(lab.driver, "XATTR")  # only to skip when the config is unknown
    if aufs_config_has("FHSM"):
        pytest.skip("CONFIG_AUFS_FHSM is set: these checks cover aufs without it")


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_fhsm_branch_attribute_is_ignored_without_config_aufs_fhsm(
    lab: Lab, kmsg: KernelWatch
) -> None:
    """06fhsm: "fhsm" is a branch attribute only with CONFIG_AUFS_FHSM (opts.c brattr
    table, #ifdef CONFIG_AUFS_FHSM). Without it br_attr_val() does not match it, logs
    "ignored branch attribute fhsm" and drops it (opts.c:120): the mount succeeds
    with plain rw and ro branches, and the union works."""
    _require_no_fhsm(lab)
    put(lab.ro / "f", "lower")
    u = lab.mount(upper=Branch(lab.rw, "rw+fhsm"), lowers=[Branch(lab.ro, "ro+fhsm")], plain=True)
    brs = aufs.branches(u)
    assert [b.rsplit("=", 1)[-1] for b in brs] == ["rw", "ro"], lab.explain(
        "branches rw and ro without +fhsm", brs
    )
    assert kmsg.wait_for(r"ignored branch attribute fhsm"), lab.explain(
        "kernel log: ignored branch attribute fhsm", kmsg.lines()
    )
    with open(u / "f", "a") as fh:
        fh.write("+")
    assert (lab.rw / "f").read_text() == "lower+", lab.explain("copy-up to RW", None, lab.rw / "f")


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_fhsm_sec_option_is_ignored_without_config_aufs_fhsm(lab: Lab, kmsg: KernelWatch) -> None:
    """06fhsm / aufs(5) "fhsm_sec": without CONFIG_AUFS_FHSM the option is parsed as
    Opt_ignore (fsctx.c:402): mount and remount succeed, the kernel logs
    "ignored fhsm_sec" (fsctx.c:1035 warnfc) and /proc/mounts shows no fhsm_sec."""
    _require_no_fhsm(lab)
    u = lab.mount(options=["fhsm_sec=5"], plain=True)
    assert kmsg.wait_for(r"ignored fhsm_sec"), lab.explain(
        "kernel log: ignored fhsm_sec", kmsg.lines()
    )
    opts = aufs.mount_options(u)
    assert not [o for o in opts if o.startswith("fhsm")], lab.explain("no fhsm_sec shown", opts)
    lab.remount("fhsm_sec=7")
    opts = aufs.mount_options(u)
    assert not [o for o in opts if o.startswith("fhsm")], lab.explain("still none", opts)


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_fhsm_fd_ioctl_without_config_aufs_fhsm(lab: Lab) -> None:
    """06fhsm: the FHSM daemon connects with ioctl AUFS_CTL_FHSM_FD on the union's
    root. Without CONFIG_AUFS_FHSM au_fhsm_fd() is a stub returning EOPNOTSUPP
    (super.h:332); on any other directory aufs refuses with ENOTTY (ioctl.c:151)."""
    _require_no_fhsm(lab)
    (lab.ro / "d").mkdir()
    u = lab.mount(plain=True)
    for path, want in ((u, errno.EOPNOTSUPP), (u / "d", errno.ENOTTY)):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            err = errno_of(aufs.fhsm_fd, fd)
        finally:
            os.close(fd)
        assert err == want, lab.explain(
            f"AUFS_CTL_FHSM_FD on {lab.label_of(path)}: {errname(want)}", errname(err)
        )


# --- 07export: file handles through the union (CONFIG_AUFS_EXPORT) ---

#: export.c aufs_encode_fh(): the handle type aufs returns for a non-root inode
AUFS_FH_TYPE = 99


@contextlib.contextmanager
def _opened(path: Path, flags: int = os.O_RDONLY) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def _reopen(u: Path, handle: sysapi.FileHandle, flags: int = os.O_RDONLY) -> bytes | int:
    """The contents open_by_handle_at(U's mount fd, handle) reads, or the errno."""
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as mfd:
        try:
            fd = sysapi.open_by_handle_at(mfd, handle, flags)
        except OSError as exc:
            return exc.errno or -1
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _mount_for_export(lab: Lab, xino: bool) -> Path:
    require_aufs_config(lab.driver, "EXPORT")
    return lab.mount(options=[] if xino else ["noxino"], plain=True)


XINO = pytest.mark.parametrize("xino", [True, False], ids=["xino", "noxino"])
EVICT = pytest.mark.parametrize("evict", [False, True], ids=["cached", "evicted"])


@pytest.mark.only_drivers("aufs")
@XINO
@EVICT
def test_file_handle_through_the_union_reopens_the_file(lab: Lab, xino: bool, evict: bool) -> None:
    """07export: encode_fh() gives every non-root inode a handle of type 99 (export.c
    aufs_encode_fh()); fh_to_dentry() finds the inode in the cache (decode_by_ino), or
    by the parent's readdir matching the inode number (decode_by_dir_ino), which
    needs the inode number to survive eviction: xino. So a handle reopens the file
    while it is cached, with or without xino; after the inode was evicted (drop
    caches) only with xino, and without xino the lookup by number finds nothing:
    ESTALE ("instead of ENOENT", export.c:402)."""
    (lab.ro / "d").mkdir()
    put(lab.ro / "d" / "f", "lower")
    u = _mount_for_export(lab, xino)
    handle = sysapi.name_to_handle_at(u / "d" / "f")
    assert handle.handle_type == AUFS_FH_TYPE, lab.explain("handle type 99", handle)
    if evict:
        sysapi.drop_caches()
    got = _reopen(u, handle)
    want: bytes | int = b"lower" if xino or not evict else errno.ESTALE
    assert got == want, lab.explain(
        f"open_by_handle_at ({'xino' if xino else 'noxino'}, "
        f"{'evicted' if evict else 'cached'}): {want!r}",
        got if isinstance(got, bytes) else errname(got),
    )


@pytest.mark.only_drivers("aufs")
@EVICT
def test_file_handle_follows_the_file_through_copy_up(lab: Lab, evict: bool) -> None:
    """07export: the handle names the aufs inode (branch id, inode number, generation
    from xigen), not the branch file: after copy-up to RW it opens the upper copy
    (xino keeps the inode number, export.c decode_by_ino / decode_by_dir_ino)."""
    (lab.ro / "d").mkdir()
    put(lab.ro / "d" / "f", "lower")
    u = _mount_for_export(lab, xino=True)
    handle = sysapi.name_to_handle_at(u / "d" / "f")
    with open(u / "d" / "f", "w") as fh:
        fh.write("upper")
    assert (lab.rw / "d" / "f").read_text() == "upper", lab.explain(
        "copied up", None, lab.rw / "d" / "f"
    )
    if evict:
        sysapi.drop_caches()
    got = _reopen(u, handle)
    assert got == b"upper", lab.explain(
        "open_by_handle_at after copy-up reads the upper copy",
        got if isinstance(got, bytes) else errname(got),
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("how", ["unlink-through-union", "removed-on-branch"])
def test_file_handle_of_a_removed_file_is_stale(lab: Lab, how: str) -> None:
    """07export: once the file is gone the handle is ESTALE, never another file: removed
    through the union (whiteout; the inode dies, decode_by_dir_ino() finds no name with
    its number: ESTALE, export.c:402), or removed on its branch behind aufs's back and
    the cache dropped (the same path)."""
    (lab.ro / "d").mkdir()
    put(lab.ro / "d" / "f", "lower")
    put(lab.ro / "d" / "g", "other")
    u = _mount_for_export(lab, xino=True)
    handle = sysapi.name_to_handle_at(u / "d" / "f")
    if how == "unlink-through-union":
        os.unlink(u / "d" / "f")
    else:
        os.unlink(lab.ro / "d" / "f")
    sysapi.drop_caches()
    got = _reopen(u, handle)
    assert got == errno.ESTALE, lab.explain(
        f"open_by_handle_at after {how}: ESTALE", got if isinstance(got, bytes) else errname(got)
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_file_handle_after_its_branch_was_deleted_is_stale(lab: Lab) -> None:
    """07export: a handle carries the branch id (export.c aufs_encode_fh() Fh_br_id);
    after that branch is deleted si_nfsd_read_lock() finds no index for it: ESTALE
    (export.c:331), even while the file's name is still visible from another branch."""
    put(lab.ro2 / "f", "ro2")
    u = _mount_for_export(lab, xino=True)
    handle = sysapi.name_to_handle_at(u / "f")
    put(lab.ro / "f", "ro")  # the name stays visible after RO2 goes
    lab.remount(f"del:{lab.ro2}")
    got = _reopen(u, handle)
    assert got == errno.ESTALE, lab.explain(
        "open_by_handle_at after del of its branch: ESTALE",
        got if isinstance(got, bytes) else errname(got),
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_directory_handle_through_the_union(lab: Lab) -> None:
    """07export: directories get handles too (type 99); reopened with O_DIRECTORY
    the fd lists the merged directory (both branches' names)."""
    (lab.ro / "d").mkdir()
    (lab.ro2 / "d").mkdir()
    put(lab.ro / "d" / "a", "a")
    put(lab.ro2 / "d" / "b", "b")
    u = _mount_for_export(lab, xino=True)
    handle = sysapi.name_to_handle_at(u / "d")
    assert handle.handle_type == AUFS_FH_TYPE, lab.explain("handle type 99", handle)
    sysapi.drop_caches()
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as mfd:
        fd = sysapi.open_by_handle_at(mfd, handle, os.O_RDONLY | os.O_DIRECTORY)
    try:
        listed = sorted(os.listdir(fd))
    finally:
        os.close(fd)
    assert listed == ["a", "b"], lab.explain("the merged listing", listed)


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_file_on_a_non_exportable_branch_has_no_handle(lab: Lab) -> None:
    """07export: encode_fh() needs the branch filesystem's export operations; ramfs
    has none (EPERM inside, "ramfs branch is not exportable", export.c:740), which
    name_to_handle_at(2) reports as EOVERFLOW (fs/fhandle.c: FILEID_INVALID)."""
    require_aufs_config(lab.driver, "EXPORT", "BR_RAMFS")
    ram = lab.tmp / "ram"
    ram.mkdir()
    lab.mount_other("ramfs", ram, "ramfs", "mode=0755")
    put(ram / "f", "on ramfs")
    u = lab.mount(lowers=[ram], plain=True)
    err = errno_of(sysapi.name_to_handle_at, u / "f")
    assert err == errno.EOVERFLOW, lab.explain("name_to_handle_at: EOVERFLOW", errname(err))


# --- 10dynop: address_space operations chosen per branch filesystem ---


@pytest.mark.only_branch_fs("ext4")
def test_o_direct_follows_the_branch_filesystem_of_each_file(lab: Lab) -> None:
    """10dynop: aufs builds a file's address_space_operations from its branch's
    (dynop.c dy_aop(): direct_IO only when the branch has it, and `dio` is set,
    dy_adx()), per branch, and rebuilds them when the file moves to another branch
    (cpup.c:902 au_dy_iaop() after copy-up). So in one union with `dio`, open(O_DIRECT)
    of a file behaves as on its branch: a tmpfs lower (no direct_IO before Linux 6.6)
    and an ext4 lower each as their own filesystem, and after copy-up to the ext4 RW
    as RW. overlayfs opens the real file with O_DIRECT: the same rule holds."""
    tmp_br = lab.tmp / "tbr"
    tmp_br.mkdir()
    lab.mount_other("tmpfs", tmp_br, "tmpfs", "mode=0755,size=8m")
    put(tmp_br / "t", b"t" * 4096)
    put(lab.ro / "e", b"e" * 4096)
    own = {
        name: errno_of(os.open, path, os.O_RDONLY | os.O_DIRECT)
        for name, path in (("t", tmp_br / "t"), ("e", lab.ro / "e"))
    }
    aufs_driver = isinstance(lab.driver, AufsDriver)
    u = lab.mount(options=["dio"] if aufs_driver else [], lowers=[tmp_br, "RO"], plain=True)
    for name in ("t", "e"):
        got = errno_of(os.open, u / name, os.O_RDONLY | os.O_DIRECT)
        assert got == own[name], lab.explain(
            f"O_DIRECT open of U/{name} as on its branch: {errname(own[name])}", errname(got)
        )
    rw_own = None
    for name in ("t", "e"):
        with open(u / name, "ab") as fh:  # copy-up to RW (ext4)
            fh.write(b"+")
        rw_own = errno_of(os.open, lab.rw / name, os.O_RDONLY | os.O_DIRECT)
        got = errno_of(os.open, u / name, os.O_RDONLY | os.O_DIRECT)
        assert got == rw_own, lab.explain(
            f"after copy-up, O_DIRECT open of U/{name} as on RW: {errname(rw_own)}", errname(got)
        )


@pytest.mark.only_drivers("aufs")
@pytest.mark.only_branch_fs("ext4")
def test_remount_nodio_takes_direct_io_from_open_files_too(lab: Lab) -> None:
    """10dynop: a remount changing dio rewrites every shared operations table
    (fsctx.c:87 au_dy_arefresh() -> dy_adx()), so after `remount,nodio` an inode
    already in use loses direct_IO: O_DIRECT open is EINVAL, unless the release copies
    the branch file's FMODE_CAN_ODIRECT in ->open() (from 20240624, aufs.py
    copies_can_odirect) or dio is the default (aufs6.10, `nodio` ignored)."""
    put(lab.ro / "e", b"e" * 4096)
    if errno_of(os.open, lab.ro / "e", os.O_RDONLY | os.O_DIRECT) is not None:
        pytest.skip("RO's ext4 refuses O_DIRECT itself")
    u = lab.mount(options=["dio"], plain=True)
    keep = os.open(u / "e", os.O_RDONLY)  # the inode stays in use across the remount
    try:
        assert errno_of(os.open, u / "e", os.O_RDONLY | os.O_DIRECT) is None, lab.explain(
            "with dio: O_DIRECT open works", None
        )
        lab.remount("nodio")
        got = errno_of(os.open, u / "e", os.O_RDONLY | os.O_DIRECT)
    finally:
        os.close(keep)
    still = aufs.dio_is_default() or aufs.copies_can_odirect()
    want = None if still else errno.EINVAL
    assert got == want, lab.explain(
        f"after remount,nodio: {errname(want)} ({aufs.version_string()})", errname(got)
    )


# --- RDU: readdir in user space (CONFIG_AUFS_RDU, fs/aufs/rdu.c) ---


def _rdu_lab(lab: Lab) -> Path:
    require_aufs_config(lab.driver, "RDU")
    put(lab.rw / "a", "a")
    put(lab.ro / "b", "b")
    put(lab.ro / "gone", "g")
    put(lab.ro2 / "b", "b2")
    put(lab.ro2 / "c", "c")
    (lab.ro2 / "dir").mkdir()
    return lab.rw


def _by_branch(entries: list[aufs.RduEntry]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in entries:
        out.setdefault(e.bindex, []).append(e.name)
    return {b: sorted(v) for b, v in out.items()}


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
@pytest.mark.parametrize("size", [64 * 1024, 128], ids=["one-call", "128-byte-buffer"])
def test_rdu_lists_every_branch_entry_with_its_index(lab: Lab, size: int) -> None:
    """aufs(5) "rdu" / rdu.c au_rdu(): AUFS_CTL_RDU copies out each branch directory's
    raw entries, tagged with the branch index, whiteouts and duplicates included (the
    merging is left to user space, aufs-util libau). With a buffer too small for all,
    a call stops full (au_rdu_fill(): rdu->full) and the cookie resumes the next call
    where it stopped: the calls together give every entry exactly once."""
    _rdu_lab(lab)
    u = lab.mount(plain=True)
    os.unlink(u / "gone")  # RW/.wh.gone
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as fd:
        entries, calls = aufs.Rdu(fd, size).all()
    got = _by_branch(entries)
    want = {i: sorted([".", "..", *os.listdir(p)]) for i, p in enumerate((lab.rw, lab.ro, lab.ro2))}
    assert got == want, lab.explain("each branch's entries under its index", got)
    assert ".wh.gone" in got[0], lab.explain("the whiteout is listed raw", got[0])
    assert len(entries) == len({(e.bindex, e.name) for e in entries}), lab.explain(
        "no entry twice", [(e.bindex, e.name) for e in entries]
    )
    if size < 1024:
        assert len(calls) > 1 and calls[0].full == 1, lab.explain(
            "a 128-byte buffer fills: several calls, the first full",
            [(c.rent, c.full, c.cookie) for c in calls],
        )
    else:
        assert len(calls) == 1 and calls[0].full == 0, lab.explain(
            "one call, not full", [(c.rent, c.full) for c in calls]
        )


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_rdu_ino_gives_the_union_inode_numbers(lab: Lab) -> None:
    """rdu.c au_rdu_ino(): AUFS_CTL_RDU_INO turns each entry's branch inode number into
    the union's (au_ino(), the xino table): for every visible name, the topmost entry's
    translation equals lstat() through the union."""
    _rdu_lab(lab)
    u = lab.mount(plain=True)
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as fd:
        rdu = aufs.Rdu(fd)
        entries, _ = rdu.all()
        top: dict[str, aufs.RduEntry] = {}
        for e in sorted(entries, key=lambda e: -e.bindex):
            top[e.name] = e  # the lowest index wins
        visible = [top[n] for n in sorted(names(u))]
        inos = rdu.inos(visible)
    want = [os.lstat(u / e.name).st_ino for e in visible]
    assert inos == want, lab.explain(
        "RDU_INO == st_ino through the union", list(zip([e.name for e in visible], inos, want))
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
@pytest.mark.parametrize("shwh", [False, True], ids=["noshwh", "shwh"])
def test_rdu_reports_the_shwh_option(lab: Lab, shwh: bool) -> None:
    """rdu.c au_rdu(): the call reports whether whiteouts are to be shown (rdu->shwh
    from the SHWH mount flag) so that user space merges accordingly: 1 with `shwh`,
    0 without (aufs(5) "shwh", CONFIG_AUFS_SHWH)."""
    _rdu_lab(lab)
    if shwh:
        require_aufs_config(lab.driver, "SHWH")
    u = lab.mount(
        options=["shwh"] if shwh else [],
        upper=None,
        lowers=[Branch(lab.rw, "ro"), Branch(lab.ro, "ro")],
        plain=True,
    )
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as fd:
        got = aufs.Rdu(fd).call()
    assert got.shwh == int(shwh), lab.explain(f"rdu.shwh == {int(shwh)}", got.shwh)


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
@pytest.mark.parametrize("rdblk", ["", "rdblk=1024", "rdblk=0"])
def test_rdu_block_size_follows_rdblk(lab: Lab, rdblk: str) -> None:
    """aufs(5) "rdblk" / rdu.c au_rdu(): a call with blk 0 gets the mount's rdblk back
    (512 by default, AUFS_RDBLK_DEF; 1024 as set); with rdblk=0 ("internal estimation")
    the directory's size estimate (au_dir_size()), never 0."""
    _rdu_lab(lab)
    u = lab.mount(options=[rdblk] if rdblk else [], plain=True)
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as fd:
        got = aufs.Rdu(fd).call()
    if rdblk == "rdblk=0":
        assert got.blk > 0, lab.explain("rdblk=0: an estimate above 0", got.blk)
    else:
        want = 1024 if rdblk else 512
        assert got.blk == want, lab.explain(f"blk == {want}", got.blk)


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_rdu_refuses_a_wrong_struct_size_and_non_directories(lab: Lab) -> None:
    """rdu.c au_rdu_verify(): verify[AufsCtlRduV_SZ] must equal sizeof(struct aufs_rdu)
    (64 on x86_64), else EINVAL; on a regular file aufs's non-directory ioctl knows no
    RDU: ENOTTY (ioctl.c aufs_ioctl_nondir(), "do not call the lower")."""
    _rdu_lab(lab)
    u = lab.mount(plain=True)
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as fd:
        err = errno_of(aufs.Rdu(fd).call, aufs.RDU_SIZE - 8)
    assert err == errno.EINVAL, lab.explain("verify size 56: EINVAL", errname(err))
    with _opened(u / "a") as fd:
        err = errno_of(aufs.Rdu(fd).call)
    assert err == errno.ENOTTY, lab.explain("RDU on a regular file: ENOTTY", errname(err))


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
@pytest.mark.parametrize("rdcache", [3600, 0])
def test_rdcache_keeps_a_listing_that_rdu_reads_fresh(lab: Lab, rdcache: int) -> None:
    """aufs(5) "rdcache": a directory's merged listing (vdir) is reused for rdcache
    seconds unless aufs itself changed the directory (vdir.c au_vdir_init(): version
    or expiry). With udba=none a file added on a branch behind aufs's back is
    therefore missing from getdents for rdcache=3600 and present for rdcache=0, while
    RDU reads the branches on every call and lists it in both."""
    _rdu_lab(lab)
    u = lab.mount(options=["udba=none", f"rdcache={rdcache}"], plain=True)
    before = names(u)
    put(lab.ro2 / "new", "behind aufs's back")
    time.sleep(0.05)  # let jiffies pass the vdir's timestamp (rdcache=0)
    after = names(u)
    with _opened(u, os.O_RDONLY | os.O_DIRECTORY) as fd:
        entries, _ = aufs.Rdu(fd).all()
    assert "new" not in before, lab.explain("not there before", before)
    if rdcache:
        assert "new" not in after, lab.explain("rdcache=3600: the cached listing", after)
    else:
        assert "new" in after, lab.explain("rdcache=0: listed again", after)
    assert (2, "new") in {(e.bindex, e.name) for e in entries}, lab.explain(
        "RDU lists RO2/new", _by_branch(entries)
    )


#: include/uapi/linux/fs.h FIBMAP = _IO(0x00, 1): the block of a file block
FIBMAP = 1


@pytest.mark.only_drivers("aufs")
def test_fibmap_is_refused_through_the_union_whatever_the_branch(lab: Lab) -> None:
    """10dynop: dy_aop() copies an operation only where the branch has it AND aufs
    defines it (DySet, dynop.c); aufs_aop has no bmap ("no bmap, no block device",
    file.c:849), so FIBMAP on a union file is EINVAL (fs/ioctl.c ioctl_fibmap() ->
    bmap() without a_ops->bmap), also where the branch file itself maps its blocks
    (ext4)."""
    put(lab.ro / "f", b"x" * 8192)
    os.sync()
    own = bytearray(4)
    with _opened(lab.ro / "f") as fd:
        own_err = errno_of(fcntl.ioctl, fd, FIBMAP, own, True)
    u = lab.mount(plain=True)
    union = bytearray(4)
    with _opened(u / "f") as fd:
        err = errno_of(fcntl.ioctl, fd, FIBMAP, union, True)
    assert err == errno.EINVAL, lab.explain(
        f"FIBMAP on U/f: EINVAL (on RO/f itself: {errname(own_err)})", errname(err)
    )
