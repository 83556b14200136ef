"""F. Hard links and aufs pseudo-links (overlayfs: copy-up then link).

A pseudo-link is aufs's record, in RW/.wh..wh.plnk/<aufs ino>.<branch ino>, that
an aufs inode copied up under another name is the same file as its lower copy.
"""

from __future__ import annotations

import errno
import os

import pytest

from unionfs import aufs
from unionfs.drivers import AUFS_WH_PLINKDIR
from unionfs.fsops import lexists, put, run_as
from unionfs.gates import overlay_param
from unionfs.kernel import KernelWatch
from unionfs.lab import Lab

pytestmark = pytest.mark.option_sets


def test_link_to_a_lower_file(lab: Lab) -> None:
    """LNK-1: a only in RO; link(U/a, U/b): U/a and U/b share st_ino with nlink 2.
    aufs (plink): RW/b is a copy of a, RW/.wh..wh.plnk/<ino>.<ino> a hardlink of it,
    no RW/a. overlayfs: RW/a copied up and RW/b a hardlink of it."""
    put(lab.ro / "a", "A data", mode=0o640)
    u = lab.mount()
    os.link(u / "a", u / "b")
    sa, sb = (u / "a").stat(), (u / "b").stat()
    assert (sa.st_ino, sa.st_nlink) == (sb.st_ino, 2) and sb.st_nlink == 2, lab.explain(
        "U/a, U/b: same st_ino, nlink 2", f"{(sa.st_ino, sa.st_nlink)} {(sb.st_ino, sb.st_nlink)}"
    )
    assert (lab.rw / "b").read_text() == "A data", lab.explain("RW/b = a's data", None)
    if lab.driver.name == "aufs":
        assert not lexists(lab.rw / "a"), lab.explain("no RW/a (pseudo-link instead)", None)
        plnk = lab.rw / AUFS_WH_PLINKDIR
        entries = sorted(os.listdir(plnk)) if plnk.is_dir() else None
        rwb = (lab.rw / "b").stat()
        want = f"{sa.st_ino}.{rwb.st_ino}"
        assert entries == [want], lab.explain(f"RW/{AUFS_WH_PLINKDIR} holds [{want}]", entries)
        assert (plnk / want).stat().st_ino == rwb.st_ino, lab.explain(
            "the pseudo-link is a hardlink of RW/b", None, plnk / want
        )
    else:
        ra, rb = (lab.rw / "a").stat(), (lab.rw / "b").stat()
        assert ra.st_ino == rb.st_ino and rb.st_nlink == 2, lab.explain(
            "RW/a and RW/b one inode with nlink 2", None, lab.rw / "a", lab.rw / "b"
        )


@pytest.mark.only_drivers("aufs")
def test_link_without_plink_copies_up_then_links(lab: Lab) -> None:
    """LNK-2: with noplink, link(U/a, U/b) copies a up to RW/a and links RW/b to it
    (nlink 2); RW has no .wh..wh.plnk."""
    put(lab.ro / "a", "A data")
    u = lab.mount(options=["noplink"])
    os.link(u / "a", u / "b")
    ra, rb = (lab.rw / "a").stat(), (lab.rw / "b").stat()
    assert ra.st_ino == rb.st_ino and ra.st_nlink == 2, lab.explain(
        "RW/a, RW/b one inode, nlink 2", None, lab.rw / "a", lab.rw / "b"
    )
    assert not lexists(lab.rw / AUFS_WH_PLINKDIR), lab.explain("no .wh..wh.plnk", None)


@pytest.mark.only_drivers("aufs")
def test_umount_with_pseudo_links_warns_and_keeps_them(lab: Lab, kmsg: KernelWatch) -> None:
    """LNK-4: umount without flushing pseudo-links logs "pseudo-link is not flushed";
    the entries stay on RW."""
    put(lab.ro / "a", "A")
    u = lab.mount()
    os.link(u / "a", u / "b")
    lab.umount()
    found = kmsg.wait_for(r"pseudo-link is not flushed")
    assert found, lab.explain("kernel log: pseudo-link is not flushed", kmsg.lines())
    plnk = lab.rw / AUFS_WH_PLINKDIR
    assert plnk.is_dir() and os.listdir(plnk), lab.explain("plnk entries still on RW", None)


def test_copy_up_of_a_hardlinked_lower_file(lab: Lab) -> None:
    """RO/a and RO/b are one inode (nlink 2); append to U/a copies it up.
    aufs (plink): U/b follows U/a (same file), a pseudo-link records it.
    overlayfs without index: the link is broken, U/b keeps the old data."""
    put(lab.ro / "a", "shared")
    os.link(lab.ro / "a", lab.ro / "b")
    u = lab.mount()
    with open(u / "a", "ab") as fh:
        fh.write(b"+new")
    got_b = (u / "b").read_text()
    if lab.driver.name == "aufs":
        assert got_b == "shared+new", lab.explain("U/b = shared+new (hardlink kept)", got_b)
        plnk = lab.rw / AUFS_WH_PLINKDIR
        assert plnk.is_dir() and os.listdir(plnk), lab.explain("a pseudo-link on RW", None)
        return
    index = overlay_param(lab.driver, "index")
    want = "shared+new" if index == "Y" else "shared"
    assert got_b == want, lab.explain(f"U/b = {want} (overlay index={index})", got_b)


@pytest.mark.only_drivers("aufs")
@pytest.mark.fs_independent
def test_plink_maintenance_interface(lab: Lab) -> None:
    """LNK-5: /proc/fs/aufs/plink_maint is 0200; a non-root writer gets EACCES, a bad
    si EINVAL, and a second si= on the same fd EBUSY."""
    if not aufs.PLINK_MAINT.exists():
        pytest.skip(f"{aufs.PLINK_MAINT} absent (aufs without CONFIG_PROC_FS)")
    mode = aufs.PLINK_MAINT.stat().st_mode & 0o777
    assert mode == 0o200, lab.explain(f"{aufs.PLINK_MAINT} mode 0200", oct(mode))
    u = lab.mount()
    si = aufs.si_of(u)

    def write_as_user() -> int:
        fd = os.open(aufs.PLINK_MAINT, os.O_WRONLY)
        try:
            return os.write(fd, f"si={si}".encode())
        finally:
            os.close(fd)

    outcome = run_as(1000, 1000, write_as_user)
    assert outcome.errno == errno.EACCES, lab.explain("non-root write: EACCES", outcome)
    fd = os.open(aufs.PLINK_MAINT, os.O_WRONLY)
    try:
        bad = int(si, 16) ^ 0xFF0
        with pytest.raises(OSError) as info:
            os.write(fd, f"si={bad:x}".encode())
        assert info.value.errno == errno.EINVAL, lab.explain("unknown si: EINVAL", info.value)
        os.write(fd, f"si={si}".encode())
        with pytest.raises(OSError) as info:
            os.write(fd, f"si={si}".encode())
        assert info.value.errno == errno.EBUSY, lab.explain(
            "second si= on one fd: EBUSY", info.value
        )
    finally:
        os.close(fd)  # leaves maintenance mode
