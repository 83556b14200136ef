"""The runner's decisions, driven through a recording fake VM (tests/unit/suite_fakes.py):
a fresh VM after a hang or damage, the checks it resumes, the verdict for a dead
VM, a dropped SSH or a crashed worker, and a build failure before any VM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.guest.kmsg import CheckFacts
from harness.results import (
    ERROR,
    FAILED,
    HUNG,
    PASSED,
    SKIPPED,
    CheckResult,
    TargetReport,
    exit_code,
)
from harness.resultsdir import TargetDir
from harness.runner import RunOptions, Stop, TargetRun, run_target
from harness.targets import Target
from kmod import pipeline
from kmod.pipeline import BuildResult, BuildSpec
from tests.unit.suite_fakes import (
    BUG_LINE,
    HEALTH,
    Fleet,
    Script,
    c,
    damaged,
    health_failure,
    outcome,
    scripted,
)  # fmt: skip

PANIC = "[    9.6] Kernel panic - not syncing: sysrq triggered crash"


def run_vms(
    fake: Fleet, tmp_path: Path, stop: Stop | None = None, run_seconds: float = 3600.0,
    **kw: Any,
) -> TargetReport:  # fmt: skip
    """The VM loop of one target on `fake`'s VMs; `stop`: why it must end."""
    report = TargetReport("debian:bullseye aufs")
    opts = RunOptions(results_dir=tmp_path, **kw)
    deadline = Deadline(run_seconds, "the run")
    got = runner.run_vms(
        TargetRun(Target(), None, opts, report, TargetDir(tmp_path), fake, deadline)
    )
    if stop is not None:
        assert got == stop
    report.settle()
    return report


def fleet(tmp_path: Path, *outcomes: Any) -> Fleet:
    return scripted(tmp_path / "qemu", *outcomes)


def test_a_hang_sends_the_checks_left_to_a_fresh_vm(tmp_path: Path) -> None:
    fake = fleet(tmp_path,
        outcome(
            c("ok", PASSED), c("notify", HUNG), damaged("later"),
            hung="suite/t.py::notify",
        ),
        outcome(c("later", PASSED), c("never_started", PASSED)),
    )  # fmt: skip
    report = run_vms(fake, tmp_path, Stop.DONE)
    assert fake.deselected == [[], ["ok", "notify"]]
    assert fake.workers == [2, 2]
    assert fake.dirs == [tmp_path, tmp_path / "vm-2"]
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("ok", PASSED), ("notify", HUNG), ("later", PASSED), ("never_started", PASSED),
    ]  # fmt: skip
    assert report.verdict == FAILED
    assert report.reason == "VM 1: notify hung; 1 fresh VM(s) ran the checks left"


def test_fresh_vms_are_bounded_and_the_skips_stay_named(tmp_path: Path) -> None:
    fake = fleet(tmp_path,
        outcome(
            c("a", HUNG), damaged("b"), damaged("d"), hung="suite/t.py::a"
        ),
        outcome(c("b", HUNG), damaged("d"), hung="suite/t.py::b"),
    )  # fmt: skip
    report = run_vms(fake, tmp_path, Stop.OUT_OF_FRESH_VMS, fresh_vms=1)
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


def test_keep_vm_means_no_fresh_vm(tmp_path: Path) -> None:
    fake = fleet(tmp_path, outcome(c("a", HUNG), damaged("b"), hung="suite/t.py::a"))
    report = run_vms(fake, tmp_path, Stop.KEEP_VM, keep_vm=True)
    assert len(fake.deselected) == 1
    assert report.verdict == FAILED and report.reason == "suite/t.py::a hung"
    assert report.extra["vms"] == ["VM 1: a hung"]


def test_no_damage_no_fresh_vm(tmp_path: Path) -> None:
    fake = fleet(tmp_path, outcome(c("a", PASSED), c("b", SKIPPED, "xfs not in /proc/filesystems")))
    report = run_vms(fake, tmp_path, Stop.DONE)
    assert len(fake.deselected) == 1 and report.verdict == PASSED and "vms" not in report.extra


