"""After a check hangs or damages the guest kernel: which results stand, which
checks run again on a fresh VM, and the watchdog that spots such a check early."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import resume, runner
from harness.core.deadline import Deadline
from harness.guest.kmsg import CheckFacts
from harness.guestsuite import SuiteOutcome, Watchdog
from harness.results import FAILED, HUNG, PASSED, SKIPPED, CheckResult, TargetReport
from harness.resultsdir import TargetDir, VMDir
from harness.runner import RunOptions
from harness.targets import Target

BUG_LINE = "[   42.0] kernel BUG at fs/aufs/hfsnotify.c:173!"
DAMAGE = (
    f"kernel damaged earlier in this run ({BUG_LINE}); "
    "its results would not be trustworthy: boot a fresh kernel"
)


def outcome(*checks: CheckResult, hung: str | None = None) -> SuiteOutcome:
    return SuiteOutcome(list(checks), None if hung else 1, Path("pytest.log"), [], bool(hung), hung)


def c(nodeid: str, result: str, message: str = "") -> CheckResult:
    return CheckResult(f"suite/t.py::{nodeid}", result, 0.1, message)


def damaged(nodeid: str, line: str = BUG_LINE, message: str = DAMAGE) -> CheckResult:
    """A check the guest skipped because the kernel was damaged: the fact, and
    the suite's sentence (which resume must not need)."""
    return CheckResult(f"suite/t.py::{nodeid}", SKIPPED, 0.1, message, kernel=CheckFacts(line))


def test_split_keeps_real_results_and_reruns_what_the_damage_cost() -> None:
    parts = resume.split(
        outcome(
            c("ok", PASSED),
            c("bad", FAILED, "AssertionError"),
            c("notify", HUNG, "set up, but the check never ended"),
            c("beside", HUNG, "set up, but the check never ended"),
            damaged("later"),
            c("xattr", SKIPPED, "RO's fs refuses user.a"),
            hung="suite/t.py::notify",
        )
    )
    assert [x.name for x in parts.final] == ["ok", "bad", "notify", "xattr"]
    assert [x.name for x in parts.again] == ["beside", "later"]
    assert parts.why == "notify hung"
    assert resume.deselect_args(parts.final)[0] == "--deselect=suite/t.py::ok"


def test_split_keeps_a_damage_line_with_parentheses_whole() -> None:
    gpf = "[ 9.1] general protection fault, probably for non-canonical address (0xdead)"
    message = f"kernel damaged earlier in this run ({gpf}); its results would not be trustworthy"
    parts = resume.split(outcome(damaged("later", gpf, message)))
    assert parts.why == f"the kernel was damaged ({gpf})"


def test_split_decides_on_the_facts_not_the_message() -> None:
    """The same decisions with every message empty: resume reads fields only."""
    worded = resume.split(outcome(c("oops", FAILED, "kernel BUG"), damaged("later")))
    bare = resume.split(outcome(c("oops", FAILED), damaged("later", message="")))
    assert [x.name for x in bare.again] == [x.name for x in worded.again] == ["later"]
    assert bare.why == worded.why == f"the kernel was damaged ({BUG_LINE})"
    silent = CheckResult(
        "suite/t.py::x", FAILED, 0.1, kernel=CheckFacts(health_only=True, workers=2)
    )
    assert resume.ambiguous(silent)
    assert not resume.ambiguous(c("x", FAILED, "kernel health (call) of x: a concurrent check"))


def test_split_names_the_damage_when_nothing_hung() -> None:
    parts = resume.split(outcome(c("oops", FAILED, "kernel BUG"), damaged("later")))
    assert parts.why == "the kernel was damaged ([   42.0] kernel BUG at fs/aufs/hfsnotify.c:173!)"
    assert not resume.split(outcome(c("ok", PASSED))).needs_fresh_vm


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


class FakeVMs:
    """Stands in for runner._one_vm: one scripted outcome per VM booted."""

    def __init__(self, *outcomes: SuiteOutcome) -> None:
        self.outcomes = list(outcomes)
        self.deselected: list[list[str]] = []
        self.workers: list[int] = []
        self.dirs: list[Path] = []

    def __call__(
        self, target: Any, boot: Any, build: Any, opts: RunOptions, report: TargetReport,
        vm: int, out: VMDir, standing: Sequence[CheckResult], deadline: Deadline, workers: int,
    ) -> SuiteOutcome:  # fmt: skip
        self.deselected.append([x.name for x in standing])
        self.workers.append(workers)
        self.dirs.append(out.path)
        if not self.outcomes:
            raise AssertionError(f"VM {vm} booted, but no outcome was scripted for it")
        got = self.outcomes.pop(0)
        if got.hung_check:
            report.verdict, report.reason = FAILED, f"{got.hung_check} hung"
        return got


