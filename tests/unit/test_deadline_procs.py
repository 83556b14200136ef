from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.deadline import Deadline
from harness.core.errors import DeadlineExceeded, InfraError, UserError
from harness.core.procs import run, which


def test_deadline_counts_down_and_expires() -> None:
    d = Deadline(0.05, "tiny")
    assert 0 < d.remaining() <= 0.05
    time.sleep(0.06)
    assert d.expired()
    with pytest.raises(DeadlineExceeded, match="tiny"):
        d.check("waiting")


def test_sub_deadline_never_outlives_parent() -> None:
    parent = Deadline(1, "parent")
    assert parent.sub(100, "child").remaining() <= 1


def test_run_kills_the_whole_group_at_the_deadline(tmp_path: Path) -> None:
    marker = tmp_path / "survivor"
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        # The grandchild would touch the marker after 2 s if it survived the kill.
        run(["sh", "-c", f"(sleep 2; touch {marker}) & sleep 30"], deadline=Deadline(0.5, "t"))
    assert time.monotonic() - t0 < 5
    time.sleep(2.5)
    assert not marker.exists()


def test_run_failure_names_command_and_stderr() -> None:
    with pytest.raises(InfraError, match=r"exited 3: oops"):
        run(["sh", "-c", "echo oops >&2; exit 3"], deadline=Deadline(5, "t"))


def test_run_logfile(tmp_path: Path) -> None:
    logf = tmp_path / "x.log"
    run(["sh", "-c", "echo out; echo err >&2"], deadline=Deadline(5, "t"), logfile=logf)
    assert logf.read_text().split() == ["out", "err"]


def test_which_names_the_package() -> None:
    with pytest.raises(UserError, match="install the Debian package no-such-pkg"):
        which("no-such-program-xyz", "no-such-pkg")


TIED = """
import sys, time
from harness.core.procs import spawn, tie_to_stdin
child = spawn(["sleep", "600"])
print(child.pid, flush=True)
tie_to_stdin()
try:
    time.sleep(600)
except KeyboardInterrupt:
    child.kill()
    print("interrupted", flush=True)
"""


def test_a_run_tied_to_stdin_ends_with_its_children_when_stdin_closes() -> None:
    """As a host's `aufs-harness run --tied-to-stdin` when the SSH connection drops."""
    proc = subprocess.Popen(
        [sys.executable, "-c", TIED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    child = int(proc.stdout.readline())
    time.sleep(0.5)
    assert proc.poll() is None  # stdin open: it runs on
    proc.stdin.close()
    assert proc.wait(10) == 0
    assert proc.stdout.read().strip() == "interrupted"
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()
