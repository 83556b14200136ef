"""Children die with the harness, and the next start cleans what a dead one left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core import leftovers, procs
from harness.core.deadline import Deadline


def _alive(pid: int) -> bool:
    return procs.start_time(pid) is not None


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_child_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import sys, time; from harness.core import procs; "
        "p = procs.spawn(['sleep', '300']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    end = time.monotonic() + 30
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < end, "the parent never spawned"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_dead(child), "the child outlived its SIGKILLed parent"


def test_children_carry_the_owner_token() -> None:
    out = procs.run(["sh", "-c", "echo $AUFS_HARNESS_OWNER"], deadline=Deadline(10, "t"))
    assert out.stdout.strip() == procs.owner_token()


def test_token_of_a_dead_or_reused_pid_is_dead() -> None:
    assert procs.token_alive(procs.owner_token())
    assert not procs.token_alive(f"{os.getpid()}:1")  # same pid, other start: reused
    assert procs.token_alive(procs.DETACHED)


def test_sweep_kills_orphans_and_removes_dead_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUFS_HARNESS_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(tmp_path / "cache"))
    dead = f"{os.getpid()}:1"  # a token no live process has
    orphan = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, procs.OWNER_ENV: dead}, start_new_session=True
    )
    kept = subprocess.Popen(
        ["sleep", "300"],
        env={**os.environ, procs.OWNER_ENV: procs.DETACHED},
        start_new_session=True,
    )
    run = tmp_path / "state" / "runs" / "run-dead"
    run.mkdir(parents=True)
    (run / "owner.json").write_text(json.dumps({"owner": dead}))
    mine = tmp_path / "state" / "runs" / "run-mine"
    mine.mkdir()
    (mine / "owner.json").write_text(json.dumps({"owner": procs.owner_token()}))
    try:
        swept = leftovers.sweep()
        orphan.wait(timeout=10)
        assert swept.killed["other process(es)"] == 1
        assert swept.dirs == 1 and not run.exists() and mine.exists()
        assert "cleaned what a dead run left" in swept.summary()
        assert kept.poll() is None
    finally:
        for p in (orphan, kept):
            p.kill()
            p.wait()
