"""D. Whiteouts and opaque directories: how a deletion through U hides lower entries.

Whiteout forms: overlayfs, NAME as a 0/0 character device in the upper branch;
aufs, .wh.NAME (a 0444 regular file hardlinked to .wh..wh.aufs).
Opaque forms: overlayfs, xattr trusted.overlay.opaque="y"; aufs, .wh..wh..opq.
"""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from unionfs import evidence, sysapi
from unionfs.drivers import AUFS_WH_BASE, Branch
from unionfs.expect import no_whiteout_problem, whiteout_problem
from unionfs.fsops import T1_NS, errno_of, lexists, mkdir, names, put
from unionfs.lab import Lab

pytestmark = pytest.mark.option_sets


def _base_nlink(lab: Lab) -> int | None:
    base = lab.rw / AUFS_WH_BASE
    return base.lstat().st_nlink if base.exists() else None


def test_unlink_lower_file_creates_whiteout(lab: Lab) -> None:
    """WH-1: f only in RO; unlink U/f: ENOENT through U, whiteout on RW, RO/f untouched."""
    put(lab.ro / "f", "lower", mode=0o644)
    put(lab.ro / "keep", "other")
    u = lab.mount()
    before = _base_nlink(lab)
    os.unlink(u / "f")
    err = errno_of(os.lstat, u / "f")
    assert err == errno.ENOENT, lab.explain("lstat U/f fails ENOENT", f"errno {err}")
    assert "f" not in names(u), lab.explain("f not listed in U", str(names(u)))
    problem = whiteout_problem(lab.driver.name, lab.rw, "f", base_root=lab.rw)
    assert problem is None, lab.explain(f"RW holds {lab.driver.whiteout_form} for f", problem)
    assert (lab.ro / "f").read_bytes() == b"lower", lab.explain(
        "RO/f untouched", None, lab.ro / "f"
    )
    if lab.driver.name == "aufs":
        after = _base_nlink(lab)
        assert before is not None and after == before + 1, lab.explain(
            f"{AUFS_WH_BASE} gains one link (was {before})", f"nlink {after}"
        )


def test_unlink_in_lower_subdir_copies_up_parent(lab: Lab) -> None:
    """WH-1: for RO/d/f, RW/d is first made as a copy of RO/d, then gets the whiteout."""
    mkdir(lab.ro / "d", mode=0o750, uid=1001, gid=1002, mtime_ns=T1_NS)
    put(lab.ro / "d" / "f", "lower")
    put(lab.ro / "d" / "g", "stays")
    u = lab.mount()
    os.unlink(u / "d" / "f")
    assert (lab.rw / "d").is_dir(), lab.explain("RW/d created as a directory", None, lab.rw / "d")
    st_rw, st_ro = (lab.rw / "d").stat(), (lab.ro / "d").stat()
    got = (oct(st_rw.st_mode), st_rw.st_uid, st_rw.st_gid)
    want = (oct(st_ro.st_mode), st_ro.st_uid, st_ro.st_gid)
    assert got == want, lab.explain(f"RW/d copies RO/d's mode/uid/gid {want}", str(got))
    problem = whiteout_problem(lab.driver.name, lab.rw / "d", "f", base_root=lab.rw)
    assert problem is None, lab.explain("RW/d holds the whiteout for f", problem)
    assert not lab.driver.is_opaque(lab.rw / "d"), lab.explain(
        "RW/d not opaque (RO/d/g must stay visible)", None, lab.rw / "d"
    )
    assert names(u / "d") == ["g"], lab.explain("U/d lists only g", str(names(u / "d")))