def run_vms(
    fake: FakeVMs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> TargetReport:
    monkeypatch.setattr(runner, "_one_vm", fake)
    report = TargetReport("debian:bullseye aufs")
    opts = RunOptions(results_dir=tmp_path, **kw)
    runner._run_suite_on_vms(Target(), None, None, opts, report, TargetDir(tmp_path))  # type: ignore[arg-type]
    report.settle()
    return report


def test_a_hang_sends_the_checks_left_to_a_fresh_vm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVMs(
        outcome(
            c("ok", PASSED), c("notify", HUNG), damaged("later"),
            hung="suite/t.py::notify",
        ),
        outcome(c("later", PASSED), c("never_started", PASSED)),
    )  # fmt: skip
    report = run_vms(fake, tmp_path, monkeypatch)
    assert fake.deselected == [[], ["ok", "notify"]]
    assert fake.workers == [2, 2]
    assert fake.dirs == [tmp_path, tmp_path / "vm-2"]
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("ok", PASSED), ("notify", HUNG), ("later", PASSED), ("never_started", PASSED),
    ]  # fmt: skip
    assert report.verdict == FAILED
    assert report.reason == "VM 1: notify hung; 1 fresh VM(s) ran the checks left"


def test_fresh_vms_are_bounded_and_the_skips_stay_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVMs(
        outcome(
            c("a", HUNG), damaged("b"), damaged("d"), hung="suite/t.py::a"
        ),
        outcome(c("b", HUNG), damaged("d"), hung="suite/t.py::b"),
    )  # fmt: skip
    report = run_vms(fake, tmp_path, monkeypatch, fresh_vms=1)
    assert fake.deselected == [[], ["a"]]
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("a", HUNG), ("b", HUNG), ("d", SKIPPED),
    ]  # fmt: skip
    assert report.checks[-1].kernel.damaged == BUG_LINE
    assert report.verdict == FAILED
    assert report.reason == (
        "VM 1: a hung (and 1 more, see report.json); 1 fresh VM(s) ran the checks left"
    )
    assert report.extra["vms"] == ["VM 1: a hung", "VM 2: b hung"]


def test_keep_vm_means_no_fresh_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeVMs(outcome(c("a", HUNG), damaged("b"), hung="suite/t.py::a"))
    report = run_vms(fake, tmp_path, monkeypatch, keep_vm=True)
    assert len(fake.deselected) == 1
    assert report.verdict == FAILED and report.reason == "suite/t.py::a hung"
    assert report.extra["vms"] == ["VM 1: a hung"]


def test_no_damage_no_fresh_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeVMs(outcome(c("a", PASSED), c("b", SKIPPED, "xfs not in /proc/filesystems")))
    report = run_vms(fake, tmp_path, monkeypatch)
    assert len(fake.deselected) == 1 and report.verdict == PASSED and "vms" not in report.extra


def test_a_vm_where_nothing_ends_stops_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeVMs(
        outcome(c("a", FAILED, "Oops"), damaged("b")),
        outcome(damaged("b")),  # damaged before any check ended
    )
    report = run_vms(fake, tmp_path, monkeypatch, fresh_vms=5)
    assert len(fake.deselected) == 2
    assert report.extra["vms"][-1] == "no check ended on that VM: stopped"
    assert report.reason.endswith(
        "(and 2 more, see report.json); 1 fresh VM(s) ran the checks left"
    )


def test_no_fresh_vm_when_the_hung_check_was_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = outcome(c("before", PASSED), c("hangs", HUNG), hung="suite/t.py::hangs")
    last.collected = 2
    report = run_vms(FakeVMs(last), tmp_path, monkeypatch)
    assert report.verdict == FAILED and report.reason == "suite/t.py::hangs hung"


HEALTH = (
    "kernel health (call) of suite/t.py::x:\nsuspicious kernel lines:\n"
    "  [   23.9] VFS: Busy inodes after unmount of tmpfs.\n"
    "(2 xdist workers share this kernel: a concurrent check may be the cause)"
)


