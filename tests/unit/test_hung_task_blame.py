"""A hung-task report names the blocked task: the watchdog blames the check whose
worker is that task (or its parent), not merely the oldest check running, and
repeated reports of one task collapse into one in the hang evidence
(harness.guestsuite.Watchdog, worker_pids; harness.guest.kmsg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.guest.kmsg import BlockedTask, blocked_tasks, collapse_hung_reports
from harness.guestsuite import Watchdog, worker_pids

OLD = "suite/t.py::slow_mkfs"
STUCK = "suite/t.py::remount_bind"


def report(nodeid: str, worker: str, pid: int | None, when: str = "setup") -> dict[str, Any]:
    props = {"kernel": {"pid": pid}} if pid is not None else {}
    return {
        "event": "report",
        "nodeid": nodeid,
        "when": when,
        "outcome": "passed",
        "worker": worker,
        "properties": props,
    }


def hung_report(stamp: float, pid: int, ppid: int, secs: int, comm: str = "python3") -> str:
    """What kernel/hung_task.c prints for one blocked task (5.10 layout)."""
    return (
        f"[{stamp:12.6f}] INFO: task {comm}:{pid} blocked for more than {secs} seconds.\n"
        f"[{stamp:12.6f}]       Not tainted 5.10.223 #1\n"
        f'[{stamp:12.6f}] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables '
        "this message.\n"
        f"[{stamp:12.6f}] task:{comm:<15} state:D stack:    0 pid:{pid:5d} "
        f"ppid:{ppid:6d} flags:0x0\n"
        f"[{stamp:12.6f}] Call Trace:\n"
        f"[{stamp:12.6f}]  __schedule+0x1b2/0x4a0\n"
        f"[{stamp:12.6f}]  di_write_lock+0x14/0x30 [aufs]\n"
        f"[{stamp:12.6f}] RIP: 0033:0x7fb055c28e5a\n"
        f"[{stamp:12.6f}] R13: 00007ffc5cf29640 R14: 0000000000000001 R15: 0000000000000000\n"
    )


def test_worker_pids_from_each_checks_own_reports() -> None:
    events: list[dict[str, Any]] = [
        {"event": "start", "nodeid": "a"},
        report("a", "gw0", 191),
        {"event": "start", "nodeid": "b"},
        report("b", "gw1", 192),
        report("x", "gw2", None),  # a worker whose pid was never recorded
        {"event": "start", "nodeid": "x2"},
    ]
    assert worker_pids(events, ["a", "b", "x2"]) == {"a": 191, "b": 192}


def test_a_check_hung_in_setup_gets_the_one_idle_worker() -> None:
    """No report of its own yet: the only worker with a known pid that runs nothing else."""
    events: list[dict[str, Any]] = [
        report("done", "gw0", 191, when="teardown"),
        report("a", "gw1", 192),
        {"event": "start", "nodeid": "new"},
    ]
    assert worker_pids(events, ["a", "new"]) == {"a": 192, "new": 191}
    # two checks without reports and two idle workers: no guess
    events.append(report("done2", "gw2", 193, when="teardown"))
    assert worker_pids(events, ["a", "new", "other"]) == {"a": 192}


def test_hung_task_report_blames_the_check_whose_worker_is_blocked(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("[    1.000000] Run /sbin/init\n")
    dog = Watchdog(check_timeout=300, console=console)
    running = {OLD: 900.0, STUCK: 990.0}  # the oldest check is not the stuck one
    owners = {OLD: 191, STUCK: 192}
    with open(console, "a") as f:
        f.write(hung_report(54.1, pid=192, ppid=91, secs=10))
    dog.read_console(now=1000.0)
    assert dog.blocked == {192: BlockedTask("python3", 192, 91)}
    assert dog.hung(running, now=1020.0, owners=owners) is None  # within the grace
    hung = dog.hung(running, now=1031.0, owners=owners)
    assert hung is not None and hung[0] == STUCK
    assert "its worker is the blocked task" in hung[1]
    # without worker facts: the oldest, as before
    hung = dog.hung(running, now=1031.0)
    assert hung is not None and hung[0] == OLD


def blamed(tmp_path: Path, console_text: str) -> tuple[str, str] | None:
    """The watchdog's verdict 31 s after reading console_text, with OLD (worker pid
    191, started first) and STUCK (worker pid 192) running."""
    console = tmp_path / "console.log"
    console.write_text(console_text)
    dog = Watchdog(check_timeout=300, console=console)
    dog.read_console(now=1000.0)
    return dog.hung({OLD: 900.0, STUCK: 990.0}, now=1031.0, owners={OLD: 191, STUCK: 192})


def test_a_blocked_child_of_the_worker_blames_that_worker(tmp_path: Path) -> None:
    """A check's child process (mount(8), a forked helper) blocks: its ppid is the worker."""
    hung = blamed(tmp_path, hung_report(54.1, pid=305, ppid=192, secs=10, comm="mount"))
    assert hung is not None and hung[0] == STUCK


