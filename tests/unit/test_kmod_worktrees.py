"""Old kernel work trees go; the one in use, the newest ones and a held one stay."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from harness.core.errors import UserError
from harness.core.store import locked
from kmod import worktrees


def tree(root: Path, name: str, used_at: float) -> Path:
    work = root / name
    worktrees.mark_used(work)
    (work / "src").mkdir()
    os.utime(work / ".last-used", (used_at, used_at))
    return work


def test_prune_keeps_the_current_and_the_most_recently_used(tmp_path: Path) -> None:
    old, older, newest = tree(tmp_path, "a", 100), tree(tmp_path, "b", 50), tree(tmp_path, "c", 300)
    current = tree(tmp_path, "d", 10)  # in use now, whatever its stamp says
    removed = worktrees.prune(tmp_path, 2, current)
    assert removed == [old, older]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["c", "d"]
    assert newest.exists() and current.exists()


def test_prune_leaves_a_tree_another_run_holds(tmp_path: Path) -> None:
    held = tree(tmp_path, "held", 1)
    other = tree(tmp_path, "other", 2)
    current = tree(tmp_path, "current", 3)
    with worktrees.lock(held):
        removed = worktrees.prune(tmp_path, 1, current)
    assert removed == [other] and held.exists()


@pytest.mark.parametrize("raw", ["0", "many", "-2"])
def test_keep_count_refuses_nonsense(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(worktrees.KEEP_ENV, raw)
    with pytest.raises(UserError, match="AUFS_HARNESS_KEEP_WORK_TREES"):
        worktrees.keep_count()
    monkeypatch.setenv(worktrees.KEEP_ENV, "5")
    assert worktrees.keep_count() == 5


def test_waiting_for_a_work_tree_another_run_holds_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run whose work tree another run is building waits, and says so: it
    sat silent for minutes behind another engineer's make (fault campaign)."""
    work = tmp_path / "work" / "k"
    work.parent.mkdir()
    held, done = threading.Event(), threading.Event()

    def other_run() -> None:
        with worktrees.lock(work):
            held.set()
            done.wait(10)

    other = threading.Thread(target=other_run)
    other.start()
    assert held.wait(10)
    threading.Timer(0.3, done.set).start()
    with caplog.at_level(logging.INFO), locked(worktrees.lock_path(work), f"building in {work}"):
        pass
    other.join(10)
    assert [r.getMessage() for r in caplog.records] == [f"building in {work}; waiting for it"]
