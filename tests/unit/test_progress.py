"""Progress for long, quiet commands: a build log summarised while make runs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from harness.core.logtail import watch_log
from kmod.build import MakeProgress

KBUILD_LOG = """\
make[1]: Entering directory '/src'
  HOSTCC  scripts/basic/fixdep
  CC      fs/ext4/inode.o
gcc -Wp,-MMD,fs/x.o.d -c fs/x.c
fs/aufs/vfsub.c:420:15: warning: something
  CC [M]  fs/aufs/module.o
  LD [M]  fs/aufs/aufs.ko
"""


def test_make_progress_counts_kbuild_steps_only() -> None:
    progress = MakeProgress()
    assert progress.summary() is None  # nothing to say before the first step
    for line in KBUILD_LOG.splitlines():
        progress.feed(line)
    assert progress.summary() == "make: step 4, LD [M] fs/aufs/aufs.ko"


def test_watch_log_reports_while_the_log_grows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_path = tmp_path / "build.log"
    progress = MakeProgress()
    with (
        caplog.at_level(logging.INFO, logger="aufs-harness"),
        watch_log(log_path, progress, every=0.05),
    ):
        time.sleep(0.15)  # the log does not exist yet: nothing said, nothing raised
        with open(log_path, "w") as f:
            f.write("  CC      a.o\n  CC      b")  # the second line is still being written
            f.flush()
            deadline = time.monotonic() + 5
            while progress.steps < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            f.write(".o\n")
        deadline = time.monotonic() + 5
        while progress.steps < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert progress.steps == 2 and progress.last == "CC b.o"  # the split line counted once
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("make:")]
    assert said and said[0].startswith("make: step 1, CC a.o (")


def test_suite_progress_names_the_check_that_holds_the_run_up() -> None:
    from harness.guestsuite import _progress
    from harness.results import FAILED, PASSED, CheckResult

    checks = [CheckResult("s/t.py::a", PASSED, 0.1), CheckResult("s/t.py::b", FAILED, 0.2)]
    running = {"s/t_udba.py::test_notify[aufs-tmpfs]": 1000.0, "s/t.py::quick": 1140.0}
    line = _progress(checks, 924, running, now=1150.0)
    assert line == "2 of 924 checks reported, 1 failed; test_notify[aufs-tmpfs] running for 150s"
    assert _progress(checks, None, {"s/t.py::quick": 1140.0}, now=1150.0) == (
        "2 checks reported, 1 failed"  # nothing slow, total not known yet
    )
