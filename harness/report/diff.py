"""What changed between two runs: new failures, fixes, other changed outcomes,
checks and cells that appeared or went, and cell verdicts.

A run is read from its results directory (report.json) or, by id, from the
history database. Checks are matched by cell label and module::name.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from harness.compare import check_key, load_reports
from harness.core.errors import UserError
from harness.report.history import connect, find_run, is_bad
from harness.results import PASSED

NEW, FIXED, CHANGED, ADDED, REMOVED = "new failure", "fixed", "changed", "added", "removed"
KINDS = (NEW, FIXED, CHANGED, ADDED, REMOVED)


@dataclass(frozen=True)
class Outcome:
    outcome: str
    known: str = ""  # the baseline entry's reason, "" when none expects it

    def __str__(self) -> str:
        return f"{self.outcome} (known)" if self.known else self.outcome


@dataclass
class RunData:
    """One run as the diff needs it: name, cell verdicts, (cell, check) outcomes."""

    name: str
    verdicts: dict[str, str] = field(default_factory=dict)
    checks: dict[tuple[str, str], Outcome] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    kind: str  # one of KINDS
    cell: str
    check: str
    before: Outcome | None
    after: Outcome | None


@dataclass
class Diff:
    a: str
    b: str
    changes: list[Change]
    cells: list[str]  # one line per cell whose verdict changed or that is in one run only

    @property
    def same(self) -> bool:
        return not self.changes and not self.cells


def load(ref: str, db: Path) -> RunData:
    """The run `ref`: a results directory (or its report.json), else a run id in
    `db`. Raises UserError when it is neither."""
    path = Path(ref)
    if path.exists():
        data = RunData(path.resolve().name if path.is_dir() else path.parent.name)
        for r in load_reports(path):
            data.verdicts[r.target] = r.verdict
            for c in r.checks:
                data.checks[r.target, check_key(c)] = Outcome(c.outcome, c.known)
        return data
    if not db.is_file():
        raise UserError(f"{ref}: no such results directory, and no history at {db} (--db)")
    with connect(db) as conn:
        return _from_db(conn, ref, db)


def _from_db(conn: sqlite3.Connection, ref: str, db: Path) -> RunData:
    run = find_run(conn, ref)
    if run is None:
        raise UserError(
            f"{ref}: neither a results directory nor a run recorded in {db} "
            "(`aufs-harness history record DIR` records one)"
        )
    data = RunData(run.run)
    for cell, verdict in conn.execute("SELECT cell, verdict FROM cells WHERE run = ?", (run.run,)):
        data.verdicts[cell] = verdict
    rows = conn.execute("SELECT cell, check_id, outcome, known FROM results WHERE run = ?",
                        (run.run,))  # fmt: skip
    for cell, check, outcome, known in rows:
        data.checks[cell, check] = Outcome(outcome, known)
    return data


def classify(before: Outcome | None, after: Outcome | None) -> str | None:
    """The kind of change from `before` to `after` (None: absent), None when same.

    A check that turns red with no baseline entry expecting it is a new failure
    (also when an expectation is dropped); one that was red, or a known
    failure, and now passes is fixed."""
    if _same(before, after):
        return None
    before_bad = before is not None and is_bad(before.outcome, before.known)
    if after is not None and is_bad(after.outcome, after.known) and not before_bad:
        return NEW
    if before is None:
        return ADDED
    if after is None:
        return REMOVED
    if after.outcome == PASSED and (before_bad or before.known):
        return FIXED
    return CHANGED


def _same(before: Outcome | None, after: Outcome | None) -> bool:
    """Same outcome, and expected by a baseline in both or neither (its words may differ)."""
    if before is None or after is None:
        return before is after
    return (before.outcome, bool(before.known)) == (after.outcome, bool(after.known))


def diff(a: RunData, b: RunData) -> Diff:
    """Every change from run `a` to run `b`, by kind (KINDS' order), then cell and check.
    Checks of a cell that is in one run only are summed up in one line, not listed."""
    both = a.verdicts.keys() & b.verdicts.keys()
    changes = []
    for key in sorted(a.checks.keys() | b.checks.keys()):
        if key[0] not in both:
            continue
        kind = classify(a.checks.get(key), b.checks.get(key))
        if kind:
            changes.append(Change(kind, key[0], key[1], a.checks.get(key), b.checks.get(key)))
    changes.sort(key=lambda c: KINDS.index(c.kind))
    return Diff(a.name, b.name, changes, _cell_lines(a, b))


def _cell_lines(a: RunData, b: RunData) -> list[str]:
    lines = []
    for cell in sorted(a.verdicts.keys() | b.verdicts.keys()):
        va, vb = a.verdicts.get(cell), b.verdicts.get(cell)
        if va is None or vb is None:
            lines.append(f"cell {cell}: only in {a.name if vb is None else b.name}")
        elif va != vb:
            lines.append(f"cell {cell}: {va} -> {vb}")
    return lines


def render(d: Diff) -> list[str]:
    """Lines for people: cells first, then one section per kind of change."""
    lines = [f"{d.a} -> {d.b}"]
    lines += [f"  {line}" for line in d.cells]
    for kind in KINDS:
        these = [c for c in d.changes if c.kind == kind]
        if these:
            lines.append(f"{kind} ({len(these)}):")
        for c in these:
            lines.append(f"  {c.cell}: {c.check}: {c.before or 'absent'} -> {c.after or 'absent'}")
    counts = ", ".join(f"{sum(c.kind == k for c in d.changes)} {k}" for k in KINDS)
    lines.append("nothing changed" if d.same else counts)
    return lines