def test_a_vm_where_nothing_ends_stops_the_chain(tmp_path: Path) -> None:
    fake = fleet(
        tmp_path,
        outcome(c("a", FAILED, "Oops"), damaged("b")),
        outcome(damaged("b")),  # damaged before any check ended
    )
    report = run_vms(fake, tmp_path, fresh_vms=5)
    assert len(fake.deselected) == 2
    assert report.extra["vms"][-1] == "no check ended on that VM: stopped"
    assert report.reason.endswith(
        "(and 2 more, see report.json); 1 fresh VM(s) ran the checks left"
    )


def test_no_fresh_vm_when_the_hung_check_was_the_last(tmp_path: Path) -> None:
    last = outcome(c("before", PASSED), c("hangs", HUNG), hung="suite/t.py::hangs")
    last.collected = 2
    report = run_vms(fleet(tmp_path, last), tmp_path, Stop.NOTHING_LEFT)
    assert report.verdict == FAILED and report.reason == "suite/t.py::hangs hung"


def test_a_check_blamed_beside_another_goes_again_once(tmp_path: Path) -> None:
    own = CheckResult(
        "suite/t.py::own", FAILED, 0.1, "AssertionError", "E   assert 1\n\n" + HEALTH,
        kernel=CheckFacts(workers=2, lines=["[   23.9] VFS: Busy inodes after unmount"]),
    )  # fmt: skip
    fake = fleet(
        tmp_path,
        outcome(c("ok", PASSED), health_failure("culprit"), health_failure("bystander"), own),
        outcome(health_failure("culprit"), c("bystander", PASSED)),
    )
    report = run_vms(fake, tmp_path, fresh_vms=5)
    assert fake.deselected == [[], ["ok", "own"]]  # its own assertion failed: that stands
    assert fake.workers == [2, 1]  # the suspects go again with the kernel to themselves
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("ok", PASSED), ("own", FAILED), ("culprit", FAILED), ("bystander", PASSED),
    ]  # fmt: skip
    assert report.extra["vms"] == [
        "VM 1: 2 check(s) failed on kernel health beside another check"
    ]  # the second failure of culprit stands: no third VM


def test_a_fresh_vm_that_fails_to_boot_keeps_what_came_before(tmp_path: Path) -> None:
    first = outcome(c("ok", PASSED), c("n", HUNG), damaged("later"), hung="suite/t.py::n")
    fake = fleet(tmp_path, first, Script(None))  # the fresh VM never boots
    report = TargetReport("debian:bullseye aufs")
    opts = RunOptions(results_dir=tmp_path)
    run = TargetRun(Target(), None, opts, report, TargetDir(tmp_path), fake, Deadline(3600, "run"))
    with pytest.raises(InfraError):
        runner.run_vms(run)
    assert [(x.name, x.outcome) for x in report.checks] == [
        ("ok", PASSED), ("n", HUNG), ("later", SKIPPED),
    ]  # fmt: skip
    assert report.extra["vms"] == ["VM 1: n hung"]
    assert [(s.name, s.status) for s in report.stages][-1] == ("boot#2", "error")
    assert fake.booted == 2 and fake.stopped == fake.discarded == 2


def test_the_stop_states(tmp_path: Path) -> None:
    """Each reason to boot no further VM is a named state."""
    hung = outcome(c("a", HUNG), damaged("b"), hung="suite/t.py::a")
    run_vms(fleet(tmp_path / "1", outcome(c("a", PASSED))), tmp_path / "1", Stop.DONE)
    run_vms(fleet(tmp_path / "2", hung), tmp_path / "2", Stop.KEEP_VM, keep_vm=True)
    run_vms(fleet(tmp_path / "3", hung), tmp_path / "3", Stop.OUT_OF_FRESH_VMS, fresh_vms=0)
    again = outcome(c("a", FAILED, "Oops"), damaged("b"))
    fake = fleet(tmp_path / "4", again, outcome(damaged("b")))
    run_vms(fake, tmp_path / "4", Stop.NO_CHECK_ENDED, fresh_vms=5)


