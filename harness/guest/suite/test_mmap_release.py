"""mmap paths (issue 15, kind 6): a mapping of a union file must release everything
it pinned once it is gone.

The aufs mmap patch (aufs5-mmap.patch: vm_prfile, and remap_file_pages() in
mm/mmap.c taking its own file reference; design/06mmap.txt) makes the mapping hold
both the branch file and the aufs file. After munmap and close the union must
unmount, its superblock must go (/sys/fs/aufs/si_<id> disappears with it), and
the aufs module's reference count must return to its value before the mount.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from unionfs import aufs, sysapi
from unionfs.drivers import AufsDriver
from unionfs.fsops import put
from unionfs.kernel import kernel_workers
from unionfs.lab import Lab

PAGE = os.sysconf("SC_PAGE_SIZE")
REFCNT = Path("/sys/module/aufs/refcnt")


def _refcnt() -> int | None:
    try:
        return int(REFCNT.read_text())
    except (OSError, ValueError):
        return None


def _wait_for(cond, seconds: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


@pytest.mark.fs_independent
@pytest.mark.parametrize("where", ["lower", "upper"])
@pytest.mark.parametrize("how", ["shared", "shared-remap", "private-remap", "shared-fork"])
def test_mapping_released_lets_the_union_go(lab: Lab, how: str, where: str) -> None:
    """Kind 6: open U/f O_RDWR, mmap 2 pages (MAP_SHARED, or MAP_PRIVATE), optionally
    remap_file_pages(page 0 -> file page 1) or fork a child that exits (copying the
    vma, design/06mmap.txt), munmap, close: umount of U succeeds,
    its si_<id> sysfs directory goes, /sys/module/aufs/refcnt is back to its value
    before the mount (compared when this check has the kernel to itself)."""
    branch = lab.ro if where == "lower" else lab.rw
    put(branch / "f", b"A" * PAGE + b"B" * PAGE)
    aufs_drv = isinstance(lab.driver, AufsDriver)
    before = _refcnt() if aufs_drv else None
    u = lab.mount()
    si = aufs.si_dir(u) if aufs_drv else None
    shared = how.startswith("shared")
    flags = sysapi.MAP_SHARED if shared else sysapi.MAP_PRIVATE
    fd = os.open(u / "f", os.O_RDWR)
    try:
        addr = sysapi.mmap_raw(fd, 2 * PAGE, sysapi.PROT_READ | sysapi.PROT_WRITE, flags)
        try:
            remap_err = None
            if how.endswith("remap"):
                try:
                    sysapi.remap_file_pages(addr, PAGE, 1)
                except OSError as exc:
                    remap_err = exc
            if how.endswith("fork"):  # the child's copy of the vma holds the files too
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
            if shared:
                assert remap_err is None, lab.explain(
                    "remap_file_pages on a shared mapping: 0", remap_err
                )
        finally:
            sysapi.munmap(addr, 2 * PAGE)
    finally:
        os.close(fd)
    err = None
    try:
        sysapi.umount(u)
    except OSError as exc:
        err = exc
    if err is None and lab.mnt is not None:
        lab.mnt.mounted = False
    assert err is None, lab.explain("umount U after munmap and close: 0", err)
    if si is not None:
        gone = _wait_for(lambda: not si.exists())
        assert gone, lab.explain(f"{si} removed with the superblock", "still present")
    workers = kernel_workers()
    if before is not None and workers == 1:
        back = _wait_for(lambda: _refcnt() == before)
        assert back, lab.explain(f"aufs refcnt back to {before}", _refcnt())
