"""f2fs as a branch filesystem (issue 15, kind 7).

aufs copies a regular file up holding the source inode's lock (cpup.c
au_do_cpup_regular(): inode_lock_shared(h_src_inode) around au_cp_regular(),
which opens the source). f2fs from linux-v6.11 takes the inode lock in its open
(298b1e4182d6 "f2fs: fix to truncate preallocated blocks in f2fs_file_open()"),
so every copy-up from an f2fs branch deadlocks on aufs branches without the
2024-10-14 workaround ("aufs: linux-v6.11, f2fs inode_lock() in file-open",
fstype.h au_test_fs_unlock_for_open()). Every operation that copies a file up
from f2fs must finish; a hang is reported by the hung-task detector.

These checks always run on f2fs branches (made on loop devices with mkfs.f2fs,
f2fs-tools), whatever --branch-fs says.
"""

from __future__ import annotations

import mmap
import os

import pytest

from unionfs.fsops import put
from unionfs.lab import Lab

pytestmark = pytest.mark.only_branch_fs("f2fs")


def _append(u_f: str) -> None:
    with open(u_f, "a") as fh:
        fh.write("+")


def _truncate_open(u_f: str) -> None:
    fd = os.open(u_f, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"new")
    os.close(fd)


def _chmod(u_f: str) -> None:
    os.chmod(u_f, 0o600)


def _setxattr(u_f: str) -> None:
    os.setxattr(u_f, "user.k", b"v")


def _link(u_f: str) -> None:
    os.link(u_f, u_f + "-link")


def _rename(u_f: str) -> None:
    os.rename(u_f, u_f + "-renamed")


def _mmap_write(u_f: str) -> None:
    fd = os.open(u_f, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[0:1] = b"X"
    finally:
        os.close(fd)


OPS = {
    "append": (_append, "f", b"lower+"),
    "open-trunc": (_truncate_open, "f", b"new"),
    "chmod": (_chmod, "f", b"lower"),
    "setxattr": (_setxattr, "f", b"lower"),
    "link": (_link, "f-link", b"lower"),
    "rename": (_rename, "f-renamed", b"lower"),
    "mmap-write": (_mmap_write, "f", b"Xower"),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_copy_up_from_an_f2fs_lower_branch_finishes(lab: Lab, op: str) -> None:
    """Kind 7: RO/f on f2fs; append (and truncate, chmod, setxattr, link, rename, a
    shared writable mmap) through U finishes, copying f up to RW with the right
    data, RO/f untouched. aufs cpup.c au_do_cpup_regular() (workaround 2024-10-14)."""
    put(lab.ro / "f", "lower")
    u = lab.mount()
    fn, result, data = OPS[op]
    fn(str(u / "f"))
    assert (lab.rw / result).read_bytes() == data, lab.explain(
        f"RW/{result} holds {data!r}", None, lab.rw / result
    )
    assert (lab.ro / "f").read_bytes() == b"lower", lab.explain("RO/f untouched", None)