def test_no_fresh_vm_when_the_run_is_almost_out_of_time(tmp_path: Path) -> None:
    fake = fleet(tmp_path, outcome(c("a", HUNG), damaged("b"), hung="suite/t.py::a"))
    report = run_vms(fake, tmp_path, Stop.DEADLINE, run_seconds=30.0)
    assert fake.booted == 1 and report.reason == "suite/t.py::a hung"
    assert fake.suite_deadlines[0] <= 30.0  # the suite's 1800 s cut to the run's time left


def test_the_default_run_deadline_cuts_no_step_short() -> None:
    opts = RunOptions(results_dir=Path("/results"), suite_timeout=7200.0, fresh_vms=2)
    per_vm = runner.START_TIMEOUT + opts.boot_timeout + runner.UNAME_TIMEOUT
    assert runner.run_budget(opts) >= runner.BUILD_TIMEOUT + 7200.0 + 3 * per_vm


def test_a_hung_check_is_named_with_its_blocked_tasks(tmp_path: Path) -> None:
    evidence = (
        "sysrq: Show Blocked State\ntask:kworker/0:1     state:D stack:0\n"
        "Workqueue: events fsnotify_mark_destroy_workfn\n"
    )
    hung = outcome(c("ok", PASSED), c("notify", HUNG, "set up, but the check never ended"),
                   hung="suite/t.py::notify")  # fmt: skip
    hung.hung_why, hung.collected = "still running after 301s", 2
    report = run_vms(fleet(tmp_path, Script(hung, evidence=evidence)), tmp_path, Stop.NOTHING_LEFT)
    check = report.checks[1]
    assert check.message == (
        "set up, but the check never ended (still running after 301s): the guest still answers; "
        "kworker/0:1 blocked in fsnotify_mark_destroy_workfn"
    )
    assert check.details == f"evidence: {tmp_path / 'hang-evidence.txt'}"
    assert (tmp_path / "hang-evidence.txt").read_text() == evidence
    assert report.extra["hang"]["cause"].startswith("the guest still answers")
    assert report.console_log == str(tmp_path / "console.log")
    assert (tmp_path / "console.log").read_text().startswith("[    0.0] Linux version")


def test_a_hang_in_a_guest_that_no_longer_answers(tmp_path: Path) -> None:
    hung = outcome(c("x", HUNG, "set up, but the check never ended"), hung="suite/t.py::x")
    hung.collected = 3
    report = run_vms(fleet(tmp_path, Script(hung, answers=False)), tmp_path, Stop.KEEP_VM,
                     keep_vm=True)  # fmt: skip
    assert report.reason == "suite/t.py::x hung; 2 checks not run"
    assert report.checks[0].message.endswith(
        ": the guest kernel no longer answers (see console.log)"
    )
    assert report.checks[0].details == "" and not (tmp_path / "hang-evidence.txt").exists()


def test_a_silent_guest_is_asked_for_its_blocked_tasks_through_qmp(tmp_path: Path) -> None:
    hung = outcome(c("x", HUNG, "set up, but the check never ended"), hung="suite/t.py::x")
    dump = "sysrq: Show Blocked State\ntask:mount state:D stack:0\nWorkqueue: events remount_fn\n"
    script = Script(hung, answers=False, console_evidence=dump)
    report = run_vms(fleet(tmp_path, script), tmp_path, Stop.KEEP_VM, keep_vm=True)
    assert report.checks[0].message.endswith(
        ": the guest kernel no longer answers (see console.log); mount blocked in remount_fn"
    )
    assert report.checks[0].details == f"evidence: {tmp_path / 'hang-evidence.txt'}"
    assert (tmp_path / "hang-evidence.txt").read_text() == dump


