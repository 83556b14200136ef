"""The suite's host side: the event log folded into results, and the watchdog
that declares a check hung (harness.guestsuite)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.guestsuite import Watchdog, kernel_death, parse_resultlog


def events(path: Path, *evs: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    return path


def rep(nodeid: str, when: str, outcome: str, longrepr: str = "") -> dict[str, object]:
    return {
        "event": "report",
        "nodeid": nodeid,
        "when": when,
        "outcome": outcome,
        "duration": 0.1,
        "longrepr": longrepr,
    }


def test_fold_events_into_outcomes(tmp_path: Path) -> None:
    log = events(
        tmp_path / "e.jsonl",
        {"event": "start", "nodeid": "t.py::ok"},
        rep("t.py::ok", "setup", "passed"),
        rep("t.py::ok", "call", "passed"),
        rep("t.py::ok", "teardown", "passed"),
        {"event": "start", "nodeid": "t.py::bad"},
        rep("t.py::bad", "setup", "passed"),
        rep("t.py::bad", "call", "failed", "def x():\nE   AssertionError: RW/f missing\nmore"),
        {"event": "start", "nodeid": "t.py::skip"},
        rep("t.py::skip", "setup", "skipped", "Skipped: aufs not in /proc/filesystems"),
        {"event": "start", "nodeid": "t.py::hang"},
        rep("t.py::hang", "setup", "passed"),
    )
    with log.open("a") as f:
        f.write('{"event": "rep')  # a line cut short by a kill
    checks, down = parse_resultlog(log)
    got = {c.name: (c.outcome, c.message) for c in checks}
    assert got["ok"] == ("passed", "")
    assert got["bad"] == ("failed", "AssertionError: RW/f missing")
    assert got["skip"] == ("skipped", "aufs not in /proc/filesystems")
    assert got["hang"][0] == "hung"
    assert down == []


def test_started_but_never_reported_is_hung(tmp_path: Path) -> None:
    log = events(
        tmp_path / "e.jsonl",
        {"event": "start", "nodeid": "t.py::x"},
        {"event": "worker-down", "worker": "gw0", "error": "crashed"},
    )
    checks, down = parse_resultlog(log)
    assert [c.outcome for c in checks] == ["hung"]
    assert down == ["gw0: crashed"]


def test_running_checks_and_collected_count(tmp_path: Path) -> None:
    from harness.guestsuite import collected_count, read_events, running_in

    log = events(
        tmp_path / "e.jsonl",
        {"event": "start", "nodeid": "t.py::done", "t": 1.0},
        rep("t.py::done", "teardown", "passed"),
        {"event": "start", "nodeid": "t.py::running", "t": 2.0},
    )
    assert running_in(read_events(log)) == {"t.py::running": 2.0}
    pytest_log = tmp_path / "pytest.log"
    pytest_log.write_text("created: 2/2 workers\n2 workers [680 items]\n")
    assert collected_count(pytest_log) == 680
    assert collected_count(tmp_path / "missing.log") is None


def test_watchdog_gives_up_early_once_the_kernel_logged_a_bug(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_bytes(b"[    1.0] Run /sbin/init\n")
    dog = Watchdog(check_timeout=300, console=console)
    running = {"suite/t.py::notify": 1000.0}
    dog.read_console(now=1010.0)
    assert dog.hung(running, now=1100.0) is None  # a healthy kernel: the full timeout
    with open(console, "ab") as f:
        f.write(b"[   42.0] kernel BUG at fs/au")  # a line still being written
    dog.read_console(now=1110.0)
    assert dog.damage_at is None
    with open(console, "ab") as f:
        f.write(b"fs/hfsnotify.c:173!\n")
    dog.read_console(now=1120.0)
    assert dog.damage_at == 1120.0
    assert dog.hung(running, now=1140.0) is None  # within the grace
    hung = dog.hung(running, now=1151.0)
    assert hung is not None and hung[0] == "suite/t.py::notify"
    assert "after the kernel logged '[   42.0] kernel BUG at fs/aufs/hfsnotify.c:173!'" in hung[1]
    assert Watchdog(300).hung(running, now=1301.0) == (
        "suite/t.py::notify",
        "still running after 301s",
    )


def test_kernel_death_names_the_panic_first(tmp_path: Path) -> None:

    console = tmp_path / "console.log"
    assert kernel_death(console) == ""  # no console at all
    console.write_text(
        "[ 9.0] VFS: Busy inodes after unmount of tmpfs.\n[ 9.5] Oops: 0002 [#1] SMP\n"
        "[ 9.6] Kernel panic - not syncing: Fatal exception\n"
    )
    assert kernel_death(console) == "[ 9.6] Kernel panic - not syncing: Fatal exception"
    console.write_text("[ 9.0] VFS: Busy inodes after unmount of tmpfs.\n[ 9.5] Oops: 0002\n")
    assert kernel_death(console) == "[ 9.5] Oops: 0002"


def test_watchdog_waits_out_busy_inodes(tmp_path: Path) -> None:
    """The kernel runs on after "Busy inodes after unmount": a slow check there
    still gets the full timeout rather than being called hung after 30 s."""
    console = tmp_path / "console.log"
    console.write_text(
        "[ 9.0] VFS: Busy inodes after unmount of tmpfs. Self-destruct in 5 seconds.\n"
    )
    dog = Watchdog(check_timeout=300, console=console)
    dog.read_console(now=1000.0)
    assert dog.damage_at is None
    assert dog.hung({"suite/t.py::slow_mkfs": 990.0}, now=1100.0) is None