def test_unlink_file_in_upper_and_lower_leaves_whiteout(lab: Lab) -> None:
    """WH-2: f in RW and RO; unlink U/f: RW/f removed, a whiteout for f in its place."""
    put(lab.rw / "f", "upper")
    put(lab.ro / "f", "lower")
    u = lab.mount()
    os.unlink(u / "f")
    assert not (u / "f").exists(), lab.explain("U/f gone", None, u / "f")
    problem = whiteout_problem(lab.driver.name, lab.rw, "f", base_root=lab.rw)
    assert problem is None, lab.explain(
        f"RW/f removed and {lab.driver.whiteout_form} for f on RW", problem
    )
    assert (lab.ro / "f").read_bytes() == b"lower", lab.explain("RO/f untouched", None)


def test_unlink_upper_only_file_leaves_no_whiteout(lab: Lab) -> None:
    """WH-3: f only in RW; unlink U/f: RW/f removed, no whiteout made."""
    put(lab.rw / "f", "upper")
    put(lab.ro / "other", "lower")
    u = lab.mount()
    os.unlink(u / "f")
    assert not lexists(lab.rw / "f"), lab.explain("RW/f removed", None, lab.rw / "f")
    problem = no_whiteout_problem(lab.driver.name, lab.rw, "f")
    assert problem is None, lab.explain("no whiteout for f on RW (nothing to hide)", problem)


def test_create_over_whiteout_replaces_it(lab: Lab) -> None:
    """WH-4: after unlinking lower-only f, creating U/f "new" drops the whiteout."""
    put(lab.ro / "f", "old lower")
    u = lab.mount()
    os.unlink(u / "f")
    base_after_unlink = _base_nlink(lab)
    (u / "f").write_bytes(b"new")
    data = (u / "f").read_bytes()
    assert data == b"new", lab.explain("U/f holds b'new'", repr(data))
    assert (lab.rw / "f").read_bytes() == b"new", lab.explain(
        "RW/f is a regular file holding b'new'", None, lab.rw / "f"
    )
    problem = no_whiteout_problem(lab.driver.name, lab.rw, "f")
    assert problem is None, lab.explain("the whiteout for f is gone from RW", problem)
    assert names(u).count("f") == 1, lab.explain("f listed once in U", str(names(u)))
    assert (lab.ro / "f").read_bytes() == b"old lower", lab.explain("RO/f unchanged", None)
    if lab.driver.name == "aufs":
        assert base_after_unlink is not None
        assert _base_nlink(lab) == base_after_unlink - 1, lab.explain(
            f"{AUFS_WH_BASE} loses the whiteout's link", f"nlink {_base_nlink(lab)}"
        )


def test_rmdir_lower_only_empty_dir_creates_whiteout(lab: Lab) -> None:
    """WH-5: empty RO/d only in RO; rmdir U/d: a whiteout for d on RW, no RW/d directory."""
    mkdir(lab.ro / "d")
    u = lab.mount()
    os.rmdir(u / "d")
    assert not (u / "d").exists(), lab.explain("U/d gone", None, u / "d")
    problem = whiteout_problem(lab.driver.name, lab.rw, "d", base_root=lab.rw)
    assert problem is None, lab.explain(f"RW holds {lab.driver.whiteout_form} for d", problem)
    assert (lab.ro / "d").is_dir(), lab.explain("RO/d untouched", None, lab.ro / "d")


def test_rmdir_dir_emptied_by_whiteouts_leaves_only_whiteout(lab: Lab) -> None:
    """WH-6: RW/d holds only whiteouts covering RO/d; rmdir U/d leaves a whiteout for d.

    aufs renames RW/d to .wh..wh.d.XXXX and removes it (by a worker when it
    holds more than dirwh=3 whiteouts, so this check polls); overlayfs replaces
    RW/d with a whiteout.
    """
    for i in range(5):  # more than aufs's default dirwh=3: exercises the worker path
        put(lab.ro / "d" / f"f{i}", "lower")
    u = lab.mount()
    for i in range(5):
        os.unlink(u / "d" / f"f{i}")
    os.rmdir(u / "d")
    problem = whiteout_problem(lab.driver.name, lab.rw, "d", base_root=lab.rw)
    assert problem is None, lab.explain(f"RW holds {lab.driver.whiteout_form} for d", problem)
    deadline = time.monotonic() + 10
    leftovers = []
    while time.monotonic() < deadline:
        leftovers = [n for n in os.listdir(lab.rw) if n.startswith(".wh..wh.d.")] + (
            ["d (directory)"] if (lab.rw / "d").is_dir() else []
        )
        if not leftovers:
            break
        time.sleep(0.1)
    assert not leftovers, lab.explain("RW/d and any .wh..wh.d.XXXX gone within 10 s", leftovers)


