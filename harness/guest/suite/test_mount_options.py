"""B. Mount syntax, /proc/mounts and sysfs: how aufs parses and shows its branches.

Branch lists are read from /sys/fs/aufs/si_<id>/brN (module parameter brs=1,
the default) or from the `br:` tail of /proc/mounts (brs=0).
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import subprocess
import time

import pytest

from unionfs import aufs, sysapi
from unionfs.drivers import AUFS_WH_BASE, AUFS_WH_ORPHDIR, AUFS_WH_PLINKDIR, Branch
from unionfs.fsops import errname, errno_of, lexists, names, put
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

pytestmark = pytest.mark.fs_independent


def _brs(lab: Lab) -> list[str]:
    return aufs.branches(lab.u)


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("key", ["br=", "br:", "dirs="])
def test_branch_list_syntax_variants_are_equivalent(lab: Lab, key: str) -> None:
    """MNT-1: `br=RW=rw:RO=ro`, `br:RW=rw:RO=ro` and `dirs=RW=rw:RO=ro` mean the same."""
    put(lab.ro / "f", "lower")
    lab.mount_raw(f"{key}{lab.rw}=rw:{lab.ro}=ro")
    want = [f"{lab.rw}=rw", f"{lab.ro}=ro"]
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))
    assert (lab.u / "f").read_text() == "lower", lab.explain("U/f = RO/f", None, lab.u / "f")


@pytest.mark.only_drivers("aufs")
def test_empty_branch_component_ends_the_list(lab: Lab) -> None:
    """MNT-1: `br=RW=rw::RO=ro` silently drops everything after the empty component."""
    put(lab.ro / "f", "lower")
    lab.mount_raw(f"br={lab.rw}=rw::{lab.ro}=ro")
    assert _brs(lab) == [f"{lab.rw}=rw"], lab.explain(f"only {lab.rw}=rw", _brs(lab))
    assert names(lab.u) == [], lab.explain("U empty (RO not a branch)", names(lab.u))


@pytest.mark.only_drivers("aufs")
def test_branch_permissions_default_by_position(lab: Lab) -> None:
    """MNT-2: `br=RW:RO` without permissions: the first branch rw, the others ro."""
    lab.mount_raw(f"br={lab.rw}:{lab.ro}")
    want = [f"{lab.rw}=rw", f"{lab.ro}=ro"]
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
def test_readonly_mount_makes_first_branch_ro_by_default(lab: Lab) -> None:
    """MNT-2: with MS_RDONLY (-o ro), `br=RW:RO` gives br0 `=ro` too."""
    lab.mount_raw(f"br={lab.rw}:{lab.ro}", flags=sysapi.MS_RDONLY)
    want = [f"{lab.rw}=ro", f"{lab.ro}=ro"]
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
def test_squashfs_branch_defaults_to_rr(lab: Lab) -> None:
    """MNT-2: a branch on squashfs (a real read-only fs) defaults to `rr`."""
    mksquashfs = shutil.which("mksquashfs") or "/usr/bin/mksquashfs"
    if not os.access(mksquashfs, os.X_OK):
        pytest.skip("mksquashfs (squashfs-tools) not installed")
    if "squashfs" not in sysapi.filesystems():
        pytest.skip("squashfs not in /proc/filesystems")
    put(lab.ro / "f", "in squashfs")
    image = lab.tmp / "sq.img"
    subprocess.run(
        [mksquashfs, str(lab.ro), str(image), "-noappend", "-quiet"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sq = lab.tmp / "sq"
    sq.mkdir()
    dev, fd = sysapi.loop_attach(image, read_only=True)
    try:
        lab.mount_other(dev, sq, "squashfs", flags=sysapi.MS_RDONLY)
    finally:
        os.close(fd)  # autoclear: the loop device goes with the squashfs mount
    lab.mount_raw(f"br={lab.rw}:{sq}")
    want = [f"{lab.rw}=rw", f"{sq}=rr"]
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("perm", ["ro+wh", "rr+wh", "rw+nolwh", "rw+coo_reg"])
def test_branch_attributes_print_as_given(lab: Lab, perm: str) -> None:
    """MNT-3: `=ro+wh`, `=rr+wh`, `=rw+nolwh`, `=rw+coo_reg` are shown exactly as given."""
    if perm.startswith("rw"):
        data, want = f"br={lab.rw}={perm}:{lab.ro}=ro", [f"{lab.rw}={perm}", f"{lab.ro}=ro"]
    else:
        data, want = f"br={lab.rw}=rw:{lab.ro}={perm}", [f"{lab.rw}=rw", f"{lab.ro}={perm}"]
    lab.mount_raw(data)
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
def test_unknown_branch_permission_becomes_ro_with_warning(lab: Lab, kmsg: KernelWatch) -> None:
    """MNT-3: `RO=xyz` mounts RO as `ro`, logging "ignored branch permission xyz"."""
    lab.mount_raw(f"br={lab.rw}=rw:{lab.ro}=xyz")
    want = [f"{lab.rw}=rw", f"{lab.ro}=ro"]
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))
    found = kmsg.wait_for(r"ignored branch permission xyz")
    assert found, lab.explain("kernel log: ignored branch permission xyz", kmsg.lines())


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize(
    ("given", "shown", "dropped"),
    [("ro+nolwh", "ro", "nolwh"), ("rw+wh", "rw", "wh"), ("ro+unpin", "ro", "unpin")],
)
@pytest.mark.only_drivers("aufs")
def test_misplaced_branch_attribute_is_dropped_with_warning(
    lab: Lab, kmsg: KernelWatch, given: str, shown: str, dropped: str
) -> None:
    """MNT-3: an attribute that does not fit the permission (`ro+nolwh`, `rw+wh`) and
    the obsolete `+unpin` are dropped, logging "ignored branch attribute <attr>"."""
    if given.startswith("rw"):
        data, want = f"br={lab.rw}={given}:{lab.ro}=ro", [f"{lab.rw}={shown}", f"{lab.ro}=ro"]
    else:
        data, want = f"br={lab.rw}=rw:{lab.ro}={given}", [f"{lab.rw}=rw", f"{lab.ro}={shown}"]
    lab.mount_raw(data)
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))
    found = kmsg.wait_for(rf"ignored branch attribute {dropped}")
    assert found, lab.explain(f"kernel log: ignored branch attribute {dropped}", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_proc_mounts_shows_only_si_for_defaults(lab: Lab) -> None:
    """MNT-4: the default mount shows `none U aufs rw,relatime,si=<hex> 0 0` and, with
    brs=0, a trailing br: list; no default-valued option is printed."""
    lab.mount(plain=True)
    line = lab.mnt.proc_mounts() if lab.mnt else None
    assert line is not None, lab.explain("U in /proc/mounts", None)
    fields = line.split(" ")
    assert fields[0] == "none" and fields[2] == "aufs" and fields[4:] == ["0", "0"], lab.explain(
        "source none, type aufs, 0 0", line
    )
    opts = fields[3].split(",")
    extra = [o for o in opts if o not in ("rw", "relatime") and not o.startswith("si=")]
    if aufs.module_param("brs") == "0":
        extra = [o for o in extra if not o.startswith("br:")]
    assert opts[:2] == ["rw", "relatime"] and opts[2].startswith("si=") and not extra, lab.explain(
        "options rw,relatime,si=<hex> and nothing else", fields[3]
    )
    assert all(c in "0123456789abcdef" for c in opts[2][3:]), lab.explain("si is hex", opts[2])


@pytest.mark.only_drivers("aufs")
def test_non_default_options_render_in_canonical_order(lab: Lab) -> None:
    """MNT-5: `udba=none,noplink,dio,dirperm1,create=rr,cpup=bup,diropq=a,sum,nowarn_perm,
    noxino` renders as si=...,noxino,udba=none,noplink,dio,dirperm1,create=rr,cpup=bup,
    diropq=a,sum,nowarn_perm. From aufs6.10 dio is the default and is not printed."""
    given = "udba=none,noplink,dio,dirperm1,create=rr,cpup=bup,diropq=a,sum,nowarn_perm,noxino"
    lab.mount(options=given.split(","), plain=True)
    opts = [o for o in aufs.mount_options(lab.u) if not o.startswith("br:")]
    want = [
        "noxino",
        "udba=none",
        "noplink",
        "dio",
        "dirperm1",
        "create=rr",
        "cpup=bup",
        "diropq=a",
        "sum",
        "nowarn_perm",
    ]
    if aufs.dio_is_default():
        want.remove("dio")
    got = opts[3:]
    assert opts[:2] == ["rw", "relatime"] and got == want, lab.explain(
        f"options rw,relatime,si=..,{','.join(want)} (aufs {aufs.version_string()})",
        ",".join(opts),
    )


@pytest.mark.only_drivers("aufs")
def test_brs0_lists_branches_in_proc_mounts(lab: Lab) -> None:
    """MNT-6: loaded with brs=0, /proc/mounts ends with `,br:RW=rw:RO=ro` and sysfs
    has no brN/bridN."""
    if aufs.module_param("brs") != "0":
        pytest.skip("aufs loaded with brs=1 (load it with `modprobe aufs brs=0` for this check)")
    lab.mount(lowers=["RO"], plain=True)
    opts = aufs.mount_options(lab.u)
    assert opts[-1] == f"br:{lab.rw}=rw:{lab.ro}=ro", lab.explain(
        f"last option br:{lab.rw}=rw:{lab.ro}=ro", opts
    )
    present = sorted(p.name for p in aufs.si_dir(lab.u).iterdir())
    assert not [n for n in present if n.startswith("br")], lab.explain("no brN in sysfs", present)


@pytest.mark.only_drivers("aufs")
def test_sysfs_si_directory_describes_the_mount(lab: Lab) -> None:
    """MNT-7: /sys/fs/aufs/si_<id>/ holds xi_path, br0..2 and brid0..2 (0444) with brs=1;
    xi_path names the default xino file; the directory goes away at umount."""
    if aufs.module_param("brs") == "0":
        pytest.skip("aufs loaded with brs=0: no brN in sysfs")
    lab.mount(plain=True)
    d = aufs.si_dir(lab.u)
    entries = {p.name: oct(p.stat().st_mode & 0o777) for p in d.iterdir() if p.is_file()}
    want = {n: oct(0o444) for n in ("xi_path", "br0", "br1", "br2", "brid0", "brid1", "brid2")}
    assert entries == want, lab.explain(f"{d} holds {sorted(want)} all 0444", entries)
    brids = [(d / f"brid{i}").read_text().strip() for i in range(3)]
    assert all(b.lstrip("-").isdigit() for b in brids) and len(set(brids)) == 3, lab.explain(
        "brid0..2 distinct integers", brids
    )
    want_xi = _default_xino(lab)
    got_xi = (d / "xi_path").read_text().rstrip("\n")
    assert got_xi == want_xi, lab.explain(f"xi_path {want_xi}", got_xi)
    lab.umount()
    assert not d.exists(), f"expected: {d} removed at umount\nobserved: still there"


def _default_xino(lab: Lab) -> str:
    # aufs puts its xino file on the first writable branch unless that fs cannot
    # hold one (xfs, btrfs: "bad xino"), then falls back to /tmp/.aufs.xino.
    if lab.kind_of("RW") in ("xfs", "btrfs"):
        return aufs.XINO_DEFPATH
    return f"{lab.rw}/{aufs.XINO_FNAME}"


@pytest.mark.only_drivers("aufs")
def test_noxino_shows_noxino_and_empty_xi_path(lab: Lab) -> None:
    """MNT-7/OPT-6: with noxino, /proc/mounts shows ,noxino and xi_path is empty."""
    lab.mount(options=["noxino"], plain=True)
    assert "noxino" in aufs.mount_options(lab.u), lab.explain(
        "noxino in /proc/mounts", aufs.mount_options(lab.u)
    )
    xi = (aufs.si_dir(lab.u) / "xi_path").read_text()
    assert xi == "", lab.explain("xi_path empty", repr(xi))


@pytest.mark.only_drivers("aufs")
def test_remount_add_operations_renumber_branches(lab: Lab) -> None:
    """MNT-8: remount append:, prepend:, add:N: (alias ins:N:) and del: renumber brN
    after each step."""
    rw2, x = lab.add_branch("RW2"), lab.add_branch("X")
    lab.mount(lowers=["RO"], plain=True)
    steps = [
        (f"append:{lab.ro2}=ro", [f"{lab.rw}=rw", f"{lab.ro}=ro", f"{lab.ro2}=ro"]),
        (f"prepend:{rw2}=rw", [f"{rw2}=rw", f"{lab.rw}=rw", f"{lab.ro}=ro", f"{lab.ro2}=ro"]),
        (
            f"add:1:{x}=ro",
            [f"{rw2}=rw", f"{x}=ro", f"{lab.rw}=rw", f"{lab.ro}=ro", f"{lab.ro2}=ro"],
        ),
        (f"del:{x}", [f"{rw2}=rw", f"{lab.rw}=rw", f"{lab.ro}=ro", f"{lab.ro2}=ro"]),
        (
            f"ins:3:{x}=ro",
            [f"{rw2}=rw", f"{lab.rw}=rw", f"{lab.ro}=ro", f"{x}=ro", f"{lab.ro2}=ro"],
        ),
    ]
    for data, want in steps:
        lab.remount(data)
        assert _brs(lab) == want, lab.explain(f"after remount {data!r}: {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
def test_remount_operations_apply_left_to_right(lab: Lab) -> None:
    """MNT-8: `append:RO2=ro,del:RO,mod:RW=ro` in one remount applies in order."""
    lab.mount(lowers=["RO"], plain=True)
    lab.remount(f"append:{lab.ro2}=ro,del:{lab.ro},mod:{lab.rw}=ro")
    want = [f"{lab.rw}=ro", f"{lab.ro2}=ro"]
    assert _brs(lab) == want, lab.explain(f"branches {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
def test_added_upper_branch_hides_lower_entries(lab: Lab) -> None:
    """MNT-8: prepending RW2 holding f hides RO's f at once."""
    rw2 = lab.add_branch("RW2")
    put(lab.ro / "f", "lower")
    put(rw2 / "f", "new top")
    lab.mount(plain=True)
    assert (lab.u / "f").read_text() == "lower", lab.explain("U/f = RO/f first", None)
    lab.remount(f"prepend:{rw2}=rw")
    got = (lab.u / "f").read_text()
    assert got == "new top", lab.explain("U/f = RW2/f after prepend", got, lab.u / "f")


