"""Old kernel work trees go; the one in use, the newest ones and a held one stay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.core.errors import UserError
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