def test_rmdir_fails_enotempty_while_lower_child_visible(lab: Lab) -> None:
    """WH-7: rmdir U/d while RO/d/x is still visible: ENOTEMPTY, no branch changes."""
    mkdir(lab.rw / "d")
    put(lab.ro / "d" / "x", "still here")
    u = lab.mount()
    before = {label: evidence.shape(path) for label, path in lab.branches.items()}
    err = errno_of(os.rmdir, u / "d")
    assert err == errno.ENOTEMPTY, lab.explain("rmdir U/d fails ENOTEMPTY", f"errno {err}")
    after = {label: evidence.shape(path) for label, path in lab.branches.items()}
    assert before == after, lab.explain(
        "no entry on any branch changed by the failed rmdir", f"before {before}, after {after}"
    )


def test_mkdir_over_whiteout_makes_opaque_directory(lab: Lab) -> None:
    """WH-8: after removing U/d (RO/d had x), mkdir U/d: RW/d opaque, U/d empty."""
    put(lab.ro / "d" / "x", "lower child")
    u = lab.mount()
    os.unlink(u / "d" / "x")
    os.rmdir(u / "d")
    os.mkdir(u / "d")
    assert (lab.rw / "d").is_dir(), lab.explain("RW/d a directory", None, lab.rw / "d")
    assert lab.driver.is_opaque(lab.rw / "d"), lab.explain(
        f"RW/d opaque: {lab.driver.opaque_form}", None, lab.rw / "d"
    )
    problem = no_whiteout_problem(lab.driver.name, lab.rw, "d")
    if lab.driver.name == "aufs":  # for overlayfs the real RW/d replaces its whiteout
        assert problem is None, lab.explain("RW/.wh.d removed", problem)
    listed = names(u / "d")
    assert listed == [], lab.explain("U/d empty although RO/d/x exists", str(listed))


def test_readdir_never_lists_whiteouts(lab: Lab) -> None:
    """WH-10: getdents through U lists no whited-out name and no driver metadata."""
    put(lab.ro / "gone1", "x")
    put(lab.ro / "d" / "gone2", "x")
    put(lab.ro / "d" / "kept", "x")
    put(lab.ro / "visible", "x")
    u = lab.mount()
    os.unlink(u / "gone1")
    os.unlink(u / "d" / "gone2")
    top, sub = names(u), names(u / "d")
    leaked = [n for n in top + sub if n.startswith(".wh.") or n.startswith("gone")]
    assert not leaked, lab.explain(
        "no whiteouts, whited-out names or .wh.* metadata listed", f"U: {top}, U/d: {sub}"
    )
    assert sorted(top) == ["d", "visible"] and sub == ["kept"], lab.explain(
        "U lists d, visible; U/d lists kept", f"U: {top}, U/d: {sub}"
    )


@pytest.mark.only_drivers("overlay")
def test_listxattr_hides_overlay_private_xattrs(lab: Lab) -> None:
    """WH-10 (overlayfs): trusted.overlay.* of an opaque dir are not listed through U."""
    put(lab.ro / "d" / "x", "x")
    u = lab.mount()
    os.unlink(u / "d" / "x")
    os.rmdir(u / "d")
    os.mkdir(u / "d")
    assert lab.driver.is_opaque(lab.rw / "d"), lab.explain("RW/d opaque", None, lab.rw / "d")
    listed = os.listxattr(u / "d")
    assert not [n for n in listed if n.startswith("trusted.overlay.")], lab.explain(
        "listxattr(U/d) shows no trusted.overlay.*", str(listed)
    )


