"""The run history: every recorded run's cells and checks in SQLite (stdlib
sqlite3), and for each check and cell its last good and first bad run.

Tables (one file, default data_dir()/history.sqlite):

    runs     run (id, the results directory's name), path, started (Unix s), recorded
    cells    run, cell (the target label), verdict, reason, axes (JSON)
    results  run, cell, check_id (module::name), outcome, known ("" or the reason)

Good: a check passed (a cell's verdict passed). Bad: a check failed, errored or
hung with no baseline entry expecting it (a cell failed or errored). Skipped
and known failures are neither: they leave a streak as it was.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

from harness.compare import check_key, load_reports
from harness.core.errors import UserError
from harness.core.paths import data_dir
from harness.report.model import Page
from harness.results import ERROR, FAILED, HUNG, PASSED, TargetReport

log = logging.getLogger(__name__)

RunId = NewType("RunId", str)
DB_NAME = "history.sqlite"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, started REAL NOT NULL,
    recorded REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    run TEXT NOT NULL REFERENCES runs(run) ON DELETE CASCADE, cell TEXT NOT NULL,
    verdict TEXT NOT NULL, reason TEXT NOT NULL, axes TEXT NOT NULL,
    PRIMARY KEY (run, cell));
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL REFERENCES runs(run) ON DELETE CASCADE, cell TEXT NOT NULL,
    check_id TEXT NOT NULL, outcome TEXT NOT NULL, known TEXT NOT NULL,
    PRIMARY KEY (run, cell, check_id));
CREATE INDEX IF NOT EXISTS results_by_check ON results (cell, check_id);
"""
RED = (FAILED, ERROR, HUNG)


@dataclass(frozen=True)
class Run:
    run: RunId
    path: str
    started: float


@dataclass(frozen=True)
class Streak:
    """Where a check (or cell) stands: the last run it was good in and the first
    bad run after that (None: no such run). first_bad set means it is still bad."""

    last_good: RunId | None = None
    first_bad: RunId | None = None


def default_db() -> Path:
    """The user's history database: data_dir()/history.sqlite."""
    return data_dir() / DB_NAME


def is_bad(outcome: str, known: str) -> bool:
    return outcome in RED and not known


@contextmanager
def connect(db: Path) -> Iterator[sqlite3.Connection]:
    """An open history database at `db` (created with its schema if missing),
    committed when the body ends well. Raises UserError when `db` is not one."""
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            yield conn
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db}: not a history database ({exc}); give another --db") from exc


def check_db(db: Path) -> None:
    """Refuse `db` before a long run would record into it: UserError (one line)
    when it exists and is not a history database (not SQLite, or SQLite without
    its tables). A missing or empty file is fine: record creates the schema.
    Only reads."""
    if not db.exists() or (db.is_file() and db.stat().st_size == 0):
        return
    try:
        uri = f"{db.resolve().as_uri()}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db}: not a history database ({exc}); give another --db") from exc
    if "runs" not in tables:
        raise UserError(f"{db}: an SQLite database without the history's tables; give another --db")


def record(results_dir: Path, db: Path) -> RunId:
    """Record the run in `results_dir` (its report.json) into `db`; returns its id.

    The id is the directory's name ("20261130-060727"), with "-2", "-3"... when
    another directory of that name is already recorded. Recording the same
    directory again replaces what was recorded of it. Raises UserError when
    there is no readable report or `db` is not a history database.
    """
    root = results_dir.resolve()
    reports = load_reports(root)
    started = min((r.started for r in reports), default=root.stat().st_mtime)
    with connect(db) as conn:
        run = _run_id(conn, root)
        conn.execute("DELETE FROM runs WHERE run = ?", (run,))
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?)", (run, str(root), started, time.time()))
        for r in reports:
            _insert_cell(conn, run, r)
    log.info("history: recorded %s (%d cell(s)) in %s", run, len(reports), db)
    return run


def _run_id(conn: sqlite3.Connection, root: Path) -> RunId:
    row = conn.execute("SELECT run FROM runs WHERE path = ?", (str(root),)).fetchone()
    if row:
        return RunId(row[0])
    taken = {r[0] for r in conn.execute("SELECT run FROM runs")}
    n, run = 1, root.name
    while run in taken:
        n += 1
        run = f"{root.name}-{n}"
    return RunId(run)