@pytest.mark.only_drivers("aufs")
def test_remount_del_of_a_non_branch_is_ignored(lab: Lab) -> None:
    """MNT-8: at remount, `del:` of a directory that is not a branch succeeds, no change."""
    other = lab.add_branch("OTHER")
    lab.mount(lowers=["RO"], plain=True)
    lab.remount(f"del:{other}")
    want = [f"{lab.rw}=rw", f"{lab.ro}=ro"]
    assert _brs(lab) == want, lab.explain(f"branches still {want}", _brs(lab))


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("holder", ["open-fd", "cwd", "mmap"])
def test_deleting_a_busy_branch_fails_ebusy(lab: Lab, holder: str) -> None:
    """MNT-10: an open fd, a cwd or an mmap inside RO (through U) makes `del:RO` EBUSY;
    once released, `del:RO` succeeds."""
    put(lab.ro / "d" / "f", "lower data")
    u = lab.mount(plain=True)
    release = _hold(u / "d", holder)
    try:
        err = errno_of(lab.remount, f"del:{lab.ro}")
        assert err == errno.EBUSY, lab.explain(f"del:RO with a {holder} in RO: EBUSY", errname(err))
    finally:
        release()
    lab.remount(f"del:{lab.ro}")
    assert f"{lab.ro}=ro" not in _brs(lab), lab.explain("RO deleted once released", _brs(lab))


