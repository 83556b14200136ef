"""A. The module: registration, version, parameters, configuration, user namespaces."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from unionfs import aufs, kernel, sysapi
from unionfs.drivers import UnionDriver
from unionfs.fsops import run_in_userns
from unionfs.lab import Lab

AUFS_DESCRIPTION = "aufs -- Advanced multi layered unification filesystem"
VERSION_RE = re.compile(r"^\d+\.[0-9x][\w.+-]*-\d{8}$")


def test_filesystem_registered_in_proc_filesystems(driver: UnionDriver) -> None:
    """MOD-1: /proc/filesystems lists `nodev\t<fstype>` (Docker's only probe)."""
    text = Path("/proc/filesystems").read_text()
    line = f"nodev\t{driver.fstype}"
    assert line in text.splitlines(), (
        f"expected: a line {line!r} in /proc/filesystems\nobserved:\n{text}"
    )


@pytest.mark.only_drivers("aufs")
def test_load_message_names_the_version(driver: UnionDriver, kmsg: kernel.KernelWatch) -> None:
    """MOD-2: the kernel log holds `aufs <AUFS_VERSION>` from module load (or boot)."""
    version = aufs.version_string()
    assert version, "expected: /sys/module/aufs/version readable\nobserved: absent"
    lines, first_seq = kernel.full_log()
    wanted = f"aufs {version}"
    found = [line for line in lines if line.strip() == wanted]
    if not found and (first_seq or 0) > 0:
        pytest.skip(f"kernel log wrapped (oldest record #{first_seq}): load message gone")
    assert len(found) >= 1, (
        f"expected: a kernel log line {wanted!r}\n"
        f"observed: aufs lines {[x for x in lines if x.startswith('aufs')][:20]}"
    )


@pytest.mark.only_drivers("aufs")
def test_sysfs_version_is_a_well_formed_aufs_version(driver: UnionDriver) -> None:
    """MOD-3: /sys/module/aufs/version looks like 5.10.140-20230828 or 6.x-rcN-20241021."""
    version = aufs.version_string()
    assert version is not None and VERSION_RE.match(version), (
        f"expected: /sys/module/aufs/version matching {VERSION_RE.pattern}\nobserved: {version!r}"
    )


@pytest.mark.only_drivers("aufs")
def test_modinfo_description_and_license(driver: UnionDriver) -> None:
    """MOD-3: modinfo aufs: description "aufs -- Advanced multi layered unification
    filesystem", license GPL, version = /sys/module/aufs/version."""
    modinfo = shutil.which("modinfo") or "/sbin/modinfo"
    if not os.access(modinfo, os.X_OK):
        pytest.skip("modinfo (kmod) not installed")
    proc = subprocess.run(
        [modinfo, "aufs"], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"modinfo aufs failed ({proc.stderr.strip()}): module file not installed")
    fields: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    got = (fields.get("description"), fields.get("license"), fields.get("version"))
    want = (AUFS_DESCRIPTION, "GPL", aufs.version_string())
    assert got == want, f"expected: (description, license, version) {want}\nobserved: {got}"


def _param(path: Path) -> tuple[str, str]:
    return oct(stat.S_IMODE(path.stat().st_mode)), path.read_text().strip()


def test_module_parameters(driver: UnionDriver) -> None:
    """MOD-4: aufs: brs (0444, 1 unless loaded brs=0), allow_userns (0444, N unless set),
    debug (0664) only with CONFIG_AUFS_DEBUG, sysrq (0444, "a") only with
    CONFIG_AUFS_MAGIC_SYSRQ. overlayfs: redirect_dir, index, xino_auto, metacopy as Y/N."""
    params = Path(f"/sys/module/{driver.fstype}/parameters")
    present = sorted(p.name for p in params.iterdir()) if params.is_dir() else []
    if driver.name == "overlay":
        for name in ("redirect_dir", "index", "xino_auto", "metacopy"):
            assert name in present, f"expected: {params}/{name}\nobserved: {present}"
            value = (params / name).read_text().strip()
            assert value in ("Y", "N"), f"expected: {name} Y or N\nobserved: {value!r}"
        return
    observed = {p: _param(params / p) for p in present}
    assert observed.get("brs", ("", ""))[0] == oct(0o444), f"brs 0444; observed {observed}"
    assert observed["brs"][1] in ("0", "1"), f"brs 0 or 1; observed {observed}"
    assert observed.get("allow_userns", ("", ""))[0] == oct(0o444), (
        f"expected: allow_userns 0444\nobserved: {observed}"
    )
    assert observed["allow_userns"][1] in ("Y", "N"), f"allow_userns Y/N; observed {observed}"
    conf = aufs.kernel_config()
    if conf:
        want_debug = conf.get("CONFIG_AUFS_DEBUG") in ("y", "m")
        assert ("debug" in observed) == want_debug, (
            f"expected: debug parameter present iff CONFIG_AUFS_DEBUG ({want_debug})\n"
            f"observed: {observed}"
        )
        if want_debug:
            assert observed["debug"][0] == oct(0o664), f"debug 0664; observed {observed}"
        want_sysrq = conf.get("CONFIG_AUFS_MAGIC_SYSRQ") in ("y", "m")
        assert ("sysrq" in observed) == want_sysrq, (
            f"expected: sysrq parameter present iff CONFIG_AUFS_MAGIC_SYSRQ ({want_sysrq})\n"
            f"observed: {observed}"
        )
        if want_sysrq:
            assert observed["sysrq"][0] == oct(0o444), f"sysrq 0444; observed {observed}"


@pytest.mark.only_drivers("aufs")
def test_default_module_parameter_values(driver: UnionDriver) -> None:
    """MOD-4: loaded with no parameters, brs is 1 and allow_userns N (the defaults)."""
    values = (aufs.module_param("brs"), aufs.module_param("allow_userns"))
    if values != ("1", "N"):
        pytest.skip(f"module loaded with non-default parameters (brs, allow_userns) = {values}")
    assert values == ("1", "N")


@pytest.mark.only_drivers("aufs")
def test_sysfs_config_lists_aufs_options(driver: UnionDriver) -> None:
    """MOD-5: /sys/fs/aufs/config of a module build: one CONFIG_AUFS_*=y|m a line,
    starting with CONFIG_AUFS_FS=m."""
    if not aufs.is_module():
        pytest.skip("aufs is built in: /sys/fs/aufs/config exists only for a module build")
    text = (aufs.SYSFS_AUFS / "config").read_text()
    lines = text.splitlines()
    assert lines and lines[0] == "CONFIG_AUFS_FS=m", (
        f"expected: first line CONFIG_AUFS_FS=m\nobserved: {lines[:3]}"
    )
    bad = [x for x in lines if not re.match(r"^CONFIG_AUFS_[A-Z0-9_]+=[ym]$", x)]
    assert not bad, f"expected: only CONFIG_AUFS_*=y|m lines\nobserved also: {bad}"


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@pytest.mark.fs_independent
def test_mount_in_user_namespace(lab: Lab) -> None:
    """MOD-6: a mount inside `unshare -Ur`: aufs fails EPERM unless loaded with
    allow_userns=Y; overlayfs succeeds from kernel 5.11 (FS_USERNS_MOUNT), EPERM before."""
    (lab.ro / "f").write_text("x")

    def mount_and_read() -> str:
        lab.mount(plain=True)
        return (lab.u / "f").read_text()

    outcome = run_in_userns(mount_and_read)
    if "unshare" in outcome.message:
        pytest.skip(f"cannot create a user namespace here: {outcome.message}")
    if lab.driver.name == "aufs":
        allowed = aufs.module_param("allow_userns") == "Y"
        why = f"allow_userns={aufs.module_param('allow_userns')}"
    else:
        allowed = _kernel_version() >= (5, 11)
        why = f"kernel {os.uname().release}; overlayfs is FS_USERNS_MOUNT since 5.11"
    if allowed:
        assert outcome.ok, lab.explain(f"mount in a user namespace succeeds ({why})", outcome)
    else:
        assert outcome.errno == errno.EPERM, lab.explain(
            f"mount in a user namespace fails EPERM ({why})", outcome
        )
    assert sysapi.proc_mounts_line(lab.u) is None, lab.explain(
        "no trace of the namespaced mount in the initial namespace", sysapi.proc_mounts_line(lab.u)
    )