def test_the_suite_deadline_with_no_check_to_blame_is_an_error(tmp_path: Path) -> None:
    late = outcome(c("a", PASSED))
    late.timed_out = True
    report = run_vms(fleet(tmp_path, late), tmp_path, Stop.DONE)
    assert (report.verdict, report.reason) == (ERROR, "suite deadline passed")


def test_a_kernel_that_dies_under_one_check_names_it(tmp_path: Path) -> None:
    died = outcome(c("ok", PASSED), c("x", HUNG, "set up, but the check never ended"), c("y", HUNG))
    died.checks.pop()  # only x was in flight
    console = f"[    1.0] Run /sbin/init\n{PANIC}\n"
    fake = fleet(tmp_path, Script(died, answers=False, console=console),
                 outcome(c("later", PASSED)))  # fmt: skip
    report = run_vms(fake, tmp_path, Stop.DONE)
    assert fake.deselected == [[], ["ok", "x"]]
    assert report.checks[1].message == (
        f"set up, but the check never ended: the kernel logged {PANIC!r} and stopped answering"
    )
    assert report.verdict == FAILED
    assert report.reason == f"VM 1: the kernel died ({PANIC}); 1 fresh VM(s) ran the checks left"


def test_a_panic_declared_hung_is_a_death_not_a_hang(tmp_path: Path) -> None:
    """A check panicked the guest through /proc/sysrq-trigger (fault campaign):
    the suite declared it hung DAMAGED_GRACE later, and the verdict read
    'suite/test_fault.py::test_panics_the_guest hung' without the panic."""
    died = outcome(c("ok", PASSED), c("x", HUNG), hung="suite/t.py::x")
    fake = fleet(tmp_path, Script(died, answers=False, console=PANIC + "\n"))
    report = run_vms(fake, tmp_path, Stop.KEEP_VM, keep_vm=True)
    assert report.verdict == FAILED
    assert report.reason == f"the guest kernel died under suite/t.py::x: {PANIC}"


def test_a_kernel_that_dies_under_two_checks_blames_neither(tmp_path: Path) -> None:
    died = outcome(c("x", HUNG), c("y", HUNG))
    fake = fleet(tmp_path, Script(died, answers=False, console=PANIC + "\n"))
    report = run_vms(fake, tmp_path, Stop.KEEP_VM, keep_vm=True)
    assert report.reason == f"the guest kernel died under one of 2 checks: {PANIC}"
    assert report.checks[0].message.endswith("and stopped answering (2 checks were running)")
    assert fake.stopped == 0 and fake.discarded == 0  # --keep-vm


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (Script(outcome(c("a", PASSED)), alive=False, answers=False),
         "the VM died during the suite (see console.log)"),
        (Script(outcome(c("a", PASSED)), alive=False, answers=False, ended="killed by SIGKILL"),
         "the VM died during the suite: QEMU killed by SIGKILL (see console.log)"),
        (Script(outcome(c("a", PASSED)), answers=False),
         "SSH to the guest dropped during the suite"),
        (Script(outcome(c("a", PASSED)) ), "xdist worker crashed: gw0: node down"),
        (Script(outcome()), "pytest exited 4 with no result (see pytest.log)"),
    ],
)  # fmt: skip
def test_what_went_wrong_with_the_vm_is_the_verdict(
    tmp_path: Path, script: Script, reason: str
) -> None:
    assert script.outcome is not None
    if reason.startswith("xdist"):
        script.outcome.workers_down = ["gw0: node down"]
    if reason.startswith("pytest"):
        script.outcome.returncode = 4
    report = run_vms(fleet(tmp_path, script), tmp_path, Stop.DONE)
    assert (report.verdict, report.reason) == (ERROR, reason)
    assert exit_code([report]) == 2