def _hold(d: os.PathLike[str], holder: str):  # type: ignore[no-untyped-def]
    if holder == "open-fd":
        fd = os.open(os.path.join(d, "f"), os.O_RDONLY)
        return lambda: os.close(fd)
    if holder == "cwd":
        back = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        os.chdir(d)

        def restore() -> None:
            os.fchdir(back)
            os.close(back)

        return restore
    fd = os.open(os.path.join(d, "f"), os.O_RDONLY)
    m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    os.close(fd)
    return m.close


@pytest.mark.only_drivers("aufs")
def test_deleting_the_only_branch_fails_ebusy(lab: Lab) -> None:
    """MNT-10: `del:` of the only branch is EBUSY."""
    lab.mount(upper="RW", lowers=[], plain=True)
    err = errno_of(lab.remount, f"del:{lab.rw}")
    assert err == errno.EBUSY, lab.explain("del of the only branch: EBUSY", errname(err))


def _wh_meta(lab: Lab) -> dict[str, bool]:
    return {n: lexists(lab.rw / n) for n in (AUFS_WH_BASE, AUFS_WH_PLINKDIR, AUFS_WH_ORPHDIR)}


@pytest.mark.only_drivers("aufs")
def test_mod_rw_to_ro_removes_whiteout_metadata_and_back(lab: Lab) -> None:
    """MNT-11: `mod:RW=ro` removes RW/.wh..wh.aufs, .wh..wh.orph and the empty
    .wh..wh.plnk; `mod:RW=rw` creates them again."""
    lab.mount(plain=True)
    assert all(_wh_meta(lab).values()), lab.explain("RW has its aufs metadata", _wh_meta(lab))
    lab.remount(f"mod:{lab.rw}=ro")
    assert not any(_wh_meta(lab).values()), lab.explain(
        "metadata gone after mod:RW=ro", _wh_meta(lab)
    )
    lab.remount(f"mod:{lab.rw}=rw")
    assert all(_wh_meta(lab).values()), lab.explain("metadata back after mod:RW=rw", _wh_meta(lab))


