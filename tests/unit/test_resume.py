"""After a check hangs or damages the guest kernel: which results stand and
which checks run again on a fresh VM (harness.resume)."""

from __future__ import annotations

from harness import resume
from harness.guest.kmsg import CheckFacts
from harness.results import FAILED, HUNG, PASSED, SKIPPED, CheckResult
from tests.unit.suite_fakes import BUG_LINE, c, damaged, health_failure, outcome


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


def test_a_health_failure_with_one_worker_stands() -> None:
    parts = resume.split(outcome(health_failure("alone", alone=True)))
    assert [x.name for x in parts.final] == ["alone"] and not parts.needs_fresh_vm


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
