"""`aufs-harness suite --local`: the suite on this very host."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import argcheck, guestsuite
from harness.commands.common import finish
from harness.core import leftovers
from harness.core.deadline import Deadline
from harness.core.errors import UserError
from harness.results import TargetReport
from harness.resultsdir import ResultsDir


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "suite",
        help="run the union suite on this host (root)",
        description="Run the union-filesystem suite directly on this machine, as root, "
        "against the drivers its kernel has (e.g. --driver overlay).",
    )
    p.add_argument(
        "--local",
        action="store_true",
        required=True,
        help="run on this host (the only mode; VMs use `run`)",
    )
    p.add_argument(
        "--driver",
        action="append",
        choices=("overlay", "aufs"),
        help="driver to test (repeatable; default: every available one)",
    )
    p.add_argument(
        "--workers", type=argcheck.LOCAL_WORKERS, default=0, help="xdist workers (default: none)"
    )
    p.add_argument("--results", type=argcheck.results_dir, default=Path("results"), metavar="DIR")
    p.add_argument("--timeout", type=argcheck.SUITE_TIMEOUT, default=1800.0, metavar="S")
    p.add_argument("suite_args", nargs="*", metavar="PYTEST_ARG")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not args.local:
        raise UserError("only --local is supported here; use `aufs-harness run` for a VM")
    guestsuite.check_local_root()  # before the results directory: a refused run leaves none
    leftovers.sweep()  # the mounts and loop devices of a killed run's labs
    results = ResultsDir.new(args.results)
    files = results.target("local").vm(1)
    extra = [f"--driver={','.join(args.driver)}"] if args.driver else []
    report = TargetReport(target="local host")
    report.kernel_release = Path("/proc/sys/kernel/osrelease").read_text().strip()

    def keep_every_check(exc: BaseException) -> None:  # Ctrl-C, SIGTERM: what ran so far
        report.checks, _ = guestsuite.parse_resultlog(files.events)
        report.interrupted(exc)

    with results.kept_on_interrupt([report], before=keep_every_check):
        outcome = guestsuite.run_local(
            files.path, [*extra, *args.suite_args], Deadline(args.timeout, "the suite"),
            workers=args.workers,
        )  # fmt: skip
    report.checks = outcome.checks
    if outcome.timed_out:
        report.verdict, report.reason = "error", "suite deadline passed"
    report.settle()
    return finish([report], results)
