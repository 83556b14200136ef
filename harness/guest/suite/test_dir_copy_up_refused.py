"""Directory copy-up the writable branch cannot complete (issue 15, kind 8).

A lower-only directory carries a user.* xattr and RW's filesystem refuses user.*
xattrs (tmpfs before 6.6). Anything that needs the directory on RW copies it up
with its xattrs (cpup.c cpup_entry() -> au_cpup_xattr(), xattr.c), which fails
EOPNOTSUPP: the operation must fail so and leave nothing behind on RW. The branch
attributes icexusr / icex ("ignore copy-up error on xattr", design/06xattr.txt,
aufs(5) Branch Syntax) make aufs go on without the attribute. overlayfs skips
xattrs the upper filesystem does not support (ovl_copy_xattr), so there the
operations succeed.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from unionfs.drivers import AufsDriver, Branch
from unionfs.fsops import errname, errno_of, names, put, user_xattr_problem
from unionfs.gates import require_aufs_config
from unionfs.lab import Lab

pytestmark = [pytest.mark.only_branch_fs("tmpfs+ext4"), pytest.mark.defaults_only]


def _ops(d: str) -> dict[str, tuple[object, ...]]:
    return {
        "mkdir": (os.mkdir, f"{d}/sub"),
        "creat": (lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)), f"{d}/new"),
        "symlink": (lambda p: os.symlink("target", p), f"{d}/sl"),
        "mknod-fifo": (lambda p: os.mknod(p, stat.S_IFIFO | 0o644), f"{d}/fifo"),
        "unlink-lower-child": (os.unlink, f"{d}/child"),
        "rename-lower-child": (lambda p: os.rename(p, p + "2"), f"{d}/child"),
        "chmod-dir": (lambda p: os.chmod(p, 0o700), d),
    }


OP_NAMES = sorted(_ops("d"))


@pytest.mark.parametrize("op", OP_NAMES)
def test_directory_copy_up_refused_by_rw_fs_leaves_nothing(lab: Lab, op: str) -> None:
    """Kind 8: RO/d (ext4) has user.k, RW (tmpfs) refuses user.* xattrs: an operation
    needing RW/d fails EOPNOTSUPP on aufs and RW holds nothing new; overlayfs
    copies d up without the xattr and succeeds."""
    require_aufs_config(lab.driver, "XATTR")
    if user_xattr_problem(lab.ro):
        pytest.skip(f"RO's filesystem ({lab.kind_of('RO')}) refuses user.* xattrs itself")
    if not user_xattr_problem(lab.rw):
        pytest.skip(f"RW's filesystem ({lab.kind_of('RW')}) accepts user.* xattrs")
    put(lab.ro / "d" / "child", "x")
    os.setxattr(lab.ro / "d", "user.k", b"v")
    u = lab.mount(upper="RW", lowers=["RO"], plain=True)
    rw_before = sorted(names(lab.rw))
    fn, rel = _ops(str(u / "d"))[op]
    err = errno_of(fn, rel)  # type: ignore[arg-type]
    if isinstance(lab.driver, AufsDriver):
        assert err == errno.EOPNOTSUPP, lab.explain(f"{op} in U/d: EOPNOTSUPP", errname(err))
        assert sorted(names(lab.rw)) == rw_before, lab.explain(
            f"RW unchanged: {rw_before}", sorted(names(lab.rw))
        )
        assert names(u / "d") == ["child"], lab.explain("U/d lists child only", names(u / "d"))
    else:
        assert err is None, lab.explain(f"overlayfs: {op} in U/d succeeds", errname(err))
        assert (lab.rw / "d").is_dir(), lab.explain("RW/d copied up", None, lab.rw / "d")


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("attr", ["icexusr", "icex"])
@pytest.mark.parametrize("op", OP_NAMES)
def test_directory_copy_up_with_icex_goes_on_without_the_xattr(
    lab: Lab, op: str, attr: str
) -> None:
    """Kind 8: with RW=rw+icexusr (or +icex) the same operations succeed: RW/d is made
    (same mode) without user.k, and the operation's result is visible through U."""
    require_aufs_config(lab.driver, "XATTR")
    if user_xattr_problem(lab.ro):
        pytest.skip(f"RO's filesystem ({lab.kind_of('RO')}) refuses user.* xattrs itself")
    if not user_xattr_problem(lab.rw):
        pytest.skip(f"RW's filesystem ({lab.kind_of('RW')}) accepts user.* xattrs")
    put(lab.ro / "d" / "child", "x")
    os.setxattr(lab.ro / "d", "user.k", b"v")
    u = lab.mount(upper=Branch(lab.rw, f"rw+{attr}"), lowers=["RO"], plain=True)
    fn, rel = _ops(str(u / "d"))[op]
    err = errno_of(fn, rel)  # type: ignore[arg-type]
    assert err is None, lab.explain(f"rw+{attr}: {op} in U/d succeeds", errname(err))
    assert (lab.rw / "d").is_dir(), lab.explain("RW/d copied up", None, lab.rw / "d")
    if op != "chmod-dir":
        assert stat.S_IMODE((lab.rw / "d").stat().st_mode) == stat.S_IMODE(
            (lab.ro / "d").stat().st_mode
        ), lab.explain("RW/d has RO/d's mode", None, lab.rw / "d", lab.ro / "d")