@pytest.mark.only_drivers("aufs")
def test_mod_rw_to_ro_fails_ebusy_while_file_is_mmapped(lab: Lab) -> None:
    """MNT-11: a shared writable mmap of an aufs file on RW makes `mod:RW=ro` EBUSY."""
    put(lab.rw / "f", b"x" * 4096)
    u = lab.mount(plain=True)
    fd = os.open(u / "f", os.O_RDWR)
    m = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        err = errno_of(lab.remount, f"mod:{lab.rw}=ro")
        assert err == errno.EBUSY, lab.explain(
            "mod:RW=ro with an mmapped file: EBUSY", errname(err)
        )
    finally:
        m.close()
        os.close(fd)
    assert _brs(lab)[0] == f"{lab.rw}=rw", lab.explain("RW still rw", _brs(lab))


@pytest.mark.only_drivers("aufs")
def test_mod_to_rw_on_readonly_fs_fails_einval(lab: Lab, kmsg: KernelWatch) -> None:
    """MNT-11/ERR-6: `mod:X=rw` where X's filesystem is read-only: EINVAL, "write
    permission for readonly mount or inode"."""
    rofs = lab.readonly_fs_dir("rofs")
    lab.mount(lowers=[Branch(rofs, "ro")], plain=True)
    err = errno_of(lab.remount, f"mod:{rofs}=rw")
    assert err == errno.EINVAL, lab.explain("mod:X=rw on a read-only fs: EINVAL", errname(err))
    found = kmsg.wait_for(r"write permission for readonly mount or inode")
    assert found, lab.explain("kernel log: write permission for readonly ...", kmsg.lines())


@pytest.mark.only_drivers("aufs")
def test_mounts_stay_listed_until_umount(lab: Lab) -> None:
    """MNT-7: the si_<id> directory exists exactly while the mount does."""
    lab.mount(plain=True)
    d = aufs.si_dir(lab.u)
    assert d.is_dir(), lab.explain(f"{d} exists", None)
    lab.umount()
    deadline = time.monotonic() + 2
    while d.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not d.exists(), f"expected: {d} gone after umount\nobserved: still there"


@pytest.mark.only_drivers("overlay")
def test_overlay_layers_cannot_change_on_remount(lab: Lab) -> None:
    """MNT-8 (overlayfs): a remount naming other layers does not change the layers
    (newer kernels refuse it, older ones ignore it)."""
    put(lab.ro / "f", "from RO")
    put(lab.ro2 / "g", "from RO2")
    u = lab.mount(lowers=["RO"])
    data = lab.driver.render_data(Branch(lab.rw, "rw"), [Branch(lab.ro2)])
    err = errno_of(lab.remount, data)
    got = sorted(names(u))
    assert got == ["f"], lab.explain(
        "U still shows RO's f only after remount with lowerdir=RO2",
        f"{got} (remount errno {err})",
    )
