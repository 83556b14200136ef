"""`aufs-harness report html DIR` (the HTML report of a results directory) and
the `history` group: `history record DIR`, `history diff A B`.

Exit codes: report html and history record 0 (2 on unreadable input);
history diff 0 when nothing changed between the runs, 1 when something did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.compare import load_reports
from harness.core.errors import EXIT_OK
from harness.report.html import write_html
from harness.report.model import build_page
from harness.resultsdir import ResultsDir


def add_report_parsers(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`report html` under the existing `report` group."""
    html = rsub.add_parser(
        "html",
        help="write the HTML report (index.html) of a results directory",
        description="Render a results directory's report.json as a self-contained "
        "index.html beside it: the grid of suite modules by cells, every failing check "
        "with its evidence, each cell's build, patches, stages and logs.",
    )
    html.add_argument("dir", type=Path, metavar="DIR", help="a results directory")
    html.set_defaults(func=cmd_html)


def cmd_html(args: argparse.Namespace) -> int:
    results = ResultsDir(args.dir)
    reports = load_reports(results.root)
    path = write_html(results, build_page(reports, results.root))
    print(f"report: {path}")
    return EXIT_OK
