"""Two runs side by side: per-outcome counts and every check whose outcome changed.

Checks are matched by module and name ("test_copy_up::test_x[aufs-tmpfs]"),
not by the whole node id, whose directory part depends on where the suite
was shipped; targets are matched by their label, except that two runs of one
target each are compared with each other (a pinned "debian:bullseye=5.10.223-1"
against a "debian:bullseye" of the day it meant the same kernel).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import UserError
from harness.results import CheckResult, TargetReport, read_json

OUTCOMES = ("passed", "failed", "error", "hung", "skipped")


@dataclass
class Change:
    """One check whose outcome differs; "" stands for absent from that run."""

    target: str
    check: str
    before: str
    after: str


@dataclass
class Comparison:
    counts_a: dict[str, Counter[str]] = field(default_factory=dict)  # target -> outcome counts
    counts_b: dict[str, Counter[str]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.changes


def check_key(check: CheckResult) -> str:
    """The name a check keeps wherever the suite ran: 'module::name[params]'."""
    return f"{check.module}::{check.name}"


def load_reports(path: Path) -> list[TargetReport]:
    """The targets of a run, from its results directory or its report.json.

    Raises UserError naming the path when there is no readable report there.
    """
    report = path / "report.json" if path.is_dir() else path
    try:
        return read_json(report)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(
            f"{report}: no such report: give a results directory or its report.json"
        ) from None
    except OSError as exc:  # a directory named report.json, unreadable
        raise UserError(f"{report}: cannot read it ({exc.strerror}): give a report.json") from None
    except KeyError as exc:
        raise UserError(
            f"{report}: not an aufs-harness report (no {exc} key): give a report.json a run wrote"
        ) from None
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{report}: not an aufs-harness report ({exc}): give a report.json a run wrote"
        ) from None


def compare(a: list[TargetReport], b: list[TargetReport]) -> Comparison:
    """Outcome counts of both runs per target, and the checks that changed."""
    result = Comparison()
    by_label = {r.target: r for r in b}
    if len(a) == len(b) == 1:  # two single-target runs: the same target, however labelled
        by_label = {a[0].target: b[0]}
    for ra in a:
        rb = by_label.get(ra.target, TargetReport(target=ra.target))
        result.counts_a[ra.target] = ra.counts()
        result.counts_b[ra.target] = rb.counts()
        before = {check_key(c): c.outcome for c in ra.checks}
        after = {check_key(c): c.outcome for c in rb.checks}
        for key in sorted(before.keys() | after.keys()):
            if before.get(key, "") != after.get(key, ""):
                result.changes.append(
                    Change(ra.target, key, before.get(key, ""), after.get(key, ""))
                )
    return result


def render(comparison: Comparison) -> list[str]:
    """Lines for people: counts per target, then one line per changed check."""
    lines = []
    for target, counts in comparison.counts_a.items():
        other = comparison.counts_b.get(target, Counter())
        lines.append(f"{target}:")
        lines.append("  A: " + _counts(counts))
        lines.append("  B: " + _counts(other))
    for ch in comparison.changes:
        lines.append(
            f"  {ch.target}: {ch.check}: {ch.before or 'absent'} -> {ch.after or 'absent'}"
        )
    lines.append("same verdict for every check" if comparison.same else
                 f"{len(comparison.changes)} check(s) changed")  # fmt: skip
    return lines


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES) + f" ({sum(counts.values())} checks)"
