"""Deep layer stacks (issue 15, kind 4): five ro+wh layers under one rw branch, as
Docker and live systems stacked them.

A directory present in two of the layers, with an unrelated whiteout in a layer
between them: removing it through the union must leave exactly one whiteout for
it in the rw branch, hide it from the listing and touch no lower layer (aufs
i_op_del.c aufs_rmdir(): au_wh_test/au_whtmp_ren, then au_wh_create for the name;
design/02struct.txt; man aufs(5) "dirwh").
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from unionfs.drivers import AUFS_WH_PFX, Branch
from unionfs.expect import whiteout_problem
from unionfs.fsops import errname, errno_of, lexists, names, put
from unionfs.lab import Lab

LAYERS = ("L1", "L2", "L3", "L4", "L5")


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry below root: mode, size and a content digest (regular files)."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, digest)
    return out


def _deep_lab(lab: Lab, holders: tuple[str, str], children: int) -> Path:
    for label in LAYERS:
        lab.add_branch(label)
    for i, label in enumerate(holders):
        for c in range(children):
            put(lab.branches[label] / "d" / f"c{i}-{c}", f"{label}:{c}")
        put(lab.branches[label] / "d" / "shared", label)
    # an unrelated whiteout in a layer between, hiding a file further down
    put(lab.branches["L5"] / "other", "hidden by L3")
    lab.driver.make_whiteout(lab.branches["L3"], "other")
    put(lab.branches["L1"] / "keep", "k")
    perm = "ro+wh"
    lowers = [Branch(lab.branches[label], perm) for label in LAYERS]
    return lab.mount(upper="RW", lowers=lowers, plain=True)


@pytest.mark.parametrize("children", [2, 6], ids=["below-dirwh", "above-dirwh"])
@pytest.mark.parametrize("holders", [("L2", "L4"), ("L1", "L5")], ids=["L2-L4", "L1-L5"])
@pytest.mark.parametrize("how", ["rm-rf", "rmdir-after-unlinks"])
def test_removing_a_directory_from_a_deep_stack(
    lab: Lab, how: str, holders: tuple[str, str], children: int
) -> None:
    """Kind 4: RW over five ro+wh layers; d in two of them, an unrelated whiteout in
    L3. `rm -rf U/d` (or unlinking every child, then rmdir): d gone from U, RW holds
    exactly one whiteout for d (and no RW/d, no leftover .wh..wh.d.* temp dir once
    aufs's dirwh worker is done), no lower layer touched."""
    u = _deep_lab(lab, holders, children)
    before = {label: _snapshot(lab.branches[label]) for label in LAYERS}
    assert "other" not in names(u), lab.explain("L3's whiteout hides L5/other", names(u))
    if how == "rm-rf":
        shutil.rmtree(u / "d")
    else:
        for name in names(u / "d"):
            os.unlink(u / "d" / name)
        os.rmdir(u / "d")
    assert "d" not in names(u) and not lexists(u / "d"), lab.explain("U/d gone", names(u))
    assert sorted(names(u)) == ["keep"], lab.explain("U lists only keep", names(u))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # aufs removes a dir of many whiteouts in a worker
        leftovers = [n for n in names(lab.rw) if n.startswith(AUFS_WH_PFX * 2 + "d.")]
        # (for overlayfs RW/d is the whiteout itself)
        gone = lab.driver.name == "overlay" or not lexists(lab.rw / "d")
        if gone and not leftovers:
            break
        time.sleep(0.2)
    leftovers = [n for n in names(lab.rw) if n.startswith(AUFS_WH_PFX * 2 + "d.")]
    assert not lexists(lab.rw / "d") or lab.driver.name == "overlay", lab.explain(
        "no RW/d left", None, lab.rw / "d"
    )
    assert not leftovers, lab.explain("no temporary whiteouted dir left", leftovers)
    problem = whiteout_problem(lab.driver.name, lab.rw, "d", base_root=None)
    assert problem is None, lab.explain(
        f"one whiteout for d in RW ({lab.driver.whiteout_form})", problem
    )
    whiteouts_for_d = [n for n in os.listdir(lab.rw) if n in ("d", AUFS_WH_PFX + "d")]
    assert len(whiteouts_for_d) == 1, lab.explain("exactly one entry for d in RW", whiteouts_for_d)
    after = {label: _snapshot(lab.branches[label]) for label in LAYERS}
    changed = [label for label in LAYERS if before[label] != after[label]]
    assert not changed, lab.explain("no lower layer touched", changed)
    err = errno_of(os.mkdir, u / "d")
    assert err is None and names(u / "d") == [], lab.explain(
        "mkdir U/d again: an empty directory",
        f"{errname(err)}, {names(u / 'd') if err is None else ''}",
    )
