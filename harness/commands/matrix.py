"""`aufs-harness matrix run`: the kernel matrix (harness.matrix)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness import argcheck
from harness.commands.history import add_diff_parser
from harness.core.errors import UserError
from harness.hosts import load_inventory
from harness.matrix import baseline as baselines
from harness.matrix import spec
from harness.matrix.placement import place
from harness.matrix.reporter import Reporter
from harness.matrix.run import MachineOptions, run_matrix, vm_group
from harness.matrix.verdict import matrix_exit_code
from harness.report import history
from harness.report.html import write_html
from harness.report.model import build_page
from harness.resultsdir import ResultsDir
from harness.table import print_report
from vm.accel import ACCELS
from vm.machine import preflight

log = logging.getLogger("aufs-harness")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "matrix",
        help="run a kernel matrix: many cells, one report",
        description="Run every cell of a matrix file (kernels x userlands x drivers x branch "
        "filesystems x options), each in its own VM, into one results directory.",
    )
    msub = p.add_subparsers(dest="matrix_command", required=True, metavar="COMMAND")
    r = msub.add_parser(
        "run",
        help="run a matrix file (default: the shipped one)",
        description="Build what is missing, boot one VM per cell, run the suite, judge each "
        "cell against the baseline's known failures. Exit 0: every cell passed (known "
        "failures included); 1: a cell failed; 2: usage or infrastructure error.",
    )
    r.add_argument(
        "file", nargs="?", type=Path, metavar="FILE", help="the matrix TOML file "
        f"(default: the shipped {spec.default_matrix().name})",
    )  # fmt: skip
    r.add_argument(
        "--baseline", type=Path, metavar="FILE",
        help="known failures (TOML); default: none, every failure counts",
    )  # fmt: skip
    r.add_argument(
        "--results", type=argcheck.results_dir, default="results", metavar="DIR",
        help="where reports go (default: ./results/<timestamp>)",
    )  # fmt: skip
    r.add_argument(
        "--quiet", action="store_true",
        help="plain key=value progress lines (the default when not a terminal)",
    )  # fmt: skip
    r.add_argument(
        "--hosts", type=Path, metavar="FILE",
        help="spread the cells over the VM hosts of this inventory (TOML, [[host]] tables; "
        "see docs/usage.md); default: every cell on this machine",
    )  # fmt: skip
    g = r.add_argument_group("virtual machines (every cell's)")
    g.add_argument("--accel", default="auto", choices=ACCELS, help="auto: KVM when a probe works")
    g.add_argument(
        "--memory", type=argcheck.memory_mb, default=1024, metavar="MB", help="guest memory"
    )
    g.add_argument("--smp", type=argcheck.SMP, default=2, metavar="N", help="guest CPUs")
    h = r.add_argument_group("history")
    h.add_argument(
        "--db", type=argcheck.history_db, metavar="PATH",
        help=f"the history database the run is recorded in (default: {history.default_db()})",
    )  # fmt: skip
    h.add_argument("--no-history", action="store_true", help="do not record the run")
    r.set_defaults(func=main)
    add_diff_parser(msub)


def main(args: argparse.Namespace) -> int:
    matrix = spec.load(args.file or spec.default_matrix())
    baseline = baselines.load(args.baseline) if args.baseline else baselines.Baseline(None)
    hosts = load_inventory(args.hosts) if args.hosts else ()
    if not args.no_history:  # recorded after every cell ran: refuse a bad --db now
        history.check_db(args.db or history.default_db())
    if not hosts:
        preflight()  # with hosts, each host's own `run` checks its QEMU
    machine = MachineOptions(accel=args.accel, memory_mb=args.memory, smp=args.smp)
    if hosts:  # no host can carry the VM: said now, not after the results directory
        place(matrix.cells, hosts, machine.smp, machine.memory_mb)
    for cell in matrix.cells:  # a cell's impossible VM layout, before the first cell runs
        try:
            vm_group(cell, machine)
        except UserError as exc:
            raise UserError(f"{matrix.path}: {exc}") from None
    plain = args.quiet or not sys.stderr.isatty()
    _quiet_logging(args.verbose)
    results = ResultsDir.new(args.results)
    reports = run_matrix(matrix, baseline, results, Reporter(plain=plain), machine, hosts)
    page = build_page(reports, results.root)
    if not args.no_history:
        db = args.db or history.default_db()
        run_id = history.record(results.root, db)
        history.annotate(page, db)  # "new since", "failing since" marks
        log.info("history: recorded as %s in %s", run_id, db)
    html = write_html(results, page)
    print_report(reports)
    print(f"reports: {results.report_json} {results.junit_xml} {html}")
    return matrix_exit_code(reports)


def _quiet_logging(verbose: bool) -> None:
    """The progress lines are the output: the stages' own log lines only with -v."""
    if verbose:
        return
    for name in ("aufs-harness", "harness", "kmod", "vm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("aufs-harness.matrix").setLevel(logging.INFO)
