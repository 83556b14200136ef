"""J. Mount errors: what a bad branch list or option returns, and what aufs logs.

aufs turns ENOENT/ENOTDIR/EEXIST/EIO into EINVAL in fill_super and reconfigure
(errors raised while parsing an option keep their own errno), and explains
each refusal in the kernel log.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from unionfs import sysapi
from unionfs.fsops import errname, errno_of, put
from unionfs.gates import aufs_config_has
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

pytestmark = pytest.mark.fs_independent


def _mount_fails(lab: Lab, data: str, flags: int = 0) -> int | None:
    err = errno_of(lab.mount_raw, data, flags)
    return err


def _not_mounted(lab: Lab) -> bool:
    return sysapi.proc_mounts_line(lab.u) is None


@pytest.mark.parametrize("what", ["missing", "regular-file"])
def test_branch_that_is_not_a_directory_is_refused(lab: Lab, kmsg: KernelWatch, what: str) -> None:
    """ERR-1: a missing path or a regular file as a branch. aufs: EINVAL, "lookup failed
    PATH (-2)" or "(-20)". overlayfs: a missing lowerdir is ENOENT."""
    bad = lab.tmp / "nonexistent"
    if what == "regular-file":
        bad = put(lab.tmp / "plain-file", "not a dir")
        if lab.driver.name == "overlay":
            pytest.skip("overlayfs's errno for a file as lowerdir differs by kernel version")
    if lab.driver.name == "overlay":
        data = f"lowerdir={bad},upperdir={lab.rw},workdir={lab.rw}-work"
        (lab.rw.parent / f"{lab.rw.name}-work").mkdir(exist_ok=True)
        err = _mount_fails(lab, data)
        assert err == errno.ENOENT, lab.explain(
            f"overlay with lowerdir={bad}: ENOENT", errname(err)
        )
        return
    err = _mount_fails(lab, f"br={lab.rw}=rw:{bad}=ro")
    assert err == errno.EINVAL, lab.explain(f"br=RW=rw:{bad}=ro: EINVAL", errname(err))
    code = -errno.ENOENT if what == "missing" else -errno.ENOTDIR
    found = kmsg.wait_for(rf"lookup failed {bad} \({code}\)")
    assert found, lab.explain(f"kernel log: lookup failed {bad} ({code})", kmsg.lines())
    assert _not_mounted(lab), lab.explain("nothing mounted on U", None)


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("via", ["same-path", "symlink", "bind-mount"])
def test_duplicated_branch_is_refused(lab: Lab, kmsg: KernelWatch, via: str) -> None:
    """ERR-2: RW given twice (literally, through a symlink, or through a bind mount of
    it): EINVAL, "<path> duplicated"."""
    second = lab.rw
    if via == "symlink":
        second = lab.tmp / "rw-link"
        os.symlink(lab.rw, second)
    elif via == "bind-mount":
        second = lab.tmp / "rw-bind"
        second.mkdir()
        lab.mount_other(str(lab.rw), second, "", flags=sysapi.MS_BIND)
    err = _mount_fails(lab, f"br={lab.rw}=rw:{second}=ro")
    assert err == errno.EINVAL, lab.explain(f"br=RW=rw:{second}=ro: EINVAL", errname(err))
    found = kmsg.wait_for(rf"{second} duplicated")
    assert found, lab.explain(f"kernel log: {second} duplicated", kmsg.lines())


@pytest.mark.only_drivers("overlay")
def test_overlay_refuses_the_same_lower_layer_twice(lab: Lab) -> None:
    """ERR-2 (overlayfs): lowerdir=RO:RO is refused with ELOOP (conflicting layers)."""
    (lab.rw.parent / f"{lab.rw.name}-work").mkdir(exist_ok=True)
    err = _mount_fails(lab, f"lowerdir={lab.ro}:{lab.ro},upperdir={lab.rw},workdir={lab.rw}-work")
    assert err == errno.ELOOP, lab.explain("lowerdir=RO:RO: ELOOP", errname(err))


