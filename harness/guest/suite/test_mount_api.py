"""The new mount API (issue 15, kind 2): fsopen, fsconfig, fsmount, move_mount and
fspick must give the same union as mount(2).

aufs parses its options through fs_context (fs/aufs/fsctx.c aufs_fsctx_paramspec):
"br" (alias "dirs") takes the whole branch list, "append"/"prepend"/"del"/"mod"
take one branch; mount(2)'s "br:..." spelling is split by the legacy parser only,
so as an fsconfig key it is an unknown parameter (EINVAL). overlayfs takes
lowerdir, upperdir and workdir.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs import aufs, sysapi
from unionfs.drivers import Mount, OverlayDriver
from unionfs.fsops import errname, errno_of, put
from unionfs.lab import Lab

pytestmark = pytest.mark.fs_independent


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _new_api_mount(lab: Lab, params: list[tuple[str, str]]) -> Path:
    """fsopen + fsconfig(SET_STRING each param) + CMD_CREATE + fsmount + move_mount
    onto U; registered with the lab so that cleanup unmounts it."""
    with _fd(sysapi.fsopen(lab.driver.fstype)) as fsfd:
        for key, value in params:
            sysapi.fsconfig(fsfd, sysapi.FSCONFIG_SET_STRING, key, value)
        sysapi.fsconfig(fsfd, sysapi.FSCONFIG_CMD_CREATE)
        with _fd(sysapi.fsmount(fsfd)) as mfd:
            sysapi.move_mount(mfd, lab.u)
    data = ",".join(f"{k}={v}" for k, v in params)
    mnt = Mount(lab.driver, lab.u, data, None, [])
    lab.mounts.append(mnt)
    lab.mnt = mnt
    return lab.u


def _params(lab: Lab) -> list[tuple[str, str]]:
    if isinstance(lab.driver, OverlayDriver):
        work = OverlayDriver.workdir_for(lab.rw)
        work.mkdir(exist_ok=True)
        return [("lowerdir", str(lab.ro)), ("upperdir", str(lab.rw)), ("workdir", str(work))]
    return [("br", f"{lab.rw}=rw:{lab.ro}=ro")]


def test_new_mount_api_mounts_the_union(lab: Lab) -> None:
    """Kind 2: fsopen("aufs"), fsconfig "br"="RW=rw:RO=ro" (overlay: lowerdir,
    upperdir, workdir), create, fsmount, move_mount: U merges RO under RW, a write
    copies up, a delete whiteouts, as with mount(2). fsctx.c aufs_fsctx_paramspec."""
    put(lab.ro / "f", "lower")
    put(lab.ro / "g", "gone soon")
    u = _new_api_mount(lab, _params(lab))
    assert sysapi.proc_mounts_line(u) is not None, lab.explain("U in /proc/mounts", None)
    assert sysapi.statfs(u).f_type == lab.driver.statfs_magic, lab.explain(
        f"statfs magic {lab.driver.statfs_magic:#x}", hex(sysapi.statfs(u).f_type)
    )
    assert (u / "f").read_text() == "lower", lab.explain("U/f = RO/f", None)
    with open(u / "f", "a") as fh:
        fh.write("+")
    assert (lab.rw / "f").read_text() == "lower+", lab.explain("append copied f up", None)
    os.unlink(u / "g")
    assert not (u / "g").exists() and (lab.ro / "g").exists(), lab.explain(
        "U/g gone, RO/g kept", None
    )
    if not isinstance(lab.driver, OverlayDriver):
        want = [f"{lab.rw}=rw", f"{lab.ro}=ro"]
        assert aufs.branches(u) == want, lab.explain(f"branches {want}", aufs.branches(u))


@pytest.mark.only_drivers("aufs")
def test_new_mount_api_refuses_the_colon_key(lab: Lab) -> None:
    """Kind 2: the mount(2) spelling "br:RW" as an fsconfig key (value "rw:RO=ro") is
    an unknown parameter: EINVAL, from fsconfig or at the latest from CMD_CREATE."""
    with _fd(sysapi.fsopen("aufs")) as fsfd:
        err = errno_of(
            sysapi.fsconfig, fsfd, sysapi.FSCONFIG_SET_STRING, f"br:{lab.rw}", f"rw:{lab.ro}=ro"
        )
        if err is None:
            err = errno_of(sysapi.fsconfig, fsfd, sysapi.FSCONFIG_CMD_CREATE)
    assert err == errno.EINVAL, lab.explain("fsconfig key 'br:RW': EINVAL", errname(err))


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("key", ["append", "prepend"])
def test_fspick_reconfigure_adds_a_branch(lab: Lab, key: str) -> None:
    """Kind 2: fspick(U), fsconfig "append" (or "prepend") = "RO2=ro", then
    CMD_RECONFIGURE: the branch is added at the end (front) and its files show."""
    put(lab.ro2 / "only-in-ro2", "x")
    u = lab.mount(lowers=["RO"], plain=True)
    with _fd(sysapi.fspick(u)) as fd:
        sysapi.fsconfig(fd, sysapi.FSCONFIG_SET_STRING, key, f"{lab.ro2}=ro")
        sysapi.fsconfig(fd, sysapi.FSCONFIG_CMD_RECONFIGURE)
    got = aufs.branches(u)
    if key == "append":
        want = [f"{lab.rw}=rw", f"{lab.ro}=ro", f"{lab.ro2}=ro"]
    else:
        want = [f"{lab.ro2}=ro", f"{lab.rw}=rw", f"{lab.ro}=ro"]
    assert got == want, lab.explain(f"branches {want}", got)
    assert (u / "only-in-ro2").read_text() == "x", lab.explain("RO2's file visible", None)


@pytest.mark.only_drivers("aufs")
def test_fspick_reconfigure_deletes_a_branch(lab: Lab) -> None:
    """Kind 2: fspick(U), fsconfig "del" = RO2, CMD_RECONFIGURE: RO2 is no branch any
    more and its files vanish from U."""
    put(lab.ro2 / "only-in-ro2", "x")
    u = lab.mount(plain=True)
    with _fd(sysapi.fspick(u)) as fd:
        sysapi.fsconfig(fd, sysapi.FSCONFIG_SET_STRING, "del", str(lab.ro2))
        sysapi.fsconfig(fd, sysapi.FSCONFIG_CMD_RECONFIGURE)
    want = [f"{lab.rw}=rw", f"{lab.ro}=ro"]
    assert aufs.branches(u) == want, lab.explain(f"branches {want}", aufs.branches(u))
    assert not (u / "only-in-ro2").exists(), lab.explain("RO2's file gone from U", None)
