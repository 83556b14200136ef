"""The pass/fail table printed at the end of a run (rich, plain text when piped)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.results import ERROR, FAILED, HUNG, PASSED, SKIPPED, TargetReport

STYLE = {PASSED: "green", FAILED: "red", ERROR: "red", HUNG: "magenta", SKIPPED: "yellow"}


def print_report(reports: list[TargetReport], console: Console | None = None) -> None:
    console = console or Console()
    for r in reports:
        checks = Table(title=f"{r.target} ({r.kernel_release or 'kernel unknown'}, {r.accel})",
                       show_lines=False)  # fmt: skip
        checks.add_column("check")
        checks.add_column("result")
        checks.add_column("s", justify="right")
        checks.add_column("why")
        for c in r.checks:
            checks.add_row(c.name, f"[{STYLE.get(c.outcome, '')}]{c.outcome}[/]",
                           f"{c.duration:.2f}", c.message[:90])  # fmt: skip
        if r.checks:
            console.print(checks)
    summary = Table(title="summary")
    for col in ("target", "kernel", "verdict", "passed", "failed", "skipped", "stages", "why"):
        summary.add_column(col)
    for r in reports:
        n = r.counts()
        stages = " ".join(f"{s.name}:{s.status}({s.seconds:.0f}s)" for s in r.stages)
        summary.add_row(
            r.target, r.kernel_release, f"[{STYLE.get(r.verdict, '')}]{r.verdict}[/]",
            str(n[PASSED]), str(n[FAILED] + n[ERROR] + n[HUNG]), str(n[SKIPPED]),
            stages, r.reason[:80],
        )  # fmt: skip
    console.print(summary)