def test_preexisting_whiteout_hides_lower_file(lab: Lab) -> None:
    """WH-1/WH-14 seeded: a whiteout for f made on RW before mounting hides RO/f."""
    put(lab.ro / "f", "lower")
    put(lab.ro / "g", "lower")
    lab.driver.make_whiteout(lab.rw, "f")
    u = lab.mount()
    err = errno_of(os.lstat, u / "f")
    assert err == errno.ENOENT, lab.explain("lstat U/f: ENOENT", str(err), lab.rw, u / "f")
    assert names(u) == ["g"], lab.explain("U lists only g", str(names(u)))


def test_preexisting_opaque_dir_hides_lower_entries(lab: Lab) -> None:
    """WH-14: RW/d made opaque before mounting, RO/d/x exists: U/d shows only RW/d's entries."""
    put(lab.rw / "d" / "mine", "upper")
    put(lab.ro / "d" / "x", "lower")
    put(lab.ro2 / "d" / "y", "lower2")
    lab.driver.make_opaque(lab.rw / "d")
    u = lab.mount()
    listed = sorted(names(u / "d"))
    assert listed == ["mine"], lab.explain(
        f"U/d lists only ['mine']: RW/d is opaque ({lab.driver.opaque_form})",
        f"{listed}; RW/d is {evidence.describe(lab.rw / 'd')}",
    )
    err = errno_of(os.lstat, u / "d" / "x")
    assert err == errno.ENOENT, lab.explain("lstat U/d/x: ENOENT", str(err))


def test_opaque_dir_in_middle_branch_stops_merge_below(lab: Lab) -> None:
    """WH-14 on a lower branch: RO/d opaque hides RO2/d/y; RW/d and RO/d still merge.

    aufs looks for markers only on whiteout-able branches, so RO is mounted
    `ro+wh` here (plain `ro` ignores them: see WH-12).
    """
    put(lab.rw / "d" / "a", "upper")
    put(lab.ro / "d" / "b", "middle")
    put(lab.ro2 / "d" / "y", "bottom")
    lab.driver.make_opaque(lab.ro / "d")
    u = lab.mount(lowers=[Branch(lab.ro, "ro+wh"), "RO2"])
    listed = sorted(names(u / "d"))
    assert listed == ["a", "b"], lab.explain("U/d lists a, b (RO/d opaque hides RO2/d)", listed)


