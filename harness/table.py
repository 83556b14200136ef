"""The tables printed at the end of a run: where checks passed, what failed and
why, why checks were skipped, and one line per target.

Every text from a run is escaped: rich would take a check's parameters
("[aufs-tmpfs]") or a kernel line ("[   42.0]") for markup and drop them."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.results import ERROR, FAILED, HUNG, PASSED, SKIPPED, CheckResult, TargetReport

STYLE = {PASSED: "green", FAILED: "red", ERROR: "red", HUNG: "magenta", SKIPPED: "yellow"}
DRIVERS = ("aufs", "overlay")
BAD = (FAILED, ERROR, HUNG)


def driver_of(check: CheckResult) -> str:
    """The union driver a check ran against, from its parametrised id."""
    params = re.search(r"\[(.*)\]$", check.nodeid)
    if params:
        for token in re.split(r"[-_/,+]", params.group(1)):
            if token in DRIVERS:
                return token
    return "-"


def _color(outcome: str, text: str | None = None) -> str:
    return f"[{STYLE.get(outcome, '')}]{text if text is not None else outcome}[/]"


def checks_table(r: TargetReport) -> Table:
    table = Table(title=escape(f"{r.target}: checks by area and driver"))
    for col in ("area", "driver", "passed", "failed", "skipped"):
        table.add_column(col, justify="left" if col in ("area", "driver") else "right")
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for c in r.checks:
        groups[(c.module.removeprefix("test_"), driver_of(c))][c.outcome] += 1
    for (area, driver), n in sorted(groups.items()):
        bad = n[FAILED] + n[ERROR] + n[HUNG]
        table.add_row(
            escape(area),
            driver,
            _color(PASSED, str(n[PASSED])),
            _color(FAILED, str(bad)) if bad else "0",
            str(n[SKIPPED]),
        )
    return table


def failures_table(r: TargetReport) -> Table:
    table = Table(title=escape(f"{r.target}: failures"))
    table.add_column("check", overflow="fold")
    table.add_column("result")
    table.add_column("why", overflow="fold")
    for c in r.checks:
        if c.outcome in BAD:
            table.add_row(escape(c.name), _color(c.outcome), escape(c.message))
    return table


def skip_reasons(r: TargetReport, top: int = 6) -> Table:
    table = Table(title=escape(f"{r.target}: why checks were skipped"))
    table.add_column("checks", justify="right")
    table.add_column("reason", overflow="fold")
    reasons = Counter(
        c.message.split(":")[0] if "/tmp/" in c.message else c.message
        for c in r.checks
        if c.outcome == SKIPPED
    )
    for reason, n in reasons.most_common(top):
        table.add_row(str(n), escape(reason))
    rest = sum(reasons.values()) - sum(n for _, n in reasons.most_common(top))
    if rest:
        table.add_row(str(rest), f"({len(reasons) - top} other reasons: see report.json)")
    return table


# Each outcome its own column, as report.json has them: a hung check or a
# teardown error is not a failed assertion.
OUTCOME_COLUMNS = (PASSED, FAILED, ERROR, HUNG, SKIPPED)


def summary_table(reports: list[TargetReport]) -> Table:
    table = Table(title="summary")
    columns = ("target", "kernel", "accel", "verdict", *OUTCOME_COLUMNS, "stages")
    for col in columns:
        table.add_column(col, overflow="fold")
    for r in reports:
        n = r.counts()
        stages = " ".join(f"{s.name}:{s.status}({s.seconds:.0f}s)" for s in r.stages)
        counts = [_color(o, str(n[o])) if n[o] and o in BAD else str(n[o]) for o in OUTCOME_COLUMNS]
        table.add_row(
            escape(r.target), escape(r.kernel_release), r.accel, _color(r.verdict),
            *counts, escape(stages),
        )  # fmt: skip
    return table


def print_report(reports: list[TargetReport], console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 120)
    for r in reports:
        if r.checks:
            console.print(checks_table(r))
        if any(c.outcome in BAD for c in r.checks):
            console.print(failures_table(r))
        if any(c.outcome == SKIPPED for c in r.checks):
            console.print(skip_reasons(r))
    console.print(summary_table(reports))
    for r in reports:
        if r.verdict != PASSED:
            console.print(f"{escape(r.target)}: {_color(r.verdict)}: {escape(r.reason)}")
            if r.console_log:
                console.print(escape(f"  console log: {r.console_log}"))
            notes = r.extra.get("vms", [])
            for note in notes:  # what sent the run to fresh VMs, VM by VM
                console.print(escape(f"  {note}"))
            if len(notes) > 0 and r.console_log and "fresh VM" in r.reason:
                console.print(escape(f"  fresh VMs' logs: {Path(r.console_log).parent}/vm-N/"))
