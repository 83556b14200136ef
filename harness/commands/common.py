"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from harness import argcheck
from harness.core.errors import UserError
from harness.report.html import write_html
from harness.report.model import build_page
from harness.results import TargetReport, exit_code
from harness.resultsdir import ResultsDir
from harness.table import print_report
from vm.accel import ACCELS
from vm.image import SUITES

DEFAULT_DISTRO = "bookworm"


def add_vm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("virtual machine")
    g.add_argument(
        "--distro",
        default=DEFAULT_DISTRO,
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


def refuse_distro_with_image(args: argparse.Namespace) -> None:
    """UserError when --distro is given with --image: the image brings its own
    userland, so the suite would be silently ignored."""
    if args.image is not None and args.distro != DEFAULT_DISTRO:
        raise UserError(
            f"--distro {args.distro} picks the harness's image; --image boots yours: drop one"
        )


def add_timeout(
    p: argparse.ArgumentParser,
    default: float,
    parse: Callable[[str], float] = argcheck.COMMAND_TIMEOUT,
) -> None:
    """--timeout S: the command's whole budget in seconds, checked by `parse`
    (a finite number in its range: one usage line, exit 2, otherwise)."""
    p.add_argument(
        "--timeout",
        type=parse,
        default=default,
        metavar="S",
        help=f"give up after S seconds (default: {default:g})",
    )


def finish(reports: list[TargetReport], out: Path | ResultsDir) -> int:
    """Write the reports (report.json, junit.xml, index.html), print the table,
    return the exit code."""
    results = out if isinstance(out, ResultsDir) else ResultsDir(out)
    results.write(reports)
    html = write_html(results, build_page(reports, results.root))
    print_report(reports)
    print(f"reports: {results.report_json} {results.junit_xml} {html}")
    return exit_code(reports)
