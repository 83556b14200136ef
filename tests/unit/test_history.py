"""harness/report/history.py and diff.py: runs in SQLite, streaks, since notes,
`history record` and `history diff`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import UserError
from harness.report import history
from harness.report.diff import ADDED, CHANGED, FIXED, NEW, REMOVED, Outcome, classify, diff, load
from harness.report.model import build_page
from tests.unit.report_samples import AUFS, MTIME, XATTR, aufs_cell, stock_cell, write_run

MTIME_KEY = "test_copy_up::" + MTIME.split("::")[1]
XATTR_KEY = "test_copy_up::" + XATTR.split("::")[1]


def three_nights(base: Path) -> list[Path]:
    """Night 1 all green but xattr; night 2 mtime fails (known) and xattr passes;
    night 3 mtime fails with no expectation (the baseline entry was flipped)."""
    n1, n2, n3 = aufs_cell(mtime="passed"), aufs_cell(), aufs_cell(known="")
    n2.checks[1].outcome = "passed"
    for day, cell in enumerate((n1, n2, n3)):
        cell.started = 1000.0 + day * 86400
    return [write_run(base, f"night{i + 1}", [c, stock_cell()]).root
            for i, c in enumerate((n1, n2, n3))]  # fmt: skip


def test_record_stores_every_cell_and_check_and_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    night1 = three_nights(tmp_path)[0]
    assert history.record(night1, db) == "night1"
    assert history.record(night1, db) == "night1"  # again: replaced, not doubled
    with history.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM cells").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM results").fetchone() == (6,)
        row = conn.execute(
            "SELECT outcome, known FROM results WHERE cell = ? AND check_id = ?", (AUFS, XATTR_KEY)
        ).fetchone()
    assert row == ("failed", "")
    other = write_run(tmp_path / "elsewhere", "night1", [stock_cell()]).root
    assert history.record(other, db) == "night1-2"  # same name, another directory


def test_streaks_give_last_good_and_first_bad() -> None:
    assert history.streak([]) == history.Streak(None, None)
    rows: list[tuple[str, bool | None]] = [("r1", True), ("r2", False), ("r3", None), ("r4", False)]
    assert history.streak(rows) == history.Streak(history.RunId("r1"), history.RunId("r2"))
    assert history.streak([*rows, ("r5", True)]) == history.Streak(history.RunId("r5"), None)
    assert history.since_note(rows) == "failing since r2, last good r1"
    assert history.since_note([("r1", True), ("r2", None)]) == "new since r1"
    assert history.since_note([("r1", False)]) == "failing since r1, never passed"
    assert history.since_note([("r1", None)]) == "new: never passed before"
    assert history.since_note([]) == "new: no earlier run"


def test_the_page_says_since_when_each_red_check_and_cell_went_red(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    nights = three_nights(tmp_path)
    for night in nights:
        history.record(night, db)
    reports = [aufs_cell(known=""), stock_cell()]
    reports[0].started = 1000.0 + 2 * 86400
    page = build_page(reports, nights[2])
    history.annotate(page, db)
    since = {v.key: v.since for v in page.problems}
    assert since[MTIME_KEY] == "new since night1"  # passed, then known, now red
    assert since[XATTR_KEY] == "new since night2"
    assert page.cells[0].since == "failing since night1, never passed"
    assert page.history == f"{db} (2 earlier run(s))"
    # not yet recorded: the same notes, from the runs before it
    page = build_page(reports, tmp_path / "night4")
    history.annotate(page, db)
    assert {v.key: v.since for v in page.problems}[
        MTIME_KEY
    ] == "failing since night3, last good night1"


def test_no_database_no_notes_and_a_bad_one_is_a_user_error(tmp_path: Path) -> None:
    page = build_page([aufs_cell()], tmp_path)
    history.annotate(page, tmp_path / "missing.sqlite")
    assert page.history == "" and all(v.since == "" for v in page.problems)
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not sqlite " * 100)
    with pytest.raises(UserError, match="not a history database"):
        history.annotate(page, bad)


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (Outcome("passed"), Outcome("passed"), None),
        (Outcome("failed", "a"), Outcome("failed", "b"), None),  # known either way
        (Outcome("passed"), Outcome("failed"), NEW),
        (Outcome("failed", "known"), Outcome("failed"), NEW),  # expectation dropped
        (Outcome("skipped"), Outcome("hung"), NEW),
        (None, Outcome("error"), NEW),
        (Outcome("failed"), Outcome("passed"), FIXED),
        (Outcome("failed", "known"), Outcome("passed"), FIXED),
        (Outcome("failed"), Outcome("hung"), CHANGED),
        (Outcome("failed"), Outcome("failed", "now known"), CHANGED),
        (Outcome("passed"), Outcome("skipped"), CHANGED),
        (None, Outcome("passed"), ADDED),
        (Outcome("failed"), None, REMOVED),
    ],
)
def test_classify(before: Outcome | None, after: Outcome | None, kind: str | None) -> None:
    assert classify(before, after) == kind


def test_diff_of_results_directories_and_of_recorded_runs_agree(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    nights = three_nights(tmp_path)
    for night in nights:
        history.record(night, db)
    by_dir = diff(load(str(nights[1]), db), load(str(nights[2]), db))
    by_id = diff(load("night2", db), load("night3", db))
    assert [(c.kind, c.cell, c.check) for c in by_dir.changes] == [
        (NEW, AUFS, MTIME_KEY),
        (NEW, AUFS, XATTR_KEY),
    ]
    assert by_id.changes == by_dir.changes
    assert by_id.cells == by_dir.cells == []  # failed both nights
    with pytest.raises(UserError, match="neither a results directory nor a run recorded"):
        load("night9", db)


def test_history_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.sqlite"
    nights = three_nights(tmp_path)
    for night in nights:
        assert main(["history", "record", str(night), "--db", str(db)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"recorded night3 in {db}"
    # flipping the mtime expectation (night 2 -> 3) names that check, exit 1
    assert main(["history", "diff", "night2", str(nights[2]), "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"  {AUFS}: {MTIME_KEY}: failed (known) -> failed" in out
    assert out.splitlines()[-1] == "2 new failure, 0 fixed, 0 changed, 0 added, 0 removed"
    assert main(["history", "diff", "night3", "night3", "--db", str(db)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "nothing changed"
    assert main(["history", "diff", "night1", "nope", "--db", str(db)]) == 2


def test_history_lives_in_the_users_data_dir_by_default(tmp_path: Path) -> None:
    night = three_nights(tmp_path)[0]
    assert main(["history", "record", str(night)]) == 0
    assert history.default_db() == tmp_path / "data" / history.DB_NAME
    with sqlite3.connect(history.default_db()) as conn:
        assert conn.execute("SELECT run FROM runs").fetchall() == [("night1",)]


def test_report_html_marks_new_failures_from_the_history(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    nights = three_nights(tmp_path)
    for night in nights:
        history.record(night, db)
    assert main(["report", "html", str(nights[2]), "--db", str(db)]) == 0
    text = (nights[2] / "index.html").read_text()
    assert "new since night1" in text and "new since night2" in text
    assert main(["report", "html", str(nights[2]), "--db", str(db), "--no-history"]) == 0
    assert "new since" not in (nights[2] / "index.html").read_text()
