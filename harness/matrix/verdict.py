"""A cell's verdict with its baseline: known failures do not turn it red, a
fix (a known failure that passes, not intermittent) does; and the matrix's
exit code (0 every cell passed, 1 a cell failed, 2 an infrastructure error)."""

from __future__ import annotations

from typing import Any

from harness.matrix.baseline import Baseline, Entry, Environment
from harness.matrix.spec import Cell
from harness.results import ERROR, FAILED, HUNG, PASSED, CheckResult, TargetReport, exit_code

BAD = (FAILED, ERROR, HUNG)

__all__ = ["apply_baseline", "exit_code", "matrix_exit_code"]


def matrix_exit_code(reports: list[TargetReport]) -> int:
    """0 when every cell passed (known failures included), 1 when a cell
    failed, 2 when any cell is an error (or there is no cell)."""
    return exit_code(reports) if reports else exit_code([TargetReport("none", verdict=ERROR)])


def aufs_branch(report: TargetReport) -> str | None:
    """The aufs branch the cell's build chose (extra["build"]["aufs"]["branch"])."""
    build: dict[str, Any] = report.extra.get("build") or {}
    branch = (build.get("aufs") or {}).get("branch")
    return str(branch) if branch else None


def apply_baseline(report: TargetReport, cell: Cell, baseline: Baseline) -> None:
    """Mark the checks whose outcome an applicable entry expects as known,
    record the fixes in extra["fixed"] (check ids) and the count of known ones
    in extra["known"], then judge the cell again (rejudge). A report judged
    before (by another baseline) is judged afresh: its marks are cleared and
    its verdict without a baseline restored."""
    before = report.extra.pop("verdict_without_baseline", None)
    if before is not None:
        report.verdict, report.reason = before["verdict"], before["reason"]
    elif report.verdict == PASSED and report.extra.get("known"):
        report.reason = ""
    for check in report.checks:
        check.known = ""
    env = Environment(cell, report.kernel_release, aufs_branch(report))
    entries = baseline.for_env(env)
    fixed = []
    for check in report.checks:
        entry = _mark(check, [e for e in entries if e.names(check.nodeid)])
        if entry is not None:
            fixed.append(check.nodeid)
    report.extra["fixed"] = fixed
    report.extra["known"] = sum(1 for c in report.checks if c.known)
    rejudge(report)


def _mark(check: CheckResult, entries: list[Entry]) -> Entry | None:
    """Set check.known from the first entry expecting its outcome; returns the
    entry the check fixes (it passed, the entry expects a failure and is not
    intermittent), else None."""
    for entry in entries:
        if check.outcome in entry.outcomes:
            check.known = entry.label
            return None
    if check.outcome == PASSED:
        return next((e for e in entries if not e.intermittent), None)
    return None


def rejudge(report: TargetReport) -> None:
    """A cell failed only by known failures passes; a cell with a fix fails.
    A stage's failure (patch, build, load) and an error verdict stand."""
    fixed: list[str] = report.extra.get("fixed", [])
    known = report.extra.get("known", 0)
    stage_failed = any(s.status in (FAILED, ERROR) for s in report.stages)
    unknown = [c for c in report.checks if c.outcome in BAD and not c.known]
    if report.verdict == FAILED and known and not unknown and not stage_failed:
        report.extra["verdict_without_baseline"] = {"verdict": FAILED, "reason": report.reason}
        report.verdict, report.reason = PASSED, ""
    if report.verdict == PASSED and fixed:
        report.verdict = FAILED
        report.reason = f"{len(fixed)} known failure(s) now pass: {fixed[0]}" + (
            f" and {len(fixed) - 1} more" if len(fixed) > 1 else ""
        )
    if report.verdict == PASSED and known:
        report.reason = f"{known} known failure(s) as the baseline expects"
