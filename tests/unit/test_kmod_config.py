"""The guest fragment: rendering (golden), options, merge and verification."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import UserError
from kmod import config
from tests.unit.golden import check_golden
from tests.unit.kmod_fakes import make_kernel_tree, write


def D() -> Deadline:
    """A fresh deadline per call: one made at import would expire in a long session."""
    return Deadline(60, "test")


def test_fragment_golden() -> None:
    check_golden("kmod-guest.config", config.render_fragment(config.aufs_options()))


def test_fragment_asks_for_a_bootable_guest() -> None:
    values = config.parse_config(config.render_fragment(config.aufs_options()))
    for symbol in (
        "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_NET", "CONFIG_EXT4_FS",
        "CONFIG_DEVTMPFS_MOUNT", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_MODULE_UNLOAD",
        "CONFIG_TMPFS", "CONFIG_UNIX", "CONFIG_INET", "CONFIG_OVERLAY_FS", "CONFIG_BINFMT_ELF",
    ):  # fmt: skip
        assert values[symbol] == "y", symbol
    assert values["CONFIG_AUFS_FS"] == "m"
    assert values["CONFIG_EXPERT"] == "n"


def test_aufs_options_override() -> None:
    opts = config.aufs_options(["shwh=n", "CONFIG_AUFS_FHSM=y"])
    assert opts["SHWH"] is False and opts["FHSM"] is True
    text = config.render_fragment(opts)
    assert "# CONFIG_AUFS_SHWH is not set\n" in text
    assert "CONFIG_AUFS_FHSM=y\n" in text
    with pytest.raises(UserError, match="NAME=y or NAME=n"):
        config.aufs_options(["SHWH"])


def test_user_fragment_wins() -> None:
    plain = config.render_fragment(config.aufs_options(), filesystems=("xfs",))
    assert config.parse_config(plain)["CONFIG_XFS_FS"] == "y"
    text = config.render_fragment(
        config.aufs_options(), extra="# CONFIG_XFS_FS is not set\n", filesystems=("xfs",)
    )
    assert config.parse_config(text)["CONFIG_XFS_FS"] == "n"


def test_fragment_builds_only_the_branch_filesystems_asked_for() -> None:
    lean = config.parse_config(config.render_fragment(config.aufs_options()))
    for symbol in ("CONFIG_XFS_FS", "CONFIG_BTRFS_FS", "CONFIG_ACPI", "CONFIG_SQUASHFS"):
        assert lean.get(symbol, "n") == "n", symbol  # each costs minutes of a cold build
    full = config.parse_config(
        config.render_fragment(config.aufs_options(), filesystems=("xfs", "btrfs", "ext4"))
    )
    assert full["CONFIG_XFS_FS"] == full["CONFIG_BTRFS_FS"] == "y"
    assert full["CONFIG_RAID6_PQ_BENCHMARK"] == "n"  # else every boot benchmarks raid6
    assert config.render_fragment(
        config.aufs_options(), filesystems=("xfs", "ext4")
    ) == config.render_fragment(config.aufs_options(), filesystems=("ext4", "xfs", "xfs"))


@pytest.mark.parametrize(
    ("spec", "kinds"),
    [
        ("tmpfs,ext4", ("ext4", "tmpfs")),
        ("tmpfs", ("tmpfs",)),
        ("mixed", ("ext4", "tmpfs")),
        ("xfs+tmpfs+btrfs, ext4", ("btrfs", "ext4", "tmpfs", "xfs")),
    ],
)
def test_branch_filesystems(spec: str, kinds: tuple[str, ...]) -> None:
    assert config.branch_filesystems(spec) == kinds


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ext4,zfs", "unknown branch filesystem 'zfs'"),
        ("ext4+", "unknown branch filesystem ''"),
        (" , ", "--branch-fs is empty"),
    ],
)
def test_branch_filesystems_refuses(spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        config.branch_filesystems(spec)


def test_verify_reports_dropped() -> None:
    requested = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "m", "CONFIG_D": '"x"'}
    final = {"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_D": '"x"'}
    dropped = config.verify(requested, final)
    assert [d.symbol for d in dropped] == ["CONFIG_B", "CONFIG_C"]
    assert dropped[1].describe() == "CONFIG_C=m asked for, final .config has it unset"


def test_make_config_names_a_dropped_option(tmp_path: Path) -> None:
    tree = make_kernel_tree(tmp_path / "k")
    frag = config.render_fragment(config.aufs_options())
    final = config.make_config(["make", "-C", str(tree)], tree, frag, "allnoconfig",
                               tmp_path / "config.log", D())  # fmt: skip
    assert final["CONFIG_AUFS_FS"] == "m"
    write(tree / ".fake-unsupported", "CONFIG_AUFS_DIRREN\n")
    with pytest.raises(UserError, match=r"CONFIG_AUFS_DIRREN=y asked for, final \.config has it"):
        config.make_config(["make", "-C", str(tree)], tree, frag, "allnoconfig",
                           tmp_path / "config.log", D())  # fmt: skip


def test_make_config_defconfig_base(tmp_path: Path) -> None:
    tree = make_kernel_tree(tmp_path / "k")
    frag = config.render_fragment(config.aufs_options(), base="defconfig")
    final = config.make_config(["make", "-C", str(tree)], tree, frag, "defconfig",
                               tmp_path / "config.log", D())  # fmt: skip
    assert final["CONFIG_FROM_DEFCONFIG"] == "y"
    assert final["CONFIG_AUFS_FS"] == "m"


def test_kernels_from_6_8_may_mount_a_block_device_open_for_writing() -> None:
    """6.12 refused every ext4 branch (EBUSY) without it; older kernels lack the option."""
    new = config.parse_config(config.render_fragment(config.aufs_options(), kernel=(6, 12)))
    old = config.parse_config(config.render_fragment(config.aufs_options(), kernel=(6, 1)))
    assert new["CONFIG_BLK_DEV_WRITE_MOUNTED"] == "y"
    assert "CONFIG_BLK_DEV_WRITE_MOUNTED" not in old
