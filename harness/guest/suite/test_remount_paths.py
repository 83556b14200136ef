"""Remount paths users hit (issue 15, kind 1): a remount through a bind mount of a
union subdirectory, MS_REMOUNT with no data, and umount2("/") inside a chroot.

A remount must return at once. On aufs5.10.140 a superblock remount issued through
a bind mount of a union subdirectory deadlocks: fs_context hands aufs the bound
subdirectory as fc->root, and au_fsctx_reconfigure() locks it as if it were the
root (fixed by "aufs: bugfix, fc->root may not be real root", 2024-06-25, in
aufs6.1, aufs6.6 and aufs6.x-rcN: fs/aufs/fsctx.c uses sb->s_root instead). The
check then never returns: the hung-task detector reports the blocked remount
and the harness's watchdog declares it hung.
"""

from __future__ import annotations

import errno
import functools
import os

import pytest

from unionfs import sysapi
from unionfs.drivers import Branch
from unionfs.fsops import errname, errno_of, put, run_in_child
from unionfs.lab import Lab

pytestmark = pytest.mark.fs_independent

#: (flags, what) of the remounts issued through the bind mount
_BIND_REMOUNTS = {
    # the bind mount's own flags only (fs/namespace.c change_mount_ro_state): aufs
    # is not called
    "bind-flags-readonly": (sysapi.MS_REMOUNT | sysapi.MS_BIND | sysapi.MS_RDONLY, None),
    # the superblock, reached through the bind mount: aufs's reconfigure runs with
    # fc->root = the bound subdirectory (deadlocks aufs5.10.140, fsctx.c)
    "superblock-no-data": (sysapi.MS_REMOUNT, None),
}


def _readonly(path: os.PathLike[str]) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _private_mount_namespace() -> None:
    """A child's own mount namespace: what it mounts, nobody else's /proc/mounts
    shows, so a deadlocked aufs superblock cannot block a neighbour's mountinfo
    read (aufs_show_options() takes the superblock's lock) and the hung-task
    report names this check's child only."""
    sysapi.unshare(sysapi.CLONE_NEWNS)
    sysapi.mount("none", "/", None, sysapi.MS_REC | sysapi.MS_PRIVATE, None)


def _bind_and_remount(lab: Lab, how: str) -> str:
    """In the child: mount U, bind U/a onto U/b, remount the bind mount as `how`
    says; then read /proc/mounts and U/b/f. Returns what it saw; raises OSError
    with the errno of the first call that failed. The namespace, and every mount
    in it, goes away with the child."""
    u = lab.u
    mnt = lab.driver.mount(u, Branch(lab.rw, "rw"), [Branch(lab.ro, lab.optset.lower_perm)])
    del mnt  # unmounted with the namespace
    sysapi.mount(str(u / "a"), u / "b", None, sysapi.MS_BIND, None)
    flags, data = _BIND_REMOUNTS[how]
    sysapi.mount("none", u / "b", None, flags, data)
    listed = sysapi.proc_mounts_line(u) is not None
    content = (u / "b" / "f").read_text()
    return f"listed={listed} content={content}"


@pytest.mark.parametrize("how", sorted(_BIND_REMOUNTS))
def test_remount_through_bind_mount_of_union_subdir_returns(lab: Lab, how: str) -> None:
    """Kind 1(a): bind-mount U/a onto U/b, then remount the bind mount (MS_REMOUNT with
    no data; MS_REMOUNT|MS_BIND|MS_RDONLY): returns 0 at once, /proc/mounts stays
    readable, U/b reads RO/a. aufs fsctx.c au_fsctx_reconfigure() (fixed 2024-06-25:
    fc->root may not be the real root). Runs in a child's own mount namespace; on
    aufs5.10.140 the child never returns (hung-task report, then `hung`)."""
    put(lab.ro / "a" / "f", "lower")
    (lab.ro / "b").mkdir()
    outcome = run_in_child(_private_mount_namespace, _bind_and_remount, lab, how)
    assert outcome.ok, lab.explain(
        f"mount, bind and remount ({how}) in a private namespace: 0", outcome
    )
    assert outcome.value == repr("listed=True content=lower"), lab.explain(
        "U still in /proc/mounts and U/b/f reads RO/a/f", outcome.value
    )


def test_remount_with_null_data_flips_readonly_and_back(lab: Lab) -> None:
    """Kind 1(b): MS_REMOUNT|MS_RDONLY with NULL data makes the union read-only (writes
    EROFS, 0 returned), MS_REMOUNT with NULL data makes it writable again; no branch
    changes. aufs fsctx.c au_fsctx_reconfigure() with no options."""
    put(lab.ro / "f", "lower")
    u = lab.mount()
    before = sysapi.proc_mounts_line(u)
    err = errno_of(sysapi.mount, "none", u, None, sysapi.MS_REMOUNT | sysapi.MS_RDONLY, None)
    assert err is None, lab.explain("remount ro with NULL data: 0", errname(err))
    assert _readonly(u), lab.explain("U read-only (statvfs ST_RDONLY)", sysapi.proc_mounts_line(u))
    err = errno_of(lambda: (u / "g").write_text("x"))
    assert err == errno.EROFS, lab.explain("create on the ro union: EROFS", errname(err))
    err = errno_of(sysapi.mount, "none", u, None, sysapi.MS_REMOUNT, None)
    assert err is None, lab.explain("remount rw with NULL data: 0", errname(err))
    assert not _readonly(u), lab.explain("U writable again", sysapi.proc_mounts_line(u))
    (u / "f").write_text("upper")
    assert (lab.rw / "f").read_text() == "upper", lab.explain("write copies up to RW", None)
    assert (lab.ro / "f").read_text() == "lower", lab.explain("RO/f untouched", None)
    after = sysapi.proc_mounts_line(u)
    assert before == after, lab.explain(f"/proc/mounts as before: {before}", after)


def _chroot(path: os.PathLike[str]) -> None:
    os.chroot(path)
    os.chdir("/")


def test_umount_of_root_inside_chroot_leaves_union_mounted_readonly(lab: Lab) -> None:
    """Kind 1(c): a child chroots into U and calls umount2("/", 0): the VFS turns an
    unmount of the caller's root into a read-only remount (fs/namespace.c do_umount),
    so U stays mounted and read-only, and the kernel stays healthy."""
    put(lab.ro / "f", "lower")
    u = lab.mount()
    outcome = run_in_child(functools.partial(_chroot, u), sysapi.umount, "/")
    assert sysapi.proc_mounts_line(u) is not None, lab.explain(
        "U still mounted after umount2('/') in a chroot", outcome
    )
    assert _readonly(u), lab.explain("U read-only after umount2('/') in a chroot", outcome)
    assert (u / "f").read_text() == "lower", lab.explain("U/f still readable", outcome)
    sysapi.mount("none", u, None, sysapi.MS_REMOUNT, None)
    (u / "g").write_text("x")
    assert (lab.rw / "g").read_text() == "x", lab.explain("writable after remount rw", None)
