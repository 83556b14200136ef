"""Removing xattrs and ACLs that are not there (issue 15, kind 3).

removexattr(2) of a name the file does not carry is ENODATA on every branch
filesystem (and for a POSIX ACL, whatever the branch filesystem itself returns:
0 or ENODATA; EOPNOTSUPP where ACLs are off), never EINVAL. Through the union the
answer must be the branch filesystem's, and a removal that fails must not copy the
file up (aufs xattr.c au_sxattr(): copy-up happens before the branch call, so a
failed call must leave nothing behind; design/06xattr.txt). `cp -rp` relies on
it: it removes ACLs it did not find before setting the mode.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from unionfs.drivers import AufsDriver
from unionfs.fsops import errname, errno_of, lexists, names, put
from unionfs.gates import require_aufs_config
from unionfs.lab import Lab

ACL_ACCESS = "system.posix_acl_access"
ACL_DEFAULT = "system.posix_acl_default"
NAMES = ["user.absent", "trusted.absent", ACL_ACCESS, ACL_DEFAULT]


def _native(directory: Path, name: str, is_dir: bool) -> int | None:
    """What the branch filesystem itself returns for the same removal."""
    probe = directory / ".removexattr-probe"
    if is_dir:
        probe.mkdir()
    else:
        probe.write_bytes(b"")
    try:
        return errno_of(os.removexattr, probe, name)
    finally:
        if is_dir:
            probe.rmdir()
        else:
            probe.unlink()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("where", ["lower-file", "lower-dir", "upper-file"])
def test_removing_an_absent_xattr_answers_like_the_branch(lab: Lab, name: str, where: str) -> None:
    """Kind 3: removexattr of an absent user./trusted. attribute or POSIX ACL through U
    returns ENODATA or what the branch filesystem itself returns (for ACLs 0),
    never EINVAL; when it fails, a lower file or directory is not copied up."""
    require_aufs_config(lab.driver, "XATTR")
    is_dir = where == "lower-dir"
    if name == ACL_DEFAULT and not is_dir:
        pytest.skip("a default ACL exists on directories only")
    target = "d" if is_dir else "f"
    branch = lab.rw if where == "upper-file" else lab.ro
    if is_dir:
        (branch / target).mkdir()
        put(branch / target / "child", "x")
    else:
        put(branch / target, "data")
    native = _native(branch, name, is_dir)
    # ENODATA is always right for an absent name; a filesystem's own answer too
    # (tmpfs and ext4 return 0 for an absent ACL; overlayfs says ENODATA for a
    # lower file without copying it up)
    allowed = {errno.ENODATA, native}
    # aufs serves POSIX ACLs only with its `acl` option (opts.c: SB_POSIXACL);
    # without it ACLs are off (test_removing_an_acl_with_acls_off_is_eopnotsupp)
    u = lab.mount(options=["acl"] if isinstance(lab.driver, AufsDriver) else [])
    got = errno_of(os.removexattr, u / target, name)
    assert got in allowed and got != errno.EINVAL, lab.explain(
        f"removexattr(U/{target}, {name}): ENODATA or {errname(native)} as on "
        f"{lab.kind_of('RO')} itself, never EINVAL",
        errname(got),
        u / target,
    )
    if where != "upper-file" and got is not None:
        assert not lexists(lab.rw / target), lab.explain(
            f"a failed removexattr copies nothing up: no RW/{target}", None, lab.rw
        )


@pytest.mark.parametrize("name", ["user.absent", "trusted.absent"])
def test_removing_an_absent_xattr_is_enodata(lab: Lab, name: str) -> None:
    """Kind 3: the plain rule for a lower file: removexattr of an absent attribute is
    ENODATA (never EINVAL) and leaves RW empty."""
    require_aufs_config(lab.driver, "XATTR")
    put(lab.ro / "f", "data")
    if name.startswith("user.") and _native(lab.ro, name, False) not in (None, errno.ENODATA):
        pytest.skip(f"{lab.kind_of('RO')} refuses user.* xattrs")
    u = lab.mount()
    got = errno_of(os.removexattr, u / "f", name)
    assert got == errno.ENODATA, lab.explain(f"removexattr(U/f, {name}): ENODATA", errname(got))
    assert not lexists(lab.rw / "f"), lab.explain("no copy-up", None, lab.rw)


def test_cp_rp_of_a_lower_directory_into_a_new_name(lab: Lab) -> None:
    """Kind 3: `cp -rp U/d U/e` of a lower directory with files succeeds (cp removes
    absent ACLs while preserving modes), e holds the same names, modes and data."""
    cp = shutil.which("cp") or "/bin/cp"
    put(lab.ro / "d" / "a", "A", mode=0o640)
    put(lab.ro / "d" / "sub" / "b", "B", mode=0o600)
    os.chmod(lab.ro / "d", 0o750)
    u = lab.mount()
    proc = subprocess.run(
        [cp, "-rp", str(u / "d"), str(u / "e")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, lab.explain(
        "cp -rp U/d U/e exits 0", f"exit {proc.returncode}: {proc.stderr.strip()}"
    )
    assert sorted(names(u / "e")) == sorted(names(u / "d")), lab.explain(
        f"U/e lists {sorted(names(u / 'd'))}", sorted(names(u / "e"))
    )
    for rel, data, mode in (("a", "A", 0o640), ("sub/b", "B", 0o600)):
        st = (u / "e" / rel).stat()
        assert (u / "e" / rel).read_text() == data and st.st_mode & 0o7777 == mode, lab.explain(
            f"U/e/{rel}: {data!r}, mode {mode:04o}", None, u / "e" / rel
        )
    assert (u / "e").stat().st_mode & 0o7777 == 0o750, lab.explain("U/e mode 0750", None, u / "e")


@pytest.mark.only_drivers("aufs")
@pytest.mark.parametrize("name", [ACL_ACCESS, ACL_DEFAULT])
def test_removing_an_acl_with_acls_off_is_eopnotsupp(lab: Lab, name: str) -> None:
    """Kind 3: without the `acl` mount option aufs has ACLs off (opts.c clears
    SB_POSIXACL; fs/posix_acl.c refuses then): removing an ACL from a lower
    directory is EOPNOTSUPP, never EINVAL, and copies nothing up."""
    (lab.ro / "d").mkdir()
    u = lab.mount(options=["noacl"])
    got = errno_of(os.removexattr, u / "d", name)
    assert got == errno.EOPNOTSUPP, lab.explain(
        f"removexattr(U/d, {name}): EOPNOTSUPP", errname(got)
    )
    assert not lexists(lab.rw / "d"), lab.explain("no copy-up", None, lab.rw)
