"""Directory rename with lower children (issue 15, kind 9).

Without `dirren` aufs refuses to rename a directory whose children live on a lower
branch: EXDEV by design (i_op_ren.c au_ren_may_dir(); aufs(5) "Incompatible with
an Ordinary Filesystem": "To rename(2) directory may return EXDEV"; mv falls back
to copying). With `dirren` (CONFIG_AUFS_DIRREN, design/06dirren.txt: the lower
directory keeps its name and a detailed-info file .aufs.dirren records the rename)
the rename must keep POSIX semantics in every shape: same parent, into another
parent, over an empty directory, and over a name that was removed and recreated;
and the renamed directory keeps its children across a remount. overlayfs: the
same with redirect_dir=on, EXDEV without.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from unionfs import aufs
from unionfs.drivers import AufsDriver
from unionfs.fsops import errname, errno_of, lexists, names, put
from unionfs.gates import overlay_param, require_aufs_config
from unionfs.lab import Lab

pytestmark = [pytest.mark.fs_independent]

SHAPES = ["same-parent", "other-parent", "over-empty-dir", "over-recreated-name"]


def _arrange(lab: Lab) -> None:
    put(lab.ro / "p" / "d" / "child", "c")
    put(lab.ro / "p" / "d" / "sub" / "deep", "s")
    (lab.ro / "q").mkdir()
    (lab.ro / "p" / "gone").mkdir()


def _target(u: Path, shape: str) -> Path:
    """Prepare the shape through U; the rename target."""
    if shape == "same-parent":
        return u / "p" / "e"
    if shape == "other-parent":
        return u / "q" / "d"
    if shape == "over-empty-dir":
        (u / "p" / "empty").mkdir()
        return u / "p" / "empty"
    os.rmdir(u / "p" / "gone")  # a lower directory removed and recreated through U
    (u / "p" / "gone").mkdir()
    return u / "p" / "gone"


def _mount(lab: Lab, with_rename: bool) -> Path:
    if isinstance(lab.driver, AufsDriver):
        return lab.mount(options=["dirren"] if with_rename else ["nodirren"])
    return lab.mount(options=[f"redirect_dir={'on' if with_rename else 'off'}"])


@pytest.mark.parametrize("shape", SHAPES)
def test_directory_rename_with_lower_children_keeps_posix_semantics(lab: Lab, shape: str) -> None:
    """Kind 9: with aufs `dirren` (overlayfs redirect_dir=on), rename(U/p/d, target)
    returns 0 for each shape; target lists child and sub (sub/deep readable), the
    old name is gone, both stay so after unmounting and mounting again, RO is
    untouched."""
    require_aufs_config(lab.driver, "DIRREN")
    _arrange(lab)
    u = _mount(lab, with_rename=True)
    if isinstance(lab.driver, AufsDriver):
        assert "dirren" in aufs.mount_options(u), lab.explain("dirren shown", None)
    target = _target(u, shape)
    err = errno_of(os.rename, u / "p" / "d", target)
    assert err is None, lab.explain(f"rename U/p/d -> {lab.label_of(target)}: 0", errname(err))
    rel = target.relative_to(u)
    for when in ("after the rename", "after a fresh mount"):
        if when == "after a fresh mount":
            u = lab.remount_fresh()
        got = sorted(names(u / rel))
        assert got == ["child", "sub"], lab.explain(
            f"U/{rel} lists child, sub {when}", got, u / rel
        )
        assert (u / rel / "sub" / "deep").read_text() == "s", lab.explain(
            f"U/{rel}/sub/deep readable {when}", None
        )
        assert not lexists(u / "p" / "d"), lab.explain(f"U/p/d gone {when}", names(u / "p"))
    assert (lab.ro / "p" / "d" / "child").read_text() == "c", lab.explain("RO untouched", None)


@pytest.mark.parametrize("shape", SHAPES)
def test_directory_rename_with_lower_children_is_exdev_without_dirren(lab: Lab, shape: str) -> None:
    """Kind 9: without dirren (overlayfs redirect_dir=off) the same renames are EXDEV
    and change nothing: U/p/d still lists its children."""
    if overlay_param(lab.driver, "redirect_dir") in ("Y", "on"):
        pytest.skip("overlay module parameter redirect_dir is on")
    _arrange(lab)
    u = _mount(lab, with_rename=False)
    target = _target(u, shape)
    err = errno_of(os.rename, u / "p" / "d", target)
    assert err == errno.EXDEV, lab.explain(
        "rename of a dir with lower children: EXDEV", errname(err)
    )
    assert sorted(names(u / "p" / "d")) == ["child", "sub"], lab.explain(
        "U/p/d unchanged", names(u / "p" / "d")
    )
