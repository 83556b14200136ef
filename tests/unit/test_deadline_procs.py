from __future__ import annotations

import os
import shutil
import signal
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


# A harness that runs a child forking a grandchild (make and its sub-makes),
# then is SIGKILLed. The grandchild writes its pid and sleeps.
TREE_HARNESS = """
import sys
from pathlib import Path
from harness.core.deadline import Deadline
from harness.core.procs import run
pidfile, tree = sys.argv[1], sys.argv[2] == "tree"
run(["sh", "-c", f"sh -c 'echo $$ > {pidfile}; exec sleep 300' & wait"],
    deadline=Deadline(300, "t"), tree=tree)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_sigkill_of_the_harness_kills_the_childs_whole_tree(tmp_path: Path) -> None:
    """make's sub-makes outlived a SIGKILLed harness (fault campaign): the
    parent-death signal reaches the direct child only; with tree=True a guard
    kills the group. (Without it the grandchild lives on, an orphan that any
    concurrent test's leftovers sweep would then report: not run here.)"""
    pidfile = tmp_path / "grandchild.pid"
    harness = subprocess.Popen([sys.executable, "-c", TREE_HARNESS, str(pidfile), "tree"])
    end = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < end:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    end = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    survived = _alive(grandchild)
    if survived:
        os.kill(grandchild, signal.SIGKILL)
    assert not survived, "the grandchild outlived the SIGKILLed harness"


def test_a_child_meeting_enospc_is_the_full_disk_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip downloading the guest's wheels into a full cache (fault campaign): the
    one line a full disk gets, naming the cache directory, not pip's last line."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUFS_HARNESS_CACHE", str(cache))
    wheels = cache / "guest-wheels" / ".tmp-k"
    wheels.mkdir(parents=True)
    real = shutil.disk_usage

    def usage(path: str | os.PathLike[str]) -> object:
        full = Path(path).resolve().is_relative_to(cache.resolve())
        return shutil._ntuple_diskusage(1 << 30, 1 << 30, 0) if full else real(path)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    argv = ["sh", "-c", "echo 'OSError: [Errno 28] No space left on device' >&2; exit 1"]
    with pytest.raises(InfraError) as exc:
        run([*argv, "pip", "download", "-d", str(wheels)], deadline=Deadline(30, "t"))
    assert str(exc.value) == (
        f"the cache directory {cache.resolve()} is full (no space left, 0 MB free) while "
        f"writing {wheels.resolve()}: free space there or point the harness elsewhere "
        "(AUFS_HARNESS_CACHE, AUFS_HARNESS_STATE, --results); nothing half-written was kept "
        "(sh said so)"
    )
    # the same failure elsewhere is the child's own line
    with pytest.raises(InfraError, match="exited 1: OSError"):
        run(argv, deadline=Deadline(30, "t"))
