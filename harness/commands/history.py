"""`aufs-harness report html DIR` (the HTML report of a results directory) and
the `history` group: `history record DIR`, `history diff A B`.

Exit codes: report html and history record 0 (2 on unreadable input);
history diff 0 when nothing changed between the runs, 1 when something did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness import argcheck
from harness.compare import load_reports
from harness.core.errors import EXIT_FAILED, EXIT_OK
from harness.report import diff, history
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
    _add_db(html, "mark each failing check 'new since <run>' from this history")
    html.add_argument(
        "--no-history", action="store_true", help="no 'new since' marks, even with a history"
    )
    html.set_defaults(func=cmd_html)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `history` group: record a run, diff two runs."""
    group = sub.add_parser(
        "history",
        help="record runs in the history database and diff two runs",
        description="The run history (SQLite): every recorded run's cells and checks.",
    )
    hsub = group.add_subparsers(dest="history_command", required=True, metavar="COMMAND")
    rec = hsub.add_parser(
        "record",
        help="record a results directory's run in the history",
        description="Record every cell and check of a results directory's report.json. "
        "Recording a directory again replaces it. Prints the run id.",
    )
    rec.add_argument("dir", type=Path, metavar="DIR", help="a results directory")
    _add_db(rec, "the history database")
    rec.set_defaults(func=cmd_record)
    add_diff_parser(hsub)


def add_diff_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`diff A B` (under `history`, and under `matrix` where nightly users look for it)."""
    dif = sub.add_parser(
        "diff",
        help="what changed between two runs",
        description="List new failures, fixes and changed outcomes from run A to run B. "
        "Exit 0: nothing changed; 1: something did; 2: a run cannot be read.",
    )
    dif.add_argument("a", metavar="A", help="a run id in the history, or a results directory")
    dif.add_argument("b", metavar="B", help="a run id in the history, or a results directory")
    _add_db(dif, "the history database run ids are looked up in")
    dif.set_defaults(func=cmd_diff)


def _add_db(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--db",
        type=argcheck.history_db,
        default=None,
        metavar="PATH",
        help=f"{what} (default: {history.DB_NAME} in the user's data directory)",
    )


def _db(args: argparse.Namespace) -> Path:
    return args.db if args.db is not None else history.default_db()


def cmd_html(args: argparse.Namespace) -> int:
    results = ResultsDir(args.dir)
    page = build_page(load_reports(results.root), results.root)
    if not args.no_history:
        history.annotate(page, _db(args))
    print(f"report: {write_html(results, page)}")
    return EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    db = _db(args)
    print(f"recorded {history.record(args.dir, db)} in {db}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    db = _db(args)
    result = diff.diff(diff.load(args.a, db), diff.load(args.b, db))
    print("\n".join(diff.render(result)))
    return EXIT_OK if result.same else EXIT_FAILED