def test_the_task_line_may_arrive_in_a_later_read(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    text = hung_report(54.1, pid=192, ppid=91, secs=10)
    head, _, tail = text.partition("[   54.100000] task:")
    console.write_text(head)
    dog = Watchdog(check_timeout=300, console=console)
    dog.read_console(now=1000.0)
    assert dog.blocked == {192: BlockedTask("python3", 192, 0)}
    with open(console, "a") as f:
        f.write("[   54.100000] task:" + tail)
    dog.read_console(now=1002.0)
    assert dog.blocked == {192: BlockedTask("python3", 192, 91)}


def test_no_match_falls_back_to_the_oldest(tmp_path: Path) -> None:
    hung = blamed(tmp_path, hung_report(54.1, pid=7, ppid=2, secs=10, comm="kworker/0:1"))
    assert hung is not None and hung[0] == OLD and "blocked task" not in hung[1]


def test_repeated_reports_of_one_task_collapse_into_the_first() -> None:
    text = (
        "[   50.000000] unionfs-suite: BEGIN suite/t.py::remount_bind\n"
        + hung_report(54.1, 192, 91, 10)
        + "[   54.200000] EXT4-fs (loop0): mounted filesystem\n"
        + hung_report(56.1, 192, 91, 12)
        + hung_report(56.1, 305, 192, 10, comm="mount")
        + hung_report(58.1, 192, 91, 14)
        + "[   58.300000] unionfs-suite: BEGIN suite/t.py::next\n"
    )
    out = collapse_hung_reports(text)
    assert out.count("INFO: task python3:192") == 1
    assert out.count("INFO: task mount:305") == 1  # another task keeps its own report
    assert "pid 192 repeated 2 more times, up to 14 seconds blocked" in out
    assert "pid 305 repeated" not in out
    # everything that is not a repeat stays, in order
    kept = [line for line in out.splitlines() if "EXT4" in line or "BEGIN" in line]
    assert kept == [
        "[   50.000000] unionfs-suite: BEGIN suite/t.py::remount_bind",
        "[   54.200000] EXT4-fs (loop0): mounted filesystem",
        "[   58.300000] unionfs-suite: BEGIN suite/t.py::next",
    ]
    assert out.count("di_write_lock") == 2  # one stack per task
    assert blocked_tasks(out.splitlines()) == {
        192: BlockedTask("python3", 192, 91),
        305: BlockedTask("mount", 305, 192),
    }
    assert collapse_hung_reports("no reports\n") == "no reports\n"


def oops_report(stamp: float, pid: int, first: str = "Oops: 0000 [#1] SMP") -> str:
    """What an oops (or, with first="kernel BUG at ..." and an "invalid opcode"
    line) prints first on 5.10: the FATAL line, then show_regs()'s task line."""
    extra = f"[{stamp:12.6f}] invalid opcode: 0000 [#1] SMP\n" if "BUG" in first else ""
    return (
        f"[{stamp:12.6f}] {first}\n{extra}"
        f"[{stamp:12.6f}] CPU: 1 PID: {pid} Comm: python3 Not tainted 5.10.223 #1\n"
        f"[{stamp:12.6f}] RIP: 0010:au_cpup_sio_test+0x12/0xb0 [aufs]\n"
    )


def test_an_oops_in_a_checks_worker_blames_that_check_within_seconds(tmp_path: Path) -> None:
    """The oops names the task it happened in (CPU: N PID: P Comm: C): the check
    whose worker it is will not end, so it is declared hung OOPS_NAMED_GRACE after
    the oops, not DAMAGED_GRACE, and it is blamed over an older check."""
    from harness.guest.kmsg import oops_task
    from harness.guestsuite import DAMAGED_GRACE, OOPS_NAMED_GRACE

    for first in ("Oops: 0000 [#1] SMP", "kernel BUG at fs/aufs/hfsnotify.c:173!"):
        console = tmp_path / "console.log"
        console.write_text("[    1.000000] Run /sbin/init\n")
        dog = Watchdog(check_timeout=300, console=console)
        running = {OLD: 900.0, STUCK: 990.0}
        owners = {OLD: 191, STUCK: 192}
        with open(console, "a") as f:
            f.write(oops_report(44.2, pid=192, first=first))
        dog.read_console(now=1000.0)
        assert dog.oops_pid == 192 == oops_task(console.read_text().splitlines())
        assert dog.hung(running, 1000.0 + OOPS_NAMED_GRACE - 1, owners) is None
        nodeid, why = dog.hung(running, 1000.0 + OOPS_NAMED_GRACE + 1, owners) or ("", "")
        assert nodeid == STUCK and "its worker is the task it names" in why, why
        assert OOPS_NAMED_GRACE < DAMAGED_GRACE


def test_an_oops_in_no_checks_worker_keeps_the_full_grace(tmp_path: Path) -> None:
    """A task that is no worker (a kworker, a check's child process): the oldest
    running check, after DAMAGED_GRACE, as before."""
    from harness.guestsuite import DAMAGED_GRACE

    console = tmp_path / "console.log"
    console.write_text("")
    dog = Watchdog(check_timeout=300, console=console)
    running = {OLD: 900.0, STUCK: 990.0}
    with open(console, "a") as f:
        f.write(oops_report(44.2, pid=555))
    dog.read_console(now=1000.0)
    owners = {OLD: 191, STUCK: 192}
    assert dog.hung(running, 1000.0 + DAMAGED_GRACE - 1, owners) is None
    nodeid, why = dog.hung(running, 1000.0 + DAMAGED_GRACE + 1, owners) or ("", "")
    assert nodeid == OLD and "names" not in why and "blocked task" not in why


def test_the_oops_task_line_may_arrive_in_a_later_read(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text("")
    dog = Watchdog(check_timeout=300, console=console)
    lines = oops_report(44.2, pid=192).splitlines(keepends=True)
    with open(console, "a") as f:
        f.write(lines[0])
    dog.read_console(now=1000.0)
    assert dog.damage_at == 1000.0 and dog.oops_pid is None
    with open(console, "a") as f:
        f.writelines(lines[1:])
    dog.read_console(now=1001.0)
    assert dog.oops_pid == 192