def _insert_cell(conn: sqlite3.Connection, run: RunId, report: TargetReport) -> None:
    axes = json.dumps(report.extra.get("cell") or {}, sort_keys=True, default=str)
    conn.execute(
        "INSERT INTO cells VALUES (?, ?, ?, ?, ?)",
        (run, report.target, report.verdict, report.reason, axes),
    )
    conn.executemany(
        "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
        [(run, report.target, check_key(c), c.outcome, c.known) for c in report.checks],
    )


def runs(conn: sqlite3.Connection) -> list[Run]:
    """Every recorded run, oldest first."""
    rows = conn.execute("SELECT run, path, started FROM runs ORDER BY started, run")
    return [Run(RunId(r[0]), r[1], r[2]) for r in rows]


def find_run(conn: sqlite3.Connection, ref: str) -> Run | None:
    """The run named `ref`: a run id, or the path of a recorded results directory."""
    path = str(Path(ref).resolve())
    for r in runs(conn):
        if ref == r.run or path == r.path:
            return r
    return None


def streak(rows: Iterable[tuple[str, bool | None]]) -> Streak:
    """Fold (run, good?) rows, oldest first (None: neither good nor bad)."""
    last_good: str | None = None
    first_bad: str | None = None
    for run, good in rows:
        if good:
            last_good, first_bad = run, None
        elif good is False and first_bad is None:
            first_bad = run
    return Streak(RunId(last_good) if last_good else None, RunId(first_bad) if first_bad else None)


def check_rows(
    conn: sqlite3.Connection, cell: str, check: str, before: Run | None = None
) -> list[tuple[str, bool | None]]:
    """(run, good?) of one check of one cell, oldest first; only runs before
    `before` (by start time, then id) when given."""
    rows = conn.execute(
        "SELECT r.run, r.started, x.outcome, x.known FROM results x JOIN runs r USING (run) "
        "WHERE x.cell = ? AND x.check_id = ? ORDER BY r.started, r.run",
        (cell, check),
    )
    return [(run, _good(outcome, known)) for run, started, outcome, known in rows
            if before is None or (started, run) < (before.started, before.run)]  # fmt: skip


def cell_rows(
    conn: sqlite3.Connection, cell: str, before: Run | None = None
) -> list[tuple[str, bool | None]]:
    """(run, good?) of one cell's verdicts, oldest first (before `before` if given)."""
    rows = conn.execute(
        "SELECT r.run, r.started, c.verdict FROM cells c JOIN runs r USING (run) "
        "WHERE c.cell = ? ORDER BY r.started, r.run",
        (cell,),
    )
    return [(run, verdict == PASSED if verdict in (PASSED, FAILED, ERROR) else None)
            for run, started, verdict in rows
            if before is None or (started, run) < (before.started, before.run)]  # fmt: skip


def _good(outcome: str, known: str) -> bool | None:
    if outcome == PASSED:
        return True
    return False if is_bad(outcome, known) else None


def since_note(rows: list[tuple[str, bool | None]]) -> str:
    """What to say about something bad now, given its earlier (run, good?) rows:
    "new since R" (good in R, bad only now), "failing since R2, last good R1",
    "failing since R2, never passed", "new: never passed before" (known or
    skipped so far), or "new: no earlier run"."""
    prior = streak(rows)
    if prior.first_bad:
        tail = f"last good {prior.last_good}" if prior.last_good else "never passed"
        return f"failing since {prior.first_bad}, {tail}"
    if prior.last_good:
        return f"new since {prior.last_good}"
    return "new: never passed before" if rows else "new: no earlier run"


def annotate(page: Page, db: Path) -> None:
    """Mark `page`'s red checks and cells with their since notes from `db`,
    counting only runs recorded before the page's own (which may be recorded
    or not). A missing `db` leaves the page as it is."""
    if not db.is_file():
        log.debug("history: no database at %s; no since notes", db)
        return
    with connect(db) as conn:
        started = min((c.report.started for c in page.cells), default=0.0)
        this = find_run(conn, str(page.root)) or Run(RunId(page.root.name), "", started)
        for v in page.problems:
            if v.category in RED:
                v.since = since_note(check_rows(conn, v.cell, v.key, this))
        for cell in page.cells:
            if cell.report.verdict in (FAILED, ERROR):
                cell.since = since_note(cell_rows(conn, cell.report.target, this))
        earlier = sum(1 for r in runs(conn) if (r.started, r.run) < (this.started, this.run))
    page.history = f"{db} ({earlier} earlier run(s))"