def test_blocked_tasks_pairs_each_task_with_its_workqueue() -> None:
    text = "task:a state:D\nWorkqueue: events f\ntask:b   state:D\n"
    assert runner.blocked_tasks(text) == "a blocked in f; b blocked"
    assert runner.blocked_tasks("sysrq: Show Blocked State\n") == ""
    # the hung-task report and sysrq w both show pid 110: named once
    twice = (
        "task:python3 state:D stack: 0 pid: 110 ppid: 91 flags:0x0\n"
        "task:kworker/0:1 state:D stack: 0 pid: 7 ppid: 2 flags:0x0\nWorkqueue: events g\n"
        "task:python3 state:D stack: 0 pid: 110 ppid: 91 flags:0x0\n"
        "task:sleeper state:S stack: 0 pid: 5 ppid: 1 flags:0x0\n"
    )
    assert runner.blocked_tasks(twice) == "python3 blocked; kworker/0:1 blocked in g"


def failed(status: str, details: list[str]) -> BuildResult:
    return BuildResult(status=status, details=details,  # type: ignore[arg-type]
                       kernel={"version": "6.1.192"}, aufs={"branch": "aufs6.1"},
                       log=Path("/tmp/build.log"))  # fmt: skip


@pytest.mark.parametrize(
    ("status", "details"),
    [
        ("patch-failed", ["aufs6-mmap.patch: mm/mmap.c: hunks 2, 3, 5 FAILED"]),
        ("build-failed", ["fs/aufs/vfsub.c:123:9: error: too many arguments to vfs_rename"]),
    ],
)
def test_build_failure_is_the_verdict(
    status: str, details: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that fails is the target's verdict (exit 1), before any VM starts."""
    monkeypatch.setattr(pipeline, "run", lambda spec, deadline: failed(status, details))

    def no_vm(*a: object, **k: object) -> None:
        raise AssertionError("no image or VM may be prepared after a failed build")

    monkeypatch.setattr("harness.runner.resolve_boot", no_vm)
    target = Target(build=BuildSpec(kernel="debian:bookworm", aufs_src="/nowhere"))
    report = run_target(target, RunOptions(results_dir=tmp_path))
    assert report.verdict == "failed"
    assert report.reason == f"{status}: {details[0]}"
    assert [(s.name, s.status) for s in report.stages] == [("build", "failed")]
    assert exit_code([report]) == 1
    assert report.target == "debian:bookworm aufs"


def test_bad_input_found_mid_run_is_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pin the mirror lacks is known only once the build asks it: the run
    still exits 2 (UserError), and the report written says it was refused."""

    def unserved(spec: BuildSpec, deadline: Deadline) -> BuildResult:
        raise UserError("Debian bookworm serves no linux-source version 9.9-1 (newest: 6.1.1-1)")

    monkeypatch.setattr(pipeline, "run", unserved)
    sink: list[TargetReport] = []
    target = Target(build=BuildSpec(kernel="debian:bookworm=9.9-1", aufs_src="/nowhere"))
    with pytest.raises(UserError):
        run_target(target, RunOptions(results_dir=tmp_path), sink)
    assert sink[0].verdict == "error"
    assert sink[0].reason.startswith("Debian bookworm serves no linux-source version 9.9")


def test_a_guest_qemu_paused_on_a_full_disk_is_an_infrastructure_error(tmp_path: Path) -> None:
    """QEMU paused the guest (its overlay met ENOSPC): the checks in flight are
    errors saying so, not hangs, and no fresh VM follows on the same full disk."""
    paused = outcome(c("ok", PASSED), c("writing", HUNG))
    paused.host_stop = "QEMU paused the guest on a disk error (virtio0: nospace): the state ..."
    paused.collected = 5
    fake = fleet(tmp_path, paused, outcome(c("never", PASSED)))
    report = run_vms(fake, tmp_path, Stop.DONE)
    assert fake.booted == 1
    assert [(x.name, x.outcome) for x in report.checks] == [("ok", PASSED), ("writing", ERROR)]
    assert report.checks[1].message.startswith("not finished: QEMU paused the guest")
    assert report.verdict == ERROR
    assert report.reason == (
        "infrastructure: QEMU paused the guest on a disk error (virtio0: nospace): the state ...; "
        "3 checks not run"
    )
