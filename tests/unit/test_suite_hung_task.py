"""A deadlocked check ends in seconds: the hung-task detector's report is a FATAL
kernel line (harness/guest/kmsg.py), which the host's watchdog acts on after its
grace, without calling the kernel damaged; the suite lowers the detector's
timeout and scan interval while it runs (conftest)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.guest import kmsg
from harness.guestsuite import DAMAGED_GRACE, Watchdog

SUITE = Path(__file__).resolve().parents[2] / "harness" / "guest" / "suite"

# kernel/hung_task.c check_hung_task(), 5.10 and 6.x, as the serial console shows it
HUNG = "[   31.517266] INFO: task mount:1234 blocked for more than 10 seconds."
REPORT = [
    HUNG,
    "[   31.518010]       Not tainted 5.10.223 #1",
    '[   31.518500] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
    "[   31.519000] task:mount state:D stack:    0 pid: 1234 ppid:  1200 flags:0x00004000",
    "[   31.519500] Call Trace:",
    "[   31.519800]  rwsem_down_write_slowpath+0x2c5/0x4d0",
    "[   31.520100]  au_fsctx_reconfigure+0x4a/0x1d0 [aufs]",
]


@pytest.mark.parametrize(
    "line",
    [
        HUNG,
        "INFO: task kworker/0:1:55 blocked for more than 120 seconds.",
        "[ 5.0] INFO: task python3:321 blocked for more than 20 seconds.",
        "INFO: task a b:7 blocked for more than 10 seconds.",  # comm may hold a space
    ],
)
def test_hung_task_report_is_fatal(line: str) -> None:
    assert kmsg.FATAL.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "INFO: task mount:1234 can't die for more than 10 seconds.",
        "INFO: lockdep is turned off.",
        "hung_task: blocked tasks",
        "INFO: task blocked for more than seconds",
    ],
)
def test_other_info_lines_are_not_fatal(line: str) -> None:
    assert not kmsg.FATAL.search(line)


def test_hung_task_report_is_suspicious_but_not_damage() -> None:
    """The check in flight fails its kernel health; later checks are not skipped for
    damage (the kernel is intact, only that task is stuck)."""
    assert kmsg.first_match(kmsg.SUSPICIOUS, REPORT) == HUNG.strip()
    assert kmsg.first_match(kmsg.DAMAGE, REPORT) == ""


def test_death_line_names_the_hung_task_without_a_panic() -> None:
    assert kmsg.death_line("\n".join(["[ 1.0] booting", *REPORT])) == HUNG


def test_watchdog_declares_the_check_hung_after_the_grace(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("[    1.0] Run /sbin/init\n")
    dog = Watchdog(check_timeout=300, console=console)
    running = {"suite/test_remount_paths.py::bind[aufs-tmpfs]": 1000.0}
    dog.read_console(now=1005.0)
    assert dog.hung(running, now=1010.0) is None
    with open(console, "a") as fh:
        fh.write("\n".join(REPORT) + "\n")
    dog.read_console(now=1015.0)
    assert dog.damage_at == 1015.0 and dog.damage_line == HUNG.strip()
    assert dog.hung(running, now=1015.0 + DAMAGED_GRACE - 1) is None
    hung = dog.hung(running, now=1015.0 + DAMAGED_GRACE + 1)
    assert hung is not None and hung[0] == "suite/test_remount_paths.py::bind[aufs-tmpfs]"
    assert "blocked for more than 10 seconds" in hung[1]
    # well inside the 60 s from the check's start, at the watchdog's own pace
    assert 1015.0 + DAMAGED_GRACE + 1 - 1000.0 < 60


def _conftest() -> Any:
    """The suite's conftest, loaded by path under its own name (tests/unit has a
    conftest module of its own)."""
    name = "unionfs_suite_conftest"
    if name not in sys.modules:
        if str(SUITE) not in sys.path:
            sys.path.insert(0, str(SUITE))
        spec = importlib.util.spec_from_file_location(name, SUITE / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize(
    ("timeout", "interval", "want_timeout", "want_interval", "saved"),
    [
        ("120", "0", "10", "2", {"timeout": "120", "interval": "0"}),
        ("10", "2", "10", "2", {}),
        ("5", "1", "5", "1", {}),  # never raised
        ("0", "0", "0", "2", {"interval": "0"}),  # detector off: left off
    ],
)
def test_suite_shortens_hung_task_detection(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    timeout: str,
    interval: str,
    want_timeout: str,
    want_interval: str,
    saved: dict[str, str],
) -> None:
    conftest = _conftest()
    t, i = tmp_path / "hung_task_timeout_secs", tmp_path / "hung_task_check_interval_secs"
    t.write_text(timeout + "\n")
    i.write_text(interval + "\n")
    monkeypatch.setattr(conftest, "_HUNG_TASK", {t: 10, i: 2})
    got = conftest._shorten_hung_task_detection()
    assert t.read_text().strip() == want_timeout
    assert i.read_text().strip() == want_interval
    names = {t: "timeout", i: "interval"}
    assert {names[p]: v for p, v in got.items()} == saved


def test_suite_leaves_hung_task_detection_alone_without_procfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conftest = _conftest()
    monkeypatch.setattr(conftest, "_HUNG_TASK", {tmp_path / "absent": 10})
    assert conftest._shorten_hung_task_detection() == {}