@pytest.mark.parametrize("relation", ["child", "parent"])
def test_overlapping_branches_are_refused(lab: Lab, kmsg: KernelWatch, relation: str) -> None:
    """ERR-3: a branch inside another branch, or its parent. aufs: EINVAL, "... is
    overlapped". overlayfs: a lowerdir inside the upperdir is ELOOP."""
    sub = lab.rw / "sub"
    sub.mkdir()
    if lab.driver.name == "overlay":
        if relation == "parent":
            pytest.skip("overlayfs detects an upperdir below a lowerdir only at lookup time")
        (lab.rw.parent / f"{lab.rw.name}-work").mkdir(exist_ok=True)
        err = _mount_fails(lab, f"lowerdir={sub},upperdir={lab.rw},workdir={lab.rw}-work")
        assert err == errno.ELOOP, lab.explain("lowerdir inside upperdir: ELOOP", errname(err))
        return
    other = sub if relation == "child" else lab.rw.parent
    err = _mount_fails(lab, f"br={lab.rw}=rw:{other}=ro")
    assert err == errno.EINVAL, lab.explain(f"br=RW=rw:{other}=ro: EINVAL", errname(err))
    found = kmsg.wait_for(rf"{other} is overlapped")
    assert found, lab.explain(f"kernel log: {other} is overlapped", kmsg.lines())


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("fs", ["proc", "sysfs"])
def test_pseudo_filesystem_branch_is_refused(lab: Lab, kmsg: KernelWatch, fs: str) -> None:
    """ERR-5: a branch on proc or sysfs: EINVAL, "unsupported filesystem, PATH (TYPE)"."""
    path = {"proc": "/proc", "sysfs": "/sys"}[fs]
    err = _mount_fails(lab, f"br={lab.rw}=rw:{path}=ro")
    assert err == errno.EINVAL, lab.explain(f"br=RW=rw:{path}=ro: EINVAL", errname(err))
    found = kmsg.wait_for(rf"unsupported filesystem, {path} \({fs}\)")
    assert found, lab.explain(f"kernel log: unsupported filesystem, {path} ({fs})", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_stacked_filesystem_branch_is_refused(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-5: a branch on an overlayfs mount (a stacked fs): EINVAL, "already stacked"."""
    if "overlay" not in sysapi.filesystems():
        pytest.skip("overlay not in /proc/filesystems: no stacked filesystem to offer")
    ovl = lab.tmp / "ovl"
    ovl.mkdir()
    low2 = lab.tmp / "ovl-low2"
    low2.mkdir()
    # a read-only overlay of two lower layers (before 5.x one layer alone is refused)
    lab.mount_other("overlay", ovl, "overlay", f"lowerdir={lab.ro2}:{low2}")
    err = _mount_fails(lab, f"br={lab.rw}=rw:{ovl}=ro")
    assert err == errno.EINVAL, lab.explain("br=RW=rw:<overlay>=ro: EINVAL", errname(err))
    found = kmsg.wait_for(rf"already stacked, {ovl} \(overlay\)")
    assert found, lab.explain(f"kernel log: already stacked, {ovl} (overlay)", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_branch_inside_the_union_is_refused(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-5: appending a directory inside U itself: EINVAL, "... must be outside";
    another aufs mount's directory as a branch of a new mount: "unsupported filesystem"."""
    put(lab.ro / "sub" / "f", "x")
    u = lab.mount(plain=True)
    err = errno_of(lab.remount, f"append:{u / 'sub'}=ro")
    assert err == errno.EINVAL, lab.explain("append:U/sub=ro: EINVAL", errname(err))
    found = kmsg.wait_for(rf"{u / 'sub'} must be outside")
    assert found, lab.explain("kernel log: U/sub must be outside", kmsg.lines())
    second = lab.tmp / "u2"
    second.mkdir()
    err = errno_of(lab.mount_raw, f"br={lab.ro2}=rw:{u / 'sub'}=ro", 0, second)
    assert err == errno.EINVAL, lab.explain("a new aufs over U/sub: EINVAL", errname(err))
    found = kmsg.wait_for(rf"unsupported filesystem, {u / 'sub'} \(aufs\)")
    assert found, lab.explain("kernel log: unsupported filesystem, U/sub (aufs)", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_writable_branch_on_readonly_fs_is_refused(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-6: `X=rw` where X's filesystem is mounted read-only: EINVAL, "write
    permission for readonly mount or inode, X"."""
    rofs = lab.readonly_fs_dir("rofs")
    err = _mount_fails(lab, f"br={rofs}=rw:{lab.ro}=ro")
    assert err == errno.EINVAL, lab.explain("br=<read-only fs>=rw: EINVAL", errname(err))
    found = kmsg.wait_for(rf"write permission for readonly mount or inode, {rofs}")
    assert found, lab.explain("kernel log: write permission for readonly ...", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_writable_branch_with_short_names_is_refused(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-7: an rw branch whose f_namelen is below 255 (msdos: 12): EINVAL,
    "unsupported namelen 12"."""
    mkfs = shutil.which("mkfs.fat") or shutil.which("mkfs.msdos")
    if mkfs is None or "msdos" not in sysapi.filesystems():
        pytest.skip("needs mkfs.fat (dosfstools) and msdos in /proc/filesystems")
    image = lab.tmp / "fat.img"
    with open(image, "wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run([mkfs, str(image)], check=True, capture_output=True, timeout=60)
    fat = lab.tmp / "fat"
    fat.mkdir()
    dev, fd = sysapi.loop_attach(image)
    try:
        lab.mount_other(dev, fat, "msdos")
    finally:
        os.close(fd)
    namelen = sysapi.statfs(fat).f_namelen
    err = _mount_fails(lab, f"br={fat}=rw:{lab.ro}=ro")
    assert err == errno.EINVAL, lab.explain(
        f"rw branch with namelen {namelen}: EINVAL", errname(err)
    )
    found = kmsg.wait_for(rf"unsupported namelen {namelen}")
    assert found, lab.explain(f"kernel log: unsupported namelen {namelen}", kmsg.lines())


BAD_OPTIONS = [
    "udba=bogus",
    "create=bogus",
    "create=mfs:3601",
    "cpup=bogus",
    "diropq=x",
    "rdcache=3601",
    "rdblk=100",
    "nosuchkey=1",
    "shwh",
]


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("option", BAD_OPTIONS)
def test_bad_option_is_refused(lab: Lab, option: str) -> None:
    """ERR-8: unknown keys, bad values (udba, create, cpup, diropq), limits (create=mfs:
    seconds <= 3600, rdcache <= 3600, rdblk >= 255) and shwh without CONFIG_AUFS_SHWH:
    EINVAL, nothing mounted."""
    if option == "shwh" and aufs_config_has("SHWH"):
        pytest.skip("CONFIG_AUFS_SHWH is set: shwh is a valid option here")
    err = _mount_fails(lab, f"br={lab.rw}=rw:{lab.ro}=ro,{option}")
    assert err == errno.EINVAL, lab.explain(f"option {option}: EINVAL", errname(err))
    assert _not_mounted(lab), lab.explain("nothing mounted on U", None)


@pytest.mark.only_drivers("aufs")
def test_mount_without_branches_is_refused(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-8: options but no br: EINVAL, "no branches"."""
    err = _mount_fails(lab, "udba=reval")
    assert err == errno.EINVAL, lab.explain("no br: EINVAL", errname(err))
    found = kmsg.wait_for(r"no branches")
    assert found, lab.explain("kernel log: no branches", kmsg.lines())


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("option", ["debug=1", "delete=whiteout", "imap=/none", "clean_plink"])
def test_obsolete_option_is_ignored_with_warning(lab: Lab, kmsg: KernelWatch, option: str) -> None:
    """ERR-8: obsolete debug, delete, imap, clean_plink: the mount succeeds and the
    kernel log says "ignored <key>"."""
    lab.mount_raw(f"br={lab.rw}=rw:{lab.ro}=ro,{option}")
    key = option.split("=", 1)[0]
    found = kmsg.wait_for(rf"ignored {key}\b")
    assert found, lab.explain(f"kernel log: ignored {key}", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_existing_xino_file_is_refused(lab: Lab) -> None:
    """ERR-9: `xino=F` where F already exists: the exclusive create fails, EEXIST (an
    option-parsing error, not converted to EINVAL)."""
    xino = put(lab.tmp / "existing.xino", "")
    err = _mount_fails(lab, f"br={lab.rw}=rw:{lab.ro}=ro,xino={xino}")
    assert err == errno.EEXIST, lab.explain(f"xino={xino} (exists): EEXIST", errname(err))


@pytest.mark.only_drivers("aufs")
def test_xino_inside_the_union_is_refused_at_remount(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-9: remount with `xino=U/x`: EINVAL, "U/x must be outside"."""
    u = lab.mount(plain=True)
    err = errno_of(lab.remount, f"xino={u / 'x'}")
    assert err == errno.EINVAL, lab.explain("xino=U/x at remount: EINVAL", errname(err))
    found = kmsg.wait_for(rf"{u / 'x'} must be outside")
    assert found, lab.explain("kernel log: U/x must be outside", kmsg.lines())


@pytest.mark.only_drivers("aufs")
@pytest.mark.only_branch_fs("xfs", "btrfs")
def test_xino_on_unsuitable_filesystem_is_refused(lab: Lab, kmsg: KernelWatch) -> None:
    """ERR-9: an explicit xino file on xfs or btrfs (which aufs cannot use for xino):
    EINVAL, "xino doesn't support PATH(TYPE)"."""
    xino = lab.rw.parent / "x.xino"
    err = _mount_fails(lab, f"br={lab.rw}=rw:{lab.ro}=ro,xino={xino}")
    assert err == errno.EINVAL, lab.explain(f"xino on {lab.kind_of('RW')}: EINVAL", errname(err))
    found = kmsg.wait_for(rf"xino doesn't support {xino}")
    assert found, lab.explain(f"kernel log: xino doesn't support {xino}", kmsg.lines())
