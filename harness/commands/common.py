"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import argcheck
from harness.results import TargetReport, exit_code, write_json, write_junit
from harness.table import print_report
from vm.accel import ACCELS
from vm.image import SUITES


def add_vm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("virtual machine")
    g.add_argument(
        "--distro",
        default="bookworm",
        metavar="SUITE",
        help=f"Debian suite of the image: {', '.join(SUITES)} (default: bookworm)",
    )
    g.add_argument(
        "--image",
        type=argcheck.disk_image,
        metavar="PATH",
        help="boot your own cloud image (raw or qcow2, cloud-init) instead",
    )
    g.add_argument(
        "--accel",
        default="auto",
        choices=ACCELS,
        help="auto uses KVM only when a probe boot works (default: auto)",
    )
    g.add_argument(
        "--memory", type=argcheck.memory_mb, default=1024, metavar="MB", help="guest memory"
    )
    g.add_argument("--smp", type=argcheck.SMP, default=2, metavar="N", help="guest CPUs")
    g.add_argument(
        "--boot-timeout",
        type=argcheck.BOOT_TIMEOUT,
        default=180.0,
        metavar="S",
        help="seconds to wait for SSH (default: 180)",
    )


def results_root(base: Path) -> Path:
    # Absolute: the suite's controller runs in a directory of its own.
    base = base.resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = base / stamp
    out.mkdir(parents=True, exist_ok=True)
    latest = base / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(stamp)
    return out


def finish(reports: list[TargetReport], out: Path) -> int:
    """Write the reports, print the table, return the exit code."""
    write_json(reports, out / "report.json")
    write_junit(reports, out / "junit.xml")
    print_report(reports)
    print(f"reports: {out / 'report.json'} {out / 'junit.xml'}")
    return exit_code(reports)
