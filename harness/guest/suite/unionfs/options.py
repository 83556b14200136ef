"""Command-line options of the union suite, as a plugin of their own.

The xdist controller on the host must know these options to accept them, but
it never loads the suite's conftest (the checks run in the guest): the harness
loads this module on the controller with `-p unionfs.options`, and the
conftest loads it everywhere else through `pytest_plugins`.
"""

from __future__ import annotations

import pytest

from unionfs.lab import OPTION_SETS

DEFAULT_DRIVERS = "overlay,aufs"
DEFAULT_BRANCH_FS = "tmpfs,ext4"
DEFAULT_OPTION_SETS = "defaults,dirperm1,docker"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unionfs", "union filesystem conformance suite")
    group.addoption(
        "--driver",
        default=DEFAULT_DRIVERS,
        help="comma-separated union drivers to check: overlay, aufs "
        f"(default {DEFAULT_DRIVERS}; one missing from /proc/filesystems is skipped)",
    )
    group.addoption(
        "--branch-fs",
        default=DEFAULT_BRANCH_FS,
        help="comma-separated branch filesystems: tmpfs, ext4, xfs, btrfs, mixed "
        "(= ext4+tmpfs+ext4), or A+B+C for RW on A, RO on B, RO2 on C "
        f"(default {DEFAULT_BRANCH_FS})",
    )
    group.addoption(
        "--option-set",
        default=DEFAULT_OPTION_SETS,
        help="comma-separated aufs mount-option sets for checks marked option_sets: "
        + "; ".join(f"{s.name} = {s.describe()}" for s in OPTION_SETS.values())
        + f" (default {DEFAULT_OPTION_SETS}; overlay always runs with its defaults)",
    )
    group.addoption(
        "--suite-tmp",
        default=None,
        help="directory for per-check temporary directories (default: the system temp dir)",
    )
    group.addoption(
        "--keep-lab",
        default=None,
        metavar="DIR",
        help="leave every check's lab as the check left it (branch filesystems, branches, "
        "union mount) instead of cleaning it up, and describe each in DIR/<n>.json: for a "
        "person to look at the state a check left (aufs-harness repro --shell)",
    )
    group.addoption(
        "--continue-after-kernel-damage",
        action="store_true",
        default=False,
        help="keep running checks after the kernel logged an oops, BUG, busy inodes after "
        "unmount or fs corruption (default: skip the rest, naming the damage)",
    )
    group.addoption(
        "--no-kernel-health",
        action="store_true",
        default=False,
        help="do not fail checks on new kernel taint or oops/WARN/BUG lines (still reported)",
    )