def health_failure(name: str, alone: bool = False) -> CheckResult:
    details = HEALTH.split("\n(", maxsplit=1)[0] if alone else HEALTH
    facts = CheckFacts(health_only=True, workers=1 if alone else 2)
    return CheckResult(
        f"suite/t.py::{name}", FAILED, 0.1, details.splitlines()[-1], details, kernel=facts
    )


def test_a_check_blamed_beside_another_goes_again_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = CheckResult(
        "suite/t.py::own", FAILED, 0.1, "AssertionError", "E   assert 1\n\n" + HEALTH,
        kernel=CheckFacts(workers=2, lines=["[   23.9] VFS: Busy inodes after unmount"]),
    )  # fmt: skip
    fake = FakeVMs(
        outcome(c("ok", PASSED), health_failure("culprit"), health_failure("bystander"), own),
        outcome(health_failure("culprit"), c("bystander", PASSED)),
    )
    report = run_vms(fake, tmp_path, monkeypatch, fresh_vms=5)
    assert fake.deselected == [[], ["ok", "own"]]  # its own assertion failed: that stands
    assert fake.workers == [2, 1]  # the suspects go again with the kernel to themselves
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("ok", PASSED), ("own", FAILED), ("culprit", FAILED), ("bystander", PASSED),
    ]  # fmt: skip
    assert report.extra["vms"] == [
        "VM 1: 2 check(s) failed on kernel health beside another check"
    ]  # the second failure of culprit stands: no third VM


def test_a_health_failure_with_one_worker_stands() -> None:
    parts = resume.split(outcome(health_failure("alone", alone=True)))
    assert [x.name for x in parts.final] == ["alone"] and not parts.needs_fresh_vm


def test_kernel_death_names_the_panic_first(tmp_path: Path) -> None:
    from harness.guestsuite import kernel_death

    console = tmp_path / "console.log"
    assert kernel_death(console) == ""  # no console at all
    console.write_text(
        "[ 9.0] VFS: Busy inodes after unmount of tmpfs.\n[ 9.5] Oops: 0002 [#1] SMP\n"
        "[ 9.6] Kernel panic - not syncing: Fatal exception\n"
    )
    assert kernel_death(console) == "[ 9.6] Kernel panic - not syncing: Fatal exception"
    console.write_text("[ 9.0] VFS: Busy inodes after unmount of tmpfs.\n[ 9.5] Oops: 0002\n")
    assert kernel_death(console) == "[ 9.5] Oops: 0002"


def test_a_kernel_that_dies_under_two_checks_sends_both_again_alone() -> None:
    died = outcome(c("ok", PASSED), c("x", HUNG), c("y", HUNG))
    died.kernel_died = "[ 9.6] Kernel panic - not syncing: sysrq triggered crash"
    parts = resume.split(died)
    assert [x.name for x in parts.again] == ["x", "y"] and parts.suspects == 2
    assert parts.why == "the kernel died ([ 9.6] Kernel panic - not syncing: sysrq triggered crash)"
    alone = outcome(c("ok", PASSED), c("x", HUNG))
    alone.kernel_died = died.kernel_died
    parts = resume.split(alone)
    assert [x.name for x in parts.final] == ["ok", "x"] and parts.suspects == 0
    assert parts.needs_fresh_vm  # for the checks that never started


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


def test_a_fresh_vm_that_fails_to_boot_keeps_what_came_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.core.errors import InfraError

    fake = FakeVMs(outcome(c("ok", PASSED), c("n", HUNG), damaged("later"), hung="suite/t.py::n"))

    def then_no_boot(*a: Any, **k: Any) -> SuiteOutcome:
        if fake.outcomes:
            return fake(*a, **k)
        raise InfraError("QEMU exited before SSH answered")

    monkeypatch.setattr(runner, "_one_vm", then_no_boot)
    report = TargetReport("debian:bullseye aufs")
    with pytest.raises(InfraError):
        opts = RunOptions(results_dir=tmp_path)
        runner._run_suite_on_vms(Target(), None, None, opts, report, TargetDir(tmp_path))  # type: ignore[arg-type]
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("ok", PASSED), ("n", HUNG), ("later", SKIPPED),
    ]  # fmt: skip
    assert report.extra["vms"] == ["VM 1: n hung"]