def test_whiteout_file_names_not_reachable_through_union(lab: Lab) -> None:
    """WH-10 by lookup: the driver's own marker names cannot be looked up through U."""
    put(lab.ro / "f", "x")
    u = lab.mount()
    os.unlink(u / "f")
    if lab.driver.name == "aufs":
        probes = [".wh.f", AUFS_WH_BASE, ".wh..wh.plnk", ".wh..wh.orph"]
        for name in probes:
            err = errno_of(os.lstat, u / name)
            assert err == errno.EPERM, lab.explain(
                f"lstat U/{name} fails EPERM (aufs refuses to look up .wh.* names)",
                f"errno {err}",
            )
    else:
        err = errno_of(os.lstat, u / "f")
        assert err == errno.ENOENT, lab.explain("lstat U/f (a whiteout on RW): ENOENT", str(err))
    left = sysapi.readdir(u)
    assert [e.name for e in left if e.name not in (".", "..")] == [], lab.explain(
        "U lists nothing", [e.name for e in left]
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.defaults_only
@pytest.mark.parametrize("diropq", ["w", "a"])
def test_diropq_policy_for_new_directories(lab: Lab, diropq: str) -> None:
    """WH-8: a fresh mkdir (no whiteout under it) gets .wh..wh..opq only with diropq=a;
    with the default diropq=w only a directory replacing a whiteout does."""
    put(lab.ro / "other", "x")
    u = lab.mount(options=[f"diropq={diropq}"], plain=True)
    os.mkdir(u / "fresh")
    opaque = lab.driver.is_opaque(lab.rw / "fresh")
    assert opaque == (diropq == "a"), lab.explain(
        f"diropq={diropq}: RW/fresh opaque is {diropq == 'a'}", opaque, lab.rw / "fresh"
    )


@pytest.mark.only_drivers("aufs")
@pytest.mark.defaults_only
@pytest.mark.parametrize("variant", ["default", "noplink", "nolwh"])
def test_writable_branch_metadata_after_mount(lab: Lab, variant: str) -> None:
    """WH-11: after the mount RW holds .wh..wh.aufs (regular, 0444, size 0),
    .wh..wh.plnk and .wh..wh.orph (directories, 0700); noplink: no .plnk;
    `RW=rw+nolwh`: no base, and each whiteout is its own 0444 file with nlink 1."""
    put(lab.ro / "f", "x")
    upper = Branch(lab.rw, "rw+nolwh") if variant == "nolwh" else "RW"
    u = lab.mount(upper=upper, options=["noplink"] if variant == "noplink" else [], plain=True)
    base, plnk, orph = (lab.rw / n for n in (AUFS_WH_BASE, ".wh..wh.plnk", ".wh..wh.orph"))
    want_base = variant != "nolwh"
    if want_base:
        st = base.lstat() if base.exists() else None
        assert (
            st is not None
            and stat.S_ISREG(st.st_mode)
            and st.st_size == 0
            and (stat.S_IMODE(st.st_mode) == 0o444)
        ), lab.explain(f"RW/{AUFS_WH_BASE}: regular, 0444, empty", None, base)
    else:
        assert not base.exists(), lab.explain(f"no RW/{AUFS_WH_BASE} with nolwh", None, base)
    for d, wanted in ((plnk, variant != "noplink"), (orph, True)):
        if wanted:
            assert d.is_dir() and stat.S_IMODE(d.stat().st_mode) == 0o700, lab.explain(
                f"RW/{d.name}: directory 0700", None, d
            )
        else:
            assert not d.exists(), lab.explain(f"no RW/{d.name} with {variant}", None, d)
    os.unlink(u / "f")
    wh = (lab.rw / ".wh.f").lstat()
    if variant == "nolwh":
        assert wh.st_nlink == 1 and stat.S_IMODE(wh.st_mode) == 0o444, lab.explain(
            "RW/.wh.f its own 0444 file, nlink 1", None, lab.rw / ".wh.f"
        )
    else:
        problem = whiteout_problem("aufs", lab.rw, "f", base_root=lab.rw)
        assert problem is None, lab.explain("RW/.wh.f a hardlink of the base", problem)


@pytest.mark.only_drivers("aufs")
@pytest.mark.defaults_only
@pytest.mark.parametrize("mid_perm", ["ro", "ro+wh"])
def test_lower_whiteouts_count_only_on_wh_branches(lab: Lab, mid_perm: str) -> None:
    """WH-12: RW=rw:MID:LOW=ro with MID/.wh.f, LOW/f, MID/d/.wh..wh..opq, LOW/d/g:
    with MID=ro, U/f and U/d/g are visible (plain ro branches are not searched for
    whiteouts); with MID=ro+wh both are hidden. Docker relies on +wh."""
    mid, low = lab.ro, lab.ro2
    put(low / "f", "low")
    put(low / "d" / "g", "low")
    lab.driver.make_whiteout(mid, "f")
    (mid / "d").mkdir()
    lab.driver.make_opaque(mid / "d")
    u = lab.mount(lowers=[Branch(mid, mid_perm), Branch(low, "ro")], plain=True)
    hidden = mid_perm == "ro+wh"
    f_seen, g_seen = (u / "f").exists(), (u / "d" / "g").exists()
    assert (f_seen, g_seen) == (not hidden, not hidden), lab.explain(
        f"MID={mid_perm}: U/f and U/d/g {'hidden' if hidden else 'visible'}",
        f"U/f visible {f_seen}, U/d/g visible {g_seen}",
    )
