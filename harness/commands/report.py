"""`aufs-harness report compare A B`: did two runs give the same verdict per check?

Exit 0 when every check has the same outcome in both runs, 1 when any
differs (CI can gate on it), 2 when a report cannot be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands import history
from harness.compare import compare, load_reports, render
from harness.core.errors import EXIT_FAILED, EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="read and compare results",
        description="Read the results a run wrote (report.json).",
    )
    rsub = report.add_subparsers(dest="report_command", required=True, metavar="COMMAND")
    cmp = rsub.add_parser(
        "compare",
        help="per-outcome counts of two runs and every check whose outcome changed",
        description="Compare two runs' report.json (or their results directories) check by "
        "check. Exit 0: same outcome for every check; 1: some changed; 2: unreadable.",
    )
    cmp.add_argument("a", type=Path, metavar="A", help="results directory or report.json")
    cmp.add_argument("b", type=Path, metavar="B", help="results directory or report.json")
    cmp.set_defaults(func=cmd_compare)
    history.add_report_parsers(rsub)


def cmd_compare(args: argparse.Namespace) -> int:
    comparison = compare(load_reports(args.a), load_reports(args.b))
    print("\n".join(render(comparison)))
    return EXIT_OK if comparison.same else EXIT_FAILED
