"""The guest suite's driver helpers, where they need no root: mount data rendering,
branch-spec parsing, mountinfo unescaping and aufs's on-disk markers.

The suite is not an importable package of this project (it is uploaded into
guests and imported there as top-level `unionfs`), so it is loaded by path.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness.guest import kmsg

SUITE = Path(__file__).resolve().parents[2] / "harness" / "guest" / "suite"


def _load(name: str) -> Any:
    if str(SUITE) not in sys.path:
        sys.path.insert(0, str(SUITE))
    module: ModuleType = importlib.import_module(name)
    return module


drivers = _load("unionfs.drivers")
lab = _load("unionfs.lab")
sysapi = _load("unionfs.sysapi")
expect = _load("unionfs.expect")


def test_overlay_renders_lowerdir_top_first_with_workdir_beside_upper() -> None:
    ovl = drivers.OverlayDriver()
    data = ovl.render_data(
        drivers.Branch(Path("/t/rw"), "rw"),
        [drivers.Branch(Path("/t/ro")), drivers.Branch(Path("/t/ro2"))],
        ["index=off"],
    )
    assert data == "lowerdir=/t/ro:/t/ro2,upperdir=/t/rw,workdir=/t/rw-work,index=off"


def test_overlay_without_upper_renders_lowerdir_only() -> None:
    data = drivers.OverlayDriver().render_data(None, [drivers.Branch(Path("/t/ro"))])
    assert data == "lowerdir=/t/ro"


def test_aufs_renders_br_with_permissions_in_branch_order() -> None:
    data = drivers.AufsDriver().render_data(
        drivers.Branch(Path("/t/rw"), "rw"),
        [drivers.Branch(Path("/t/ro"), "ro+wh"), drivers.Branch(Path("/t/ro2"), "ro")],
        ["dio", "xino=/dev/shm/aufs.xino", "dirperm1"],
    )
    assert data == "br=/t/rw=rw:/t/ro=ro+wh:/t/ro2=ro,dio,xino=/dev/shm/aufs.xino,dirperm1"


@pytest.mark.parametrize("bad", ["/t/a,b", "/t/a:b", "/t/a=b", "relative"])
@pytest.mark.parametrize("name", ["overlay", "aufs"])
def test_paths_the_mount_data_cannot_carry_are_refused(name: str, bad: str) -> None:
    drv = drivers.DRIVERS[name]
    with pytest.raises(ValueError, match="branch path"):
        drv.render_data(drivers.Branch(Path("/t/rw"), "rw"), [drivers.Branch(Path(bad))])


def test_aufs_refuses_empty_permission() -> None:
    with pytest.raises(ValueError, match="permission"):
        drivers.AufsDriver().render_data(drivers.Branch(Path("/t/rw"), ""), [])


def test_aufs_unavailable_reason_says_how_to_get_aufs() -> None:
    reason = drivers.AufsDriver().unavailable_reason()
    assert reason.startswith("aufs not in /proc/filesystems: boot an aufs kernel")


@pytest.mark.parametrize(
    ("spec", "kinds"),
    [("tmpfs", ["tmpfs"]), ("mixed", ["ext4", "tmpfs", "ext4"]), ("xfs+btrfs", ["xfs", "btrfs"])],
)
def test_branch_fs_specs(spec: str, kinds: list[str]) -> None:
    assert lab.parse_fs_spec(spec) == kinds


def test_unknown_branch_fs_is_refused() -> None:
    with pytest.raises(ValueError, match="zfs"):
        lab.parse_fs_spec("ext4+zfs")


def test_mountinfo_octal_escapes_are_decoded() -> None:
    assert sysapi._unescape(r"/mnt/a\040b\134c") == "/mnt/a b\\c"
    assert sysapi._unescape("/plain") == "/plain"
    assert sysapi._unescape("/trailing\\04") == "/trailing\\04"


def test_aufs_markers_round_trip(tmp_path: Path) -> None:
    aufs = drivers.AufsDriver()
    aufs.make_whiteout(tmp_path, "f")
    wh = tmp_path / ".wh.f"
    assert stat.S_IMODE(wh.lstat().st_mode) == 0o444
    assert aufs.is_whiteout(tmp_path, "f")
    assert not aufs.is_whiteout(tmp_path, "g")
    assert not aufs.is_opaque(tmp_path)
    aufs.make_opaque(tmp_path)
    assert aufs.is_opaque(tmp_path)
    assert aufs.is_internal_name(".wh..wh..opq")


def test_aufs_whiteout_expectation_names_each_defect(tmp_path: Path) -> None:
    (tmp_path / ".wh..wh.aufs").write_bytes(b"")
    (tmp_path / ".wh.f").write_bytes(b"junk")
    (tmp_path / ".wh.f").chmod(0o640)
    (tmp_path / "f").write_bytes(b"still here")
    problem = expect.whiteout_problem("aufs", tmp_path, "f", base_root=tmp_path)
    assert problem is not None
    for part in ("size 4", "mode 0640", "not a hardlink", "f itself still present"):
        assert part in problem


def test_aufs_whiteout_expectation_accepts_a_proper_whiteout(tmp_path: Path) -> None:
    base = tmp_path / ".wh..wh.aufs"
    base.write_bytes(b"")
    base.chmod(0o444)
    os.link(base, tmp_path / ".wh.f")
    assert expect.whiteout_problem("aufs", tmp_path, "f", base_root=tmp_path) is None
    assert expect.no_whiteout_problem("aufs", tmp_path, "g") is None
    assert expect.no_whiteout_problem("aufs", tmp_path, "f") is not None


aufs = _load("unionfs.aufs")
kernel = _load("unionfs.kernel")
evidence = _load("unionfs.evidence")


@pytest.mark.parametrize(
    ("version", "key", "dio_default"),
    [
        ("5.10.140-20230828", (5, 10), False),
        ("6.9-20240923", (6, 9), False),
        ("6.10-20240923", (6, 10), True),
        ("6.x-rcN-20241021", (6, 999), True),
        ("garbage", (0, 0), False),
    ],
)
def test_aufs_version_keys(version: str, key: tuple[int, int], dio_default: bool) -> None:
    assert aufs.version_key(version) == key
    assert aufs.dio_is_default(version) is dio_default


@pytest.mark.parametrize(
    ("version", "odirect"),
    [
        ("5.10.140-20230828", False),  # before the FMODE_CAN_ODIRECT copy (973f58b3)
        ("6.1-20240610", False),
        ("6.1-20240701", True),  # bookworm's aufs6.1: O_DIRECT opens without dio
        ("6.x-rcN-20241021", True),
        ("garbage", False),
    ],
)
def test_aufs_releases_that_copy_the_branch_odirect_mode(version: str, odirect: bool) -> None:
    assert aufs.copies_can_odirect(version) is odirect


def test_taint_letters_name_each_bit() -> None:
    assert kmsg.taint_letters(0) == ""
    assert kmsg.taint_letters(1 << 9) == "W"
    assert kmsg.taint_letters((1 << 12) | (1 << 13)) == "OE"


def test_suspicious_kernel_lines_are_picked_out() -> None:
    lines = [
        "[  1.0] unionfs-suite: BEGIN x",
        "[  1.1] WARNING: CPU: 0 PID: 1 at fs/aufs/dir.c:10 f+0x1/0x2",
        "[  1.2] aufs au_opts_verify:1: dirperm1 breaks the protection",
        "[  1.3] BUG: unable to handle page fault",
        "[  1.4] possible circular locking dependency detected",
    ]
    assert kernel.KernelWatch.suspicious(lines) == [lines[1], lines[3], lines[4]]


def test_option_sets_describe_dockers_configuration() -> None:
    docker = lab.OPTION_SETS["docker"]
    assert docker.options == ["dio", "xino=/dev/shm/aufs.xino", "dirperm1"]
    assert docker.lower_perm == "ro+wh"
    assert lab.OPTION_SETS["defaults"].options == []


def test_branch_listing_names_types_modes_and_xattrs(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    f = tmp_path / "d" / "f"
    f.write_bytes(b"abc")
    f.chmod(0o640)
    text = evidence.listing(tmp_path, "RW")
    assert "RW/d: dir" in text
    assert "RW/d/f: reg mode=0640" in text
    assert "size=3" in text and "data=b'abc'" in text
    assert evidence.describe(tmp_path / "missing").startswith("absent")
    assert ("d/f", "reg", 0o640, 3) in evidence.shape(tmp_path)


def test_the_integration_tests_fake_suite_knows_every_suite_option() -> None:
    """tests/integration/test_hang.py's fake suite must accept what runs pass."""
    import re

    from tests.integration.test_hang import FAKE_OPTIONS

    real = (SUITE / "unionfs" / "options.py").read_text()
    assert set(re.findall(r'"(--[a-z-]+)"', real)) == set(
        re.findall(r'"(--[a-z-]+)"', FAKE_OPTIONS)
    )
